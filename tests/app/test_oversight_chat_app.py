"""Oversight Chat through AppTest: account rule, sessions, a streamed answer stored, the limit."""
import re
import uuid
from datetime import timedelta

import pytest

from lib.activity.oversight import create_session, get_session, list_sessions, record_answer, record_question
from lib.core.identity import OPERATOR, Actor
from lib.core.timeutil import utcnow
from lib.ui.oversight_chat import Keys
from tests.support.oversight_fake import FakeOversight, chat_database

PAGE = "pages/oversight_chat.py"
ACC = uuid.UUID("0a0a0a0a-1111-4222-8333-444444444444")


@pytest.fixture
def chat_db(sqlite_url):
    url, eng = chat_database(sqlite_url, ACC, "acme.shop")
    yield url, eng
    eng.dispose()


@pytest.fixture
def fake():
    with FakeOversight("normal") as server:
        yield server


def rerun(at):
    # AppTest does not carry a query-param-bound selectbox over runs: set the account each run
    at.sidebar.selectbox(key="account").set_value(str(ACC))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_page(run_page, url, fake):
    return rerun(run_page(url, PAGE, env=fake.env()))


def plain(text: str) -> str:
    """Markdown-escaped text as the reader sees it."""
    return re.sub(r"\\(.)", r"\1", text)


def sessions(eng):
    with eng.connect() as conn:
        return list_sessions(conn, business_account_id=ACC, user="local")


def test_all_accounts_asks_to_pick_one(run_page, chat_db, fake):
    at = run_page(chat_db[0], PAGE, env=fake.env())
    assert "Pick an account in the sidebar" in at.info[0].value
    assert not at.chat_input


def test_streamed_answer_is_stored_and_shown(run_page, chat_db, fake):
    url, eng = chat_db
    at = open_page(run_page, url, fake)
    assert "No sessions yet" in " ".join(c.value for c in at.caption)
    at.chat_input(key=Keys.QUESTION).set_value("How many items are in the DLQ?")
    rerun(at)
    [s] = sessions(eng)
    assert s.title == "How many items are in the DLQ?" and s.total_queries == 1
    with eng.connect() as conn:
        msgs = get_session(conn, s.id, user="local").messages
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "How many items are in the DLQ?"), ("assistant", "There are 3 items in the DLQ.")]
    assert msgs[1]["latency_ms"] == 1234 and msgs[1]["tools_used"] == ["get_dlq_summary"]
    assert at.query_params["session"] == [str(s.id)] or at.query_params["session"] == str(s.id)
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assistant = at.chat_message[1]
    assert assistant.markdown[0].value == "There are 3 items in the DLQ\\."
    assert "answered in 1.2 s" in assistant.caption[0].value and "get\\_dlq\\_summary" in assistant.caption[0].value
    body = fake.requests[0]["body"]
    assert body["business_account_id"] == str(ACC) and body["user_id"] == "local" and body["stream"] is True


def test_new_session_and_select(run_page, chat_db, fake):
    url, eng = chat_db
    t = utcnow()
    with eng.begin() as conn:
        first = create_session(conn, business_account_id=ACC, actor=Actor("local", OPERATOR), now=t - timedelta(hours=1))
        record_question(conn, first, actor=Actor("local", OPERATOR), question="Older question", now=t - timedelta(hours=1))
        record_answer(conn, first, actor=Actor("local", OPERATOR), content="Older answer", now=t - timedelta(hours=1),
                      incomplete=True)
    at = open_page(run_page, url, fake)
    assert at.radio(key=Keys.PICK).value == str(first)  # the newest is selected
    assert any("Interrupted: partial answer" in m.value for m in at.markdown)
    at.button(key="oversight_new").click()
    rerun(at)
    listed = sessions(eng)
    assert len(listed) == 2 and listed[0].id != first and listed[0].total_queries == 0
    assert at.radio(key=Keys.PICK).value == str(listed[0].id)
    assert not at.chat_message  # the new session is empty
    at.radio(key=Keys.PICK).set_value(str(first))
    rerun(at)
    assert at.query_params["session"] in (str(first), [str(first)])
    assert [m.markdown[0].value for m in at.chat_message] == ["Older question", "Older answer"]
    # rename
    at.text_input(key=Keys.RENAME_TITLE).set_value("DLQ follow-up")
    at.button[[b.label for b in at.button].index("Save title")].click()
    rerun(at)
    assert "DLQ follow-up" in [s.title for s in sessions(eng)]


