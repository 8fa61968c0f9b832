"""`python -m worker --metrics-port N`: /metrics, /healthz and /readyz on METRICS_ADDRESS (127.0.0.1).

/metrics  Prometheus text format (lib.health.metrics: the process's counters + the database gauges)
/healthz  200 from start while the loop runs and no tick is overdue by more than two schedule
          intervals; 503 otherwise (stopping, or the loop is stuck in a tick)
/readyz   200 when the database answers `SELECT 1`, 503 otherwise

A plain ThreadingHTTPServer in a daemon thread: it never touches the loop, so a stuck tick
cannot stop it from saying so.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa
from croniter import croniter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lib.core import counters
from lib.core.db import error_line
from lib.core.timeutil import iso, utcnow
from lib.health import metrics

log = logging.getLogger("worker.metrics")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _next(when: datetime, *, cron: str, interval_s: float | None) -> datetime:
    if interval_s:
        return when + timedelta(seconds=interval_s)
    return croniter(cron, when).get_next(datetime)


class Health:
    """The loop's liveness as /healthz reports it. The loop calls loop_started, tick_started and
    loop_stopped; `stopping` (the stop event) counts as stopped at once."""

    def __init__(self, *, cron: str, interval_s: float | None, now_fn: Callable[[], datetime] = utcnow,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.cron, self.interval_s, self.now_fn, self.stopping = cron, interval_s, now_fn, stopping
        self.running = False
        self.started_at: datetime | None = None
        self.last_tick_at: datetime | None = None

    def loop_started(self) -> None:
        self.started_at, self.running = self.now_fn(), True

    def tick_started(self) -> None:
        self.last_tick_at = self.now_fn()

    def loop_stopped(self) -> None:
        self.running = False

    def check(self) -> tuple[bool, dict]:
        now = self.now_fn()
        base = self.last_tick_at or self.started_at
        info = {"running": self.running and not self.stopping(), "last_tick_started_at": _iso(self.last_tick_at),
                "now": _iso(now)}
        if not info["running"] or base is None:
            return False, {**info, "reason": "the worker loop is not running"}
        due = _next(base, cron=self.cron, interval_s=self.interval_s)
        interval = _next(due, cron=self.cron, interval_s=self.interval_s) - due
        info["next_tick_due_at"] = iso(due)
        if now > due + 2 * interval:
            return False, {**info, "reason": f"the tick due at {iso(due)} is overdue by more than two schedule "
                                             f"intervals ({interval.total_seconds():g}s each)"}
        return True, info


def database_ready(engine) -> tuple[bool, str]:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True, "database answers"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return False, "database unavailable: " + error_line(exc, 200)


class MetricsServer:
    def __init__(self, *, address: str, port: int, engine, health: Health, registry=counters.REGISTRY) -> None:
        self.registry, self.health, self.engine = registry, health, engine
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                try:
                    body, status, ctype = self.answer(self.path.split("?", 1)[0])
                except Exception:  # noqa: BLE001 - a bug here must say so, not drop the connection
                    log.exception("metrics server: %s failed", self.path.split("?", 1)[0])
                    body, status, ctype = b"internal error\n", 500, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def answer(self, path):
                if path == "/metrics":
                    body, status, ctype = generate_latest(server.registry), 200, CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    ok, info = server.health.check()
                    body, status, ctype = json.dumps(info).encode(), 200 if ok else 503, "application/json"
                elif path == "/readyz":
                    ok, text = database_ready(server.engine)
                    body, status, ctype = json.dumps({"ready": ok, "detail": text}).encode(), 200 if ok else 503, \
                        "application/json"
                else:
                    body, status, ctype = b"not found: /metrics, /healthz, /readyz\n", 404, "text/plain"
                return body, status, ctype

            def log_message(self, *args):  # scrapes every 15 s would flood the worker's log
                pass

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.address, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", self.address, self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_metrics_server(engine, *, address: str, port: int, health: Health) -> MetricsServer:
    """Register the database gauges on the process registry and serve it."""
    counters.REGISTRY.register(metrics.DatabaseCollector(engine))
    return MetricsServer(address=address, port=port, engine=engine, health=health).start()
