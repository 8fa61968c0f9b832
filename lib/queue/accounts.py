"""instagram_business_accounts: the columns we rely on, never the access token for display.

Account health for the Accounts page: connected or not (since when, and the auth
failure that disconnected it), pauses, queue counts, the last success and last failure per
action type, Graph usage and the publishing quota the worker recorded (graph_usage), the
token's expiry when debug_token could tell. The access token is never even selected.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.core.db import without_jit
from lib.core.schema import ACTION_TYPES, audit_log
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.schema import post_queue as pq
from lib.core.timeutil import as_utc
from lib.instagram.usage import usage_rows
from lib.queue.holds import claimable_clause
from lib.queue.reads import active_pauses
from lib.queue.rules import DLQ, FAILED, PENDING, PROCESSING, SENT, Pause, active_clause, due_clause


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    username: str
    is_connected: bool


def list_accounts(conn: sa.Connection) -> list[Account]:
    rows = conn.execute(
        sa.select(accounts.c.id, accounts.c.username, accounts.c.is_connected).order_by(accounts.c.username)
    )
    return [Account(r.id, r.username or str(r.id), bool(r.is_connected)) for r in rows]


USAGE_WARN = 80.0  # % of a Graph usage figure above which the card warns


@dataclass(frozen=True)
class AccountHealth:
    id: uuid.UUID
    username: str | None
    instagram_business_id: str | None
    is_connected: bool
    disconnected_at: datetime | None = None
    disconnect_reason: str | None = None
    pauses: tuple[Pause, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # pending, due, failed, dlq, processing
    last_success: dict[str, datetime] = field(default_factory=dict)  # action_type -> when
    last_failure: dict[str, tuple[datetime, str | None, str]] = field(default_factory=dict)  # -> (when, error, status)
    usage: dict[str, Any] | None = None  # the graph_usage row of this account
    app_usage: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.username or str(self.id)

    @property
    def paused(self) -> bool:
        return bool(self.pauses)

    @property
    def usage_peak(self) -> float | None:
        if not self.usage:
            return None
        vals = [self.usage.get(k) for k in ("call_count", "total_cputime", "total_time")]
        vals = [float(v) for v in vals if v is not None]
        return max(vals) if vals else None

    @property
    def usage_warning(self) -> bool:
        return (self.usage_peak or 0) >= USAGE_WARN

    @property
    def quota(self) -> tuple[int, int | None, datetime | None] | None:
        if not self.usage or self.usage.get("quota_usage") is None:
            return None
        return int(self.usage["quota_usage"]), self.usage.get("quota_total"), self.usage.get("quota_seen_at")


def account_health(conn: sa.Connection, *, now: datetime, account_id: uuid.UUID | None = None) -> list[AccountHealth]:
    """One AccountHealth per business account (or the one asked for), by username."""
    stmt = sa.select(accounts.c.id, accounts.c.username, accounts.c.instagram_business_id, accounts.c.is_connected).order_by(
        accounts.c.username, accounts.c.id)
    if account_id is not None:
        stmt = stmt.where(accounts.c.id == account_id)
    found = conn.execute(stmt).all()
    if not found:
        return []
    ids = [a.id for a in found]
    # every account (the default view): no id list, so the partial index of active rows serves the counts
    scope = pq.c.business_account_id.in_(ids) if account_id is not None else sa.true()

    counts: dict[Any, dict[str, int]] = {a: {} for a in ids}
    # The claimable count is its own statement over the due rows: inside this one, the hold conditions'
    # estimated cost made the planner walk every row of post_queue in account order (3 s at 5M rows).
    without_jit(conn)
    claimable = dict(conn.execute(
        sa.select(pq.c.business_account_id, sa.func.count()).where(scope, claimable_clause(now))
        .group_by(pq.c.business_account_id)).all())
    for r in conn.execute(
        sa.select(pq.c.business_account_id,
                  sa.func.count().filter(pq.c.status == PENDING).label("pending"),
                  sa.func.count().filter(due_clause(now)).label("due_any"),
                  sa.func.count().filter(pq.c.status == FAILED).label("failed"),
                  sa.func.count().filter(pq.c.status == DLQ).label("dlq"),
                  sa.func.count().filter(pq.c.status == PROCESSING).label("processing"))
        .where(scope, active_clause())
        .group_by(pq.c.business_account_id)
    ):
        if r.business_account_id in counts:
            due = int(claimable.get(r.business_account_id, 0))
            counts[r.business_account_id] = {"pending": r.pending, "due": due, "held_back": r.due_any - due,
                                             "failed": r.failed, "dlq": r.dlq, "processing": r.processing}

    # The last success and the last failure per (account, action type): one index probe each
    # (ix_post_queue_account_outcome, newest first, LIMIT 1) instead of a GROUP BY over every sent row.
    def newest(action_type: str, *status_terms):
        return (sa.select(pq.c.id, pq.c.updated_at)
                .where(pq.c.business_account_id == accounts.c.id, pq.c.action_type == action_type, *status_terms)
                .order_by(pq.c.updated_at.desc(), pq.c.id.desc()).limit(1))

    probes = []
    for t in ACTION_TYPES:
        probes.append(newest(t, pq.c.status == SENT).with_only_columns(pq.c.updated_at)
                      .scalar_subquery().label(f"s_{t}"))
        probes.append(newest(t, pq.c.status.in_((FAILED, DLQ))).with_only_columns(pq.c.id)
                      .scalar_subquery().label(f"f_{t}"))
    last_success: dict[Any, dict[str, datetime]] = {a: {} for a in ids}
    failure_ids: dict[Any, tuple[Any, str]] = {}
    for r in conn.execute(sa.select(accounts.c.id, *probes).where(accounts.c.id.in_(ids))):
        for t in ACTION_TYPES:
            if r._mapping[f"s_{t}"] is not None:
                last_success[r.id][t] = as_utc(r._mapping[f"s_{t}"])
            if r._mapping[f"f_{t}"] is not None:
                failure_ids[r._mapping[f"f_{t}"]] = (r.id, t)
    last_failure: dict[Any, dict[str, tuple]] = {a: {} for a in ids}
    if failure_ids:
        for r in conn.execute(sa.select(pq.c.id, pq.c.updated_at, pq.c.error, pq.c.status)
                              .where(pq.c.id.in_(list(failure_ids)))):
            acc_id, t = failure_ids[r.id]
            last_failure[acc_id][t] = (as_utc(r.updated_at), r.error, r.status)

    disconnect: dict[str, tuple[datetime, str | None]] = {}
    # why (and since when) only for the accounts that are disconnected: usually none, so no query
    disconnected = [str(a_.id) for a_ in found if a_.is_connected is False]
    a = audit_log
    d_ranked = (sa.select(a.c.resource_id, a.c.created_at, a.c.error_message,
                          sa.func.row_number().over(partition_by=a.c.resource_id,
                                                    order_by=a.c.created_at.desc()).label("rn"))
                .where(a.c.event_type == "auth_failure", a.c.resource_type == "instagram_business_accounts",
                       a.c.resource_id.in_(disconnected)).subquery())
    for r in (conn.execute(sa.select(d_ranked).where(d_ranked.c.rn == 1)) if disconnected else ()):
        disconnect[r.resource_id] = (as_utc(r.created_at), r.error_message)

    usage = usage_rows(conn)
    pauses = active_pauses(conn, now=now)
    out = []
    for a_ in found:
        mine = tuple(p for p in pauses if p.business_account_id in (None, a_.id))
        dis = disconnect.get(str(a_.id)) if a_.is_connected is False else None
        out.append(AccountHealth(
            a_.id, a_.username, a_.instagram_business_id, a_.is_connected is not False,
            dis[0] if dis else None, dis[1] if dis else None, mine,
            {"pending": 0, "due": 0, "held_back": 0, "failed": 0, "dlq": 0, "processing": 0, **counts[a_.id]},
            {k: last_success[a_.id][k] for k in ACTION_TYPES if k in last_success[a_.id]},
            {k: last_failure[a_.id][k] for k in ACTION_TYPES if k in last_failure[a_.id]},
            usage.get(str(a_.id)), usage.get("app")))
    return out
