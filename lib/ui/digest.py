"""Weekly digest page: a preview of what the worker sends (DIGEST_CRON), and Send now for operators.

The preview is built from the same lib.notify.digest.Digest as the message; untrusted text (captions, alert
messages, names) is shown in dataframes and a code block, never as HTML.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.core.identity import PermissionDenied
from lib.core.text import md_escape
from lib.core.timeutil import cron_in_words, floor_time, utcnow
from lib.notify import digest as dg
from lib.notify.routes import routes
from lib.ui.auth import OPERATORS_ONLY, current_actor
from lib.ui.feedback import Confirmation, flash, show_flash
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine

WHERE = "digest"
LABELS = {  # the preview's column headers (the Digest's keys are the message's)
    "account": "Account", "label": "Metric", "value": "Value", "delta": "Change", "instagram_id": "Media id",
    "engagement": st.column_config.NumberColumn("Engagement", format="localized"),
    "likes": st.column_config.NumberColumn("Likes", format="localized"),
    "reach": st.column_config.NumberColumn("Reach", format="localized"),
    "caption": st.column_config.TextColumn("Caption", width="large"), "day": "Day (UTC)",
    "baseline": "28-day median", "deviation": st.column_config.NumberColumn("Deviation", format="%+.1f"),
    "direction": "Direction",
}
CONFIRM_SEND = Confirmation("digest_confirm_send")


@st.cache_data(ttl=CACHE_TTL_S, max_entries=16, show_spinner=False)
def load_preview(db_url: str, _settings, account_id, now) -> dg.Digest:
    with get_engine(db_url).connect() as conn:
        return dg.build_digest(conn, _settings, now=now, account_id=account_id)


def show_schedule(scope: Scope) -> None:
    s = scope.settings
    now = utcnow()
    nxt = __import__("croniter").croniter(s.digest_cron, now).get_next(type(now))
    n_routes = len(routes(s))
    words = cron_in_words(s.digest_cron)  # in a code span Markdown escapes would show as backslashes
    when = f"{words} UTC" if words else f"`{s.digest_cron.replace('`', '')}` (UTC)"
    st.caption(f"Sent by the worker {when} (DIGEST_CRON) — next {nxt:%Y-%m-%d %H:%M} UTC — "
               f"{'one digest per account' if s.digest_scope == 'per_account' else 'one digest for all accounts'} "
               f"(DIGEST_SCOPE), through {n_routes} notification route{'s' if n_routes != 1 else ''} "
               "(ALERT_NOTIFY_URLS; e-mail routes get HTML).")


def _send(db_url: str, settings, account_id) -> None:
    try:
        outcomes = dg.send_now(get_engine(db_url), settings, actor=current_actor(settings), now=utcnow(),
                               account_id=account_id)
    except PermissionDenied as exc:
        flash(WHERE, "error", f"Send now failed: {md_escape(exc)}")
        return
    sent = sum(o == "sent" for o in outcomes)
    kind = "success" if sent == len(outcomes) else "warning"
    flash(WHERE, kind, f"Digest sent to {sent} of {len(outcomes)} route{'s' if len(outcomes) != 1 else ''}."
          + ("" if sent == len(outcomes) else " " + md_escape("; ".join(o for o in outcomes if o != "sent"))))


def send_button(scope: Scope) -> None:
    """Send now asks first, naming every route it goes to (masked labels)."""
    route_list = routes(scope.settings)
    why = None if scope.user.is_operator else OPERATORS_ONLY
    if not route_list:
        why = why or "No notification route is configured (ALERT_NOTIFY_URLS)."
    st.button("Send now…", key="digest_send_now", icon=":material/send:", disabled=why is not None,
              help=why or "Send this digest to every notification route now (asks first; audited).",
              on_click=CONFIRM_SEND.ask, args=(True,))
    show_flash(WHERE)
    if CONFIRM_SEND.pending and why is None:
        confirm_send(scope, [r.label for r in route_list])


def confirm_send(scope: Scope, labels: list[str]) -> None:
    where = scope.account_name(scope.account_id) if scope.account_id else "all accounts"

    @st.dialog("Send the weekly digest now", on_dismiss=CONFIRM_SEND.cancel)
    def dialog():
        st.markdown(f"Send the digest of **{md_escape(where)}** now to {len(labels)} "
                    f"route{'s' if len(labels) != 1 else ''}:")
        st.text("\n".join(labels))  # masked labels, as plain text
        st.caption("Routes are shown as scheme, host and fingerprint. Every receiver gets it at once; the send is "
                   "audited under your name.")
        ok, no = st.columns(2)
        if ok.button(f"Send to {len(labels)} route{'s' if len(labels) != 1 else ''}", type="primary",
                     key="digest_confirm_ok", icon=":material/send:"):
            CONFIRM_SEND.cancel()
            _send(scope.db_url, scope.settings, scope.account_id)
            st.rerun()
        if no.button("Cancel", key="digest_confirm_cancel"):
            CONFIRM_SEND.cancel()
            st.rerun()

    dialog()


def show_preview(scope: Scope) -> None:
    now = floor_time(utcnow(), 60)
    d = load_preview(scope.db_url, scope.settings, scope.account_id, now)
    st.subheader(md_escape(d.title), anchor=False)  # the title names the account
    week = md_escape(d.period_text)  # the week of the title: the KPIs' reports, the posts and the anomalies
    st.markdown(f"**KPIs** (weekly report {week}, change vs the one before)")
    st.dataframe(pd.DataFrame(d.kpis, columns=["account", "label", "value", "delta"]), hide_index=True,
                 width="stretch", key="digest_kpis", column_config=LABELS)
    st.markdown(f"**Top posts** (published {week}, by engagement)")
    st.dataframe(pd.DataFrame(d.top_posts, columns=["account", "instagram_id", "engagement", "likes", "reach", "caption"]),
                 hide_index=True, width="stretch", key="digest_posts", column_config=LABELS)
    st.markdown(f"**Anomalies** (daily reports of {week})")
    st.dataframe(pd.DataFrame(d.anomalies, columns=["day", "account", "label", "value", "baseline", "deviation",
                                                    "direction"]), hide_index=True, width="stretch", key="digest_flags",
                 column_config=LABELS)
    q = d.queue
    st.markdown(f"**Queue** (the 7 days to {d.as_of:%Y-%m-%d %H:%M} UTC)")
    a, b, c, e = st.columns(4)
    a.metric("Sent", f"{q['sent']:,}")
    b.metric("Failed", f"{q['failed']:,}")
    c.metric("Dead-lettered", f"{q['dlq']:,}")
    e.metric("In the DLQ now", f"{q['dlq_now']:,}")
    st.markdown("**Open alerts** " + md_escape(", ".join(f"{n} {s}" for s, n in d.alerts.items()) or "none"))
    if d.alert_items:
        st.dataframe(pd.DataFrame(d.alert_items), hide_index=True, width="stretch", key="digest_alerts")
    with st.expander("The message as text"):
        st.code(dg.render_text(d), language=None, wrap_lines=True)
