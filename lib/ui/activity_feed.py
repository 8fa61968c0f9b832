"""Activity Feed: filter widgets (state in the URL), cached loaders, timeline/table/chart rendering."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from lib.core.audit import (
    EXPORT_CAP,
    EXPORT_COLUMNS,
    PAGE_SIZES,
    SEARCH_WINDOW,
    AuditFilter,
    Cursor,
    FeedPage,
    count_matching,
    distinct_event_types,
    distinct_resource_types,
    event_counts,
    export_chunks,
    feed_page,
)
from lib.core.export import build_export
from lib.core.text import clip, clip_json
from lib.core.timebuckets import bucket_for_range
from lib.core.timeutil import fmt_local
from lib.ui.charts import bucketed_bar_chart
from lib.ui.export import export_control
from lib.ui.shell import CACHE_TTL_S, get_engine, lazy_expander
from lib.ui.text import ago, md_escape


class Keys:
    """The page's session-state keys (filters are bound to the URL under the same names)."""
    TYPES, OUTCOME, RANGE = "feed_types", "feed_outcome", "feed_range"
    RESOURCE_TYPE, SEARCH, SIZE = "feed_rtype", "feed_q", "feed_size"
    FROM, TO = "feed_from", "feed_to"  # the custom range
    PAGING_KEY = "feed_paging_key"  # the (filters, page size) the cursor stack belongs to
    CURSORS = "feed_cursors"  # keyset cursors of the pages before the current one
    TAB = "feed_tab"  # Timeline / Table / Chart (lazy tabs)

    @staticmethod
    def event(event_id) -> str:  # a timeline entry's lazy expander: True while it is open
        return f"feed_event_{event_id}"


