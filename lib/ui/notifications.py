"""Notifications page (and the System Alerts badges/acknowledge): routes (masked) with a test send,
silences (create, list, end early), the last 200 deliveries. Writes re-authenticate (current_actor)."""
from __future__ import annotations

from datetime import datetime, time, timedelta

import pandas as pd
import streamlit as st

from lib.alerts.store import ALERT_TYPES, Alert
from lib.core.identity import PermissionDenied
from lib.core.text import clip, md_escape
from lib.core.timeutil import floor_time, fmt_local, utcnow
from lib.notify.outbox import Delivery, notification_totals, recent_deliveries, send_test
from lib.notify.routes import routes
from lib.notify.silences import (
    InvalidSilence,
    Silence,
    acknowledge,
    active_marks,
    badges_for,
    create_silence,
    end_silence,
    list_silences,
)
from lib.ui.auth import current_actor
from lib.ui.feedback import Confirmation
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine, lazy_expander

ANY = "__any__"
SILENCE_PANEL = "sa-sil-open"  # System Alerts' lazy "Silence alerts…" expander: True while open
STATUS_LOOK = {"sent": "sent", "pending": "pending", "sending": "sending", "failed": "failed, retrying",
               "gave_up": "gave up"}  # plain words: the grid's canvas has no emoji font here


# ---------------------------------------------------------------------------------------------
# Cached loaders (cleared by the writes below)
# ---------------------------------------------------------------------------------------------
@st.cache_data(ttl=10, max_entries=16, show_spinner=False)
def load_deliveries(db_url: str) -> tuple[list[Delivery], dict[str, int]]:
    with get_engine(db_url).connect() as conn:
        return recent_deliveries(conn), notification_totals(conn)


@st.cache_data(ttl=10, max_entries=16, show_spinner=False)
def load_silences(db_url: str, now: datetime) -> list[Silence]:
    with get_engine(db_url).connect() as conn:
        return list_silences(conn, now=now)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=16, show_spinner=False)
def load_marks(db_url: str, now: datetime) -> tuple[list[Silence], dict]:
    """Active silences and acknowledgements, for the System Alerts badges (two queries per interval)."""
    with get_engine(db_url).connect() as conn:
        return active_marks(conn, now=now)


def badges(db_url: str, alerts: list[Alert], now: datetime) -> dict:
    silences, ack_map = load_marks(db_url, now)
    return badges_for(alerts, silences, ack_map, now=now)


def clear_caches() -> None:
    load_deliveries.clear()
    load_silences.clear()
    load_marks.clear()


def show_flash(key: str) -> None:
    """The messages of the last action, escaped whole: they quote labels, names and error texts."""
    for kind, text in st.session_state.pop(key, []):
        if kind == "ok":
            st.success(md_escape(text), icon=":material/task_alt:")
        else:
            st.error(md_escape(text), icon=":material/block:")


def _flash(key: str, kind: str, text: str) -> None:
    st.session_state.setdefault(key, []).append((kind, text))


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------
def _do_test(settings, route_id: str, label: str) -> None:
    try:
        result = send_test(get_engine(settings.database_url), settings, route_id, actor=current_actor(settings),
                                  now=utcnow())
    except PermissionDenied as exc:
        _flash("notify_flash", "err", f"No test was sent: {exc}.")
        return
    clear_caches()
    if result.ok:
        _flash("notify_flash", "ok", f"Test notification delivered to {label} in {result.elapsed_s:.1f} s.")
    else:
        _flash("notify_flash", "err", f"Test notification to {label} failed: {result.error}")


CONFIRM_TEST = Confirmation("notify_confirm_test")


