"""SSE event parsing (pure) and the chat stream's bookkeeping, without a network."""
import pytest

from lib.activity.oversight import chat_history, title_from_question, unanswered
from lib.activity.sse import ChatStream, Done, ErrorEvent, Ignored, Token, iter_chat_events, parse_event_data
from lib.core.text import escape_markdown
from sandbox.oversight_backend import tokens_of


@pytest.mark.parametrize(
    "data, expected",
    [
        ('{"token": "Hi"}', [Token("Hi")]),
        ('{"token": "x", "unknown": {"a": 1}}', [Token("x")]),
        ('{"done": true, "latency_ms": 1234}', [Done(1234, None)]),
        ('{"done": true, "latency_ms": "87.6", "tools_used": ["a", "b"]}', [Done(87, ["a", "b"])]),
        ('{"done": true, "tools_used": "get_queue_status"}', [Done(None, ["get_queue_status"])]),
        ('{"token": "end", "done": true}', [Token("end"), Done(None, None)]),
        ('{"done": false}', [Ignored('{"done": false}', "no token, done or error field")]),
        ('{"type": "error", "content": "quota exceeded"}', [ErrorEvent("quota exceeded")]),
        ('{"type": "error"}', [ErrorEvent("The oversight backend reported an error.")]),
        ("{not json", [Ignored("{not json", "malformed JSON")]),
        ("[1, 2]", [Ignored("[1, 2]", "not a JSON object")]),
        ('{"token": 42}', [Token("42")]),
    ],
)
def test_parse_event_data(data, expected):
    assert parse_event_data(data) == expected


def test_sse_event_named_error_is_an_error_even_without_json():
    assert parse_event_data("backend exploded", "error") == [ErrorEvent("backend exploded")]
    assert parse_event_data('{"content": "x"}', "error") == [ErrorEvent("x")]


def test_iter_chat_events_framing():
    raw = [
        b": ping\n\n",
        b'data: {"tok',  # one event split across two network chunks
        b'en": "A"}\n\n',
        b'data: {"token":\ndata: " B"}\n\n',  # JSON spread over two data lines
        b"event: message\nid: 7\ndata: {oops}\n\n",
        b': ping\r\n\r\ndata: {"token": "C"}\r\n\r\n',
        b'data: {"done": true, "latency_ms": 10}\n\n',
    ]
    assert list(iter_chat_events(raw)) == [
        Token("A"), Token(" B"), Ignored("{oops}", "malformed JSON"), Token("C"), Done(10, None)
    ]


def test_pings_alone_yield_nothing():
    assert list(iter_chat_events([b": ping\n\n"] * 5)) == []


def _sse(*objs: str) -> list[bytes]:
    return [f"data: {o}\n\n".encode() for o in objs]


def _stream(chunks, **kw):
    return ChatStream(iter(chunks), max_duration_s=kw.pop("max_duration_s", 60), started=0.0,
                      clock=kw.pop("clock", lambda: 1.0), **kw)


def test_stream_done_sets_result_and_coalesces():
    s = _stream(_sse('{"token": "a"}', '{"token": "b"}', '{"token": "c"}',
                     '{"done": true, "latency_ms": 5, "tools_used": ["t"]}'))
    # the clock never moves: the first token renders at once, the rest is coalesced into one chunk
    assert list(s.chunks()) == ["a", "bc"]
    assert (s.text, s.outcome, s.incomplete, s.latency_ms, s.tools_used, s.tokens) == ("abc", "done", False, 5, ["t"], 3)


def test_stream_without_done_is_dropped_and_keeps_text():
    s = _stream(_sse('{"token": "half"}'))
    s.drain()
    assert (s.text, s.outcome, s.incomplete) == ("half", "dropped", True)


def test_error_event_ends_stream_with_partial_text():
    s = _stream(_sse('{"token": "part"}', '{"type": "error", "content": "boom"}', '{"token": "never"}'))
    s.drain()
    assert (s.text, s.outcome, s.error) == ("part", "error", "boom")
    assert s.message == "The oversight backend reported an error: boom"


