"""post_queue: names from spec 1.2/1.3, idempotency (DESIGN decision 5), enqueue.

The Queue Monitor's reads and the manual retry live here too; the worker's claim/record
cycle lives in worker/ and uses these names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from lib.audit import audit_row
from lib.redact import REDACTED, is_secret_key, redact, redact_text  # noqa: F401  (re-exported)
from lib.identity import require_operator
from lib.schema import audit_log, post_queue
from lib.timeutil import as_utc, iso

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


# -- Queue Monitor: reads ------------------------------------------------------------------------
# Everything below takes a connection and keyword arguments and returns plain data; the Overview
# page reuses status_summary/queue_health, the Queue Monitor page uses all of it.


MAX_BULK_RETRY = 1000  # "retry all matching" is capped here (issue 4)
_CHUNK = 500  # ids per IN (...) list: well below SQLite's and psycopg2's parameter limits


def _account_clause(account_id):
    return None if account_id is None else post_queue.c.business_account_id == account_id


def status_summary(conn: sa.Connection, *, account_id: uuid.UUID | None = None, now: datetime) -> dict[str, Any]:
    """GET /post-queue/status (spec 1.5): counts by action_type x status, computed by GROUP BY.

    {"success": True, "summary": {"publish_post::pending": 5, ...}, "total": 178, "timestamp": "...Z"}
    Only combinations that occur are listed (as the endpoint does).
    """
    q = post_queue
    stmt = sa.select(q.c.action_type, q.c.status, sa.func.count().label("n")).group_by(q.c.action_type, q.c.status)
    if account_id is not None:
        stmt = stmt.where(_account_clause(account_id))
    summary: dict[str, int] = {}
    total = 0
    for action_type, status, n in conn.execute(stmt.order_by(q.c.action_type, q.c.status)):
        summary[f"{action_type}::{status}"] = int(n)
        total += int(n)
    return {"success": True, "summary": summary, "total": total, "timestamp": iso(now)}


def summary_matrix(summary: dict[str, int]) -> tuple[list[str], list[str], dict[tuple[str, str], int]]:
    """(action types, statuses, {(action_type, status): n}) from a status_summary()["summary"].

    Known names come first in spec order; anything else (someone else's writer) is kept after them.
    """
    cells: dict[tuple[str, str], int] = {}
    for key, n in summary.items():
        action_type, _, status = key.partition("::")
        cells[(action_type, status)] = cells.get((action_type, status), 0) + n
    extra_a = sorted({a for a, _ in cells} - set(ACTION_TYPES))
    extra_s = sorted({s for _, s in cells} - set(STATUSES))
    return [*ACTION_TYPES, *extra_a], [*STATUSES, *extra_s], cells


def queue_health(
    conn: sa.Connection, *, account_id: uuid.UUID | None = None, now: datetime, lease_s: int = 600
) -> dict[str, Any]:
    """What the worker faces right now, all counted in SQL.

    due_now: rows the next tick would take (pending, or failed whose next_retry_at has come);
    oldest_pending_at / oldest_pending_age_s: the oldest pending row; stuck: rows in
    processing longer than the lease (DESIGN decision 4), which the worker will take back.
    """
    q = post_queue
    due = sa.or_(
        sa.and_(q.c.status == "pending", sa.or_(q.c.next_retry_at.is_(None), q.c.next_retry_at <= now)),
        sa.and_(q.c.status == "failed", q.c.next_retry_at <= now),
    )
    stuck = sa.and_(q.c.status == "processing", q.c.updated_at < now - timedelta(seconds=lease_s))
    stmt = sa.select(
        sa.func.count().filter(due).label("due_now"),
        sa.func.count().filter(stuck).label("stuck"),
        sa.func.min(q.c.created_at).filter(q.c.status == "pending").label("oldest_pending_at"),
    ).where(q.c.status.in_(("pending", "failed", "processing")))
    if account_id is not None:
        stmt = stmt.where(_account_clause(account_id))
    row = conn.execute(stmt).one()
    oldest = as_utc(row.oldest_pending_at)
    return {
        "due_now": int(row.due_now or 0),
        "stuck": int(row.stuck or 0),
        "oldest_pending_at": oldest,
        "oldest_pending_age_s": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        "lease_s": lease_s,
        "timestamp": iso(now),
    }


@dataclass(frozen=True)
class QueueFilter:
    """Which rows a table, an export or a "retry all matching" is about."""

    status: str = "dlq"
    account_id: uuid.UUID | None = None
    action_type: str | None = None
    error_category: str | None = None
    search: str | None = None  # case-insensitive substring of the error text
    errors: tuple[str, ...] | None = None  # exact error texts (one small normalised error group)
    ids: tuple[str, ...] | None = None  # row ids (a big error group, at most GROUP_ROW_CAP; see group_filter)

    def clauses(self) -> list:
        q = post_queue
        out = [q.c.status == self.status]
        if self.account_id is not None:
            out.append(q.c.business_account_id == self.account_id)
        if self.action_type:
            out.append(q.c.action_type == self.action_type)
        if self.error_category == "(none)":
            out.append(q.c.error_category.is_(None))
        elif self.error_category:
            out.append(q.c.error_category == self.error_category)
        if self.search and self.search.strip():
            out.append(sa.func.lower(q.c.error).contains(self.search.strip().lower(), autoescape=True))
        if self.errors is not None:
            out.append(q.c.error.in_(self.errors) if self.errors else sa.false())
        if self.ids is not None:
            out.append(q.c.id.in_([uuid.UUID(i) for i in self.ids]) if self.ids else sa.false())
        return out


ERRORS_IN_CAP = 500  # an error group with at most this many distinct texts is selected by its texts
GROUP_ROW_CAP = 10_000  # a bigger group is selected by the ids of its first rows (table order)


def group_filter(conn: sa.Connection, base: QueueFilter, *, error_category: str, error_group: str,
                 errors: tuple[str, ...]) -> tuple[QueueFilter, bool]:
    """`base` narrowed to one error group, with a bounded number of bound values whatever the data:
    by its raw texts when there are few (ERRORS_IN_CAP), else by the ids of its first GROUP_ROW_CAP
    rows in table order (SQLite refuses statements with more than 32,766 values).

    Returns (filter, capped): capped is True when the group has more rows than the filter holds."""
    if len(errors) <= ERRORS_IN_CAP:
        return dataclasses.replace(base, errors=tuple(errors), ids=None), False
    q = post_queue
    stmt = sa.select(q.c.id, q.c.error_category, q.c.error).where(*base.clauses()).order_by(*_newest_first(base.status))
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
    memo: dict[str | None, str] = {}
    ids: list[str] = []
    capped = False
    try:
        for row in result:
            if (row.error_category or "(none)") != error_category:
                continue
            key = memo.get(row.error)
            if key is None:
                key = memo[row.error] = normalize_error(row.error)
            if key != error_group:
                continue
            if len(ids) >= GROUP_ROW_CAP:
                capped = True
                break
            ids.append(str(row.id))
    finally:
        result.close()
    return dataclasses.replace(base, errors=None, ids=tuple(ids)), capped


_ROW_COLUMNS = ("id", "business_account_id", "action_type", "status", "error_category", "error", "retry_count",
                "next_retry_at", "created_at", "updated_at")


def _newest_first(status: str):
    q = post_queue
    if status == "failed":  # the next to be retried first
        return (q.c.next_retry_at.asc(), q.c.id.asc())
    return (q.c.updated_at.desc(), q.c.id.desc())


def _plain(row) -> dict[str, Any]:
    d = dict(row._mapping)
    for k in ("next_retry_at", "created_at", "updated_at"):
        if k in d:
            d[k] = as_utc(d[k])
    return d


def queue_rows(conn: sa.Connection, *, filt: QueueFilter, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """One page of rows matching `filt` (no payload), newest attempt first (failed: soonest retry first).

    Paginated in SQL (LIMIT/OFFSET over the (status, updated_at) index)."""
    q = post_queue
    stmt = (
        sa.select(*(q.c[c] for c in _ROW_COLUMNS))
        .where(*filt.clauses())
        .order_by(*_newest_first(filt.status))
        .limit(limit)
        .offset(offset)
    )
    return [_plain(r) for r in conn.execute(stmt)]


def count_rows(conn: sa.Connection, *, filt: QueueFilter) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(post_queue).where(*filt.clauses())).scalar() or 0)


def matching_ids(conn: sa.Connection, *, filt: QueueFilter, limit: int = MAX_BULK_RETRY) -> list[uuid.UUID]:
    """The ids a "retry all matching" acts on: the first `limit` in table order."""
    q = post_queue
    stmt = sa.select(q.c.id).where(*filt.clauses()).order_by(*_newest_first(filt.status)).limit(limit)
    return [r[0] for r in conn.execute(stmt)]


def dlq_rows(
    conn: sa.Connection,
    *,
    limit: int = 50,
    offset: int = 0,
    now: datetime,
    account_id: uuid.UUID | None = None,
    action_type: str | None = None,
    error_category: str | None = None,
    search: str | None = None,
) -> dict[str, Any]:
    """GET /post-queue/dlq?limit=50 (spec 1.5): {success, dlq: [...], count, timestamp}.

    Items carry the row's columns (payload redacted), ids and times as ISO strings; `count` is
    the number of items returned, as the endpoint's."""
    filt = QueueFilter("dlq", account_id, action_type, error_category, search)
    q = post_queue
    stmt = (
        sa.select(*(q.c[c] for c in _ROW_COLUMNS), q.c.payload, q.c.idempotency_key)
        .where(*filt.clauses())
        .order_by(*_newest_first("dlq"))
        .limit(limit)
        .offset(offset)
    )
    items = []
    for r in conn.execute(stmt):
        d = _plain(r)
        d["payload"] = redact(d.get("payload"))
        items.append({k: (iso(v) if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v)
                      for k, v in d.items()})
    return {"success": True, "dlq": items, "count": len(items), "timestamp": iso(now)}


# -- error grouping (pure) --------------------------------------------------------------------

_UUID_RE = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I)
_HEX_RE = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{12,}\b", re.I)
_NUM_RE = re.compile(r"\d+")
_QUOTED_RE = re.compile(r"(['\"])(?:(?!\1).){1,200}\1")
_WS_RE = re.compile(r"\s+")


