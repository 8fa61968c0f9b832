"""Security issue item 7: concurrent writers. Chat writes on SQLite take the write lock before
they read (two tabs answering in one session lose no message); open_or_update_alert cannot open
two alerts of one (type, account or agent) on PostgreSQL, whatever the interleaving."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lib.activity.oversight import create_session, get_session, record_answer
from lib.alerts.store import open_or_update_alert
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import system_alerts

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OPS = Actor("ops@example.com", OPERATOR)


@pytest.mark.own_schema("chat sessions of an account that does not exist")
def test_two_tabs_answering_in_one_session_lose_no_message(engine):
    with engine.begin() as conn:
        sid = create_session(conn, business_account_id=uuid.uuid4(), actor=OPS, now=NOW)
    tab_a = engine.connect()
    tab_a.begin()
    record_answer(tab_a, sid, actor=OPS, content="answer in tab A", now=NOW)  # written, not committed
    errors = []

    def tab_b():
        try:
            with engine.begin() as conn:
                record_answer(conn, sid, actor=OPS, content="answer in tab B", now=NOW)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=tab_b)
    thread.start()
    time.sleep(0.5)  # give tab B time to read (unfixed SQLite: it reads the old messages here)
    tab_a.commit()
    tab_a.close()
    thread.join(60)
    assert not errors
    with engine.connect() as conn:
        messages = get_session(conn, sid, user=OPS.name).messages
    assert sorted(m["content"] for m in messages) == ["answer in tab A", "answer in tab B"]


def _open_rows(engine, alert_type):
    with engine.connect() as conn:
        return conn.execute(sa.select(system_alerts.c.id, system_alerts.c.details)
                            .where(system_alerts.c.alert_type == alert_type, system_alerts.c.resolved.is_(False))).all()


@pytest.mark.parametrize("key", [{"business_account_id": uuid.UUID(int=7)}, {"agent_id": "agent-7"}, {}])
def test_two_workers_cannot_open_two_alerts_of_one_condition(engine, key):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers (the worker's BEGIN IMMEDIATE)")
    worker_a = engine.connect()
    worker_a.begin()
    open_or_update_alert(worker_a, alert_type="rate_limit", message="first", now=NOW, **key)  # not committed
    done = threading.Event()
    errors = []

    def worker_b():
        try:
            with engine.begin() as conn:
                open_or_update_alert(conn, alert_type="rate_limit", message="second", now=NOW, **key)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=worker_b)
    thread.start()
    # wait until worker B either waits for A's lock (fixed) or has finished on its own (unfixed)
    deadline = time.monotonic() + 30
    with engine.connect() as probe:
        while not done.is_set() and time.monotonic() < deadline:
            waiting = probe.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar_one()
            if waiting:
                break
            probe.rollback()
            time.sleep(0.05)
    worker_a.commit()
    worker_a.close()
    thread.join(60)
    assert not errors
    rows = _open_rows(engine, "rate_limit")
    assert len(rows) == 1, rows
    assert rows[0].details["count"] == 2
