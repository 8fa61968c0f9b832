import streamlit as st

from lib.core.timeutil import floor_time, utcnow
from lib.ui import live_caption, page_guard
from lib.ui.notifications import ack_actions, badges, silence_panel
from lib.ui.system_alerts import (
    STATES,
    alert_filters,
    alerts_export,
    chart_bucket,
    empty_state,
    load_alerts,
    load_summary,
    resolve_actions,
    show_chart,
    show_list,
    show_result,
    show_summary,
)

scope = page_guard("System Alerts")
view = alert_filters(scope.account_id, floor_time(utcnow(), 60))


@st.fragment(run_every=scope.run_every)
def live_panel():
    now = floor_time(utcnow(), 5)
    show_result()
    state = {False: "open", True: "resolved", None: "all"}[view.filters.resolved]
    show_summary(load_summary(scope.db_url, view.filters), STATES[state])
    show_chart(scope, view.filters, chart_bucket(view, now))
    alerts = load_alerts(scope.db_url, view.filters)
    if not alerts:
        empty_state(view.filters)
        return
    head, export = st.columns([2, 1], vertical_alignment="bottom")  # room for the format and its button
    head.subheader("Alerts")
    with export:
        alerts_export(scope.db_url, view.filters, now.strftime("%Y%m%d-%H%M"))
    selected, open_selected = show_list(alerts, view, scope, now, badges(scope.db_url, alerts, now))
    resolve_actions(scope, view.filters, selected, open_selected, alerts)
    ack_actions(scope, selected, {a.id for a in alerts if not a.resolved})
    silence_panel(scope, alerts, selected, now)
    live_caption(scope, now, paused_hint=" (sidebar)")


live_panel()
