"""Maintenance window rules with a fixed now: one-off and recurring occurrences, scope, early end."""
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lib.alerts.maintenance import MaintenanceError, MaintenanceWindow, check_window, maintenance_until

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
ACC = uuid.uuid4()


def window(**kw):
    base = dict(id=uuid.uuid4(), agent_id=None, business_account_id=None, starts_at=NOW - H, ends_at=NOW + H,
                cron=None, duration_s=None, reason="upgrade", created_by="ops")
    return MaintenanceWindow(**{**base, **kw})


def test_one_off_covers_its_span_only():
    w = window()
    assert w.occurrence_at(NOW) == (NOW - H, NOW + H)
    assert w.occurrence_at(NOW - H) == (NOW - H, NOW + H)
    assert w.occurrence_at(NOW + H) is None  # the end is exclusive
    assert w.occurrence_at(NOW - 2 * H) is None
    assert w.next_start(NOW - 2 * H) == NOW - H and w.next_start(NOW) is None


def test_recurring_nightly_window():
    w = window(starts_at=NOW - 72 * H, ends_at=None, cron="0 2 * * *", duration_s=3600)
    at_0230 = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
    assert w.occurrence_at(at_0230) == (at_0230 - 30 * timedelta(minutes=1), at_0230 + 30 * timedelta(minutes=1))
    assert w.occurrence_at(NOW) is None
    assert w.next_start(NOW) == datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    spans = w.occurrences(NOW - 48 * H, NOW)
    assert [s[0].day for s in spans] == [24, 25]
    assert w.describe() == "at `0 2 * * *` (UTC) for 1 h"


def test_recurrence_respects_its_start_end_and_an_early_end():
    at_0230 = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
    assert window(starts_at=NOW, ends_at=None, cron="0 2 * * *", duration_s=3600).occurrence_at(at_0230) is None
    assert window(starts_at=NOW - 72 * H, ends_at=at_0230 - H, cron="0 2 * * *",
                  duration_s=3600).occurrence_at(at_0230) is None
    ended = window(starts_at=NOW - 72 * H, ends_at=None, cron="0 2 * * *", duration_s=3600,
                   ended_at=at_0230 - timedelta(minutes=10))
    assert ended.occurrence_at(at_0230) is None
    assert ended.occurrence_at(at_0230 - timedelta(minutes=20))[1] == at_0230 - timedelta(minutes=10)
    assert ended.next_start(NOW) is None


def test_scope_agent_account_all():
    agent, account, everything = window(agent_id="a1"), window(business_account_id=ACC), window()
    assert agent.covers(agent_id="a1") and not agent.covers(agent_id="a2") and not agent.covers(business_account_id=ACC)
    assert account.covers(business_account_id=ACC) and not account.covers(agent_id="a1")
    assert everything.covers(agent_id="x") and everything.covers(business_account_id=ACC) and everything.covers()
    assert maintenance_until([agent, window(agent_id="a1", ends_at=NOW + 3 * H)], NOW, agent_id="a1") == NOW + 3 * H
    assert maintenance_until([agent], NOW, agent_id="a2") is None


def test_check_window_refuses_what_cannot_work():
    ok = dict(starts_at=NOW, ends_at=NOW + H, cron=None, duration_s=None, agent_id=None, business_account_id=None,
              reason="x")
    check_window(**ok)
    for change, message in [({"ends_at": NOW}, "end after"), ({"reason": " "}, "why"),
                            ({"agent_id": "a", "business_account_id": ACC}, "not an agent and an account"),
                            ({"ends_at": NOW + 32 * 24 * H}, "31 days"),
                            ({"cron": "nightly", "ends_at": None, "duration_s": 60}, "five fields"),
                            ({"cron": "0 2 * * *", "ends_at": None, "duration_s": 10}, "between 1 minute")]:
        with pytest.raises(MaintenanceError, match=message):
            check_window(**{**ok, **change})
