"""System Alerts: filters (state in the URL), cached loaders, list/summary/chart, resolve actions."""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

from lib.alerts.store import (
    ALERT_TYPES,
    ALL_TYPES,
    EXPORT_COLUMNS,
    LIST_CAP,
    SEVERITIES,
    Alert,
    AlertFilter,
    AlertGroup,
    alert_counts,
    alert_summary,
    export_chunks,
    group_alerts,
    list_alerts,
    matching_ids,
    resolve,
)
from lib.core.export import build_export
from lib.core.text import clip, clip_json
from lib.core.timebuckets import bucket_for_range
from lib.core.timeutil import fmt_local, utcnow
from lib.ui.auth import current_actor
from lib.ui.charts import bucketed_bar_chart
from lib.ui.counts import count_metric
from lib.ui.export import export_control
from lib.ui.feedback import Confirmation, flash, guarded_write, show_flash
from lib.ui.notifications import badge_columns, silence_selected
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine, lazy_expander
from lib.ui.text import ago, md_escape


class Keys:
    """The page's session-state keys (tests use these names too)."""
    TYPE, STATE, SEVERITY, RANGE, VIEW = "alert_type", "alert_state", "alert_sev", "alert_range", "alert_view"
    GROUPS_TABLE, EACH_TABLE = "alerts-groups", "alerts-each"  # the list's selection (positions)
    SELECTED = "alerts_selected_ids"  # the selection as alert ids (str), taken at once from the rows as drawn
    SHOWN = "alerts_shown"  # the rows as drawn: {tag, id_sets, alerts}; frozen while rows are selected
    CONFIRM_ALL = "alerts_confirm_all"  # ids that "resolve all matching" asks about
    CONFIRM_FILTER = "alerts_confirm_filter"  # the filter those ids belong to
    FLASH = "system_alerts"  # lib.ui.feedback's flash messages of this page
    CHART = "alerts_chart_open"  # the lazy "Alerts over time" expander: True while open


CONFIRM_ALL = Confirmation(Keys.CONFIRM_ALL)
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
    """The alert filter (type 'all' or one; resolved) plus severity and time; account from the sidebar."""
    with st.container(border=True, key="alert-filters"):
        c1, c2, c3 = st.columns([2, 3, 3])
        c4, c5, _ = st.columns([2, 3, 3])
        alert_type = c1.selectbox("Alert type", [ALL_TYPES, *ALERT_TYPES], key=Keys.TYPE, bind="query-params",
                                  format_func=lambda t: "All types" if t == ALL_TYPES else t)
        state = c2.segmented_control("Status", list(STATES), format_func=STATES.get, default="open",
                                     key=Keys.STATE, bind="query-params") or "open"
        severities = c3.multiselect("Severity", list(SEVERITIES), key=Keys.SEVERITY, bind="query-params",
                                    placeholder="All severities")
        range_key = c4.selectbox("Created", list(RANGES), format_func=RANGES.get, index=3, key=Keys.RANGE,
                                 bind="query-params")
        view = c5.segmented_control("View", list(VIEWS), format_func=VIEWS.get, default="grouped",
                                    key=Keys.VIEW, bind="query-params") or "grouped"
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
@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_alerts(db_url: str, filters: AlertFilter) -> list[Alert]:
    with get_engine(db_url).connect() as conn:
        return list_alerts(conn, filters=filters)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_summary(db_url: str, filters: AlertFilter) -> dict:
    with get_engine(db_url).connect() as conn:
        return alert_summary(conn, filters=filters)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
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
        count_metric(f":{colour}[{icon} {name.title()}]", sev[name], colour=colour, where=col)
    if summary["type"]:
        st.caption("By type: " + " · ".join(f"{md_escape(t)} {n}" for t, n in summary["type"].items()))


def show_chart(scope: Scope, filters: AlertFilter, bucket: str) -> None:
    """Alerts over time by type, in a lazy expander: it stood between the counts and the list people
    open the page for, and its Plotly chart was the page's largest cost in the browser."""
    panel = lazy_expander("Alerts over time", key=Keys.CHART, icon=":material/bar_chart:")
    if panel is None:
        return
    with panel:
        counts = load_counts(scope.db_url, filters, bucket)
        if not counts:
            st.caption("No alerts in this view.")
            return
        bucketed_bar_chart(counts, bucket=bucket, tz=scope.tz, series="alert_type", colors=TYPE_COLOURS,
                           key="alerts-chart", y_title=f"alerts per {bucket}", height=230, order=TYPE_COLOURS)


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
        "age": [ago(g.last_seen) for g in groups],
    })


