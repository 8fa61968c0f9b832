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

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.instagram import account_holds

from lib.instagram import usage as graph_usage

from lib.health import metrics

from lib.instagram import publishing
from lib.alerts.store import auto_resolve, open_or_update_alert
from lib.core.audit import AUDIT_ROW_COLUMNS, audit_row, log_audit
from lib.core.db import UNAVAILABLE_ERRORS, write_transaction
from lib.instagram.errors import (HOLD, QUOTA, Category, GraphError, account_usage, app_usage, categorize_ig_error,
                           is_content_rejection, maybe_performed, next_attempt)
from lib.instagram.client import AccountCreds, GraphClient, InvalidPayload, Quota
from lib.core.logs import fields
from lib.instagram.publishing import ContainerFailed, ContainerRetryable, ContainerState, Sent, Wait
from lib.queue.core import (CONTENT_ACTIONS, DLQ, FAILED, PENDING, PROCESSING, SENT, SUCCESS_EVENT, claimable_clause,
                       due_order, idempotency_key, refresh_sent_rollup, stale_clause)
from lib.core.redact import redact
from lib.queue.review import worker_pass as review_pass
from lib.core.schema import audit_log
from lib.core.schema import post_queue_attempts as pqa
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.schema import post_queue as pq
from lib.core.schema import post_queue_state as pqs
from lib.core.settings import Settings, graph_version_warning, mask_url
from lib.core.timeutil import as_utc, iso, utcnow
from lib.activity.worker_ticks import prune_ticks, record_tick_finish, record_tick_start

log = logging.getLogger("worker")

QUOTA_CACHE_S = 60  # content_publishing_limit is read at most once a minute per account and process


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
    state: ContainerState = field(default_factory=ContainerState)
    waiting_since: datetime | None = None
    has_state: bool = False  # a post_queue_state row exists (claimed with one, or written since)
    blocked_reason: str | None = None  # set when this row's failure stops the account for this tick
    settled: bool = False  # an uncertain earlier attempt was looked up this attempt (the look-first read answered)


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


# A transaction that holds the write lock from its first read: PostgreSQL's row locks come from
# FOR UPDATE SKIP LOCKED in the queries; on SQLite, BEGIN IMMEDIATE takes the database write lock
# first, so the read-then-update of a claim cannot interleave with another worker's. One home:
write_txn = write_transaction


def _mine_clause(row_id, token):
    """Still ours: processing with our claim time as its token (values or bind parameters)."""
    return sa.and_(pq.c.id == row_id, pq.c.status == PROCESSING, pq.c.updated_at == token)


def _mine(row: Claimed):
    return _mine_clause(row.id, row.token)


