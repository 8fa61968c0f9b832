"""Benchmark (not a test) of the agents' HTTP API and of WORKER_POLL_S. Part of `python -m bench`; alone:

    .venv/bin/python -m bench.api_bench [--only sqlite|postgresql] [--samples 20] [--seconds 10]
                                        [--clients 8] [--history-rows 5000000]

Per database (a throwaway PostgreSQL from tests/support/pg.py, a SQLite file under data/bench/):

1. Enqueue-to-Graph-call latency: `python -m worker` as a service with its defaults (WORKER_CRON
   */5, WORKER_POLL_S 5) against the sandbox Graph API (in this process), `python -m worker.api`
   beside it; `--samples` times: POST /send-dm, then wait until the sandbox has received that DM.
   The posts are spaced at random (0-5 s) so they land anywhere in the poll's cycle. p50/p95/max.
2. Requests per second of POST /agent/heartbeat and GET /post-queue/status (10,000 queue rows of
   mixed statuses) from `--clients` threads with keep-alive sessions for `--seconds` each, against one
   API process. The client runs on the same machine and takes CPU from the server: a floor.
3. PostgreSQL only: the cost of the poll's question (lib.queue.holds.came_due_since) with `--history-rows`
   sent rows in post_queue (and with none), median of 200 runs, and its plan.

Writes bench/results/api.json and bench/results/api.md. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib.core.db import init_db, make_engine, without_jit  # noqa: E402
from lib.core.schema import instagram_business_accounts as accounts  # noqa: E402
from lib.core.schema import post_queue  # noqa: E402
from lib.core.timeutil import utcnow  # noqa: E402
from lib.queue.holds import came_due_since, claimable_clause  # noqa: E402  (after sys.path.insert: runnable as a script)
from sandbox.graph_api import GraphSandbox  # noqa: E402
from tests.support.pg import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "data" / "bench"
TOKENS = {"agent": "bench-agent-token-0123456789", "viewer": "bench-viewer-token-0123456789"}
API_TOKENS = f"bench-agent:agent:{TOKENS['agent']} bench-viewer:viewer:{TOKENS['viewer']}"


def log(msg: str) -> None:
    print(msg, flush=True)


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def _prepare(url: str, sandbox: GraphSandbox | None, status_rows: int = 0) -> uuid.UUID:
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    acc = uuid.uuid4()
    with eng.begin() as conn:
        conn.execute(sa.insert(accounts).values(id=acc, username="bench", instagram_business_id="17841400000000001",
                                                access_token="bench-graph-token", is_connected=True, created_at=now,
                                                updated_at=now))
        rows = []
        statuses = ("sent",) * 6 + ("pending", "failed", "dlq", "processing")
        for i in range(status_rows):
            st = statuses[i % len(statuses)]
            rows.append({"id": uuid.uuid4(), "business_account_id": acc, "action_type": "send_dm",
                         "payload": {"recipient_id": str(i), "message_text": "x"}, "idempotency_key": f"bench-{i}",
                         "status": st, "retry_count": 0, "created_at": now - timedelta(hours=1),
                         "updated_at": now - timedelta(minutes=i % 600),
                         # no row of these is due: the latency run's worker must only see the posted ones
                         "next_retry_at": now + timedelta(days=1) if st in ("pending", "failed") else None})
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(post_queue), rows[start:start + 5000])
    if sandbox is not None:
        sandbox.add_account("17841400000000001", "bench-graph-token", username="bench")
    eng.dispose()
    return acc


def _start(cmd: list[str], env: dict[str, str], health: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if health:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(health, timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} did not come up")
            time.sleep(0.1)
    return proc


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def latency(url: str, samples: int) -> dict:
    sandbox = GraphSandbox().start()
    acc = _prepare(url, sandbox)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": url, "API_TOKENS": API_TOKENS, "API_PORT": str(port), "LOG_LEVEL": "WARNING",
           "INSTAGRAM_GRAPH_URL": sandbox.url, "API_RATE_LIMIT_PER_MIN": "1000000"}
    api_proc = _start([sys.executable, "-m", "worker.api"], env, api + "/healthz")
    worker = _start([sys.executable, "-m", "worker", "--no-watchdog"], env)  # defaults: */5 cron, poll 5 s
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKENS['agent']}"
    rng = random.Random(1)
    out: list[float] = []
    try:
        time.sleep(3)  # the service is in its loop
        for i in range(samples):
            time.sleep(rng.uniform(0, 5))
            text = f"bench latency {i} {uuid.uuid4().hex[:6]}"
            t0 = time.monotonic()
            r = session.post(api + "/send-dm", json={"business_account_id": str(acc), "recipient_id": str(9000 + i),
                                                     "message_text": text}, timeout=10)
            r.raise_for_status()
            while text not in sandbox.stats()["effects"]:
                if time.monotonic() - t0 > 400:
                    raise RuntimeError("a row was not sent within 400 s")
                time.sleep(0.02)
            out.append(time.monotonic() - t0)
            log(f"    sample {i + 1}/{samples}: {out[-1]:.2f} s")
    finally:
        _stop(worker, api_proc)
        sandbox.stop()
    return {"samples": len(out), "p50_s": round(statistics.median(out), 2), "p95_s": round(_pct(out, 95), 2),
            "max_s": round(max(out), 2), "min_s": round(min(out), 2), "worker_poll_s": 5, "worker_cron": "*/5 * * * *"}


def throughput(url: str, seconds: float, clients: int) -> dict:
    acc = _prepare(url, None, status_rows=10_000)
    del acc
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": url, "API_TOKENS": API_TOKENS, "API_PORT": str(port), "LOG_LEVEL": "WARNING",
           "API_RATE_LIMIT_PER_MIN": "100000000"}
    api_proc = _start([sys.executable, "-m", "worker.api"], env, api + "/healthz")
    out = {}
    try:
        for name, method, path, token, body in (
                ("heartbeat", "POST", "/agent/heartbeat", TOKENS["agent"], {"agent_id": "bench-agent"}),
                ("status", "GET", "/post-queue/status", TOKENS["viewer"], None)):
            stop = time.monotonic() + seconds
            lat: list[list[float]] = [[] for _ in range(clients)]
            errors = [0] * clients

            def client(k, token=token, stop=stop, method=method, path=path, body=body, lat=lat, errors=errors):
                s = requests.Session()
                s.headers["Authorization"] = f"Bearer {token}"
                while time.monotonic() < stop:
                    t = time.perf_counter()
                    r = s.request(method, api + path, json=body, timeout=30)
                    lat[k].append(time.perf_counter() - t)
                    if r.status_code != 200:
                        errors[k] += 1

            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            began = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - began
            all_lat = [x for part in lat for x in part]
            out[name] = {"requests": len(all_lat), "errors": sum(errors), "seconds": round(took, 1),
                         "rps": round(len(all_lat) / took, 1), "p50_ms": round(statistics.median(all_lat) * 1000, 1),
                         "p95_ms": round(_pct(all_lat, 95) * 1000, 1), "clients": clients}
            log(f"    {name}: {out[name]['rps']} requests/s, p50 {out[name]['p50_ms']} ms, "
                f"p95 {out[name]['p95_ms']} ms, {out[name]['errors']} non-200")
    finally:
        _stop(api_proc)
    return out


def poll_cost(url: str, history_rows: int, runs: int = 200) -> dict:
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()

    def measure() -> float:
        times = []
        with eng.connect() as conn:
            for _ in range(runs):
                t = time.perf_counter()
                came_due_since(conn, since=now - timedelta(seconds=7), now=now)
                times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    acc = _prepare(url, None, status_rows=1000)  # a backlog of 1,000 active rows, none due
    empty_ms = measure()
    if history_rows:
        t = time.perf_counter()
        with eng.begin() as conn:
            conn.execute(sa.text("""
                INSERT INTO post_queue (id, business_account_id, action_type, payload, idempotency_key, status,
                                        retry_count, created_at, updated_at)
                SELECT gen_random_uuid(), :acc, 'send_dm', jsonb_build_object('message_text', 'h' || g),
                       'hist-' || g, 'sent', 0, now() - (g || ' seconds')::interval,
                       now() - (g || ' seconds')::interval
                FROM generate_series(1, :n) g"""), {"acc": acc, "n": history_rows})
            conn.execute(sa.text("ANALYZE post_queue"))
        log(f"    {history_rows:,} sent rows inserted in {time.perf_counter() - t:.0f} s")
    full_ms = measure()
    with eng.connect() as conn:
        q = post_queue
        changed = sa.or_(sa.func.coalesce(q.c.next_retry_at, q.c.created_at) > now, q.c.updated_at > now)
        stmt = sa.select(q.c.id).where(claimable_clause(now), changed).limit(1)
        compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
        without_jit(conn)  # as came_due_since runs it: the plan is the worker's
        plan = [r[0] for r in conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}"))]
    eng.dispose()
    return {"history_rows": history_rows, "active_rows": 1000, "median_ms_without_history": round(empty_ms, 3),
            "median_ms_with_history": round(full_ms, 3), "plan": plan}


def markdown(result: dict) -> str:
    lines = [f"Measured {result['measured_at']} on {result['machine']}; load average {result['load_before']:.1f} "
             f"before, {result['load_after']:.1f} after.", "",
             "| database | enqueue -> Graph call p50 | p95 | max | heartbeat req/s (p50 ms) | status req/s (p50 ms) |",
             "|---|---|---|---|---|---|"]
    for kind, d in result["databases"].items():
        lat, th = d["latency"], d["throughput"]
        lines.append(f"| {kind} | {lat['p50_s']} s | {lat['p95_s']} s | {lat['max_s']} s | "
                     f"{th['heartbeat']['rps']} ({th['heartbeat']['p50_ms']}) | {th['status']['rps']} "
                     f"({th['status']['p50_ms']}) |")
    pc = result.get("poll_cost")
    if pc:
        lines += ["", f"The poll's question (`came_due_since`) on PostgreSQL, median of 200: "
                      f"{pc['median_ms_without_history']} ms with {pc['active_rows']:,} active rows and no history, "
                      f"{pc['median_ms_with_history']} ms with {pc['history_rows']:,} sent rows more.", "", "```",
                  *pc["plan"], "```"]
    return "\n".join(lines) + "\n"


def run_all(kinds, *, samples: int = 20, seconds: float = 10.0, clients: int = 8,
            history_rows: int = 5_000_000) -> dict:
    """Everything above for each of `kinds` ("sqlite", "postgresql"); PostgreSQL on a throwaway server."""
    from tests.support.pg import ThrowawayPostgres

    result = {"measured_at": utcnow().isoformat(timespec="seconds"), "load_before": os.getloadavg()[0],
              "machine": f"{os.cpu_count()} CPUs", "databases": {}}
    pg = None
    try:
        for kind in kinds:
            log(f"== agents' API on {kind} ==")
            if kind == "sqlite":
                DATA.mkdir(parents=True, exist_ok=True)
                tag = uuid.uuid4().hex[:6]
                urls = (f"sqlite:///{DATA / f'api-lat-{tag}.sqlite'}", f"sqlite:///{DATA / f'api-rps-{tag}.sqlite'}")
            else:
                pg = ThrowawayPostgres()
                pg.start()
                urls = (pg.create_database("api_lat"), pg.create_database("api_rps"))
            d = {}
            log(f"  enqueue -> Graph call latency ({samples} samples, worker defaults) ...")
            d["latency"] = latency(urls[0], samples)
            log(f"    p50 {d['latency']['p50_s']} s, p95 {d['latency']['p95_s']} s, max {d['latency']['max_s']} s")
            log(f"  requests/s ({clients} clients, {seconds:g} s each) ...")
            d["throughput"] = throughput(urls[1], seconds, clients)
            result["databases"][kind] = d
            if kind == "sqlite":
                for f in DATA.glob(f"api-*-{tag}.sqlite*"):
                    f.unlink()
            else:
                log(f"  the poll's cost with {history_rows:,} sent rows ...")
                result["poll_cost"] = poll_cost(pg.create_database("api_poll"), history_rows)
                log(f"    {result['poll_cost']['median_ms_without_history']} ms without history, "
                    f"{result['poll_cost']['median_ms_with_history']} ms with")
    finally:
        if pg is not None:
            pg.cleanup()
    result["load_after"] = os.getloadavg()[0]
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api_bench")
    ap.add_argument("--only", choices=("sqlite", "postgresql"))
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--history-rows", type=int, default=5_000_000)
    args = ap.parse_args(argv)
    result = run_all([args.only] if args.only else ["sqlite", "postgresql"], samples=args.samples,
                     seconds=args.seconds, clients=args.clients, history_rows=args.history_rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (RESULTS / "api.md").write_text(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
