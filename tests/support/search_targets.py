"""Rows that make a literal-search check able to fail: one row whose text contains the search
string exactly, and a decoy that the same string would match if its LIKE wildcards (`%`, `_`) or
the backslash were not escaped. A literal search finds exactly the first."""
from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.audit import audit_row
from lib.core.schema import audit_log, instagram_business_accounts, post_queue


def decoy_of(needle: str) -> str:
    assert "%_" in needle, "the needle must contain LIKE wildcards"
    return needle.replace("%_", "zz")


def plant_search_targets(engine, needle: str, *, username: str, now) -> dict[str, uuid.UUID]:
    """A dlq row and an audit row (of `username`'s account, two hours old: older than the rows a test
    opens as "the newest") containing `needle`, and one decoy of each."""
    with engine.begin() as conn:
        acc = conn.execute(sa.select(instagram_business_accounts.c.id)
                           .where(instagram_business_accounts.c.username == username)).scalar_one()
        ids = {}
        for key, text in (("queue_hit", needle), ("queue_decoy", decoy_of(needle))):
            ids[key] = uuid.uuid4()
            conn.execute(sa.insert(post_queue).values(
                id=ids[key], business_account_id=acc, action_type="send_dm",
                payload={"recipient_id": "1", "message_text": key}, idempotency_key=ids[key].hex, status="dlq",
                retry_count=5, error=f"Graph said: {text} (end)", error_category="permanent",
                created_at=now - timedelta(hours=2, minutes=1), updated_at=now - timedelta(hours=2)))
        for key, text in (("audit_hit", needle), ("audit_decoy", decoy_of(needle))):
            row = audit_row(event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
                            resource_id=key, now=now - timedelta(hours=2), success=False,
                            error_message=f"Graph said: {text} (end)", details={"business_account_id": str(acc)})
            ids[key] = row["id"]
            conn.execute(sa.insert(audit_log).values(**row))
    return ids
