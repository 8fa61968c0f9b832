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

from lib.core.audit import audit_row
from lib.core.identity import require_operator
from lib.core.redact import REDACTED, is_secret_key, redact, redact_text  # noqa: F401  (re-exported)
from lib.core.text import clip
from lib.core.schema import (audit_log, graph_usage, instagram_business_accounts, post_queue, post_queue_attempts,
                        post_queue_rollup_state,
                        post_queue_sent_daily, post_queue_sent_totals, post_queue_state)
from lib.core.timeutil import as_utc, iso

ACTION_TYPES = ("reply_comment", "reply_dm", "send_dm", "publish_post", "repost_ugc")
CONTENT_ACTIONS = ("publish_post", "repost_ugc")  # the ones that make Instagram media containers
STATUSES = ("pending", "processing", "sent", "failed", "dlq")
PENDING, PROCESSING, SENT, FAILED, DLQ = STATUSES
ACTIVE_STATUSES = (PENDING, PROCESSING, FAILED, DLQ)  # the rows ix_post_queue_active holds
RETRYABLE_STATUSES = (FAILED, DLQ)  # manual retry, DESIGN decision 3
DUE_STATUSES = (PENDING, FAILED)  # the rows ix_post_queue_due holds: what the worker may take
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


# -- the worker's rules, one home each (the worker's claim, the pages' tiles and the metrics) ----

def due_clause(now: datetime):
    """Due: pending or failed, with next_retry_at unset or come. A pending row with a future
    next_retry_at waits on purpose (a container being processed, the publishing quota); a failed
    row without one, written by someone else's tool, is due."""
    q = post_queue
    # literal statuses, as in active_clause: SQLite uses the partial ix_post_queue_due only then
    return sa.and_(q.c.status.in_([sa.literal_column(f"'{s}'") for s in DUE_STATUSES]),
                   sa.or_(q.c.next_retry_at.is_(None), q.c.next_retry_at <= now))


def due_order():
    """The order the worker takes due rows in, oldest due first: ix_post_queue_due's columns."""
    q = post_queue
    return (sa.func.coalesce(q.c.next_retry_at, q.c.created_at), q.c.created_at, q.c.id)


def hold_conditions(now: datetime) -> list[tuple[Any, str]]:
    """Why the worker leaves a due row alone, each as (SQL condition on post_queue, what a person is
    told): a disconnected account (auth failure), an account Instagram holds back (account_holds: a
    block or restriction), an account (or the whole app) that Graph throttled until later
    (graph_usage.regain_at), what an operator paused (queue_pauses), or what waits for a person's
    review (lib.queue.review). Imported here: those modules import this one."""
    from lib.instagram.account_holds import held_clause as instagram_hold
    from lib.queue.control import paused_clause
    from lib.queue.review import held_clause as review_hold

    q, acc, gu = post_queue, instagram_business_accounts, graph_usage
    disconnected = sa.exists().where(acc.c.id == q.c.business_account_id, acc.c.is_connected.is_(False))
    app_throttled = sa.exists().where(gu.c.regain_at > now, gu.c.scope == "app")
    throttled = sa.exists().where(gu.c.regain_at > now, gu.c.business_account_id == q.c.business_account_id)
    return [
        (disconnected, "its account is disconnected: reconnect it (Accounts) before it can be sent"),
        (instagram_hold(now), "Instagram holds its account back (see the banner at the top)"),
        (app_throttled, "Instagram throttles this app for now; the worker resumes by itself"),
        (throttled, "Instagram throttles its account for now; the worker resumes by itself"),
        (paused_clause(), "an operator paused it (see Pauses)"),
        (review_hold(now), "it waits for a person's review (Review page)"),
    ]


def held_back_clause(now: datetime):
    """Due rows the worker leaves alone (hold_conditions)."""
    return sa.or_(*(cond for cond, _ in hold_conditions(now)))


def hold_reasons(conn: sa.Connection, ids, *, now: datetime) -> dict[uuid.UUID, str]:
    """{row id: why the worker will not take it now} for the rows among ids that are held back."""
    ids = list(ids)
    if not ids:
        return {}
    reason = sa.case(*[(cond, sa.literal(text)) for cond, text in hold_conditions(now)], else_=sa.null())
    out = {}
    for start in range(0, len(ids), _CHUNK):
        for rid, why in conn.execute(sa.select(post_queue.c.id, reason).where(post_queue.c.id.in_(ids[start:start + _CHUNK]))):
            if why:
                out[rid] = why
    return out


def claimable_clause(now: datetime):
    """What the next tick takes: due and not held back."""
    return sa.and_(due_clause(now), ~held_back_clause(now))


def came_due_since(conn: sa.Connection, *, since: datetime, now: datetime) -> bool:
    """Is a row claimable now that the tick which started at `since` could not have taken: added,
    reset (a manual retry) or come due after it? The worker service asks this every WORKER_POLL_S
    between its cron ticks. One statement with LIMIT 1 over ix_post_queue_due (only pending and
    failed rows), so its cost follows the backlog of due rows, never the history of sent ones."""
    q = post_queue
    changed = sa.or_(sa.func.coalesce(q.c.next_retry_at, q.c.created_at) > since, q.c.updated_at > since)
    return conn.execute(sa.select(q.c.id).where(claimable_clause(now), changed).limit(1)).first() is not None


