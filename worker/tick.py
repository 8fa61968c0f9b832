"""One worker tick: rescue, claim, execute, record (the port of post-fallback.js).

Claim token: a claimed row's updated_at is set to the claim time and every later transition
is conditional on `status = 'processing' AND updated_at = <that time>`. So a row that another
worker rescued and re-claimed after our lease ran out is never overwritten by us.

At-least-once: Instagram may have performed an action whose answer we never recorded (the
worker died between the HTTP answer and the commit, or the call timed out after Instagram
acted). Such a row is retried after the lease; that is the one window in which an action can
happen twice. publish_post narrows it: the container id is stored before publishing, so a
retry publishes the same container (Graph refuses to publish a container twice).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.alerts import open_or_update_alert
from lib.audit import log_audit
from lib.db import UNAVAILABLE_ERRORS
from lib.ig_errors import Category, GraphError, categorize_ig_error, is_content_rejection, next_attempt
from lib.instagram import AccountCreds, GraphClient, InvalidPayload, redact
from lib.queue import SUCCESS_EVENT, idempotency_key
from lib.schema import instagram_business_accounts as accounts
from lib.schema import post_queue as pq
from lib.settings import Settings, mask_url
from lib.timeutil import iso, utcnow
from lib.worker_ticks import prune_ticks, record_tick_finish, record_tick_start

log = logging.getLogger("worker")

CONTENT_ACTIONS = ("publish_post", "repost_ugc")


class LostClaim(Exception):
    """The row is no longer ours (rescued by another worker after our lease ran out)."""


@dataclass
class Claimed:
    id: uuid.UUID
    business_account_id: uuid.UUID | None
    action_type: str
    payload: dict[str, Any]
    idempotency_key: str | None
    retry_count: int
    prev_status: str
    prev_updated_at: datetime | None
    token: datetime  # updated_at we wrote when claiming
    account: AccountCreds | None = None
    blocked_reason: str | None = None  # set when this row's failure stops the account for this tick


@dataclass
class TickResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    dlq: int = 0
    rescued: int = 0
    released: int = 0
    error: str | None = None
    duration_s: float = 0.0
    outcomes: dict[str, str] = field(default_factory=dict)  # queue id -> status, for callers/tests

    def line(self) -> str:
        text = (f"tick claimed={self.claimed} sent={self.sent} failed={self.failed} dlq={self.dlq} "
                f"rescued={self.rescued} released={self.released} duration={self.duration_s:.2f}s")
        return text + (f" error={self.error}" if self.error else "")


@contextmanager
def write_txn(engine: Engine) -> Iterator[sa.Connection]:
    """A transaction that holds the write lock from its first read.

    PostgreSQL: row locks come from FOR UPDATE SKIP LOCKED in the queries. SQLite has no row
    locks: BEGIN IMMEDIATE takes the database write lock first, so the read-then-update of a
    claim cannot interleave with another worker's.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def _mine(row: Claimed):
    return sa.and_(pq.c.id == row.id, pq.c.status == "processing", pq.c.updated_at == row.token)


# -- rescue ----------------------------------------------------------------------------------

def rescue_stale(engine: Engine, *, now: datetime, lease_s: int, max_retries: int, limit: int = 500) -> int:
    """Rows left in processing longer than the lease count as a failed attempt of unknown outcome.

    They are due again at once (next_retry_at = now): the lease itself was the wait, and it is
    longer than the first backoff steps. Exhausted rows go to dlq.
    """
    cutoff = now - timedelta(seconds=lease_s)
    with write_txn(engine) as conn:
        stale = conn.execute(
            sa.select(pq.c.id, pq.c.business_account_id, pq.c.action_type, pq.c.retry_count, pq.c.updated_at)
            .where(pq.c.status == "processing", pq.c.updated_at < cutoff)
            .order_by(pq.c.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=pq)
        ).all()
        rescued = 0
        message = (f"processing lease of {lease_s}s expired: the worker stopped during the attempt, "
                   "so Instagram may or may not have received it")
        for r in stale:
            decision = next_attempt(r.retry_count or 0, Category(True, "unknown"), max_retries=max_retries)
            values = dict(status=decision.status, retry_count=decision.retry_count, error=message,
                          error_category="unknown", updated_at=now,
                          next_retry_at=now if decision.status == "failed" else None)
            done = conn.execute(
                sa.update(pq).where(pq.c.id == r.id, pq.c.status == "processing", pq.c.updated_at == r.updated_at)
                .values(**values)
            ).rowcount
            if not done:
                continue
            rescued += 1
            log.warning("row %s %s rescued after lease -> %s (retry_count=%s)", r.id, r.action_type,
                        decision.status, decision.retry_count)
            if decision.status == "dlq":
                _audit_dlq(conn, r.id, r.business_account_id, r.action_type, "unknown", message,
                           decision.retry_count, None, now)
    return rescued


