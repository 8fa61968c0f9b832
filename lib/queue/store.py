"""The only writer of post_queue and the queue's own tables (state, attempts, rollup, pauses, review
decisions and policies, review context): enqueue, claim, renew, release, record, rescue, retry, discard,
edit, pause, review. Every statement that changes a queue row is here, so the queue's rules have one home.

Operators' actions take a lib.core.identity.Actor and refuse anyone but an operator (whatever the page
showed), run in the caller's transaction, are conditional on what was read (a row the worker holds,
`processing`, is never touched) and write audit_log with the user. A discarded row is deleted after all
its columns went into its `queue_item_discarded` audit row, so nothing is lost and it can be read back.

The worker's writes take an engine and run one short transaction each. A claimed row's updated_at is set
to the claim time (its token) and every later transition is conditional on `status = 'processing' AND
updated_at = <token>`, so a row that another worker rescued and re-claimed after our lease ran out is
never overwritten by us.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.alerts.store import open_or_update_alert
from lib.core import counters
from lib.core.audit import AUDIT_ROW_COLUMNS, audit_row, log_audit
from lib.core.db import insert_ignore, take_write_lock, upsert, without_jit, write_transaction
from lib.core.identity import Actor, require_operator
from lib.core.logs import fields
from lib.core.redact import redact
from lib.core.schema import (
    ACTION_TYPES,
    audit_log,
    post_queue,
    post_queue_rollup_state,
    post_queue_sent_daily,
    post_queue_sent_totals,
    post_queue_state,
    queue_pauses,
    review_context,
    review_decisions,
    review_policies,
    review_policy_terms,
)
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.schema import post_queue as pq
from lib.core.schema import post_queue_attempts as pqa
from lib.core.schema import post_queue_state as pqs
from lib.core.timebuckets import bucket_expr, bucket_value
from lib.core.timeutil import as_utc, iso
from lib.instagram import account_holds
from lib.instagram.client import AccountCreds
from lib.instagram.errors import QUOTA, Category, GraphError, is_content_rejection, next_attempt
from lib.instagram.payload_rules import TEXT_FIELDS, payload_problems
from lib.instagram.publishing import ContainerFailed, ContainerState, Wait
from lib.queue.holds import claimable_clause, hold_reasons
from lib.queue.review_rules import (
    DM_ACTIONS,
    DM_WINDOW,
    EXPIRE_ERROR,
    MAX_BULK,
    MODES,
    REJECT_ERROR,
    SEND_MARGIN,
    DecisionResult,
    Policy,
    ReviewError,
    action_text,
    dm_window_ends,
    edit_distance,
    held_clause,
    like_pattern,
    parse_terms,
    too_late,
)
from lib.queue.rules import (
    CONTENT_ACTIONS,
    DLQ,
    FAILED,
    IDS_PER_STATEMENT,
    MAX_BULK_RETRY,
    PENDING,
    PROCESSING,
    REFUSALS,
    RETRYABLE_STATUSES,
    ROLLUP_EVERY_S,
    ROLLUP_RECENT_DAYS,
    ROLLUP_VERIFY_DAYS,
    SENT,
    SUCCESS_EVENT,
    Claimed,
    ControlResult,
    LostClaim,
    QueueControlError,
    RetryResult,
    container_changed,
    day_start,
    display_marks,
    due_order,
    editable_fields,
    idempotency_key,
    sent_clause,
    stale_clause,
    with_warnings,
)

log = logging.getLogger("worker")  # these run in the worker: its log


# -- what the agents add ------------------------------------------------------------------------------

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
    return row_id if insert_ignore(conn, post_queue, values, key="idempotency_key") else None


# -- the sent rollup (the Queue Monitor counts sent rows from it) ---------------------------------------

def _write_totals(conn: sa.Connection) -> None:
    """post_queue_sent_totals := post_queue_sent_daily summed per account and action type."""
    t, d = post_queue_sent_totals, post_queue_sent_daily
    conn.execute(sa.delete(t))
    conn.execute(sa.insert(t).from_select(
        ["business_account_id", "action_type", "sent"],
        sa.select(d.c.business_account_id, d.c.action_type, sa.func.sum(d.c.sent))
        .group_by(d.c.business_account_id, d.c.action_type)))


def _recount_days(conn: sa.Connection, lo: datetime | None, hi: datetime) -> int:
    """Replace the rollup's rows for the days in [lo, hi) (lo None: everything before hi) by a count of
    post_queue now. Returns the number of sent rows counted."""
    q, d = post_queue, post_queue_sent_daily
    b = bucket_expr(q.c.updated_at, "day", conn.dialect.name).label("b")
    where = [sent_clause(), q.c.updated_at < hi] + ([] if lo is None else [q.c.updated_at >= lo])
    rows = conn.execute(sa.select(b, q.c.business_account_id, q.c.action_type, sa.func.count())
                        .where(*where).group_by(b, q.c.business_account_id, q.c.action_type)).all()
    conn.execute(sa.delete(d).where(d.c.day < hi, *([] if lo is None else [d.c.day >= lo])))
    values = [{"day": bucket_value(r[0]), "business_account_id": r[1], "action_type": r[2], "sent": int(r[3])}
              for r in rows]
    for start in range(0, len(values), 5000):
        conn.execute(sa.insert(d), values[start:start + 5000])
    return sum(v["sent"] for v in values)


def refresh_sent_rollup(conn: sa.Connection, *, now: datetime, every_s: int = ROLLUP_EVERY_S,
                        verify_days: int = ROLLUP_VERIFY_DAYS, force: bool = False) -> bool:
    """Bring post_queue_sent_daily up to the start of today (UTC) and recount some closed days again;
    the worker calls it every tick, it works at most every `every_s` seconds. Returns True if it ran.

    What "right" means, with no trigger or column on post_queue (other programs write it: the agents
    enqueue, the user's backend may update or delete rows):
    * status_summary's `sent` = the rollup's days before closed_until + a live count of the sent rows
      with updated_at >= closed_until (or NULL). Every row that becomes sent with updated_at set to
      the time of the write (the worker, a retry, any writer that maintains updated_at) is counted
      exactly at once, as are inserts of sent rows with a current updated_at.
    * A change that does not move updated_at into the live window -- a sent row deleted, or changed
      without touching updated_at, or a sent row inserted with an old updated_at -- is reflected when
      its day is recounted: the last ROLLUP_RECENT_DAYS closed days on every refresh, and older days
      by a walk back through history, `verify_days` per refresh, wrapping round when it passes the
      oldest sent row. With the defaults (every 5 min, 7 days per refresh) a year is re-verified in
      about 52 refreshes (~4.5 h). A sent row of an old day that another program updates (updated_at
      now) is counted twice (its old day and the live window) until that day's recount.
    Residual staleness is shown as sent_as_of (refreshed_at) on the pages.

    Runs in the caller's transaction; the state row is locked (FOR UPDATE on PostgreSQL) so two workers
    do not refresh at once.
    """
    s = post_queue_rollup_state
    take_write_lock(conn)
    row = conn.execute(sa.select(s).where(s.c.id == 1).with_for_update()).first()
    if row is not None and not force and (now - as_utc(row.refreshed_at)).total_seconds() < every_s:
        return False
    today = day_start(now)
    closed = None if row is None else as_utc(row.closed_until)
    if closed is None:
        _recount_days(conn, None, today)  # the first refresh counts all history once
        cursor = today
    else:
        if today > closed:
            _recount_days(conn, closed, today)  # the days closed since the last refresh
        _recount_days(conn, min(closed, today) - timedelta(days=ROLLUP_RECENT_DAYS), min(closed, today))
        cursor = as_utc(row.verify_cursor) or today
        oldest = as_utc(conn.execute(sa.select(sa.func.min(post_queue.c.updated_at)).where(sent_clause())).scalar())
        oldest_rolled = as_utc(conn.execute(sa.select(sa.func.min(post_queue_sent_daily.c.day))).scalar())
        floor = min([t for t in (oldest, oldest_rolled) if t is not None], default=today)
        if cursor <= day_start(floor):
            cursor = today  # wrap round: start the walk again from the newest closed day
        lo = cursor - timedelta(days=verify_days)
        _recount_days(conn, None if lo <= day_start(floor) else lo, cursor)  # the oldest step takes all before it
        cursor = lo
    _write_totals(conn)  # same transaction: status_summary never sees days and totals disagree
    values = {"closed_until": today, "verify_cursor": cursor, "refreshed_at": now}
    if row is None:
        conn.execute(sa.insert(s).values(id=1, **values))
    else:
        conn.execute(sa.update(s).where(s.c.id == 1).values(**values))
    return True


# -- operators: retry, pause and resume, discard, edit and retry ----------------------------------------

def retry(conn: sa.Connection, ids, *, actor, now: datetime) -> list[RetryResult]:
    """Reset failed/dlq rows to pending (retry_count 0, next_retry_at cleared), one result per id.

    Runs in the caller's transaction (use engine.begin()); at most MAX_BULK_RETRY ids. The reset
    is a conditional UPDATE ... WHERE id IN (...) AND status = <seen> AND retry_count = <seen>
    RETURNING id, so a row that the worker claimed or changed since it was read is reported,
    never reset; rows are read and updated in chunks of 500, grouped by what was seen (a
    handful of statements for 1,000 rows). Each reset row gets an audit_log row
    (queue_item_retried) naming the actor and the row's previous status, retry_count and error.

    `actor` is a lib.core.identity.Actor; anyone but an operator gets PermissionDenied, whatever the
    page showed (a deep link or a crafted rerun cannot write). Its name goes to audit_log.user_id.
    """
    require_operator(actor, "retry queue rows")
    actor = actor.name
    wanted: list[uuid.UUID] = list(dict.fromkeys(uuid.UUID(str(i)) for i in ids))
    if len(wanted) > MAX_BULK_RETRY:
        raise ValueError(f"at most {MAX_BULK_RETRY} rows per retry (got {len(wanted)})")
    q = post_queue
    seen: dict[uuid.UUID, Any] = {}
    reset: set[uuid.UUID] = set()
    # Rows are locked in id order (sorted chunks, ORDER BY id under FOR UPDATE): two retries of
    # overlapping rows in different orders (a selection and an "all matching") then wait for each
    # other instead of deadlocking. Results stay in the caller's order.
    in_lock_order = sorted(wanted)
    for start in range(0, len(in_lock_order), IDS_PER_STATEMENT):
        chunk = in_lock_order[start:start + IDS_PER_STATEMENT]
        rows = conn.execute(
            sa.select(q.c.id, q.c.status, q.c.retry_count, q.c.action_type, q.c.error, q.c.error_category,
                      q.c.business_account_id)
            .where(q.c.id.in_(chunk))
            .order_by(q.c.id)
            .with_for_update()
        ).all()
        by_version: dict[tuple[str, int], list[uuid.UUID]] = {}
        for r in rows:
            seen[r.id] = r
            if r.status in RETRYABLE_STATUSES:
                by_version.setdefault((r.status, r.retry_count), []).append(r.id)
        for (status, count), version_ids in by_version.items():
            done = conn.execute(
                sa.update(q)
                .where(q.c.id.in_(version_ids), q.c.status == status, q.c.retry_count == count)
                .values(status="pending", retry_count=0, next_retry_at=None, updated_at=now)
                .returning(q.c.id)
            )
            reset.update(r[0] for r in done)
    audits = []
    results = []
    for qid in wanted:
        r = seen.get(qid)
        if r is None:
            results.append(RetryResult(False, str(qid), None, None, "No queue row with this id."))
            continue
        if qid in reset:
            audits.append(audit_row(
                event_type="queue_item_retried", action="retry", resource_type="post_queue", resource_id=str(qid),
                now=now, user_id=actor, success=True,
                details={"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
                         "queue_id": str(qid), "action_type": r.action_type, "previous_status": r.status,
                         "previous_retry_count": r.retry_count, "previous_error": r.error,
                         "previous_error_category": r.error_category},
            ))
            results.append(RetryResult(True, str(qid), r.action_type, r.retry_count,
                                       f"Moved from {r.status} back to pending; the worker picks it up on its next tick.",
                                       r.status))
        elif r.status in RETRYABLE_STATUSES:
            results.append(RetryResult(False, str(qid), r.action_type, r.retry_count,
                                       "The row changed while retrying (the worker took it); nothing changed.",
                                       r.status))
        else:
            results.append(RetryResult(False, str(qid), r.action_type, r.retry_count,
                                       REFUSALS.get(r.status, f"Status {r.status!r} cannot be retried; nothing changed."),
                                       r.status))
    if audits:
        conn.execute(sa.insert(audit_log), audits)
    held = hold_reasons(conn, reset, now=now)
    return [with_warnings(r, held.get(uuid.UUID(r.queue_id)), seen.get(uuid.UUID(r.queue_id))) if r.success else r
            for r in results]


def pause(conn: sa.Connection, *, actor: Actor, now: datetime, business_account_id: uuid.UUID | None = None,
          action_type: str | None = None, reason: str | None = None) -> uuid.UUID:
    """Pause an account, an action type, or one action type of one account. Pausing what is
    already paused is a no-op that returns the existing pause."""
    require_operator(actor, "pause the queue")
    if business_account_id is None and not action_type:
        raise QueueControlError("Pause what? Choose an account, an action type, or both.")
    if action_type and action_type not in ACTION_TYPES:
        raise QueueControlError(f"Unknown action type {action_type!r}.")
    p = queue_pauses
    same = sa.and_(p.c.business_account_id.is_(None) if business_account_id is None
                   else p.c.business_account_id == business_account_id,
                   p.c.action_type.is_(None) if not action_type else p.c.action_type == action_type)
    existing = conn.execute(sa.select(p.c.id).where(same)).scalar()
    if existing is not None:
        return existing
    pause_id = uuid.uuid4()
    reason = (reason or "").strip()[:500] or None
    conn.execute(sa.insert(p).values(id=pause_id, business_account_id=business_account_id,
                                     action_type=action_type or None, paused_by=actor.name, reason=reason,
                                     paused_at=now))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="queue_paused", action="pause", resource_type="queue_pauses", resource_id=str(pause_id),
        now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if business_account_id is None else str(business_account_id),
                 "action_type": action_type or None, "reason": reason})])
    return pause_id


def resume(conn: sa.Connection, pause_id: uuid.UUID, *, actor: Actor, now: datetime) -> bool:
    """End a pause: the rows behind it are due again at once (the claim no longer skips them)."""
    require_operator(actor, "resume the queue")
    p = queue_pauses
    row = conn.execute(sa.select(p).where(p.c.id == pause_id)).first()
    if row is None:
        return False
    conn.execute(sa.delete(p).where(p.c.id == pause_id))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="queue_resumed", action="resume", resource_type="queue_pauses", resource_id=str(pause_id),
        now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if row.business_account_id is None else str(row.business_account_id),
                 "action_type": row.action_type, "paused_by": row.paused_by, "paused_at": iso(as_utc(row.paused_at)),
                 "reason": row.reason})])
    return True


def _json_row(r) -> dict[str, Any]:
    out = {}
    for k, v in r._mapping.items():
        if isinstance(v, datetime):
            v = iso(as_utc(v))
        elif isinstance(v, uuid.UUID):
            v = str(v)
        out[k] = v
    out["payload"] = redact(out.get("payload"))
    return out


def discard(conn: sa.Connection, ids, *, actor: Actor, now: datetime) -> list[ControlResult]:
    """Delete failed/dlq rows, each after writing all its columns to one audit_log row
    (queue_item_discarded; token-like payload fields redacted). Conditional on the status read:
    a row that the worker took meanwhile, or that is pending/processing/sent, is left alone."""
    require_operator(actor, "discard queue rows")
    wanted = list(dict.fromkeys(uuid.UUID(str(i)) for i in ids))
    if len(wanted) > MAX_BULK_RETRY:
        raise QueueControlError(f"At most {MAX_BULK_RETRY:,} rows per discard (got {len(wanted):,}).")
    q = post_queue
    results: list[ControlResult] = []
    audits = []
    for start in range(0, len(wanted), 500):
        chunk = sorted(wanted[start:start + 500])
        rows = {r.id: r for r in conn.execute(sa.select(q).where(q.c.id.in_(chunk)).order_by(q.c.id).with_for_update())}
        for qid in wanted[start:start + 500]:
            r = rows.get(qid)
            if r is None:
                results.append(ControlResult(False, str(qid), "No queue row with this id."))
                continue
            if r.status not in RETRYABLE_STATUSES:
                results.append(ControlResult(False, str(qid), f"Only failed or dlq rows can be discarded; this one is "
                                                              f"{r.status}. Nothing changed."))
                continue
            done = conn.execute(sa.delete(q).where(q.c.id == qid, q.c.status == r.status)).rowcount
            if not done:
                results.append(ControlResult(False, str(qid), "The row changed meanwhile; nothing changed."))
                continue
            conn.execute(sa.delete(post_queue_state).where(post_queue_state.c.queue_id == qid))
            audits.append(audit_row(
                event_type="queue_item_discarded", action="discard", resource_type="post_queue",
                resource_id=str(qid), now=now, user_id=actor.name, success=True,
                details={"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
                         "queue_id": str(qid), "action_type": r.action_type, "row": _json_row(r)}))
            results.append(ControlResult(True, str(qid), f"Discarded ({r.status}); its columns are kept in the "
                                                         "audit log."))
    if audits:
        conn.execute(sa.insert(audit_log), audits)
    return results


def edit_and_retry(conn: sa.Connection, queue_id: uuid.UUID, changes: dict[str, Any], *, actor: Actor,
                   now: datetime) -> ControlResult:
    """Change a failed/dlq row's text fields and send it again: validated per action type
    (lib.instagram.payload_rules), idempotency_key recomputed (a clash with another row: nothing written),
    the before/after difference audited (queue_item_edited), then pending with retry_count 0.
    A row the worker holds is refused; so is a value that still holds a display mark (a clipping
    note or a redaction placeholder the stored value does not have). On a publish row, any change
    to what goes into a media container drops the stored container (creation_id and our
    post_queue_state row): the worker makes a new one, so what publishes is what was saved."""
    require_operator(actor, "edit queue rows")
    q = post_queue
    r = conn.execute(sa.select(q).where(q.c.id == queue_id).with_for_update()).first()
    if r is None:
        raise QueueControlError("No queue row with this id.")
    if r.status not in RETRYABLE_STATUSES:
        raise QueueControlError(f"Only failed or dlq rows can be edited; this one is {r.status}. Nothing changed.")
    allowed = editable_fields(r.action_type)
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise QueueControlError(f"{', '.join(unknown)} cannot be edited on {r.action_type} (editable: "
                                f"{', '.join(allowed)}).")
    before = dict(r.payload or {})
    after = dict(before)
    for k, v in changes.items():
        v = v.strip() if isinstance(v, str) else v
        if isinstance(v, str):
            stored = "" if before.get(k) is None else str(before.get(k))
            marks = [m for m in dict.fromkeys(display_marks(v)) if v.count(m) > stored.count(m)]
            if marks:
                raise QueueControlError(
                    f"{k} still holds {', '.join(repr(m) for m in marks)}: that is a mark of the shortened or "
                    "redacted copy shown on the page, not part of the stored text. Edit the full text; "
                    "nothing was saved.")
        if v in (None, ""):
            after.pop(k, None)
        else:
            after[k] = v
    new_container = container_changed(r.action_type, before, after)
    if new_container:
        after.pop("creation_id", None)
    problems = payload_problems(r.action_type, after)
    if problems:
        raise QueueControlError("; ".join(problems))
    diff = {k: {"before": before.get(k), "after": after.get(k)}
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
    if not diff:
        raise QueueControlError("Nothing changed: use Retry to send the row as it is.")
    new_key = (idempotency_key(r.business_account_id, r.action_type, after)
               if r.business_account_id is not None else r.idempotency_key)
    if new_key != r.idempotency_key:
        clash = conn.execute(sa.select(q.c.id, q.c.status).where(q.c.idempotency_key == new_key, q.c.id != queue_id)).first()
        if clash is not None:
            raise QueueControlError(f"Another queue row ({clash.id}, {clash.status}) already holds this exact action; "
                                    "nothing written.")
    done = conn.execute(
        sa.update(q).where(q.c.id == queue_id, q.c.status == r.status, q.c.retry_count == r.retry_count)
        .values(payload=after, idempotency_key=new_key, status="pending", retry_count=0, next_retry_at=None,
                updated_at=now)
    ).rowcount
    if not done:
        raise QueueControlError("The row changed meanwhile (the worker took it); nothing changed.")
    dropped_state = 0
    if new_container:  # the worker reads creation_id and this row first: both must go
        dropped_state = conn.execute(sa.delete(post_queue_state).where(post_queue_state.c.queue_id == queue_id)).rowcount
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="queue_item_edited", action="edit_retry", resource_type="post_queue", resource_id=str(queue_id),
        now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
                 "queue_id": str(queue_id), "action_type": r.action_type, "previous_status": r.status,
                 "previous_retry_count": r.retry_count, "previous_error": r.error,
                 "changes": redact(diff), "new_container": new_container,
                 "dropped_container": before.get("creation_id") if new_container else None,
                 "dropped_container_state": bool(dropped_state)})])
    return ControlResult(True, str(queue_id), "Saved and moved back to pending; the worker sends it on its next tick"
                         + (" with a new media container." if new_container else "."))


# -- review: policies and decisions --------------------------------------------------------------------

def _policy_json(pol: Policy | None) -> dict[str, Any] | None:
    if pol is None:
        return None
    return {"mode": pol.mode, "first_n": pol.first_n, "terms": list(pol.terms)}


def set_policy(conn: sa.Connection, *, actor: Actor, now: datetime, action_type: str, mode: str,
               business_account_id: uuid.UUID | None = None, first_n: int | None = None,
               terms: Iterable[str] | str | None = None) -> uuid.UUID:
    """Create or replace the policy of (account or every account, action type); audited
    (review_policy_set, with the policy before and after). Takes effect at the worker's next claim:
    pending rows it covers are held from then on, rows it no longer covers are released."""
    require_operator(actor, "set review policies")
    if action_type not in ACTION_TYPES:
        raise ReviewError(f"Unknown action type {action_type!r}.")
    if mode not in MODES:
        raise ReviewError(f"Unknown review mode {mode!r}; expected one of {', '.join(MODES)}.")
    terms = parse_terms(terms)
    if mode == "first_n":
        try:
            first_n = int(first_n)
        except (TypeError, ValueError):
            raise ReviewError("N must be a whole number.") from None
        if not 1 <= first_n <= 100_000:
            raise ReviewError("N must be between 1 and 100,000.")
    else:
        first_n = None
    if mode == "match":
        if not terms:
            raise ReviewError("Give at least one word or pattern to match.")
        if len(terms) > 200 or any(len(t) > 200 for t in terms):
            raise ReviewError("At most 200 words or patterns, each at most 200 characters.")
    else:
        terms = ()
    p = review_policies
    scope = sa.and_(p.c.action_type == action_type,
                    p.c.business_account_id.is_(None) if business_account_id is None
                    else p.c.business_account_id == business_account_id)
    before_rows = conn.execute(sa.select(p).where(scope).with_for_update()).all()
    before = None
    if before_rows:
        r = before_rows[0]
        before = Policy(r.action_type, r.mode, r.business_account_id, r.first_n, tuple(r.terms or ()), r.id)
        ids = [r.id for r in before_rows]
        conn.execute(sa.delete(review_policy_terms).where(review_policy_terms.c.policy_id.in_(ids)))
        conn.execute(sa.delete(p).where(p.c.id.in_(ids)))
    policy_id = uuid.uuid4()
    conn.execute(sa.insert(p).values(id=policy_id, business_account_id=business_account_id, action_type=action_type,
                                     mode=mode, first_n=first_n, terms=list(terms), updated_by=actor.name,
                                     updated_at=now))
    if terms:
        conn.execute(sa.insert(review_policy_terms),
                     [{"policy_id": policy_id, "pattern": like_pattern(t)} for t in terms])
    after = Policy(action_type, mode, business_account_id, first_n, terms)
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="review_policy_set", action="set_policy", resource_type="review_policies",
        resource_id=str(policy_id), now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if business_account_id is None else str(business_account_id),
                 "action_type": action_type, "before": _policy_json(before), "after": _policy_json(after)})])
    return policy_id


def remove_policy(conn: sa.Connection, policy_id: uuid.UUID, *, actor: Actor, now: datetime) -> bool:
    """Delete a policy: its scope falls back to the next one (every account, then REVIEW_ACTIONS)."""
    require_operator(actor, "remove review policies")
    p = review_policies
    r = conn.execute(sa.select(p).where(p.c.id == policy_id).with_for_update()).first()
    if r is None:
        return False
    conn.execute(sa.delete(review_policy_terms).where(review_policy_terms.c.policy_id == policy_id))
    conn.execute(sa.delete(p).where(p.c.id == policy_id))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="review_policy_removed", action="remove_policy", resource_type="review_policies",
        resource_id=str(policy_id), now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
                 "action_type": r.action_type,
                 "before": {"mode": r.mode, "first_n": r.first_n, "terms": list(r.terms or ())}})])
    return True


def _window_of(conn: sa.Connection, r, now: datetime) -> datetime | None:
    if r.action_type not in DM_ACTIONS:
        return None
    cached = conn.execute(sa.select(review_context.c.window_ends_at)
                          .where(review_context.c.queue_id == r.id)).scalar()
    return as_utc(cached) or dm_window_ends(created_at=as_utc(r.created_at) or now, last_customer_message_at=None)


def _lock_undecided(conn: sa.Connection, queue_id: uuid.UUID):
    q = post_queue
    r = conn.execute(sa.select(q).where(q.c.id == queue_id).with_for_update()).first()
    if r is None:
        raise ReviewError("No queue row with this id.")
    if conn.execute(sa.select(review_decisions.c.decision).where(review_decisions.c.queue_id == queue_id)).first():
        raise ReviewError("This row has been decided already; nothing changed.")
    if r.status != PENDING or (r.retry_count or 0):
        raise ReviewError(f"This row is {r.status} (the worker or someone else acted on it); nothing changed.")
    return r


def _decision_details(r, **extra) -> dict[str, Any]:
    return {"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
            "queue_id": str(r.id), "action_type": r.action_type, **extra}


def approve(conn: sa.Connection, queue_id: uuid.UUID, *, actor: Actor, now: datetime,
            changes: dict[str, Any] | None = None) -> DecisionResult:
    """Approve a held row, optionally after editing its text fields (the stored payload, never a display
    copy; validated as edit-and-retry validates). An edited caption means a new media container, so any
    container state is dropped. The row stays pending; the worker sends it at its next claim. Refused for
    a DM whose messaging window has (nearly) closed."""
    require_operator(actor, "approve queue rows")
    r = _lock_undecided(conn, queue_id)
    window = _window_of(conn, r, now)
    if too_late(window, now):
        raise ReviewError("Too late: this DM's 24-hour messaging window has closed (or closes within "
                          f"{int(SEND_MARGIN.total_seconds() // 60)} minutes); it can no longer be sent.")
    before = dict(r.payload or {})
    after = dict(before)
    allowed = TEXT_FIELDS.get(r.action_type, ())
    for k, v in (changes or {}).items():
        if k not in allowed:
            raise ReviewError(f"{k} cannot be edited on {r.action_type} (editable: {', '.join(allowed)}).")
        v = v.strip() if isinstance(v, str) else v
        if v in (None, ""):
            after.pop(k, None)
        else:
            after[k] = v
    edited = after != before
    if edited and r.action_type in CONTENT_ACTIONS:
        after.pop("creation_id", None)
    problems = payload_problems(r.action_type, after)
    if problems:
        raise ReviewError("Not approved: " + "; ".join(problems))
    q = post_queue
    values: dict[str, Any] = {"updated_at": now}
    if edited:
        new_key = (idempotency_key(r.business_account_id, r.action_type, after)
                   if r.business_account_id is not None else r.idempotency_key)
        if new_key != r.idempotency_key:
            clash = conn.execute(sa.select(q.c.id).where(q.c.idempotency_key == new_key, q.c.id != r.id)).first()
            if clash is not None:
                raise ReviewError(f"Another queue row ({clash.id}) already holds this exact action; nothing written.")
        values.update(payload=after, idempotency_key=new_key)
    done = conn.execute(sa.update(q).where(q.c.id == r.id, q.c.status == PENDING).values(**values)).rowcount
    if not done:
        raise ReviewError("The row changed meanwhile; nothing changed.")
    if edited and r.action_type in CONTENT_ACTIONS:
        conn.execute(sa.delete(post_queue_state).where(post_queue_state.c.queue_id == r.id))
    original, final = action_text(r.action_type, before), action_text(r.action_type, after)
    distance = edit_distance(original, final) if edited else 0
    conn.execute(sa.insert(review_decisions).values(
        queue_id=r.id, business_account_id=r.business_account_id, action_type=r.action_type, decision="approved",
        reviewer=actor.name, reason=None, original_text=original, final_text=final, edited=edited,
        edit_distance=distance, queued_at=as_utc(r.created_at), decided_at=now, window_ends_at=window))
    diff = {k: {"before": before.get(k), "after": after.get(k)}
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="review_approved", action="approve", resource_type="post_queue", resource_id=str(r.id),
        now=now, user_id=actor.name, success=True,
        details=_decision_details(r, edited=edited, edit_distance=distance, changes=diff,
                         queued_at=iso(as_utc(r.created_at)) if r.created_at else None,
                         window_ends_at=iso(window) if window else None))])
    return DecisionResult(True, str(r.id), "Approved" + (" with your edit" if edited else "")
                          + "; the worker sends it at its next pass.")


def reject(conn: sa.Connection, queue_id: uuid.UUID, *, actor: Actor, now: datetime,
           reason: str | None = None) -> DecisionResult:
    """Reject a held row: it goes to dlq with the error "rejected in review[: reason]" and is never sent
    (an operator's later manual retry is a new, audited decision of its own)."""
    require_operator(actor, "reject queue rows")
    r = _lock_undecided(conn, queue_id)
    reason = (reason or "").strip()[:500] or None
    q = post_queue
    error = REJECT_ERROR + (f": {reason}" if reason else "")
    done = conn.execute(sa.update(q).where(q.c.id == r.id, q.c.status == PENDING)
                        .values(status="dlq", error=error, error_category="permanent", updated_at=now)).rowcount
    if not done:
        raise ReviewError("The row changed meanwhile; nothing changed.")
    text = action_text(r.action_type, r.payload)
    conn.execute(sa.insert(review_decisions).values(
        queue_id=r.id, business_account_id=r.business_account_id, action_type=r.action_type, decision="rejected",
        reviewer=actor.name, reason=reason, original_text=text, final_text=None, edited=False, edit_distance=None,
        queued_at=as_utc(r.created_at), decided_at=now, window_ends_at=None))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="review_rejected", action="reject", resource_type="post_queue", resource_id=str(r.id),
        now=now, user_id=actor.name, success=True, error_message=error, details=_decision_details(r, reason=reason))])
    return DecisionResult(True, str(r.id), "Rejected: moved to the dead-letter queue, never sent.")


