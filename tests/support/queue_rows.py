"""Direct inserts of post_queue rows for tests (the worker's and the seed's writers are elsewhere)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.core.schema import instagram_business_accounts, post_queue


def add_account(conn, username: str, now: datetime) -> uuid.UUID:
    acc = uuid.uuid4()
    conn.execute(sa.insert(instagram_business_accounts).values(
        id=acc, username=username, instagram_business_id=f"ig-{username}", access_token="EAA" + "x" * 40,
        is_connected=True, created_at=now, updated_at=now))
    return acc


def queue_row(*, account: uuid.UUID, now: datetime, status: str = "dlq", action_type: str = "reply_comment",
              retry_count: int = 5, error: str | None = "(#190) Error validating access token",
              error_category: str | None = "auth_failure", age_min: float = 10, next_retry_in_min: float | None = None,
              payload: dict[str, Any] | None = None) -> dict[str, Any]:
    rid = uuid.uuid4()
    return {
        "id": rid, "business_account_id": account, "action_type": action_type,
        "payload": payload if payload is not None else {"comment_id": "c1", "reply_text": "thanks", "post_id": "p1"},
        "idempotency_key": rid.hex, "status": status, "retry_count": retry_count,
        "error": error if status in ("failed", "dlq") else None,
        "error_category": error_category if status in ("failed", "dlq") else None,
        "next_retry_at": None if next_retry_in_min is None else now + timedelta(minutes=next_retry_in_min),
        "created_at": now - timedelta(minutes=age_min + 5), "updated_at": now - timedelta(minutes=age_min),
    }


def insert_rows(conn, rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    if rows:
        conn.execute(sa.insert(post_queue), rows)
    return [r["id"] for r in rows]
