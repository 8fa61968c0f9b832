"""The read path of big exports: lib.core.db.stream_rows (driver rows in chunks, none lost at a chunk
border or at the row SQLAlchemy buffers first), lib.core.export.prefetched (read-ahead on a thread: order,
errors, an early stop closes the source on its own thread), the cap closing its source, and
fewer_gc_passes putting the collector's thresholds back."""
from __future__ import annotations

import gc
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.core import audit
from lib.core.db import stream_rows
from lib.core.export import build_export, fewer_gc_passes, prefetched

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _seed(engine, n: int) -> None:
    with engine.begin() as conn:
        for i in range(n):
            audit.log_audit(conn, event_type="post_published", action="publish", resource_type="post_queue",
                            resource_id=f"res-{i:03d}", now=NOW - timedelta(minutes=i), success=bool(i % 2),
                            details={"n": i})


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 50])
def test_stream_rows_every_row_once_in_order(engine, chunk_size):
    _seed(engine, 7)
    query = sa.select(audit.audit_log.c.resource_id).order_by(audit.audit_log.c.created_at.desc())
    with engine.connect() as conn:
        chunks = list(stream_rows(conn, query, chunk_size))
    assert all(0 < len(c) <= chunk_size for c in chunks)
    assert [r[0] for c in chunks for r in c] == [f"res-{i:03d}" for i in range(7)]
    assert all(type(r) is tuple for c in chunks for r in c)


def test_stream_rows_of_nothing(engine):
    with engine.connect() as conn:
        assert list(stream_rows(conn, sa.select(audit.audit_log.c.id), 5)) == []


def test_audit_export_chunks_same_rows_as_the_feed(engine):
    """The driver's rows made what the feed shows: success a bool (sqlite3 gives 0/1), created_at UTC."""
    _seed(engine, 12)
    with engine.connect() as conn:
        rows = [r for c in audit.export_chunks(conn, filters=audit.AuditFilter(), chunk_size=5) for r in c]
        page = audit.feed_page(conn, filters=audit.AuditFilter(), limit=50).rows
    assert len(rows) == 12
    at = {c: audit.EXPORT_COLUMNS.index(c) for c in ("id", "created_at", "success", "resource_id")}
    assert [r[at["id"]] for r in rows] == [str(p["id"]) for p in page]
    assert [r[at["success"]] for r in rows] == [p["success"] for p in page]
    assert all(type(r[at["success"]]) is bool for r in rows)
    assert [r[at["created_at"]] for r in rows] == [NOW - timedelta(minutes=i) for i in range(12)]
    assert all(r[at["created_at"]].tzinfo is UTC for r in rows)


def test_capped_export_releases_the_connection(engine):
    """The cap reached: the read-ahead thread (PostgreSQL) has stopped and the cursor is closed when
    build_export returns, so the same connection runs the next statement at once."""
    _seed(engine, 30)
    with engine.connect() as conn:
        data, written, truncated = build_export("csv", audit.EXPORT_COLUMNS,
                                                audit.export_chunks(conn, filters=audit.AuditFilter(), cap=10,
                                                                    chunk_size=4), cap=10)
        assert (written, truncated) == (10, True)
        assert not [t for t in threading.enumerate() if t.name == "export-prefetch"]
        assert conn.execute(sa.select(sa.func.count()).select_from(audit.audit_log)).scalar_one() == 30


def _numbers(n, log, fail_at=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError("the database went away")
            log.append(("made", i, threading.current_thread().name))
            yield i
    finally:
        log.append(("closed", threading.current_thread().name))


def test_prefetched_keeps_order_and_reads_on_its_thread():
    log: list = []
    assert list(prefetched(_numbers(20, log))) == list(range(20))
    assert {e[-1] for e in log} == {"export-prefetch"}
    assert log[-1] == ("closed", "export-prefetch")


def test_prefetched_raises_the_sources_error_here():
    log: list = []
    got = []
    with pytest.raises(ValueError, match="went away"):
        for x in prefetched(_numbers(10, log, fail_at=4)):
            got.append(x)
    assert got == [0, 1, 2, 3]
    assert log[-1] == ("closed", "export-prefetch")


def test_prefetched_stopped_early_closes_the_source_and_waits():
    log: list = []
    reader = prefetched(_numbers(1000, log), depth=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()
    assert log[-1] == ("closed", "export-prefetch")
    made = [e[1] for e in log if e[0] == "made"]
    assert len(made) <= 3 + 2 + 1  # read ahead by at most `depth` (+ the one waiting to be put)
    assert not [t for t in threading.enumerate() if t.name == "export-prefetch"]


def test_fewer_gc_passes_puts_the_thresholds_back():
    before = gc.get_threshold()
    try:
        gc.set_threshold(500, 7, 9)
        with fewer_gc_passes():
            assert gc.get_threshold()[0] >= 100_000 and gc.get_threshold()[1:] == (7, 9)
            with fewer_gc_passes():  # a second export at the same time
                pass
            assert gc.get_threshold()[0] >= 100_000  # still raised: the first is not done
        assert gc.get_threshold() == (500, 7, 9)
        with pytest.raises(RuntimeError):
            with fewer_gc_passes():
                raise RuntimeError("writer failed")
        assert gc.get_threshold() == (500, 7, 9)
    finally:
        gc.set_threshold(*before)


def test_the_cap_closes_its_source_before_saying_truncated():
    from lib.core.export import _capped

    log: list = []
    source = ([i] for i in _numbers(100, log))
    capped = _capped(source, 3)
    items = []
    for chunk, done in capped:  # the generator stays alive: the close must not wait for its end
        items.append((chunk, done))
        if chunk is None:
            break
    assert items == [([0], None), ([1], None), ([2], None), ([], None), (None, True)]
    assert log[-1][0] == "closed"
