"""System Alerts: filters (state in the URL), cached loaders, list/summary/chart, resolve actions."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import plotly.express as px
import streamlit as st

from lib.alerts import (
    ALERT_TYPES, ALL_TYPES, LIST_CAP, SEVERITIES, Alert, AlertFilter, AlertGroup, alert_counts, alert_summary,
    EXPORT_COLUMNS, export_chunks, group_alerts, list_alerts, matching_ids, resolve,
)
from lib.export import rows_to_csv
from lib.timebuckets import bucket_for_range
from lib.timeutil import fmt_ago, fmt_local, utcnow
from lib.identity import PermissionDenied
from lib.ui.auth import current_actor
from lib.ui.export import csv_download
from lib.ui.notifications import badge_columns
from lib.ui.shell import Scope, get_engine
from lib.text import clip, clip_json
from lib.ui.text import md_escape

STATES = {"open": "Unresolved", "resolved": "Resolved", "all": "All"}
RANGES = {"24h": "Last 24 h", "7d": "Last 7 days", "30d": "Last 30 days", "all": "All time"}
RANGE_DELTAS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
VIEWS = {"grouped": "Grouped repeats", "each": "Each alert"}
SEVERITY_LOOK = {"CRITICAL": (":material/error:", "red"), "ERROR": (":material/report:", "orange"),
                 "WARNING": (":material/warning:", "yellow")}
SEVERITY_CELL = {"CRITICAL": "background-color: #c62828; color: white; font-weight: 600",
                 "ERROR": "background-color: #ef6c00; color: white; font-weight: 600",
                 "WARNING": "background-color: #f9d34a; color: #3b3000; font-weight: 600"}
TYPE_COLOURS = {"auth_failure": "#c62828", "agent_down": "#8e24aa", "content_violation": "#ef6c00",
                "sync_failure": "#f9a825", "rate_limit": "#1e88e5"}


@dataclass(frozen=True)
class AlertsView:
    filters: AlertFilter
    grouped: bool
    range_key: str


def alert_filters(account_id, now: datetime) -> AlertsView:
    """Spec 5.5 AlertFilterState (type 'all' or one; resolved) plus severity and time; account from the sidebar."""
    with st.container(border=True, key="alert-filters"):
        c1, c2, c3 = st.columns([2, 3, 3])
        c4, c5, _ = st.columns([2, 3, 3])
        alert_type = c1.selectbox("Alert type", [ALL_TYPES, *ALERT_TYPES], key="alert_type", bind="query-params",
                                  format_func=lambda t: "All types" if t == ALL_TYPES else t)
        state = c2.segmented_control("Status", list(STATES), format_func=STATES.get, default="open",
                                     key="alert_state", bind="query-params") or "open"
        severities = c3.multiselect("Severity", list(SEVERITIES), key="alert_sev", bind="query-params",
                                    placeholder="All severities")
        range_key = c4.selectbox("Created", list(RANGES), format_func=RANGES.get, index=3, key="alert_range",
                                 bind="query-params")
        view = c5.segmented_control("View", list(VIEWS), format_func=VIEWS.get, default="grouped",
                                    key="alert_view", bind="query-params") or "grouped"
    filters = AlertFilter(
        type=alert_type or ALL_TYPES,
        resolved={"open": False, "resolved": True, "all": None}[state],
        severities=tuple(severities),
        account_id=account_id,
        since=now - RANGE_DELTAS[range_key] if range_key in RANGE_DELTAS else None,
    )
    return AlertsView(filters=filters, grouped=view == "grouped", range_key=range_key)


# ---------------------------------------------------------------------------------------------
# Cached loaders
# ---------------------------------------------------------------------------------------------
@st.cache_data(ttl=25, max_entries=32, show_spinner=False)
def load_alerts(db_url: str, filters: AlertFilter) -> list[Alert]:
    with get_engine(db_url).connect() as conn:
        return list_alerts(conn, filters=filters)


@st.cache_data(ttl=25, max_entries=32, show_spinner=False)
def load_summary(db_url: str, filters: AlertFilter) -> dict:
    with get_engine(db_url).connect() as conn:
        return alert_summary(conn, filters=filters)


@st.cache_data(ttl=25, max_entries=32, show_spinner=False)
def load_counts(db_url: str, filters: AlertFilter, bucket: str) -> list[dict]:
    with get_engine(db_url).connect() as conn:
        return alert_counts(conn, filters=filters, bucket=bucket)


def clear_alert_caches() -> None:
    load_alerts.clear()
    load_summary.clear()
    load_counts.clear()


# ---------------------------------------------------------------------------------------------
# Summary and chart
# ---------------------------------------------------------------------------------------------
def show_summary(summary: dict, state_label: str) -> None:
    sev = summary["severity"]
    cols = st.columns(4)
    cols[0].metric(f"{state_label} alerts", sum(sev.values()))
    for col, name in zip(cols[1:], SEVERITIES):
        icon, colour = SEVERITY_LOOK[name]
        col.metric(f":{colour}[{icon} {name.title()}]", sev[name])
    if summary["type"]:
        st.caption("By type: " + " · ".join(f"{md_escape(t)} {n}" for t, n in summary["type"].items()))


def show_chart(counts: list[dict], bucket: str, tz) -> None:
    if not counts:
        return
    df = pd.DataFrame(counts)
    df["bucket"] = pd.to_datetime(df["bucket"], utc=True).dt.tz_convert(tz)
    fig = px.bar(df, x="bucket", y="count", color="alert_type", color_discrete_map=TYPE_COLOURS)
    fig.update_layout(height=230, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=None,
                      yaxis_title=f"alerts per {bucket}", legend_title_text=None, bargap=0.1)
    # name whole buckets: with a single bar Plotly otherwise picks sub-millisecond ticks
    fig.update_xaxes(tickformat="%b %d" if bucket == "day" else "%H:%M\n%b %d",
                     dtick=86_400_000 if bucket == "day" else None)
    st.plotly_chart(fig, width="stretch", key="alerts-chart")


def chart_bucket(view: AlertsView, now: datetime) -> str:
    return bucket_for_range(view.filters.since, now)


# ---------------------------------------------------------------------------------------------
# The list: one row per group or per alert, in a deterministic order; positions map to ids
# ---------------------------------------------------------------------------------------------
def _badge(sev: str) -> str:
    return sev


def _styled(frame: pd.DataFrame):
    """The severity column as a coloured badge (a cell style: the text stays plain)."""
    return frame.style.map(lambda v: SEVERITY_CELL.get(v, ""), subset=["severity"])


def group_frame(groups: list[AlertGroup], scope: Scope, now: datetime) -> pd.DataFrame:
    return pd.DataFrame({
        "severity": [_badge(g.severity) for g in groups],
        "alert_type": [g.alert_type for g in groups],
        "account": [scope.account_name(g.business_account_id) for g in groups],
        "message": [None if g.message is None else clip(g.message, 1_000) for g in groups],
        "count": [g.count for g in groups],
        "open": [g.unresolved for g in groups],
        "first_seen": [fmt_local(g.first_seen, scope.tz) for g in groups],
        "last_seen": [fmt_local(g.last_seen, scope.tz) for g in groups],
        "age": [fmt_ago(g.last_seen, now) for g in groups],
    })


def alert_frame(alerts: list[Alert], scope: Scope, now: datetime) -> pd.DataFrame:
    return pd.DataFrame({
        "severity": [_badge(a.severity) for a in alerts],
        "alert_type": [a.alert_type for a in alerts],
        "account": [scope.account_name(a.business_account_id) for a in alerts],
        "message": [None if a.message is None else clip(a.message, 1_000) for a in alerts],
        "age": [fmt_ago(a.created_at, now) for a in alerts],
        "created": [fmt_local(a.created_at, scope.tz) for a in alerts],
        "count": [a.count for a in alerts],
        "status": ["resolved" if a.resolved else "open" for a in alerts],
        "resolved_by": [(a.resolved_by or "auto / elsewhere") if a.resolved else "" for a in alerts],
        "resolved_at": [fmt_local(a.resolved_at, scope.tz) if a.resolved else "" for a in alerts],
        "details": [None if a.details is None else json.dumps(clip_json(a.details), sort_keys=True, default=str)
                    for a in alerts],
    })


COLUMNS = {
    "severity": st.column_config.TextColumn("Severity", width="small"),
    "alert_type": "Type",
    "account": "Account",
    "message": st.column_config.TextColumn("Message", width="large"),
    "count": st.column_config.NumberColumn("Count", help="Occurrences, repeats included"),
    "open": st.column_config.NumberColumn("Open", help="Unresolved alerts in the group"),
    "first_seen": "First seen",
    "last_seen": "Last seen",
    "age": "Age",
    "created": "Created",
    "status": "Status",
    "resolved_by": "Resolved by",
    "resolved_at": "Resolved at",
    "details": st.column_config.JsonColumn("Details", width="large"),
    "silenced": st.column_config.TextColumn("Silenced", width="small", help="Matched by an active silence: listed, not notified"),
    "on_it": st.column_config.TextColumn("On it", help="Acknowledged by (repeat digests stop)"),
}


def show_list(alerts: list[Alert], grouped: bool, scope: Scope, now: datetime, badges: dict | None = None) -> list:
    """The list with row selection; returns the ids behind the selected rows. `badges` (lib.notify
    alert badges by id) adds the "silenced" and "on it" columns."""
    if grouped:
        groups = group_alerts(alerts)
        frame, id_sets = group_frame(groups, scope, now), [g.ids for g in groups]
        key = "alerts-groups"
    else:
        frame, id_sets = alert_frame(alerts, scope, now), [(a.id,) for a in alerts]
        key = "alerts-each"
    if badges is not None:  # after severity, type and account
        for i, (name, values) in enumerate(badge_columns(badges, id_sets).items()):
            frame.insert(3 + i, name, values)
    event = st.dataframe(_styled(frame), hide_index=True, width="stretch", key=key, on_select="rerun",
                         selection_mode="multi-row", column_config=COLUMNS)
    rows = [i for i in event.selection.rows if i < len(id_sets)]
    if len(alerts) >= LIST_CAP:
        st.caption(f"Showing the first {LIST_CAP:,} matching alerts (most severe, newest first). Narrow the filter for the rest.")
    if len(rows) == 1:
        _show_selected_details(alerts, id_sets[rows[0]])
    return [i for r in rows for i in id_sets[r]]


def _show_selected_details(alerts: list[Alert], ids) -> None:
    picked = [a for a in alerts if a.id in set(ids)]
    if not picked:
        return
    newest = picked[0]
    with st.container(border=True, key="alert-detail"):
        st.caption(f"Selected: {md_escape(newest.alert_type)} · alert {newest.id}")
        if newest.message:
            st.text(clip(newest.message))
        if newest.details is not None:
            st.json(clip_json(newest.details), expanded=1)


# ---------------------------------------------------------------------------------------------
# Resolve: one / selected / all matching (with a confirmation stating the count)
# ---------------------------------------------------------------------------------------------
def _do_resolve(db_url: str, ids: list, settings) -> None:
    try:
        with get_engine(db_url).begin() as conn:  # the identity as it is now, not the last run's Actor
            results = resolve(conn, ids, actor=current_actor(settings), now=utcnow())
    except PermissionDenied as exc:
        st.session_state.pop("alerts_confirm_all", None)
        st.session_state["alerts_error"] = f"Nothing was resolved: {exc}."
        return
    clear_alert_caches()
    st.session_state.pop("alerts_confirm_all", None)
    done = sum(1 for r in results if r.outcome == "resolved")
    noop = sum(1 for r in results if r.outcome == "already_resolved")
    gone = sum(1 for r in results if r.outcome == "not_found")
    parts = [f"Resolved {done} alert{'s' if done != 1 else ''}."]
    if noop:
        parts.append(f"{noop} {'was' if noop == 1 else 'were'} already resolved: nothing to do.")
    if gone:
        parts.append(f"{gone} no longer exist{'s' if gone == 1 else ''}.")
    st.session_state["alerts_result"] = " ".join(parts)


def _ask_all(db_url: str, filters: AlertFilter) -> None:
    with get_engine(db_url).connect() as conn:
        st.session_state["alerts_confirm_all"] = matching_ids(conn, filters=filters)


def _cancel_all() -> None:
    st.session_state.pop("alerts_confirm_all", None)


def show_result() -> None:
    message = st.session_state.pop("alerts_result", None)
    if message:
        st.success(message, icon=":material/task_alt:")
    error = st.session_state.pop("alerts_error", None)
    if error:
        st.error(error, icon=":material/block:")


def resolve_actions(scope: Scope, filters: AlertFilter, selected_ids: list, open_selected: int) -> None:
    can = scope.user.is_operator
    reason = None if can else "Resolving alerts needs the operator role."
    c1, c2, _ = st.columns([2, 2, 3])
    c1.button(
        f"Resolve selected ({open_selected})", key="alerts-resolve-selected", icon=":material/task_alt:",
        type="primary", disabled=not can or not selected_ids, help=reason or "Select rows in the list first.",
        on_click=_do_resolve, args=(scope.db_url, list(selected_ids), scope.settings), width="stretch",
    )
    c2.button(
        "Resolve all matching…", key="alerts-resolve-all", icon=":material/done_all:", disabled=not can,
        help=reason or "Resolve every unresolved alert the filter matches (asks first).",
        on_click=_ask_all, args=(scope.db_url, filters), width="stretch",
    )
    pending = st.session_state.get("alerts_confirm_all")
    if pending is not None and can:
        with st.container(border=True, key="alerts-confirm"):
            if not pending:
                st.info("No unresolved alerts match the filter: nothing to resolve.")
                st.button("OK", key="alerts-confirm-cancel", on_click=_cancel_all)
                return
            st.warning(
                f"Resolve {len(pending)} unresolved alert{'s' if len(pending) != 1 else ''} matching the current filter? "
                "Each one gets an audit_log entry under your name.",
                icon=":material/warning:",
            )
            a, b, _ = st.columns([2, 1, 4])
            a.button(f"Yes, resolve {len(pending)}", key="alerts-confirm-yes", type="primary",
                     on_click=_do_resolve, args=(scope.db_url, list(pending), scope.settings), width="stretch")
            b.button("Cancel", key="alerts-confirm-cancel", on_click=_cancel_all, width="stretch")


def alerts_export(db_url: str, filters: AlertFilter, stamp: str) -> None:
    def build() -> bytes:
        with get_engine(db_url).connect() as conn:  # a server-side cursor: never a list of every alert
            return rows_to_csv(EXPORT_COLUMNS, export_chunks(conn, filters=filters))[0]

    csv_download("Export CSV", build, file_name=f"system_alerts_{stamp}.csv", key="alerts-export",
                 help="Every alert the filter matches, with severity and who resolved it.")


def empty_state(filters: AlertFilter) -> None:
    if filters.resolved is False and filters == AlertFilter(account_id=filters.account_id, since=filters.since):
        st.success("No unresolved alerts. The worker raises alerts on auth failures, rate limits, content "
                   "violations, sync failures and agents that stop beating.", icon=":material/check_circle:")
    else:
        st.info("No alerts match these filters. Clear a filter or choose 'All' in Status.",
                icon=":material/filter_alt_off:")
