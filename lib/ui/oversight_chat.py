"""Oversight Chat: cached loaders, session list, messages, asking and streaming.

How an answer is never lost: the question is saved before the request goes out; the answer is
saved in a `finally:` around `st.write_stream`, which also runs when the Stop button, a rerun
or a closed tab ends the script run (Streamlit raises an exception into the run, it does not
kill the thread). As a last resort, an answer that was received but not saved is saved at the
top of the session's next run (`save_interrupted_answer`).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import streamlit as st

from lib.activity.heartbeats import is_alive, newest_beat
from lib.activity.oversight import (
    ChatSession,
    SessionNotFound,
    SessionSummary,
    chat_history,
    create_session,
    get_session,
    list_sessions,
    record_answer,
    record_question,
    rename_session,
    unanswered,
)
from lib.activity.sse import AgentDown, ChatStream, OversightError, build_chat_request, open_chat
from lib.core.db import write_transaction
from lib.core.identity import PermissionDenied
from lib.core.text import clip, escape_markdown, escape_markdown_keep_lists
from lib.core.timeutil import as_utc, floor_time, fmt_local, utcnow
from lib.ui import feedback
from lib.ui.auth import current_actor
from lib.ui.shell import CACHE_TTL_S, Scope, get_engine
from lib.ui.text import ago


class Keys:
    """The page's session-state keys (and its one query parameter); tests use these names too."""
    SESSION_PARAM = "session"  # ?session=<uuid>: the selection survives a reload
    PENDING = "_oversight_pending"  # the answer being streamed in this browser session
    DRAFT = "oversight_draft"  # a question that was too long, kept for editing
    PICK = "oversight_session_pick"  # the session list's radio
    RENAME_TITLE = "oversight_rename_title"  # the rename form's text input
    QUESTION = "oversight_q"  # the chat input
    FLASH = "oversight_chat"  # lib.ui.feedback's flash messages of this page
    ASK_NEW = "_oversight_ask_in_new_session"  # the kept question of a vanished session goes to a new one
    RESEND = "_oversight_resend"  # that question, asked again by the next run without a second Send
    CHOSEN = "_oversight_chosen"  # the session this browser session last picked or was sent to
    SEEN = "_oversight_seen"  # the session addresses this browser session has shown


SESSION_PARAM, _PENDING, _DRAFT, _PICK = Keys.SESSION_PARAM, Keys.PENDING, Keys.DRAFT, Keys.PICK
SESSION_LIST_LIMIT = 30
_ASK_NEW = Keys.ASK_NEW


ANSWER_DISPLAY_LIMIT = 20_000  # characters of one stored message shown in the history (the rest is noted)


def md(text: str | None) -> str:
    """Untrusted text made safe for Markdown rendering (shown literally)."""
    return escape_markdown("" if text is None else str(text))[0]


def _latency_s(value: Any) -> float | None:
    """latency_ms of a stored message in seconds; None when it is missing or not a number."""
    try:
        return float(value) / 1000 if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _when(value: Any) -> datetime | None:
    try:
        return as_utc(value) if value else None
    except (TypeError, ValueError, AttributeError):  # a stored timestamp that is not one
        return None


# ---------------------------------------------------------------------------------------------
# cached loaders (per user: the user is part of every key)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_sessions(db_url: str, account_id: uuid.UUID, user: str) -> list[SessionSummary]:
    with get_engine(db_url).connect() as conn:
        return list_sessions(conn, business_account_id=account_id, user=user, limit=SESSION_LIST_LIMIT)


@st.cache_data(ttl=CACHE_TTL_S, max_entries=64, show_spinner=False)
def load_session(db_url: str, session_id: uuid.UUID, user: str) -> ChatSession | None:
    with get_engine(db_url).connect() as conn:
        return get_session(conn, session_id, user=user)


@st.cache_data(ttl=5, max_entries=16, show_spinner=False)
def load_newest_beat(db_url: str, now: datetime) -> datetime | None:
    with get_engine(db_url).connect() as conn:
        return newest_beat(conn)


