"""Session persistence and the sandbox backend, on SQLite and PostgreSQL."""
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.activity.heartbeats import record_beat
from lib.activity.oversight import (
    SessionNotFound,
    create_session,
    get_session,
    list_sessions,
    record_answer,
    record_question,
    rename_session,
)
from lib.activity.sse import AgentDown, ChatStream, build_chat_request, open_chat
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import oversight_chat_sessions, post_queue, system_alerts
from lib.core.timeutil import utcnow
from lib.queue.store import enqueue
from sandbox.oversight_backend import make_server

pytestmark = pytest.mark.own_schema("chat sessions of accounts that do not exist")

ACC = uuid.UUID("11111111-2222-4333-8444-555555555555")
OTHER = uuid.UUID("99999999-2222-4333-8444-555555555555")


def test_question_and_answer_are_appended_with_counters(engine):
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # fixed: each message's timestamp is known
    with engine.begin() as conn:
        sid = create_session(conn, business_account_id=ACC, actor=Actor("ana", OPERATOR), now=t0)
        before = record_question(conn, sid, actor=Actor("ana", OPERATOR),
                                 question="How many items are in the DLQ right now, please?", now=t0)
        assert before == []
    with engine.connect() as conn:  # a reload mid-stream already shows the question
        s = get_session(conn, sid, user="ana")
    assert [m["role"] for m in s.messages] == ["user"] and s.total_queries == 1
    assert s.title == "How many items are in the DLQ right now, please?" and s.last_question.startswith("How many")
    with engine.begin() as conn:
        record_answer(conn, sid, actor=Actor("ana", OPERATOR), content="There are 3.", now=t0 + timedelta(seconds=2),
                      latency_ms=1500, tools_used=["get_dlq_summary"])
        before = record_question(conn, sid, actor=Actor("ana", OPERATOR), question="And alerts?", now=t0 + timedelta(seconds=5))
        assert [m["content"] for m in before] == ["How many items are in the DLQ right now, please?", "There are 3."]
        record_answer(conn, sid, actor=Actor("ana", OPERATOR), content="Two open al", now=t0 + timedelta(seconds=6),
                      incomplete=True)
    with engine.connect() as conn:
        s = get_session(conn, sid, user="ana")
        row = conn.execute(sa.select(oversight_chat_sessions).where(oversight_chat_sessions.c.id == sid)).one()
    assert s.messages[1] == {"role": "assistant", "content": "There are 3.", "timestamp": "2026-11-25T12:00:02Z",
                             "tools_used": ["get_dlq_summary"], "latency_ms": 1500}
    assert s.messages[3]["incomplete"] is True and "latency_ms" not in s.messages[3]
    # each message carries the time it was recorded, in UTC with a Z
    assert [m["timestamp"] for m in s.messages] == [
        "2026-11-25T12:00:00Z", "2026-11-25T12:00:02Z", "2026-11-25T12:00:05Z", "2026-11-25T12:00:06Z"]
    assert (row.total_queries, row.last_question, row.last_answer, row.last_latency_ms, row.last_tools_used) == (
        2, "And alerts?", "Two open al", None, None)
    assert row.is_active is True and row.updated_at > row.created_at
    # the title was generated once, from the first question
    assert s.title.startswith("How many")


def test_sessions_are_per_user_and_account_newest_first(engine):
    t0 = utcnow()
    with engine.begin() as conn:
        old = create_session(conn, business_account_id=ACC, actor=Actor("ana", OPERATOR), now=t0 - timedelta(hours=2))
        new = create_session(conn, business_account_id=ACC, actor=Actor("ana", OPERATOR), now=t0 - timedelta(hours=1))
        create_session(conn, business_account_id=ACC, actor=Actor("bob", OPERATOR), now=t0)
        create_session(conn, business_account_id=OTHER, actor=Actor("ana", OPERATOR), now=t0)
        record_question(conn, old, actor=Actor("ana", OPERATOR), question="q", now=t0)  # activity moves it to the top
        rename_session(conn, new, actor=Actor("ana", OPERATOR), title="  Weekly   check ", now=t0 - timedelta(minutes=30))
    with engine.connect() as conn:
        listed = list_sessions(conn, business_account_id=ACC, user="ana")
        assert [s.id for s in listed] == [old, new]
        assert [s.title for s in listed] == ["q", "Weekly check"] and [s.total_queries for s in listed] == [1, 0]
        assert get_session(conn, old, user="bob") is None  # not bob's
    with engine.begin() as conn, pytest.raises(SessionNotFound):
        record_question(conn, old, actor=Actor("bob", OPERATOR), question="mine?", now=t0)
    with engine.begin() as conn, pytest.raises(ValueError):
        rename_session(conn, new, actor=Actor("ana", OPERATOR), title="   ", now=t0)


