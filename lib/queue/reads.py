"""The queue as the pages and the API read it: counts by action type and status, health, waiting rows,
filtered lists, error groups, a row's detail and attempts, exports and the search by what was sent.
"""
from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.core.audit import LIKE_ESCAPE, escape_like
from lib.core.db import without_jit
from lib.core.redact import redact, redact_text
from lib.core.schema import (
    audit_log,
    post_queue,
    post_queue_attempts,
    post_queue_rollup_state,
    post_queue_sent_daily,
    post_queue_sent_totals,
    post_queue_state,
    queue_pauses,
)
from lib.core.schema import instagram_business_accounts as acc
from lib.core.schema import post_queue as pq
from lib.core.schema import post_queue_state as pqs
from lib.core.timeutil import as_utc, iso
from lib.queue.holds import claimable_clause, held_back_clause
from lib.queue.rules import (
    ERRORS_IN_CAP,
    EXPORT_COLUMNS,
    FAILED,
    GROUP_ROW_CAP,
    MAX_BULK_RETRY,
    PENDING,
    PROCESSING,
    SENT,
    SENT_SEARCH_CAP,
    SENT_SEARCH_MAX_CHARS,
    SENT_SEARCH_MIN_CHARS,
    SENT_SEARCH_SHOWN,
    Claimed,
    Pause,
    QueueFilter,
    SentSearch,
    account_clause,
    active_clause,
    due_clause,
    editable_fields,
    group_errors,
    idempotency_key,
    normalize_error,
    other_clause,
    pause_covers,
    payload_text,
    sent_clause,
    stale_clause,
)


def rollup_state(conn: sa.Connection) -> dict[str, Any] | None:
    """{closed_until, verify_cursor, refreshed_at} of the sent rollup, or None before its first refresh."""
    row = conn.execute(sa.select(post_queue_rollup_state).where(post_queue_rollup_state.c.id == 1)).first()
    if row is None:
        return None
    return {k: as_utc(getattr(row, k)) for k in ("closed_until", "verify_cursor", "refreshed_at")}


def status_summary(conn: sa.Connection, *, account_id: uuid.UUID | None = None, now: datetime) -> dict[str, Any]:
    """GET /post-queue/status: counts by action_type x status.

    {"success": True, "summary": {"publish_post::pending": 5, ...}, "total": 178, "timestamp": "...Z",
     "sent_24h": 1200, "sent_7d": 8000, "sent_as_of": datetime | None, "sent_exact_since": datetime | None}
    Only combinations that occur are listed (as the endpoint does), statuses outside the spec's five
    (another program's writer) included.

    The cost does not grow with the history of sent rows: the active statuses are counted from
    ix_post_queue_active (it holds only those rows; any other status from ix_post_queue_other_status);
    their cost grows with the backlog of those rows, not with history. `sent` is the rollup's closed days
    (post_queue_sent_daily, refreshed by the worker, see refresh_sent_rollup; read from its per-account
    sum post_queue_sent_totals, which the same refresh rewrites) plus the rows sent
    since its last closed day, counted live from ix_post_queue_sent_updated_at, as are sent_24h and
    sent_7d. sent_as_of: when the rollup was last refreshed (None: never; then every sent row is
    counted live). sent_exact_since: sent rows whose updated_at is at or after this time are counted
    exactly; older ones as of the rollup's last recount of their day (see refresh_sent_rollup).
    """
    q = post_queue
    state = rollup_state(conn)
    closed_until = state["closed_until"] if state else None
    cells: dict[tuple[str, str], int] = {}

    def add(action_type, status, n):
        if n:
            cells[(action_type, status)] = cells.get((action_type, status), 0) + int(n)

    not_sent = []
    for clause in (active_clause(), other_clause()):  # each from its own partial index, one statement
        part = sa.select(q.c.action_type, q.c.status, sa.func.count()).where(clause)
        if account_id is not None:
            part = part.where(account_clause(account_id))
        not_sent.append(part.group_by(q.c.action_type, q.c.status))
    for action_type, status, n in conn.execute(sa.union_all(*not_sent)):
        add(action_type, status, n)

    day, week = now - timedelta(hours=24), now - timedelta(days=7)
    # two parts, each an index range on ix_post_queue_sent_updated_at (an OR of both would read it whole):
    # rows sent since min(closed_until, 7 d ago), and rows without updated_at (someone else's tool)
    lo = week if closed_until is None else min(week, closed_until)
    recent = sa.select(q.c.action_type.label("action_type"),
                       sa.func.count().filter(sa.true() if closed_until is None else q.c.updated_at >= closed_until)
                       .label("live"),
                       sa.func.count().filter(q.c.updated_at >= day).label("day"),
                       sa.func.count().filter(q.c.updated_at >= week).label("week"))
    recent = recent.where(sent_clause(), *([] if closed_until is None else [q.c.updated_at >= lo]))
    undated = (sa.select(q.c.action_type, sa.func.count(), sa.literal(0), sa.literal(0))
               .where(sent_clause(), q.c.updated_at.is_(None)))
    if account_id is not None:
        recent = recent.where(account_clause(account_id))
        undated = undated.where(account_clause(account_id))
    parts = [recent.group_by(q.c.action_type)]
    if closed_until is not None:  # before the first refresh `recent` counts every sent row already
        parts.append(undated.group_by(q.c.action_type))
    sent_24h = sent_7d = 0
    for action_type, n_live, n_day, n_week in conn.execute(sa.union_all(*parts) if len(parts) > 1 else parts[0]):
        add(action_type, SENT, n_live)
        sent_24h += int(n_day or 0)
        sent_7d += int(n_week or 0)

    if closed_until is not None:
        # the closed days' sum, kept by the refresh (a few dozen rows however long the history); a database
        # that had the daily rollup before the totals existed sums the days until its next refresh
        for d in (post_queue_sent_totals, post_queue_sent_daily):
            rolled = sa.select(d.c.action_type, sa.func.sum(d.c.sent))
            if d is post_queue_sent_daily:
                rolled = rolled.where(d.c.day < closed_until)
            if account_id is not None:
                rolled = rolled.where(d.c.business_account_id == account_id)
            found = conn.execute(rolled.group_by(d.c.action_type)).all()
            for action_type, n in found:
                add(action_type, SENT, n)
            if found or not totals_missing(conn):
                break

    summary: dict[str, int] = {}
    for action_type, status in sorted(cells):
        summary[f"{action_type}::{status}"] = cells[(action_type, status)]
    return {"success": True, "summary": summary, "total": sum(summary.values()), "timestamp": iso(now),
            "sent_24h": sent_24h, "sent_7d": sent_7d, "sent_as_of": state["refreshed_at"] if state else None,
            "sent_exact_since": closed_until}


