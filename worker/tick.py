"""One worker tick: rescue, claim, execute, record. This module orchestrates: the rows' SQL is in
lib/queue/store.py (with the claim token that keeps a rescued row from being overwritten), the Graph
calls in worker/dispatch.py, the periodic checks in worker/checks.py.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from lib.activity.worker_ticks import prune_ticks, record_tick_finish, record_tick_start
from lib.core.db import UNAVAILABLE_ERRORS, error_line
from lib.core.logs import fields
from lib.core.redact import redact
from lib.core.settings import Settings, mask_url
from lib.core.timeutil import iso, utcnow
from lib.instagram import account_holds
from lib.instagram import usage as graph_usage
from lib.instagram.client import GraphClient, InvalidPayload
from lib.instagram.errors import HOLD, QUOTA, Category, GraphError, categorize_ig_error, maybe_performed
from lib.instagram.publishing import ContainerFailed, ContainerRetryable, Sent, Wait
from lib.queue.reads import sent_twins
from lib.queue.review import WORKER_PASS_EVERY as REVIEW_PASS_EVERY
from lib.queue.review import worker_pass as review_pass
from lib.queue.rules import CONTENT_ACTIONS, DLQ, FAILED, PENDING, SENT, Claimed, LostClaim
from lib.queue.store import (
    claim,
    prune_attempts,
    record_failure,
    record_hold,
    record_sent,
    record_wait,
    refresh_rollup,
    release,
    renew_claim,
    rescue_stale,
)
from worker.checks import check_graph_version, check_tokens
from worker.dispatch import GraphBudget, LookFirstFailed, perform

log = logging.getLogger("worker")


@dataclass
class TickResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    dlq: int = 0
    rescued: int = 0
    released: int = 0
    waiting: int = 0
    error: str | None = None
    duration_s: float = 0.0
    outcomes: dict[str, str] = field(default_factory=dict)  # queue id -> status, for callers/tests

    def line(self) -> str:
        text = (f"tick claimed={self.claimed} sent={self.sent} failed={self.failed} dlq={self.dlq} "
                f"waiting={self.waiting} rescued={self.rescued} released={self.released} "
                f"duration={self.duration_s:.2f}s")
        return text + (f" error={self.error}" if self.error else "")


# -- what a process carries between ticks ----------------------------------------------------

@dataclass
class TickMemory:
    """What one worker process carries from one tick to the next; the Worker holds one for its database.

    `untried` and `sent`: what a batch could not write because the database went away mid-batch: claimed
    rows this process never attempted, and rows Instagram accepted whose `sent` was not recorded. The next
    tick that reaches the database finishes them, instead of leaving them in processing until the lease
    (10 min) expires and marks them uncertain, which for a DM means sending it again. A never-attempted
    row made no Graph call, so putting it back is safe; a failed or waiting attempt whose record was lost
    is left to the lease (docs/worker.md). Kept only in this process: if it ends, the lease rules.

    `review_pass_at`: when the review pass last ran, so back-to-back ticks (a backlog) skip it."""

    untried: list[Claimed] = field(default_factory=list)
    sent: list[tuple[Claimed, Sent, datetime]] = field(default_factory=list)
    review_pass_at: datetime | None = None

    def review_pass_due(self, now: datetime, every: timedelta = REVIEW_PASS_EVERY) -> bool:
        last = self.review_pass_at
        if last is not None and timedelta(0) <= now - last < every:
            return False
        self.review_pass_at = now
        return True


def _finish_left_over(engine: Engine, left: TickMemory) -> tuple[int, int]:
    """-> (rows put back, sent rows recorded) of what the last batch left when the database went away."""
    put_back = release(engine, left.untried) if left.untried else 0
    left.untried = []
    recorded = 0
    while left.sent:
        row, outcome, at = left.sent[0]
        if record_sent(engine, row, outcome.instagram_id, now=at, note=outcome.note):
            recorded += 1
            log.info("row %s %s -> sent instagram_id=%s (recorded after the database came back)", row.id,
                     row.action_type, outcome.instagram_id, extra=fields(row_id=row.id, action_type=row.action_type,
                                                                        outcome=SENT))
        left.sent.pop(0)
    if put_back:
        log.warning("%d rows claimed before the database went away, never attempted, put back", put_back)
    return put_back, recorded


def run_tick(engine: Engine, settings: Settings, client: GraphClient, *, stop: threading.Event | None = None,
             now_fn: Callable[[], datetime] = utcnow, memory: TickMemory | None = None) -> TickResult:
    """One tick. Never raises for a lost database: the result carries the error instead. `memory`: what
    this process carried over from its previous tick (a fresh one when not given)."""
    memory = memory if memory is not None else TickMemory()
    stop = stop or threading.Event()
    result = TickResult()
    began = time.monotonic()
    tick_id = None
    try:
        with engine.begin() as conn:
            tick_id = record_tick_start(conn, now=now_fn(), host=socket.gethostname(), pid=os.getpid())
        put_back, recorded = _finish_left_over(engine, memory)
        result.released += put_back
        result.sent += recorded
        result.rescued = rescue_stale(engine, now=now_fn(), lease_s=settings.processing_lease_s,
                                      max_retries=settings.max_retries)
        check_graph_version(engine, settings, now=now_fn())
        with engine.begin() as conn:
            account_holds.end_expired(conn, now=now_fn())
        if memory.review_pass_due(now_fn()):
            review_pass(engine, settings, now=now_fn())  # DMs whose window closed in review: expired, never sent late
        unreadable: list[uuid.UUID] = []
        rows = [] if stop.is_set() else claim(engine, now=now_fn(), batch_size=settings.batch_size,
                                              dead_lettered=unreadable)
        result.claimed = len(rows) + len(unreadable)
        result.dlq += len(unreadable)
        result.outcomes.update({str(i): DLQ for i in unreadable})
        budget = GraphBudget(engine, client, now_fn)
        client.observers.append(budget.observe)
        attempted: set[uuid.UUID] = set()
        try:
            _execute_batch(engine, settings, client, budget, rows, result, stop, now_fn, attempted, memory)
        except UNAVAILABLE_ERRORS:
            memory.untried.extend(r for r in rows if r.id not in attempted)
            raise
        finally:
            client.observers.remove(budget.observe)
        budget.flush()
        if not stop.is_set():
            check_tokens(engine, settings, client, now=now_fn())
        if not stop.is_set():
            refresh_rollup(engine, now=now_fn())
    except UNAVAILABLE_ERRORS as exc:
        reason = error_line(exc)
        result.error = f"database unavailable at {mask_url(settings.database_url)}: {reason}"
    result.duration_s = time.monotonic() - began
    if tick_id is not None:
        try:
            with engine.begin() as conn:
                record_tick_finish(conn, tick_id, now=now_fn(), claimed=result.claimed, sent=result.sent,
                                   failed=result.failed, dlq=result.dlq, rescued=result.rescued, error=result.error)
                prune_ticks(conn, before=now_fn() - timedelta(days=7))
                prune_attempts(conn, before=now_fn() - timedelta(days=30))
        except UNAVAILABLE_ERRORS:
            pass  # the tick line below already says the database went away
    (log.error if result.error else log.info)(result.line(), extra=fields(
        outcome="failed" if result.error else "ok", duration=round(result.duration_s, 3), claimed=result.claimed,
        sent=result.sent, failed=result.failed, dlq=result.dlq, waiting=result.waiting, rescued=result.rescued))
    return result


def _execute_batch(engine, settings, client, budget, rows, result, stop, now_fn, attempted: set,
                   memory: TickMemory) -> None:
    twins = sent_twins(engine, rows)
    blocked: dict[Any, str] = {}  # account id -> why we stop using it in this tick
    for i, row in enumerate(rows):
        if stop.is_set():
            result.released += release(engine, rows[i:])
            log.info("stop requested: %d claimed rows put back", len(rows) - i)
            return
        if budget.app_stopped:
            result.released += release(engine, rows[i:])
            log.warning("Graph calls stopped for this tick: %s; %d claimed rows put back", budget.app_stopped,
                        len(rows) - i)
            return
        reason = blocked.get(row.business_account_id) or budget.account_stopped.get(row.business_account_id)
        if reason:
            result.released += release(engine, [row])
            log.info("row %s %s put back: account %s", row.id, row.action_type, reason)
            continue
        now = now_fn()
        if now - row.token > timedelta(seconds=settings.processing_lease_s / 2) and not renew_claim(engine, row, now=now):
            log.warning("row %s %s: claim lost before execution; skipped", row.id, row.action_type)
            continue
        if row.id in twins:
            if record_sent(engine, row, twins[row.id], now=now_fn(), twin=True):
                result.sent += 1
                result.outcomes[str(row.id)] = SENT
                log.info("row %s %s -> sent without calling Instagram (idempotency twin already sent)",
                         row.id, row.action_type, extra=fields(row_id=row.id, action_type=row.action_type,
                                                               outcome=SENT))
            continue
        budget.account = row.account
        attempted.add(row.id)  # from here a Graph call may reach Instagram
        status = _execute_one(engine, settings, client, budget, row, now_fn, memory)
        if status is None:
            continue
        result.outcomes[str(row.id)] = status
        if status == SENT:
            result.sent += 1
        elif status == DLQ:
            result.dlq += 1
        elif status == PENDING:
            result.waiting += 1
        else:
            result.failed += 1
        if row.blocked_reason:
            blocked[row.business_account_id] = row.blocked_reason


def _execute_one(engine, settings, client, budget: GraphBudget, row: Claimed, now_fn, memory: TickMemory) -> str | None:
    token = row.account.access_token if row.account else None
    try:
        outcome = perform(client, settings, budget, engine, row, now_fn)
    except LostClaim as exc:
        log.warning("row %s %s: %s; leaving it to its new owner", row.id, row.action_type, exc)
        return None
    except UNAVAILABLE_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of one row is recorded on that row
        return _failed(engine, settings, budget, row, exc, token, now_fn)
    now = now_fn()
    if isinstance(outcome, Wait):
        return _waiting(engine, budget, row, outcome, now)
    try:
        done = record_sent(engine, row, outcome.instagram_id, now=now, note=outcome.note)
    except UNAVAILABLE_ERRORS:
        memory.sent.append((row, outcome, now))  # Instagram has it: record it, never send again
        raise
    if done:
        if row.action_type in CONTENT_ACTIONS and row.account is not None:
            budget.published(row.account)
        log.info("row %s %s -> sent instagram_id=%s%s", row.id, row.action_type, outcome.instagram_id,
                 f" ({outcome.note})" if outcome.note else "",
                 extra=fields(row_id=row.id, action_type=row.action_type, outcome=SENT))
        return SENT
    log.warning("row %s %s: sent to Instagram (id %s) but the row was no longer ours", row.id, row.action_type,
                outcome.instagram_id)
    return None


def _waiting(engine, budget: GraphBudget, row: Claimed, wait: Wait, now: datetime) -> str | None:
    alert = None
    if wait.kind == "quota" and row.account is not None:
        quota = budget.quota(row.account)
        with engine.connect() as conn:
            until = graph_usage.quota_free_at(conn, account_id=row.business_account_id,
                                              total=quota.total if quota else None, now=now)
        used = f" ({quota.usage} of {quota.total} posts in 24 h)" if quota and quota.total else ""
        alert = f"Instagram publishing limit reached{used}; publishing waits until {iso(until)}"
        row.blocked_reason = "publishing limit reached"
    else:
        until = now + timedelta(seconds=wait.check_after_s)
    if not record_wait(engine, row, wait, until, now=now, alert_message=alert):
        log.warning("row %s %s: no longer ours when recording the wait", row.id, row.action_type)
        return None
    log.info("row %s %s -> waiting until %s: %s", row.id, row.action_type, iso(until), wait.reason,
             extra=fields(row_id=row.id, action_type=row.action_type, outcome="waiting"))
    return PENDING


def _failed(engine, settings, budget: GraphBudget, row: Claimed, exc: BaseException, token, now_fn) -> str | None:
    ig_id = row.account.instagram_business_id if row.account else None
    if isinstance(exc, InvalidPayload):
        category = Category(False, "permanent")
    elif isinstance(exc, ContainerFailed):
        category = Category(False, "permanent")
    elif isinstance(exc, ContainerRetryable):
        category = Category(True, "transient")
    elif isinstance(exc, LookFirstFailed):  # whatever the read's error: retry later, never dead-letter blind
        category = categorize_ig_error(exc, business_id=ig_id)
        category = Category(True, category.error_category if category.retryable else "transient")
    elif isinstance(exc, GraphError):
        category = categorize_ig_error(exc, business_id=ig_id)
    else:  # a bug or an unexpected answer: retry per schedule rather than lose the row
        category = Category(True, "unknown")
    if category.action == QUOTA and row.account is not None:
        quota = budget.quota(row.account)
        with engine.connect() as conn:
            until = graph_usage.quota_free_at(conn, account_id=row.business_account_id,
                                              total=quota.total if quota else None, now=now_fn())
        category = Category(True, "rate_limit", until - now_fn(), QUOTA, category.doc)
    known = isinstance(exc, (GraphError, InvalidPayload, ContainerFailed, ContainerRetryable))
    message = redact(str(exc) if known else f"{type(exc).__name__}: {exc}", secrets=(token,))[:1000]
    if category.action == HOLD and row.business_account_id is not None and category.rule is not None:
        return record_hold(engine, row, exc, category, message, now_fn())
    # A call that got no answer after the request went out may have been performed: the next attempt
    # looks first (and a failed look keeps the row uncertain: record_failure).
    uncertain = isinstance(exc, GraphError) and not isinstance(exc, LookFirstFailed) and maybe_performed(exc)
    status = record_failure(engine, row, exc, category, message, now=now_fn(), max_retries=settings.max_retries,
                            uncertain=uncertain)
    if status is None:
        log.warning("row %s %s: no longer ours when recording the failure", row.id, row.action_type)
        return None
    if category.error_category in ("auth_failure", "rate_limit"):
        row.blocked_reason = f"hit {category.error_category} in this tick"
    retry = f" retry {row.retry_count + 1}/{settings.max_retries}" if status == FAILED else ""
    log.info("row %s %s -> %s (%s)%s: %s", row.id, row.action_type, status, category.error_category, retry, message,
             extra=fields(row_id=row.id, action_type=row.action_type, outcome=status,
                          error_category=category.error_category))
    return status
