import streamlit as st

from lib.core.timeutil import floor_time, utcnow
from lib.ui import page_guard
from lib.ui.activity_feed import (
    Keys,
    chart_bucket,
    current_cursor,
    empty_state,
    feed_export,
    feed_filters,
    load_chart,
    load_count,
    load_filter_options,
    load_page,
    pager,
    show_chart,
    show_table,
    show_timeline,
)
from lib.ui.text import md_escape

scope = page_guard("Activity Feed")
now = floor_time(utcnow(), 30)
event_types, resource_types = load_filter_options(scope.db_url, floor_time(now, 300))
view = feed_filters(event_types, resource_types, scope.account_id, now, scope.tz)
cursor, number = current_cursor(view)
page = load_page(scope.db_url, view.filters, view.page_size, cursor)
total = load_count(scope.db_url, view.filters)

if not page.rows:
    empty_state(view.filters)
else:
    head, export = st.columns([2, 1], vertical_alignment="bottom")  # room for the format and its button
    head.subheader(f"Events{' in ' + md_escape(scope.account_name(scope.account_id)) if scope.account_id else ''}")
    with export:
        feed_export(scope.db_url, view.filters, total, now.strftime("%Y%m%d-%H%M"))
    # lazy tabs: only the open one is computed and sent (the chart's query runs when it is opened)
    timeline, table, chart = st.tabs(["Timeline", "Table", "Chart"], key=Keys.TAB, on_change="rerun")
    if timeline.open is not False:
        with timeline:
            show_timeline(page.rows, now, scope.tz)
    if table.open is not False:
        with table:
            show_table(page.rows, now, scope.tz)
    if chart.open is not False:
        with chart:
            bucket = chart_bucket(view, now)
            show_chart(load_chart(scope.db_url, view.filters, bucket), bucket, scope.tz, searching=bool(view.filters.search))
    pager(page, number, total, key="feed-pager")
