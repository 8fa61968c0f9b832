"""The queue's counts run with PostgreSQL's JIT off for their transaction (lib.core.db.without_jit): the
hold conditions' subqueries are estimated expensive, so JIT compiled those counts on every refresh
(0.9 s of compiling for a 22 ms query, docs/bench.md). SET LOCAL keeps it to the transaction, as a
transaction pooler requires."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from lib.core.db import init_db, make_engine, without_jit
from lib.core.timeutil import utcnow
from lib.health.metrics import read_snapshot
from lib.queue.accounts import account_health
from lib.queue.holds import came_due_since, hold_reasons
from lib.queue.reads import queue_health
from lib.queue.store import claim
from tests.support.queue_rows import add_account


@pytest.fixture
def pg_engine(pg_server):
    engine = make_engine(pg_server.create_database("jit_" + uuid.uuid4().hex[:10]))
    init_db(engine)
    with engine.begin() as conn:
        add_account(conn, "acme.shop", utcnow())  # account_health reads nothing without an account
    yield engine
    engine.dispose()


def _jit(conn) -> str:
    return conn.execute(sa.text("SHOW jit")).scalar_one()


def test_jit_is_off_for_the_transaction_only(pg_engine):
    with pg_engine.connect() as conn:
        conn.exec_driver_sql("SET jit = on")  # the server's default, whatever this test server says
        conn.commit()
        without_jit(conn)
        assert _jit(conn) == "off"
        conn.rollback()
        assert _jit(conn) == "on"  # nothing left on the session for the next transaction


@pytest.mark.parametrize("read", [
    lambda engine: _in_connection(engine, lambda conn: queue_health(conn, now=utcnow())),
    lambda engine: _in_connection(engine, lambda conn: read_snapshot(conn, now=utcnow())),
    lambda engine: _in_connection(engine, lambda conn: account_health(conn, now=utcnow())),
    lambda engine: _in_connection(engine, lambda conn: came_due_since(conn, since=utcnow(), now=utcnow())),
    lambda engine: claim(engine, now=utcnow(), batch_size=10),
    lambda engine: _in_connection(engine, lambda conn: hold_reasons(conn, [uuid.uuid4()], now=utcnow(), short=True)),
], ids=["queue_health", "metrics_snapshot", "account_health", "worker_poll", "worker_claim", "row_holds"])
def test_the_statements_with_hold_conditions_run_without_jit(pg_engine, read):
    jit_at_count: list[str] = []

    def after(_conn, cursor, statement, *_args):
        if "queue_pauses" in statement:  # a statement with the hold conditions
            probe = cursor.connection.cursor()  # same transaction, the statement's own results untouched
            probe.execute("SHOW jit")
            jit_at_count.append(probe.fetchone()[0])
            probe.close()

    @sa.event.listens_for(pg_engine, "connect")
    def jit_on(dbapi_conn, _record):  # as on a server whose default is on
        cur = dbapi_conn.cursor()
        cur.execute("SET jit = on")
        cur.close()
        dbapi_conn.commit()

    pg_engine.dispose()  # new connections, with the listener above
    sa.event.listen(pg_engine, "after_cursor_execute", after)
    read(pg_engine)
    assert jit_at_count, "no statement with the hold conditions ran"
    assert set(jit_at_count) == {"off"}, jit_at_count


def _in_connection(engine, read):
    with engine.connect() as conn:
        return read(conn)