# -- claim -----------------------------------------------------------------------------------

def claim(engine: Engine, *, now: datetime, batch_size: int) -> list[Claimed]:
    """Up to batch_size due rows, oldest due first, of accounts not disconnected -> processing.

    Due: pending, or failed with next_retry_at <= now (a failed row without next_retry_at,
    written by someone else's tool, counts as due).
    """
    due = sa.or_(
        pq.c.status == "pending",
        sa.and_(pq.c.status == "failed", sa.or_(pq.c.next_retry_at.is_(None), pq.c.next_retry_at <= now)),
    )
    disconnected = sa.exists().where(accounts.c.id == pq.c.business_account_id, accounts.c.is_connected.is_(False))
    with write_txn(engine) as conn:
        rows = conn.execute(
            sa.select(pq.c.id, pq.c.business_account_id, pq.c.action_type, pq.c.payload, pq.c.idempotency_key,
                      pq.c.retry_count, pq.c.status, pq.c.updated_at)
            .where(due, ~disconnected)
            .order_by(sa.func.coalesce(pq.c.next_retry_at, pq.c.created_at), pq.c.created_at, pq.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True, of=pq)
        ).all()
        if not rows:
            return []
        conn.execute(sa.update(pq).where(pq.c.id.in_([r.id for r in rows])).values(status="processing", updated_at=now))
        account_ids = {r.business_account_id for r in rows if r.business_account_id is not None}
        creds = {
            a.id: AccountCreds(a.id, a.instagram_business_id, a.access_token)
            for a in conn.execute(
                sa.select(accounts.c.id, accounts.c.instagram_business_id, accounts.c.access_token)
                .where(accounts.c.id.in_(account_ids))
            )
        } if account_ids else {}
    return [
        Claimed(r.id, r.business_account_id, r.action_type, dict(r.payload or {}), r.idempotency_key,
                r.retry_count or 0, r.status, r.updated_at, now, creds.get(r.business_account_id))
        for r in rows
    ]


def release(engine: Engine, rows: list[Claimed]) -> int:
    """Put claimed rows back as they were (graceful stop; account blocked during this tick)."""
    if not rows:
        return 0
    n = 0
    with write_txn(engine) as conn:
        for row in rows:
            n += conn.execute(
                sa.update(pq).where(_mine(row)).values(status=row.prev_status, updated_at=row.prev_updated_at)
            ).rowcount
    return n


def sent_twins(engine: Engine, rows: list[Claimed]) -> dict[uuid.UUID, str | None]:
    """Claimed rows whose action was already sent by another row: same stored idempotency_key
    (possible where the key is not unique) or same key recomputed from account/type/payload
    (rows written by a tool that computes keys differently). -> {row id: twin's instagram_id}."""
    if not rows:
        return {}
    keys_of: dict[uuid.UUID, set[str]] = {}
    for row in rows:
        keys = {row.idempotency_key} if row.idempotency_key else set()
        if row.business_account_id is not None:
            keys.add(idempotency_key(row.business_account_id, row.action_type, row.payload))
        keys_of[row.id] = keys
    all_keys = set().union(*keys_of.values())
    if not all_keys:
        return {}
    with engine.connect() as conn:
        sent = {
            r.idempotency_key: r.instagram_id
            for r in conn.execute(
                sa.select(pq.c.idempotency_key, pq.c.instagram_id).where(
                    pq.c.status == "sent", pq.c.idempotency_key.in_(sorted(all_keys)),
                    pq.c.id.not_in([r.id for r in rows]))
            )
        }
    return {rid: sent[k] for rid, keys in keys_of.items() for k in keys if k in sent}


# -- record ----------------------------------------------------------------------------------

def _details(row: Claimed, **extra: Any) -> dict[str, Any]:
    return {"business_account_id": str(row.business_account_id) if row.business_account_id else None,
            "queue_id": str(row.id), "action_type": row.action_type, **extra}


def _audit_dlq(conn, queue_id, account_id, action_type, category, message, retry_count, code, now) -> None:
    log_audit(conn, event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
              resource_id=str(queue_id), now=now, success=False, error_message=message,
              details={"business_account_id": str(account_id) if account_id else None, "queue_id": str(queue_id),
                       "action_type": action_type, "error_category": category, "retry_count": retry_count,
                       "error_code": code})


