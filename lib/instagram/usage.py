"""graph_usage (ours): the latest Graph usage per account and for the app, and publishing quotas.

The worker writes what Graph's usage headers and content_publishing_limit said; the claim
(lib.queue.holds.held_back_clause) skips a scope until its regain_at; the Accounts page reads it.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.core.db import upsert
from lib.core.schema import graph_usage as gu
from lib.core.schema import post_queue as pq
from lib.core.timeutil import as_utc
from lib.instagram.errors import Usage

APP = "app"
# A scope at or over 100 % without a stated time to regain access is left alone this long.
DEFAULT_PAUSE = timedelta(minutes=5)
QUOTA_WINDOW = timedelta(hours=24)  # content_publishing_limit's moving window (config.quota_duration)
QUOTA_RECHECK = timedelta(minutes=15)  # when our own rows cannot tell when the window frees up


def scope_of(account_id: uuid.UUID | None) -> str:
    return APP if account_id is None else str(account_id)


def _upsert(conn: sa.Connection, scope: str, values: dict[str, Any]) -> None:
    upsert(conn, gu, key="scope", values={"scope": scope, **values}, update=values)


def regain_at(usage: Usage, now: datetime) -> datetime | None:
    """When calls for this scope may start again: None while it is under its limit."""
    if usage.regain_access_minutes:
        return now + timedelta(minutes=usage.regain_access_minutes)
    return now + DEFAULT_PAUSE if usage.peak >= 100 else None


def record_usage(conn: sa.Connection, *, account_id: uuid.UUID | None, usage: Usage, now: datetime) -> None:
    _upsert(conn, scope_of(account_id), {
        "business_account_id": account_id, "usage_type": usage.usage_type, "call_count": usage.call_count,
        "total_cputime": usage.total_cputime, "total_time": usage.total_time,
        "regain_access_minutes": usage.regain_access_minutes, "regain_at": regain_at(usage, now), "seen_at": now,
    })


def record_quota(conn: sa.Connection, *, account_id: uuid.UUID, usage: int, total: int | None,
                 duration_s: int | None, now: datetime) -> None:
    _upsert(conn, scope_of(account_id), {"business_account_id": account_id, "quota_usage": usage,
                                         "quota_total": total, "quota_duration_s": duration_s, "quota_seen_at": now})


def record_token(conn: sa.Connection, *, account_id: uuid.UUID, expires_at: datetime | None, now: datetime) -> None:
    _upsert(conn, scope_of(account_id), {"business_account_id": account_id, "token_expires_at": expires_at,
                                         "token_checked_at": now})


def usage_rows(conn: sa.Connection) -> dict[str, dict[str, Any]]:
    """{scope: row as a dict} for every scope seen (the Accounts page, the metrics)."""
    out = {}
    for r in conn.execute(sa.select(gu)):
        d = dict(r._mapping)
        for k in ("regain_at", "seen_at", "quota_seen_at", "token_expires_at", "token_checked_at"):
            d[k] = as_utc(d[k])
        out[d["scope"]] = d
    return out


def quota_free_at(conn: sa.Connection, *, account_id: uuid.UUID, total: int | None, now: datetime) -> datetime:
    """When the moving 24 h window next has room, from our own published rows: the publish that
    leaves the window first. Posts made outside this queue are invisible here; then (or when
    nothing of ours is in the window) check again after QUOTA_RECHECK."""
    since = now - QUOTA_WINDOW
    times = [as_utc(t) for (t,) in conn.execute(
        sa.select(pq.c.updated_at).where(pq.c.business_account_id == account_id, pq.c.status == "sent",
                                         pq.c.action_type.in_(("publish_post", "repost_ugc")),
                                         pq.c.updated_at > since)
        .order_by(pq.c.updated_at))]
    if total and len(times) >= total:
        return max(times[len(times) - total] + QUOTA_WINDOW, now + timedelta(seconds=1))
    return now + QUOTA_RECHECK
