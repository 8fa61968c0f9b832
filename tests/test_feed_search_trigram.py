"""Feed search at history volume: pg_trgm indexes where the database has the extension, and init that
never fails without it (lib.core.db.ensure_trigram_indexes). SQLite keeps the bounded scan (lib.core.audit)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import lib.core.db
from lib.core.audit import AuditFilter, audit_row, feed_conditions, feed_page
from lib.core.db import TRIGRAM_INDEXES, init_db, make_engine
from lib.core.schema import audit_log

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def _index_names(conn) -> set[str]:
    return {i["name"] for i in sa.inspect(conn).get_indexes("audit_log")}


@pytest.mark.own_schema("counts every table init creates")
def test_init_without_the_extension_succeeds_and_creates_no_trigram_index(db_url, monkeypatch):
    monkeypatch.setattr(lib.core.db, "TRIGRAM_EXTENSION", "no_such_extension_here")
    engine = make_engine(db_url)
    try:
        report = init_db(engine)
        assert "audit_log" in report.created_tables
        with engine.connect() as conn:
            assert not set(TRIGRAM_INDEXES) & _index_names(conn)
        init_db(engine)  # and again, on the initialised database
    finally:
        engine.dispose()


def test_search_finds_the_same_rows_with_and_without_the_index(engine):
    rows = [audit_row(event_type="post_failed_permanent", action="publish", resource_type="post_queue",
                      resource_id=f"res-{i}", now=NOW - timedelta(minutes=i), success=False,
                      error_message="Media ID is not available" if i % 7 == 0 else None,
                      details={"note": "Spring Campaign" if i % 5 == 0 else "other"}) for i in range(200)]
    with engine.begin() as conn:
        conn.execute(sa.insert(audit_log), rows)
    f = AuditFilter(since=NOW - timedelta(days=30), search="campaign")
    with engine.connect() as conn:
        page = feed_page(conn, filters=f, limit=200)
        assert len(page.rows) == 40
        assert not feed_page(conn, filters=AuditFilter(since=NOW - timedelta(days=30), search="zzqx"), limit=50).rows
        assert len(feed_page(conn, filters=AuditFilter(search="media id"), limit=200).rows) == 29


def test_on_postgresql_the_search_can_use_the_trigram_indexes(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no trigram index: its search scans the newest SEARCH_WINDOW rows (lib.core.audit)")
    with engine.begin() as conn:
        assert set(TRIGRAM_INDEXES) <= _index_names(conn)
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        conn.execute(sa.text("SET LOCAL enable_indexscan = off"))  # leave the bitmap scans: the trigram path
        # the search's own condition (the last of feed_conditions): its expressions must be the indexes'
        search = feed_conditions(AuditFilter(search="nothing like this"))[-1]
        sql = str(sa.select(audit_log.c.id).where(search)
                  .compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})).replace("%%", "%")
        plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
    for name in TRIGRAM_INDEXES:
        assert name in plan, plan
