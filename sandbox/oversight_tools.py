"""The sandbox Oversight Brain's tools: true answers about the database, in plain text.

Each tool reads one concern for one business account and returns (tool name, text). The
question picks the tools by keywords; a question that names none gets a short overview.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from lib.activity.heartbeats import is_alive
from lib.core.schema import agent_heartbeats, analytics_reports, post_queue, system_alerts
from lib.core.timeutil import as_utc, fmt_ago

STATUSES = ("pending", "processing", "sent", "failed", "dlq")


def queue_status(conn: sa.Connection, account_id: uuid.UUID, now: datetime) -> str:
    rows = conn.execute(
        sa.select(post_queue.c.status, post_queue.c.action_type, sa.func.count())
        .where(post_queue.c.business_account_id == account_id)
        .group_by(post_queue.c.status, post_queue.c.action_type)
    ).all()
    if not rows:
        return "The outbound queue of this account is empty."
    by_status: dict[str, int] = {}
    detail: dict[str, list[str]] = {}
    for status, action, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        detail.setdefault(status, []).append(f"{action} {n}")
    total = sum(by_status.values())
    lines = [f"The queue holds {total} items for this account:"]
    for status in [*STATUSES, *sorted(set(by_status) - set(STATUSES))]:
        if status in by_status:
            lines.append(f"- {status}: {by_status[status]} ({', '.join(sorted(detail[status]))})")
    return "\n".join(lines)


def dlq_summary(conn: sa.Connection, account_id: uuid.UUID, now: datetime) -> str:
    where = (post_queue.c.business_account_id == account_id, post_queue.c.status == "dlq")
    total = conn.execute(sa.select(sa.func.count()).select_from(post_queue).where(*where)).scalar() or 0
    if not total:
        return "There are 0 items in the DLQ (dead letter queue) for this account."
    groups = conn.execute(
        sa.select(post_queue.c.error_category, post_queue.c.error, sa.func.count().label("n"))
        .where(*where)
        .group_by(post_queue.c.error_category, post_queue.c.error)
        .order_by(sa.func.count().desc(), post_queue.c.error_category)
        .limit(5)
    ).all()
    lines = [f"There are {total} items in the DLQ (dead letter queue) for this account. Most common errors:"]
    for g in groups:
        error = " ".join((g.error or "no error message").split())[:120]
        lines.append(f"- {g.n} × {g.error_category or 'uncategorised'}: {error}")
    return "\n".join(lines)


def open_alerts(conn: sa.Connection, account_id: uuid.UUID, now: datetime) -> str:
    rows = conn.execute(
        sa.select(system_alerts.c.alert_type, system_alerts.c.message, system_alerts.c.created_at,
                  system_alerts.c.business_account_id)
        .where(system_alerts.c.resolved.is_(False),
               sa.or_(system_alerts.c.business_account_id == account_id,
                      system_alerts.c.business_account_id.is_(None)))
        .order_by(system_alerts.c.created_at.desc())
    ).all()
    if not rows:
        return "There are no open alerts for this account."
    lines = [f"There are {len(rows)} open alerts (this account and system-wide):"]
    for r in rows[:8]:
        scope = "" if r.business_account_id else " [system]"
        message = " ".join((r.message or "").split())[:140]
        lines.append(f"- {r.alert_type}{scope}, {fmt_ago(as_utc(r.created_at), now)}: {message}")
    if len(rows) > 8:
        lines.append(f"… and {len(rows) - 8} more.")
    return "\n".join(lines)


def agent_status(conn: sa.Connection, account_id: uuid.UUID, now: datetime) -> str:
    rows = conn.execute(
        sa.select(agent_heartbeats.c.agent_id, sa.func.max(agent_heartbeats.c.last_beat_at))
        .group_by(agent_heartbeats.c.agent_id)
        .order_by(agent_heartbeats.c.agent_id)
    ).all()
    if not rows:
        return "No agent has sent a heartbeat yet."
    states = []
    for agent, last in rows:
        last = as_utc(last)
        alive = is_alive(last, now)
        states.append((agent, alive, last))
    down = [a for a, alive, _ in states if not alive]
    head = f"{len(states) - len(down)} of {len(states)} agents are alive" + (f"; down: {', '.join(down)}." if down else ".")
    lines = [head] + [f"- {a}: {'alive' if alive else 'down'}, last beat {fmt_ago(last, now)}" for a, alive, last in states]
    return "\n".join(lines)


_METRICS = (
    ("followers_count", "followers"),
    ("follower_growth", "follower growth"),
    ("impressions", "impressions"),
    ("reach", "reach"),
    ("profile_views", "profile views"),
    ("posts_published", "posts published"),
    ("avg_engagement_rate", "average engagement rate"),
)


def latest_metrics(conn: sa.Connection, account_id: uuid.UUID, now: datetime) -> str:
    row = conn.execute(
        sa.select(analytics_reports.c.report_type, analytics_reports.c.start_date, analytics_reports.c.end_date,
                  analytics_reports.c.report_date, analytics_reports.c.instagram_metrics)
        .where(analytics_reports.c.business_account_id == account_id)
        .order_by(analytics_reports.c.report_date.desc())
        .limit(1)
    ).first()
    if row is None:
        return "There is no analytics report for this account yet."
    m = row.instagram_metrics if isinstance(row.instagram_metrics, dict) else {}
    period = row.start_date if row.start_date == row.end_date else f"{row.start_date} to {row.end_date}"
    lines = [f"Latest {row.report_type or ''} report ({period}):".replace("  ", " ")]
    for key, label in _METRICS:
        if m.get(key) is not None:
            value = m[key]
            text = f"{value:.2%}" if key == "avg_engagement_rate" and isinstance(value, float) and value < 1 else f"{value:,}"
            lines.append(f"- {label}: {text}")
    if len(lines) == 1:
        lines.append("- the report carries no account metrics.")
    return "\n".join(lines)


Tool = Callable[[sa.Connection, uuid.UUID, datetime], str]
TOOLS: dict[str, Tool] = {
    "get_queue_status": queue_status,
    "get_dlq_summary": dlq_summary,
    "get_open_alerts": open_alerts,
    "get_agent_status": agent_status,
    "get_latest_metrics": latest_metrics,
}
_KEYWORDS = (
    ("get_dlq_summary", r"\bdlq\b|dead[- ]?letter|dead[- ]lettered|permanent(ly)? fail"),
    ("get_queue_status", r"\bqueue|pending|processing|\bfailed\b|\bsent\b|backlog"),
    ("get_open_alerts", r"alert|incident|problem|issue"),
    ("get_agent_status", r"\bagents?\b|heartbeat|alive|\bdown\b|liveness|uptime"),
    ("get_latest_metrics", r"metric|follower|reach|impression|engagement|report|analytics|growth|profile view"),
)


def pick_tools(question: str) -> list[str]:
    q = question.lower()
    picked = [name for name, pattern in _KEYWORDS if re.search(pattern, q)]
    return picked or list(TOOLS)


def answer(conn: sa.Connection, *, account_id: uuid.UUID, question: str, now: datetime) -> tuple[str, list[str]]:
    """The answer text and the tools used for it."""
    tools = pick_tools(question)
    parts = [TOOLS[name](conn, account_id, now) for name in tools]
    if len(tools) == len(TOOLS):
        parts.insert(0,
                     "Here is an overview of this account. Ask about the queue, the DLQ, alerts, agents or metrics for details.")
    return "\n\n".join(parts), tools
