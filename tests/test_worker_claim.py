"""The claim reads ix_post_queue_due in order (no sort of every due row), and record_sent writes its
audit row exactly when the row was still ours, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from lib.core.schema import audit_log
from lib.core.schema import post_queue as pq
from lib.queue.store import claim, claim_query, record_sent
from tests.support.worker import add_account, add_row, row

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _plan(conn, stmt) -> str:
    if conn.dialect.name == "postgresql":
        sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        return "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
    sql = str(stmt.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    return "\n".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))


def test_the_claim_reads_the_due_index_in_order_without_sorting(engine):
    with engine.begin() as conn:
        acc = add_account(conn)
        for i in range(2000):
            add_row(conn, acc, "send_dm", {"recipient_id": str(i), "message_text": "hi"},
                    now=NOW - timedelta(seconds=i))
        # history the claim must not read: sent rows are outside the partial index
        conn.execute(sa.update(pq).where(pq.c.id.in_(sa.select(pq.c.id).limit(1500).scalar_subquery()))
                     .values(status="sent"))
        conn.execute(sa.text("ANALYZE"))
        plan = _plan(conn, claim_query(NOW, 20))
    assert "ix_post_queue_due" in plan, plan
    if engine.dialect.name == "postgresql":
        assert "Sort" not in plan, plan
    else:
        assert "TEMP B-TREE" not in plan, plan


def _claimed_one(engine):
    with engine.begin() as conn:
        acc = add_account(conn)
        row_id = add_row(conn, acc, "send_dm", {"recipient_id": "7", "message_text": "hi"}, now=NOW)
    [claimed] = claim(engine, now=NOW, batch_size=5)
    assert claimed.id == row_id
    return claimed


def _audit_rows(engine, queue_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(audit_log).where(audit_log.c.details["queue_id"].as_string() == str(queue_id))
                            ).all()


def test_record_sent_writes_the_row_and_one_audit_row(engine):
    claimed = _claimed_one(engine)
    assert record_sent(engine, claimed, "m_123", now=NOW + timedelta(seconds=1))
    with engine.connect() as conn:
        got = row(conn, claimed.id)
    assert (got.status, got.instagram_id, got.error) == ("sent", "m_123", None)
    [audit] = _audit_rows(engine, claimed.id)
    assert (audit.event_type, audit.resource_id, audit.success) == ("dm_sent", "m_123", True)
    assert audit.created_at == NOW + timedelta(seconds=1)
    assert audit.details["retry_count"] == 0 and audit.details["action_type"] == "send_dm"
    # the same claim a second time: no longer ours (status sent), so nothing is written
    assert not record_sent(engine, claimed, "m_999", now=NOW + timedelta(seconds=2))
    assert len(_audit_rows(engine, claimed.id)) == 1


def test_a_lost_claim_writes_no_sent_row_and_no_audit_row(engine):
    claimed = _claimed_one(engine)
    with engine.begin() as conn:  # another worker rescued and re-claimed it: the token moved on
        conn.execute(sa.update(pq).where(pq.c.id == claimed.id).values(updated_at=NOW + timedelta(minutes=10)))
    assert not record_sent(engine, claimed, "m_123", now=NOW + timedelta(seconds=1))
    with engine.connect() as conn:
        got = row(conn, claimed.id)
    assert got.status == "processing" and got.instagram_id is None
    assert _audit_rows(engine, claimed.id) == []


def test_a_twin_is_marked_sent_without_an_audit_row_of_its_own(engine):
    claimed = _claimed_one(engine)
    assert record_sent(engine, claimed, "m_1", now=NOW + timedelta(seconds=1), twin=True)
    with engine.connect() as conn:
        assert row(conn, claimed.id).status == "sent"
    assert _audit_rows(engine, claimed.id) == []
