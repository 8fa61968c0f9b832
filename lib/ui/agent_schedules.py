"""Agent Status: the schedules editor (operators change, viewers see). Drawn outside the ticking panel so
a half-filled form survives the refresh."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.activity.agent_schedules import (
    MAX_GRACE_S,
    MAX_PERIOD_S,
    MIN_PERIOD_S,
    ScheduleError,
    clear_schedule,
    make_schedule,
    schedule_rows,
    set_schedule,
)
from lib.core.text import md_escape
from lib.core.timeutil import utcnow
from lib.ui.agent_status import load_agent_statuses, load_runs
from lib.ui.auth import OPERATORS_ONLY, current_actor
from lib.ui.feedback import flash, guarded_write, show_flash
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine

FLASH = "agent_schedules"
PERIOD, CRON = "Every … (a period)", "At set times (cron, UTC)"


class Keys:
    AGENT = "sched_agent"
    KIND = "sched_kind"
    PERIOD_MIN = "sched_period_min"
    CRON = "sched_cron"
    GRACE_MIN = "sched_grace_min"
    TARGET_PCT = "sched_target_pct"
    SAVE = "sched_save"
    CLEAR = "sched_clear"


@st.cache_data(ttl=CACHE_TTL_S, max_entries=8, show_spinner=False)
def load_schedule_rows(db_url: str) -> pd.DataFrame:
    with get_engine(db_url).connect() as conn:
        rows = schedule_rows(conn)
    return pd.DataFrame(rows, columns=["agent_id", "schedule", "availability_target", "updated_by", "updated_at"])


def _clear_caches() -> None:
    load_schedule_rows.clear()
    load_agent_statuses.clear()
    load_runs.clear()


def _on_save(scope: Scope) -> None:
    s = st.session_state
    agent = s.get(Keys.AGENT)
    target = float(s.get(Keys.TARGET_PCT) or 0)
    try:
        schedule = make_schedule(
            period_s=round(float(s.get(Keys.PERIOD_MIN) or 0) * 60) if s.get(Keys.KIND) == PERIOD else None,
            cron=s.get(Keys.CRON) if s.get(Keys.KIND) == CRON else None,
            grace_s=round(float(s.get(Keys.GRACE_MIN) or 0) * 60),
            availability_target=target / 100 if target else None)
    except ScheduleError as exc:
        flash(FLASH, "error", f"Not saved: {md_escape(exc)}")
        return
    done = guarded_write(FLASH, "Saving the schedule", scope.engine, lambda conn: set_schedule(
        conn, agent, schedule, actor=current_actor(scope.settings), now=utcnow()) or True)
    if done:
        flash(FLASH, "success", f"{md_escape(agent)} now {md_escape(schedule.describe())}.")
    _clear_caches()


def _on_clear(scope: Scope) -> None:
    agent = st.session_state.get(Keys.AGENT)
    done = guarded_write(FLASH, "Resetting the schedule", scope.engine, lambda conn: clear_schedule(
        conn, agent, actor=current_actor(scope.settings), now=utcnow()))
    if done:
        flash(FLASH, "success", f"{md_escape(agent)} follows the default rule again (a beat at least every 60 s).")
    elif done is False:
        flash(FLASH, "info", f"{md_escape(agent)} had no schedule of its own.")
    _clear_caches()


def show_schedules(scope: Scope, agent_ids: list[str]) -> None:
    """The schedules set so far, and the editor (disabled for viewers)."""
    show_flash(FLASH)
    can = scope.user.is_operator
    rows = load_schedule_rows(scope.db_url)
    with st.expander("Schedules", icon=":material/schedule:", expanded=False, key="sched_panel"):
        st.caption("An agent without a schedule must beat at least every 60 s. Give a service its period, a "
                   "job its cron times; the grace is how much later a beat may come before the agent counts "
                   "as down (and agent_down is raised).")
        if rows.empty:
            st.caption("No agent has a schedule of its own.")
        else:
            st.dataframe(rows, hide_index=True, width="stretch", key="sched_table", column_config={
                "availability_target": st.column_config.NumberColumn("target", format="percent"),
                "updated_at": st.column_config.DatetimeColumn("updated", timezone=str(scope.tz))})
        if not agent_ids:
            return
        help_ = None if can else OPERATORS_ONLY
        st.selectbox("Agent", agent_ids, key=Keys.AGENT, disabled=not can)
        st.radio("Expected", [PERIOD, CRON], key=Keys.KIND, horizontal=True, disabled=not can)
        a, b, c, d = st.columns(4)
        a.number_input("Period (minutes)", min_value=MIN_PERIOD_S / 60, max_value=MAX_PERIOD_S / 60, value=5.0,
                       step=1.0, key=Keys.PERIOD_MIN, disabled=not can)
        b.text_input("Cron (UTC)", placeholder="0 2 * * *", key=Keys.CRON, max_chars=100, disabled=not can)
        c.number_input("Grace (minutes)", min_value=0.0, max_value=MAX_GRACE_S / 60, value=1.0, step=1.0,
                       key=Keys.GRACE_MIN, disabled=not can)
        d.number_input("Availability target (%, 0 = none)", min_value=0.0, max_value=100.0, value=0.0, step=0.1,
                       key=Keys.TARGET_PCT, disabled=not can)
        left, right = st.columns(2)
        left.button("Save schedule", key=Keys.SAVE, on_click=_on_save, args=(scope,), disabled=not can, help=help_,
                    icon=":material/save:")
        right.button("Back to the default", key=Keys.CLEAR, on_click=_on_clear, args=(scope,), disabled=not can,
                     help=help_, icon=":material/undo:")
