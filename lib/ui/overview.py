"""Overview: one screen that answers "is everything fine?". Every block reads through the same
cached loaders as its own page (one home for each query) and links to that page."""
from __future__ import annotations

from datetime import datetime, timedelta

import streamlit as st

from lib.activity.heartbeats import AgentStatus
from lib.alerts.store import SEVERITIES, AlertFilter
from lib.core.audit import AuditFilter
from lib.core.timeutil import fmt_duration
from lib.ui import activity_feed, agent_status, metrics, queue_monitor, system_alerts
from lib.ui.counts import SEVERITY_COLOURS, count_metric
from lib.ui.shell import Scope
from lib.ui.text import ago, md_escape

RECENT_EVENTS = 10


def agents_block(scope: Scope) -> None:
    now = agent_status.status_time()  # the Agent Status page's cache key, not the Overview's
    statuses: list[AgentStatus] = agent_status.load_agent_statuses(scope.db_url, now)
    with st.container(border=True, key="ov-agents"):
        st.markdown("**Agents**")
        if not statuses:
            st.caption("No heartbeats yet.")
        else:
            down = [s for s in statuses if not s.alive]
            alive = len(statuses) - len(down)
            st.metric("Alive", f"{alive} / {len(statuses)}")
            if down:
                for s in down:
                    st.markdown(f":red-badge[:material/error: down] {md_escape(s.agent_id)} · last beat "
                                f"{ago(s.last_beat_at)}")
            else:
                st.markdown(":green-badge[:material/check_circle: all alive]")
            for s in statuses:  # past the expected beat, within the schedule's grace
                if s.state == "late":
                    st.markdown(f":orange-badge[:material/schedule: late] {md_escape(s.agent_id)} · expected "
                                f"{ago(s.due_at)}")
        st.page_link("pages/agent_status.py", label="Agent Status", icon=":material/arrow_forward:")


def queue_block(scope: Scope, now: datetime) -> None:
    summary = queue_monitor.load_summary(scope.db_url, scope.account_id, now)
    health = queue_monitor.load_health(scope.db_url, scope.account_id, now, scope.settings.processing_lease_s)
    worker = queue_monitor.load_worker(scope.db_url, now, scope.settings.worker_cron)
    by_status = queue_monitor.status_totals(summary)
    with st.container(border=True, key="ov-queue"):
        st.markdown("**Outbound queue**")
        # one flex row, not st.columns: on a phone columns stack, one number per full-width row
        with st.container(horizontal=True, key="ov-queue-counts"):
            st.metric("Pending", f"{by_status.get('pending', 0):,}")
            st.metric("Due", f"{health['due_now']:,}")
            st.metric("Failed", f"{by_status.get('failed', 0):,}")
            count_metric("DLQ", by_status.get("dlq", 0), colour="red", note="triage")
        queue_monitor.show_pauses(scope, now, controls=False)
        notes = [f"sent in 24 h {summary.get('sent_24h', 0):,}"]
        if health["stuck"]:
            notes.append(f":orange-badge[{health['stuck']} stuck in processing]")
        if health["oldest_pending_age_s"] is not None:
            notes.append(f"oldest pending {fmt_duration(health['oldest_pending_age_s'])}")
        if worker.get("never_ran"):
            notes.append(":red-badge[worker never ran]")
        else:
            notes.append(f"worker ticked {ago(worker['last_started_at'])}")
            if worker.get("missed"):
                notes.append(":red-badge[worker missed its schedule]")
            if worker.get("last_error"):
                notes.append(":red-badge[last tick failed]")
        st.markdown(" · ".join(notes))
        st.page_link("pages/queue_monitor.py", label="Queue Monitor", icon=":material/arrow_forward:")


def alerts_block(scope: Scope) -> None:
    summary = system_alerts.load_summary(scope.db_url, AlertFilter(resolved=False, account_id=scope.account_id))
    by_severity = summary["severity"]
    with st.container(border=True, key="ov-alerts"):
        st.markdown("**Unresolved alerts**")
        with st.container(horizontal=True, key="ov-alert-counts"):  # a row on a phone too
            for sev in SEVERITIES:
                count_metric(sev.title(), by_severity.get(sev, 0), colour=SEVERITY_COLOURS.get(sev))
        if summary["type"]:
            st.caption(" · ".join(f"{n} × {md_escape(t)}" for t, n in summary["type"].items()))
        else:
            st.markdown(":green-badge[:material/check_circle: nothing open]")
        st.page_link("pages/system_alerts.py", label="System Alerts", icon=":material/arrow_forward:")


def activity_block(scope: Scope, now: datetime) -> None:
    page = activity_feed.load_page(scope.db_url, AuditFilter(account_id=scope.account_id), RECENT_EVENTS, None)
    with st.container(border=True, key="ov-activity"):
        st.markdown(f"**Last {RECENT_EVENTS} events**")
        if page.rows:
            activity_feed.show_timeline(page.rows, now, scope.tz)
        else:
            st.caption("No audit events yet.")
        st.page_link("pages/activity_feed.py", label="Activity Feed", icon=":material/arrow_forward:")


def metrics_block(scope: Scope, now: datetime) -> None:
    """The latest daily report per account with its changes: the Metrics page's KPIs (one account's cards, or
    the board of several)."""
    today = now.date()
    account_ids = None if scope.account_id is None else (str(scope.account_id),)
    data = metrics.load_report_set(scope.db_url, account_ids, "daily", today - timedelta(days=6), today)
    st.markdown("**Latest daily metrics**")
    if data.frame.empty:
        st.caption("No daily analytics report in the last 7 days.")
    else:
        metrics.show_kpis(data, scope)
    st.page_link("pages/metrics.py", label="Metrics", icon=":material/arrow_forward:")
