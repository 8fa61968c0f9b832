"""Why the worker leaves a due row alone: a disconnected, held or throttled account, an operator's pause,
a review. One list of conditions serves the claim (as SQL) and the pages (as a sentence per row).
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.core.db import without_jit
from lib.core.schema import graph_usage, instagram_business_accounts, post_queue
from lib.instagram.account_holds import held_clause as instagram_hold
from lib.queue.review_rules import held_clause as review_hold
from lib.queue.rules import IDS_PER_STATEMENT, PENDING, due_clause, paused_clause


def hold_conditions(now: datetime) -> list[tuple[Any, str, str]]:
    """Why the worker leaves a due row alone, each as (SQL condition on post_queue, what it waits for
    in a word or two for a table cell, the sentence a person is told): a disconnected account (auth
    failure), an account Instagram holds back (account_holds: a block or restriction), an account (or
    the whole app) that Graph throttled until later (graph_usage.regain_at), what an operator paused
    (queue_pauses), or what waits for a person's review (lib.queue.review_rules)."""
    q, acc, gu = post_queue, instagram_business_accounts, graph_usage
    disconnected = sa.exists().where(acc.c.id == q.c.business_account_id, acc.c.is_connected.is_(False))
    app_throttled = sa.exists().where(gu.c.regain_at > now, gu.c.scope == "app")
    throttled = sa.exists().where(gu.c.regain_at > now, gu.c.business_account_id == q.c.business_account_id)
    return [
        (disconnected, "reconnect",
         "its account is disconnected: reconnect it (Accounts) before it can be sent"),
        (instagram_hold(now), "Instagram", "Instagram holds its account back (see the banner at the top)"),
        (app_throttled, "rate limit", "Instagram throttles this app for now; the worker resumes by itself"),
        (throttled, "rate limit", "Instagram throttles its account for now; the worker resumes by itself"),
        (paused_clause(), "resume", "an operator paused it (see Pauses)"),
        # only a pending row waits for review: said first, so that for the failed and dead-lettered rows
        # the pages ask about, the policy's count of sent rows is never run (seconds at a million rows)
        (sa.and_(q.c.status == PENDING, review_hold(now)), "review", "it waits for a person's review (Review page)"),
    ]


def held_back_clause(now: datetime):
    """Due rows the worker leaves alone (hold_conditions)."""
    return sa.or_(*(cond for cond, _, _ in hold_conditions(now)))


def hold_reasons(conn: sa.Connection, ids, *, now: datetime, short: bool = False) -> dict[uuid.UUID, str]:
    """{row id: why the worker will not take it now} for the rows among ids that are held back: the
    sentence, or with `short` the table cell's label. The first condition that applies names it."""
    ids = list(ids)
    if not ids:
        return {}
    reason = sa.case(*[(cond, sa.literal(label if short else text)) for cond, label, text in hold_conditions(now)],
                     else_=sa.null())
    without_jit(conn)  # the planner's estimate of these conditions passes the JIT threshold: compiling is the cost
    out = {}
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        chunk = ids[start:start + IDS_PER_STATEMENT]
        for rid, why in conn.execute(sa.select(post_queue.c.id, reason).where(post_queue.c.id.in_(chunk))):
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
    without_jit(conn)  # JIT compiled this question every poll (lib.core.db.without_jit says why)
    return conn.execute(sa.select(q.c.id).where(claimable_clause(now), changed).limit(1)).first() is not None
