"""Benchmark of the oversight chat client: first-token delay added by the page, cost per token.

    .venv/bin/python -m bench.sse_client [--tokens 5000] [--runs 5]

A local chunked HTTP/1.1 SSE server streams N tokens as fast as it can. Measured, median of runs:
  raw      requests(stream=True) + sseclient-py + json.loads: the floor any client pays
  client   lib.activity.sse (open_chat + ChatStream.chunks with token coalescing + Markdown escaping)
  page     what the page does before the request goes out (create session + save the question,
           SQLite file) and the Streamlit side of st.write_stream over the same stream (AppTest,
           script side only: no browser paint)
Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import requests
import sseclient

from lib.activity.oversight import create_session, record_question
from lib.activity.sse import ChatStream, build_chat_request, open_chat
from lib.core.db import init_db, make_engine
from lib.core.identity import OPERATOR, Actor
from lib.core.text import escape_markdown
from lib.core.timeutil import utcnow
from sandbox.sse_server import BackgroundServer, SSEHandler

PATH = "/api/instagram/oversight/chat"


class _Burst(SSEHandler):
    def do_POST(self):  # noqa: N802
        self.read_json()
        self.start_stream()
        self.send_ping()
        try:
            for i in range(self.server.tokens):
                self.send_event({"token": f"tok{i % 100} "})
            self.send_event({"done": True, "latency_ms": 1})
            self.end_stream()
        except (BrokenPipeError, ConnectionResetError):
            pass


def _request(url):
    return build_chat_request(url, PATH, user_id="bench", business_account_id=str(uuid.uuid4()),
                              question="How many items are in the DLQ?", chat_history=[])


def run_raw(url):
    req = _request(url)
    t0 = time.perf_counter()
    resp = requests.post(req.url, json=req.body, headers=req.headers, stream=True, timeout=(5, 60))
    first = None
    n = 0
    for ev in sseclient.SSEClient(resp.iter_content(chunk_size=None)).events():
        obj = json.loads(ev.data)
        if "token" in obj:
            n += 1
            if first is None:
                first = time.perf_counter() - t0
        if obj.get("done"):
            break
    resp.close()
    return first, time.perf_counter() - t0, n


def run_client(url, render_interval_s=0.05):
    req = _request(url)
    t0 = time.perf_counter()
    resp = open_chat(req, connect_timeout_s=5, read_timeout_s=60)
    stream = ChatStream.from_response(resp, max_duration_s=300, render_interval_s=render_interval_s)
    first = None
    renders = 0
    at_line_start = True
    for chunk in stream.chunks():
        _, at_line_start = escape_markdown(chunk, at_line_start)
        renders += 1
        if first is None:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0, stream.tokens, renders


def run_page_prelude(db_url):
    eng = make_engine(db_url)
    t0 = time.perf_counter()
    with eng.begin() as conn:
        sid = create_session(conn, business_account_id=uuid.uuid4(), actor=Actor("bench", OPERATOR), now=utcnow())
        record_question(conn, sid, actor=Actor("bench", OPERATOR), question="How many items are in the DLQ?", now=utcnow())
    elapsed = time.perf_counter() - t0
    eng.dispose()
    return elapsed


_SCRIPT = textwrap.dedent('''
    import streamlit as st
    from lib.core.text import escape_markdown
    from lib.activity.sse import ChatStream, build_chat_request, open_chat
    import time, uuid
    url, interval = "{url}", {interval}
    req = build_chat_request(url, "{path}", user_id="b", business_account_id=str(uuid.uuid4()), question="q", chat_history=[])
    t0 = time.perf_counter()
    s = ChatStream.from_response(open_chat(req, connect_timeout_s=5, read_timeout_s=60), max_duration_s=300,
                                 render_interval_s=interval)
    def gen():
        st_ = True
        for c in s.chunks():
            out, st_ = escape_markdown(c, st_)
            yield out
    st.write_stream(gen())
    st.session_state["elapsed"] = time.perf_counter() - t0
''')


def run_write_stream(url, interval):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(_SCRIPT.format(url=url, interval=interval, path=PATH), default_timeout=120)
    at.run()
    return at.session_state["elapsed"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.tokens
    with BackgroundServer(_Burst, tokens=n) as server:
        url = server.url
        run_raw(url)  # warm up
        raw = [run_raw(url) for _ in range(args.runs)]
        cli = [run_client(url) for _ in range(args.runs)]
        cli0 = [run_client(url, 0.0) for _ in range(args.runs)]
        with tempfile.TemporaryDirectory() as tmp:
            db_url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
            init_db(make_engine(db_url))
            prelude = [run_page_prelude(db_url) for _ in range(args.runs)]
        ws = [run_write_stream(url, 0.05) for _ in range(max(2, args.runs // 2))]
        ws0 = [run_write_stream(url, 0.0) for _ in range(max(2, args.runs // 2))]

    med = statistics.median
    ms = lambda s: f"{s * 1000:8.2f} ms"  # noqa: E731
    us = lambda s: f"{s / n * 1e6:8.1f} µs"  # noqa: E731
    print(f"{n} tokens, median of {args.runs} runs (local chunked SSE server, no token delay)\n")
    print(f"{'':44}{'first token':>14}{'total':>14}{'per token':>14}")

    def row(name, runs):
        return f"{name:44}{ms(med(x[0] for x in runs)):>14}{ms(med(x[1] for x in runs)):>14}{us(med(x[1] for x in runs)):>14}"

    print(row("raw requests + sseclient-py", raw))
    print(row("lib.activity.sse ChatStream (coalesced 50 ms) + escape", cli) +
          f"   renders: {med(c[3] for c in cli):.0f}")
    print(row("lib.activity.sse ChatStream (no coalescing) + escape", cli0) +
          f"   renders: {med(c[3] for c in cli0):.0f}")
    print(f"{'page: create session + save question (SQLite)':44}{ms(med(prelude)):>14}")
    print(f"{'st.write_stream, coalesced 50 ms (AppTest)':44}{'':>14}{ms(med(ws)):>14}{us(med(ws)):>14}")
    print(f"{'st.write_stream, every token (AppTest)':44}{'':>14}{ms(med(ws0)):>14}{us(med(ws0)):>14}")
    added = med(c[0] for c in cli) - med(r[0] for r in raw) + med(prelude)
    print(f"\nfirst-token delay added by the page (client overhead + saving the question): {added * 1000:.1f} ms")


if __name__ == "__main__":
    main()