@pytest.fixture
def backend(engine):
    url = engine.url.render_as_string(hide_password=False)
    server = make_server(url, port=0, token_delay_s=0, chat_path="/api/instagram/oversight/chat")
    with server:
        yield server


def _ask(server, question, account=ACC):
    req = build_chat_request(server.url, "/api/instagram/oversight/chat", user_id="ana",
                             business_account_id=str(account), question=question, chat_history=[])
    stream = ChatStream.from_response(open_chat(req, connect_timeout_s=2, read_timeout_s=5), max_duration_s=10)
    stream.drain()
    return stream


def test_sandbox_backend_answers_the_true_dlq_count(engine, backend):
    now = utcnow()
    with engine.begin() as conn:
        record_beat(conn, "oversight-brain", now=now - timedelta(seconds=20))
        for i in range(7):
            enqueue(conn, business_account_id=ACC, action_type="send_dm", payload={"i": i}, now=now)
        enqueue(conn, business_account_id=OTHER, action_type="send_dm", payload={"i": 0}, now=now)
        ids = [r.id for r in conn.execute(sa.select(post_queue.c.id).where(post_queue.c.business_account_id == ACC))]
        conn.execute(sa.update(post_queue).where(post_queue.c.id.in_(ids[:5])).values(
            status="dlq", error="(#10) Permission denied", error_category="permanent"))
        conn.execute(sa.update(post_queue).where(post_queue.c.business_account_id == OTHER).values(status="dlq"))
        conn.execute(sa.insert(system_alerts).values(id=uuid.uuid4(), alert_type="rate_limit", message="slow down",
                                                     business_account_id=ACC, resolved=False, created_at=now))
    s = _ask(backend, "How many items are in the DLQ?")
    assert s.outcome == "done" and s.tools_used == ["get_dlq_summary"] and s.latency_ms is not None
    assert s.text.startswith("There are 5 items in the DLQ") and "5 × permanent: (#10) Permission denied" in s.text
    q = _ask(backend, "queue status?")
    assert q.tools_used == ["get_queue_status"] and "- dlq: 5" in q.text and "- pending: 2" in q.text
    overview = _ask(backend, "hello")
    assert len(overview.tools_used) == 5 and "1 open alerts" in overview.text.replace("There are ", "")


def test_sandbox_backend_refuses_when_the_newest_beat_is_old(engine, backend):
    newest = utcnow().replace(microsecond=0) - timedelta(seconds=61)
    with engine.begin() as conn:
        record_beat(conn, "oversight-brain", now=newest - timedelta(minutes=10))
        record_beat(conn, "oversight-brain", now=newest)
        record_beat(conn, "oversight-brain", now=newest - timedelta(minutes=5))
    with pytest.raises(AgentDown) as info:
        _ask(backend, "anyone there?")
    # the 503 body names the newest beat (not the first or last row written), in UTC
    assert info.value.last_beat_at == newest.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_chat_writes_refuse_a_viewer(engine):
    from lib.core.identity import VIEWER, PermissionDenied

    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    viewer = Actor("viewer@x", VIEWER)
    with engine.begin() as conn:
        sid = create_session(conn, business_account_id=ACC, actor=Actor("viewer@x", OPERATOR), now=t0)
    for write in (
        lambda c: create_session(c, business_account_id=ACC, actor=viewer, now=t0),
        lambda c: record_question(c, sid, actor=viewer, question="q", now=t0),
        lambda c: record_answer(c, sid, actor=viewer, content="a", now=t0),
        lambda c: rename_session(c, sid, actor=viewer, title="t", now=t0),
        lambda c: create_session(c, business_account_id=ACC, actor="ops", now=t0),  # a bare name
    ):
        with pytest.raises(PermissionDenied):
            with engine.begin() as conn:
                write(conn)
    with engine.connect() as conn:
        s = get_session(conn, sid, user="viewer@x")
    assert s.messages == [] and s.total_queries == 0