def confirm_test(scope: Scope) -> None:
    """Send test only after a confirmation that names the route (its label: scheme, host, fingerprint)."""
    pending = CONFIRM_TEST.pending
    if not pending:
        return

    @st.dialog("Send a test notification", on_dismiss=CONFIRM_TEST.cancel)
    def dialog():
        st.markdown("Send a test message now to this route:")
        st.text(pending["label"])  # masked; plain text
        st.caption("The receiver gets a message titled “[TEST] Agent Dashboard notification”. The send is recorded "
                   "in the delivery history and in audit_log under your name.")
        ok, no = st.columns(2)
        if ok.button("Send test", type="primary", key="notify_confirm_ok", icon=":material/send:"):
            CONFIRM_TEST.cancel()
            _do_test(scope.settings, pending["id"], pending["label"])
            st.rerun()
        if no.button("Cancel", key="notify_confirm_cancel"):
            CONFIRM_TEST.cancel()
            st.rerun()

    dialog()


def show_routes(scope: Scope) -> None:
    st.subheader("Routes")
    route_list = routes(scope.settings)
    if not route_list:
        st.info("No routes configured: set ALERT_NOTIFY_URLS (and optionally ALERT_NOTIFY_URLS_CRITICAL, _ERROR, "
                "_WARNING) to one or more Apprise URLs; the worker then delivers every alert there.",
                icon=":material/notifications_off:")
        return
    can = scope.user.is_operator
    for i, r in enumerate(route_list):
        with st.container(border=True, key=f"route-{i}"):
            a, b = st.columns([5, 2], vertical_alignment="center")
            a.text(r.label)  # masked; shown as plain text
            a.caption(("Severities: " + ", ".join(r.severities)) + ("" if r.valid else f" · ⚠ {r.problem}"))
            b.button("Send test notification", key=f"route-test-{i}", icon=":material/send:", disabled=not can,
                     help=None if can else "Sending a test needs the operator role.", on_click=CONFIRM_TEST.ask,
                     args=({"id": r.id, "label": r.label},), width="stretch")
    st.caption(f"Repeats: at most one digest per alert every {scope.settings.alert_repeat_interval_s} s · "
               f"links: {md_escape(scope.settings.dashboard_url) or 'off (DASHBOARD_URL is empty)'}")
    confirm_test(scope)


# ---------------------------------------------------------------------------------------------
# Silences
# ---------------------------------------------------------------------------------------------
def _local(tz, d, t) -> datetime:
    return datetime.combine(d, t).replace(tzinfo=tz)


def _do_create_silence(scope: Scope, prefix: str = "sil", flash: str = "silence_flash") -> None:
    s = st.session_state
    tz = scope.tz
    account = s.get(f"{prefix}-account")
    kind = s.get(f"{prefix}-type")
    try:
        starts = _local(tz, s[f"{prefix}-start-date"], s[f"{prefix}-start-time"])
        ends = _local(tz, s[f"{prefix}-end-date"], s[f"{prefix}-end-time"])
        with get_engine(scope.db_url).begin() as conn:
            sil = create_silence(
                conn, actor=current_actor(scope.settings), now=utcnow(), starts_at=starts, ends_at=ends,
                reason=s.get(f"{prefix}-reason", ""), alert_type=None if kind in (None, ANY) else kind,
                business_account_id=None if account in (None, ANY) else _account_id(scope, account),
                agent_id=s.get(f"{prefix}-agent"))
    except (InvalidSilence, PermissionDenied) as exc:
        _flash(flash, "err", f"No silence was created: {exc}.")
        return
    clear_caches()
    _flash(flash, "ok", f"Silence created until {fmt_local(sil.ends_at, tz)}.")


def _account_id(scope: Scope, username: str):
    for a in scope.accounts:
        if a.username == username:
            return a.id
    return None


def _do_end_silence(scope: Scope, silence_id) -> None:
    try:
        with get_engine(scope.db_url).begin() as conn:
            done = end_silence(conn, silence_id, actor=current_actor(scope.settings), now=utcnow())
    except PermissionDenied as exc:
        _flash("silence_flash", "err", f"The silence was not ended: {exc}.")
        return
    clear_caches()
    _flash("silence_flash", "ok" if done else "err", "Silence ended." if done else "That silence had already ended.")


