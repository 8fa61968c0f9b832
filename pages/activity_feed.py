import streamlit as st

from lib.timeutil import floor_time, utcnow
from lib.ui import page_guard
from lib.ui.text import md_escape
from lib.ui.activity_feed import (
    chart_bucket, current_cursor, empty_state, feed_export, feed_filters, load_chart, load_count, load_filter_options,
    load_page, pager, show_chart, show_table, show_timeline,
)

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
    bucket = chart_bucket(view, now)
    show_chart(load_chart(scope.db_url, view.filters, bucket), bucket, scope.tz, searching=bool(view.filters.search))
    head, export = st.columns([4, 1], vertical_alignment="bottom")
    head.subheader(f"Events{' in ' + md_escape(scope.account_name(scope.account_id)) if scope.account_id else ''}")
    with export:
        feed_export(scope.db_url, view.filters, total, now.strftime("%Y%m%d-%H%M"))
    timeline, table = st.tabs(["Timeline", "Table"])
    with timeline:
        show_timeline(page.rows, now, scope.tz)
    with table:
        show_table(page.rows, now, scope.tz)
    pager(page, number, total, key="feed-pager")
