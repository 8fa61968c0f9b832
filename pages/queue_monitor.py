import streamlit as st

from lib.core.timeutil import floor_time, utcnow
from lib.ui import live_caption, page_guard
from lib.ui.holds import show_holds
from lib.ui.maintenance import show_maintenance
from lib.ui.queue_monitor import (
    confirm_retry_all,
    filters,
    find_sent,
    load_groups,
    load_health,
    load_summary,
    load_waiting,
    load_worker,
    pause_control,
    row_dialog,
    show_counts,
    show_groups,
    show_metrics,
    show_pauses,
    show_table,
    show_waiting,
    show_worker,
    view_picker,
)
from lib.ui.service_levels import show_service_levels
from lib.ui.throughput import show_throughput

scope = page_guard("Queue Monitor")


@st.fragment(run_every=scope.run_every)
def overview():
    now = floor_time(utcnow(), 10)
    show_holds(scope, now)
    show_maintenance(scope, now)
    show_worker(load_worker(scope.db_url, now, scope.settings.worker_cron), now, scope.tz)
    summary = load_summary(scope.db_url, scope.account_id, now)
    show_pauses(scope, now)
    show_metrics(summary, load_health(scope.db_url, scope.account_id, now, scope.settings.processing_lease_s))
    show_counts(summary, scope)
    show_waiting(load_waiting(scope.db_url, scope.account_id, now), now, scope.tz)


overview()
show_throughput(scope)
show_service_levels(scope)

pause_control(scope)
find_sent(scope)
st.subheader("Triage")
view = view_picker()
table_filter, group_filter = filters(scope, view)


@st.fragment(run_every=scope.run_every)
def triage():
    show_groups(load_groups(scope.db_url, group_filter), view)
    show_table(scope, view, table_filter)
    live_caption(scope, utcnow())


triage()
confirm_retry_all(scope)  # outside the live panels: a dialog must not live in a ticking fragment
row_dialog(scope)
