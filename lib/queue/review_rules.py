"""Review rules: which of the agents' actions wait for a person (REVIEW_ACTIONS and the per-account policies),
the 24-hour messaging window, and the SQL condition the claim uses to leave held rows alone. No writes here.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.core.db import uuid_text
from lib.core.schema import (
    ACTION_TYPES,
    audit_log,
    post_queue,
    post_queue_state,
    review_decisions,
    review_policies,
    review_policy_terms,
)
from lib.core.settings import SettingsError, load_settings
from lib.queue.rules import PENDING

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
    try:
        return parse_review_actions(load_settings().review_actions)
    except SettingsError:
        return ()


def held_clause(now: datetime, review_actions: tuple[str, ...] | None = None):
    """post_queue rows that wait for review (lib.queue.holds.held_back_clause uses it)."""
    actions = configured_review_actions() if review_actions is None else review_actions
    # the policy test first: with no policy and REVIEW_ACTIONS empty it is two probes of empty tables
    return sa.or_(sa.and_(policy_clause(actions), untouched_clause()), late_approved_clause(now))


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