def clear_loaders() -> None:
    load_sessions.clear()
    load_session.clear()


# ---------------------------------------------------------------------------------------------
# fallback save and flash messages


def save_interrupted_answer(scope: Scope) -> None:
    """Save an answer a previous run received but could not save (normally done in `finally`)."""
    pending = st.session_state.get(_PENDING)
    if pending and not pending["saved"]:
        _save_answer(scope, pending)
    st.session_state.pop(_PENDING, None)


def _save_answer(scope: Scope, pending: dict[str, Any]) -> None:
    if pending["saved"]:
        return
    stream: ChatStream = pending["stream"]
    stream.close()  # marks a still-open stream as stopped
    try:
        _record_answer(scope, pending, stream)
    except PermissionDenied as exc:  # signed out or expired while the answer streamed
        flash("error", f"The answer was not saved: {exc}. Sign in again and ask again.")
    except SessionNotFound:  # the session was deleted while the answer streamed
        flash("warning", "The answer was not saved: this chat session no longer exists (deleted elsewhere).")
    pending["saved"] = True
    clear_loaders()


def _record_answer(scope: Scope, pending: dict[str, Any], stream: ChatStream) -> None:
    with write_transaction(scope.engine) as conn:
        record_answer(
            conn,
            pending["session_id"],
            actor=current_actor(scope.settings),
            content=stream.text,
            now=utcnow(),
            latency_ms=stream.latency_ms if not stream.incomplete else None,
            tools_used=stream.tools_used,
            incomplete=stream.incomplete,
            error=stream.error if stream.outcome == "error" else None,
        )


def session_gone(question: str | None) -> None:
    """The page had a session cached that no longer exists (deleted elsewhere, data reloaded): say
    so and ask the question in a new session at once (the user pressed Send once already)."""
    clear_loaders()
    st.query_params.pop(SESSION_PARAM, None)
    st.session_state.pop(_PICK, None)
    st.session_state.pop(Keys.CHOSEN, None)
    if question:  # ask() says so after the answer (a flash shown now would be gone by then)
        st.session_state[Keys.RESEND] = question
        st.session_state[_ASK_NEW] = True
    else:
        flash("warning", "This chat session no longer exists (it was deleted elsewhere or the data was reloaded).")
    st.rerun()


def flash(kind: str, text: str) -> None:
    """A message for the next run (after st.rerun); the text is untrusted (backend errors)."""
    feedback.flash(Keys.FLASH, kind, md(text))


def show_flash() -> None:
    feedback.show_flash(Keys.FLASH)


# ---------------------------------------------------------------------------------------------
# sessions


def show_pick_account() -> None:
    st.info(
        "Oversight chats belong to one business account. Pick an account in the sidebar "
        "(“Business account”) to see its sessions and ask questions.",
        icon=":material/account_circle:",
    )


def selected_session_id(scope: Scope, sessions: list[SessionSummary]) -> uuid.UUID | None:
    """The session named in the URL when it is one of this user's sessions for this account,
    else the most recently active one (None when there is none)."""
    raw = _address_to_follow(st.query_params.get(SESSION_PARAM))
    ids = {str(s.id): s.id for s in sessions}
    if raw in ids:
        _select(ids[raw])
        return ids[raw]
    if raw:
        try:
            wanted = uuid.UUID(raw)
        except ValueError:
            wanted = None
        if wanted is not None:  # older than the list's limit, but still ours and this account's
            session = load_session(scope.db_url, wanted, scope.user.name)
            if session is not None and session.business_account_id == scope.account_id:
                _select(wanted)
                return wanted
    if sessions:
        _select(sessions[0].id)
        return sessions[0].id
    st.query_params.pop(SESSION_PARAM, None)
    st.session_state.pop(Keys.CHOSEN, None)
    return None


