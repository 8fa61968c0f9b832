"""Sandbox oversight backend: `POST {path}` with the chat endpoint's request and events, answering from the database.

    python -m sandbox.oversight_backend [--host 127.0.0.1] [--port 8765] [--token-delay 0.02]

Reads DATABASE_URL and OVERSIGHT_CHAT_PATH from the settings. Before streaming it checks the
newest heartbeat: older than 60 s, or none, answers 503 `AGENT_DOWN` (the body also
carries `last_beat_at`). Otherwise it sends `: ping`, then `data: {"token": ...}` events and a
final `data: {"done": true, "latency_ms": ..., "tools_used": [...]}`, as a chunked HTTP/1.1
response flushed per event. Run the demo agent (`python -m sandbox.demo_agent`) to keep the
agent "alive".
"""
from __future__ import annotations

import argparse
import logging
import re
import signal
import time
import uuid

from lib.activity.heartbeats import LIVENESS_THRESHOLD, is_alive, newest_beat
from lib.core.db import UNAVAILABLE_ERRORS, init_db, make_engine
from lib.core.settings import load_settings
from lib.core.timeutil import iso, utcnow
from sandbox.oversight_tools import answer
from sandbox.sse_server import BackgroundServer, SSEHandler

log = logging.getLogger("oversight_backend")
MAX_QUESTION_CHARS = 2000


def tokens_of(text: str) -> list[str]:
    """Word-sized tokens, whitespace kept, so that ''.join(tokens) == text."""
    return re.findall(r"\S+\s*|\s+", text)


class OversightHandler(SSEHandler):
    # server attributes: engine, chat_path, token_delay_s, ping_interval_s

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/health":
            self.send_json(200, {"ok": True})
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        started = time.monotonic()
        if self.path.split("?")[0] != self.server.chat_path:
            self.send_json(404, {"error": f"no endpoint {self.path}"})
            return
        try:
            body = self.read_json() or {}
        except ValueError:
            self.send_json(400, {"error": "the body is not JSON"})
            return
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            self.send_json(400, {"error": "question is required"})
            return
        if len(question) > MAX_QUESTION_CHARS:
            self.send_json(400, {"error": f"question is longer than {MAX_QUESTION_CHARS} characters"})
            return
        try:
            account_id = uuid.UUID(str(body.get("business_account_id")))
        except ValueError:
            self.send_json(400, {"error": "business_account_id must be a uuid"})
            return
        engine = self.server.engine
        now = utcnow()
        try:
            with engine.connect() as conn:
                last = newest_beat(conn)
        except UNAVAILABLE_ERRORS as exc:
            self.send_json(500, {"error": f"database unavailable: {str(exc).splitlines()[0][:200]}"})
            return
        if not is_alive(last, now, LIVENESS_THRESHOLD):
            self.send_json(503, {
                "error": "Agent is not responding - cannot start oversight chat",
                "code": "AGENT_DOWN",
                "last_beat_at": iso(last) if last else None,
            })
            return
        self.start_stream()
        try:
            self.send_ping()
            try:
                with engine.connect() as conn:
                    text, tools = answer(conn, account_id=account_id, question=question, now=now)
            except Exception as exc:  # noqa: BLE001 - the client gets an error event, the log the rest
                log.exception("tool failure")
                self.send_event({"type": "error", "content": f"The oversight tools failed: {type(exc).__name__}"})
                self.end_stream()
                return
            last_ping = time.monotonic()
            for token in tokens_of(text):
                if self.server.token_delay_s:
                    time.sleep(self.server.token_delay_s)
                if time.monotonic() - last_ping >= self.server.ping_interval_s:
                    self.send_ping()
                    last_ping = time.monotonic()
                self.send_event({"token": token})
            self.send_event({"done": True, "latency_ms": int((time.monotonic() - started) * 1000), "tools_used": tools})
            self.end_stream()
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away mid-answer")
            self.close_connection = True


def make_server(database_url: str, *, host: str = "127.0.0.1", port: int = 8765, chat_path: str | None = None,
                token_delay_s: float = 0.02, ping_interval_s: float = 15.0, verbose: bool = False) -> BackgroundServer:
    engine = make_engine(database_url)
    init_db(engine)
    return BackgroundServer(
        OversightHandler, host, port,
        engine=engine,
        chat_path=chat_path or load_settings().oversight_chat_path,
        token_delay_s=token_delay_s,
        ping_interval_s=ping_interval_s,
        verbose=verbose,
    )


def _terminate(*_: object) -> None:
    raise KeyboardInterrupt  # leaves serve_forever in the main thread; SIGTERM stops like Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between tokens (default 0.02)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s oversight_backend %(message)s")
    settings = load_settings()
    server = make_server(settings.database_url, host=args.host, port=args.port, chat_path=settings.oversight_chat_path,
                         token_delay_s=args.token_delay, verbose=args.verbose)
    log.info("serving POST %s%s on database %s", server.url, settings.oversight_chat_path, settings.masked_database_url)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        server.httpd.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