def stale_clause(now: datetime, lease_s: int):
    """Rows left in processing longer than the lease (DESIGN decision 4), which the worker takes back."""
    q = post_queue
    return sa.and_(q.c.status == PROCESSING, q.c.updated_at < now - timedelta(seconds=lease_s))


# -- Queue Monitor: reads ------------------------------------------------------------------------
# Everything below takes a connection and keyword arguments and returns plain data; the Overview
# page reuses status_summary/queue_health, the Queue Monitor page uses all of it.


MAX_BULK_RETRY = 1000  # "retry all matching" is capped here (issue 4)
_CHUNK = 500  # ids per IN (...) list: well below SQLite's and psycopg2's parameter limits


def _account_clause(account_id):
    return None if account_id is None else post_queue.c.business_account_id == account_id


def active_clause():
    """status IN ('pending', 'processing', 'failed', 'dlq') with the values as SQL literals, written as
    the partial indexes' predicate is: SQLite uses a partial index only when the query's WHERE names its
    terms, which a bound parameter cannot prove."""
    return post_queue.c.status.in_([sa.literal_column(f"'{s}'") for s in ACTIVE_STATUSES])


def _other_clause():
    """status NOT IN (the spec's five): rows some other writer left with its own status, counted from
    ix_post_queue_other_status (same literal form as active_clause, for the same reason)."""
    return post_queue.c.status.not_in([sa.literal_column(f"'{s}'") for s in STATUSES])


def _sent_clause():
    return post_queue.c.status == sa.literal_column(f"'{SENT}'")


def rollup_state(conn: sa.Connection) -> dict[str, Any] | None:
    """{closed_until, verify_cursor, refreshed_at} of the sent rollup, or None before its first refresh."""
    row = conn.execute(sa.select(post_queue_rollup_state).where(post_queue_rollup_state.c.id == 1)).first()
    if row is None:
        return None
    return {k: as_utc(getattr(row, k)) for k in ("closed_until", "verify_cursor", "refreshed_at")}


def status_summary(conn: sa.Connection, *, account_id: uuid.UUID | None = None, now: datetime) -> dict[str, Any]:
    """GET /post-queue/status (spec 1.5): counts by action_type x status.

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
    for clause in (active_clause(), _other_clause()):  # each from its own partial index, one statement
        part = sa.select(q.c.action_type, q.c.status, sa.func.count()).where(clause)
        if account_id is not None:
            part = part.where(_account_clause(account_id))
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
    recent = recent.where(_sent_clause(), *([] if closed_until is None else [q.c.updated_at >= lo]))
    undated = (sa.select(q.c.action_type, sa.func.count(), sa.literal(0), sa.literal(0))
               .where(_sent_clause(), q.c.updated_at.is_(None)))
    if account_id is not None:
        recent = recent.where(_account_clause(account_id))
        undated = undated.where(_account_clause(account_id))
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
            if found or not _totals_missing(conn):
                break

    summary: dict[str, int] = {}
    for action_type, status in sorted(cells):
        summary[f"{action_type}::{status}"] = cells[(action_type, status)]
    return {"success": True, "summary": summary, "total": sum(summary.values()), "timestamp": iso(now),
            "sent_24h": sent_24h, "sent_7d": sent_7d, "sent_as_of": state["refreshed_at"] if state else None,
            "sent_exact_since": closed_until}


ROLLUP_EVERY_S = 300  # the worker refreshes the sent rollup at most this often
ROLLUP_VERIFY_DAYS = 7  # closed days recounted per refresh (the walk back through history)
ROLLUP_RECENT_DAYS = 2  # closed days recounted on every refresh (late writes land there most)


def _day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _totals_missing(conn: sa.Connection) -> bool:
    """True when post_queue_sent_totals is empty but the daily rollup is not (totals not written yet)."""
    t, d = post_queue_sent_totals, post_queue_sent_daily
    return (conn.execute(sa.select(t.c.sent).limit(1)).first() is None
            and conn.execute(sa.select(d.c.sent).limit(1)).first() is not None)


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
    from lib.core.timebuckets import bucket_expr, bucket_value

    q, d = post_queue, post_queue_sent_daily
    b = bucket_expr(q.c.updated_at, "day", conn.dialect.name).label("b")
    where = [_sent_clause(), q.c.updated_at < hi] + ([] if lo is None else [q.c.updated_at >= lo])
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
    from lib.core.db import take_write_lock

    s = post_queue_rollup_state
    take_write_lock(conn)
    row = conn.execute(sa.select(s).where(s.c.id == 1).with_for_update()).first()
    if row is not None and not force and (now - as_utc(row.refreshed_at)).total_seconds() < every_s:
        return False
    today = _day(now)
    closed = None if row is None else as_utc(row.closed_until)
    if closed is None:
        _recount_days(conn, None, today)  # the first refresh counts all history once
        cursor = today
    else:
        if today > closed:
            _recount_days(conn, closed, today)  # the days closed since the last refresh
        _recount_days(conn, min(closed, today) - timedelta(days=ROLLUP_RECENT_DAYS), min(closed, today))
        cursor = as_utc(row.verify_cursor) or today
        oldest = as_utc(conn.execute(sa.select(sa.func.min(post_queue.c.updated_at)).where(_sent_clause())).scalar())
        oldest_rolled = as_utc(conn.execute(sa.select(sa.func.min(post_queue_sent_daily.c.day))).scalar())
        floor = min([t for t in (oldest, oldest_rolled) if t is not None], default=today)
        if cursor <= _day(floor):
            cursor = today  # wrap round: start the walk again from the newest closed day
        lo = cursor - timedelta(days=verify_days)
        _recount_days(conn, None if lo <= _day(floor) else lo, cursor)  # the oldest step takes all before it
        cursor = lo
    _write_totals(conn)  # same transaction: status_summary never sees days and totals disagree
    values = {"closed_until": today, "verify_cursor": cursor, "refreshed_at": now}
    if row is None:
        conn.execute(sa.insert(s).values(id=1, **values))
    else:
        conn.execute(sa.update(s).where(s.c.id == 1).values(**values))
    return True


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
        stmt = stmt.where(_account_clause(account_id))
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


WAIT_KINDS = {"container": "container processing", "quota": "publishing limit"}


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
    d["attempts"] = attempts(conn, queue_id)
    return d


def attempts(conn: sa.Connection, queue_id: uuid.UUID, *, limit: int = 200) -> list[dict[str, Any]]:
    """Every attempt the worker made on the row (post_queue_attempts), newest first."""
    t = post_queue_attempts
    rows = conn.execute(sa.select(t.c.attempted_at, t.c.outcome, t.c.error_category, t.c.error, t.c.error_code,
                                  t.c.error_subcode, t.c.retry_count)
                        .where(t.c.queue_id == queue_id).order_by(t.c.attempted_at.desc()).limit(limit))
    return [{**dict(r._mapping), "attempted_at": as_utc(r.attempted_at)} for r in rows]


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
    held: str | None = field(default=None, compare=False)  # why the worker will not take it at once

    def as_response(self) -> dict[str, Any]:
        """Exactly the endpoint's shape: {success, queue_id, action_type, previous_retry_count, message}."""
        d = asdict(self)
        d.pop("previous_status")
        d.pop("held")
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
    held = hold_reasons(conn, reset, now=now)
    return [_with_warnings(r, held.get(uuid.UUID(r.queue_id)), seen.get(uuid.UUID(r.queue_id))) if r.success else r
            for r in results]


