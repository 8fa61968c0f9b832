"""Incidents page: the filtered list with time to acknowledge / resolve, and one incident's timeline with its
postmortem export; operators can acknowledge an open incident with a comment."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

from lib.alerts.incidents import (
    Incident,
    IncidentFilter,
    IncidentSummary,
    incident,
    list_incidents,
    postmortem_markdown,
    timeline_rows,
)
from lib.alerts.store import ALERT_TYPES
from lib.core.text import clip, md_escape
from lib.core.timeutil import fmt_duration, fmt_local, utcnow
from lib.notify.silences import acknowledge
from lib.ui.agent_status import load_agent_statuses, status_time
from lib.ui.auth import OPERATORS_ONLY, current_actor
from lib.ui.feedback import flash, guarded_write, show_flash
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine

FLASH = "incidents"
PERIODS = {"24 h": timedelta(hours=24), "7 d": timedelta(days=7), "30 d": timedelta(days=30),
           "90 d": timedelta(days=90)}
STATES = ("any", "open", "acknowledged", "resolved")
ANY = "any"
TYPES = (ANY, *ALERT_TYPES, "account_restricted", "slo_burn", "token_expiring", "metric_anomaly")


class Keys:
    PERIOD = "inc_period"
    TYPE = "inc_type"
    STATE = "inc_state"
    AGENT = "inc_agent"
    TABLE = "inc_table"
    SELECTED = "inc_selected"  # the incident shown (an alert id, as text); also ?incident= in the URL
    ACK_NOTE = "inc_ack_note"
    ACK = "inc_ack"
    EXPORT = "inc_export"
    TIMELINE = "inc_timeline"


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_incidents(db_url: str, filters: IncidentFilter) -> list[IncidentSummary]:
    with get_engine(db_url).connect() as conn:
        return list_incidents(conn, filters=filters)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_incident(db_url: str, alert_id: str, now: datetime) -> Incident | None:
    with get_engine(db_url).connect() as conn:
        return incident(conn, alert_id, now=now)


def filters(scope: Scope, now: datetime) -> IncidentFilter:
    a, b, c, d = st.columns([1.4, 1, 1, 1])
    period = a.segmented_control("Opened in the last", list(PERIODS), default="7 d", key=Keys.PERIOD) or "7 d"
    kind = b.selectbox("Type", TYPES, key=Keys.TYPE)
    state = c.selectbox("State", STATES, key=Keys.STATE)
    agents = sorted(s.agent_id for s in load_agent_statuses(scope.db_url, status_time()))
    agent = d.selectbox("Agent", [ANY, *agents], key=Keys.AGENT)
    return IncidentFilter(since=now - PERIODS[period], alert_type=None if kind == ANY else kind,
                          state=None if state == ANY else state, account_id=scope.account_id,
                          agent_id=None if agent == ANY else agent)


def _td(td: timedelta | None) -> str:
    return "—" if td is None else fmt_duration(td.total_seconds())


def _subject(s: IncidentSummary, scope: Scope) -> str:
    if s.agent_id:
        return f"agent {s.agent_id}"
    return f"account {scope.account_name(s.business_account_id)}" if s.business_account_id else "—"


def _selected_from_url() -> None:
    wanted = st.query_params.get("incident")
    if wanted and st.session_state.get(Keys.SELECTED) != wanted:
        try:
            st.session_state[Keys.SELECTED] = str(uuid.UUID(wanted))
        except ValueError:
            st.query_params.pop("incident", None)


def show_list(items: list[IncidentSummary], scope: Scope, now: datetime) -> None:
    _selected_from_url()
    if not items:
        st.info("No incident matches these filters.", icon=":material/check_circle:")
        return
    frame = pd.DataFrame([{
        "opened": s.opened_at, "type": s.alert_type, "severity": s.severity, "about": _subject(s, scope),
        "state": s.state, "time to acknowledge": _td(s.time_to_acknowledge()),
        "time to resolve": _td(s.time_to_resolve()) if s.resolved_at else f"open {_td(s.time_to_resolve(now))}",
        "occurrences": s.repeats, "message": clip(s.message or "", 200)} for s in items])
    event = st.dataframe(frame, hide_index=True, width="stretch", key=Keys.TABLE, on_select="rerun",
                         selection_mode="single-row",
                         column_config={"opened": st.column_config.DatetimeColumn(timezone=str(scope.tz))})
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(items):
        chosen = str(items[rows[0]].alert_id)
        if st.session_state.get(Keys.SELECTED) != chosen:
            st.session_state[Keys.SELECTED] = chosen
            st.query_params["incident"] = chosen
    st.caption(f"{len(items)} incident(s), newest first. Select one to see its timeline.")


def _on_ack(scope: Scope, alert_id: str) -> None:
    note = st.session_state.get(Keys.ACK_NOTE) or None
    done = guarded_write(FLASH, "Acknowledging", get_engine(scope.db_url), lambda conn: acknowledge(
        conn, [alert_id], actor=current_actor(scope.settings), now=utcnow(), note=note))
    if done:
        outcome = done[0].outcome
        flash(FLASH, "success" if outcome == "acknowledged" else "info",
              {"acknowledged": "Acknowledged: repeat digests stop; the comment is on the timeline.",
               "already_acknowledged": "Someone acknowledged it already.",
               "resolved": "It was resolved meanwhile.", "not_found": "It no longer exists."}[outcome])
    load_incident.clear()
    load_incidents.clear()


def show_incident(scope: Scope, now: datetime) -> None:
    show_flash(FLASH)
    selected = st.session_state.get(Keys.SELECTED)
    if not selected:
        return
    inc = load_incident(scope.db_url, selected, now)
    if inc is None:
        st.warning("That incident no longer exists.", icon=":material/help:")
        return
    s = inc.summary
    st.subheader(f"{md_escape(s.alert_type)} · {md_escape(_subject(s, scope))}")
    st.caption(f"Opened {fmt_local(s.opened_at, scope.tz)} · {s.severity} · {s.state}")
    a, b, c, d = st.columns(4)
    a.metric("Time to acknowledge", _td(s.time_to_acknowledge()))
    b.metric("Time to resolve", _td(s.time_to_resolve()) if s.resolved_at else f"open {_td(s.time_to_resolve(now))}")
    c.metric("Occurrences", s.repeats)
    d.metric("Notifications sent / failed", f"{inc.notifications_sent} / {inc.notifications_failed}")
    rows = timeline_rows(inc)
    st.dataframe(pd.DataFrame(rows, columns=["at", "after", "kind", "what", "by"]), hide_index=True,
                 width="stretch", key=Keys.TIMELINE,
                 column_config={"at": st.column_config.DatetimeColumn(timezone=str(scope.tz), format="YYYY-MM-DD HH:mm:ss"),
                                "what": st.column_config.TextColumn(width="large")})
    st.caption(f"Worker ticks while it lasted: {inc.ticks_total} ({inc.ticks_failed} failed); up to 20 of each "
               "are listed.")
    name = scope.account_name(s.business_account_id) if s.business_account_id else None
    st.download_button("Postmortem draft (Markdown)", data=postmortem_markdown(inc, now=now, account_name=name,
                                                                            tz=scope.tz),
                       file_name=f"postmortem-{s.alert_type}-{s.opened_at:%Y%m%d-%H%M}.md", mime="text/markdown",
                       key=Keys.EXPORT, icon=":material/download:", on_click="ignore")
    if s.state == "open":
        can = scope.user.is_operator
        left, right = st.columns([4, 1], vertical_alignment="bottom")
        left.text_input("Comment", key=Keys.ACK_NOTE, max_chars=500, disabled=not can,
                        placeholder="e.g. restarting the agent")
        right.button("Acknowledge", key=Keys.ACK, on_click=_on_ack, args=(scope, selected), disabled=not can,
                     help=None if can else OPERATORS_ONLY, icon=":material/front_hand:")
