"""A scripted oversight backend: a real HTTP/1.1 server on 127.0.0.1 that streams chunked SSE.

    with FakeOversight("normal") as fake:  # fake.url, fake.requests (headers + body received)
        ...

Behaviours: normal, slow (many tokens with a delay: watch it grow, press Stop), error_event,
drop (tokens, then the connection dies), pings_only (pings until the client gives up),
agent_down (503 AGENT_DOWN), html_500, json_200 (not an event stream), multiline_and_junk.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from sandbox.sse_server import BackgroundServer, SSEHandler

CHAT_PATH = "/api/instagram/oversight/chat"
NORMAL_TOKENS = ["There ", "are ", "3 ", "items ", "in ", "the ", "DLQ."]


class _Handler(SSEHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.read_json()
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        behaviour = self.server.behaviour
        try:
            getattr(self, "b_" + behaviour)()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.server.finished.set()

    def b_normal(self) -> None:
        self.start_stream()
        self.send_ping()
        for t in NORMAL_TOKENS:
            self.send_event({"token": t})
        self.send_event({"done": True, "latency_ms": 1234, "tools_used": ["get_dlq_summary"]})
        self.end_stream()

    def b_slow(self) -> None:
        self.start_stream()
        for i in range(self.server.tokens):
            self.server.sent = i + 1  # counted before the write: the client may read it before this thread runs on
            self.send_event({"token": f"word{i} "})
            if i == 0 and self.server.gate is not None:
                self.server.gate.wait(10)  # hold the rest back until the test has seen token 0
            time.sleep(self.server.delay_s)
        self.send_event({"done": True, "latency_ms": 999})
        self.end_stream()

    def b_error_event(self) -> None:
        self.start_stream()
        self.send_event({"token": "Partial "})
        self.send_event({"type": "error", "content": "LLM quota exceeded"})
        self.end_stream()

    def b_drop(self) -> None:
        self.start_stream()
        self.send_event({"token": "Half "})
        self.send_event({"token": "an answer"})
        time.sleep(0.05)
        # die without the terminating chunk: the client sees a broken chunked body
        self.close_connection = True
        self.connection.shutdown(2)

    def b_pings_only(self) -> None:
        self.start_stream()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.send_ping()
            time.sleep(0.1)

    def b_agent_down(self) -> None:
        self.send_json(503, {"error": "Agent is not responding - cannot start oversight chat", "code": "AGENT_DOWN"})

    def b_html_500(self) -> None:
        self.send_body(500, b"<html><body><h1>Internal Server Error</h1><p>nginx</p></body></html>", "text/html")

    def b_json_200(self) -> None:
        self.send_json(200, {"answer": "not a stream"})

    def b_multiline_and_junk(self) -> None:
        self.start_stream()
        self.write_chunk(b": ping\n\n")
        self.write_chunk(b'data: {"token":\ndata: "Hello "}\n\n')  # one JSON over two data lines
        self.write_chunk(b"data: {not json}\n\n")
        self.write_chunk(b'data: {"token": "world", "extra": 1}\n\n')
        self.write_chunk(b'data: {"heartbeat": true}\n\n')
        self.write_chunk(b'data: {"done": true, "latency_ms": 5}\n\n')
        self.end_stream()


class FakeOversight(BackgroundServer):
    def __init__(self, behaviour: str = "normal", *, tokens: int = 200, delay_s: float = 0.05,
                 gate: threading.Event | None = None):
        """`gate` (slow): after the first token the server sends nothing more until the gate is set
        (or 10 s passed), so a test can look at what the client has while the rest is unsent."""
        super().__init__(_Handler, requests=[], behaviour=behaviour, tokens=tokens, delay_s=delay_s, sent=0,
                         finished=threading.Event(), gate=gate)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.httpd.requests

    def set(self, behaviour: str) -> None:
        self.httpd.behaviour = behaviour

    def env(self) -> dict[str, str]:
        return {"OVERSIGHT_API_URL": self.url}


def dumps(obj: Any) -> str:
    return json.dumps(obj)


def chat_database(sqlite_url: str, account_id, username: str):
    """(url, engine): an initialised database with one account and a fresh oversight-brain beat."""
    import sqlalchemy as sa

    from lib.activity.heartbeats import record_beat
    from lib.core.db import init_db, make_engine
    from lib.core.schema import instagram_business_accounts
    from lib.core.timeutil import utcnow

    eng = make_engine(sqlite_url)
    init_db(eng)
    with eng.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts).values(id=account_id, username=username, is_connected=True))
        record_beat(conn, "oversight-brain", now=utcnow())
    return sqlite_url, eng
