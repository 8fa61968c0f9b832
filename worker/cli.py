"""`python -m worker`: ticks on a cron schedule (or a fixed interval), watchdog, signals.

    python -m worker                         run until SIGTERM/SIGINT on WORKER_CRON (*/5 * * * *)
    python -m worker --once                  one tick, then exit
    python -m worker --once --until-empty    ticks back to back until nothing is due, then exit
    python -m worker --cron "* * * * *"      another schedule
    python -m worker --interval-seconds 20   a fixed interval instead of cron (demo)
    python -m worker --metrics-port 9464     also serve /metrics, /healthz, /readyz (docs/observability.md)

Between ticks the service looks every WORKER_POLL_S seconds (5; 0 = off) for rows added or come due
since the last tick and ticks at once for them.

SIGTERM/SIGINT: the row in hand finishes, the rest of the claimed batch is put back, exit 0.
A second signal exits at once (rows left in processing are rescued after the lease).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from croniter import croniter

from lib.core import counters
from lib.core.db import UNAVAILABLE_ERRORS, error_line, init_db, make_engine
from lib.core.logs import configure_logging, fields
from lib.core.redact import install_log_redaction
from lib.core.settings import SettingsError, load_settings
from lib.core.timeutil import utcnow
from lib.health.service_levels import sync_from_settings as sync_slo_from_settings
from lib.health.watchdog import sync_agent_down_alerts
from lib.instagram.client import GraphClient
from lib.notify.digest import queue_due_digests
from lib.notify.outbox import notify_tick
from lib.queue.holds import came_due_since
from lib.queue.reads import next_wait_due
from worker.metrics_server import Health, start_metrics_server
from worker.tick import TickMemory, run_tick

log = logging.getLogger("worker")

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextmanager
def signals_to_main_thread():
    """Threads started inside (metrics server, watchdog, notify) block SIGTERM/SIGINT, so the kernel
    delivers a stop signal to the main thread. Taken by another thread, it waited until the main
    thread's Graph call returned (up to GRAPH_READ_TIMEOUT_S) before the loop or /healthz saw it."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)

MIN_WAKE_S = 5  # at most one early wake-up per 5 s, however many rows wait
# WORKER_POLL_S looks for rows changed since the last tick began, less this margin: a row committed
# just after the tick's claim (or stamped by a host whose clock is a little behind) is still seen
POLL_OVERLAP = timedelta(seconds=2)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m worker", description="post_queue retry worker")
    ap.add_argument("--once", action="store_true", help="run one tick and exit")
    ap.add_argument("--until-empty", action="store_true", help="with --once: tick until nothing is claimed")
    ap.add_argument("--cron", help="cron expression (default: WORKER_CRON setting, */5 * * * *)")
    ap.add_argument("--interval-seconds", type=float, help="tick every N seconds instead of the cron schedule")
    ap.add_argument("--batch-size", type=int, help="rows per tick (default: BATCH_SIZE setting, 20)")
    ap.add_argument("--no-watchdog", action="store_true", help="do not run the agent watchdog in this process")
    ap.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    ap.add_argument("--log-format", default=os.environ.get("LOG_FORMAT") or "text", choices=("text", "json"),
                    help="text lines or one JSON object per line (default: LOG_FORMAT, text)")
    ap.add_argument("--metrics-port", type=int, default=_env_int("METRICS_PORT"),
                    help="serve /metrics, /healthz, /readyz on this port (default: METRICS_PORT; off)")
    ap.add_argument("--metrics-address", default=os.environ.get("METRICS_ADDRESS") or "127.0.0.1",
                    help="address of the metrics server (default: METRICS_ADDRESS, 127.0.0.1)")
    return ap.parse_args(argv)


def _env_int(name: str) -> int | None:
    raw = (os.environ.get(name) or "").strip()
    try:
        return int(raw) if raw else None
    except ValueError:
        raise SystemExit(f"{name} must be a port number (got {raw!r})") from None


def next_run(now: datetime, *, cron: str, interval_s: float | None) -> datetime:
    if interval_s:
        return now + timedelta(seconds=interval_s)
    return croniter(cron, now).get_next(datetime)


