"""Review before sending: which queue rows wait for a person's approval, and the decisions.

The hold is decided when the worker claims (lib.queue.core.held_back_clause calls held_clause), so a row
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

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import sqlalchemy as sa

from lib.core.audit import audit_row
from lib.core.db import uuid_text
from lib.core.identity import Actor, require_operator
from lib.instagram.payload_rules import TEXT_FIELDS, payload_problems
from lib.queue.core import ACTION_TYPES, CONTENT_ACTIONS, PENDING, idempotency_key
from lib.core.redact import redact
from lib.core.schema import (audit_log, instagram_business_accounts, post_queue, post_queue_state, review_context,
                        review_decisions, review_policies, review_policy_terms)
from lib.core.timeutil import as_utc, iso

MODES = ("always", "first_n", "match", "never")
MODE_LABELS = {"always": "Always review", "first_n": "Review the first N actions of a new account",
               "match": "Review only text that matches words or patterns", "never": "Never review"}
DM_ACTIONS = ("reply_dm", "send_dm")
DM_WINDOW = timedelta(hours=24)  # Instagram: a business may answer within 24 hours of the person's last message
# A DM approved this close to the end of its window is not sent: a worker tick could start after it closed.
SEND_MARGIN = timedelta(minutes=2)
MAX_BULK = 500
OPERATOR_TOUCHED = ("queue_item_retried", "queue_item_edited")  # audit events that release a row for good
REJECT_ERROR = "rejected in review"
EXPIRE_ERROR = "expired in review: the 24-hour messaging window closed before anyone approved it"
DECISIONS = ("approved", "rejected", "expired")


class ReviewError(ValueError):
    """The decision cannot be made as asked; the message says why and nothing was written."""


# -- the rule (pure) ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    action_type: str
    mode: str
    business_account_id: uuid.UUID | None = None  # None: every account
    first_n: int | None = None
    terms: tuple[str, ...] = ()
    id: uuid.UUID | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None
    source: str = "policy"  # policy | REVIEW_ACTIONS | none


def parse_review_actions(value: str | None) -> tuple[str, ...]:
    """REVIEW_ACTIONS: comma-separated action types; unknown names are ignored (see unknown_actions)."""
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return tuple(dict.fromkeys(v for v in items if v in ACTION_TYPES))


def unknown_actions(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip() and v.strip() not in ACTION_TYPES)


def parse_terms(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """The operator's words/patterns, one per line or comma-separated; blanks dropped, order kept."""
    if text is None:
        return ()
    items = re.split(r"[\n,]", text) if isinstance(text, str) else list(text)
    return tuple(dict.fromkeys(t.strip() for t in items if t and t.strip()))


def like_pattern(term: str) -> str:
    """A term as the inside of LIKE '%...%' (escape character backslash): `*` matches anything."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def term_matches(text: str | None, term: str) -> bool:
    """Case-insensitive containment, `*` matching any run of characters (as like_pattern in SQL)."""
    regex = ".*".join(re.escape(part) for part in term.split("*"))
    return re.search(regex, text or "", re.IGNORECASE | re.DOTALL) is not None


def action_text(action_type: str, payload: dict[str, Any] | None) -> str:
    """The text a person would read: the reply, the DM, or the caption."""
    p = payload or {}
    for key in ("reply_text", "message_text", "caption"):
        if p.get(key) not in (None, ""):
            return str(p[key])
    return ""


def effective_policy(policies: Iterable[Policy], *, business_account_id, action_type: str,
                     review_actions: tuple[str, ...]) -> Policy:
    """The account's own policy for the type, else the one for every account, else REVIEW_ACTIONS."""
    general = None
    for p in policies:
        if p.action_type != action_type:
            continue
        if p.business_account_id is not None and str(p.business_account_id) == str(business_account_id):
            return p
        if p.business_account_id is None:
            general = p
    if general is not None:
        return general
    if action_type in review_actions:
        return Policy(action_type, "always", source="REVIEW_ACTIONS")
    return Policy(action_type, "never", source="none")


def policy_holds(policy: Policy, *, text: str, sent_count: int) -> bool:
    if policy.mode == "always":
        return True
    if policy.mode == "first_n":
        return sent_count < int(policy.first_n or 0)
    if policy.mode == "match":
        return any(term_matches(text, t) for t in policy.terms)
    return False