def store_creation_id(engine: Engine, row: Claimed, creation_id: str, *, now: datetime) -> None:
    """Persist the container before publishing it, so a retry publishes this one (decision 5).
    Also renews the claim token (the lease counts from here)."""
    payload = {**row.payload, "creation_id": creation_id}
    with write_txn(engine) as conn:
        done = conn.execute(sa.update(pq).where(_mine(row)).values(payload=payload, updated_at=now)).rowcount
    if not done:
        raise LostClaim(f"row {row.id} is no longer ours")
    row.payload, row.token = payload, now


def renew_claim(engine: Engine, row: Claimed, *, now: datetime) -> bool:
    """Move the claim's updated_at forward so a long batch does not outlive its lease and get
    rescued (and executed a second time) by another worker while this one still holds it."""
    with write_txn(engine) as conn:
        done = conn.execute(sa.update(pq).where(_mine(row)).values(updated_at=now)).rowcount
    if done:
        row.token = now
    return bool(done)


def record_sent(engine: Engine, row: Claimed, instagram_id: str | None, *, now: datetime, twin: bool = False) -> bool:
    with write_txn(engine) as conn:
        done = conn.execute(
            sa.update(pq).where(_mine(row)).values(status="sent", instagram_id=instagram_id, error=None,
                                                   error_category=None, next_retry_at=None, updated_at=now)
        ).rowcount
        if done and not twin:  # a twin's success was audited when the twin was sent
            event_type, action, resource_type = SUCCESS_EVENT[row.action_type]
            log_audit(conn, event_type=event_type, action=action, resource_type=resource_type,
                      resource_id=instagram_id, now=now, success=True,
                      details=_details(row, instagram_id=instagram_id, retry_count=row.retry_count,
                                       payload=row.payload))
    return bool(done)


def record_failure(engine: Engine, row: Claimed, exc: BaseException, category: Category, message: str, *,
                   now: datetime, max_retries: int) -> str | None:
    """Store the failed attempt and its side effects (audit, alerts, disconnect). -> new status."""
    decision = next_attempt(row.retry_count, category, max_retries=max_retries)
    code = exc.code if isinstance(exc, GraphError) else None
    subcode = exc.subcode if isinstance(exc, GraphError) else None
    with write_txn(engine) as conn:
        done = conn.execute(
            sa.update(pq).where(_mine(row)).values(
                status=decision.status, retry_count=decision.retry_count, error=message,
                error_category=category.error_category, updated_at=now,
                next_retry_at=now + decision.delay if decision.delay is not None else None)
        ).rowcount
        if not done:
            return None
        alert_details = {"queue_id": str(row.id), "action_type": row.action_type, "last_error": message,
                         "error_code": code, "error_subcode": subcode, "retry_count": decision.retry_count,
                         "occurred_at": iso(now), "source": "worker"}
        account_id = row.business_account_id
        if category.error_category == "auth_failure" and account_id is not None:
            flipped = conn.execute(
                sa.update(accounts).where(accounts.c.id == account_id, accounts.c.is_connected.is_not(False))
                .values(is_connected=False, updated_at=now)
            ).rowcount
            if flipped:
                log_audit(conn, event_type="auth_failure", action="disconnect",
                          resource_type="instagram_business_accounts", resource_id=str(account_id), now=now,
                          success=False, error_message=message, details=_details(row, error_code=code))
            open_or_update_alert(conn, alert_type="auth_failure", business_account_id=account_id, now=now,
                                 message=f"Instagram auth failure, account disconnected: {message}",
                                 details=alert_details)
        elif category.error_category == "rate_limit" and account_id is not None:
            if category.retry_after is not None:
                alert_details["retry_after_s"] = int(category.retry_after.total_seconds())
            open_or_update_alert(conn, alert_type="rate_limit", business_account_id=account_id, now=now,
                                 message=f"Instagram rate limit: {message}", details=alert_details)
        elif (category.error_category == "permanent" and row.action_type in CONTENT_ACTIONS
              and is_content_rejection(exc)):
            open_or_update_alert(conn, alert_type="content_violation", business_account_id=account_id, now=now,
                                 message=f"Instagram rejected the content: {message}", details=alert_details)
        if decision.status == "dlq":
            _audit_dlq(conn, row.id, account_id, row.action_type, category.error_category, message,
                       decision.retry_count, code, now)
    return decision.status


# -- the tick --------------------------------------------------------------------------------