def decide_many(conn: sa.Connection, ids, *, decision: str, actor: Actor, now: datetime,
                reason: str | None = None) -> list[DecisionResult]:
    """Approve or reject several rows (no edits); each row is decided or refused on its own."""
    require_operator(actor, f"{decision} queue rows")
    wanted = list(dict.fromkeys(uuid.UUID(str(i)) for i in ids))
    if len(wanted) > MAX_BULK:
        raise ReviewError(f"At most {MAX_BULK} rows at once (got {len(wanted)}).")
    out = []
    for qid in sorted(wanted):  # lock order: two bulk decisions never deadlock
        try:
            with conn.begin_nested():
                if decision == "approve":
                    out.append(approve(conn, qid, actor=actor, now=now))
                elif decision == "reject":
                    out.append(reject(conn, qid, actor=actor, now=now, reason=reason))
                else:
                    raise ValueError(f"unknown decision {decision!r}")
        except ReviewError as exc:
            out.append(DecisionResult(False, str(qid), str(exc)))
    order = {q: i for i, q in enumerate(wanted)}
    return sorted(out, key=lambda r: order[uuid.UUID(r.queue_id)])


def expire_due(conn: sa.Connection, *, now: datetime, review_actions: tuple[str, ...] | None = None) -> int:
    """Held or approved DMs whose 24-hour window has (nearly) closed: to dlq, never sent late, each with a
    review_expired audit row (user_id "worker"). Run by the worker before it claims."""
    q, ctx, d = post_queue, review_context, review_decisions
    limit = now + SEND_MARGIN
    window = sa.func.coalesce(d.c.window_ends_at, ctx.c.window_ends_at)
    stmt = (sa.select(q.c.id, q.c.business_account_id, q.c.action_type, q.c.payload, q.c.created_at,
                      d.c.decision, window.label("window"))
            .select_from(q.outerjoin(ctx, ctx.c.queue_id == q.c.id).outerjoin(d, d.c.queue_id == q.c.id))
            .where(q.c.status == PENDING, q.c.action_type.in_(DM_ACTIONS), held_clause(now, review_actions),
                   sa.or_(window <= limit, sa.and_(window.is_(None), q.c.created_at <= limit - DM_WINDOW)))
            .limit(500))
    rows = conn.execute(stmt).all()
    n = 0
    for r in rows:
        done = conn.execute(sa.update(q).where(q.c.id == r.id, q.c.status == PENDING).values(
            status="dlq", error=EXPIRE_ERROR, error_category="permanent", updated_at=now)).rowcount
        if not done:
            continue
        ends = as_utc(r.window) or dm_window_ends(created_at=as_utc(r.created_at) or now, last_customer_message_at=None)
        text = action_text(r.action_type, r.payload)
        if r.decision is None:
            conn.execute(sa.insert(d).values(
                queue_id=r.id, business_account_id=r.business_account_id, action_type=r.action_type,
                decision="expired", reviewer="worker", reason=None, original_text=text, final_text=None,
                edited=False, edit_distance=None, queued_at=as_utc(r.created_at), decided_at=now,
                window_ends_at=ends))
        else:  # approved too late to send: the decision says so now
            conn.execute(sa.update(d).where(d.c.queue_id == r.id).values(decision="expired", decided_at=now))
        conn.execute(sa.insert(audit_log), [audit_row(
            event_type="review_expired", action="expire", resource_type="post_queue", resource_id=str(r.id),
            now=now, user_id="worker", success=False, error_message=EXPIRE_ERROR,
            details={"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
                     "queue_id": str(r.id), "action_type": r.action_type, "window_ends_at": iso(ends),
                     "approved_before": r.decision == "approved"})])
        n += 1
    return n


