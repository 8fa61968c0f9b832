"""Benchmark (not a test): approve-to-sent latency of a held row with the worker running as a service.

    .venv/bin/python -m bench.review_latency [--rows 20] [--poll-s 5] [--pg]

A fresh database (SQLite in a temporary folder, or a throwaway PostgreSQL with --pg), the sandbox Graph
API in this process, N reply_comment rows held by REVIEW_ACTIONS=reply_comment, and `python -m worker` as a
service that looks for due rows every --poll-s seconds between its cron ticks (WORKER_POLL_S). Rows are
approved one at a time through lib.queue.store.approve (what the page's Approve button calls), each after a random
pause so approvals land at every phase of the worker's cycle; the latency is from the approval's commit to
the row's status `sent` as read from the database (polled every 20 ms). Prints p50/p95/max and writes
bench/results/review_latency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from lib.core.db import init_db, make_engine  # noqa: E402
from lib.core.identity import OPERATOR, Actor  # noqa: E402
from lib.core.schema import instagram_business_accounts as accounts  # noqa: E402
from lib.core.schema import post_queue as pq  # noqa: E402
from lib.queue.review import held_count  # noqa: E402  (after sys.path.insert: runnable as a script)
from lib.queue.store import approve, enqueue  # noqa: E402  (after sys.path.insert: runnable as a script)
from sandbox.graph_api import GraphSandbox  # noqa: E402


def run(url: str, rows: int, poll_s: float, seed: int = 7) -> dict:
    rng = random.Random(seed)
    sandbox = GraphSandbox().start()
    engine = make_engine(url)
    init_db(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        acc = uuid.uuid4()
        conn.execute(sa.insert(accounts).values(id=acc, username="bench", instagram_business_id="1784000000000009",
                                                access_token="tok-bench", is_connected=True, created_at=now,
                                                updated_at=now))
        sandbox.add_account("1784000000000009", "tok-bench", username="bench")
        ids = [enqueue(conn, business_account_id=acc, action_type="reply_comment", now=now,
                       payload={"comment_id": f"c{i}", "reply_text": f"#key:r{i} thanks"}) for i in range(rows)]
    args = [sys.executable, "-m", "worker", "--no-watchdog"]
    env = {**os.environ, "DATABASE_URL": url, "INSTAGRAM_GRAPH_URL": sandbox.url, "REVIEW_ACTIONS": "reply_comment",
           "WORKER_POLL_S": str(poll_s), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latencies = []
    try:
        time.sleep(max(2.0, poll_s))  # the service is up and has ticked at least once
        with engine.connect() as conn:
            assert held_count(conn, now=datetime.now(UTC), review_actions=("reply_comment",)) == rows
        assert sandbox.stats()["requests"] == 0, "a held row was sent"
        op = Actor("bench", OPERATOR)
        for rid in ids:
            time.sleep(rng.uniform(0, poll_s))
            with engine.begin() as conn:
                approve(conn, rid, actor=op, now=datetime.now(UTC))
            began = time.monotonic()
            while True:
                with engine.connect() as conn:
                    status = conn.execute(sa.select(pq.c.status).where(pq.c.id == rid)).scalar()
                if status == "sent":
                    latencies.append(time.monotonic() - began)
                    break
                if time.monotonic() - began > 600:
                    raise RuntimeError(f"row {rid} not sent 600 s after its approval (status {status})")
                time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        engine.dispose()
        stats = sandbox.stats()
        sandbox.stop()
    assert stats["attempts"] == {f"r{i}": 1 for i in range(rows)}, "every approved row sent exactly once"
    ordered = sorted(latencies)

    def pct(p):
        return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))], 3)

    return {"rows": rows, "poll_s": poll_s, "worker": "WORKER_POLL_S",
            "p50_s": pct(0.5), "p95_s": pct(0.95), "max_s": round(ordered[-1], 3),
            "mean_s": round(sum(ordered) / len(ordered), 3)}


def run_all(kinds, *, rows: int = 20, poll_s: float = 5.0) -> dict:
    """Both databases (as python -m bench names them): {kind: result}."""
    out = {}
    for kind in kinds:
        if kind == "postgresql":
            from tests.support.pg import ThrowawayPostgres

            pg = ThrowawayPostgres()
            pg.start()
            try:
                out[kind] = run(pg.create_database("review_" + uuid.uuid4().hex[:8]), rows, poll_s)
            finally:
                pg.cleanup()
        else:
            with tempfile.TemporaryDirectory() as tmp:
                out[kind] = run(f"sqlite:///{tmp}/review.sqlite", rows, poll_s)
    return out


def markdown(results: dict) -> str:
    lines = ["| database | rows | worker poll | p50 | p95 | max |", "|---|---:|---:|---:|---:|---:|"]
    for kind, r in results.items():
        lines.append(f"| {kind} | {r['rows']} | {r['poll_s']:g} s | {r['p50_s']} s | {r['p95_s']} s | {r['max_s']} s |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--poll-s", type=float, default=5.0)
    ap.add_argument("--pg", action="store_true", help="a throwaway PostgreSQL instead of SQLite")
    args = ap.parse_args(argv)
    if args.pg:
        from tests.support.pg import ThrowawayPostgres

        pg = ThrowawayPostgres()
        pg.start()
        try:
            result = run(pg.create_database("review_" + uuid.uuid4().hex[:8]), args.rows, args.poll_s)
        finally:
            pg.stop()
        result["database"] = "postgresql"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(f"sqlite:///{tmp}/review.sqlite", args.rows, args.poll_s)
        result["database"] = "sqlite"
    result.update(machine=platform.machine(), cpus=os.cpu_count(),
                  measured_at=datetime.now(UTC).isoformat(timespec="seconds"))
    print(f"approve -> sent ({result['database']}, worker poll {args.poll_s} s, "
          f"{args.rows} rows): p50 {result['p50_s']} s, p95 {result['p95_s']} s, max {result['max_s']} s")
    out = ROOT / "bench" / "results" / "review_latency.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