def _upsert_state(conn: sa.Connection, queue_id: uuid.UUID, values: dict[str, Any]) -> None:
    """Write our post_queue_state row (keyed by the queue id) in the caller's transaction."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(pqs)
    conn.execute(insert.values(queue_id=queue_id, **values)
                 .on_conflict_do_update(index_elements=["queue_id"], set_=values))


def _not_waiting(now: datetime) -> dict[str, Any]:
    return {"wait_kind": None, "wait_reason": None, "waiting_since": None, "wait_until": None, "updated_at": now}


# -- rescue ----------------------------------------------------------------------------------

def rescue_stale(engine: Engine, *, now: datetime, lease_s: int, max_retries: int, limit: int = 500) -> int:
    """Rows left in processing longer than the lease count as a failed attempt of unknown outcome.

    They are due again at once (next_retry_at = now): the lease itself was the wait, and it is
    longer than the first backoff steps. Exhausted rows go to dlq. The attempt may have reached
    Instagram, so the row is marked uncertain: a reply first looks whether it is already there,
    a publish always reads its container first.
    """
    with write_txn(engine) as conn:
        stale = conn.execute(
            sa.select(pq.c.id, pq.c.business_account_id, pq.c.action_type, pq.c.retry_count, pq.c.updated_at)
            .where(stale_clause(now, lease_s))
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
                          next_retry_at=now if decision.status == FAILED else None)
            done = conn.execute(
                sa.update(pq).where(pq.c.id == r.id, pq.c.status == PROCESSING, pq.c.updated_at == r.updated_at)
                .values(**values)
            ).rowcount
            if not done:
                continue
            rescued += 1
            _upsert_state(conn, r.id, {"uncertain": True, **_not_waiting(now)})
            metrics.count_action(r.action_type, decision.status, "unknown")
            log.warning("row %s %s rescued after lease -> %s (retry_count=%s)", r.id, r.action_type,
                        decision.status, decision.retry_count,
                        extra=fields(row_id=r.id, action_type=r.action_type, outcome=decision.status,
                                     error_category="unknown"))
            if decision.status == DLQ:
                _audit_dlq(conn, r.id, r.business_account_id, r.action_type, "unknown", message,
                           decision.retry_count, None, now)
    return rescued


# -- claim -----------------------------------------------------------------------------------

def claim_query(now: datetime, batch_size: int, *, raw: bool = False):
    """The claim's SELECT: claimable rows in ix_post_queue_due's order, so the database reads the
    index's first entries instead of sorting every due row; locked rows are skipped, not waited for.
    raw (SQLite): the payload and the times as stored text, so that one row someone else's tool
    wrote badly is read (and dead-lettered) alone instead of failing the whole claim."""
    def text(col):
        return sa.type_coerce(col, sa.Text).label(col.name) if raw else col

    cols = [pq.c.id, pq.c.business_account_id, pq.c.action_type, text(pq.c.payload), pq.c.idempotency_key,
            pq.c.retry_count, pq.c.status, text(pq.c.updated_at)]
    if raw:
        cols += [text(pq.c.created_at), text(pq.c.next_retry_at)]
    return (sa.select(*cols)
            .where(claimable_clause(now))
            .order_by(*due_order())
            .limit(batch_size)
            .with_for_update(skip_locked=True, of=pq))


def _read_row(r, raw: bool) -> tuple[dict[str, Any] | None, datetime | None, str | None]:
    """(payload, updated_at, why it cannot be read) of a claimed row."""
    payload = r.payload
    if raw and isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None, None, "payload is not valid JSON"
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return None, None, f"payload is a JSON {type(payload).__name__.replace('str', 'string')}, not an object"
    updated = r.updated_at
    if raw:
        for name in ("created_at", "updated_at", "next_retry_at"):
            value = getattr(r, name)
            if value in (None, ""):
                continue
            try:
                parsed = datetime.fromisoformat(str(value))
            except ValueError:
                return None, None, f"{name} {str(value)[:40]!r} is not a timestamp"
            if name == "updated_at":
                updated = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return payload, as_utc(updated), None


def dead_letter_unreadable(engine: Engine, row_id: uuid.UUID, account_id, action_type: str, why: str, *,
                           token: datetime, now: datetime) -> bool:
    """A claimed row that cannot be read goes to the DLQ alone, in its own transaction, with a clear
    error; nothing is sent for it and the rest of the batch goes on."""
    message = f"the row cannot be read: {why}; fix it (Queue Monitor: edit) or discard it"
    with write_txn(engine) as conn:
        done = conn.execute(sa.update(pq).where(_mine_clause(row_id, token)).values(
            status=DLQ, error=message, error_category="permanent", next_retry_at=None, updated_at=now)).rowcount
        if done:
            _audit_dlq(conn, row_id, account_id, action_type, "permanent", message, None, None, now)
            _record_attempt(conn, row_id, now, DLQ, category="permanent", error=message)
    if done:
        log.warning("row %s %s -> dlq: %s", row_id, action_type, message,
                    extra=fields(row_id=row_id, action_type=action_type, outcome=DLQ))
    return bool(done)


def claim(engine: Engine, *, now: datetime, batch_size: int,
          dead_lettered: list[uuid.UUID] | None = None) -> list[Claimed]:
    """Up to batch_size claimable rows (lib.queue.core.claimable_clause), oldest due first -> processing.
    Rows that cannot be read are dead-lettered one by one after the claim (dead_letter_unreadable;
    their ids are appended to `dead_lettered`)."""
    unreadable: list[tuple[Any, Any, str, str]] = []
    with write_txn(engine) as conn:
        raw = conn.dialect.name == "sqlite"
        rows = conn.execute(claim_query(now, batch_size, raw=raw)).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        conn.execute(sa.update(pq).where(pq.c.id.in_(ids)).values(status=PROCESSING, updated_at=now))
        readable = []
        for r in rows:
            payload, updated, why = _read_row(r, raw)
            if why is not None:
                unreadable.append((r.id, r.business_account_id, r.action_type, why))
            else:
                readable.append((r, payload, updated))
        rows = readable
        account_ids = {r.business_account_id for r, _, _ in rows if r.business_account_id is not None}
        creds = {
            a.id: AccountCreds(a.id, a.instagram_business_id, a.access_token, a.username)
            for a in conn.execute(
                sa.select(accounts.c.id, accounts.c.instagram_business_id, accounts.c.access_token,
                          accounts.c.username)
                .where(accounts.c.id.in_(account_ids))
            )
        } if account_ids else {}
        states = {s.queue_id: s for s in conn.execute(sa.select(pqs).where(pqs.c.queue_id.in_(ids)))}
    for row_id, account_id, action_type, why in unreadable:
        if dead_letter_unreadable(engine, row_id, account_id, action_type, why, token=now, now=now) \
                and dead_lettered is not None:
            dead_lettered.append(row_id)
    out = []
    for r, payload, updated in rows:
        st = states.get(r.id)
        state = ContainerState(st.creation_id, as_utc(st.container_created_at), tuple(st.children or ()),
                               bool(st.uncertain)) if st is not None else ContainerState()
        out.append(Claimed(r.id, r.business_account_id, r.action_type, payload, r.idempotency_key,
                           r.retry_count or 0, r.status, updated, now, creds.get(r.business_account_id),
                           state, as_utc(st.waiting_since) if st is not None else None, st is not None))
    return out


def release(engine: Engine, rows: list[Claimed]) -> int:
    """Put claimed rows back as they were (graceful stop; account blocked during this tick)."""
    if not rows:
        return 0
    n = 0
    with write_txn(engine) as conn:
        for row in rows:
            n += conn.execute(
                sa.update(pq).where(_mine(row)).values(status=row.prev_status,
                                                       updated_at=row.prev_updated_at or row.token)
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
                    pq.c.status == SENT, pq.c.idempotency_key.in_(sorted(all_keys)),
                    pq.c.id.not_in([r.id for r in rows]))
            )
        }
    return {rid: sent[k] for rid, keys in keys_of.items() for k in keys if k in sent}


def next_wait_due(engine: Engine, *, after: datetime) -> datetime | None:
    """The earliest time after `after` (the last tick's start) at which a waiting row (container
    processing, quota) is due again: the service loop wakes for it before the next cron tick.
    Rows due before that tick had their chance in it (claimed, or held back by a throttle)."""
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(sa.func.min(pqs.c.wait_until)).select_from(pqs.join(pq, pq.c.id == pqs.c.queue_id))
            .where(pqs.c.wait_until > after, pq.c.status == PENDING)
        ).scalar()
    return as_utc(value)


# -- record ----------------------------------------------------------------------------------

def _details(row: Claimed, **extra: Any) -> dict[str, Any]:
    return {"business_account_id": str(row.business_account_id) if row.business_account_id else None,
            "queue_id": str(row.id), "action_type": row.action_type, **extra}


def _record_attempt(conn, queue_id, at: datetime, outcome: str, *, category: str | None = None,
                    error: str | None = None, code: int | None = None, subcode: int | None = None,
                    retry_count: int | None = None) -> None:
    """One post_queue_attempts row: what this attempt of the row ended in (the row detail's history)."""
    conn.execute(sa.insert(pqa).values(id=uuid.uuid4(), queue_id=queue_id, attempted_at=at, outcome=outcome,
                                       error_category=category, error=error, error_code=code,
                                       error_subcode=subcode, retry_count=retry_count))


def prune_attempts(conn: sa.Connection, *, before: datetime) -> int:
    return conn.execute(sa.delete(pqa).where(pqa.c.attempted_at < before)).rowcount


def _audit_dlq(conn, queue_id, account_id, action_type, category, message, retry_count, code, now) -> None:
    log_audit(conn, event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
              resource_id=str(queue_id), now=now, success=False, error_message=message,
              details={"business_account_id": str(account_id) if account_id else None, "queue_id": str(queue_id),
                       "action_type": action_type, "error_category": category, "retry_count": retry_count,
                       "error_code": code})


def store_state(engine: Engine, row: Claimed, state: ContainerState, *, now: datetime) -> None:
    """Persist the containers before the next Graph call (decision 5): creation_id in the payload
    (the spec's key), when it was made and the carousel items in post_queue_state. A retry then
    reads this container instead of making a second post. Also renews the claim token."""
    payload = {k: v for k, v in row.payload.items() if k != "creation_id"}
    if state.creation_id:
        payload["creation_id"] = state.creation_id
    with write_txn(engine) as conn:
        done = conn.execute(sa.update(pq).where(_mine(row)).values(payload=payload, updated_at=now)).rowcount
        if done:
            _upsert_state(conn, row.id, {"creation_id": state.creation_id,
                                         "container_created_at": state.created_at,
                                         "children": list(state.children), "updated_at": now})
    if not done:
        raise LostClaim(f"row {row.id} is no longer ours")
    row.payload, row.token, row.state, row.has_state = payload, now, state, True


def renew_claim(engine: Engine, row: Claimed, *, now: datetime) -> bool:
    """Move the claim's updated_at forward so a long batch does not outlive its lease and get
    rescued (and executed a second time) by another worker while this one still holds it."""
    with write_txn(engine) as conn:
        done = conn.execute(sa.update(pq).where(_mine(row)).values(updated_at=now)).rowcount
    if done:
        row.token = now
    return bool(done)


_SENT_STATEMENTS: dict[str, tuple[Any, Any, Any, Any]] = {}


def _sent_statements(dialect: str) -> tuple[Any, Any, Any, Any]:
    """record_sent's statements, built once per dialect with bind parameters (b_* for the row, a_* for
    the audit row, t_* for the attempt row): a sent row is the worker's most frequent write, and
    building a statement costs more Python than executing it. -> (update, audit insert, attempt
    insert, all three in one statement or None). The one-statement form (PostgreSQL: the UPDATE ...
    RETURNING as a CTE that both INSERTs select from) saves round trips per row and writes the audit
    and attempt rows only if the update took."""
    if dialect not in _SENT_STATEMENTS:
        update = sa.update(pq).where(_mine_clause(sa.bindparam("b_id"), sa.bindparam("b_token"))).values(
            status=SENT, instagram_id=sa.bindparam("b_instagram_id"), error=None, error_category=None,
            next_retry_at=None, updated_at=sa.bindparam("b_now"))
        audit_values = [sa.bindparam("a_" + c, type_=audit_log.c[c].type) for c in AUDIT_ROW_COLUMNS]
        insert = sa.insert(audit_log).values(dict(zip(AUDIT_ROW_COLUMNS, audit_values)))
        attempt_cols = ("id", "queue_id", "attempted_at", "outcome", "retry_count")
        attempt_values = [sa.bindparam("t_id", type_=pqa.c.id.type), sa.bindparam("b_id", type_=pq.c.id.type),
                          sa.bindparam("b_now", type_=pqa.c.attempted_at.type), sa.literal(SENT),
                          sa.bindparam("t_retry_count", type_=sa.Integer)]
        attempt = sa.insert(pqa).values(dict(zip(attempt_cols, attempt_values)))
        both = None
        if dialect == "postgresql":
            sent_row = update.returning(pq.c.id).cte("sent_row")
            attempt_row = (sa.insert(pqa).from_select(list(attempt_cols), sa.select(*attempt_values)
                                                      .select_from(sent_row)).cte("attempt_row"))
            both = (sa.insert(audit_log)
                    .from_select(list(AUDIT_ROW_COLUMNS), sa.select(*audit_values).select_from(sent_row))
                    .add_cte(sent_row).add_cte(attempt_row))
        _SENT_STATEMENTS[dialect] = (update, insert, attempt, both)
    return _SENT_STATEMENTS[dialect]


def record_sent(engine: Engine, row: Claimed, instagram_id: str | None, *, now: datetime, twin: bool = False,
                note: str | None = None) -> bool:
    """The row is sent. Its audit row names the media/reply/message id; where Instagram's answer was
    lost and the id cannot be read back (a container found PUBLISHED), the container id (creation_id)
    stands in, else the queue id: audit_log.resource_id is never empty."""
    params = {"b_id": row.id, "b_token": row.token, "b_instagram_id": instagram_id, "b_now": now}
    attempt = {"t_id": uuid.uuid4(), "t_retry_count": row.retry_count}
    audit = None
    if not twin:  # a twin's success was audited when the twin was sent
        event_type, action, resource_type = SUCCESS_EVENT[row.action_type]
        extra = {"note": note} if note else {}
        if row.payload.get("permission_id") is not None:
            extra["permission_id"] = row.payload.get("permission_id")
        resource_id = instagram_id or row.payload.get("creation_id") or str(row.id)
        audit = {"a_" + k: v for k, v in audit_row(
            event_type=event_type, action=action, resource_type=resource_type, resource_id=str(resource_id),
            now=now, success=True, details=_details(row, instagram_id=instagram_id, retry_count=row.retry_count,
                                                    payload=redact(row.payload), **extra)).items()}
    with write_txn(engine) as conn:
        update, insert, attempt_insert, both = _sent_statements(conn.dialect.name)
        if audit is not None and both is not None:
            done = conn.execute(both, {**params, **audit, **attempt}).rowcount  # audit/attempt iff the update took
        else:
            done = conn.execute(update, params).rowcount
            if done and audit is not None:
                conn.execute(insert, audit)
            if done:
                conn.execute(attempt_insert, {**params, **attempt})
        if done and row.has_state:  # a sent row needs no state of ours (most rows never had any)
            conn.execute(sa.delete(pqs).where(pqs.c.queue_id == row.id))
    if done:
        metrics.count_action(row.action_type, SENT)
    return bool(done)


def record_wait(engine: Engine, row: Claimed, wait: Wait, until: datetime | None, *, now: datetime,
                alert_message: str | None = None) -> bool:
    """The row waits on Instagram, not on a failure: pending with next_retry_at = when it is due
    again, retry_count unchanged, error 'waiting: <reason>', error_category NULL; why and since
    when in post_queue_state (the Queue Monitor's "Waiting on Instagram")."""
    since = row.waiting_since or now
    text = f"waiting: {wait.reason}"[:1000]
    with write_txn(engine) as conn:
        done = conn.execute(
            sa.update(pq).where(_mine(row)).values(status=PENDING, next_retry_at=until, error=text,
                                                   error_category=None, updated_at=now)
        ).rowcount
        if not done:
            return False
        _upsert_state(conn, row.id, {"wait_kind": wait.kind, "wait_reason": wait.reason, "waiting_since": since,
                                     "wait_until": until, "updated_at": now})
        _record_attempt(conn, row.id, now, "held" if wait.kind == "hold" else "waiting", error=text,
                        retry_count=row.retry_count)
        if alert_message and row.business_account_id is not None:
            open_or_update_alert(conn, alert_type="rate_limit", business_account_id=row.business_account_id, now=now,
                                 message=alert_message,
                                 details={"queue_id": str(row.id), "action_type": row.action_type,
                                          "reason": wait.reason, "until": iso(until), "source": "worker"})
    metrics.count_action(row.action_type, "waiting")
    return True


def record_failure(engine: Engine, row: Claimed, exc: BaseException, category: Category, message: str, *,
                   now: datetime, max_retries: int, uncertain: bool = False) -> str | None:
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
        # An earlier attempt's uncertainty stays until a look-first read settled it this attempt.
        still_uncertain = uncertain or (row.state.uncertain and not row.settled)
        _upsert_state(conn, row.id, {"uncertain": still_uncertain, **_not_waiting(now)})
        _record_attempt(conn, row.id, now, decision.status, category=category.error_category, error=message,
                        code=code, subcode=subcode, retry_count=decision.retry_count)
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
            if decision.delay is not None:
                alert_details["retry_after_s"] = int(decision.delay.total_seconds())
            what = ("Instagram publishing limit reached" if category.action == QUOTA else "Instagram rate limit")
            open_or_update_alert(conn, alert_type="rate_limit", business_account_id=account_id, now=now,
                                 message=f"{what}: {message}", details=alert_details)
        elif (category.error_category == "permanent" and row.action_type in CONTENT_ACTIONS
              and (is_content_rejection(exc) or isinstance(exc, ContainerFailed))):
            what = "Instagram rejected the content"
            open_or_update_alert(conn, alert_type="content_violation", business_account_id=account_id, now=now,
                                 message=f"{what}: {message}", details=alert_details)
        if decision.status == DLQ:
            _audit_dlq(conn, row.id, account_id, row.action_type, category.error_category, message,
                       decision.retry_count, code, now)
    metrics.count_action(row.action_type, decision.status, category.error_category)
    return decision.status


# -- Graph usage and quotas, per process -------------------------------------------------------

class GraphBudget:
    """What this process learned from Graph during a tick: the usage headers of each answer
    (recorded per account in graph_usage, and whether the account or the whole app must stop),
    and each account's publishing quota (read at most once a minute)."""

    def __init__(self, engine: Engine, client: GraphClient, now_fn: Callable[[], datetime]) -> None:
        self.engine, self.client, self.now_fn = engine, client, now_fn
        self.account: AccountCreds | None = None
        self.app_stopped: str | None = None
        self.account_stopped: dict[Any, str] = {}
        self._latest: dict[str, tuple[Any, Any, datetime]] = {}  # scope -> (account id, Usage, seen)
        self._quotas: dict[Any, tuple[float, Quota]] = {}

    def observe(self, method, template, status, seconds, headers) -> None:
        if not headers:
            return
        now, acct = self.now_fn(), self.account
        app = app_usage(headers)
        usage = account_usage(headers, acct.instagram_business_id) if acct is not None else None
        if app is not None:
            self._latest[graph_usage.APP] = (None, app, now)
        if usage is not None:
            self._latest[graph_usage.scope_of(acct.id)] = (acct.id, usage, now)
        stopped = False
        if app is not None and app.exhausted:
            self.app_stopped = f"app usage at {app.peak:.0f}% (X-App-Usage)"
            stopped = True
        if usage is not None and usage.exhausted and acct is not None:
            self.account_stopped[acct.id] = (f"business use case usage at {usage.peak:.0f}%"
                                             + (f", access back in {usage.regain_access_minutes:g} min"
                                                if usage.regain_access_minutes else ""))
            stopped = True
        if stopped:  # other workers must see a throttle at once
            self.flush()

    def flush(self) -> None:
        """Write the latest usage of each scope seen (once per tick, or at once on a throttle)."""
        if not self._latest:
            return
        latest, self._latest = self._latest, {}
        with self.engine.begin() as conn:
            for account_id, usage, seen in latest.values():
                graph_usage.record_usage(conn, account_id=account_id, usage=usage, now=seen)

    def quota_left(self, account: AccountCreds) -> int | None:
        cached = self._quotas.get(account.id)
        if cached is None or time.monotonic() - cached[0] > QUOTA_CACHE_S:
            try:
                quota = self.client.publishing_limit(account)
            except GraphError as exc:
                if categorize_ig_error(exc).error_category != "permanent":
                    raise
                log.warning("content_publishing_limit unreadable for account %s (%s): publishing without it",
                            account.id, exc)
                return None
            with self.engine.begin() as conn:
                graph_usage.record_quota(conn, account_id=account.id, usage=quota.usage, total=quota.total,
                                         duration_s=quota.duration_s, now=self.now_fn())
            cached = self._quotas[account.id] = (time.monotonic(), quota)
        return cached[1].left

    def quota(self, account: AccountCreds) -> Quota | None:
        cached = self._quotas.get(account.id)
        return cached[1] if cached else None

    def published(self, account: AccountCreds) -> None:
        cached = self._quotas.get(account.id)
        if cached is not None:
            q = cached[1]
            self._quotas[account.id] = (cached[0], Quota(q.usage + 1, q.total, q.duration_s))


# -- the tick --------------------------------------------------------------------------------

def refresh_rollup(engine: Engine, *, now: datetime) -> bool:
    """The Queue Monitor's sent rollup (lib.queue.core.refresh_sent_rollup), at most every few minutes.
    Two workers creating its state row at once: the second one's insert conflicts and it skips."""
    try:
        with engine.begin() as conn:
            return refresh_sent_rollup(conn, now=now)
    except sa.exc.IntegrityError:
        return False


# What a batch could not write because the database went away mid-batch, by database: claimed rows
# this process never attempted, and rows Instagram accepted whose `sent` was not recorded. The next
# tick that reaches the database finishes them, instead of leaving them in processing until the lease
# (10 min) expires and marks them uncertain, which for a DM means sending it again. A never-attempted
# row made no Graph call, so putting it back is safe; a failed or waiting attempt whose record was lost
# is left to the lease (docs/worker.md). Both are kept only in this process: if it ends, the lease rules.
@dataclass
class _LeftOver:
    untried: list[Claimed] = field(default_factory=list)
    sent: list[tuple[Claimed, Sent, datetime]] = field(default_factory=list)


_LEFT_OVER: dict[str, _LeftOver] = {}


def _left_over(engine: Engine) -> _LeftOver:
    return _LEFT_OVER.setdefault(engine.url.render_as_string(hide_password=True), _LeftOver())


def _finish_left_over(engine: Engine) -> tuple[int, int]:
    """-> (rows put back, sent rows recorded) of what the last batch left when the database went away."""
    left = _left_over(engine)
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
             now_fn: Callable[[], datetime] = utcnow) -> TickResult:
    """One tick. Never raises for a lost database: the result carries the error instead."""
    stop = stop or threading.Event()
    result = TickResult()
    began = time.monotonic()
    tick_id = None
    try:
        with engine.begin() as conn:
            tick_id = record_tick_start(conn, now=now_fn(), host=socket.gethostname(), pid=os.getpid())
        put_back, recorded = _finish_left_over(engine)
        result.released += put_back
        result.sent += recorded
        result.rescued = rescue_stale(engine, now=now_fn(), lease_s=settings.processing_lease_s,
                                      max_retries=settings.max_retries)
        check_graph_version(engine, settings, now=now_fn())
        with engine.begin() as conn:
            account_holds.end_expired(conn, now=now_fn())
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
            _execute_batch(engine, settings, client, budget, rows, result, stop, now_fn, attempted)
        except UNAVAILABLE_ERRORS:
            _left_over(engine).untried.extend(r for r in rows if r.id not in attempted)
            raise
        finally:
            client.observers.remove(budget.observe)
        budget.flush()
        if not stop.is_set():
            check_tokens(engine, settings, client, now=now_fn())
        if not stop.is_set():
            refresh_rollup(engine, now=now_fn())
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
                prune_attempts(conn, before=now_fn() - timedelta(days=30))
        except UNAVAILABLE_ERRORS:
            pass  # the tick line below already says the database went away
    (log.error if result.error else log.info)(result.line(), extra=fields(
        outcome="failed" if result.error else "ok", duration=round(result.duration_s, 3), claimed=result.claimed,
        sent=result.sent, failed=result.failed, dlq=result.dlq, waiting=result.waiting, rescued=result.rescued))
    return result