def queue_health(
    conn: sa.Connection, *, account_id: uuid.UUID | None = None, now: datetime, lease_s: int = 600
) -> dict[str, Any]:
    """What the worker faces right now, all counted in SQL.

    due_now: rows the next tick would take (claimable_clause: the worker's own rule);
    held_back: due rows it leaves alone (disconnected or throttled account);
    oldest_pending_at / oldest_pending_age_s: the oldest pending row; stuck: rows in
    processing longer than the lease (stale_clause), which the worker will take back.
    """
    q = post_queue
    stmt = sa.select(
        sa.func.count().filter(claimable_clause(now)).label("due_now"),
        sa.func.count().filter(due_clause(now), held_back_clause(now)).label("held_back"),
        sa.func.count().filter(stale_clause(now, lease_s)).label("stuck"),
        sa.func.min(q.c.created_at).filter(q.c.status == PENDING).label("oldest_pending_at"),
    ).where(q.c.status.in_((PENDING, FAILED, PROCESSING)))
    if account_id is not None:
        stmt = stmt.where(account_clause(account_id))
    without_jit(conn)
    row = conn.execute(stmt).one()
    oldest = as_utc(row.oldest_pending_at)
    return {
        "due_now": int(row.due_now or 0),
        "held_back": int(row.held_back or 0),
        "stuck": int(row.stuck or 0),
        "oldest_pending_at": oldest,
        "oldest_pending_age_s": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        "lease_s": lease_s,
        "timestamp": iso(now),
    }