def test_a_question_sent_with_the_address_from_before_the_pick_goes_to_the_picked_session(run_page, chat_db, fake):
    # each run takes its query parameters from the browser's address when the run was asked for: a
    # question sent while the page still redraws for a pick carries the address of the session left
    url, eng = chat_db
    t, me = utcnow(), Actor("local", OPERATOR)
    with eng.begin() as conn:
        older = create_session(conn, business_account_id=ACC, actor=me, now=t - timedelta(hours=3), title="Older")
        newer = create_session(conn, business_account_id=ACC, actor=me, now=t - timedelta(minutes=5), title="Newer")
    at = open_page(run_page, url, fake)
    assert at.radio(key=Keys.PICK).value == str(newer)
    at.radio(key=Keys.PICK).set_value(str(older))
    rerun(at)
    at.query_params["session"] = str(newer)  # the address the browser still showed
    at.chat_input(key=Keys.QUESTION).set_value("Which session am I in?")
    rerun(at)
    with eng.connect() as conn:
        assert [m["content"] for m in get_session(conn, older, user="local").messages][:1] == ["Which session am I in?"]
        assert get_session(conn, newer, user="local").messages == []
    assert at.radio(key=Keys.PICK).value == str(older)
    assert at.query_params["session"] in (str(older), [str(older)])


def test_an_address_this_browser_has_not_shown_is_followed(run_page, chat_db, fake):
    url, eng = chat_db
    t, me = utcnow(), Actor("local", OPERATOR)
    with eng.begin() as conn:
        older = create_session(conn, business_account_id=ACC, actor=me, now=t - timedelta(hours=3), title="Older")
        create_session(conn, business_account_id=ACC, actor=me, now=t - timedelta(minutes=5), title="Newer")
    at = open_page(run_page, url, fake)
    at.query_params["session"] = str(older)  # a link to a session, opened in this tab
    rerun(at)
    assert at.radio(key=Keys.PICK).value == str(older)


def test_question_over_2000_characters_is_kept_not_sent(run_page, chat_db, fake):
    url, eng = chat_db
    at = open_page(run_page, url, fake)
    long = "Why " + "x" * 2000
    at.chat_input(key=Keys.QUESTION).set_value(long)
    rerun(at)
    assert fake.requests == [] and sessions(eng) == []
    assert "2,004 characters; the limit is 2,000" in at.error[0].value
    draft = at.text_area(key=Keys.DRAFT)
    assert draft.value == long  # nothing lost
    send = at.button(key="oversight_draft_send")
    assert send.disabled
    draft.set_value(long[:2000])
    rerun(at)
    at.button(key="oversight_draft_send").click()
    rerun(at)
    assert len(fake.requests) == 1 and fake.requests[0]["body"]["question"] == long[:2000]
    assert not at.text_area


def test_agent_down_keeps_the_question_unanswered(run_page, chat_db, fake):
    url, eng = chat_db
    fake.set("agent_down")
    at = open_page(run_page, url, fake)
    at.chat_input(key=Keys.QUESTION).set_value("Anyone there?")
    rerun(at)
    assert "The agent is not responding (last beat" in plain(at.error[0].value)
    [s] = sessions(eng)
    assert s.total_queries == 1
    assert [m.markdown[0].value for m in at.chat_message] == ["Anyone there?"]
    assert any("Unanswered" in m.value for m in at.chat_message[0].markdown)


def test_html_500_shows_a_clear_message(run_page, chat_db, fake):
    url, eng = chat_db
    fake.set("html_500")
    at = open_page(run_page, url, fake)
    at.chat_input(key=Keys.QUESTION).set_value("Status?")
    rerun(at)
    assert "HTTP 500" in plain(at.error[0].value) and "HTML error page" in plain(at.error[0].value)


def test_dropped_stream_saves_partial_answer_as_incomplete(run_page, chat_db, fake):
    url, eng = chat_db
    fake.set("drop")
    at = open_page(run_page, url, fake)
    at.chat_input(key=Keys.QUESTION).set_value("Tell me everything")
    rerun(at)
    [s] = sessions(eng)
    with eng.connect() as conn:
        last = get_session(conn, s.id, user="local").messages[-1]
    assert last["content"] == "Half an answer" and last["incomplete"] is True
    assert "connection to the oversight backend was lost" in plain(at.warning[0].value)


def test_a_session_deleted_elsewhere_asks_the_question_in_a_new_session(run_page, chat_db, fake):
    """The page has the session cached; it is deleted elsewhere; the user asks."""
    import sqlalchemy as sa

    from lib.core.schema import oversight_chat_sessions as ocs

    url, eng = chat_db
    with eng.begin() as conn:
        old = create_session(conn, business_account_id=ACC, actor=Actor("local", OPERATOR), now=utcnow(), title="Old one")
    at = open_page(run_page, url, fake)
    assert any("Old one" in str(r.options) for r in at.radio)
    with eng.begin() as conn:
        conn.execute(sa.delete(ocs).where(ocs.c.id == old))
    at.chat_input(key="oversight_q").set_value("Why did the last post fail?")
    rerun(at)
    assert not at.exception
    assert any("no longer exists" in w.value and "asked in a new session" in w.value for w in at.warning)
    assert not at.text_area  # nothing to press again: the question went to a new session
    [s] = sessions(eng)
    assert s.id != old
    with eng.connect() as conn:
        msgs = get_session(conn, s.id, user="local").messages
    assert msgs[0] == {**msgs[0], "role": "user", "content": "Why did the last post fail?"}