# -- the worker: rescue, claim, renew, release, record -----------------------------------------------

def _mine_clause(row_id, token):
    """Still ours: processing with our claim time as its token (values or bind parameters)."""
    return sa.and_(pq.c.id == row_id, pq.c.status == PROCESSING, pq.c.updated_at == token)


def _mine(row: Claimed):
    return _mine_clause(row.id, row.token)


def _upsert_state(conn: sa.Connection, queue_id: uuid.UUID, values: dict[str, Any]) -> None:
    """Write our post_queue_state row (keyed by the queue id) in the caller's transaction."""
    upsert(conn, pqs, key="queue_id", values={"queue_id": queue_id, **values}, update=values)


def _not_waiting(now: datetime) -> dict[str, Any]:
    return {"wait_kind": None, "wait_reason": None, "waiting_since": None, "wait_until": None, "updated_at": now}


def rescue_stale(engine: Engine, *, now: datetime, lease_s: int, max_retries: int, limit: int = 500) -> int:
    """Rows left in processing longer than the lease count as a failed attempt of unknown outcome.

    They are due again at once (next_retry_at = now): the lease itself was the wait, and it is
    longer than the first backoff steps. Exhausted rows go to dlq. The attempt may have reached
    Instagram, so the row is marked uncertain: a reply first looks whether it is already there,
    a publish always reads its container first.
    """
    with write_transaction(engine) as conn:
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
            counters.count_action(r.action_type, decision.status, "unknown")
            log.warning("row %s %s rescued after lease -> %s (retry_count=%s)", r.id, r.action_type,
                        decision.status, decision.retry_count,
                        extra=fields(row_id=r.id, action_type=r.action_type, outcome=decision.status,
                                     error_category="unknown"))
            if decision.status == DLQ:
                _audit_dlq(conn, r.id, r.business_account_id, r.action_type, "unknown", message,
                           decision.retry_count, None, now)
    return rescued


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
                updated = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return payload, as_utc(updated), None


