"""audit_log: the one place rows are written (worker, retries, resolves) and read."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.schema import audit_log

# Spec 4.2 event types, plus the ones this project writes for operator actions.
SPEC_EVENT_TYPES = (
    "post_published",
    "comment_replied",
    "dm_sent",
    "ugc_reposted",
    "post_failed_permanent",
    "auth_failure",
)
OPERATOR_EVENT_TYPES = ("queue_item_retried", "alert_resolved")


def audit_row(
    *,
    event_type: str,
    action: str,
    resource_type: str,
    resource_id: str | None,
    now: datetime,
    user_id: str | None = None,
    success: bool | None = None,
    error_message: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The values of one audit_log row (for bulk inserts)."""
    return {
        "id": uuid.uuid4(),
        "event_type": event_type,
        "action": action,
        "resource_type": resource_type,
        "resource_id": None if resource_id is None else str(resource_id),
        "user_id": user_id,
        "success": success,
        "error_message": error_message,
        "details": details,
        "created_at": now,
    }


def log_audit(conn: sa.Connection, **kwargs: Any) -> None:
    """Insert one audit_log row; keyword arguments as audit_row()."""
    conn.execute(sa.insert(audit_log), [audit_row(**kwargs)])