def _execute_batch(engine, settings, client, budget, rows, result, stop, now_fn, attempted: set) -> None:
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
        status = _execute_one(engine, settings, client, budget, row, now_fn)
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


def _attempt(client: GraphClient, settings: Settings, budget: GraphBudget, engine: Engine, row: Claimed,
             now_fn) -> Sent | Wait:
    """One attempt of one row against Instagram (the Graph calls per action type: docs/worker.md)."""
    if row.account is None:
        raise InvalidPayload(f"business account {row.business_account_id} not found")
    acct, p = row.account, row.payload
    if row.action_type in CONTENT_ACTIONS:
        return publishing.publish(client, row.action_type, p, acct, row.state, now=now_fn(),
                                  timeout_s=settings.container_timeout_s,
                                  interval_s=settings.container_check_interval_s,
                                  save=lambda st: store_state(engine, row, st, now=now_fn()),
                                  quota_left=lambda: budget.quota_left(acct))
    from lib.instagram.payload_rules import payload_problems

    problems = payload_problems(row.action_type, p)
    if problems:
        raise InvalidPayload("; ".join(problems))
    if row.action_type == "reply_comment":
        if row.state.uncertain:  # an earlier attempt may have posted it: look before replying again
            found = _look_first(row, lambda: _our_reply(client, acct, str(p["comment_id"]), str(p["reply_text"])))
            if found is not None:
                return found
        return Sent(client.reply_comment(p["comment_id"], p["reply_text"], acct))
    if row.action_type in ("send_dm", "reply_dm"):
        recipient = p.get("recipient_id")
        if not recipient:
            recipient = client.conversation_peer(p["conversation_id"], acct)
        if row.state.uncertain:  # read the conversation back before sending again
            found = _look_first(row, lambda: _our_message(client, acct, p.get("conversation_id"), str(recipient),
                                                          str(p["message_text"])))
            if found is not None:
                return found
        return Sent(client.send_message(str(recipient), p["message_text"], acct))
    raise InvalidPayload(f"unknown action_type {row.action_type!r}")