RANGES = {"1h": "Last hour", "24h": "Last 24 h", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom"}
RANGE_DELTAS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
OUTCOMES = {"any": "All", "success": "Success", "failure": "Failure"}
ANY = "(any)"

# icon and colour per event type; anything else gets the generic look
EVENT_LOOK = {
    "post_published": (":material/photo_camera:", "green"),
    "comment_replied": (":material/chat_bubble:", "blue"),
    "dm_sent": (":material/mail:", "violet"),
    "ugc_reposted": (":material/repeat:", "orange"),
    "post_failed_permanent": (":material/block:", "red"),
    "auth_failure": (":material/key_off:", "red"),
    "queue_item_retried": (":material/replay:", "gray"),
    "alert_resolved": (":material/task_alt:", "gray"),
}
GENERIC_LOOK = (":material/bolt:", "gray")


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedView:
    filters: AuditFilter
    page_size: int
    range_key: str


def feed_filters(event_types: list[str], resource_types: list[str], account_id, now: datetime, tz) -> FeedView:
    """The filter bar. Every widget is bound to the URL, so a view can be shared by its link."""
    with st.container(border=True, key="feed-filters"):
        c1, c2, c3 = st.columns([3, 2, 2])
        types = c1.multiselect("Event types", event_types, key=Keys.TYPES, bind="query-params",
                               placeholder="All event types")
        outcome = c2.segmented_control("Outcome", list(OUTCOMES), format_func=OUTCOMES.get, default="any",
                                       key=Keys.OUTCOME, bind="query-params") or "any"
        range_key = c3.selectbox("Time range", list(RANGES), format_func=RANGES.get, index=1, key=Keys.RANGE,
                                 bind="query-params")
        c4, c5, c6 = st.columns([2, 3, 2])
        rtype = c4.selectbox("Resource type", [ANY, *resource_types], key=Keys.RESOURCE_TYPE, bind="query-params")
        search = c5.text_input("Search", key=Keys.SEARCH, bind="query-params",
                               placeholder="resource id, error message or details (literal text)")
        size = c6.segmented_control("Rows per page", list(PAGE_SIZES), default=PAGE_SIZES[0], key=Keys.SIZE,
                                    bind="query-params") or PAGE_SIZES[0]
        since, until = None, None
        if range_key == "custom":
            today = now.astimezone(tz).date()
            d1, d2, _ = st.columns([2, 2, 3])
            start = d1.date_input("From", value=today - timedelta(days=7), key=Keys.FROM, bind="query-params")
            end = d2.date_input("To (inclusive)", value=today, key=Keys.TO, bind="query-params")
            if start and end and start > end:
                st.warning("'From' is after 'To': showing the range the other way round.")
                start, end = end, start
            since = _local_midnight(start, tz) if start else None
            until = _local_midnight(end + timedelta(days=1), tz) if end else None
        else:
            since = now - RANGE_DELTAS[range_key]
    filters = AuditFilter(
        event_types=tuple(types),
        success={"any": None, "success": True, "failure": False}[outcome],
        since=since,
        until=until,
        resource_type=None if rtype in (None, ANY) else rtype,
        account_id=account_id,
        search=(search or "").strip(),
    )
    return FeedView(filters=filters, page_size=int(size), range_key=range_key)


def _local_midnight(day: date, tz) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


# ---------------------------------------------------------------------------------------------
# Cached loaders (db_url first; "now" is always passed in, rounded)
# ---------------------------------------------------------------------------------------------
@st.cache_data(ttl=300, max_entries=8, show_spinner=False)
def load_filter_options(db_url: str, now_bucket: datetime) -> tuple[list[str], list[str]]:
    with get_engine(db_url).connect() as conn:
        return distinct_event_types(conn), distinct_resource_types(conn)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_page(db_url: str, filters: AuditFilter, limit: int, after: Cursor | None) -> FeedPage:
    with get_engine(db_url).connect() as conn:
        return feed_page(conn, filters=filters, limit=limit, after=after)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_count(db_url: str, filters: AuditFilter) -> int | None:
    """Matching rows (capped), or None for a text search: a new search string costs one bounded query
    (the page), not a count and a chart over the whole table as well."""
    if filters.search.strip():
        return None
    with get_engine(db_url).connect() as conn:
        return count_matching(conn, filters=filters)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_chart(db_url: str, filters: AuditFilter, bucket: str) -> list[dict]:
    if filters.search.strip():  # see load_count
        return []
    with get_engine(db_url).connect() as conn:
        return event_counts(conn, filters=filters, bucket=bucket)


# ---------------------------------------------------------------------------------------------
# Keyset paging: a stack of cursors per filter in session state
# ---------------------------------------------------------------------------------------------
def _paging_state(view: FeedView) -> list:
    key = (view.filters, view.page_size)
    if st.session_state.get(Keys.PAGING_KEY) != key:
        st.session_state[Keys.PAGING_KEY] = key
        st.session_state[Keys.CURSORS] = []
    return st.session_state[Keys.CURSORS]


def current_cursor(view: FeedView) -> tuple[Cursor | None, int]:
    """(cursor of the current page or None for the first, 1-based page number)."""
    stack = _paging_state(view)
    return (stack[-1] if stack else None), len(stack) + 1


def _older(cursor: Cursor) -> None:
    st.session_state[Keys.CURSORS].append(cursor)


def _newer() -> None:
    if st.session_state.get(Keys.CURSORS):
        st.session_state[Keys.CURSORS].pop()


def _first() -> None:
    st.session_state[Keys.CURSORS] = []


def pager(page: FeedPage, number: int, total: int | None, key: str) -> None:
    c1, c2, c3, c4 = st.columns([1, 1, 1, 4], vertical_alignment="center")
    c1.button("Newest", key=f"{key}-first", icon=":material/first_page:", on_click=_first, disabled=number == 1,
              width="stretch")
    c2.button("Newer", key=f"{key}-newer", icon=":material/chevron_left:", on_click=_newer, disabled=number == 1,
              width="stretch")
    c3.button("Older", key=f"{key}-older", icon=":material/chevron_right:", on_click=_older,
              args=(page.last_cursor,), disabled=not page.has_older, width="stretch")
    if total is None:  # a text search: one bounded query per search string, no count
        c4.caption(f"Page {number} · {len(page.rows)} rows shown{' · more on older pages' if page.has_older else ''} · "
                   f"matching among the newest {SEARCH_WINDOW:,} events (text search)")
        return
    total_text = f"{EXPORT_CAP:,}+" if total > EXPORT_CAP else f"{total:,}"
    c4.caption(f"Page {number} · {len(page.rows)} rows shown · {total_text} matching")


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _look(event_type: str | None) -> tuple[str, str]:
    return EVENT_LOOK.get(event_type or "", GENERIC_LOOK)


def _outcome_badge(success: bool | None) -> str:
    if success is True:
        return ":green-badge[:material/check: success]"
    if success is False:
        return ":red-badge[:material/close: failure]"
    return ":gray-badge[no outcome]"


def show_timeline(rows: list[dict], now: datetime, tz) -> None:
    """One line per event (icon, colour, outcome, times, action, resource, user); expand for the rest.
    Failures lead with a red badge and a red icon, and their count comes first: among fifty grey
    lines two failures were easy to miss."""
    failures = sum(1 for r in rows if r["success"] is False)
    if failures:
        st.markdown(f":red-badge[:material/error: {failures} of these {len(rows)} events failed]")
    for row in rows:
        icon, colour = _look(row["event_type"])
        failed = row["success"] is False
        resource = " ".join(x for x in (row["resource_type"], row["resource_id"]) if x) or "—"
        user = f" · {md_escape(row['user_id'])}" if row["user_id"] else ""  # events of the worker have none
        label = (
            (f"{_outcome_badge(False)} " if failed else "")
            + f":{'red' if failed else colour}[**{md_escape(row['event_type'] or 'event')}**]"
            + ("" if failed else f" {_outcome_badge(row['success'])}")
            + f" · {md_escape(row['action'] or '—')} · {md_escape(resource)[:80]}{user}"
            f" · {md_escape(fmt_local(row['created_at'], tz))}"  # no "N s ago": the label is the entry's identity
        )
        if failed:
            icon = ":material/error:"
        # lazy: a closed entry sends only its line; opening one reruns the page (cached loaders) and
        # draws its details. Drawing 50 entries' JSON and code up front made the page ~2x slower
        # to open in the browser.
        entry = lazy_expander(label, key=Keys.event(row["id"]), icon=icon)
        if entry is None:
            continue
        with entry:
            a, b = st.columns([1, 1])
            a.caption(f"**When:** {md_escape(fmt_local(row['created_at'], tz))} ({ago(row['created_at'])})")
            a.caption(f"**User:** {md_escape(row['user_id'] or '—')}")
            b.caption(f"**Resource:** {md_escape(row['resource_type'] or '—')} / {md_escape(row['resource_id'] or '—')}")
            b.caption(f"**Event id:** {row['id']}")
            if row["error_message"]:
                st.caption("Error message")
                st.code(clip(row["error_message"]), language=None, wrap_lines=True)
            if row["details"] is not None:
                st.caption("Details")
                st.json(clip_json(row["details"]), expanded=2)


def feed_frame(rows: list[dict], now: datetime, tz) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": [fmt_local(r["created_at"], tz) for r in rows],
            "age": [ago(r["created_at"]) for r in rows],
            "event_type": [r["event_type"] for r in rows],
            "outcome": [{True: "success", False: "failure"}.get(r["success"], "—") for r in rows],
            "action": [r["action"] for r in rows],
            "resource_type": [r["resource_type"] for r in rows],
            "resource_id": [r["resource_id"] for r in rows],
            "user": [r["user_id"] for r in rows],
            "error_message": [None if r["error_message"] is None else clip(r["error_message"], 1_000) for r in rows],
            "details": [None if r["details"] is None else json.dumps(clip_json(r["details"]), sort_keys=True, default=str)
                        for r in rows],
        }
    )


