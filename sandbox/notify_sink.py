"""A local receiver for Apprise's `json://` notifications: shows what arrived (demo and tests).

    python -m sandbox.notify_sink --port 8767      # then ALERT_NOTIFY_URLS=json://127.0.0.1:8767/notify

What it models is Apprise's documented "Custom JSON" service (apprise-docs,
locales/en/services/json/index.md, published at https://appriseit.com/services/json/): Apprise
sends an HTTP POST (the default `method`) with `Content-Type: application/json` and a body of the form

    {"version": "1.0", "title": "...", "message": "...", "type": "info"}

where `type` is one of info, success, failure, warning; `json://user:password@host` adds HTTP basic
authentication, `?+Header=value` adds request headers, and a `jsons://` URL uses HTTPS. A receiver
answers with a status code; Apprise counts anything but 2xx as a failed delivery (its log names the
code, e.g. "error=500"). The sink stores the last 500 messages and serves them at `GET /messages`
(JSON) and `GET /` (a page that refreshes every 5 s, every value escaped).

Tests script failures: `sink.fail_next(n, status=500)` answers the next n POSTs with that status;
`sink.delay_s` holds each answer (a slow receiver).
"""
from __future__ import annotations

import argparse
import html
import json
import threading
import time
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEEP = 500


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *_args) -> None:  # quiet
        return

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        sink = self.server.sink
        if sink.delay_s:
            time.sleep(sink.delay_s)
        with sink.lock:
            sink.requests += 1
            if sink.failures_left > 0:
                sink.failures_left -= 1
                code = sink.failure_status
            else:
                code = 200
        if code >= 300:
            self._send(code, b'{"error": "scripted failure"}', "application/json")
            return
        try:
            payload = json.loads(raw.decode("utf-8") or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._send(400, b'{"error": "not JSON"}', "application/json")
            return
        entry = {"received_at": datetime.now(UTC).isoformat(), "path": self.path,
                 "title": payload.get("title"), "message": payload.get("message"), "type": payload.get("type"),
                 "version": payload.get("version"), "received_monotonic": time.monotonic()}
        with sink.lock:
            sink.messages.append(entry)
        sink.arrived.set()
        self._send(200, b'{"ok": true}', "application/json")

    def do_GET(self) -> None:  # noqa: N802
        with self.server.sink.lock:
            items = list(self.server.sink.messages)
        if self.path.startswith("/messages"):
            self._send(200, json.dumps(items).encode(), "application/json")
            return
        rows = "".join(
            f"<tr><td>{html.escape(str(m['received_at']))}</td><td>{html.escape(str(m['type']))}</td>"
            f"<td>{html.escape(str(m['title']))}</td><td><pre>{html.escape(str(m['message']))}</pre></td></tr>"
            for m in reversed(items))
        page = ("<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5>"
                "<title>Notification sink</title><h1>Notifications received</h1>"
                f"<p>{len(items)} message(s); newest first. Apprise json:// posts to this server.</p>"
                "<table border=1 cellpadding=4><tr><th>received</th><th>type</th><th>title</th><th>message</th></tr>"
                f"{rows}</table>")
        self._send(200, page.encode(), "text/html; charset=utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: NotifySink


class NotifySink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.lock = threading.Lock()
        self.messages: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.requests = 0
        self.failures_left = 0
        self.failure_status = 500
        self.delay_s = 0.0
        self.arrived = threading.Event()
        self.httpd = _Server((host, port), _Handler)
        self.httpd.sink = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def apprise_url(self, path: str = "/notify") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self.lock:
            self.failures_left, self.failure_status = n, status

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def start(self) -> NotifySink:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="notify-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> NotifySink:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sandbox.notify_sink", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8767)
    args = ap.parse_args(argv)
    sink = NotifySink(port=args.port)
    print(f"notification sink on {sink.url} (Apprise URL {sink.apprise_url()})", flush=True)
    try:
        sink.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