def run_tick(engine: Engine, settings: Settings, client: GraphClient, *, stop: threading.Event | None = None,
             now_fn: Callable[[], datetime] = utcnow) -> TickResult:
    """One tick. Never raises for a lost database: the result carries the error instead."""
    stop = stop or threading.Event()
    result = TickResult()
    began = time.monotonic()
    tick_id = None
    try:
        with engine.begin() as conn:
            tick_id = record_tick_start(conn, now=now_fn(), host=socket.gethostname(), pid=os.getpid())
        result.rescued = rescue_stale(engine, now=now_fn(), lease_s=settings.processing_lease_s,
                                      max_retries=settings.max_retries)
        rows = [] if stop.is_set() else claim(engine, now=now_fn(), batch_size=settings.batch_size)
        result.claimed = len(rows)
        _execute_batch(engine, settings, client, rows, result, stop, now_fn)
    except UNAVAILABLE_ERRORS as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        result.error = f"database unavailable at {mask_url(settings.database_url)}: {reason}"
    result.duration_s = time.monotonic() - began
    if tick_id is not None:
        try:
            with engine.begin() as conn:
                record_tick_finish(conn, tick_id, now=now_fn(), claimed=result.claimed, sent=result.sent,
                                   failed=result.failed, dlq=result.dlq, rescued=result.rescued, error=result.error)
                prune_ticks(conn, before=now_fn() - timedelta(days=7))
        except UNAVAILABLE_ERRORS:
            pass  # the tick line below already says the database went away
    (log.error if result.error else log.info)(result.line())
    return result


def _execute_batch(engine, settings, client, rows, result, stop, now_fn) -> None:
    twins = sent_twins(engine, rows)
    blocked: dict[Any, str] = {}  # account id -> why we stop using it in this tick
    for i, row in enumerate(rows):
        if stop.is_set():
            result.released += release(engine, rows[i:])
            log.info("stop requested: %d claimed rows put back", len(rows) - i)
            return
        if row.business_account_id in blocked:
            result.released += release(engine, [row])
            log.info("row %s %s put back: account %s", row.id, row.action_type, blocked[row.business_account_id])
            continue
        now = now_fn()
        if now - row.token > timedelta(seconds=settings.processing_lease_s / 2) and not renew_claim(engine, row, now=now):
            log.warning("row %s %s: claim lost before execution; skipped", row.id, row.action_type)
            continue
        if row.id in twins:
            if record_sent(engine, row, twins[row.id], now=now_fn(), twin=True):
                result.sent += 1
                result.outcomes[str(row.id)] = "sent"
                log.info("row %s %s -> sent without calling Instagram (idempotency twin already sent)",
                         row.id, row.action_type)
            continue
        status = _execute_one(engine, settings, client, row, now_fn)
        if status is None:
            continue
        result.outcomes[str(row.id)] = status
        if status == "sent":
            result.sent += 1
        elif status == "dlq":
            result.dlq += 1
        else:
            result.failed += 1
        if row.blocked_reason:
            blocked[row.business_account_id] = row.blocked_reason


def _execute_one(engine, settings, client, row: Claimed, now_fn) -> str | None:
    token = row.account.access_token if row.account else None
    try:
        if row.account is None:
            raise InvalidPayload(f"business account {row.business_account_id} not found")
        outcome = client.execute(row.action_type, row.payload, row.account,
                                 on_container=lambda cid: store_creation_id(engine, row, cid, now=now_fn()))
    except LostClaim as exc:
        log.warning("row %s %s: %s; leaving it to its new owner", row.id, row.action_type, exc)
        return None
    except UNAVAILABLE_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of one row is recorded on that row
        if isinstance(exc, InvalidPayload):
            category = Category(False, "permanent")
        elif isinstance(exc, GraphError):
            category = categorize_ig_error(exc)
        else:  # a bug or an unexpected answer: retry per schedule rather than lose the row
            category = Category(True, "unknown")
        message = redact(str(exc) if isinstance(exc, (GraphError, InvalidPayload)) else f"{type(exc).__name__}: {exc}",
                         token)[:1000]
        status = record_failure(engine, row, exc, category, message, now=now_fn(), max_retries=settings.max_retries)
        if status is None:
            log.warning("row %s %s: no longer ours when recording the failure", row.id, row.action_type)
            return None
        if category.error_category in ("auth_failure", "rate_limit"):
            row.blocked_reason = f"hit {category.error_category} in this tick"
        retry = f" retry {row.retry_count + 1}/{settings.max_retries}" if status == "failed" else ""
        log.info("row %s %s -> %s (%s)%s: %s", row.id, row.action_type, status, category.error_category, retry, message)
        return status
    if record_sent(engine, row, outcome.instagram_id, now=now_fn()):
        log.info("row %s %s -> sent instagram_id=%s", row.id, row.action_type, outcome.instagram_id)
        return "sent"
    log.warning("row %s %s: sent to Instagram (id %s) but the row was no longer ours", row.id, row.action_type,
                outcome.instagram_id)
    return None