def waiting_rows(conn: sa.Connection, *, account_id: uuid.UUID | None = None, now: datetime,
                 limit: int = 50) -> list[dict[str, Any]]:
    """Pending rows that wait on Instagram (a container being processed, the publishing quota),
    soonest due first: id, action_type, business_account_id, wait_kind, wait_reason, waiting_since,
    next_retry_at, waited_s, due_in_s, creation_id. From post_queue_state, written by the worker."""
    q, st = post_queue, post_queue_state
    stmt = (
        sa.select(q.c.id, q.c.action_type, q.c.business_account_id, q.c.next_retry_at, q.c.retry_count,
                  st.c.wait_kind, st.c.wait_reason, st.c.waiting_since, st.c.creation_id)
        .select_from(st.join(q, q.c.id == st.c.queue_id))
        .where(q.c.status == PENDING, st.c.wait_kind.is_not(None))
        .order_by(q.c.next_retry_at.asc(), q.c.id)
        .limit(limit)
    )
    if account_id is not None:
        stmt = stmt.where(q.c.business_account_id == account_id)
    out = []
    for r in conn.execute(stmt):
        d = _plain(r)
        d["waiting_since"] = as_utc(d["waiting_since"])
        d["waited_s"] = None if d["waiting_since"] is None else max(0.0, (now - d["waiting_since"]).total_seconds())
        d["due_in_s"] = None if d["next_retry_at"] is None else (d["next_retry_at"] - now).total_seconds()
        out.append(d)
    return out


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
    """GET /post-queue/dlq?limit=50: {success, dlq: [...], count, timestamp}.

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
    d["attempts"] = attempts(conn, queue_id)
    return d


def attempts(conn: sa.Connection, queue_id: uuid.UUID, *, limit: int = 200) -> list[dict[str, Any]]:
    """Every attempt the worker made on the row (post_queue_attempts), newest first."""
    t = post_queue_attempts
    rows = conn.execute(sa.select(t.c.attempted_at, t.c.outcome, t.c.error_category, t.c.error, t.c.error_code,
                                  t.c.error_subcode, t.c.retry_count)
                        .where(t.c.queue_id == queue_id).order_by(t.c.attempted_at.desc()).limit(limit))
    return [{**dict(r._mapping), "attempted_at": as_utc(r.attempted_at)} for r in rows]


def iter_export_rows(conn: sa.Connection, *, filt: QueueFilter, chunk_size: int = 2000):
    """Rows matching `filt` for a CSV export, in table order, as chunks of tuples in EXPORT_COLUMNS
    order, read with a server-side cursor (no payload: it may hold personal data)."""
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


def search_sent(conn: sa.Connection, text: str, *, account_id: uuid.UUID | None = None) -> SentSearch:
    """Rows of any status whose payload contains `text` (case-insensitive): a recipient id, a comment or
    conversation id, words of a caption or a reply. Bounded: it reads at most SENT_SEARCH_CAP matching
    rows (on PostgreSQL through the trigram index when pg_trgm is there), so a common word costs what
    a rare id does; `more` says the list is not all of them."""
    text = (text or "").strip()[:SENT_SEARCH_MAX_CHARS]
    if len(text) < SENT_SEARCH_MIN_CHARS:
        return SentSearch([], False)
    q = post_queue
    match = payload_text().ilike(f"%{escape_like(text)}%", escape=LIKE_ESCAPE)
    if not text.isascii():  # SQLite keeps JSON text as written, non-ASCII escaped ("caf\u00e9")
        escaped = json.dumps(text)[1:-1]
        match = sa.or_(match, payload_text().ilike(f"%{escape_like(escaped)}%", escape=LIKE_ESCAPE))
    cond = [match]
    if account_id is not None:
        cond.append(q.c.business_account_id == account_id)
    found = (sa.select(q.c.id, q.c.status, q.c.action_type, q.c.business_account_id, q.c.payload, q.c.error,
                       q.c.retry_count, q.c.created_at, q.c.updated_at)
             .where(*cond).limit(SENT_SEARCH_CAP + 1).subquery())
    rows = conn.execute(sa.select(found).order_by(found.c.created_at.desc(), found.c.id)).all()
    more = len(rows) > SENT_SEARCH_CAP
    out = []
    for r in rows[:SENT_SEARCH_SHOWN]:
        d = dict(r._mapping)
        d["payload"] = redact(d["payload"])
        d["created_at"], d["updated_at"] = as_utc(d["created_at"]), as_utc(d["updated_at"])
        out.append(d)
    return SentSearch(out, more)


def active_pauses(conn: sa.Connection, *, now: datetime, account_id: uuid.UUID | None = None) -> list[Pause]:
    """Every pause (of this account, or global), with how many due rows wait behind each."""
    p, q = queue_pauses, post_queue
    waiting = (sa.select(sa.func.count()).select_from(q).where(due_clause(now), pause_covers(p, q))
               .scalar_subquery())
    stmt = sa.select(p, waiting.label("waiting")).order_by(p.c.paused_at)
    if account_id is not None:
        stmt = stmt.where(sa.or_(p.c.business_account_id.is_(None), p.c.business_account_id == account_id))
    return [Pause(r.id, r.business_account_id, r.action_type, r.paused_by, r.reason, as_utc(r.paused_at),
                  int(r.waiting or 0)) for r in conn.execute(stmt)]


def discarded_row(conn: sa.Connection, queue_id: uuid.UUID) -> dict[str, Any] | None:
    """Read a discarded row back from its audit row (None when there is none)."""
    a = audit_log
    details = conn.execute(sa.select(a.c.details).where(a.c.event_type == "queue_item_discarded",
                                                        a.c.resource_id == str(queue_id))
                           .order_by(a.c.created_at.desc()).limit(1)).scalar()
    return (details or {}).get("row") if isinstance(details, dict) else None


def stored_values(conn: sa.Connection, queue_id: uuid.UUID) -> dict[str, str] | None:
    """The editable fields of a row exactly as stored (never clipped, never redacted): what an
    edit form starts from, so that an edit changes only what the operator changed. None when the
    row is gone. Only operators see the form; the values are the row's own texts and URLs."""
    q = post_queue
    r = conn.execute(sa.select(q.c.action_type, q.c.payload).where(q.c.id == queue_id)).first()
    if r is None:
        return None
    payload = r.payload if isinstance(r.payload, dict) else {}
    return {k: "" if payload.get(k) is None else str(payload.get(k)) for k in editable_fields(r.action_type)}


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


def totals_missing(conn: sa.Connection) -> bool:
    """True when post_queue_sent_totals is empty but the daily rollup is not (totals not written yet)."""
    t, d = post_queue_sent_totals, post_queue_sent_daily
    return (conn.execute(sa.select(t.c.sent).limit(1)).first() is None
            and conn.execute(sa.select(d.c.sent).limit(1)).first() is not None)