class Worker:
    def __init__(self, settings, *, no_watchdog: bool = False) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.client = GraphClient(settings.graph_url, connect_timeout=settings.graph_connect_timeout_s,
                                  read_timeout=settings.graph_read_timeout_s, api=settings.instagram_api)
        self.client.observers.append(counters.observe_graph_call)  # agent_dashboard_graph_request_duration_seconds
        self.stop = threading.Event()
        self.memory = TickMemory()  # what one tick leaves to the next in this process
        self.health = None  # worker.metrics_server.Health when --metrics-port is given
        self.no_watchdog = no_watchdog
        self.schema_ready = False
        self._signals = 0

    def on_signal(self, signum, _frame) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s: finishing the row in hand, then stopping", signal.Signals(signum).name)
        self.stop.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)

    def init(self) -> None:
        """init_db (safe alongside other workers and app replicas starting at once); a database that
        is not reachable yet is initialised before the next tick instead."""
        try:
            init_db(self.engine)
            self.schema_ready = True
        except Exception as exc:  # noqa: BLE001 - a down DB must not stop the worker
            log.warning("database init skipped: %s", error_line(exc))

    def tick(self):
        if not self.schema_ready:
            self.init()
        if self.health is not None:
            self.health.tick_started()
        began = time.monotonic()
        try:
            result = run_tick(self.engine, self.settings, self.client, stop=self.stop, memory=self.memory)
        except Exception:  # noqa: BLE001 - a bug in one tick must not end the process; the next tick retries
            log.exception("tick failed", extra=fields(outcome="failed"))
            counters.observe_tick("failed", time.monotonic() - began)
            return None
        counters.observe_tick("failed" if result.error else "ok", result.duration_s)
        return result

    def next_wake(self, *, interval_s: float | None, last_tick: datetime) -> datetime:
        """The next scheduled tick, or earlier when a waiting row (a container being processed,
        the publishing quota) comes due before it: a tick never sleeps minutes, the loop does."""
        now = utcnow()
        due = next_run(now, cron=self.settings.worker_cron, interval_s=interval_s)
        try:
            waiting = next_wait_due(self.engine, after=last_tick)
        except UNAVAILABLE_ERRORS:
            waiting = None  # the tick will say the database is gone
        if waiting is not None and waiting < due:
            return max(waiting, now + timedelta(seconds=MIN_WAKE_S))
        return due

    def sleep_until(self, due: datetime, *, last_tick: datetime) -> bool:
        """Wait until `due`. With WORKER_POLL_S > 0, look that often for a row that came due since
        `last_tick` (lib.queue.holds.came_due_since) and return early for it, so an action enqueued
        between cron ticks is attempted within seconds. True when a stop signal came."""
        poll = self.settings.worker_poll_s
        while True:
            left = (due - utcnow()).total_seconds()
            if left <= 0:
                return self.stop.is_set()
            if self.stop.wait(min(left, poll) if poll > 0 else left):
                return True
            if poll > 0 and utcnow() < due and self.rows_came_due(last_tick - POLL_OVERLAP):
                return False

    def rows_came_due(self, since: datetime) -> bool:
        try:
            with self.engine.connect() as conn:
                return came_due_since(conn, since=since, now=utcnow())
        except UNAVAILABLE_ERRORS:  # a lost database is reported by the next tick, not by the poll
            return False
        except Exception as exc:  # noqa: BLE001 - the poll must not end the service; cron ticks go on
            log.warning("poll for due rows failed: %s", error_line(exc))
            return False

    def watchdog_once(self) -> None:
        try:
            with self.engine.begin() as conn:
                changes = sync_agent_down_alerts(conn, now=utcnow())
            for agent in changes["raised"]:
                log.warning("agent_down raised for agent %s", agent)
            for agent in changes["resolved"]:
                log.info("agent_down resolved for agent %s", agent)
            with self.engine.begin() as conn:  # the error budget of the queue's service levels
                slo = sync_slo_from_settings(conn, self.settings, now=utcnow())
            if slo["raised"]:
                log.warning("slo_burn raised for %s", ", ".join(slo["raised"]))
        except UNAVAILABLE_ERRORS as exc:
            log.error("watchdog: database unavailable: %s", error_line(exc))
        except Exception:  # noqa: BLE001 - keep watching; the next pass retries
            log.exception("watchdog failed")

    def anomaly_pass(self) -> None:
        if not self.settings.anomaly_alerts_on:
            return
        now = utcnow()
        last = getattr(self, "_anomaly_pass_at", None)
        if last is not None and now - last < timedelta(hours=1):
            return
        self._anomaly_pass_at = now
        from lib.analytics.anomalies import worker_pass  # lazy: pandas, which the worker needs only here (ANOMALY_ALERTS on)

        with self.engine.begin() as conn:
            raised = worker_pass(conn, now=now, threshold=self.settings.anomaly_threshold)
        if raised:
            log.info("metric_anomaly alerts raised or updated: %d", len(raised))

    def notify_once(self) -> None:
        """Alert notifications (lib/notify/): detect what changed in system_alerts, deliver what is due."""
        try:
            queue_due_digests(self.engine, self.settings, now=utcnow())  # the weekly digest (lib/notify/digest.py)
            self.anomaly_pass()  # ANOMALY_ALERTS=on: metric_anomaly alerts (lib/analytics/anomalies.py), at most hourly
            report = notify_tick(self.engine, self.settings)
            if report.detect.queued or report.delivery.claimed:
                log.info("%s", report.line())
        except UNAVAILABLE_ERRORS as exc:
            log.error("notify: database unavailable: %s", error_line(exc))
        except Exception:  # noqa: BLE001 - keep going; the next pass retries
            log.exception("notify failed")

    def notify_loop(self) -> None:
        while not self.stop.wait(self.settings.alert_notify_interval_s):
            self.notify_once()

    def watchdog_loop(self) -> None:
        while not self.stop.is_set():
            self.watchdog_once()
            self.stop.wait(self.settings.watchdog_interval_s)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format, sys.stderr)
    install_log_redaction()  # no credential in any log line, urllib3's DEBUG request lines included
    # urllib3 logs each request's URL at DEBUG; debug_token's URL carries an account's token.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        settings = load_settings()
        if args.cron:
            croniter(args.cron)  # validate early
            settings = replace(settings, worker_cron=args.cron)
        if args.batch_size:
            settings = replace(settings, batch_size=args.batch_size)
        croniter(settings.worker_cron)
    except (SettingsError, ValueError, KeyError) as exc:
        log.error("bad settings: %s", exc)
        return 2
    w = Worker(settings, no_watchdog=args.no_watchdog)
    w.install_signals()
    log.info("worker start: database %s, graph %s, schedule %s, batch %d, max retries %d, lease %ds, poll %s",
             settings.masked_database_url, f"{settings.graph_url} ({settings.instagram_api})",
             f"every {args.interval_seconds}s" if args.interval_seconds else settings.worker_cron,
             settings.batch_size, settings.max_retries, settings.processing_lease_s,
             f"{settings.worker_poll_s:g}s" if settings.worker_poll_s > 0 else "off")
    w.init()
    if args.metrics_port is not None:
        w.health = Health(cron=settings.worker_cron, interval_s=args.interval_seconds, stopping=w.stop.is_set)
        w.health.loop_started()
        try:
            with signals_to_main_thread():
                start_metrics_server(w.engine, address=args.metrics_address, port=args.metrics_port,
                                     health=w.health)
        except OSError as exc:
            log.error("metrics server on %s:%s: %s", args.metrics_address, args.metrics_port, exc)
            return 2
    if args.once:
        if not args.no_watchdog:
            w.watchdog_once()
        failed = False
        while not w.stop.is_set():
            result = w.tick()
            failed = failed or result is None or bool(result.error)
            if not args.until_empty or result is None or result.error or result.claimed == 0:
                break
        w.notify_once()  # deliver what is due at the end of the tick
        return 1 if failed and not w.stop.is_set() else 0
    with signals_to_main_thread():
        if not args.no_watchdog:
            threading.Thread(target=w.watchdog_loop, name="watchdog", daemon=True).start()
        threading.Thread(target=w.notify_loop, name="notify", daemon=True).start()  # every ALERT_NOTIFY_INTERVAL_S
    # no tick yet: rows that came due while no service ran are woken for at once, not at the next cron tick
    last_tick = datetime.fromtimestamp(0, UTC)
    while not w.stop.is_set():
        due = w.next_wake(interval_s=args.interval_seconds, last_tick=last_tick)
        if w.sleep_until(due, last_tick=last_tick):
            break
        last_tick = utcnow()
        w.tick()  # a failed tick is logged inside; the next one tries again
        w.notify_once()
    if w.health is not None:  # (an exception out of the loop ends the process, server included)
        w.health.loop_stopped()
    log.info("worker stopped")
    return 0
