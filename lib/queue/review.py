"""Review before sending: which queue rows wait for a person's approval, and the decisions.

The hold is decided when the worker claims (lib.queue.holds.held_back_clause calls held_clause), so a row
is covered the moment it exists, whoever enqueued it (the agents' backend, the API, a script). A
held row stays `pending` (the spec's status set is unchanged) and gets no Graph call.

What is held (one rule, `should_hold` in Python and `held_clause` in SQL, tested against each other):
* only a row nobody has acted on yet: pending, retry_count 0, no decision of ours, no container
  state (the worker has not started it) and no manual retry or edit by an operator in audit_log;
* the policy for its account and action type decides: the account's own policy, else the policy
  for every account, else REVIEW_ACTIONS (always, for the types listed). Modes: always, first_n
  (until the account has N sent rows of the type), match (the text contains one of the terms;
  `*` matches anything) and never;
* and, whatever the policy: an approved DM whose 24-hour messaging window has (nearly) closed, so
  it is never sent late; the worker's tick expires it (expire_due).

Decisions (approve, optionally edited; reject; expire) are one row each in review_decisions, keyed
by the queue id, and one audit_log row (review_approved / review_rejected / review_expired,
resource_type post_queue, resource_id the queue id, user_id the reviewer). A rejected or expired row
goes to `dlq` with an error that says so: it never reaches Instagram, and GET /post-queue/dlq and
the audit row tell the agents' backend what happened.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.alerts.store import auto_resolve, open_or_update_alert
from lib.core.redact import redact, redact_text
from lib.core.schema import (
    instagram_business_accounts,
    post_queue,
    review_context,
    review_decisions,
    review_policies,
    system_alerts,
)
from lib.core.timeutil import as_utc, iso
from lib.instagram.client import AccountCreds, InvalidPayload
from lib.instagram.errors import GraphError
from lib.instagram.payload_rules import TEXT_FIELDS
from lib.queue.review_rules import DM_ACTIONS, Policy, action_text, dm_window_ends, held_clause, parse_review_actions
from lib.queue.rules import PENDING
from lib.queue.store import expire_due

# -- the rule (pure) ---------------------------------------------------------------------------------


# -- the rule in SQL (the worker's claim) -------------------------------------------------------------


# -- policies -----------------------------------------------------------------------------------------

def list_policies(conn: sa.Connection) -> list[Policy]:
    p = review_policies
    rows = conn.execute(sa.select(p).order_by(p.c.action_type, p.c.business_account_id.is_(None).desc(),
                                              p.c.updated_at)).all()
    return [Policy(r.action_type, r.mode, r.business_account_id, r.first_n, tuple(r.terms or ()), r.id,
                   r.updated_by, as_utc(r.updated_at)) for r in rows]


# -- the queue of held rows ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HeldRow:
    id: uuid.UUID
    business_account_id: uuid.UUID | None
    account: str | None
    action_type: str
    payload: dict[str, Any]  # the stored value (redacted: no token-like field ever reaches a page)
    text: str
    created_at: datetime | None
    next_retry_at: datetime | None  # a post's schedule, when it has one
    window_ends_at: datetime | None  # DMs only
    late_approved: bool = False

    def time_left(self, now: datetime) -> timedelta | None:
        return None if self.window_ends_at is None else self.window_ends_at - now


def held_rows(conn: sa.Connection, *, now: datetime, account_id: uuid.UUID | None = None,
              action_type: str | None = None, oldest_first: bool = False, limit: int = 200,
              review_actions: tuple[str, ...] | None = None) -> list[HeldRow]:
    """The rows that wait for review, newest (or oldest) queued first; DMs first, the least time left first."""
    q, acc, ctx = post_queue, instagram_business_accounts, review_context
    stmt = (sa.select(q.c.id, q.c.business_account_id, acc.c.username, q.c.action_type, q.c.payload, q.c.created_at,
                      q.c.next_retry_at, ctx.c.window_ends_at.label("ctx_window"))
            .select_from(q.outerjoin(acc, acc.c.id == q.c.business_account_id)
                         .outerjoin(ctx, ctx.c.queue_id == q.c.id))
            .where(q.c.status == PENDING, held_clause(now, review_actions)))
    if account_id is not None:
        stmt = stmt.where(q.c.business_account_id == account_id)
    if action_type:
        stmt = stmt.where(q.c.action_type == action_type)
    order = q.c.created_at.asc() if oldest_first else q.c.created_at.desc()
    rows = conn.execute(stmt.order_by(order, q.c.id).limit(limit)).all()
    out = []
    for r in rows:
        created = as_utc(r.created_at)
        window = None
        if r.action_type in DM_ACTIONS:
            window = as_utc(r.ctx_window) or dm_window_ends(created_at=created or now, last_customer_message_at=None)
        payload = dict(r.payload or {})
        out.append(HeldRow(r.id, r.business_account_id, r.username, r.action_type, redact(payload),
                           action_text(r.action_type, payload), created, as_utc(r.next_retry_at), window))
    # DMs by the time left (their deadline matters more than the order asked for), then the rest
    dms = sorted((h for h in out if h.window_ends_at is not None), key=lambda h: h.window_ends_at)
    return dms + [h for h in out if h.window_ends_at is None]


def held_count(conn: sa.Connection, *, now: datetime, older_than: datetime | None = None,
               review_actions: tuple[str, ...] | None = None) -> int:
    q = post_queue
    stmt = sa.select(sa.func.count()).select_from(q).where(q.c.status == PENDING, held_clause(now, review_actions))
    if older_than is not None:
        stmt = stmt.where(q.c.created_at <= older_than)
    return int(conn.execute(stmt).scalar() or 0)


# -- decisions -----------------------------------------------------------------------------------------


# -- context for the decision (read from the Graph API with the account's token) -----------------------

CONTEXT_MAX_AGE = timedelta(minutes=10)  # a context read more recently than this is shown from the cache
CONTEXT_MESSAGES = 5


@dataclass(frozen=True)
class Context:
    """What the reviewer reads beside the row. `data` holds only what Graph answered about the comment,
    the post or the messages (never a token); `error` says why it could not be read."""

    data: dict[str, Any] | None
    error: str | None
    window_ends_at: datetime | None
    fetched_at: datetime
    cached: bool = False


def _graph_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        if isinstance(value, (int, float)) or str(value).isdigit():
            return datetime.fromtimestamp(float(value), tz=UTC)
        return as_utc(datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S%z"))
    except (ValueError, OSError, OverflowError):
        return None


def _who(person: Any) -> dict[str, Any]:
    return {"id": str(person.get("id")) if isinstance(person, dict) and person.get("id") is not None else None,
            "username": person.get("username") if isinstance(person, dict) else None}


def read_context(client, account, action_type: str, payload: dict[str, Any]) -> tuple[dict[str, Any], datetime | None]:
    """Graph reads for one row: (context, the customer's last message time for a DM). Raises GraphError or
    InvalidPayload when it cannot be read. `account` is a lib.instagram.client.AccountCreds."""
    p = payload or {}
    if action_type == "reply_comment":
        comment = client.comment(str(p.get("comment_id")), account)
        media_id = ((comment.get("media") or {}).get("id") if isinstance(comment.get("media"), dict) else None) \
            or p.get("post_id")
        post = client.media(str(media_id), account) if media_id else None
        return {"kind": "comment",
                "comment": {k: comment.get(k) for k in ("id", "text", "username", "timestamp")},
                "post": None if post is None else {k: post.get(k) for k in ("id", "caption", "media_type",
                                                                            "media_url", "permalink", "timestamp")}}, None
    if action_type in DM_ACTIONS:
        conv = p.get("conversation_id")
        if not conv and p.get("recipient_id"):
            conv = client.conversation_with(str(p["recipient_id"]), account)
        if not conv:
            return {"kind": "dm", "conversation_id": None, "messages": []}, None
        ours = {str(account.instagram_business_id or ""), str(account.username or "").lower()} - {""}
        messages, last_customer = [], None
        for m in client.recent_messages(str(conv), account, limit=CONTEXT_MESSAGES):
            sender = _who(m.get("from"))
            from_us = sender["id"] in ours or str(sender["username"] or "").lower() in ours
            when = _graph_time(m.get("created_time"))
            if not from_us and when is not None and (last_customer is None or when > last_customer):
                last_customer = when
            messages.append({"from": sender["username"] or sender["id"], "from_us": from_us,
                             "created_time": iso(when) if when else m.get("created_time"),
                             "message": m.get("message")})
        return {"kind": "dm", "conversation_id": str(conv), "messages": messages}, last_customer
    return {"kind": "post"}, None  # a post's context is its own media, shown from the payload


def fetch_context(engine, queue_id: uuid.UUID, client, *, now: datetime, refresh: bool = False) -> Context:
    """The context of a held row: from the cache (review_context) when it is fresh, else read now with the
    account's token and cached. The token never leaves this function (errors are redacted with it)."""
    q, acc, ctx = post_queue, instagram_business_accounts, review_context
    with engine.connect() as conn:
        cached = conn.execute(sa.select(ctx).where(ctx.c.queue_id == queue_id)).first()
        if cached is not None and not refresh and as_utc(cached.fetched_at) > now - CONTEXT_MAX_AGE:
            return Context(cached.context, cached.error, as_utc(cached.window_ends_at), as_utc(cached.fetched_at), True)
        r = conn.execute(sa.select(q.c.id, q.c.action_type, q.c.payload, q.c.created_at, acc.c.id.label("acc_id"),
                                   acc.c.instagram_business_id, acc.c.access_token, acc.c.username)
                         .select_from(q.outerjoin(acc, acc.c.id == q.c.business_account_id))
                         .where(q.c.id == queue_id)).first()
    if r is None:
        return Context(None, "No queue row with this id.", None, now)
    data, error, window = None, None, None
    token = r.access_token
    if r.acc_id is None:
        error = "The row's business account is not in instagram_business_accounts, so there is no token to read with."
    else:
        creds = AccountCreds(r.acc_id, r.instagram_business_id, token, r.username)
        try:
            data, last_customer = read_context(client, creds, r.action_type, dict(r.payload or {}))
            data = redact(data, secrets=(token,))
            if r.action_type in DM_ACTIONS:
                window = dm_window_ends(created_at=as_utc(r.created_at) or now, last_customer_message_at=last_customer) \
                    if last_customer else None
        except (GraphError, InvalidPayload) as exc:
            error = redact_text(redact(str(exc), secrets=(token,)))
    with engine.begin() as conn:
        conn.execute(sa.delete(ctx).where(ctx.c.queue_id == queue_id))
        conn.execute(sa.insert(ctx).values(queue_id=queue_id, context=data, error=error, window_ends_at=window,
                                           fetched_at=now))
    return Context(data, error, window, now)


# -- the worker's pass: expiries and the "waiting too long" alert -----------------------------------------

REVIEW_ALERT = "review_waiting"


WORKER_PASS_EVERY = timedelta(seconds=30)  # the worker runs the pass at most this often (worker/tick.py)


def worker_pass(engine, settings, *, now: datetime) -> int:
    """Run by the worker before a claim, at most once per WORKER_PASS_EVERY: expire DMs whose window closed, and
    keep one review_waiting alert open (through the alert notifications' routes and silences) while rows
    wait longer than REVIEW_WAIT_ALERT_S. Returns the number of rows expired.

    Skipping passes is safe: the claim itself holds an approved DM whose window is closing (held_clause),
    so nothing is sent late; the pass only moves such rows to dlq and keeps the alert current. Back-to-back
    ticks (a backlog) then cost no extra queries."""
    actions = parse_review_actions(settings.review_actions)
    with engine.begin() as conn:
        expired = expire_due(conn, now=now, review_actions=actions)
    wait_s = int(settings.review_wait_alert_s or 0)
    if wait_s <= 0:
        return expired
    with engine.begin() as conn:
        waiting = held_count(conn, now=now, older_than=now - timedelta(seconds=wait_s), review_actions=actions)
        t = system_alerts
        open_row = conn.execute(sa.select(t.c.details).where(t.c.alert_type == REVIEW_ALERT, t.c.resolved.is_(False))
                                .limit(1)).first()
        if waiting:
            details = open_row.details if open_row is not None else None
            shown = details.get("waiting") if isinstance(details, dict) else None
            if shown != waiting:
                link = (settings.dashboard_url or "").rstrip("/")
                minutes = max(1, wait_s // 60)
                open_or_update_alert(conn, alert_type=REVIEW_ALERT, now=now,
                                     message=f"{waiting} row(s) wait for review for more than {minutes} min"
                                             + (f": {link}/review" if link else " (page: Review)"),
                                     details={"waiting": waiting, "wait_s": wait_s})
        elif open_row is not None:
            auto_resolve(conn, alert_type=REVIEW_ALERT, now=now)
    return expired


# -- learning from decisions --------------------------------------------------------------------------------

def decision_stats(conn: sa.Connection, *, now: datetime, account_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """Per account and action type: approved / edited / rejected / expired over 7 and 30 days, the mean
    and largest edit distance of edited texts (30 days) and the rejection reasons (30 days, most frequent first)."""
    d, acc = review_decisions, instagram_business_accounts
    week, month = now - timedelta(days=7), now - timedelta(days=30)

    def n(cond, since):
        return sa.func.count().filter(cond, d.c.decided_at >= since)

    approved = d.c.decision == "approved"
    decisions = (("approved", approved), ("edited", sa.and_(approved, d.c.edited.is_(True))),
                 ("rejected", d.c.decision == "rejected"), ("expired", d.c.decision == "expired"))
    counts = [n(cond, since).label(f"{name}_{span}") for span, since in (("7d", week), ("30d", month))
              for name, cond in decisions]
    stmt = (sa.select(d.c.business_account_id, acc.c.username, d.c.action_type, *counts,
                      sa.func.avg(d.c.edit_distance).filter(d.c.edited.is_(True)).label("mean_edit_distance"),
                      sa.func.max(d.c.edit_distance).filter(d.c.edited.is_(True)).label("max_edit_distance"))
            .select_from(d.outerjoin(acc, acc.c.id == d.c.business_account_id))
            .where(d.c.decided_at >= month)
            .group_by(d.c.business_account_id, acc.c.username, d.c.action_type)
            .order_by(acc.c.username, d.c.action_type))
    reasons_q = (sa.select(d.c.business_account_id, d.c.action_type, d.c.reason, sa.func.count().label("n"))
                 .where(d.c.decided_at >= month, d.c.decision == "rejected", d.c.reason.is_not(None))
                 .group_by(d.c.business_account_id, d.c.action_type, d.c.reason))
    if account_id is not None:
        stmt = stmt.where(d.c.business_account_id == account_id)
        reasons_q = reasons_q.where(d.c.business_account_id == account_id)
    reasons: dict[tuple, list] = {}
    for r in conn.execute(reasons_q):
        reasons.setdefault((r.business_account_id, r.action_type), []).append((int(r.n), r.reason))
    out = []
    for r in conn.execute(stmt):
        row = dict(r._mapping)
        row["account"] = row.pop("username") or (str(r.business_account_id) if r.business_account_id else "—")
        mean = row["mean_edit_distance"]
        row["mean_edit_distance"] = None if mean is None else round(float(mean), 1)
        top = sorted(reasons.get((r.business_account_id, r.action_type), []), key=lambda x: (-x[0], x[1]))
        row["rejection_reasons"] = "; ".join(f"{reason} ({k})" for k, reason in top[:10])
        out.append(row)
    return out


EXPORT_COLUMNS = ("queue_id", "account", "business_account_id", "action_type", "decision", "reviewer", "reason",
                  "edited", "edit_distance", "original_text", "final_text", "queued_at", "decided_at", "window_ends_at")


def export_chunks(conn: sa.Connection, *, account_id: uuid.UUID | None = None, chunk_size: int = 2000):
    """Every decision, newest first, as chunks of tuples in EXPORT_COLUMNS order (texts with token-like
    strings masked): the data a team needs to improve its agent's prompts."""
    d, acc = review_decisions, instagram_business_accounts
    stmt = (sa.select(d.c.queue_id, acc.c.username, d.c.business_account_id, d.c.action_type, d.c.decision,
                      d.c.reviewer, d.c.reason, d.c.edited, d.c.edit_distance, d.c.original_text, d.c.final_text,
                      d.c.queued_at, d.c.decided_at, d.c.window_ends_at)
            .select_from(d.outerjoin(acc, acc.c.id == d.c.business_account_id))
            .order_by(d.c.decided_at.desc(), d.c.queue_id))
    if account_id is not None:
        stmt = stmt.where(d.c.business_account_id == account_id)
    result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(stmt)
    for part in result.partitions(chunk_size):
        yield [tuple(iso(as_utc(v)) if isinstance(v, datetime)
                     else str(v) if isinstance(v, uuid.UUID)
                     else redact_text(v) if c in ("original_text", "final_text", "reason") else v
                     for c, v in zip(EXPORT_COLUMNS, row)) for row in part]


def export_decisions(conn: sa.Connection, fmt: str, *, account_id: uuid.UUID | None = None) -> bytes:
    from lib.core.export import build_export  # lazy: pandas, which the worker needs only here (an export)

    data, _, _ = build_export(fmt, EXPORT_COLUMNS, export_chunks(conn, account_id=account_id))
    return data


def stored_text_fields(conn: sa.Connection, queue_id: uuid.UUID) -> dict[str, str]:
    """The row's editable text fields exactly as stored (an edit starts from these, never from a display copy)."""
    q = post_queue
    r = conn.execute(sa.select(q.c.action_type, q.c.payload).where(q.c.id == queue_id)).first()
    if r is None:
        return {}
    payload = r.payload or {}
    return {k: ("" if payload.get(k) is None else str(payload.get(k))) for k in TEXT_FIELDS.get(r.action_type, ())}
