"""Stdlib HTTP/1.1 server pieces for event streams (sandbox backend and test fakes).

Python's http.server speaks HTTP/1.0 without chunking by default, and a client then sees
events in bursts. Here every event is one chunk of a chunked HTTP/1.1 response, flushed at once.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SSEHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OversightSandbox/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    # -- request -------------------------------------------------------------------------------
    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw.decode("utf-8")) if raw else None

    # -- plain answers -----------------------------------------------------------------------
    def send_json(self, status: int, obj: Any) -> None:
        self.send_body(status, json.dumps(obj).encode("utf-8"), "application/json")

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    # -- event stream --------------------------------------------------------------------------
    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def send_event(self, obj: Any) -> None:
        self.write_chunk(b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n")

    def send_ping(self) -> None:
        self.write_chunk(b": ping\n\n")

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class BackgroundServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread (tests, benchmarks)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0, **attrs: Any):
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        for key, value in attrs.items():
            setattr(self.httpd, key, value)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> BackgroundServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