def test_max_duration_cuts_off():
    times = iter([0.1, 0.2, 0.5, 0.6, 2.0, 2.1, 2.2])  # chunk check, token, chunk check, ...
    s = _stream(_sse('{"token": "a"}', '{"token": "b"}', '{"token": "c"}'), max_duration_s=1.0, clock=lambda: next(times))
    s.drain()
    assert s.outcome == "timeout" and s.text == "ab" and s.incomplete


def test_closing_the_generator_marks_stopped_and_keeps_everything_received():
    closed = []
    s = ChatStream(iter(_sse('{"token": "one "}', '{"token": "two"}', '{"done": true}')), max_duration_s=60,
                   started=0.0, clock=lambda: 1.0, render_interval_s=0.0, on_close=lambda: closed.append(1))
    gen = s.chunks()
    assert next(gen) == "one "
    gen.close()  # what Stop does to the generator inside st.write_stream
    assert (s.outcome, s.text, closed) == ("stopped", "one ", [1])


def test_title_from_question():
    assert title_from_question("  How many\nitems are in the DLQ?  ") == "How many items are in the DLQ?"
    long = "Why did the publishing agent dead-letter so many posts for the spring campaign yesterday evening?"
    title = title_from_question(long)
    assert len(title) <= 60 and title.endswith("…") and long.startswith(title[:-1])
    assert title_from_question("x" * 100) == "x" * 59 + "…"
    assert title_from_question("   ") == "New session"


def test_unanswered_and_history():
    msgs = [
        {"role": "user", "content": "q1", "timestamp": "t1"},
        {"role": "assistant", "content": "a1", "timestamp": "t2", "latency_ms": 5},
        {"role": "user", "content": "q2", "timestamp": "t3"},
        {"role": "user", "content": "q3", "timestamp": "t4"},
    ]
    assert unanswered(msgs) == {2, 3}
    assert chat_history(msgs, limit=2) == [
        {"role": "user", "content": "q2", "timestamp": "t3"}, {"role": "user", "content": "q3", "timestamp": "t4"}
    ]


def test_escape_markdown_shows_text_literally():
    text, at_start = escape_markdown("# Title\n**bold** <b>x</b> $1 [l](http://e) :red[x]\n    code")
    assert "\\#" in text and "\\*\\*bold\\*\\*" in text and "\\<b\\>" in text and "\\$1" in text
    assert "\\[l\\]\\(http\\:\u200b" in text and "\\:\u200bred\\[x\\]" in text
    assert "  \n\u00a0\u00a0\u00a0\u00a0code" in text and at_start is False
    # chunk by chunk gives the same as all at once
    a, s = escape_markdown("line one\n")
    b, _ = escape_markdown("  indented", s)
    assert a + b == escape_markdown("line one\n  indented")[0]


def test_tokens_of_roundtrip():
    text = "There are 3 items.\n\n- a: 1\n  - b"
    assert "".join(tokens_of(text)) == text and len(tokens_of(text)) > 5


def test_answers_are_capped_kept_and_marked_incomplete():
    """A backend that never stops cannot fill memory or the database."""
    from lib.activity.sse import ChatStream

    frames = [b'data: {"token": "' + b"x" * 1000 + b'"}\n\n'] * 50 + [b'data: {"done": true}\n\n']
    stream = ChatStream(iter(frames), max_duration_s=60, max_chars=10_500)
    stream.drain()
    assert len(stream.text) == 10_500
    assert stream.outcome == "too_long" and stream.incomplete
    assert "maximum length" in stream.message


def test_default_answer_cap_is_200k_characters():
    from lib.activity.sse import MAX_ANSWER_CHARS, ChatStream

    assert MAX_ANSWER_CHARS == 200_000
    frames = [b'data: {"token": "' + b"y" * 50_000 + b'"}\n\n'] * 5
    stream = ChatStream(iter(frames), max_duration_s=60)
    stream.drain()
    assert len(stream.text) == 200_000 and stream.incomplete


def test_history_sent_to_the_backend_is_capped_in_characters():
    from lib.activity.oversight import HISTORY_MAX_CHARS

    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i) * 30_000, "timestamp": "t"}
            for i in range(6)]
    history = chat_history(msgs)
    assert sum(len(m["content"]) for m in history) <= HISTORY_MAX_CHARS
    assert history[-1]["content"] == "5" * 30_000  # the newest message is kept whole
    assert history[0]["content"].startswith("…")