def _address_to_follow(raw: str | None) -> str | None:
    """Every run takes its query parameters from the browser's address as it was when the run was
    asked for. A question sent while the page still redraws for a pick carries the address from
    before the pick, which would send it to the session that was left. An address this browser
    session has already shown, other than the latest pick, is such a leftover: the pick wins. An
    address never shown (a link, a reload) is followed."""
    chosen = st.session_state.get(Keys.CHOSEN)
    if chosen and raw != chosen and raw in st.session_state.get(Keys.SEEN, set()):
        return str(chosen)
    return raw


def _select(session_id: uuid.UUID | str) -> None:
    st.query_params[SESSION_PARAM] = str(session_id)
    st.session_state[Keys.CHOSEN] = str(session_id)
    st.session_state.setdefault(Keys.SEEN, set()).add(str(session_id))


def _on_pick() -> None:
    _select(st.session_state[_PICK])


def _new_session(scope: Scope) -> None:
    new_id = feedback.guarded_write(Keys.FLASH, "New session", scope.engine, lambda conn: create_session(
        conn, business_account_id=scope.account_id, actor=current_actor(scope.settings), now=utcnow()))
    if new_id is None:
        return
    clear_loaders()
    _select(new_id)
    st.session_state.pop(_PICK, None)


def show_session_list(scope: Scope, sessions: list[SessionSummary], selected: uuid.UUID | None, now: datetime) -> None:
    can_write = scope.user.is_operator
    st.button(
        "New session",
        icon=":material/add_comment:",
        width="stretch",
        key="oversight_new",
        on_click=_new_session,
        args=(scope,),
        disabled=not can_write,
        help=None if can_write else "Only operators can start oversight sessions.",
    )
    if not sessions:
        st.caption("No sessions yet for this account. Ask a question (or press New session) to start one.")
        return
    ids = [str(s.id) for s in sessions]
    if selected is not None and str(selected) not in ids:
        ids.insert(0, str(selected))  # selected through the URL but older than the list
    by_id = {str(s.id): s for s in sessions}
    if selected is not None:
        st.session_state[_PICK] = str(selected)

    def label(i: str) -> str:
        s = by_id.get(i)
        return md(s.title if s else "Selected session")

    captions = [
        (f"{ago(by_id[i].updated_at)} · {by_id[i].total_queries} "
         f"{'query' if by_id[i].total_queries == 1 else 'queries'}") if i in by_id else ""
        for i in ids
    ]
    st.radio("Sessions", ids, format_func=label, captions=captions, key=_PICK, on_change=_on_pick)
    if len(sessions) >= SESSION_LIST_LIMIT:
        st.caption(f"Showing the {SESSION_LIST_LIMIT} most recently active sessions.")


def _rename(scope: Scope, session_id: uuid.UUID) -> None:
    title = st.session_state.get(Keys.RENAME_TITLE, "")
    try:
        done = feedback.guarded_write(Keys.FLASH, "Rename", scope.engine, lambda conn: rename_session(
            conn, session_id, actor=current_actor(scope.settings), title=title, now=utcnow()) or True)
    except SessionNotFound:
        clear_loaders()
        flash("warning", "This chat session no longer exists (it was deleted elsewhere or the data was reloaded).")
        return
    except ValueError as exc:
        flash("warning", str(exc))
        return
    if done:
        clear_loaders()


def show_session_header(scope: Scope, session: ChatSession) -> None:
    title_col, rename_col = st.columns([4, 1], vertical_alignment="center")
    title_col.subheader(md(session.title), anchor=False)
    with rename_col.popover("Rename", icon=":material/edit:", disabled=not scope.user.is_operator,
                            help=None if scope.user.is_operator else "Only operators can rename sessions."):
        with st.form("oversight_rename", border=False):
            st.text_input("Session title", value=session.title, max_chars=200, key=Keys.RENAME_TITLE)
            st.form_submit_button("Save title", on_click=_rename, args=(scope, session.id))
    st.caption(
        f"{session.total_queries} {'query' if session.total_queries == 1 else 'queries'} · "
        f"started {fmt_local(session.created_at, scope.tz, with_seconds=False)} · "
        f"last activity {fmt_local(session.updated_at, scope.tz, with_seconds=False)}"
    )


