"""`python -m worker` as real processes on PostgreSQL: 4 concurrent workers, kill -9, SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lib.core.schema import post_queue as pq
from tests.support.servers import ROOT
from tests.support.worker import add_account, add_row, pg_db, sandbox, statuses, worker_command, worker_env  # noqa: F401

pytestmark = pytest.mark.slow


def _worker(url, sandbox, *args, **env):
    return subprocess.Popen(worker_command(*args), cwd=ROOT, env=worker_env(url, sandbox, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_requests(sandbox, n, proc, limit_s=30):
    deadline = time.monotonic() + limit_s
    while sandbox.stats()["requests"] < n:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the worker never called the sandbox"
        time.sleep(0.02)
@pytest.mark.pooler
def test_four_workers_execute_2000_rows_exactly_once(pg_db, sandbox):
    url, eng = pg_db
    now = datetime.now(UTC)
    with eng.begin() as conn:
        accs = [add_account(conn, username=f"acc{i}") for i in range(4)]
        for i in range(2000):
            add_row(conn, accs[i % 4], "send_dm", {"recipient_id": str(i), "message_text": f"#key:row{i} hello"},
                    now=now)
    procs = [_worker(url, sandbox, "--once", "--until-empty", "--no-watchdog") for _ in range(4)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    stats = sandbox.stats()
    assert stats["requests"] == 2000
    assert stats["attempts"] == {f"row{i}": 1 for i in range(2000)}
    assert all(e == {"messages": 1} for e in stats["effects"].values()) and len(stats["effects"]) == 2000
    with eng.connect() as conn:
        assert statuses(conn) == {"sent": 2000}
    per_worker = [sum(int(part.split("=")[1]) for line in out.splitlines() if " tick claimed=" in line
                      for part in line.split() if part.startswith("sent=")) for out in outputs]
    assert sum(per_worker) == 2000 and sum(1 for n in per_worker if n > 0) >= 2  # they really shared the work
@pytest.mark.pooler
def test_a_killed_worker_loses_nothing_and_repeats_at_most_the_row_in_flight(pg_db, sandbox):
    url, eng = pg_db
    with eng.begin() as conn:
        acc = add_account(conn)
        ids = [add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": f"#key:k{i} #fail:slow=1"})
               for i in range(3)]
    proc = _worker(url, sandbox, "--once", "--no-watchdog")
    _wait_for_requests(sandbox, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with eng.connect() as conn:
        assert statuses(conn) == {"processing": 3}  # all claimed, none recorded
    time.sleep(1.2)  # let the (shortened) lease run out
    rescuer = _worker(url, sandbox, "--once", "--no-watchdog", PROCESSING_LEASE_S=1)
    out = rescuer.communicate(timeout=60)[0]
    assert rescuer.returncode == 0, out
    assert "rescued=3" in out
    with eng.connect() as conn:
        rows = conn.execute(sa.select(pq).where(pq.c.id.in_(ids))).all()
    assert {(r.status, r.retry_count) for r in rows} == {("sent", 1)}
    effects = sandbox.stats()["effects"]
    counts = sorted(effects[f"k{i}"]["messages"] for i in range(3))
    # at-least-once: the one request in flight at the kill was performed and is performed again
    assert counts == [1, 1, 2]
@pytest.mark.pooler
def test_sigterm_finishes_the_row_in_hand_puts_the_rest_back_and_exits_0(pg_db, sandbox):
    url, eng = pg_db
    with eng.begin() as conn:
        acc = add_account(conn)
        ids = [add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": f"#key:s{i} #fail:slow=1"})
               for i in range(4)]
        before = {r.id: r.updated_at for r in conn.execute(sa.select(pq.c.id, pq.c.updated_at))}
    proc = _worker(url, sandbox, "--cron", "* * * * *", "--interval-seconds", "0.2")
    _wait_for_requests(sandbox, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert " -> sent " in out and "tok-good" not in out  # row outcomes are logged, tokens never
    with eng.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(pq))}
        assert statuses(conn) == {"sent": 1, "pending": 3}
    for row_id in ids:
        r = rows[row_id]
        if r.status == "pending":
            assert r.updated_at == before[row_id] and r.retry_count == 0
    assert sandbox.stats()["requests"] == 1


def test_a_lost_database_fails_the_tick_with_one_line_and_the_worker_keeps_going(sandbox):
    from tests.support.pg import free_port

    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/gone"
    proc = _worker(url, sandbox, "--interval-seconds", "0.2", "--no-watchdog")
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while sum(" tick claimed=" in line for line in lines) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    tick_lines = [line for line in out.splitlines() if " tick claimed=" in line]
    assert all("error=database unavailable at postgresql+psycopg2://postgres:***@" in line for line in tick_lines)
    assert "secret" not in out and "Traceback" not in out


def test_the_service_wakes_for_a_waiting_container_before_its_next_cron_tick(pg_db, sandbox):
    """A reel waits on Instagram's processing; the service (cron: once a year) looks again when
    the row is due, not at its next scheduled tick, and publishes it."""
    url, eng = pg_db
    with eng.begin() as conn:
        acc = add_account(conn)
        rid = add_row(conn, acc, "publish_post", {"media_type": "REELS", "video_url": "https://x/r.mp4",
                                                   "caption": "reel #proc=2"})
    env = {"CONTAINER_CHECK_INTERVAL_S": "3", "LOG_LEVEL": "INFO"}
    once = subprocess.run(worker_command("--once", "--no-watchdog"), cwd=ROOT, env=worker_env(url, sandbox, **env),
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    with eng.connect() as conn:
        assert conn.execute(sa.select(pq.c.status).where(pq.c.id == rid)).scalar() == "pending"
    service = _worker(url, sandbox, "--cron", "0 0 1 1 *", "--no-watchdog", **env)
    try:
        deadline = time.monotonic() + 60
        while True:
            with eng.connect() as conn:
                status = conn.execute(sa.select(pq.c.status).where(pq.c.id == rid)).scalar()
            if status == "sent":
                break
            assert service.poll() is None, service.stdout.read()
            assert time.monotonic() < deadline, "the service never woke for the waiting row"
            time.sleep(0.2)
    finally:
        service.send_signal(signal.SIGTERM)
        out, _ = service.communicate(timeout=20)
    assert service.returncode == 0, out
    assert out.count("tick claimed=") == 1, out  # one early tick, no busy loop
    assert sandbox.stats()["effects"]["reel #proc=2"] == {"media": 1, "media_publish": 1}
