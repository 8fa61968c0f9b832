"""Query budget: with 20 sessions on the same page with live refresh, the database sees at
most one query per cached loader per refresh interval, not one per session.

The caches are process-wide, so 20 AppTest sessions in one process model 20 browser sessions of one
server. Time is frozen and moved by hand, both the app's clock (lib.core.timeutil.utcnow: the loaders' time
buckets) and the caches' TTL clock (streamlit's TTLCACHE_TIMER), so the test does not depend on how
fast the machine runs it. Queries are counted with a SQLAlchemy event on the engine that
lib.ui.shell.get_engine returns (the one the pages use).
"""
from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import event
from streamlit.runtime.caching import cache_utils
from streamlit.testing.v1 import AppTest

import lib.core.timeutil
from lib.core.db import init_db, make_engine
from lib.core.settings import load_settings
from sandbox.seed import seed_demo

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = 20
PAGES = ["pages/overview.py", "pages/queue_monitor.py", "pages/agent_status.py", "pages/system_alerts.py",
         "pages/activity_feed.py"]


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return 1_000_000.0 + self.offset


@pytest.fixture(scope="module")
def budget_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('budget') / 'demo.sqlite'}"
    engine = make_engine(url)
    init_db(engine)
    seed_demo(engine, now=lib.core.timeutil.utcnow())
    engine.dispose()
    return url


@pytest.fixture
def frozen(monkeypatch):
    """Freeze both clocks; clock.offset moves them together."""
    clock = Clock()
    start = lib.core.timeutil.utcnow()
    original = lib.core.timeutil.utcnow

    def utcnow():
        return start + timedelta(seconds=clock.offset)

    monkeypatch.setattr(lib.core.timeutil, "utcnow", utcnow)
    import sys

    for name, module in list(sys.modules.items()):  # modules that imported utcnow by name
        if (name == "lib" or name.startswith("lib.")) and getattr(module, "utcnow", None) is original:
            monkeypatch.setattr(module, "utcnow", utcnow)
    monkeypatch.setattr(cache_utils, "TTLCACHE_TIMER", clock.monotonic)
    st.cache_resource.clear()
    st.cache_data.clear()  # caches made from now on use the frozen TTL clock
    yield clock
    st.cache_resource.clear()
    st.cache_data.clear()


def session(page: str) -> AppTest:
    """One browser session: the entry point, then the page (live refresh is on by default)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.run()
    if page != "pages/overview.py":
        at.switch_page(str(ROOT / page))
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.toggle(key="live").value is True
    return at


def interval(page: str, counter: Counter) -> list[int]:
    """SESSIONS sessions within one refresh interval; the number of queries each one caused."""
    per_session = []
    for _ in range(SESSIONS):
        before = sum(counter.values())
        session(page)
        per_session.append(sum(counter.values()) - before)
    return per_session


@pytest.mark.parametrize("page", PAGES)
def test_twenty_sessions_cost_one_query_per_loader_per_interval(page, budget_url, frozen, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", budget_url)
    from lib.ui.shell import get_engine

    session(page)  # process start: engine, schema check and settings are made once per process
    counter: Counter = Counter()

    def count(conn, cursor, statement, parameters, context, executemany):
        counter[(statement, repr(parameters))] += 1

    engine = get_engine(load_settings().database_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        st.cache_data.clear()  # every cached loader empty: the first session of the interval pays
        first = interval(page, counter)
        assert first[0] > 0, "the counter saw no query: it is not on the pages' engine"
        assert first[1:] == [0] * (SESSIONS - 1), f"sessions 2-{SESSIONS} queried the database: {first}"
        once = sum(counter.values())

        # the next refresh interval: every 25 s loader has expired; again one query per loader in all
        frozen.offset += load_settings().poll_interval_s
        counter.clear()
        second = interval(page, counter)
        assert second[0] > 0 and second[1:] == [0] * (SESSIONS - 1), second
        assert sum(counter.values()) <= once
    finally:
        event.remove(engine, "before_cursor_execute", count)
