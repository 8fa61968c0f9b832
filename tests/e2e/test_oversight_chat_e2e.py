"""Oversight Chat in a real browser: the answer grows while streaming, Stop keeps the partial answer."""
import time
import uuid

import pytest
from playwright.sync_api import expect

from lib.activity.oversight import get_session, list_sessions
from tests.e2e.conftest import click_until, wait_idle
from tests.support.oversight_fake import FakeOversight, chat_database

pytestmark = pytest.mark.e2e
ACC = uuid.UUID("0b0b0b0b-1111-4222-8333-444444444444")


@pytest.fixture
def chat_db(sqlite_url):
    url, eng = chat_database(sqlite_url, ACC, "acme.shop")
    yield url, eng
    eng.dispose()


def test_answer_grows_then_stop_keeps_partial_answer_after_reload(start_app, chat_db, page):
    url, eng = chat_db
    with FakeOversight("slow", tokens=400, delay_s=0.03) as fake:
        server = start_app({"DATABASE_URL": url, "OVERSIGHT_API_URL": fake.url})
        page.goto(f"{server.url}/oversight_chat?account=acme.shop")  # the sidebar binds the label
        wait_idle(page)
        expect(page.get_by_text("No sessions yet for this account")).to_be_visible()
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("Explain the queue in detail")
        box.press("Enter")
        answer = page.get_by_test_id("stChatMessage").nth(1)
        expect(answer).to_contain_text("word0", timeout=15_000)
        seen = []
        for _ in range(20):  # sample the rendered answer while it streams
            seen.append(len(answer.inner_text()))
            time.sleep(0.15)
        assert len(set(seen)) > 2 and seen == sorted(seen), seen  # rendered many times, growing
        page.get_by_test_id("stChatInputStopButton").click()
        wait_idle(page)
        assert fake.httpd.finished.wait(10) and fake.httpd.sent < 400  # the stream was really closed

    [s] = list_sessions(eng.connect(), business_account_id=ACC, user="local")
    with eng.connect() as conn:
        last = get_session(conn, s.id, user="local").messages[-1]
    assert last["role"] == "assistant" and last["incomplete"] is True and last["content"].startswith("word0 word1")

    page.reload()
    wait_idle(page)
    messages = page.get_by_test_id("stChatMessage")
    expect(messages).to_have_count(2)
    expect(messages.nth(0)).to_contain_text("Explain the queue in detail")
    expect(messages.nth(1)).to_contain_text("Interrupted: partial answer")
    expect(messages.nth(1)).to_contain_text(last["content"].split()[-1])
    assert page.locator("[data-testid='stException']").count() == 0


def test_the_brains_lists_read_as_lists_and_nothing_else_is_interpreted(start_app, chat_db, page):
    from lib.activity.oversight import create_session, record_answer, record_question
    from lib.core.identity import OPERATOR, Actor
    from lib.core.timeutil import utcnow

    url, eng = chat_db
    me, now = Actor("local", OPERATOR), utcnow()
    with eng.begin() as conn:
        sid = create_session(conn, business_account_id=ACC, actor=me, now=now, title="what failed")
        record_question(conn, sid, actor=me, question="- what failed?", now=now)
        record_answer(conn, sid, actor=me, now=now, content=(
            "Two rows failed:\n- reply to **comment** 17 (deleted)\n- DM to [someone](http://example.com)\n"
            "1. retry the DM\n2. discard the reply\nThat is all."))
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": url})
    page.goto(server.url + f"/oversight_chat?account=acme.shop&session={sid}")
    wait_idle(page)
    answer = page.get_by_test_id("stChatMessage").nth(1)
    expect(answer.locator("ul > li")).to_have_count(2)
    expect(answer.locator("ol > li")).to_have_count(2)
    expect(answer.locator("ul > li").first).to_have_text("reply to **comment** 17 (deleted)")  # literal, not bold
    expect(answer.locator("a")).to_have_count(0)  # no link made from the answer's text
    expect(answer).to_contain_text("That is all.")
    question = page.get_by_test_id("stChatMessage").nth(0)
    expect(question.locator("li")).to_have_count(0)  # what the user typed is shown as typed
    expect(question).to_contain_text("- what failed?")


def _question_arrived(eng, older, newer, question: str, wait_s: float = 10.0) -> bool:
    """Whether `question` was saved in either session within `wait_s`: the run that saves it can start
    after the page first reports idle, so the screen alone cannot tell a lost Enter from a slow one."""
    deadline = time.monotonic() + wait_s
    while True:
        with eng.connect() as conn:
            saved = [m["content"] for sid in (older, newer) for m in get_session(conn, sid, user="local").messages]
        if question in saved:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