# ---------------------------------------------------------------------------------------------
# messages


def _tools_text(tools: list[str] | None) -> str:
    if not tools:
        return "none reported"
    return ", ".join(str(t) for t in tools) if isinstance(tools, (list, tuple)) else str(tools)


def show_message(message: dict[str, Any], tz, *, unanswered_question: bool = False) -> None:
    role = "user" if message.get("role") == "user" else "assistant"
    with st.chat_message(role):
        if message.get("content"):
            content = clip(message.get("content"), ANSWER_DISPLAY_LIMIT)
            # the Brain writes lists in Markdown: they stay lists, everything else is shown literally
            st.markdown(escape_markdown_keep_lists(content) if role == "assistant" else md(content))
        elif role == "assistant":
            st.caption("(no text received)")
        when = _when(message.get("timestamp"))
        bits = [fmt_local(when, tz)] if when else []
        if role == "assistant":
            if _latency_s(message.get("latency_ms")) is not None:
                bits.append(f"answered in {_latency_s(message['latency_ms']):.1f} s")
            if "tools_used" in message:
                bits.append(f"tools: {md(_tools_text(message.get('tools_used')))}")
        st.caption(" · ".join(bits))
        if message.get("incomplete"):
            st.badge("Interrupted: partial answer", icon=":material/content_cut:", color="orange")
        if message.get("error"):
            st.error(md(f"The backend reported an error: {message['error']}"), icon=":material/error:")
        if unanswered_question:
            st.badge("Unanswered", icon=":material/help:", color="gray")


def show_messages(session: ChatSession | None, tz) -> None:
    if session is None or not session.messages:
        st.caption(
            "Ask about this account's queue, dead-letter queue (DLQ), open alerts, agents or latest metrics, "
            "e.g. “How many items are in the DLQ?”"
        )
        return
    open_questions = unanswered(session.messages)
    for i, message in enumerate(session.messages):
        show_message(message, tz, unanswered_question=i in open_questions)


# ---------------------------------------------------------------------------------------------
# liveness and input


def show_liveness(scope: Scope) -> None:
    """Agent liveness as the backend will judge it, refreshed with the live toggle."""
    st.fragment(run_every=scope.run_every)(_liveness_inner)(scope.db_url)


def _liveness_inner(db_url: str) -> None:
    now = utcnow()
    last = load_newest_beat(db_url, floor_time(now, 5))
    if is_alive(last, now):
        st.badge(f"Agent alive · last beat {ago(last)}", icon=":material/check_circle:", color="green")
    elif last is None:
        st.badge("Agent not responding · no heartbeat yet", icon=":material/error:", color="red")
    else:
        st.badge(f"Agent not responding · last beat {ago(last)}", icon=":material/error:", color="red")


def question_input(scope: Scope) -> str | None:
    """The chat input (Send turns into Stop while an answer streams), and the editor for a
    question that was too long. Returns a question to send now, or None."""
    limit = scope.settings.oversight_max_question_chars
    can_write = scope.user.is_operator
    draft = st.session_state.get(_DRAFT)
    if draft is not None:
        n = len(draft)
        if n > limit:
            st.error(
                f"Your question has {n:,} characters; the limit is {limit:,}. It was not sent. "
                "Shorten it here and send it, or discard it.",
                icon=":material/warning:",
            )
        st.text_area(f"Your question ({n:,} / {limit:,} characters)", key=_DRAFT, height=160)
        send_col, discard_col, _ = st.columns([1, 1, 4])
        sent = send_col.button("Send", type="primary", key="oversight_draft_send", disabled=n > limit or not can_write,
                               help=f"Shorten the question to {limit:,} characters first." if n > limit else None)
        discard_col.button("Discard", key="oversight_draft_discard", on_click=lambda: st.session_state.pop(_DRAFT, None))
        if sent and n <= limit:
            del st.session_state[_DRAFT]
            return draft.strip() or None
    prompt = st.chat_input(
        "Ask the Oversight Brain about this account…" if can_write else "Read-only: only operators can ask questions",
        key=Keys.QUESTION,
        submit_mode="stop",
        disabled=not can_write,
    )
    resend = st.session_state.pop(Keys.RESEND, None)
    if resend and can_write:
        return resend
    if prompt is None:
        return None
    if len(prompt) > limit:
        st.session_state[_DRAFT] = prompt
        st.rerun()  # show the editor with the text kept
    return prompt.strip() or None


