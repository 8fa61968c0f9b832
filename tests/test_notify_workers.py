"""Notifications through real `python -m worker` processes on PostgreSQL: four workers at once send
each message exactly once; the service's insert -> delivery latency is measured (printed, not asserted)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lib.alerts.store import open_or_update_alert
from lib.core.schema import notification_outbox, system_alerts
from lib.core.settings import Settings
from lib.notify.detect import detect
from sandbox.notify_sink import NotifySink
from tests.support.servers import ROOT
from tests.support.worker import add_account, pg_db  # noqa: F401

pytestmark = pytest.mark.slow


def _env(url: str, sink: NotifySink, **extra) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": url, "INSTAGRAM_GRAPH_URL": "http://127.0.0.1:9/v26.0",
            "ALERT_NOTIFY_URLS": _secret_url(sink),
            "DASHBOARD_URL": "https://dash.example.com",
            "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in extra.items()}}


def _worker(url, sink, *args, **extra):
    return subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=ROOT, env=_env(url, sink, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _secret_url(sink: NotifySink) -> str:
    return f"json://bot:S3cretPassw0rd@127.0.0.1:{sink.port}/notify?+X-Api-Key=K3yK3yK3y"


def _four(url, sink):
    procs = [_worker(url, sink, "--once", "--no-watchdog") for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    joined = "".join(outputs)
    assert "Traceback" not in joined
    assert "S3cretPassw0rd" not in joined and "K3yK3yK3y" not in joined
    return outputs


def _statuses(eng):
    with eng.connect() as conn:
        return dict(conn.execute(sa.select(notification_outbox.c.status, sa.func.count())
                                 .group_by(notification_outbox.c.status)).all())


def test_four_workers_at_once_send_every_message_exactly_once(pg_db):
    url, eng = pg_db
    now = datetime.now(UTC)
    with eng.begin() as conn:
        accs = [add_account(conn, username=f"s{i}") for i in range(60)]
    with NotifySink() as sink:
        sink.delay_s = 0.2  # a receiver that takes a moment: the workers overlap
        # 1. four workers race to detect 20 new alerts: each is queued and sent once
        with eng.begin() as conn:
            for i in range(20):
                open_or_update_alert(conn, alert_type="sync_failure", business_account_id=accs[i], now=now,
                                     message=f"sync {i} failed")
        outputs = _four(url, sink)
        titles = [m["title"] for m in sink.received()]
        assert sink.requests == 20 and len(titles) == 20 and len(set(titles)) == 20
        assert _statuses(eng) == {"sent": 20}
        # 2. 40 queued messages (detected here, as a worker would): four workers share the sending
        with eng.begin() as conn:
            for i in range(20, 60):
                open_or_update_alert(conn, alert_type="content_violation", business_account_id=accs[i], now=now,
                                     message=f"rejected {i}")
            settings = Settings(database_url=url, alert_notify_urls=_secret_url(sink))
            assert detect(conn, settings, now=now).queued == 40
        outputs = _four(url, sink)
        titles = [m["title"] for m in sink.received()]
        assert sink.requests == 60 and len(titles) == 60 and len(set(titles)) == 60
    assert _statuses(eng) == {"sent": 60}
    per_worker = [out.count(" -> sent") for out in outputs]
    assert sum(per_worker) == 40 and sum(1 for n in per_worker if n) >= 2, per_worker  # they shared the work
    logged = "".join(outputs)
    # deliveries are logged with the route's label: scheme + host + fingerprint, never its user or query
    assert "json://127.0.0.1 #" in logged
    assert "S3cretPassw0rd" not in logged and "K3yK3yK3y" not in logged


def test_service_worker_delivers_soon_after_an_insert(pg_db, capsys):
    """The worker as a service (schedule far away): the ~15 s notification timer delivers."""
    url, eng = pg_db
    with NotifySink() as sink:
        proc = _worker(url, sink, "--interval-seconds", "3600", "--no-watchdog")
        try:
            deadline = time.monotonic() + 30
            lines = []
            while not any("worker start" in line for line in lines):
                assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
                lines.append(proc.stdout.readline())
            latencies = []
            for i, pause in enumerate((1.0, 6.0, 11.0)):
                time.sleep(pause)  # land at different points of the 15 s timer's period
                with eng.begin() as conn:  # written like the user's backend does (a plain insert)
                    conn.execute(sa.insert(system_alerts).values(
                        id=uuid.uuid4(), alert_type="auth_failure", business_account_id=None,
                        message=f"latency probe {i}", details={"source": "proactive_sync"}, resolved=False,
                        created_at=datetime.now(UTC), updated_at=datetime.now(UTC)))
                    inserted = time.monotonic()
                wait_until = time.monotonic() + 60
                while not (got := [m for m in sink.received() if f"latency probe {i}" in (m["message"] or "")]):
                    assert time.monotonic() < wait_until and proc.poll() is None, "no delivery within 60 s"
                    time.sleep(0.02)
                latencies.append(got[0]["received_monotonic"] - inserted)
                with eng.begin() as conn:  # resolve, so the next probe is a new incident
                    conn.execute(sa.update(system_alerts).values(resolved=True, resolved_at=datetime.now(UTC)))
        finally:
            proc.terminate()
            out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    with capsys.disabled():
        print(f"\n[latency] insert -> delivery with the worker as a service (ALERT_NOTIFY_INTERVAL_S=15): "
              f"{', '.join(f'{x:.1f} s' for x in latencies)}; median {statistics.median(latencies):.1f} s")
    assert len(latencies) == 3