def silence_form(scope: Scope, now: datetime, prefix: str = "sil", flash: str = "silence_flash") -> None:
    can = scope.user.is_operator
    local_now = floor_time(now, 60).astimezone(scope.tz)  # keyed inputs: later reruns keep what is shown
    later = local_now + timedelta(hours=2)
    with st.form(f"{prefix}-form", border=True, enter_to_submit=False, clear_on_submit=True):
        st.markdown("**New silence** — matching alerts are recorded and listed, but not notified")
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Alert type", [ANY, *ALERT_TYPES], key=f"{prefix}-type",
                     format_func=lambda t: "Any type" if t == ANY else t)
        c2.selectbox("Business account", [ANY, *[a.username for a in scope.accounts]], key=f"{prefix}-account",
                     format_func=lambda a: "Any account" if a == ANY else a)
        c3.text_input("Agent id", key=f"{prefix}-agent", placeholder="any agent")
        d1, d2, d3, d4 = st.columns(4)
        d1.date_input("Starts", value=local_now.date(), key=f"{prefix}-start-date")
        d2.time_input("at", value=time(local_now.hour, local_now.minute), key=f"{prefix}-start-time", step=300)
        d3.date_input("Ends", value=later.date(), key=f"{prefix}-end-date")
        d4.time_input("at ", value=time(later.hour, later.minute), key=f"{prefix}-end-time", step=300)
        st.text_input("Reason (audited)", key=f"{prefix}-reason", placeholder="e.g. token rotation for acme_store")
        st.form_submit_button("Create silence", icon=":material/notifications_paused:", disabled=not can,
                              on_click=_do_create_silence, args=(scope, prefix, flash),
                              help=None if can else "Creating silences needs the operator role.")
        st.caption(f"Times in {scope.tz.key}.")


def _use_alert(prefix: str, alert: Alert, account_name: str | None, tz=None) -> None:
    st.session_state[f"{prefix}-type"] = alert.alert_type if alert.alert_type in ALERT_TYPES else ANY
    st.session_state[f"{prefix}-account"] = account_name or ANY
    agent = (alert.details or {}).get("agent_id") if isinstance(alert.details, dict) else None
    st.session_state[f"{prefix}-agent"] = str(agent) if agent else ""
    if tz is not None:  # from now (this minute), for two hours, like Alertmanager's "silence this alert"
        start = floor_time(utcnow(), 60).astimezone(tz)
        end = start + timedelta(hours=2)
        st.session_state[f"{prefix}-start-date"], st.session_state[f"{prefix}-start-time"] = start.date(), start.time()
        st.session_state[f"{prefix}-end-date"], st.session_state[f"{prefix}-end-time"] = end.date(), end.time()


def silence_selected(scope: Scope, alerts: list[Alert], selected_ids: list) -> None:
    """On System Alerts, beside Resolve: "Silence…" opens the silence form matching the selected
    alert (its type, account and agent), starting now."""
    picked = next((a for a in alerts if selected_ids and a.id == selected_ids[0]), None)
    can = scope.user.is_operator
    name = scope.account_name(picked.business_account_id) if picked and picked.business_account_id else None

    def prefill() -> None:
        _use_alert("sa-sil", picked, name, scope.tz)
        st.session_state[SILENCE_PANEL] = True  # the form opens below, filled in

    st.button("Silence…", key="sa-sil-selected", icon=":material/notifications_paused:",
              disabled=not can or picked is None, on_click=prefill if picked is not None else None,
              help=("Creating silences needs the operator role." if not can else
                    "Select an alert first." if picked is None else
                    f"Silence {picked.alert_type} alerts{f' of {name}' if name else ''} from now (you can edit it)"),
              width="stretch")


