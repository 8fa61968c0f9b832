"""Benchmark (not a test): worker rows/second with 1 and with 4 worker processes.

    .venv/bin/python bench/worker_throughput.py [--rows 5000] [--workers 1 4] [--batch-size 20]

Starts a throwaway PostgreSQL (tests/support/pg.py) and the sandbox Graph API answering at once
(no errors, no delay), enqueues N send_dm/reply_comment rows per run into a fresh database,
runs `python -m worker --once --until-empty` in K processes and times them from start to the
last exit (process start-up included). Prints a table and writes bench/results/worker_throughput.json.
The sandbox runs in this process, so on a small machine it competes with the workers for CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from lib.core.db import init_db, make_engine  # noqa: E402
from lib.core.schema import instagram_business_accounts as accounts  # noqa: E402
from lib.core.schema import post_queue as pq  # noqa: E402
from lib.queue.store import enqueue  # noqa: E402  (after sys.path.insert: runnable as a script)
from sandbox.graph_api import GraphSandbox  # noqa: E402
from tests.support.pg import ThrowawayPostgres  # noqa: E402


def prepare(pg: ThrowawayPostgres, rows: int) -> str:
    url = pg.create_database("bench_" + uuid.uuid4().hex[:8])
    engine = make_engine(url)
    init_db(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        accs = []
        for i in range(8):
            acc = uuid.uuid4()
            conn.execute(sa.insert(accounts).values(id=acc, username=f"bench{i}", instagram_business_id=f"1784{i:011d}",
                                                    access_token=f"tok{i}", is_connected=True, created_at=now,
                                                    updated_at=now))
            accs.append(acc)
        for i in range(rows):
            if i % 2:
                enqueue(conn, business_account_id=accs[i % 8], action_type="send_dm",
                        payload={"recipient_id": str(i), "message_text": f"#key:b{i} hello"}, now=now)
            else:
                enqueue(conn, business_account_id=accs[i % 8], action_type="reply_comment",
                        payload={"comment_id": str(i), "reply_text": f"#key:b{i} thanks"}, now=now)
    engine.dispose()
    return url


def run(url: str, sandbox: GraphSandbox, workers: int, batch_size: int) -> dict:
    env = {**os.environ, "DATABASE_URL": url, "INSTAGRAM_GRAPH_URL": sandbox.url, "BATCH_SIZE": str(batch_size),
           "LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "worker", "--once", "--until-empty", "--no-watchdog"],
                              cwd=ROOT, env=env) for _ in range(workers)]
    codes = [p.wait() for p in procs]
    elapsed = time.monotonic() - started
    engine = make_engine(url)
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.select(pq.c.status, sa.func.count()).group_by(pq.c.status)).all())
    engine.dispose()
    return {"workers": workers, "batch_size": batch_size, "exit_codes": codes, "seconds": round(elapsed, 2),
            "sent": counts.get("sent", 0), "statuses": counts,
            "rows_per_second": round(counts.get("sent", 0) / elapsed, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--batch-size", type=int, default=20)
    args = ap.parse_args()
    pg = ThrowawayPostgres()
    pg.start()
    sandbox = GraphSandbox().start()
    results = []
    try:
        for k in args.workers:
            url = prepare(pg, args.rows)
            before = sandbox.stats()["requests"]
            res = run(url, sandbox, k, args.batch_size)
            res["graph_requests"] = sandbox.stats()["requests"] - before
            results.append(res)
            print(f"  {k} worker(s): {res['sent']} rows in {res['seconds']} s", flush=True)
    finally:
        sandbox.stop()
        pg.cleanup()
    print()
    print(f"{'workers':>7} | {'rows':>6} | {'seconds':>7} | {'rows/s':>7} | graph requests")
    print("-" * 52)
    for r in results:
        print(f"{r['workers']:>7} | {r['sent']:>6} | {r['seconds']:>7} | {r['rows_per_second']:>7} | {r['graph_requests']}")
    out = {"rows": args.rows, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
           "measured_at": datetime.now(UTC).isoformat(), "results": results}
    path = ROOT / "bench" / "results" / "worker_throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten {path.relative_to(ROOT)}")
    return 0 if all(r["sent"] == args.rows for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