def _with_warnings(result: "RetryResult", held: str | None, seen_row) -> "RetryResult":
    """A reset row that will not run at once, or whose last error was permanent, says so."""
    message = result.message
    if held:
        message = f"Moved from {result.previous_status} back to pending, but it waits: {held}."
    if seen_row is not None and seen_row.error_category in ("permanent", "auth_failure"):
        last = clip(seen_row.error or "", 160)
        message += (f" Its last error was {seen_row.error_category} ({last}): "
                    "unless its cause was fixed, it will fail the same way.")
    return dataclasses.replace(result, message=message, held=held)


EXPORT_COLUMNS = ("id", "account", "business_account_id", "action_type", "status", "error_category", "error",
                  "retry_count", "next_retry_at", "created_at", "updated_at")


def iter_export_rows(conn: sa.Connection, *, filt: QueueFilter, chunk_size: int = 2000):
    """Rows matching `filt` for a CSV export, in table order, as chunks of tuples in EXPORT_COLUMNS
    order, read with a server-side cursor (no payload: it may hold personal data)."""
    from lib.core.schema import instagram_business_accounts as acc

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


# -- find a row by what was sent ---------------------------------------------------------------------
SENT_SEARCH_MIN_CHARS = 3  # shorter text matches nearly every row (and a trigram index needs three)
SENT_SEARCH_MAX_CHARS = 200
SENT_SEARCH_CAP = 200  # matches read at most; the newest SENT_SEARCH_SHOWN of them are listed
SENT_SEARCH_SHOWN = 50


@dataclass(frozen=True)
class SentSearch:
    rows: list[dict[str, Any]]  # newest first, payload redacted
    more: bool  # more than SENT_SEARCH_CAP rows matched: the text is too common to list them all


def payload_text():
    """The payload as text, the expression the trigram index ix_post_queue_payload_trgm is built on."""
    return sa.cast(post_queue.c.payload, sa.Text)


def search_sent(conn: sa.Connection, text: str, *, account_id: uuid.UUID | None = None) -> SentSearch:
    """Rows of any status whose payload contains `text` (case-insensitive): a recipient id, a comment or
    conversation id, words of a caption or a reply. Bounded: it reads at most SENT_SEARCH_CAP matching
    rows (on PostgreSQL through the trigram index when pg_trgm is there), so a common word costs what
    a rare id does; `more` says the list is not all of them."""
    from lib.core.audit import LIKE_ESCAPE, escape_like

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
