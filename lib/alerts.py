"""system_alerts: severity (DESIGN decision 6), open-or-update, auto-resolve."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.schema import system_alerts
from lib.timeutil import iso

ALERT_TYPES = ("auth_failure", "rate_limit", "content_violation", "agent_down", "sync_failure")
SEVERITIES = ("CRITICAL", "ERROR", "WARNING")  # most severe first
_SEVERITY = {
    "auth_failure": "CRITICAL",
    "agent_down": "CRITICAL",
    "content_violation": "ERROR",
    "sync_failure": "ERROR",
    "rate_limit": "WARNING",
}


def severity(alert_type: str | None) -> str:
    return _SEVERITY.get(alert_type or "", "WARNING")


def severity_rank(alert_type: str | None) -> int:
    """0 for the most severe; for sorting."""
    return SEVERITIES.index(severity(alert_type))


def open_or_update_alert(
    conn: sa.Connection,
    *,
    alert_type: str,
    message: str,
    now: datetime,
    business_account_id: uuid.UUID | None = None,
    agent_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> uuid.UUID:
    """At most one unresolved alert per (alert_type, account or agent): a repeat updates it.

    The repeat keeps first_seen, bumps count and last_seen, and takes the new message/details.
    """
    details = dict(details or {})
    if agent_id is not None:
        details["agent_id"] = agent_id
    t = system_alerts
    query = sa.select(t.c.id, t.c.details).where(t.c.alert_type == alert_type, t.c.resolved.is_(False))
    if business_account_id is not None:
        query = query.where(t.c.business_account_id == business_account_id)
    else:
        query = query.where(t.c.business_account_id.is_(None))
    if agent_id is not None:
        query = query.where(t.c.details["agent_id"].as_string() == agent_id)
    existing = conn.execute(query.order_by(t.c.created_at.desc()).limit(1)).first()
    if existing is None:
        new_id = uuid.uuid4()
        details.setdefault("count", 1)
        details.setdefault("first_seen", iso(now))
        details.setdefault("last_seen", iso(now))
        conn.execute(
            sa.insert(t).values(
                id=new_id,
                alert_type=alert_type,
                message=message,
                business_account_id=business_account_id,
                details=details,
                resolved=False,
                created_at=now,
                updated_at=now,
            )
        )
        return new_id
    old = existing.details if isinstance(existing.details, dict) else {}
    merged = {**old, **details}
    merged["count"] = int(old.get("count", 1) or 1) + 1
    merged["first_seen"] = old.get("first_seen", merged.get("first_seen", iso(now)))
    merged["last_seen"] = iso(now)
    conn.execute(sa.update(t).where(t.c.id == existing.id).values(message=message, details=merged, updated_at=now))
    return existing.id


def auto_resolve(conn: sa.Connection, *, alert_type: str, now: datetime, agent_id: str | None = None,
                 business_account_id: uuid.UUID | None = None) -> int:
    """Resolve the open alerts of a condition that has cleared (e.g. agent_down after a beat)."""
    t = system_alerts
    stmt = sa.update(t).where(t.c.alert_type == alert_type, t.c.resolved.is_(False))
    if agent_id is not None:
        stmt = stmt.where(t.c.details["agent_id"].as_string() == agent_id)
    if business_account_id is not None:
        stmt = stmt.where(t.c.business_account_id == business_account_id)
    return conn.execute(stmt.values(resolved=True, resolved_at=now, updated_at=now)).rowcount