# ---------------------------------------------------------------------------------------------
# asking


def _escaped(chunks: Iterator[str]) -> Iterator[str]:
    at_line_start = True
    for chunk in chunks:
        text, at_line_start = escape_markdown(chunk, at_line_start)
        yield text


def ask(scope: Scope, session_id: uuid.UUID | None, question: str, container) -> None:
    """Save the question, stream the answer into `container`, save the answer; then rerun so the
    session list and header show the new counts."""
    settings = scope.settings
    now = utcnow()
    if st.session_state.pop(_ASK_NEW, False):
        session_id = None
        flash("warning", "This chat session no longer exists (it was deleted elsewhere or the data was reloaded). "
                         "Your question was asked in a new session.")
    try:
        with write_transaction(scope.engine) as conn:
            if session_id is None:
                session_id = create_session(conn, business_account_id=scope.account_id,
                                            actor=current_actor(scope.settings), now=now)
            before = record_question(conn, session_id, actor=current_actor(scope.settings), question=question, now=now)
    except SessionNotFound:
        session_gone(question)
    except PermissionDenied as exc:
        st.session_state[_DRAFT] = question
        flash("error", f"Your question was not sent: {exc}. It is kept below.")
        st.rerun()
    clear_loaders()
    _select(session_id)
    request = build_chat_request(
        settings.oversight_api_url,
        settings.oversight_chat_path,
        user_id=scope.user.name,
        business_account_id=str(scope.account_id),
        question=question,
        chat_history=chat_history(before),
    )
    with container:
        show_message({"role": "user", "content": question, "timestamp": now.isoformat()}, scope.tz)
        with st.chat_message("assistant"):
            started = time.monotonic()
            try:
                with st.spinner("Connecting to the Oversight Brain…"):
                    response = open_chat(request, connect_timeout_s=settings.oversight_connect_timeout_s,
                                         read_timeout_s=min(settings.oversight_read_timeout_s, settings.max_stream_duration_s))
            except AgentDown as exc:
                last = as_utc(exc.last_beat_at) if exc.last_beat_at else load_newest_beat(scope.db_url, floor_time(utcnow(), 5))
                when = "no heartbeat has been received" if last is None else \
                    f"last beat {ago(last)} ({fmt_local(last, scope.tz)})"
                flash("error", f"The agent is not responding ({when}), so the Oversight Brain cannot answer. "
                               "Your question is kept in this session as unanswered; ask again when the agent is back.")
                st.rerun()
            except OversightError as exc:
                flash("error", f"{exc} Your question is kept in this session as unanswered.")
                st.rerun()
            stream = ChatStream.from_response(response, max_duration_s=settings.max_stream_duration_s, started=started)
            pending = {"session_id": session_id, "stream": stream, "saved": False}
            st.session_state[_PENDING] = pending
            try:
                st.write_stream(_escaped(stream.chunks()))
            finally:
                _save_answer(scope, pending)  # also on Stop / rerun / closed tab
            st.session_state.pop(_PENDING, None)
    if stream.incomplete:
        kept = "The partial answer is saved and marked as interrupted." if stream.text else "Nothing was received."
        flash("warning" if stream.outcome != "error" else "error", f"{stream.message}. {kept}")
    st.rerun()
