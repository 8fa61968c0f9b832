"""Fault injection: the oversight SSE backend answers garbage, closes early or never answers.

A real browser asks on the Oversight Chat page against a scripted local HTTP server
(OVERSIGHT_API_URL). With small limits (connect 1 s, read 2 s, whole stream 4 s) every case
must end with a clear message (an alert, no traceback) and the page must be idle again
within those limits plus a margin; the questions stay in the session.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from playwright.sync_api import expect

from lib.activity.oversight import get_session, list_sessions
from sandbox.sse_server import BackgroundServer
from tests.e2e.conftest import wait_idle
from tests.support.oversight_fake import _Handler as ScriptedHandler
from tests.support.oversight_fake import chat_database

pytestmark = pytest.mark.e2e
ACC = uuid.UUID("0c0c0c0c-1111-4222-8333-555555555555")
LIMITS = {"OVERSIGHT_CONNECT_TIMEOUT_S": "1", "OVERSIGHT_READ_TIMEOUT_S": "2", "MAX_STREAM_DURATION_S": "4"}
# the longest case ends after MAX_STREAM_DURATION_S (4 s); allow for a slow, shared 2-core machine
WITHIN_MS = 20_000


class _Faulty(ScriptedHandler):
    def _wait(self, seconds: float) -> None:
        self.server.stopping.wait(seconds)

    def b_not_http(self) -> None:  # something that is not HTTP at all
        self.wfile.write(b"\x00\xffSSH-2.0-OpenSSH_9.2 garbage\r\n\r\n\x1b[31m")
        self.wfile.flush()
        self.close_connection = True

    def b_close_at_once(self) -> None:  # reads the request, closes without a status line
        self.close_connection = True
        self.connection.shutdown(2)

    def b_garbage_stream(self) -> None:  # an event stream of junk, then a clean end without `done`
        self.start_stream()
        self.write_chunk(b"data: \xff\xfe\xfd not utf-8\n\n")
        self.write_chunk(b"data: {\"token\": \n\n")
        self.write_chunk(b"event: \x00\x01\x02\ndata: [1, 2, 3]\n\n")
        self.write_chunk(b"data: {\"token\": 42}\n\n")
        self.write_chunk(b"retry: banana\nid: \n: ping\n\n")
        self.end_stream()

    def b_headers_then_silence(self) -> None:  # a stream that never sends a byte
        self.start_stream()
        self._wait(30)

    def b_no_answer(self) -> None:  # the request is read; no status line ever comes
        self._wait(30)

    def b_trickle(self) -> None:  # bytes keep coming, but never a whole event: only the duration limit ends it
        self.start_stream()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            self.write_chunk(b"data: x")
            self._wait(0.1)


class FaultyOversight(BackgroundServer):
    def __init__(self) -> None:
        super().__init__(_Faulty, requests=[], behaviour="normal", tokens=0, delay_s=0, sent=0,
                         finished=threading.Event(), stopping=threading.Event())

    def set(self, behaviour: str) -> None:
        self.httpd.behaviour = behaviour

    def stop(self) -> None:
        self.httpd.stopping.set()
        super().stop()


@pytest.fixture
def chat_db(sqlite_url):
    url, eng = chat_database(sqlite_url, ACC, "faulty.shop")
    yield url, eng
    eng.dispose()


CASES = [
    # behaviour, what the operator must read
    ("not_http", "Cannot reach the oversight backend"),
    ("close_at_once", "Cannot reach the oversight backend"),
    ("garbage_stream", "connection to the oversight backend was lost"),
    ("drop", "connection to the oversight backend was lost"),
    ("headers_then_silence", "connection to the oversight backend was lost"),
    ("no_answer", "did not answer within the timeout"),
    ("pings_only", "exceeded the maximum stream duration"),
    ("trickle", "exceeded the maximum stream duration"),
    ("html_500", "answered HTTP 500"),
    ("json_200", "did not answer with an event stream"),
]


def test_every_backend_fault_ends_with_a_clear_message_and_keeps_the_question(start_app, chat_db, page):
    url, eng = chat_db
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with FaultyOversight() as fake:
        server = start_app({"DATABASE_URL": url, "OVERSIGHT_API_URL": fake.url, **LIMITS})
        page.goto(f"{server.url}/oversight_chat?account=faulty.shop")
        wait_idle(page)
        asked = []
        for behaviour, message in CASES:
            fake.set(behaviour)
            question = f"Case {behaviour}: what is stuck in the queue?"
            box = page.get_by_test_id("stChatInputTextArea")
            box.fill(question)
            box.press("Enter")
            asked.append(question)
            alert = page.get_by_test_id("stAlert").filter(has_text=message)
            expect(alert, behaviour).to_be_visible(timeout=WITHIN_MS)
            wait_idle(page, timeout=WITHIN_MS)
            assert page.get_by_test_id("stException").count() == 0, behaviour
            expect(page.get_by_test_id("stChatMessage").filter(has_text=question)).to_have_count(1)
        assert len(fake.httpd.requests) == len(CASES)  # each question reached the backend once

        page.reload()  # a new browser session: the questions come back from the database
        wait_idle(page)
        for question in asked:
            expect(page.get_by_test_id("stChatMessage").filter(has_text=question)).to_have_count(1)
        assert page.get_by_test_id("stException").count() == 0
    assert dialogs == []

    with eng.connect() as conn:
        [s] = list_sessions(conn, business_account_id=ACC, user="local")
        messages = get_session(conn, s.id, user="local").messages
    assert [m["content"] for m in messages if m["role"] == "user"] == asked
    # partial answers are marked incomplete; nothing claims to be a complete answer
    assert all(m.get("incomplete") for m in messages if m["role"] == "assistant")
