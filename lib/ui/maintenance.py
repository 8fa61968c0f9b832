"""Maintenance windows on the pages: "in maintenance until …" banners, and the planner (operators plan
and end windows, viewers see them). The planner is drawn outside the ticking panels."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import pandas as pd
import streamlit as st

from lib.alerts.maintenance import MaintenanceError, MaintenanceWindow, create_window, end_window, load_windows
from lib.core.text import clip, md_escape
from lib.core.timeutil import fmt_local, utcnow
from lib.ui.agent_status import load_agent_statuses, load_maintenance_spans
from lib.ui.auth import OPERATORS_ONLY, current_actor
from lib.ui.feedback import flash, guarded_write, show_flash
from lib.ui.shell import Scope, get_engine

FLASH = "maintenance"
EVERYTHING, AGENT, ACCOUNT = "Everything", "One agent", "One account"
ONE_OFF, RECURRING = "Once", "Recurring (cron, UTC)"


class Keys:
    SCOPE = "mw_scope"
    AGENT = "mw_agent"
    ACCOUNT = "mw_account"
    KIND = "mw_kind"
    DATE = "mw_date"
    TIME = "mw_time"
    CRON = "mw_cron"
    DURATION_MIN = "mw_duration_min"
    REASON = "mw_reason"
    CREATE = "mw_create"

    @staticmethod
    def end(window_id) -> str:
        return f"mw_end_{window_id}"


@st.cache_data(ttl=5, max_entries=16, show_spinner=False)
def load_current_windows(db_url: str, now: datetime) -> list[MaintenanceWindow]:
    """Windows active at `now` or planned after it."""
    with get_engine(db_url).connect() as conn:
        return load_windows(conn, now=now)


def _label(w: MaintenanceWindow, scope: Scope) -> str:
    """What a window covers, as plain text (escape it for Markdown)."""
    if w.agent_id is not None:
        return f"agent {w.agent_id}"
    if w.business_account_id is not None:
        return f"account {scope.account_name(w.business_account_id)}"
    return "everything"


def _what(w: MaintenanceWindow, scope: Scope) -> str:
    return md_escape(_label(w, scope))


def show_maintenance(scope: Scope, now: datetime, *, agents: bool = False) -> None:
    """One banner per window active now that concerns this page: windows of everything, of the sidebar's
    account (or every account's when none is chosen), and with `agents` the agents' windows."""
    exact = utcnow()  # the list is cached by the panel's rounded time; an ended window disappears at once
    for w in load_current_windows(scope.db_url, now):
        span = w.occurrence_at(exact)
        if span is None or (w.agent_id is not None and not agents):
            continue
        if w.business_account_id is not None and scope.account_id is not None and not w.covers(
                business_account_id=scope.account_id):
            continue
        st.info(f"In maintenance until {fmt_local(span[1], scope.tz, with_seconds=False)}: {_what(w, scope)} — "
                f"“{md_escape(clip(w.reason, 200))}” (planned by {md_escape(w.created_by)}). No agent_down or "
                "queue alerts are raised and no notifications go out for it.", icon=":material/construction:")


def _clear() -> None:
    load_current_windows.clear()
    load_agent_statuses.clear()
    load_maintenance_spans.clear()


def _on_create(scope: Scope) -> None:
    s = st.session_state
    what = s.get(Keys.SCOPE)
    minutes = float(s.get(Keys.DURATION_MIN) or 0)
    start = datetime.combine(s.get(Keys.DATE) or utcnow().date(), s.get(Keys.TIME) or time(0, 0),
                             tzinfo=UTC)
    recurring = s.get(Keys.KIND) == RECURRING
    account = s.get(Keys.ACCOUNT)

    def write(conn):
        return create_window(
            conn, actor=current_actor(scope.settings), now=utcnow(), reason=s.get(Keys.REASON) or "",
            agent_id=s.get(Keys.AGENT) if what == AGENT else None,
            business_account_id=uuid.UUID(account) if what == ACCOUNT and account else None,
            starts_at=utcnow() if recurring else start,
            ends_at=None if recurring else start + timedelta(minutes=minutes),
            cron=s.get(Keys.CRON) if recurring else None, duration_s=round(minutes * 60) if recurring else None)
    try:
        done = guarded_write(FLASH, "Planning the window", get_engine(scope.db_url), write)
    except MaintenanceError as exc:
        flash(FLASH, "error", f"Not planned: {md_escape(exc)}")
        return
    if done is not None:
        flash(FLASH, "success", f"Maintenance planned for {_what(done, scope)}: {md_escape(done.describe())}.")
    _clear()


def _on_end(scope: Scope, window_id) -> None:
    done = guarded_write(FLASH, "Ending the window", get_engine(scope.db_url), lambda conn: end_window(
        conn, window_id, actor=current_actor(scope.settings), now=utcnow()))
    if done:
        flash(FLASH, "success", "Maintenance window ended: alerts and notifications are back on for it.")
    _clear()


def show_planner(scope: Scope, agent_ids: list[str]) -> None:
    """The windows active or planned, each with End (operators), and the form to plan one."""
    show_flash(FLASH)
    can = scope.user.is_operator
    help_ = None if can else OPERATORS_ONLY
    now = utcnow()
    windows = load_current_windows(scope.db_url, now.replace(second=0, microsecond=0))
    with st.expander(f"Maintenance windows ({len(windows)})", icon=":material/construction:", key="mw_panel"):
        st.caption("While a window covers an agent, an account or everything, no agent_down or queue alert is "
                   "raised for it and no notification goes out; an agent still down when it ends is alerted then.")
        if windows:
            rows = []
            for w in windows:
                span = w.occurrence_at(now)
                rows.append({"covers": _label(w, scope), "when": w.describe().replace("`", ""),
                             "state": "active" if span else "planned",
                             "until / next": span[1] if span else w.next_start(now),
                             "reason": w.reason, "planned by": w.created_by})
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="mw_table",
                         column_config={"until / next": st.column_config.DatetimeColumn(timezone=str(scope.tz))})
            for w in windows:
                st.button(f"End: {md_escape(clip(_label(w, scope), 60))} · {md_escape(clip(w.reason, 40))}",
                          key=Keys.end(w.id), on_click=_on_end, args=(scope, w.id), disabled=not can, help=help_,
                          icon=":material/stop_circle:")
        else:
            st.caption("No maintenance window active or planned.")
        st.markdown("**Plan a window**")
        what = st.radio("Covers", [EVERYTHING, AGENT, ACCOUNT], key=Keys.SCOPE, horizontal=True, disabled=not can)
        if what == AGENT:
            st.selectbox("Agent", agent_ids, key=Keys.AGENT, disabled=not can)
        elif what == ACCOUNT:
            names = {str(a.id): a.username for a in scope.accounts}
            st.selectbox("Account", list(names), format_func=lambda v: names.get(v, v), key=Keys.ACCOUNT,
                         disabled=not can)
        kind = st.radio("When", [ONE_OFF, RECURRING], key=Keys.KIND, horizontal=True, disabled=not can)
        a, b, c = st.columns(3)
        if kind == ONE_OFF:
            a.date_input("Starts on (UTC)", value=now.date(), key=Keys.DATE, disabled=not can)
            b.time_input("at (UTC)", value=(now + timedelta(minutes=5)).time().replace(second=0, microsecond=0),
                         key=Keys.TIME, disabled=not can, step=300)
        else:
            a.text_input("Cron (UTC)", placeholder="0 2 * * *", key=Keys.CRON, max_chars=100, disabled=not can)
        c.number_input("Duration (minutes)", min_value=1.0, max_value=31 * 24 * 60.0, value=60.0, step=15.0,
                       key=Keys.DURATION_MIN, disabled=not can)
        st.text_input("Reason", key=Keys.REASON, max_chars=500, disabled=not can,
                      placeholder="e.g. database upgrade")
        st.button("Plan maintenance", key=Keys.CREATE, on_click=_on_create, args=(scope,), disabled=not can,
                  help=help_, icon=":material/event:")