class LookFirstFailed(GraphError):
    """The read that would tell whether an uncertain attempt reached Instagram failed: the row is
    not sent again now (a failed attempt that keeps the uncertainty), never posted blind."""


def _look_first(row: Claimed, read: Callable[[], Sent | None]) -> Sent | None:
    """Run the look-first read of an uncertain row. Found -> Sent (no second call); not there ->
    None and the row is settled (safe to send); the read failed -> LookFirstFailed."""
    try:
        found = read()
    except GraphError as exc:
        raise LookFirstFailed(f"could not check whether an earlier attempt already reached Instagram ({exc}); "
                              "not sending again until it can be checked", status=exc.status, body=exc.body,
                              headers=exc.headers, exc=exc.exc) from None
    row.settled = True
    return found


def _is_ours(acct: AccountCreds, author: dict[str, Any], username: Any = None) -> bool:
    return (str(author.get("id")) in {str(acct.instagram_business_id), str(acct.id)}
            or bool(acct.username and str(username or author.get("username") or "").lower() == acct.username.lower()))


def _our_reply(client: GraphClient, acct: AccountCreds, comment_id: str, text: str) -> Sent | None:
    """Our reply with this text under the comment, if an earlier attempt posted it. A reply to a reply
    is attached to the top-level comment (IG Comment Replies), so a reply's replies are read under
    its parent_id; every page of replies is read."""
    parent = client.comment_parent(comment_id, acct) or comment_id
    for reply in client.comment_replies(parent, acct):
        author = reply.get("from") if isinstance(reply.get("from"), dict) else {}
        if _is_ours(acct, author, reply.get("username")) and str(reply.get("text") or "") == text:
            return Sent(str(reply.get("id")), "the reply was already there (an earlier attempt's answer was lost)")
    return None


