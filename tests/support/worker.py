"""Helpers for the worker tests: sandbox Graph API fixture, accounts, rows, settings."""
from __future__ import annotations

import os
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.schema import post_queue as pq
from lib.core.settings import Settings
from lib.instagram.client import GraphClient
from lib.queue.store import enqueue
from sandbox.graph_api import GraphSandbox
from tests.support.servers import ROOT


@pytest.fixture
def sandbox():
    sb = GraphSandbox(timeout_sleep_s=2.0).start()
    yield sb
    sb.stop()


def worker_settings(db_url: str, sandbox: GraphSandbox, **overrides) -> Settings:
    base = Settings(database_url=db_url, instagram_graph_url=sandbox.url, graph_connect_timeout_s=2.0,
                    graph_read_timeout_s=1.0)
    return replace(base, **overrides)


def client_for(settings: Settings) -> GraphClient:
    return GraphClient(settings.graph_url, connect_timeout=settings.graph_connect_timeout_s,
                       read_timeout=settings.graph_read_timeout_s, api=settings.instagram_api)


def add_account(conn, *, username="acme", token="tok-good", ig_id=None, connected=True,
                sandbox: GraphSandbox | None = None) -> uuid.UUID:
    """An account in our table; with `sandbox`, the same account registered there too (so the fake
    knows which conversation participant and which usage header entry is ours)."""
    acc_id = uuid.uuid4()
    now = datetime.now(UTC)
    ig_id = ig_id or "1784" + uuid.uuid4().hex[:12]
    conn.execute(sa.insert(accounts).values(
        id=acc_id, username=username, instagram_business_id=ig_id,
        access_token=token, is_connected=connected, created_at=now, updated_at=now))
    if sandbox is not None:
        sandbox.add_account(ig_id, token, username=username)
    return acc_id


def add_row(conn, account_id, action_type, payload, *, now=None) -> uuid.UUID:
    row_id = enqueue(conn, business_account_id=account_id, action_type=action_type, payload=payload,
                     now=now or datetime.now(UTC))
    assert row_id is not None
    return row_id


def row(conn, row_id):
    return conn.execute(sa.select(pq).where(pq.c.id == row_id)).one()


def statuses(conn) -> dict[str, int]:
    return dict(conn.execute(sa.select(pq.c.status, sa.func.count()).group_by(pq.c.status)).all())


@pytest.fixture
def pg_db(pg_server):
    """(url, engine) of a fresh, initialised PostgreSQL database for worker-process tests."""
    url = pg_server.create_database("w_" + uuid.uuid4().hex[:12])
    eng = make_engine(url)
    init_db(eng)
    yield url, eng
    eng.dispose()


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker", *args]


def worker_env(url: str, sandbox: GraphSandbox, **env) -> dict[str, str]:
    """The environment of a `python -m worker` process against `url` and the sandbox Graph API."""
    return {**os.environ, "DATABASE_URL": url, "INSTAGRAM_GRAPH_URL": sandbox.url, "GRAPH_READ_TIMEOUT_S": "10",
            "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in env.items()}}
