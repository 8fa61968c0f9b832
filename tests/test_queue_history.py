"""Scale with history: status_summary from the partial indexes and the worker's sent rollup.

"Right" (lib.queue.store.refresh_sent_rollup): writes that set updated_at to the time of the write are
counted at once; other changes (deletes, updates that leave updated_at old) once their day is
recounted, which a full walk of the refreshes guarantees. Checked against a direct GROUP BY after
other writers insert, update and delete rows, on SQLite and PostgreSQL.
"""
from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.core.schema import ACTION_TYPES
from lib.core.schema import post_queue as q
from lib.queue.reads import rollup_state, status_summary
from lib.queue.rules import STATUSES
from lib.queue.store import refresh_sent_rollup

pytestmark = pytest.mark.own_schema("rows without an account or updated_at, which the user's DDL forbids")

NOW = datetime(2026, 6, 15, 12, 30, tzinfo=UTC)
ACCOUNTS = [uuid.uuid4(), uuid.uuid4()]


def _row(status: str, updated_at: datetime | None, *, account=None, action_type=None, rnd=random) -> dict:
    return {"id": uuid.uuid4(), "business_account_id": account or rnd.choice(ACCOUNTS),
            "action_type": action_type or rnd.choice(ACTION_TYPES), "payload": {}, "idempotency_key": uuid.uuid4().hex,
            "status": status, "retry_count": 0, "created_at": updated_at or NOW, "updated_at": updated_at}


def _history(conn, n: int = 600, days: int = 60) -> None:
    rnd = random.Random(7)
    rows = []
    for _ in range(n):
        status = rnd.choices(STATUSES, weights=(3, 1, 85, 6, 5))[0]
        rows.append(_row(status, NOW - timedelta(minutes=rnd.randrange(days * 24 * 60)), rnd=rnd))
    rows.append(_row("sent", None, rnd=rnd))  # someone else's tool: no updated_at
    conn.execute(sa.insert(q), rows)


def direct(conn, account_id=None) -> dict[str, int]:
    stmt = sa.select(q.c.action_type, q.c.status, sa.func.count()).group_by(q.c.action_type, q.c.status)
    if account_id is not None:
        stmt = stmt.where(q.c.business_account_id == account_id)
    return {f"{a}::{s}": int(n) for a, s, n in conn.execute(stmt)}


def walk(conn, now: datetime, refreshes: int = 12) -> None:
    """Enough forced refreshes for the re-verification walk to pass every day (60 days / 7 per refresh)."""
    for _ in range(refreshes):
        refresh_sent_rollup(conn, now=now, force=True)


def test_summary_equals_direct_count_before_and_after_the_first_refresh(engine):
    with engine.begin() as conn:
        _history(conn)
        before = status_summary(conn, now=NOW)  # no rollup yet: every sent row counted live
        assert before["summary"] == direct(conn) and before["sent_as_of"] is None
        assert refresh_sent_rollup(conn, now=NOW)
        after = status_summary(conn, now=NOW)
        assert after["summary"] == direct(conn)
        assert after["total"] == sum(direct(conn).values())
        assert after["sent_as_of"] == NOW and after["sent_exact_since"] == NOW.replace(hour=0, minute=0)
        for account in ACCOUNTS:
            assert status_summary(conn, account_id=account, now=NOW)["summary"] == direct(conn, account)
        # the spec's shape is still there
        assert {"success", "summary", "total", "timestamp"} <= set(after)


def test_recent_windows_are_counted_live(engine):
    with engine.begin() as conn:
        _history(conn)
        refresh_sent_rollup(conn, now=NOW)
        s = status_summary(conn, now=NOW)
        for field, since in (("sent_24h", NOW - timedelta(hours=24)), ("sent_7d", NOW - timedelta(days=7))):
            n = conn.execute(sa.select(sa.func.count()).where(q.c.status == "sent", q.c.updated_at >= since)).scalar()
            assert s[field] == n


def test_other_writers_are_counted_at_once_when_they_move_updated_at(engine):
    later = NOW + timedelta(minutes=3)
    with engine.begin() as conn:
        _history(conn)
        refresh_sent_rollup(conn, now=NOW)
        # an agent enqueues, the worker sends, the user's backend marks rows sent: all with updated_at now
        conn.execute(sa.insert(q), [_row("pending", later), _row("sent", later), _row("sent", later)])
        pending = conn.execute(sa.select(q.c.id).where(q.c.status == "pending").limit(3)).scalars().all()
        conn.execute(sa.update(q).where(q.c.id.in_(pending)).values(status="sent", updated_at=later))
        failed = conn.execute(sa.select(q.c.id).where(q.c.status == "failed").limit(2)).scalars().all()
        conn.execute(sa.update(q).where(q.c.id.in_(failed)).values(status="dlq", updated_at=later))
        # no refresh in between: still exact
        assert status_summary(conn, now=later)["summary"] == direct(conn)


