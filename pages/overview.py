import streamlit as st

from lib.core.timeutil import floor_time, utcnow
from lib.ui import live_caption, page_guard
from lib.ui.holds import show_holds
from lib.ui.maintenance import show_maintenance
from lib.ui.overview import activity_block, agents_block, alerts_block, metrics_block, queue_block
from lib.ui.service_levels import overview_block as slo_block

scope = page_guard("Overview")


@st.fragment(run_every=scope.run_every)
def live_panel():
    now = floor_time(utcnow(), 10)
    show_holds(scope, now, controls=False)
    show_maintenance(scope, now, agents=True)
    left, middle, right = st.columns([1, 1.6, 1.2])
    with left:
        agents_block(scope)
    with middle:
        queue_block(scope, now)
    with right:
        alerts_block(scope)
    slo_block(scope, now)
    activity_block(scope, now)
    metrics_block(scope, now)
    live_caption(scope, utcnow())


live_panel()
