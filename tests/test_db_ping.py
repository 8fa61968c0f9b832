"""lib.core.db's ping of rested pooled connections (PostgreSQL): a connection killed while it rested in
the pool is replaced before the caller's statement; connections taken again within
PING_AFTER_IDLE_S are not pinged (the worker's per-write checkouts)."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

import lib.core.db as db


@pytest.fixture
def pg_engine(pg_server):
    import uuid

    url = pg_server.create_database("ping_" + uuid.uuid4().hex[:10])
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_killed_while_resting_is_replaced(pg_engine, pg_server, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.2)
    pid = _backend_pid(pg_engine)  # the pool now holds this connection
    killer = db.make_engine(pg_server.url)
    with killer.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    killer.dispose()
    time.sleep(0.4)
    assert _backend_pid(pg_engine) != pid  # pinged, found dead, replaced: no error reached us


def test_no_ping_within_the_rest_window(pg_engine, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 30.0)
    pings = []
    real = pg_engine.dialect.do_ping
    monkeypatch.setattr(pg_engine.dialect, "do_ping", lambda c: pings.append(1) or real(c))
    for _ in range(50):
        with pg_engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
    assert pings == []
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    with pg_engine.begin() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert pings == [1]
