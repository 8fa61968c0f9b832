"""System Alerts reads and resolve on SQLite and PostgreSQL."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.alerts.store import (
    EXPORT_COLUMNS,
    AlertFilter,
    alert_counts,
    alert_summary,
    export_chunks,
    group_alerts,
    list_alerts,
    matching_ids,
    open_or_update_alert,
    resolve,
    types_for_severities,
)
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import audit_log, system_alerts

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ACC_A = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")
ACC_B = uuid.UUID("bbbbbbbb-0000-0000-0000-000000000002")


def alert(alert_type, *, minutes_ago, account=None, resolved=False, details=None, message=None):
    created = NOW - timedelta(minutes=minutes_ago)
    return {
        "id": uuid.uuid4(), "alert_type": alert_type, "message": message or f"{alert_type} {minutes_ago}",
        "business_account_id": account, "details": details, "resolved": resolved,
        "resolved_at": created + timedelta(minutes=1) if resolved else None,
        "created_at": created, "updated_at": created,
    }


ROWS = [
    alert("rate_limit", minutes_ago=5, account=ACC_A),
    alert("rate_limit", minutes_ago=50, account=ACC_A),  # a repeat: grouped with the one above
    alert("auth_failure", minutes_ago=120, account=ACC_B),
    alert("agent_down", minutes_ago=30, details={"agent_id": "a1"}),
    alert("content_violation", minutes_ago=60 * 30, account=ACC_A),
    alert("sync_failure", minutes_ago=10, account=ACC_B, resolved=True),
    alert("mystery_type", minutes_ago=15, account=ACC_B),  # unknown types are WARNING
]


@pytest.fixture
def alerts_db(engine):
    with engine.begin() as conn:
        conn.execute(sa.insert(system_alerts), ROWS)
    return engine


def names(alerts):
    return [a.message for a in alerts]


def test_default_is_unresolved_sorted_by_severity_then_newest(alerts_db):
    with alerts_db.connect() as conn:
        got = list_alerts(conn, filters=AlertFilter())
    assert names(got) == [
        "agent_down 30", "auth_failure 120",  # CRITICAL, newest first
        "content_violation 1800",  # ERROR (sync_failure is resolved)
        "rate_limit 5", "mystery_type 15", "rate_limit 50",  # WARNING
    ]
    assert [a.severity for a in got] == ["CRITICAL", "CRITICAL", "ERROR", "WARNING", "WARNING", "WARNING"]


@pytest.mark.parametrize("filters, expected", [
    (AlertFilter(type="rate_limit"), {"rate_limit 5", "rate_limit 50"}),
    (AlertFilter(resolved=True), {"sync_failure 10"}),
    (AlertFilter(resolved=None), {r["message"] for r in ROWS}),
    (AlertFilter(severities=("CRITICAL",)), {"agent_down 30", "auth_failure 120"}),
    (AlertFilter(severities=("WARNING",)), {"rate_limit 5", "rate_limit 50", "mystery_type 15"}),
    (AlertFilter(severities=("ERROR",), resolved=None), {"content_violation 1800", "sync_failure 10"}),
    (AlertFilter(account_id=ACC_B), {"auth_failure 120", "mystery_type 15"}),
    (AlertFilter(since=NOW - timedelta(hours=1)), {"rate_limit 5", "rate_limit 50", "agent_down 30", "mystery_type 15"}),
    (AlertFilter(since=NOW - timedelta(days=2), until=NOW - timedelta(hours=1)), {"auth_failure 120", "content_violation 1800"}),
    (AlertFilter(type="rate_limit", account_id=ACC_A, since=NOW - timedelta(minutes=10), severities=("WARNING",)),
     {"rate_limit 5"}),
    (AlertFilter(type="rate_limit", severities=("CRITICAL",)), set()),
])
def test_filters(alerts_db, filters, expected):
    with alerts_db.connect() as conn:
        assert set(names(list_alerts(conn, filters=filters))) == expected
        assert sum(alert_summary(conn, filters=filters)["severity"].values()) == len(expected)


def test_types_for_severities():
    assert types_for_severities(["CRITICAL"]) == (["auth_failure", "agent_down"], False)
    assert types_for_severities(["WARNING"]) == (["rate_limit"], True)


def test_grouping_counts_repeats():
    with_counts = [
        alert("rate_limit", minutes_ago=5, account=ACC_A,
              details={"count": 3, "first_seen": "2026-11-25T10:00:00Z", "last_seen": "2026-11-25T11:55:00Z"}),
        alert("rate_limit", minutes_ago=300, account=ACC_A),
        alert("rate_limit", minutes_ago=7, account=ACC_B),
    ]
    from lib.alerts.store import Alert, severity

    alerts = [Alert(severity=severity(r["alert_type"]), **{k: v for k, v in r.items()}) for r in with_counts]
    groups = group_alerts(alerts)
    assert [(g.business_account_id, g.count) for g in groups] == [(ACC_A, 4), (ACC_B, 1)]
    a = groups[0]
    assert a.first_seen == NOW - timedelta(minutes=300)
    assert a.last_seen == datetime(2026, 11, 25, 11, 55, tzinfo=UTC)
    assert a.message == "rate_limit 5" and len(a.ids) == 2 and a.unresolved == 2


def test_worker_repeat_is_one_row_with_count(engine):
    with engine.begin() as conn:
        for i in range(3):
            open_or_update_alert(conn, alert_type="rate_limit", message=f"hit {i}", now=NOW + timedelta(minutes=i),
                                 business_account_id=ACC_A)
    with engine.connect() as conn:
        (group,) = group_alerts(list_alerts(conn, filters=AlertFilter()))
    assert group.count == 3 and group.first_seen == NOW and group.last_seen == NOW + timedelta(minutes=2)


def audit_rows(conn):
    return conn.execute(sa.select(audit_log).order_by(audit_log.c.created_at)).all()
@pytest.mark.pooler
def test_resolve_one_selected_and_already_resolved(alerts_db):
    ids = [r["id"] for r in ROWS]
    with alerts_db.begin() as conn:
        results = resolve(conn, [ids[0], ids[2], ids[5], uuid.uuid4()], actor=Actor("alice", OPERATOR), now=NOW)
    assert [r.outcome for r in results] == ["resolved", "resolved", "already_resolved", "not_found"]
    assert "already resolved" in results[2].message
    with alerts_db.connect() as conn:
        row = conn.execute(sa.select(system_alerts).where(system_alerts.c.id == ids[0])).one()
        assert row.resolved and row.resolved_at == NOW and row.updated_at == NOW
        untouched = conn.execute(sa.select(system_alerts).where(system_alerts.c.id == ids[5])).one()
        assert untouched.resolved_at == ROWS[5]["resolved_at"]
        audits = audit_rows(conn)
        assert len(audits) == 2  # only the alerts actually resolved
        assert {a.event_type for a in audits} == {"alert_resolved"}
        assert {a.user_id for a in audits} == {"alice"}
        assert {a.resource_id for a in audits} == {str(ids[0]), str(ids[2])}
        by_id = {a.resource_id: a.details for a in audits}
        assert by_id[str(ids[2])]["alert_type"] == "auth_failure"
        assert by_id[str(ids[2])]["alert_id"] == str(ids[2])
        assert by_id[str(ids[2])]["business_account_id"] == str(ACC_B)  # the feed's account filter finds it
        resolved = {a.id: a for a in list_alerts(conn, filters=AlertFilter(resolved=True))}
        assert resolved[ids[0]].resolved_by == "alice"
        assert resolved[ids[5]].resolved_by is None  # resolved elsewhere
    with alerts_db.begin() as conn:  # again: a no-op, reported as such, no new audit row
        again = resolve(conn, [ids[0]], actor=Actor("bob", OPERATOR), now=NOW + timedelta(minutes=1))
    assert [r.outcome for r in again] == ["already_resolved"]
    with alerts_db.connect() as conn:
        assert len(audit_rows(conn)) == 2


def test_resolve_all_matching(alerts_db):
    with alerts_db.begin() as conn:
        ids = matching_ids(conn, filters=AlertFilter(severities=("WARNING",)))
        assert len(ids) == 3
        results = resolve(conn, ids, actor=Actor("ops", OPERATOR), now=NOW)
    assert all(r.outcome == "resolved" for r in results)
    with alerts_db.connect() as conn:
        assert list_alerts(conn, filters=AlertFilter(severities=("WARNING",))) == []
        assert len(list_alerts(conn, filters=AlertFilter())) == 3
@pytest.mark.pooler
def test_counts_over_time_and_export(alerts_db):
    with alerts_db.connect() as conn:
        counts = alert_counts(conn, filters=AlertFilter(resolved=None), bucket="hour")
        columns = EXPORT_COLUMNS
        chunks = list(export_chunks(conn, filters=AlertFilter(account_id=ACC_A), chunk_size=2))
        rows = [r for chunk in chunks for r in chunk]
    assert [len(c) for c in chunks] == [2, 1]  # read in chunks from a cursor, not built whole
    assert sum(c["count"] for c in counts) == len(ROWS)
    assert {c["alert_type"] for c in counts} == {r["alert_type"] for r in ROWS}
    assert "severity" in columns and "resolved_by" in columns
    assert sorted(r[columns.index("message")] for r in rows) == ["content_violation 1800", "rate_limit 5", "rate_limit 50"]


def test_resolve_checks_the_role_of_a_signed_in_actor(alerts_db):
    from lib.core.identity import OPERATOR, VIEWER, Actor, PermissionDenied

    alert_id = ROWS[0]["id"]
    with alerts_db.begin() as conn:
        with pytest.raises(PermissionDenied):
            resolve(conn, [alert_id], actor=Actor("viewer@x", VIEWER), now=NOW)
        with pytest.raises(PermissionDenied):
            resolve(conn, [alert_id], actor="ops@x", now=NOW)  # a bare name carries no role
        assert [r.outcome for r in resolve(conn, [alert_id], actor=Actor("ops@x", OPERATOR), now=NOW)] == ["resolved"]
        assert conn.execute(sa.select(audit_log.c.user_id)).scalars().all() == ["ops@x"]
