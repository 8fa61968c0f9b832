"""worker.metrics_server.Health with a fake clock: 200 from start, 503 when a tick is overdue by more
than two schedule intervals or when the loop stops; and lib.core.logs' JSON lines."""
from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta

from lib.core.logs import configure_logging, fields
from worker.metrics_server import Health

T0 = datetime(2026, 12, 1, 21, 2, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def test_cron_schedule_healthy_until_the_due_tick_is_two_intervals_late():
    clock, stopping = Clock(), []
    h = Health(cron="*/5 * * * *", interval_s=None, now_fn=clock, stopping=lambda: bool(stopping))
    assert h.check()[0] is False  # the loop has not started
    h.loop_started()
    assert h.check()[0] is True
    clock.now = T0 + timedelta(minutes=3)  # 21:05 due
    h.tick_started()
    clock.now = datetime(2026, 12, 1, 21, 20, tzinfo=UTC)  # 21:10 due; 21:20 = exactly two intervals late
    assert h.check()[0] is True
    clock.now += timedelta(seconds=1)
    ok, info = h.check()
    assert ok is False and info["next_tick_due_at"] == "2026-12-01T21:10:00Z" and "overdue" in info["reason"]
    h.tick_started()
    assert h.check()[0] is True
    stopping.append(True)  # SIGTERM: stopping counts as stopped at once
    assert h.check() == (False, {**h.check()[1], "reason": "the worker loop is not running"})


def test_interval_schedule_and_loop_stopped():
    clock = Clock()
    h = Health(cron="*/5 * * * *", interval_s=20, now_fn=clock)
    h.loop_started()
    clock.now += timedelta(seconds=60)  # due at +20 s, two intervals later = +60 s
    assert h.check()[0] is True
    clock.now += timedelta(seconds=1)
    assert h.check()[0] is False
    h.tick_started()
    assert h.check()[0] is True
    h.loop_stopped()
    assert h.check()[0] is False


def test_json_log_lines_carry_the_fields_and_never_a_token():
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    try:
        log = logging.getLogger("worker")
        log.info("row %s %s -> sent", "r1", "send_dm", extra=fields(row_id="r1", action_type="send_dm", outcome="sent"))
        log.warning("echo Bearer EAA%s from Graph", "Q" * 30)
        try:
            raise ValueError("token EAA" + "Q" * 30)
        except ValueError:
            log.exception("tick failed", extra=fields(outcome="failed", duration=1.25))
    finally:
        configure_logging("INFO", "text")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["level"] == "INFO" and first["logger"] == "worker" and first["message"] == "row r1 send_dm -> sent"
    assert (first["row_id"], first["action_type"], first["outcome"]) == ("r1", "send_dm", "sent")
    assert first["time"].endswith("Z")
    assert lines[2]["duration"] == 1.25 and "ValueError" in lines[2]["exception"]
    assert "EAA" + "Q" * 30 not in out.getvalue()