def untouched(*, status: str, retry_count: int | None, decided: bool, started: bool, operator_touched: bool) -> bool:
    """A row no one has acted on yet: the only kind a policy may hold."""
    return status == PENDING and not (retry_count or 0) and not decided and not started and not operator_touched


def dm_window_ends(*, created_at: datetime, last_customer_message_at: datetime | None) -> datetime:
    """When a DM can no longer be sent: 24 hours after the customer's last message when the conversation
    could be read, else 24 hours after the agent queued it (its answer cannot be older than what it answers)."""
    return (last_customer_message_at or created_at) + DM_WINDOW


def too_late(window_ends_at: datetime | None, now: datetime) -> bool:
    return window_ends_at is not None and window_ends_at - SEND_MARGIN <= now


def should_hold(policy: Policy, *, status: str, retry_count: int | None, decided: bool, started: bool,
                operator_touched: bool, text: str, sent_count: int, approved_window_ends_at: datetime | None = None,
                now: datetime | None = None) -> bool:
    """The whole rule for one row (held_clause is the same in SQL)."""
    if approved_window_ends_at is not None and now is not None and status == PENDING \
            and too_late(approved_window_ends_at, now):
        return True
    return untouched(status=status, retry_count=retry_count, decided=decided, started=started,
                     operator_touched=operator_touched) and policy_holds(policy, text=text, sent_count=sent_count)


# -- the rule in SQL (the worker's claim) -------------------------------------------------------------

def _text_expr(q=post_queue):
    return sa.func.coalesce(q.c.payload["reply_text"].as_string(), q.c.payload["message_text"].as_string(),
                            q.c.payload["caption"].as_string(), "")


def _policy_condition(p, q=post_queue):
    t = review_policy_terms.alias("rpt")
    s = post_queue.alias("sent_rows")
    sent_count = (sa.select(sa.func.count()).select_from(s)
                  .where(s.c.business_account_id == q.c.business_account_id, s.c.action_type == q.c.action_type,
                         s.c.status == "sent")
                  .correlate(q, p).scalar_subquery())  # the queue row two levels up, not a new FROM
    matches = sa.exists().where(t.c.policy_id == p.c.id,
                                _text_expr(q).ilike(sa.literal("%") + t.c.pattern + sa.literal("%"), escape="\\")
                                ).correlate(q, p)
    return sa.or_(p.c.mode == "always",
                  sa.and_(p.c.mode == "first_n", sent_count < sa.func.coalesce(p.c.first_n, 0)),
                  sa.and_(p.c.mode == "match", matches))


def untouched_clause(q=post_queue):
    # aliases: a query that joins one of these tables itself must not correlate them away
    d, s, a = review_decisions.alias("rd_any"), post_queue_state.alias("pqs_any"), audit_log.alias("al_touch")
    return sa.and_(
        q.c.status == PENDING,
        sa.func.coalesce(q.c.retry_count, 0) == 0,
        ~sa.exists().where(d.c.queue_id == q.c.id),
        ~sa.exists().where(s.c.queue_id == q.c.id),
        ~sa.exists().where(a.c.resource_id == uuid_text(q.c.id), a.c.event_type.in_(OPERATOR_TOUCHED)),
    )


def policy_clause(review_actions: tuple[str, ...], q=post_queue):
    """The policy for the row's account and type holds it (effective_policy + policy_holds in SQL)."""
    own, every = review_policies.alias("rp_own"), review_policies.alias("rp_all")
    own_scope = sa.and_(own.c.action_type == q.c.action_type, own.c.business_account_id == q.c.business_account_id)
    every_scope = sa.and_(every.c.action_type == q.c.action_type, every.c.business_account_id.is_(None))
    parts = [
        sa.exists().where(own_scope, _policy_condition(own, q)),
        sa.and_(~sa.exists().where(own_scope), sa.exists().where(every_scope, _policy_condition(every, q))),
    ]
    if review_actions:
        parts.append(sa.and_(q.c.action_type.in_(review_actions), ~sa.exists().where(own_scope),
                             ~sa.exists().where(every_scope)))
    return sa.or_(*parts)


def late_approved_clause(now: datetime, q=post_queue):
    """Approved DMs whose window is (nearly) closed: never sent; expire_due moves them out."""
    d = review_decisions.alias("rd_late")
    return sa.and_(q.c.status == PENDING,
                   sa.exists().where(d.c.queue_id == q.c.id, d.c.decision == "approved",
                                     d.c.window_ends_at.is_not(None), d.c.window_ends_at <= now + SEND_MARGIN))


