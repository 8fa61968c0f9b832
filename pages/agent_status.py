import streamlit as st

from lib.core.timeutil import floor_time
from lib.ui import live_caption, page_guard
from lib.ui.agent_schedules import show_schedules
from lib.ui.agent_status import (
    DEFAULT_WINDOW,
    WINDOWS,
    Keys,
    load_agent_statuses,
    load_maintenance_spans,
    load_runs,
    show_banner,
    show_cards,
    show_timeline,
    status_time,
)
from lib.ui.maintenance import show_maintenance, show_planner

scope = page_guard("Agent Status")
window = st.segmented_control("Timeline window", list(WINDOWS), default=DEFAULT_WINDOW, key=Keys.WINDOW) or DEFAULT_WINDOW


@st.fragment(run_every=scope.run_every)
def live_panel():
    now = status_time()
    statuses = load_agent_statuses(scope.db_url, now)
    if not statuses:
        st.info(
            "No heartbeats yet. Agents report by POST /agent/heartbeat, which writes agent_heartbeats; "
            "the demo (scripts/demo) starts a demo agent that does this.",
            icon=":material/hourglass_empty:",
        )
        return
    show_maintenance(scope, now, agents=True)
    show_banner(statuses)
    show_cards(statuses, now, scope.tz)
    st.subheader("Heartbeats")
    bucket = floor_time(now, 30)
    spans = load_maintenance_spans(scope.db_url, window, bucket, tuple(s.agent_id for s in statuses))
    show_timeline(load_runs(scope.db_url, window, bucket), window, now, scope.tz, spans)
    live_caption(scope, now)


live_panel()
agent_ids = sorted(s.agent_id for s in load_agent_statuses(scope.db_url, status_time()))
show_schedules(scope, agent_ids)
show_planner(scope, agent_ids)
