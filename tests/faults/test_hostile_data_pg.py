"""Hostile data on PostgreSQL, every page through AppTest (the browser test runs on SQLite, where
JSON columns can also hold text that does not parse; jsonb cannot, so that case is SQLite's).

Same rows as tests/faults/test_hostile_data.py (10 MB payload, 100 KB texts, 500-level nesting,
HTML/Markdown, emoji, right-to-left text), an injection attempt in both search boxes (a
literal search on PostgreSQL's ILIKE path too), and the long-value rule: what the pages show is
shortened, never the whole 100 KB text.
"""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import post_queue
from lib.core.timeutil import utcnow
from lib.ui.nav import existing_pages
from lib.ui.text import md_escape
from sandbox.seed import seed_demo
from tests.app.conftest import run_page  # noqa: F401  (the AppTest fixture)
from tests.support.hostile import SCRIPT, USERNAME, add_hostile
from tests.support.search_targets import plant_search_targets

pytestmark = pytest.mark.slow
INJECTION = "x'); DROP TABLE post_queue; -- %_\\ <script>alert(1)</script>"


@pytest.fixture
def hostile_pg(pg_server):
    url = pg_server.create_database("h_" + uuid.uuid4().hex[:12])
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    seed_demo(eng, now=now)
    hostile = add_hostile(eng, now, malformed_json=False)
    with eng.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar()
    eng.dispose()
    return url, hostile, total


def _texts(at) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "code", "text", "error", "warning", "info", "json"):
        for el in getattr(at, kind, []):
            out.append(str(getattr(el, "value", "")))
    return out


def test_every_page_on_postgresql_with_hostile_rows(run_page, hostile_pg):
    url, hostile, total = hostile_pg
    targets = plant_search_targets(make_engine(url), INJECTION, username=USERNAME, now=utcnow())
    total += 2
    for p in existing_pages():
        at = run_page(url, p.path)  # asserts no exception
        at.selectbox(key="account").select(USERNAME).run()
        assert not at.exception, (p.path, [e.value for e in at.exception])
        texts = _texts(at)
        assert not any("END-OF-LONG-TEXT" in t for t in texts), p.path  # long texts are shortened
        if p.path.endswith("queue_monitor.py"):
            assert any(SCRIPT in t for t in texts) or any(SCRIPT in str(df.value.to_dict()) for df in at.dataframe)
            at.text_input(key="qm_search").input(INJECTION).run()
            assert not at.exception, [e.value for e in at.exception]
            # literal: exactly the planted row, not its decoy that unescaped % _ \\ would also match
            shown = {i for df in at.dataframe if "id" in df.value.columns for i in df.value["id"]}
            assert str(targets["queue_hit"]) in shown and str(targets["queue_decoy"]) not in shown, shown
            assert "Retry all 1 matching" in [b.label for b in at.button]
        if p.path.endswith("activity_feed.py"):
            at.text_input(key="feed_q").input(INJECTION).run()
            assert not at.exception, [e.value for e in at.exception]
            # a text search shows no count (one bounded query per search string): exactly one row on the page
            assert any("1 rows shown · matching among the newest" in t for t in _texts(at)), _texts(at)
            labels = [e.label for e in at.expander]
            assert any(md_escape("audit_hit") in x for x in labels), labels
            assert not any(md_escape("audit_decoy") in x for x in labels), labels
            at.text_input(key="feed_q").input("<script>").run()  # matches the hostile rows literally
            assert not at.exception and any("matching" in t for t in _texts(at))
    eng = make_engine(url)
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar() == total
    eng.dispose()