def alert_frame(alerts: list[Alert], scope: Scope, now: datetime) -> pd.DataFrame:
    return pd.DataFrame({
        "severity": [_badge(a.severity) for a in alerts],
        "alert_type": [a.alert_type for a in alerts],
        "account": [scope.account_name(a.business_account_id) for a in alerts],
        "message": [None if a.message is None else clip(a.message, 1_000) for a in alerts],
        "age": [ago(a.created_at) for a in alerts],
        "created": [fmt_local(a.created_at, scope.tz) for a in alerts],
        "count": [a.count for a in alerts],
        "status": ["resolved" if a.resolved else "open" for a in alerts],
        "resolved_by": [(a.resolved_by or "auto / elsewhere") if a.resolved else "" for a in alerts],
        "resolved_at": [fmt_local(a.resolved_at, scope.tz) if a.resolved else "" for a in alerts],
        "details": [None if a.details is None else json.dumps(clip_json(a.details), sort_keys=True, default=str)
                    for a in alerts],
    })


COLUMNS = {
    "severity": st.column_config.TextColumn("Severity", width=82),
    "alert_type": st.column_config.TextColumn("Type", width=125),
    "account": st.column_config.TextColumn("Account", width=130),
    "message": st.column_config.TextColumn("Message", width=260),
    "count": st.column_config.NumberColumn("Count", width=60, help="Occurrences, repeats included"),
    "open": st.column_config.NumberColumn("Open", width=55, help="Unresolved alerts in the group"),
    "age": st.column_config.TextColumn("Age", width=105),
    "first_seen": "First seen",
    "last_seen": "Last seen",
    "created": "Created",
    "status": "Status",
    "resolved_by": "Resolved by",
    "resolved_at": "Resolved at",
    "details": st.column_config.JsonColumn("Details", width="large"),
    "silenced": st.column_config.TextColumn("Silenced", width=70, help="Matched by an active silence: listed, not notified"),
    "on_it": st.column_config.TextColumn("On it", width=60, help="Acknowledged by (repeat digests stop)"),
}


def _view_tag(filters: AlertFilter, grouped: bool) -> str:
    return hashlib.sha1(repr((filters, grouped)).encode()).hexdigest()[:12]


def _on_select(table_key: str) -> None:
    """Positions -> ids at once, against the rows the operator saw (not a refreshed list)."""
    shown = st.session_state.get(Keys.SHOWN) or {}
    id_sets = shown.get("id_sets", [])
    rows = st.session_state[table_key].selection.rows
    st.session_state[Keys.SELECTED] = [str(i) for r in rows if r < len(id_sets) for i in id_sets[r]]


def show_list(alerts: list[Alert], view: AlertsView, scope: Scope, now: datetime,
              badges: dict | None = None) -> tuple[list[uuid.UUID], int]:
    """The list with row selection -> (ids behind the selected rows, how many of them are open).
    `badges` (lib.notify.silences alert badges by id) adds the "silenced" and "on it" columns.

    The selection is kept as ids (Keys.SELECTED); while rows are selected the list stays as it was
    drawn, so no live refresh reorders it under the operator's selection."""
    tag = _view_tag(view.filters, view.grouped)
    shown = st.session_state.get(Keys.SHOWN) or {}
    selected = list(st.session_state.get(Keys.SELECTED) or [])
    if shown.get("tag") != tag and selected:
        st.session_state[Keys.SELECTED] = selected = []  # other rows on screen: a new selection
    frozen = bool(selected) and shown.get("tag") == tag
    if frozen:
        alerts = shown["alerts"]
    if view.grouped:
        groups = group_alerts(alerts)
        frame, id_sets = group_frame(groups, scope, now), [tuple(str(i) for i in g.ids) for g in groups]
        key = Keys.GROUPS_TABLE
    else:
        frame, id_sets = alert_frame(alerts, scope, now), [(str(a.id),) for a in alerts]
        key = Keys.EACH_TABLE
    if badges is not None:  # after severity, type and account
        uuid_sets = [tuple(uuid.UUID(i) for i in ids) for ids in id_sets]
        for i, (name, values) in enumerate(badge_columns(badges, uuid_sets).items()):
            frame.insert(3 + i, name, values)
    st.session_state[Keys.SHOWN] = {"tag": tag, "id_sets": id_sets, "alerts": alerts, "table": key}
    # what triage reads first fits 1440 px: severity, type, account, its silence and acknowledgement,
    # message, counts, age; then the rest
    first = ["severity", "alert_type", "account", "silenced", "on_it", "message", "count", "open", "age", "status"]
    order = [c for c in first if c in frame.columns] + [c for c in frame.columns if c not in first]
    st.dataframe(_styled(frame), hide_index=True, width="stretch", key=key, on_select=lambda: _on_select(key),
                 selection_mode="multi-row", column_config=COLUMNS, column_order=order)
    if len(alerts) >= LIST_CAP:
        st.caption(f"Showing the first {LIST_CAP:,} matching alerts (most severe, newest first). Narrow the filter for the rest.")
    if frozen:
        st.caption(f"Live refresh of the list is paused while {len(selected)} alert(s) are selected.")
    ids = [uuid.UUID(i) for i in selected]
    if selected and any(set(s) == set(selected) for s in id_sets):  # one row selected: its details
        _show_selected_details(alerts, ids)
    open_ids = {str(a.id) for a in alerts if not a.resolved}
    return ids, sum(1 for i in selected if i in open_ids)


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
    # the identity as it is now (role, token expiry), not the Actor of the last full run
    results = guarded_write(Keys.FLASH, "Resolve", get_engine(db_url),
                            lambda conn: resolve(conn, ids, actor=current_actor(settings), now=utcnow()))
    CONFIRM_ALL.cancel()
    if results is None:  # refused: the flash says why, nothing changed
        return
    clear_alert_caches()
    # the ids go, and so do the grid's ticks: its selection is positions, and the rows moved up into
    # the resolved ones' places. The table keeps its key (a new key inside the live panel broke the CSV
    # download button drawn in the same run) and its selection is emptied through session state, which
    # the grid applies on the next run.
    st.session_state[Keys.SELECTED] = []
    table = (st.session_state.get(Keys.SHOWN) or {}).get("table")
    if table:
        st.session_state[table] = {"selection": {"rows": [], "columns": [], "cells": []}}
    done = sum(1 for r in results if r.outcome == "resolved")
    noop = sum(1 for r in results if r.outcome == "already_resolved")
    gone = sum(1 for r in results if r.outcome == "not_found")
    parts = [f"Resolved {done} alert{'s' if done != 1 else ''}."]
    if noop:
        parts.append(f"{noop} {'was' if noop == 1 else 'were'} already resolved: nothing to do.")
    if gone:
        parts.append(f"{gone} no longer exist{'s' if gone == 1 else ''}.")
    flash(Keys.FLASH, "success", " ".join(parts))