def show_table(rows: list[dict], now: datetime, tz) -> None:
    st.dataframe(
        feed_frame(rows, now, tz),
        hide_index=True,
        width="stretch",
        key="feed-table",
        column_config={
            "time": st.column_config.TextColumn("Time", width="medium"),
            "age": st.column_config.TextColumn("Age", width="small"),
            "event_type": "Event",
            "outcome": "Outcome",
            "action": "Action",
            "resource_type": "Resource type",
            "resource_id": "Resource id",
            "user": "User",
            "error_message": st.column_config.TextColumn("Error", width="large"),
            "details": st.column_config.JsonColumn("Details", width="large"),
        },
    )


OUTCOME_COLOURS = {"success": "#3f9c6d", "failure": "#d64545", "unknown": "#9aa0a6"}


def show_chart(counts: list[dict], bucket: str, tz, searching: bool = False) -> None:
    if searching:
        st.caption("The chart is not drawn for a text search (each search string costs one bounded query).")
        return
    if not counts:
        st.caption("No events in this range.")
        return
    bucketed_bar_chart(counts, bucket=bucket, tz=tz, series="outcome", colors=OUTCOME_COLOURS, key="feed-chart",
                       y_title=f"events per {bucket}", height=260, order=OUTCOME_COLOURS)
    st.caption(f"Events per {bucket} (UTC {bucket}s), stacked by outcome.")


def chart_bucket(view: FeedView, now: datetime) -> str:
    return bucket_for_range(view.filters.since, view.filters.until or now)


def feed_export(db_url: str, filters: AuditFilter, total: int | None, file_stamp: str) -> None:
    def build(fmt: str) -> bytes:
        with get_engine(db_url).connect() as conn:
            data, _written, _truncated = build_export(fmt, EXPORT_COLUMNS, export_chunks(conn, filters=filters),
                                                      cap=EXPORT_CAP)
        return data

    export_control(
        "Export", build, file_stem=f"activity_feed_{file_stamp}", key="feed-export",
        help=f"Every row the filter matches (not only this page), newest first, at most {EXPORT_CAP:,} rows.",
    )
    if total is not None and total > EXPORT_CAP:
        st.warning(
            f"The filter matches more than {EXPORT_CAP:,} rows: the export holds the newest {EXPORT_CAP:,}. "
            "Narrow the time range to export the rest.",
            icon=":material/warning:",
        )


def empty_state(filters: AuditFilter) -> None:
    if filters == AuditFilter(since=filters.since, until=filters.until, account_id=filters.account_id):
        st.info(
            "No activity in this time range. Events appear here as the worker and the agents write audit_log; "
            "choose a longer time range or another account.",
            icon=":material/history:",
        )
    else:
        st.info("No events match these filters. Clear a filter or widen the time range.", icon=":material/filter_alt_off:")