def _our_message(client: GraphClient, acct: AccountCreds, conversation_id: Any, recipient: str,
                 text: str) -> Sent | None:
    """Our message with this text among the conversation's newest messages, if an earlier attempt
    sent it (Conversations API; send_dm finds the conversation by the recipient's id)."""
    conv = str(conversation_id) if conversation_id else client.conversation_with(recipient, acct)
    if conv is None:
        return None  # no conversation with this person yet: nothing was sent
    for message in client.recent_messages(conv, acct):
        author = message.get("from") if isinstance(message.get("from"), dict) else {}
        if _is_ours(acct, author) and str(message.get("message") or "") == text:
            return Sent(str(message.get("id")), "the message was already in the conversation (an earlier "
                                                "attempt's answer was lost)")
    return None


def _execute_one(engine, settings, client, budget: GraphBudget, row: Claimed, now_fn) -> str | None:
    token = row.account.access_token if row.account else None
    try:
        outcome = _attempt(client, settings, budget, engine, row, now_fn)
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
        _left_over(engine).sent.append((row, outcome, now))  # Instagram has it: record it, never send again
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
        return _held(engine, row, exc, category, message, now_fn())
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


def _held(engine, row: Claimed, exc: BaseException, category: Category, message: str, now: datetime) -> str | None:
    """Instagram holds the whole account (a temporary block, a restricted account, a spam or messaging
    restriction): the account is held in account_holds so no row of it is claimed until the hold
    ends (or an operator resumes it); this row waits with it, its retries untouched; one alert says
    what the owner must do and until when."""
    rule = category.rule
    until = now + rule.hold if rule.hold is not None else None
    code = exc.code if isinstance(exc, GraphError) else None
    subcode = exc.subcode if isinstance(exc, GraphError) else None
    kind = account_holds.KIND_OF_RULE.get((code, subcode)) or account_holds.KIND_OF_RULE.get((code, None), "hold")
    when = f"until {iso(until)}" if until else "until an operator resumes the account"
    name = row.account.username if row.account and row.account.username else str(row.business_account_id)
    alert = (f"{account_holds.KIND_TEXT.get(kind, 'Instagram holds this account')} ({name}): its queue is held "
             f"{when}. What to do: {rule.owner_must}. Instagram said: {message}")
    with write_txn(engine) as conn:
        done = conn.execute(sa.update(pq).where(_mine(row)).values(
            status=PENDING, next_retry_at=until, error=f"held: {message}"[:1000], error_category=None,
            updated_at=now)).rowcount
        if not done:
            return None
        _upsert_state(conn, row.id, {"wait_kind": "hold", "wait_reason": f"account held {when}",
                                     "waiting_since": row.waiting_since or now, "wait_until": until,
                                     "updated_at": now})
        _record_attempt(conn, row.id, now, "held", category=category.error_category, error=message, code=code,
                        subcode=subcode, retry_count=row.retry_count)
        account_holds.hold(conn, business_account_id=row.business_account_id, kind=kind, reason=message,
                           owner_must=rule.owner_must, until=until, code=code, subcode=subcode, now=now)
        open_or_update_alert(conn, alert_type=account_holds.ALERT_TYPE, business_account_id=row.business_account_id,
                             now=now, message=alert[:1000],
                             details={"queue_id": str(row.id), "action_type": row.action_type, "kind": kind,
                                      "error_code": code, "error_subcode": subcode,
                                      "held_until": iso(until) if until else None, "owner_must": rule.owner_must,
                                      "source": "worker"})
    row.blocked_reason = f"held by Instagram {when}"
    metrics.count_action(row.action_type, "held", category.error_category)
    log.warning("row %s %s -> pending, account %s held %s: %s", row.id, row.action_type, name, when, message,
                extra=fields(row_id=row.id, action_type=row.action_type, outcome="held"))
    return PENDING


