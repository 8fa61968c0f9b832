"""Agent schedules on every database: the watchdog, the statuses and the audited operator writes."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.activity.agent_schedules import ScheduleError, clear_schedule, load_schedules, make_schedule, set_schedule
from lib.activity.heartbeats import agent_statuses, record_beat
from lib.core.identity import OPERATOR, Actor, PermissionDenied
from lib.core.schema import agent_schedules, audit_log, system_alerts
from lib.health.watchdog import sync_agent_down_alerts

OP = Actor("ops@example.com", OPERATOR)
VIEWER = Actor("viewer@example.com")
T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def _agent_down(conn, agent_id):
    return conn.execute(sa.select(system_alerts).where(
        system_alerts.c.alert_type == "agent_down",
        system_alerts.c.details["agent_id"].as_string() == agent_id)).all()


def test_a_4_minute_agent_with_a_5_minute_period_never_alerts(engine):
    with engine.begin() as conn:
        set_schedule(conn, "poller", make_schedule(period_s=300, grace_s=0), actor=OP, now=T0)
        record_beat(conn, "poller", now=T0)
        now = T0
        # the watchdog runs every 30 s for six hours; the agent beats every 4 minutes
        while now < T0 + timedelta(hours=6):
            now += timedelta(seconds=30)
            if (now - T0) % (4 * M) == timedelta(0):
                record_beat(conn, "poller", now=now)
            assert sync_agent_down_alerts(conn, now=now) == {"raised": [], "resolved": []}
        assert _agent_down(conn, "poller") == []
        (status,) = agent_statuses(conn, now=now)
        assert status.state == "up" and status.availability_24h == 1.0


def test_a_missed_nightly_run_alerts_once_and_resolves_on_the_next_run(engine):
    def night(conn, day):  # ten minutes of beats from 02:00
        start = datetime(2026, 11, day, 2, 0, tzinfo=UTC)
        for i in range(21):
            record_beat(conn, "nightly", now=start + i * 30 * timedelta(seconds=1))

    raised, resolved = [], []
    with engine.begin() as conn:
        set_schedule(conn, "nightly", make_schedule(cron="0 2 * * *", grace_s=1800), actor=OP, now=T0)
        now = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
        night(conn, 21)
        while now < datetime(2026, 11, 24, 12, 0, tzinfo=UTC):  # the watchdog every 5 minutes
            now += 5 * M
            if now == datetime(2026, 11, 22, 2, 0, tzinfo=UTC):
                night(conn, 22)
            if now == datetime(2026, 11, 24, 2, 0, tzinfo=UTC):
                night(conn, 24)  # the night of the 23rd was missed
            r = sync_agent_down_alerts(conn, now=now)
            raised += [(now, a) for a in r["raised"]]
            resolved += [(now, a) for a in r["resolved"]]
        # down from 02:30 (02:00 + grace) on the 23rd: raised once at the first pass after it
        assert raised == [(datetime(2026, 11, 23, 2, 35, tzinfo=UTC), "nightly")]
        assert resolved == [(datetime(2026, 11, 24, 2, 0, tzinfo=UTC), "nightly")]
        (alert,) = _agent_down(conn, "nightly")
        assert alert.resolved is True
        assert alert.details["schedule"] == "runs at `0 2 * * *` (UTC) + 30 min grace"
        assert alert.details["expected_by"] == "2026-11-23T02:00:00Z"


def test_agents_without_a_schedule_keep_the_60_second_rule(engine):
    with engine.begin() as conn:
        record_beat(conn, "plain", now=T0)
        assert sync_agent_down_alerts(conn, now=T0 + 60 * timedelta(seconds=1))["raised"] == []
        assert sync_agent_down_alerts(conn, now=T0 + 61 * timedelta(seconds=1))["raised"] == ["plain"]


def test_set_and_clear_are_audited_and_viewers_are_refused(engine):
    with engine.begin() as conn:
        with pytest.raises(PermissionDenied):
            set_schedule(conn, "a1", make_schedule(period_s=300), actor=VIEWER, now=T0)
        with pytest.raises(PermissionDenied):
            clear_schedule(conn, "a1", actor=VIEWER, now=T0)
        with pytest.raises(ScheduleError):
            set_schedule(conn, "  ", make_schedule(period_s=300), actor=OP, now=T0)
        set_schedule(conn, "a1", make_schedule(period_s=300, grace_s=60), actor=OP, now=T0)
        set_schedule(conn, "a1", make_schedule(cron="0 2 * * *", grace_s=600, availability_target=0.99),
                     actor=OP, now=T0 + M)
        assert load_schedules(conn)["a1"].cron == "0 2 * * *"
        assert clear_schedule(conn, "a1", actor=OP, now=T0 + 2 * M) is True
        assert clear_schedule(conn, "a1", actor=OP, now=T0 + 3 * M) is False
        assert conn.execute(sa.select(sa.func.count()).select_from(agent_schedules)).scalar() == 0
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.resource_type == "agent_schedules")
                            .order_by(audit_log.c.created_at)).all()
    assert [(r.event_type, r.user_id, r.resource_id) for r in rows] == [
        ("agent_schedule_set", OP.name, "a1"), ("agent_schedule_set", OP.name, "a1"),
        ("agent_schedule_cleared", OP.name, "a1")]
    assert rows[1].details["before"]["period_s"] == 300 and rows[1].details["cron"] == "0 2 * * *"
    assert rows[2].details["before"]["availability_target"] == 0.99
