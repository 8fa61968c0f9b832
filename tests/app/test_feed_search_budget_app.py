"""A new Activity Feed search string costs at most one bounded query."""
from __future__ import annotations

from sqlalchemy import event

from lib.core.settings import load_settings


def test_a_new_search_string_costs_one_query(run_page, demo_url):
    at = run_page(demo_url, "pages/activity_feed.py")
    from lib.ui.shell import get_engine

    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "audit_log" in statement:
            seen.append(statement)

    engine = get_engine(load_settings().database_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        for text in ("p", "po", "pos", "post_q"):  # one rerun per typed string
            seen.clear()
            at.text_input(key="feed_q").set_value(text).run()
            assert not at.exception, [e.value for e in at.exception]
            assert len(seen) <= 1, seen
            assert all("LIMIT" in s.upper() for s in seen), seen
    finally:
        event.remove(engine, "before_cursor_execute", count)
