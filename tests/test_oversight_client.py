"""The SSE client against real local servers (HTTP/1.1, chunked) with scripted behaviours."""
import threading
import time

import pytest

from lib.activity.sse import (
    AgentDown,
    BackendHttpError,
    BackendUnreachable,
    ChatStream,
    NotEventStream,
    build_chat_request,
    open_chat,
)
from tests.support.oversight_fake import CHAT_PATH, FakeOversight
from tests.support.pg import free_port

ACCOUNT = "6f1c2f6e-8a44-4c36-9d0c-3f0c1f7d2a11"


def _request(url, question="How many items are in the DLQ?", history=None):
    return build_chat_request(url, CHAT_PATH, user_id="ops@example.com", business_account_id=ACCOUNT,
                              question=question, chat_history=history or [])


def _ask(fake, max_duration_s=10.0, read_timeout_s=5.0, **kw):
    started = time.monotonic()
    resp = open_chat(_request(fake.url, **kw), connect_timeout_s=2, read_timeout_s=read_timeout_s)
    stream = ChatStream.from_response(resp, max_duration_s=max_duration_s, started=started)
    stream.drain()
    return stream


def test_normal_answer_and_exact_request():
    history = [{"role": "user", "content": "hi", "timestamp": "2026-01-01T00:00:00Z"}]
    with FakeOversight("normal") as fake:
        s = _ask(fake, history=history)
    assert (s.text, s.outcome, s.latency_ms, s.tools_used) == ("There are 3 items in the DLQ.", "done", 1234, ["get_dlq_summary"])
    [req] = fake.requests
    assert req["path"] == CHAT_PATH
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["X-User-ID"] == "ops@example.com"
    assert req["headers"]["Accept"] == "text/event-stream"
    assert req["body"] == {
        "business_account_id": ACCOUNT, "user_id": "ops@example.com", "question": "How many items are in the DLQ?",
        "chat_history": history, "stream": True,
    }


def test_multiline_data_junk_and_unknown_fields():
    with FakeOversight("multiline_and_junk") as fake:
        s = _ask(fake)
    assert (s.text, s.outcome, s.latency_ms, s.ignored) == ("Hello world", "done", 5, 2)


def test_error_event_keeps_partial_text():
    with FakeOversight("error_event") as fake:
        s = _ask(fake)
    assert (s.text, s.outcome, s.error, s.incomplete) == ("Partial ", "error", "LLM quota exceeded", True)


def test_connection_dropped_mid_answer():
    with FakeOversight("drop") as fake:
        s = _ask(fake)
    assert (s.text, s.outcome, s.incomplete) == ("Half an answer", "dropped", True)
    assert "connection" in s.message


def test_pings_only_until_the_maximum_duration():
    with FakeOversight("pings_only") as fake:
        s = _ask(fake, max_duration_s=0.6)
    assert (s.text, s.outcome, s.incomplete) == ("", "timeout", True)
    assert "maximum stream duration" in s.message


def test_agent_down_503():
    with FakeOversight("agent_down") as fake, pytest.raises(AgentDown) as info:
        _ask(fake)
    assert "not responding" in str(info.value)


def test_500_with_html_body():
    with FakeOversight("html_500") as fake, pytest.raises(BackendHttpError) as info:
        _ask(fake)
    assert info.value.status == 500
    assert str(info.value) == ("The oversight backend answered HTTP 500 Internal Server Error: "
                               "the server answered with an HTML error page")


def test_200_that_is_not_an_event_stream():
    with FakeOversight("json_200") as fake, pytest.raises(NotEventStream) as info:
        _ask(fake)
    assert "application/json" in str(info.value)


def test_nobody_listening():
    req = _request(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnreachable) as info:
        open_chat(req, connect_timeout_s=1, read_timeout_s=1)
    assert "Cannot reach the oversight backend" in str(info.value)


def test_tokens_arrive_one_by_one_not_in_a_burst():
    """Chunked HTTP/1.1: the first token reaches the caller while the server still holds the rest.

    The server sends token 0, then waits at a gate that only this test opens: a client that
    buffered the body (or a server that sent it in one burst) could hand out token 0 only after the
    gate's 10 s fallback, when all 6 are sent -- an order of events, not a wall-clock assertion."""
    gate = threading.Event()
    with FakeOversight("slow", tokens=6, delay_s=0.01, gate=gate) as fake:
        resp = open_chat(_request(fake.url), connect_timeout_s=2, read_timeout_s=15)
        stream = ChatStream.from_response(resp, max_duration_s=30, render_interval_s=0)
        chunks = stream.chunks()
        first = next(chunks)
        sent_when_first_arrived = fake.httpd.sent
        gate.set()
        rest = list(chunks)
    assert first == "word0 "
    assert sent_when_first_arrived == 1  # the other five were not sent yet
    assert rest == [f"word{i} " for i in range(1, 6)]
    assert stream.outcome == "done" and stream.first_token_s is not None


def test_stop_closes_the_connection():
    with FakeOversight("slow", tokens=100, delay_s=0.05) as fake:
        resp = open_chat(_request(fake.url), connect_timeout_s=2, read_timeout_s=5)
        stream = ChatStream.from_response(resp, max_duration_s=10, render_interval_s=0)
        gen = stream.chunks()
        received = [next(gen), next(gen)]
        gen.close()
        assert fake.httpd.finished.wait(10)
        assert fake.httpd.sent < 100  # the server noticed the client went away and stopped sending
    assert stream.outcome == "stopped" and stream.text == "".join(received)
