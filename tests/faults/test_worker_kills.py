"""Fault injection with real worker processes on PostgreSQL: SIGKILL mid-batch twice in a row,
and a bulk retry from the dashboard racing four workers.

The sandbox Graph API counts every request per row (`#key:<k>` in the text): `attempts[k]` is
how often a worker called Instagram for that row, `effects[k]` how often Instagram acted.
"""
from __future__ import annotations

import random
import signal
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lib.core.identity import OPERATOR, Actor
from lib.core.schema import audit_log
from lib.core.schema import post_queue as pq
from lib.queue.reads import matching_ids
from lib.queue.rules import QueueFilter
from lib.queue.store import retry
from tests.support.queue_rows import insert_rows, queue_row
from tests.support.servers import ROOT
from tests.support.worker import add_account, add_row, pg_db, sandbox, statuses, worker_command, worker_env  # noqa: F401

pytestmark = pytest.mark.slow


def _worker(url, sandbox, *args, **env):
    """`python -m worker ...`; its log goes to a temporary file (a full pipe would block it): .output()."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(worker_command(*args), cwd=ROOT, env=worker_env(url, sandbox, **env),
                            stdout=log, stderr=subprocess.STDOUT, text=True)

    def output() -> str:
        log.seek(0)
        return log.read()

    proc.output = output
    return proc


def _finish(proc, timeout=30) -> str:
    proc.wait(timeout=timeout)
    return proc.output()


def _kill_after(sandbox, proc, n_requests, limit_s=60):
    """SIGKILL `proc` as soon as the sandbox has seen `n_requests` requests in all."""
    deadline = time.monotonic() + limit_s
    while sandbox.stats()["requests"] < n_requests:
        assert proc.poll() is None, proc.output()
        assert time.monotonic() < deadline, "the worker never got that far"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _sent_keys(eng, key_of):
    with eng.connect() as conn:
        return {key_of[r.id] for r in conn.execute(sa.select(pq.c.id).where(pq.c.status == "sent"))}


def test_two_sigkills_mid_batch_then_a_third_worker_sends_every_row(pg_db, sandbox):
    url, eng = pg_db
    n = 24
    with eng.begin() as conn:
        acc = add_account(conn)
        key_of = {add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": f"#key:k{i} #fail:slow=0.25"}): f"k{i}"
                  for i in range(n)}

    # 1st worker claims the whole batch (all 24 rows) and dies on its 4th request
    first = _worker(url, sandbox, "--once", "--no-watchdog", "--batch-size", str(n))
    _kill_after(sandbox, first, 4)
    with eng.connect() as conn:
        after_first = statuses(conn)
    assert after_first.get("processing", 0) >= n - 4 and after_first.get("sent", 0) >= 1, after_first
    attempted_1 = set(sandbox.stats()["attempts"])
    in_flight_1 = attempted_1 - _sent_keys(eng, key_of)  # asked Instagram, never recorded
    assert len(in_flight_1) == 1, in_flight_1  # one row at a time: exactly one was in the air

    # 2nd worker, after the (shortened) lease: rescues the dead batch, claims it, dies mid-batch too
    time.sleep(1.3)
    second = _worker(url, sandbox, "--once", "--no-watchdog", "--batch-size", str(n), PROCESSING_LEASE_S=1)
    _kill_after(sandbox, second, 4 + 5)
    with eng.connect() as conn:
        after_second = statuses(conn)
        assert after_second.get("processing", 0) >= 1, after_second  # it really died holding rows
    before_2 = sandbox.stats()["attempts"]
    sent_2 = _sent_keys(eng, key_of)
    in_flight_2 = {k for k in before_2 if k not in sent_2}
    assert len(in_flight_2) <= len(in_flight_1) + 1

    # 3rd worker, after the lease again: rescues and finishes everything
    time.sleep(1.3)
    third = _worker(url, sandbox, "--once", "--until-empty", "--no-watchdog", "--batch-size", str(n),
                    PROCESSING_LEASE_S=1)
    out = _finish(third, timeout=120)
    assert third.returncode == 0, out
    assert "rescued=" in out and "Traceback" not in out

    with eng.connect() as conn:
        rows = conn.execute(sa.select(pq.c.id, pq.c.status, pq.c.retry_count)).all()
    assert len(rows) == n and {r.status for r in rows} == {"sent"}
    stats = sandbox.stats()
    effects = {k: stats["effects"].get(k, {}).get("messages", 0) for k in key_of.values()}
    # At-least-once window: a row whose request was in the air when its worker was killed was
    # performed by Instagram but never recorded, so after the lease it is performed once more.
    # That is the only way to get a second effect: at most one row per kill (the worker runs one
    # row at a time), so at most two extra effects in all; every other row exactly once.
    repeated = {k: c for k, c in effects.items() if c != 1}
    assert all(c >= 1 for c in effects.values()), effects  # nothing lost
    assert set(repeated) <= in_flight_1 | in_flight_2, (repeated, in_flight_1, in_flight_2)
    assert sum(c - 1 for c in effects.values()) <= 2, repeated
    assert in_flight_2  # the second kill also hit a call in the air
    # the rows that were held by a killed worker carry the rescue in their retry_count
    assert max(r.retry_count for r in rows) >= 1


def _dlq_rows(acc, now, prefix, count, *, status, marker=""):
    rows = []
    for i in range(count):
        r = queue_row(account=acc, now=now, status=status, action_type="send_dm",
                      retry_count=5 if status == "dlq" else 2, error="(#2) An unexpected error has occurred",
                      error_category="transient", next_retry_in_min=30 if status == "failed" else None,
                      payload={"recipient_id": "1", "message_text": f"#key:{prefix}{i} {marker}".strip()})
        rows.append(r)
    return rows
@pytest.mark.pooler
def test_bulk_retry_racing_four_workers_executes_each_reset_exactly_once(pg_db, sandbox):
    url, eng = pg_db
    now = datetime.now(UTC)
    with eng.begin() as conn:
        acc = add_account(conn)
        pending = [add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": f"#key:p{i}"}, now=now)
                   for i in range(200)]
        ok_dlq = insert_rows(conn, _dlq_rows(acc, now, "b", 400, status="dlq"))  # succeed when retried
        bad_dlq = insert_rows(conn, _dlq_rows(acc, now, "c", 300, status="dlq", marker="#fail:permanent"))
        # failed, due in 30 min, and failing again (5xx -> failed with a 2 min backoff) when retried
        flaky = insert_rows(conn, _dlq_rows(acc, now, "d", 300, status="failed", marker="#fail:5xx"))
    key_of = {i: f"p{n}" for n, i in enumerate(pending)}
    key_of.update({i: f"b{n}" for n, i in enumerate(ok_dlq)})
    key_of.update({i: f"c{n}" for n, i in enumerate(bad_dlq)})
    key_of.update({i: f"d{n}" for n, i in enumerate(flaky)})
    total = len(key_of)

    workers = [_worker(url, sandbox, "--interval-seconds", "0.2", "--batch-size", "20", "--no-watchdog")
               for _ in range(4)]
    operator = Actor("ops@example.com", OPERATOR)
    errors: list[BaseException] = []
    retried = {"ok": 0, "refused": 0}
    lock = threading.Lock()
    start = threading.Barrier(4)

    def operator_session(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(4):
                with eng.connect() as conn:  # what the page does: ids of "all matching" or a selection
                    ids = [*matching_ids(conn, filt=QueueFilter(status="dlq"), limit=600),
                           *matching_ids(conn, filt=QueueFilter(status="failed"), limit=400)]
                if seed % 2:
                    rng.shuffle(ids)  # a selection in another order than the table's
                start.wait(30)  # the sessions press "Retry" together
                with eng.begin() as conn:
                    results = retry(conn, ids, actor=operator, now=datetime.now(UTC))
                with lock:
                    retried["ok"] += sum(r.success for r in results)
                    retried["refused"] += sum(not r.success for r in results)
                time.sleep(rng.uniform(0.1, 0.6))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    try:
        threads = [threading.Thread(target=operator_session, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        # one last "retry all" of the dlq once the racing is over, so every succeeding row has been reset
        with eng.begin() as conn:
            last = retry(conn, matching_ids(conn, filt=QueueFilter(status="dlq"), limit=1000), actor=operator,
                         now=datetime.now(UTC))
        retried["ok"] += sum(r.success for r in last)
        deadline = time.monotonic() + 60
        while True:
            with eng.connect() as conn:
                busy = conn.execute(sa.select(sa.func.count()).select_from(pq)
                                    .where(pq.c.status.in_(["pending", "processing"]))).scalar()
            if busy == 0:
                break
            if time.monotonic() > deadline:
                with eng.connect() as conn:
                    stuck = conn.execute(sa.select(pq.c.status, pq.c.updated_at, pq.c.payload)
                                         .where(pq.c.status.in_(["pending", "processing"])).limit(5)).all()
                    summary = statuses(conn)
                for w in workers:
                    w.send_signal(signal.SIGKILL)
                tails = [_finish(w)[-1500:] for w in workers]
                pytest.fail(f"{busy} rows still pending/processing: {summary} {stuck} {datetime.now(UTC)}\n"
                            + "\n".join(tails))
            assert all(w.poll() is None for w in workers)
            time.sleep(0.3)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outs = [_finish(w) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], outs
    assert not any("Traceback" in o for o in outs), outs
    assert retried["ok"] >= 1000 and retried["refused"] > 0, retried  # they really raced

    with eng.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(pq.c.id, pq.c.status, pq.c.retry_count, pq.c.next_retry_at))}
        resets: dict[str, int] = {}
        for (rid,) in conn.execute(sa.select(audit_log.c.resource_id)
                                   .where(audit_log.c.event_type == "queue_item_retried")):
            resets[rid] = resets.get(rid, 0) + 1
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)
                            .where(audit_log.c.event_type == "queue_item_retried",
                                   audit_log.c.user_id != operator.name)).scalar() == 0
    assert len(rows) == total  # nothing lost, nothing duplicated
    attempts = sandbox.stats()["attempts"]
    effects = sandbox.stats()["effects"]
    wrong = []
    for rid, key in key_of.items():
        r, n_reset, n_try = rows[rid], resets.get(str(rid), 0), attempts.get(key, 0)
        # every move to pending (the initial one, or one recorded manual reset) is executed exactly once
        expected_tries = (1 if key.startswith("p") else 0) + n_reset
        if n_try != expected_tries:
            wrong.append((key, "attempts", n_try, "resets", n_reset))
        if key[0] in "pb":
            ok = r.status == "sent" and effects.get(key) == {"messages": 1} and n_try == 1
        elif key[0] == "c":
            ok = r.status == "dlq" and n_try >= 1 and key not in effects
        else:  # d: failed again after each reset, or still failed and due later when never reset
            ok = r.status == "failed" and r.next_retry_at is not None and key not in effects
        if not ok:
            wrong.append((key, r.status, n_reset, n_try, effects.get(key)))
    assert not wrong, wrong[:20]
    assert sum(resets.values()) == retried["ok"]  # one audit row per successful reset, none without