def silence_panel(scope: Scope, alerts: list[Alert], selected_ids: list, now: datetime) -> None:
    """On System Alerts: create a silence (optionally matching the selected alert); the list of
    silences and ending one early are on the Notifications page."""
    # lazy: closed, its form (selects, date and time inputs) is neither built nor sent
    panel = lazy_expander("Silence alerts…", key=SILENCE_PANEL, icon=":material/notifications_paused:")
    if panel is None:
        return
    with panel:
        show_flash("alerts_silence_flash")
        picked = next((a for a in alerts if selected_ids and a.id == selected_ids[0]), None)
        if picked is not None:
            name = scope.account_name(picked.business_account_id) if picked.business_account_id else None
            st.button("Match the selected alert", key="sa-sil-use", icon=":material/content_copy:",
                      on_click=_use_alert, args=("sa-sil", picked, name, scope.tz))
        silence_form(scope, now, prefix="sa-sil", flash="alerts_silence_flash")
        st.page_link("pages/notifications.py", label="Active and expired silences, routes, deliveries",
                     icon=":material/campaign:")


def _matchers(s: Silence, scope: Scope) -> str:
    parts = []
    if s.alert_type:
        parts.append(f"type={s.alert_type}")
    if s.business_account_id:
        parts.append(f"account={scope.account_name(s.business_account_id)}")
    if s.agent_id:
        parts.append(f"agent={s.agent_id}")
    return ", ".join(parts)


def show_silences(scope: Scope, silences: list[Silence], now: datetime) -> None:
    st.subheader("Silences")
    show_flash("silence_flash")
    silence_form(scope, now)
    if not silences:
        st.caption("No silences yet.")
        return
    frame = pd.DataFrame({
        "state": [s.state(now) for s in silences],
        "matches": [_matchers(s, scope) for s in silences],
        "starts": [fmt_local(s.starts_at, scope.tz) for s in silences],
        "ends": [fmt_local(s.effective_end, scope.tz) for s in silences],
        "reason": [clip(s.reason, 300) for s in silences],
        "created_by": [s.created_by for s in silences],
        "ended_by": [s.ended_by or "" for s in silences],
    })
    st.dataframe(frame, hide_index=True, width="stretch", key="silences-table")
    live = [s for s in silences if s.effective_end > now]
    if live and scope.user.is_operator:
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        pick = c1.selectbox("End a silence early", list(range(len(live))), key="sil-end-pick",
                            format_func=lambda i: f"{_matchers(live[i], scope)} · until "
                                                  f"{fmt_local(live[i].effective_end, scope.tz)} · {clip(live[i].reason, 60)}")
        c2.button("End now", key="sil-end", icon=":material/notifications_active:", on_click=_do_end_silence,
                  args=(scope, live[pick or 0].id), width="stretch")


# ---------------------------------------------------------------------------------------------
# Deliveries
# ---------------------------------------------------------------------------------------------
def show_deliveries(scope: Scope, deliveries: list[Delivery], totals: dict[str, int]) -> None:
    st.subheader("Deliveries")
    cols = st.columns(4)
    cols[0].metric("Sent", totals.get("sent", 0))
    cols[1].metric("Waiting", totals.get("pending", 0) + totals.get("sending", 0))
    cols[2].metric("Failing (retried)", totals.get("failed", 0))
    cols[3].metric("Given up", totals.get("gave_up", 0))
    if not deliveries:
        st.caption("Nothing delivered yet. The worker (python -m worker) delivers every tick and every "
                   f"{scope.settings.alert_notify_interval_s:g} s.")
        return
    frame = delivery_frame(deliveries)
    # at 1440 px the grid draws what fits: the usual columns first, times without seconds, and the
    # retry columns only when a delivery is failing
    st.dataframe(frame, hide_index=True, width="stretch", key="deliveries-table", column_config={
        "queued": st.column_config.DatetimeColumn("Queued", timezone=str(scope.tz), format="YYYY-MM-DD HH:mm"),
        "status": st.column_config.TextColumn("Status"),
        "kind": st.column_config.TextColumn("Kind"),
        "route": st.column_config.TextColumn("Route"),
        "title": st.column_config.TextColumn("Title", width="medium"),
        "sent": st.column_config.DatetimeColumn("Sent", timezone=str(scope.tz), format="YYYY-MM-DD HH:mm"),
        "attempts": st.column_config.NumberColumn("Tries", help="Delivery attempts"),
        "next_attempt": st.column_config.DatetimeColumn("Next try", timezone=str(scope.tz),
                                                        format="YYYY-MM-DD HH:mm"),
        "error": st.column_config.TextColumn("Error", width="large"),
    })
    st.caption(f"The last {len(deliveries)} deliveries, newest first.")