def dead_letter_unreadable(engine: Engine, row_id: uuid.UUID, account_id, action_type: str, why: str, *,
                           token: datetime, now: datetime) -> bool:
    """A claimed row that cannot be read goes to the DLQ alone, in its own transaction, with a clear
    error; nothing is sent for it and the rest of the batch goes on."""
    message = f"the row cannot be read: {why}; fix it (Queue Monitor: edit) or discard it"
    with write_transaction(engine) as conn:
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
    """Up to batch_size claimable rows (lib.queue.holds.claimable_clause), oldest due first -> processing.
    Rows that cannot be read are dead-lettered one by one after the claim (dead_letter_unreadable;
    their ids are appended to `dead_lettered`)."""
    unreadable: list[tuple[Any, Any, str, str]] = []
    with write_transaction(engine) as conn:
        raw = conn.dialect.name == "sqlite"
        without_jit(conn)  # the hold conditions' estimate made every claim compile for 0.4 s at 5M rows
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
    with write_transaction(engine) as conn:
        for row in rows:
            n += conn.execute(
                sa.update(pq).where(_mine(row)).values(status=row.prev_status,
                                                       updated_at=row.prev_updated_at or row.token)
            ).rowcount
    return n


def _row_details(row: Claimed, **extra: Any) -> dict[str, Any]:
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
    """Persist the containers before the next Graph call: creation_id in the payload
    (the spec's key), when it was made and the carousel items in post_queue_state. A retry then
    reads this container instead of making a second post. Also renews the claim token."""
    payload = {k: v for k, v in row.payload.items() if k != "creation_id"}
    if state.creation_id:
        payload["creation_id"] = state.creation_id
    with write_transaction(engine) as conn:
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
    with write_transaction(engine) as conn:
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
            now=now, success=True, details=_row_details(row, instagram_id=instagram_id, retry_count=row.retry_count,
                                                    payload=redact(row.payload), **extra)).items()}
    with write_transaction(engine) as conn:
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
        counters.count_action(row.action_type, SENT)
    return bool(done)