@pytest.mark.parametrize("hurry", [False, True], ids=["after-the-redraw", "while-it-redraws"])
def test_a_question_goes_into_the_session_on_screen_not_the_newest(start_app, chat_db, page, hurry):
    from datetime import timedelta

    from lib.activity.oversight import create_session, record_answer, record_question
    from lib.core.identity import OPERATOR, Actor
    from lib.core.timeutil import utcnow

    url, eng = chat_db
    me, now = Actor("local", OPERATOR), utcnow()
    with eng.begin() as conn:
        older = create_session(conn, business_account_id=ACC, actor=me, now=now - timedelta(hours=3), title="Older topic")
        record_question(conn, older, actor=me, question="What is in the DLQ?", now=now - timedelta(hours=3))
        record_answer(conn, older, actor=me, now=now - timedelta(hours=3), content="Three auth failures.")
        newer = create_session(conn, business_account_id=ACC, actor=me, now=now - timedelta(minutes=5), title="Newer topic")
        record_question(conn, newer, actor=me, question="Are agents alive?", now=now - timedelta(minutes=5))
        record_answer(conn, newer, actor=me, now=now - timedelta(minutes=5), content="All four are alive.")
    page.set_viewport_size({"width": 1440, "height": 900})
    with FakeOversight("normal", tokens=5, delay_s=0.01) as fake:
        server = start_app({"DATABASE_URL": url, "OVERSIGHT_API_URL": fake.url})
        page.goto(f"{server.url}/oversight_chat?account=acme.shop")
        wait_idle(page)
        expect(page.get_by_role("heading", name="Newer topic")).to_be_visible()  # the newest is shown first
        # the user looks at the older session, then asks
        # a click can land while a late part of the first draw moves the list: repeat it until the radio
        # shows the pick (which it does at once, before the page redraws for it)
        click_until(page, lambda: page.get_by_test_id("stRadio").get_by_text("Older topic").click(),
                    lambda ms: expect(page.get_by_role("radio", name="Older topic")).to_be_checked(timeout=ms))
        if not hurry:  # else the question is sent while the page still redraws for the pick
            wait_idle(page)
            expect(page.get_by_role("heading", name="Older topic")).to_be_visible()
            expect(page.get_by_test_id("stChatMessage").nth(0)).to_contain_text("What is in the DLQ?")
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("And how many are retryable?")
        box.press("Enter")
        wait_idle(page)
        if hurry and not _question_arrived(eng, older, newer, "And how many are retryable?"):
            # the redraw replaced the input before Enter reached it (nothing was saved anywhere, which the
            # checks below confirm); ask again on the settled page
            box.fill("And how many are retryable?")
            box.press("Enter")
            wait_idle(page)
        expect(page.get_by_test_id("stChatMessage")).to_have_count(4)
        expect(page.get_by_role("heading", name="Older topic")).to_be_visible()
        # the backend got the older session's history with the question
        [request] = fake.requests
        body = request["body"]
        assert body["question"] == "And how many are retryable?"
        assert [m["content"] for m in body["chat_history"]] == ["What is in the DLQ?", "Three auth failures."]
        assert f"session={older}" in page.url
    with eng.connect() as conn:
        old_messages = get_session(conn, older, user="local").messages
        new_messages = get_session(conn, newer, user="local").messages
    assert [m["content"] for m in old_messages][:3] == ["What is in the DLQ?", "Three auth failures.",
                                                        "And how many are retryable?"]
    assert len(old_messages) == 4 and old_messages[-1]["role"] == "assistant"
    assert [m["content"] for m in new_messages] == ["Are agents alive?", "All four are alive."]
    assert page.locator("[data-testid='stException']").count() == 0


def test_a_session_deleted_elsewhere_asks_the_question_in_a_new_session(start_app, chat_db, page):
    """The page shows a session; someone deletes it elsewhere; the user asks: one Send is enough, the
    question and its answer land in a new session and the page says why."""
    import sqlalchemy as sa

    from lib.activity.oversight import create_session
    from lib.core.identity import OPERATOR, Actor
    from lib.core.schema import oversight_chat_sessions as ocs
    from lib.core.timeutil import utcnow

    url, eng = chat_db
    with eng.begin() as conn:
        old = create_session(conn, business_account_id=ACC, actor=Actor("local", OPERATOR), now=utcnow(),
                             title="Soon deleted")
    page.set_viewport_size({"width": 1440, "height": 900})
    with FakeOversight("normal", tokens=5, delay_s=0.01) as fake:
        server = start_app({"DATABASE_URL": url, "OVERSIGHT_API_URL": fake.url})
        page.goto(f"{server.url}/oversight_chat?account=acme.shop")
        wait_idle(page)
        expect(page.get_by_role("heading", name="Soon deleted")).to_be_visible()
        with eng.begin() as conn:
            conn.execute(sa.delete(ocs).where(ocs.c.id == old))
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("Why did the last post fail?")
        box.press("Enter")
        wait_idle(page)
        warning = page.get_by_test_id("stAlert").filter(has_text="no longer exists")
        expect(warning).to_contain_text("asked in a new session")
        expect(page.get_by_test_id("stChatMessage")).to_have_count(2)  # the question and its answer
        expect(page.get_by_test_id("stChatMessage").nth(0)).to_contain_text("Why did the last post fail?")
        expect(page.locator(".st-key-oversight_draft")).to_have_count(0)  # no kept draft to send again
        assert [r["body"]["question"] for r in fake.requests] == ["Why did the last post fail?"]
    with eng.connect() as conn:
        [s] = list_sessions(conn, user="local", business_account_id=ACC)
        messages = get_session(conn, s.id, user="local").messages
    assert s.id != old
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "Why did the last post fail?"
    assert page.locator("[data-testid='stException']").count() == 0
