import streamlit as st

from lib.timeutil import floor_time, utcnow
from lib.ui import page_guard
from lib.ui.queue_monitor import (
    confirm_retry_all, filters, load_groups, load_health, load_summary, load_waiting, load_worker, show_counts,
    show_groups, show_metrics, show_table, show_waiting, show_worker, view_picker,
)
from lib.ui.throughput import show_throughput

scope = page_guard("Queue Monitor")
every = f"{scope.settings.poll_interval_s}s" if scope.live else None


@st.fragment(run_every=every)
def overview():
    now = floor_time(utcnow(), 10)
    show_worker(load_worker(scope.db_url, now, scope.settings.worker_cron), now, scope.tz)
    summary = load_summary(scope.db_url, scope.account_id, now)
    show_metrics(summary, load_health(scope.db_url, scope.account_id, now, scope.settings.processing_lease_s))
    show_counts(summary, scope)
    show_waiting(load_waiting(scope.db_url, scope.account_id, now), now, scope.tz)


overview()
show_throughput(scope)

st.subheader("Triage")
view = view_picker()
table_filter, group_filter = filters(scope, view)


@st.fragment(run_every=every)
def triage():
    show_groups(load_groups(scope.db_url, group_filter), view)
    show_table(scope, view, table_filter)
    st.caption(f"Updated {utcnow().astimezone(scope.tz):%H:%M:%S}"
               + (" · refreshes every 30 s" if scope.live else " · live refresh paused"))


triage()
confirm_retry_all(scope)  # outside the live panels: a dialog must not live in a ticking fragment