def record_wait(engine: Engine, row: Claimed, wait: Wait, until: datetime | None, *, now: datetime,
                alert_message: str | None = None) -> bool:
    """The row waits on Instagram, not on a failure: pending with next_retry_at = when it is due
    again, retry_count unchanged, error 'waiting: <reason>', error_category NULL; why and since
    when in post_queue_state (the Queue Monitor's "Waiting on Instagram")."""
    since = row.waiting_since or now
    text = f"waiting: {wait.reason}"[:1000]
    with write_transaction(engine) as conn:
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
    counters.count_action(row.action_type, "waiting")
    return True


def record_failure(engine: Engine, row: Claimed, exc: BaseException, category: Category, message: str, *,
                   now: datetime, max_retries: int, uncertain: bool = False) -> str | None:
    """Store the failed attempt and its side effects (audit, alerts, disconnect). -> new status."""
    decision = next_attempt(row.retry_count, category, max_retries=max_retries)
    code = exc.code if isinstance(exc, GraphError) else None
    subcode = exc.subcode if isinstance(exc, GraphError) else None
    with write_transaction(engine) as conn:
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
                          success=False, error_message=message, details=_row_details(row, error_code=code))
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
    counters.count_action(row.action_type, decision.status, category.error_category)
    return decision.status


def refresh_rollup(engine: Engine, *, now: datetime) -> bool:
    """The Queue Monitor's sent rollup (lib.queue.store.refresh_sent_rollup), at most every few minutes.
    Two workers creating its state row at once: the second one's insert conflicts and it skips."""
    try:
        with engine.begin() as conn:
            return refresh_sent_rollup(conn, now=now)
    except sa.exc.IntegrityError:
        return False


def record_hold(engine, row: Claimed, exc: BaseException, category: Category, message: str, now: datetime) -> str | None:
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
    with write_transaction(engine) as conn:
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
    counters.count_action(row.action_type, "held", category.error_category)
    log.warning("row %s %s -> pending, account %s held %s: %s", row.id, row.action_type, name, when, message,
                extra=fields(row_id=row.id, action_type=row.action_type, outcome="held"))
    return PENDING