def normalize_error(error: str | None) -> str:
    """The error text with the parts that differ per row (ids, numbers, quoted values, times)
    replaced, so equal causes group together: 'Invalid media id 1789' -> 'Invalid media id #'.

    The leading '(#190)'-style Graph code is kept: it names the cause."""
    if not error:
        return "(no error text)"
    text = _WS_RE.sub(" ", str(error)).strip()
    code = ""
    m = re.match(r"^\(#\d+\)\s*", text)
    if m:
        code, text = m.group(0).strip() + " ", text[m.end():]
    text = _UUID_RE.sub("<id>", text)
    text = _HEX_RE.sub("<id>", text)
    text = _QUOTED_RE.sub("'…'", text)
    text = _NUM_RE.sub("#", text)
    text = text[:160] + ("…" if len(text) > 160 else "")
    return code + text


def group_errors(rows) -> list[dict[str, Any]]:
    """Merge (error_category, error, n) rows into groups by category and normalised text,
    biggest first: [{error_category, error_group, count, errors: (raw texts...)}]."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for category, error, n in rows:
        key = (category or "(none)", normalize_error(error))
        g = groups.setdefault(key, {"error_category": key[0], "error_group": key[1], "count": 0, "errors": []})
        g["count"] += int(n)
        g["errors"].append(error)
    out = sorted(groups.values(), key=lambda g: (-g["count"], g["error_category"], g["error_group"]))
    for g in out:
        g["errors"] = tuple(sorted(e for e in g["errors"] if e is not None))
    return out


def error_groups(conn: sa.Connection, *, filt: QueueFilter) -> list[dict[str, Any]]:
    """Rows matching `filt` grouped by error category and normalised error text, with counts.

    SQL groups by (error_category, error); the normalisation merges those groups in Python, so the
    work is proportional to the number of distinct error texts, not rows."""
    q = post_queue
    base = QueueFilter(filt.status, filt.account_id, filt.action_type, filt.error_category, filt.search)
    stmt = (
        sa.select(q.c.error_category, q.c.error, sa.func.count())
        .where(*base.clauses())
        .group_by(q.c.error_category, q.c.error)
    )
    return group_errors(conn.execute(stmt))


# -- payload redaction: the rule lives in lib/redact.py ------------------------------------------


# -- row detail ---------------------------------------------------------------------------------

def row_detail(conn: sa.Connection, queue_id: uuid.UUID) -> dict[str, Any] | None:
    """One row with its payload redacted and its history from audit_log (oldest first):
    the worker's failures and dead-lettering, earlier manual retries, the final success."""
    q = post_queue
    row = conn.execute(sa.select(q).where(q.c.id == queue_id)).first()
    if row is None:
        return None
    d = _plain(row)
    d["payload"] = redact(d.get("payload"))
    a = audit_log
    rid = str(queue_id)
    history = conn.execute(
        sa.select(a.c.created_at, a.c.event_type, a.c.action, a.c.user_id, a.c.success, a.c.error_message, a.c.details)
        .where(sa.or_(a.c.resource_id == rid, a.c.details["queue_id"].as_string() == rid))
        .order_by(a.c.created_at.asc(), a.c.id.asc())
        .limit(500)
    )
    d["history"] = [
        {**dict(h._mapping), "created_at": as_utc(h.created_at), "details": redact(h.details)} for h in history
    ]
    return d


