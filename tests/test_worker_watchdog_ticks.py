"""Agent watchdog (agent_down raise/auto-resolve) and worker_ticks health, on both databases."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lib.activity.heartbeats import record_beat
from lib.activity.worker_ticks import missed_schedule, record_tick_finish, record_tick_start, worker_health
from lib.alerts.store import severity
from lib.core.schema import system_alerts
from lib.health.watchdog import sync_agent_down_alerts

NOW = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)


def _open(conn):
    return conn.execute(sa.select(system_alerts).where(system_alerts.c.resolved.is_(False))).all()


def test_watchdog_raises_one_agent_down_and_resolves_it_on_the_next_beat(engine):
    with engine.begin() as conn:
        record_beat(conn, "engagement", now=NOW - timedelta(seconds=61))
        record_beat(conn, "publisher", now=NOW - timedelta(seconds=10))
        assert sync_agent_down_alerts(conn, now=NOW) == {"raised": ["engagement"], "resolved": []}
        assert sync_agent_down_alerts(conn, now=NOW + timedelta(seconds=30))["raised"] == []
        (alert,) = _open(conn)
        assert alert.alert_type == "agent_down" and severity(alert.alert_type) == "CRITICAL"
        assert alert.business_account_id is None
        assert alert.details["agent_id"] == "engagement"
        assert alert.details["last_beat_at"] == "2026-11-25T11:59:29Z"
        record_beat(conn, "engagement", now=NOW + timedelta(seconds=40))
        assert sync_agent_down_alerts(conn, now=NOW + timedelta(seconds=45)) == {"raised": [], "resolved": ["engagement"]}
        assert _open(conn) == []
        resolved = conn.execute(sa.select(system_alerts)).one()
        assert resolved.resolved is True and resolved.resolved_at is not None


def test_an_operator_resolved_alert_is_not_raised_again_until_the_agent_beats_and_dies_again(engine):
    with engine.begin() as conn:
        record_beat(conn, "a1", now=NOW - timedelta(minutes=5))
        sync_agent_down_alerts(conn, now=NOW)
        conn.execute(sa.update(system_alerts).values(resolved=True, resolved_at=NOW))
        assert sync_agent_down_alerts(conn, now=NOW + timedelta(minutes=1))["raised"] == []
        record_beat(conn, "a1", now=NOW + timedelta(minutes=2))
        assert sync_agent_down_alerts(conn, now=NOW + timedelta(minutes=4))["raised"] == ["a1"]
        assert len(_open(conn)) == 1


def test_worker_health_reports_the_last_tick_and_missed_schedules(engine):
    cron = "*/5 * * * *"
    with engine.begin() as conn:
        assert worker_health(conn, now=NOW, cron=cron)["never_ran"] is True
        t1 = record_tick_start(conn, now=NOW - timedelta(minutes=10), host="h", pid=1)
        record_tick_finish(conn, t1, now=NOW - timedelta(minutes=10) + timedelta(seconds=3), claimed=20, sent=18,
                           failed=1, dlq=1, rescued=0, error=None)
        t2 = record_tick_start(conn, now=NOW - timedelta(seconds=30), host="h", pid=1)
        running = worker_health(conn, now=NOW, cron=cron)
        assert running["running"] is True and running["missed"] is False
        record_tick_finish(conn, t2, now=NOW, claimed=0, sent=0, failed=0, dlq=0, rescued=2,
                           error="database unavailable at x: boom")
        h = worker_health(conn, now=NOW, cron=cron)
    assert h["last_started_at"] == NOW - timedelta(seconds=30) and h["last_finished_at"] == NOW
    assert (h["rescued"], h["last_error"], h["running"], h["missed"]) == (2, "database unavailable at x: boom",
                                                                          False, False)


def test_missed_means_two_scheduled_ticks_passed_without_a_tick():
    start = datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC)  # the 12:00 tick
    cron = "*/5 * * * *"
    assert missed_schedule(start, now=start + timedelta(minutes=9), cron=cron) is False  # 12:05 missed only
    assert missed_schedule(start, now=datetime(2026, 11, 25, 12, 10, 1, tzinfo=UTC), cron=cron) is True
    assert missed_schedule(None, now=start, cron=cron) is True
