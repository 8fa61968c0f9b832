"""post_queue: names from spec 1.2/1.3, idempotency (DESIGN decision 5), enqueue.

The Queue Monitor's reads and the manual retry live here too; the worker's claim/record
cycle lives in worker/ and uses these names.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from lib.schema import post_queue

ACTION_TYPES = ("reply_comment", "reply_dm", "send_dm", "publish_post", "repost_ugc")
STATUSES = ("pending", "processing", "sent", "failed", "dlq")
RETRYABLE_STATUSES = ("failed", "dlq")  # manual retry, DESIGN decision 3
ERROR_CATEGORIES = ("auth_failure", "permanent", "rate_limit", "transient", "unknown")

# Spec 4.2: the audit event written when an action of each type succeeds.
SUCCESS_EVENT = {
    "publish_post": ("post_published", "publish", "instagram_post"),
    "reply_comment": ("comment_replied", "reply", "instagram_comment"),
    "reply_dm": ("dm_sent", "send", "instagram_dm"),
    "send_dm": ("dm_sent", "send", "instagram_dm"),
    "repost_ugc": ("ugc_reposted", "repost", "ugc_content"),
}

# publish_post writes creation_id into its payload after step one; it is not part of identity.
_NOT_IDENTITY = {"creation_id"}


def idempotency_key(business_account_id: uuid.UUID | str, action_type: str, payload: dict[str, Any]) -> str:
    """SHA-256 of account, action type and canonical payload (sorted keys, no whitespace)."""
    identity = {k: v for k, v in (payload or {}).items() if k not in _NOT_IDENTITY or action_type == "repost_ugc"}
    canonical = json.dumps(
        {"account": str(business_account_id), "action_type": action_type, "payload": identity},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def enqueue(
    conn: sa.Connection,
    *,
    business_account_id: uuid.UUID,
    action_type: str,
    payload: dict[str, Any],
    now: datetime,
) -> uuid.UUID | None:
    """Queue an action once: a second enqueue of the same action is a no-op (returns None)."""
    if action_type not in ACTION_TYPES:
        raise ValueError(f"unknown action_type {action_type!r}; expected one of {', '.join(ACTION_TYPES)}")
    row_id = uuid.uuid4()
    values = {
        "id": row_id,
        "business_account_id": business_account_id,
        "action_type": action_type,
        "payload": payload,
        "idempotency_key": idempotency_key(business_account_id, action_type, payload),
        "status": "pending",
        "retry_count": 0,
        "created_at": now,
        "updated_at": now,
    }
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        post_queue
    )
    result = conn.execute(insert.values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"]))
    return row_id if result.rowcount else None
