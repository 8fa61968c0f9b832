"""oversight_chat_sessions: sessions per business account and dashboard user.

The messages column is the spec's array of
`{role, content, timestamp, tools_used?, latency_ms?, incomplete?}`; we add `error` to an
assistant message whose stream ended with an error event (an extra key other readers ignore).

Writes happen twice per question: `record_question` when it is sent (so a reload mid-stream
shows it, and a question the backend refused stays as unanswered) and `record_answer` when the
answer ends, complete or not. total_queries counts questions sent.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.core.db import take_write_lock
from lib.core.identity import Actor, require_operator
from lib.core.schema import oversight_chat_sessions as ocs
from lib.core.timeutil import as_utc, iso

TITLE_MAX_CHARS = 60
HISTORY_MAX_MESSAGES = 20  # chat_history sent with a question: the last N messages
HISTORY_MAX_CHARS = 50_000  # ... and at most this many characters of content in all


class SessionNotFound(LookupError):
    pass


@dataclass(frozen=True)
class SessionSummary:
    id: uuid.UUID
    title: str
    updated_at: datetime | None
    created_at: datetime | None
    total_queries: int
    is_active: bool


@dataclass(frozen=True)
class ChatSession:
    id: uuid.UUID
    business_account_id: uuid.UUID | None
    dashboard_user_id: str
    title: str
    messages: list[dict[str, Any]]
    is_active: bool
    last_question: str | None
    last_answer: str | None
    last_latency_ms: int | None
    last_tools_used: list[str] | None
    total_queries: int
    created_at: datetime | None
    updated_at: datetime | None


# ---------------------------------------------------------------------------------------------
# pure rules


def title_from_question(question: str, limit: int = TITLE_MAX_CHARS) -> str:
    """One line, at most `limit` characters, cut at a word boundary with an ellipsis."""
    text = " ".join(question.split())
    if len(text) <= limit:
        return text or "New session"
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def display_title(title: str | None, created_at: datetime | None) -> str:
    if title:
        return title
    return "New session" + (f" ({iso(created_at)[:16].replace('T', ' ')})" if created_at else "")


def chat_history(messages: list[dict[str, Any]], limit: int = HISTORY_MAX_MESSAGES,
                 max_chars: int = HISTORY_MAX_CHARS) -> list[dict[str, Any]]:
    """Previous messages for the request body: role, content and timestamp of the last `limit`,
    newest kept first within `max_chars` characters of content (an older message that does not
    fit whole is cut from its start and ends the history)."""
    picked: list[dict[str, Any]] = []
    budget = max_chars
    for m in reversed(messages[-limit:] if limit else []):
        if budget <= 0:
            break
        content = m.get("content")
        if m.get("role") not in ("user", "assistant") or not content:
            continue
        if not isinstance(content, str):
            content = str(content)
        if len(content) > budget:
            content = "…" + content[len(content) - budget + 1:]
        budget -= len(content)
        picked.append({"role": m["role"], "content": content, "timestamp": m.get("timestamp")})
    picked.reverse()
    return picked


def unanswered(messages: list[dict[str, Any]]) -> set[int]:
    """Indexes of user messages that no assistant message follows."""
    out = set()
    for i, m in enumerate(messages):
        if m.get("role") == "user" and (i + 1 >= len(messages) or messages[i + 1].get("role") != "assistant"):
            out.add(i)
    return out


# ---------------------------------------------------------------------------------------------
# reads


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [m for m in value if isinstance(m, dict)]
    return []


def list_sessions(
    conn: sa.Connection, *, business_account_id: uuid.UUID, user: str, limit: int = 50
) -> list[SessionSummary]:
    """The user's sessions for one account, most recently active first."""
    rows = conn.execute(
        sa.select(ocs.c.id, ocs.c.session_title, ocs.c.updated_at, ocs.c.created_at, ocs.c.total_queries, ocs.c.is_active)
        .where(ocs.c.business_account_id == business_account_id, ocs.c.dashboard_user_id == user)
        .order_by(sa.func.coalesce(ocs.c.updated_at, ocs.c.created_at).desc(), ocs.c.id)
        .limit(limit)
    )
    return [
        SessionSummary(
            id=r.id,
            title=display_title(r.session_title, r.created_at),
            updated_at=r.updated_at or r.created_at,
            created_at=r.created_at,
            total_queries=int(r.total_queries or 0),
            is_active=bool(r.is_active) if r.is_active is not None else True,
        )
        for r in rows
    ]