# -- Queue Monitor: the manual retry (DESIGN decision 3) ----------------------------------------

@dataclass(frozen=True)
class RetryResult:
    """POST /post-queue/retry's response for one row (spec 1.5), plus the status it had."""

    success: bool
    queue_id: str
    action_type: str | None
    previous_retry_count: int | None
    message: str
    previous_status: str | None = field(default=None, compare=False)

    def as_response(self) -> dict[str, Any]:
        """Exactly the endpoint's shape: {success, queue_id, action_type, previous_retry_count, message}."""
        d = asdict(self)
        d.pop("previous_status")
        return d


_REFUSAL = {
    "pending": "Already pending: the worker will take it on its next tick; nothing changed.",
    "processing": "The worker is executing this row right now; nothing changed.",
    "sent": "Already sent to Instagram; nothing changed.",
}


def retry(conn: sa.Connection, ids, *, actor, now: datetime) -> list[RetryResult]:
    """Reset failed/dlq rows to pending (retry_count 0, next_retry_at cleared), one result per id.

    Runs in the caller's transaction (use engine.begin()); at most MAX_BULK_RETRY ids. The reset
    is a conditional UPDATE ... WHERE id IN (...) AND status = <seen> AND retry_count = <seen>
    RETURNING id, so a row that the worker claimed or changed since it was read is reported,
    never reset; rows are read and updated in chunks of 500, grouped by what was seen (a
    handful of statements for 1,000 rows). Each reset row gets an audit_log row
    (queue_item_retried) naming the actor and the row's previous status, retry_count and error.

    `actor` is a lib.identity.Actor; anyone but an operator gets PermissionDenied, whatever the
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
    for start in range(0, len(in_lock_order), _CHUNK):
        chunk = in_lock_order[start:start + _CHUNK]
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
                                       _REFUSAL.get(r.status, f"Status {r.status!r} cannot be retried; nothing changed."),
                                       r.status))
    if audits:
        conn.execute(sa.insert(audit_log), audits)
    return results


EXPORT_COLUMNS = ("id", "account", "business_account_id", "action_type", "status", "error_category", "error",
                  "retry_count", "next_retry_at", "created_at", "updated_at")


def iter_export_rows(conn: sa.Connection, *, filt: QueueFilter, chunk_size: int = 2000):
    """Rows matching `filt` for a CSV export, in table order, as chunks of tuples in EXPORT_COLUMNS
    order, read with a server-side cursor (no payload: it may hold personal data)."""
    from lib.schema import instagram_business_accounts as acc

    q = post_queue
    stmt = (
        sa.select(q.c.id, acc.c.username, q.c.business_account_id, q.c.action_type, q.c.status, q.c.error_category,
                  q.c.error, q.c.retry_count, q.c.next_retry_at, q.c.created_at, q.c.updated_at)
        .select_from(q.outerjoin(acc, acc.c.id == q.c.business_account_id))
        .where(*filt.clauses())
        .order_by(*_newest_first(filt.status))
    )
    result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(stmt)
    for part in result.partitions(chunk_size):
        yield [tuple(iso(as_utc(v)) if isinstance(v, datetime) else redact_text(v) if c == "error" else v
                     for c, v in zip(EXPORT_COLUMNS, row)) for row in part]