def _ask_all(db_url: str, filters: AlertFilter) -> None:
    with get_engine(db_url).connect() as conn:
        CONFIRM_ALL.ask(matching_ids(conn, filters=filters))
    st.session_state[Keys.CONFIRM_FILTER] = filters  # the snapshot is about this filter only


def show_result() -> None:
    show_flash(Keys.FLASH)


def resolve_actions(scope: Scope, filters: AlertFilter, selected_ids: list, open_selected: int,
                    alerts: list[Alert] | None = None) -> None:
    can = scope.user.is_operator
    reason = None if can else "Resolving alerts needs the operator role."
    c1, c2, c3, _ = st.columns([2, 2, 1.4, 1.6])
    if alerts is not None:
        with c3:
            silence_selected(scope, alerts, selected_ids)
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
    if st.session_state.get(Keys.CONFIRM_FILTER) != filters:  # the filter changed: drop the snapshot
        CONFIRM_ALL.cancel()
    pending = CONFIRM_ALL.pending
    if pending is not None and can:
        with st.container(border=True, key="alerts-confirm"):
            if not pending:
                st.info("No unresolved alerts match the filter: nothing to resolve.")
                st.button("OK", key="alerts-confirm-cancel", on_click=CONFIRM_ALL.cancel)
                return
            st.warning(
                f"Resolve {len(pending)} unresolved alert{'s' if len(pending) != 1 else ''} matching the current filter? "
                "Each one gets an audit_log entry under your name.",
                icon=":material/warning:",
            )
            a, b, _ = st.columns([2, 1, 4])
            a.button(f"Yes, resolve {len(pending)}", key="alerts-confirm-yes", type="primary",
                     on_click=_do_resolve, args=(scope.db_url, list(pending), scope.settings), width="stretch")
            b.button("Cancel", key="alerts-confirm-cancel", on_click=CONFIRM_ALL.cancel, width="stretch")


def alerts_export(db_url: str, filters: AlertFilter, stamp: str) -> None:
    def build(fmt: str) -> bytes:
        with get_engine(db_url).connect() as conn:  # a server-side cursor: never a list of every alert
            return build_export(fmt, EXPORT_COLUMNS, export_chunks(conn, filters=filters))[0]

    export_control("Export", build, file_stem=f"system_alerts_{stamp}", key="alerts-export",
                 help="Every alert the filter matches, with severity and who resolved it.")


def empty_state(filters: AlertFilter) -> None:
    if filters.resolved is False and filters == AlertFilter(account_id=filters.account_id, since=filters.since):
        st.success("No unresolved alerts. The worker raises alerts on auth failures, rate limits, content "
                   "violations, sync failures and agents that stop beating.", icon=":material/check_circle:")
    else:
        st.info("No alerts match these filters. Clear a filter or choose 'All' in Status.",
                icon=":material/filter_alt_off:")