def delivery_frame(deliveries: list[Delivery]) -> pd.DataFrame:
    """The deliveries as table rows (UTC instants), newest first as given; "next_attempt" and "error"
    only when some delivery has one."""
    def utc(values):
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True)

    frame = pd.DataFrame({
        "queued": utc([d.created_at for d in deliveries]),
        "status": [STATUS_LOOK.get(d.status, d.status) for d in deliveries],
        "kind": [d.kind for d in deliveries],
        "route": [d.route_label or "" for d in deliveries],
        "title": [clip(d.title, 200) for d in deliveries],
        "sent": utc([d.sent_at for d in deliveries]),
        "attempts": [d.attempts for d in deliveries],
        "next_attempt": utc([d.next_attempt_at if d.status == "failed" else None for d in deliveries]),
        "error": [clip(d.last_error, 500) if d.last_error else "" for d in deliveries],
    })
    if frame["next_attempt"].isna().all():
        frame = frame.drop(columns=["next_attempt"])
    if not frame["error"].astype(bool).any():
        frame = frame.drop(columns=["error"])
    return frame


# ---------------------------------------------------------------------------------------------
# System Alerts: badges and acknowledge
# ---------------------------------------------------------------------------------------------
def badge_columns(badges: dict, id_sets: list) -> dict[str, list[str]]:
    """'silenced' and 'on it' columns for the System Alerts list (one entry per row's id set)."""
    silenced, on_it = [], []
    for ids in id_sets:
        b = [badges.get(i) for i in ids if badges.get(i) is not None]
        silenced.append("silenced" if any(x.silenced_by for x in b) else "")
        names = sorted({x.ack.by for x in b if x.ack})
        on_it.append(", ".join(names))
    return {"silenced": silenced, "on_it": on_it}


def _do_ack(scope: Scope, ids: list) -> None:
    note = st.session_state.get("alerts-ack-note", "")
    try:
        with get_engine(scope.db_url).begin() as conn:
            results = acknowledge(conn, ids, actor=current_actor(scope.settings), now=utcnow(), note=note)
    except PermissionDenied as exc:
        _flash("ack_flash", "err", f"Nothing was acknowledged: {exc}.")
        return
    clear_caches()
    done = sum(1 for r in results if r.outcome == "acknowledged")
    already = sum(1 for r in results if r.outcome == "already_acknowledged")
    closed = sum(1 for r in results if r.outcome == "resolved")
    text = f"Acknowledged {done} alert{'s' if done != 1 else ''}: repeat digests stop."
    if already:
        text += f" {already} already acknowledged."
    if closed:
        text += f" {closed} resolved already (nothing to do)."
    _flash("ack_flash", "ok", text)


def ack_actions(scope: Scope, selected_ids: list, open_ids: set) -> None:
    """"I'm on it" for the selected open alerts, with an optional note."""
    show_flash("ack_flash")
    can = scope.user.is_operator
    wanted = [i for i in selected_ids if i in open_ids]
    c1, c2 = st.columns([4, 2], vertical_alignment="bottom")
    c1.text_input("Note (optional)", key="alerts-ack-note", placeholder="e.g. rotating the token now",
                  disabled=not can)
    c2.button(f"Acknowledge selected ({len(wanted)})", key="alerts-ack", icon=":material/front_hand:",
              disabled=not can or not wanted, on_click=_do_ack, args=(scope, wanted), width="stretch",
              help="Acknowledging needs the operator role." if not can else "Select open alerts in the list first.")
