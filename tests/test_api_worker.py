"""WORKER_POLL_S: the worker as a service picks up what the agents' API enqueues between its cron
ticks. Real processes: `python -m worker` (cron: once a year), the API, the sandbox Graph API."""
from __future__ import annotations

import signal
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import post_queue as pq
from lib.core.timeutil import utcnow
from lib.queue.holds import came_due_since
from tests.support.api import API_TOKENS, ApiProcess, auth
from tests.support.queue_rows import insert_rows, queue_row
from tests.support.servers import ROOT
from tests.support.worker import add_account, sandbox, worker_command, worker_env  # noqa: F401

YEARLY = "0 0 1 1 *"  # no cron tick during a test: whatever is sent was found by the poll


def test_came_due_since_sees_rows_added_reset_or_come_due_after_the_tick_and_nothing_else(engine):
    now = utcnow()
    tick = now - timedelta(minutes=1)
    with engine.begin() as conn:
        acc = add_account(conn)
        insert_rows(conn, [queue_row(account=acc, now=now, status="pending", age_min=10),   # the tick saw it
                           queue_row(account=acc, now=now, status="failed", age_min=0.5, next_retry_in_min=4),
                           queue_row(account=acc, now=now, status="sent", age_min=0),
                           queue_row(account=acc, now=now, status="dlq", age_min=0)])
    with engine.connect() as conn:
        assert not came_due_since(conn, since=tick, now=now)
    with engine.begin() as conn:  # a failed row whose retry time came after the tick
        insert_rows(conn, [queue_row(account=acc, now=now, status="failed", age_min=30, next_retry_in_min=-0.5)])
    with engine.connect() as conn:
        assert came_due_since(conn, since=tick, now=now)
        assert not came_due_since(conn, since=now, now=now)
    with engine.begin() as conn:  # a manual retry: old created_at, fresh updated_at, next_retry_at cleared
        conn.execute(sa.delete(pq))
        insert_rows(conn, [{**queue_row(account=acc, now=now, status="pending", age_min=600), "updated_at": now}])
    with engine.connect() as conn:
        assert came_due_since(conn, since=tick, now=now)
    with engine.begin() as conn:  # a disconnected account's rows are held back: no wake-up for them
        from lib.core.schema import instagram_business_accounts as accounts

        conn.execute(sa.update(accounts).values(is_connected=False))
    with engine.connect() as conn:
        assert not came_due_since(conn, since=tick, now=now)


def _service(url, sandbox, poll_s):
    return subprocess.Popen(worker_command("--cron", YEARLY, "--no-watchdog"), cwd=ROOT,
                            env=worker_env(url, sandbox, WORKER_POLL_S=poll_s, LOG_LEVEL="INFO"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_an_action_enqueued_through_the_api_reaches_the_graph_api_within_the_poll_interval(db_url, sandbox):
    eng = make_engine(db_url)
    init_db(eng)
    with eng.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
    api = ApiProcess({"DATABASE_URL": db_url, "API_TOKENS": API_TOKENS})
    service = _service(db_url, sandbox, 1)
    try:
        time.sleep(2)  # the service is in its loop, idle: nothing is due
        assert sandbox.stats()["requests"] == 0
        body = {"business_account_id": str(acc), "recipient_id": "9001", "message_text": "hello from the API"}
        r = requests.post(api.url + "/send-dm", headers=auth("bot"), json=body)
        assert r.status_code == 202, r.text
        queue_id = uuid.UUID(r.json()["queue_id"])
        # poll 1 s + one tick; the deadline only bounds a failing test (the next cron tick is months away)
        deadline = time.monotonic() + 30
        while "hello from the API" not in sandbox.stats()["effects"]:
            assert service.poll() is None, service.stdout.read()
            assert time.monotonic() < deadline, "the service never picked up the row between its cron ticks"
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while True:
            with eng.connect() as conn:
                status = conn.execute(sa.select(pq.c.status).where(pq.c.id == queue_id)).scalar()
            if status == "sent" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == "sent"
        status_now = requests.get(api.url + "/post-queue/status", headers=auth("view")).json()
        assert status_now["summary"] == {"send_dm::sent": 1}
    finally:
        out = _stop(service)
        api.stop()
        eng.dispose()
    assert out.count("tick claimed=") == 1, out  # one tick for the one row: no busy loop
    assert "poll 1s" in out


@pytest.mark.slow
def test_worker_poll_s_0_keeps_cron_ticks_only(sqlite_url, sandbox):
    eng = make_engine(sqlite_url)
    init_db(eng)
    with eng.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
    service = _service(sqlite_url, sandbox, 0)
    try:
        time.sleep(2)
        with eng.begin() as conn:
            from lib.queue.store import enqueue

            enqueue(conn, business_account_id=acc, action_type="send_dm",
                    payload={"recipient_id": "1", "message_text": "waits for cron"}, now=utcnow())
        time.sleep(6)  # several times the default poll interval
        assert sandbox.stats()["requests"] == 0
    finally:
        out = _stop(service)
        eng.dispose()
    assert "tick claimed=" not in out and "poll off" in out


@pytest.mark.slow
def test_an_api_action_held_for_review_is_sent_once_within_seconds_of_its_approval(db_url, sandbox):
    from lib.core.identity import Actor
    from lib.queue.store import approve

    eng = make_engine(db_url)
    init_db(eng)
    with eng.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
    api = ApiProcess({"DATABASE_URL": db_url, "API_TOKENS": API_TOKENS, "REVIEW_ACTIONS": "send_dm"})
    service = subprocess.Popen(worker_command("--cron", YEARLY, "--no-watchdog"), cwd=ROOT,
                               env=worker_env(db_url, sandbox, WORKER_POLL_S=1, LOG_LEVEL="INFO",
                                              REVIEW_ACTIONS="send_dm"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = {"business_account_id": str(acc), "recipient_id": "9002", "message_text": "needs a person first"}
        r = requests.post(api.url + "/send-dm", headers=auth("bot"), json=body)
        assert r.status_code == 202, r.text
        queue_id = uuid.UUID(r.json()["queue_id"])
        time.sleep(4)  # several polls: the row is held for review, nothing reaches Instagram
        assert sandbox.stats()["requests"] == 0
        with eng.connect() as conn:
            assert conn.execute(sa.select(pq.c.status).where(pq.c.id == queue_id)).scalar() == "pending"
        with eng.begin() as conn:
            approve(conn, queue_id, actor=Actor("reviewer@example.com", "operator"), now=utcnow())
        deadline = time.monotonic() + 30  # bounds a failing test only: the next cron tick is months away
        while "needs a person first" not in sandbox.stats()["effects"]:
            assert service.poll() is None, service.stdout.read()
            assert time.monotonic() < deadline, "the approved row was not picked up between cron ticks"
            time.sleep(0.05)
        time.sleep(1.5)
        assert sandbox.stats()["effects"]["needs a person first"] == {"messages": 1}  # once
    finally:
        _stop(service)
        api.stop()
        eng.dispose()