def configured_review_actions() -> tuple[str, ...]:
    from lib.core.settings import SettingsError, load_settings

    try:
        return parse_review_actions(load_settings().review_actions)
    except SettingsError:
        return ()


def held_clause(now: datetime, review_actions: tuple[str, ...] | None = None):
    """post_queue rows that wait for review (lib.queue.core.held_back_clause uses it)."""
    actions = configured_review_actions() if review_actions is None else review_actions
    # the policy test first: with no policy and REVIEW_ACTIONS empty it is two probes of empty tables
    return sa.or_(sa.and_(policy_clause(actions), untouched_clause()), late_approved_clause(now))


# -- policies -----------------------------------------------------------------------------------------

def list_policies(conn: sa.Connection) -> list[Policy]:
    p = review_policies
    rows = conn.execute(sa.select(p).order_by(p.c.action_type, p.c.business_account_id.is_(None).desc(),
                                              p.c.updated_at)).all()
    return [Policy(r.action_type, r.mode, r.business_account_id, r.first_n, tuple(r.terms or ()), r.id,
                   r.updated_by, as_utc(r.updated_at)) for r in rows]


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

@dataclass(frozen=True)
class DecisionResult:
    success: bool
    queue_id: str
    message: str


def edit_distance(a: str | None, b: str | None) -> int:
    """Levenshtein distance in characters (insertions, deletions, substitutions)."""
    a, b = a or "", b or ""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


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


def _details(r, **extra) -> dict[str, Any]:
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
        details=_details(r, edited=edited, edit_distance=distance, changes=diff,
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
        now=now, user_id=actor.name, success=True, error_message=error, details=_details(r, reason=reason))])
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
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
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
    from lib.instagram.errors import GraphError
    from lib.instagram.client import AccountCreds, InvalidPayload

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
            from lib.core.redact import redact_text
            error = redact_text(redact(str(exc), secrets=(token,)))
    with engine.begin() as conn:
        conn.execute(sa.delete(ctx).where(ctx.c.queue_id == queue_id))
        conn.execute(sa.insert(ctx).values(queue_id=queue_id, context=data, error=error, window_ends_at=window,
                                           fetched_at=now))
    return Context(data, error, window, now)


# -- the worker's pass: expiries and the "waiting too long" alert -----------------------------------------

REVIEW_ALERT = "review_waiting"


WORKER_PASS_EVERY = timedelta(seconds=30)
_last_pass: dict[str, datetime] = {}  # per database URL, in this process


def worker_pass(engine, settings, *, now: datetime, every: timedelta = WORKER_PASS_EVERY) -> int:
    """Run by the worker before each claim, at most once per `every`: expire DMs whose window closed, and
    keep one review_waiting alert open (through the alert notifications' routes and silences) while rows
    wait longer than REVIEW_WAIT_ALERT_S. Returns the number of rows expired.

    Skipping passes is safe: the claim itself holds an approved DM whose window is closing (held_clause),
    so nothing is sent late; the pass only moves such rows to dlq and keeps the alert current. Back-to-back
    ticks (a backlog) then cost no extra queries."""
    from lib.alerts.store import auto_resolve, open_or_update_alert
    from lib.core.schema import system_alerts

    key = str(engine.url)
    last = _last_pass.get(key)
    if last is not None and timedelta(0) <= now - last < every:
        return 0
    _last_pass[key] = now
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
            shown = (open_row.details or {}).get("waiting") if open_row is not None and isinstance(open_row.details, dict) else None
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
    stmt = (sa.select(d.c.business_account_id, acc.c.username, d.c.action_type,
                      n(approved, week).label("approved_7d"), n(sa.and_(approved, d.c.edited.is_(True)), week).label("edited_7d"),
                      n(d.c.decision == "rejected", week).label("rejected_7d"), n(d.c.decision == "expired", week).label("expired_7d"),
                      n(approved, month).label("approved_30d"), n(sa.and_(approved, d.c.edited.is_(True)), month).label("edited_30d"),
                      n(d.c.decision == "rejected", month).label("rejected_30d"), n(d.c.decision == "expired", month).label("expired_30d"),
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
    from lib.core.redact import redact_text

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
    from lib.core.export import build_export

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