def _row_to_session(r) -> ChatSession:
    return ChatSession(
        id=r.id,
        business_account_id=r.business_account_id,
        dashboard_user_id=r.dashboard_user_id,
        title=display_title(r.session_title, r.created_at),
        messages=_messages(r.messages),
        is_active=bool(r.is_active) if r.is_active is not None else True,
        last_question=r.last_question,
        last_answer=r.last_answer,
        last_latency_ms=r.last_latency_ms,
        last_tools_used=r.last_tools_used if isinstance(r.last_tools_used, list) else None,
        total_queries=int(r.total_queries or 0),
        created_at=as_utc(r.created_at),
        updated_at=as_utc(r.updated_at),
    )


def get_session(conn: sa.Connection, session_id: uuid.UUID, *, user: str) -> ChatSession | None:
    """The session when it exists and belongs to `user`, else None."""
    row = conn.execute(
        sa.select(ocs).where(ocs.c.id == session_id, ocs.c.dashboard_user_id == user)
    ).first()
    return None if row is None else _row_to_session(row)


# ---------------------------------------------------------------------------------------------
# writes


def create_session(
    conn: sa.Connection, *, business_account_id: uuid.UUID, actor: Actor, now: datetime, title: str | None = None
) -> uuid.UUID:
    require_operator(actor, "start oversight chat sessions")
    user = actor.name
    session_id = uuid.uuid4()
    conn.execute(
        sa.insert(ocs).values(
            id=session_id,
            business_account_id=business_account_id,
            dashboard_user_id=user,
            messages=[],
            session_title=title,
            is_active=True,
            total_queries=0,
            created_at=now,
            updated_at=now,
        )
    )
    return session_id


def rename_session(conn: sa.Connection, session_id: uuid.UUID, *, actor: Actor, title: str, now: datetime) -> None:
    require_operator(actor, "rename oversight chat sessions")
    user = actor.name
    title = " ".join(title.split())[:200]
    if not title:
        raise ValueError("A session title cannot be empty.")
    done = conn.execute(
        sa.update(ocs)
        .where(ocs.c.id == session_id, ocs.c.dashboard_user_id == user)
        .values(session_title=title, updated_at=now)
    ).rowcount
    if not done:
        raise SessionNotFound(str(session_id))


def _locked(conn: sa.Connection, session_id: uuid.UUID, user: str):
    """The session row, locked for this transaction: FOR UPDATE on PostgreSQL, the database write
    lock on SQLite (taken before the read, so two tabs answering at once lose no message)."""
    take_write_lock(conn)
    row = conn.execute(
        sa.select(ocs.c.messages, ocs.c.session_title, ocs.c.total_queries)
        .where(ocs.c.id == session_id, ocs.c.dashboard_user_id == user)
        .with_for_update()
    ).first()
    if row is None:
        raise SessionNotFound(str(session_id))
    return row


def record_question(
    conn: sa.Connection, session_id: uuid.UUID, *, actor: Actor, question: str, now: datetime
) -> list[dict[str, Any]]:
    """Append the user's message, count the query, title an untitled session; returns the
    messages as they were before the question (the chat_history to send). Operators only."""
    require_operator(actor, "ask the Oversight Brain")
    row = _locked(conn, session_id, actor.name)
    before = _messages(row.messages)
    message = {"role": "user", "content": question, "timestamp": iso(now)}
    values: dict[str, Any] = {
        "messages": [*before, message],
        "last_question": question,
        "total_queries": int(row.total_queries or 0) + 1,
        "is_active": True,
        "updated_at": now,
    }
    if not row.session_title:
        values["session_title"] = title_from_question(question)
    conn.execute(sa.update(ocs).where(ocs.c.id == session_id).values(**values))
    return before


def record_answer(
    conn: sa.Connection,
    session_id: uuid.UUID,
    *,
    actor: Actor,
    content: str,
    now: datetime,
    latency_ms: int | None = None,
    tools_used: list[str] | None = None,
    incomplete: bool = False,
    error: str | None = None,
) -> None:
    """Append the assistant's message (complete or not) and the session's last_* columns."""
    require_operator(actor, "record oversight answers")
    row = _locked(conn, session_id, actor.name)
    message: dict[str, Any] = {"role": "assistant", "content": content, "timestamp": iso(now)}
    if tools_used is not None:
        message["tools_used"] = list(tools_used)
    if latency_ms is not None:
        message["latency_ms"] = int(latency_ms)
    if incomplete:
        message["incomplete"] = True
    if error:
        message["error"] = error
    conn.execute(
        sa.update(ocs)
        .where(ocs.c.id == session_id)
        .values(
            messages=[*_messages(row.messages), message],
            last_answer=content,
            last_latency_ms=None if latency_ms is None else int(latency_ms),
            last_tools_used=None if tools_used is None else list(tools_used),
            updated_at=now,
        )
    )
