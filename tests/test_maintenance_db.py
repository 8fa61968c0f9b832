"""Maintenance windows on every database: no agent_down or queue alert raised for what a window
covers, no notification while it lasts, the opening after it; audited, operators only."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.activity.heartbeats import agent_statuses, record_beat
from lib.alerts.maintenance import MaintenanceError, create_window, end_window, load_windows
from lib.alerts.store import open_or_update_alert
from lib.core.identity import OPERATOR, Actor, PermissionDenied
from lib.core.schema import audit_log, maintenance_windows, system_alerts
from lib.core.settings import Settings
from lib.health.watchdog import sync_agent_down_alerts
from lib.notify.outbox import notify_tick
from sandbox.notify_sink import NotifySink
from tests.support.worker import add_account

OP = Actor("ops@example.com", OPERATOR)
VIEWER = Actor("viewer@example.com")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def _alerts(conn, alert_type):
    return conn.execute(sa.select(system_alerts).where(system_alerts.c.alert_type == alert_type)).all()


def test_an_agent_window_mutes_agent_down_until_it_ends(engine):
    with engine.begin() as conn:
        create_window(conn, actor=OP, now=T0, agent_id="deployer", starts_at=T0, ends_at=T0 + 30 * M,
                      reason="deploy")
        record_beat(conn, "deployer", now=T0)
        record_beat(conn, "other", now=T0)
        assert sync_agent_down_alerts(conn, now=T0 + 10 * M) == {"raised": ["other"], "resolved": []}
        statuses = {s.agent_id: s for s in agent_statuses(conn, now=T0 + 10 * M)}
        assert statuses["deployer"].maintenance_until == T0 + 30 * M
        assert statuses["other"].maintenance_until is None
        assert [a.details["agent_id"] for a in _alerts(conn, "agent_down")] == ["other"]
        # still down when the window is over: raised then, once
        assert sync_agent_down_alerts(conn, now=T0 + 31 * M)["raised"] == ["deployer"]
        assert sync_agent_down_alerts(conn, now=T0 + 32 * M)["raised"] == []


def test_an_account_window_mutes_queue_alerts_of_that_account_only(engine):
    with engine.begin() as conn:
        acme, other = add_account(conn, username="acme"), add_account(conn, username="other")
        create_window(conn, actor=OP, now=T0, business_account_id=acme, cron="0 9 * * *", duration_s=3600,
                      starts_at=T0 - 48 * 60 * M, reason="token rotation")
        assert open_or_update_alert(conn, alert_type="auth_failure", business_account_id=acme, now=T0 + M,
                                    message="expired") is None
        assert open_or_update_alert(conn, alert_type="auth_failure", business_account_id=other, now=T0 + M,
                                    message="expired") is not None
        # not a queue alert: a window does not explain an expiring token
        assert open_or_update_alert(conn, alert_type="token_expiring", business_account_id=acme, now=T0 + M,
                                    message="soon") is not None
        # the next day's 10:00 is outside the 09:00-10:00 window
        assert open_or_update_alert(conn, alert_type="auth_failure", business_account_id=acme,
                                    now=T0 + 25 * 60 * M, message="expired") is not None
        assert {str(a.business_account_id) for a in _alerts(conn, "auth_failure")} == {str(acme), str(other)}


def test_no_notification_during_a_window_and_the_opening_after_it(engine):
    with NotifySink() as sink:
        settings = replace(Settings(database_url=str(engine.url), alert_notify_urls=sink.apprise_url(),
                                    alert_notify_timeout_s=5.0))
        with engine.begin() as conn:
            window = create_window(conn, actor=OP, now=T0, starts_at=T0, ends_at=T0 + 30 * M, reason="db upgrade")
            # someone else's writer (the spec's backend) inserts an alert row directly during the window
            conn.execute(sa.insert(system_alerts).values(alert_type="sync_failure", message="sync broke",
                                                         details={}, resolved=False, created_at=T0 + M,
                                                         updated_at=T0 + M))
        rep = notify_tick(engine, settings, now=T0 + 2 * M)
        assert rep.detect.silenced == 1 and rep.delivery.sent == 0 and sink.received() == []
        rep = notify_tick(engine, settings, now=T0 + 20 * M)
        assert rep.delivery.sent == 0 and sink.received() == []
        with engine.begin() as conn:
            assert end_window(conn, window.id, actor=OP, now=T0 + 25 * M) is True
            assert end_window(conn, window.id, actor=OP, now=T0 + 26 * M) is False
        rep = notify_tick(engine, settings, now=T0 + 26 * M)
        assert rep.detect.opened == 1 and rep.delivery.sent == 1
        [msg] = sink.received()
        assert "sync_failure" in msg["title"]


def test_windows_are_audited_checked_and_operators_only(engine):
    with engine.begin() as conn:
        with pytest.raises(PermissionDenied):
            create_window(conn, actor=VIEWER, now=T0, ends_at=T0 + M, reason="x")
        with pytest.raises(MaintenanceError):
            create_window(conn, actor=OP, now=T0, ends_at=T0 - M, reason="x")
        w = create_window(conn, actor=OP, now=T0, ends_at=T0 + 60 * M, agent_id="a1", reason="move host")
        with pytest.raises(PermissionDenied):
            end_window(conn, w.id, actor=VIEWER, now=T0 + M)
        assert [x.id for x in load_windows(conn, now=T0 + M)] == [w.id]
        end_window(conn, w.id, actor=OP, now=T0 + 2 * M)
        assert load_windows(conn, now=T0 + 3 * M) == []
        assert conn.execute(sa.select(sa.func.count()).select_from(maintenance_windows)).scalar() == 1
        rows = conn.execute(sa.select(audit_log.c.event_type, audit_log.c.user_id, audit_log.c.details)
                            .where(audit_log.c.resource_id == str(w.id)).order_by(audit_log.c.created_at)).all()
    assert [(r.event_type, r.user_id) for r in rows] == [("maintenance_window_created", OP.name),
                                                        ("maintenance_window_ended", OP.name)]
    assert rows[0].details["agent_id"] == "a1" and rows[0].details["reason"] == "move host"