def check_graph_version(engine: Engine, settings: Settings, *, now: datetime) -> str | None:
    """A warning (logged, and one graph_api_version alert kept open) while the configured Graph
    version is within its last days; the alert resolves itself once the version is changed."""
    warning = graph_version_warning(settings.graph_url, now.date())
    with engine.begin() as conn:
        if warning:
            open_or_update_alert(conn, alert_type=GRAPH_VERSION_ALERT, now=now, message=warning,
                                 details={"source": "worker"})
        else:
            auto_resolve(conn, alert_type=GRAPH_VERSION_ALERT, now=now)
    if warning:
        log.warning(warning)
    return warning


GRAPH_VERSION_ALERT = "graph_api_version"


# -- account tokens (issue 16) ------------------------------------------------------------------

TOKEN_CHECK_EVERY = timedelta(hours=6)
TOKEN_CHECKS_PER_TICK = 10


def check_tokens(engine: Engine, settings: Settings, client: GraphClient, *, now: datetime) -> int:
    """With META_APP_TOKEN set: read each connected account's token expiry with debug_token (at
    most every 6 h per account), record it in graph_usage, and keep one token_expiring alert per
    account open while the token expires within TOKEN_EXPIRY_WARN_DAYS (resolved once it is
    refreshed). Without the setting nothing is called: the expiry is unknown."""
    from lib.alerts.store import TOKEN_EXPIRING, auto_resolve
    from lib.core.schema import graph_usage as gu

    if not settings.meta_app_token:
        return 0
    due_before = now - TOKEN_CHECK_EVERY
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(accounts.c.id, accounts.c.instagram_business_id, accounts.c.access_token, accounts.c.username)
            .select_from(accounts.outerjoin(gu, gu.c.business_account_id == accounts.c.id))
            .where(accounts.c.is_connected.is_not(False), accounts.c.access_token.is_not(None),
                   sa.or_(gu.c.token_checked_at.is_(None), gu.c.token_checked_at < due_before))
            .limit(TOKEN_CHECKS_PER_TICK)
        ).all()
    checked = 0
    for a in rows:
        acct = AccountCreds(a.id, a.instagram_business_id, a.access_token, a.username)
        try:
            data = client.debug_token(acct, settings.meta_app_token)
        except (GraphError, InvalidPayload) as exc:
            log.warning("debug_token for account %s failed: %s", a.username or a.id,
                        redact(str(exc), secrets=(a.access_token, settings.meta_app_token)))
            continue
        raw = data.get("expires_at")
        expires = datetime.fromtimestamp(int(raw), tz=now.tzinfo) if isinstance(raw, (int, float)) and raw > 0 else None
        with engine.begin() as conn:
            graph_usage.record_token(conn, account_id=a.id, expires_at=expires, now=now)
            warn = timedelta(days=settings.token_expiry_warn_days)
            if expires is not None and expires - now <= warn:
                days = max(0, round((expires - now).total_seconds() / 86400))
                open_or_update_alert(conn, alert_type=TOKEN_EXPIRING, business_account_id=a.id, now=now,
                                     message=f"The Instagram access token of {a.username or a.id} expires "
                                             f"{'in ' + str(days) + ' days' if days else 'within a day'} "
                                             f"({iso(expires)}); reconnect the account to renew it",
                                     details={"expires_at": iso(expires), "source": "worker"})
            else:
                auto_resolve(conn, alert_type=TOKEN_EXPIRING, business_account_id=a.id, now=now)
        checked += 1
    return checked