def test_other_writers_that_leave_updated_at_old_are_counted_once_the_walk_passes(engine):
    later = NOW + timedelta(days=1, minutes=10)
    with engine.begin() as conn:
        _history(conn)
        refresh_sent_rollup(conn, now=NOW)
        old_sent = conn.execute(sa.select(q.c.id).where(q.c.status == "sent", q.c.updated_at < NOW - timedelta(days=20))
                                .order_by(q.c.id).limit(6)).scalars().all()
        conn.execute(sa.delete(q).where(q.c.id.in_(old_sent[:3])))  # a retention job
        conn.execute(sa.update(q).where(q.c.id.in_(old_sent[3:])).values(status="dlq"))  # updated_at untouched
        conn.execute(sa.insert(q), [_row("sent", NOW - timedelta(days=40)) for _ in range(4)])  # back-filled
        # an old sent row touched (updated_at now): counted in its old day and live until that day's recount
        touched = conn.execute(sa.select(q.c.id).where(q.c.status == "sent", q.c.updated_at < NOW - timedelta(days=30))
                               .order_by(q.c.id).limit(1)).scalar_one()
        conn.execute(sa.update(q).where(q.c.id == touched).values(updated_at=later))
        walk(conn, later)
        s = status_summary(conn, now=later)
        assert s["summary"] == direct(conn)
        assert rollup_state(conn)["closed_until"] == later.replace(hour=0, minute=0, second=0, microsecond=0)


def test_refresh_runs_at_most_every_few_minutes(engine):
    with engine.begin() as conn:
        _history(conn, n=50)
        assert refresh_sent_rollup(conn, now=NOW, every_s=300)
        assert not refresh_sent_rollup(conn, now=NOW + timedelta(seconds=299), every_s=300)
        assert refresh_sent_rollup(conn, now=NOW + timedelta(seconds=300), every_s=300)


@pytest.mark.parametrize("clause, index", [("active_clause", "ix_post_queue_active"),
                                           ("other_clause", "ix_post_queue_other_status")])
def test_the_not_sent_counts_use_the_partial_indexes(engine, clause, index):
    """The active statuses are counted from ix_post_queue_active, any other status from
    ix_post_queue_other_status: neither reads the whole table."""
    from sqlalchemy.dialects import postgresql, sqlite

    import lib.queue.rules

    stmt = (sa.select(q.c.action_type, q.c.status, sa.func.count()).where(getattr(lib.queue.rules, clause)())
            .group_by(q.c.action_type, q.c.status))
    with engine.begin() as conn:
        _history(conn)
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE post_queue"))
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask whether the index qualifies
            sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
        else:
            sql = str(stmt.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
            plan = "\n".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))
        assert index in plan, plan


def test_a_status_outside_the_spec_is_counted_too(engine):
    """Another program's writer may leave its own status: the summary (and so the Queue Monitor, the
    Overview and the metrics gauge) still equals a direct count, before and after a refresh."""
    with engine.begin() as conn:
        _history(conn, n=100)
        conn.execute(sa.insert(q), [_row("on_hold", NOW - timedelta(days=3)), _row("on_hold", NOW)])
        assert status_summary(conn, now=NOW)["summary"] == direct(conn)
        refresh_sent_rollup(conn, now=NOW, force=True)
        got = status_summary(conn, now=NOW)
        assert got["summary"] == direct(conn)
        assert sum(n for k, n in got["summary"].items() if k.endswith("::on_hold")) == 2


def test_the_worker_refreshes_the_rollup_at_most_every_few_minutes(engine):
    from lib.queue.store import refresh_rollup

    with engine.begin() as conn:
        _history(conn, n=100)
    assert refresh_rollup(engine, now=NOW)
    assert not refresh_rollup(engine, now=NOW + timedelta(minutes=1))
    with engine.connect() as conn:
        assert rollup_state(conn)["refreshed_at"] == NOW
        assert status_summary(conn, now=NOW)["summary"] == direct(conn)


def test_the_totals_are_the_daily_rollup_summed_and_a_database_without_them_still_counts_right(engine):
    """status_summary reads the closed days' sum (post_queue_sent_totals, a few dozen rows) that each refresh
    rewrites with the days; a database whose totals are not written yet (the table added to an existing
    rollup) sums the days instead, so the count is never short."""
    from lib.core.schema import post_queue_sent_daily as d
    from lib.core.schema import post_queue_sent_totals as t

    with engine.begin() as conn:
        _history(conn)
        refresh_sent_rollup(conn, now=NOW, force=True)
        summed = {(a, b): int(n) for a, b, n in conn.execute(
            sa.select(d.c.business_account_id, d.c.action_type, sa.func.sum(d.c.sent))
            .group_by(d.c.business_account_id, d.c.action_type))}
        totals = {(a, b): int(n) for a, b, n in conn.execute(sa.select(t.c.business_account_id, t.c.action_type, t.c.sent))}
        assert totals == summed and sum(totals.values()) > 0
        conn.execute(sa.delete(t))
        assert status_summary(conn, now=NOW)["summary"] == direct(conn)
        assert status_summary(conn, account_id=ACCOUNTS[0], now=NOW)["summary"] == direct(conn, ACCOUNTS[0])
        refresh_sent_rollup(conn, now=NOW + timedelta(minutes=10), force=True)
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == len(summed)
