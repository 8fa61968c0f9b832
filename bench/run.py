"""`python -m bench`: the dashboard's benchmark at production volumes, on SQLite and PostgreSQL.

    .venv/bin/python -m bench [--only sqlite|postgresql] [--pages overview,queue_monitor,...] [--runs 3]
                              [--small] [--rebuild] [--skip-worker] [--skip-sse] [--skip-api] [--worker-rows 2000]

1. Builds the --scale volumes once (sandbox.seed.seed_scale) and reuses them: data/bench/scale.sqlite
   and a PostgreSQL data directory data/bench/pg-scale/ that is started on a free port and stopped at the
   end (--rebuild forces a new build; --small uses small volumes, data/bench/small*, for a smoke run).
2. Per database, in a child process that plays the app process (bench/app_probe.py): every page with
   its default filters through AppTest, cold (st.cache_data emptied) and warm (a rerun), median of
   --runs; the Activity Feed's next page; on PostgreSQL the EXPLAIN of every query the default views ran
   (sequential scans of large tables are reported); the CSV export of 100,000 audit rows; the DLQ
   retry-all-matching of 1,000 rows (rolled back); the child's peak RSS (VmHWM).
3. In this process: a naive pandas baseline for the two heaviest views (Queue Monitor counts, Activity
   Feed chart + first page: load the table, aggregate in pandas) against the lib queries the pages use.
4. Worker rows/second with 1 and 4 processes against the sandbox Graph API (bench/worker_throughput.py,
   on the same PostgreSQL server, fresh databases dropped afterwards) and the SSE client's cost per
   token (bench/sse_client.py).
5. The agents' API (bench/api_bench.py): enqueue-to-Graph-call latency with the worker as a service
   (WORKER_POLL_S), heartbeat and status requests/s on both databases, the poll's cost at 5M sent rows.
Prints a table and writes bench/results/latest.json and bench/results/latest.md (--small: small.*;
runs limited by --only/--pages/--skip-*: partial.*).
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from bench.app_probe import PAGES
from bench.data import DATA, FULL, HISTORY, HISTORY_1M, ROOT, SMALL, ensure_history, ensure_postgres, ensure_sqlite
from lib.core.audit import AuditFilter, count_matching, event_counts, feed_page
from lib.core.db import make_engine
from lib.core.schema import audit_log, post_queue
from lib.core.timeutil import floor_time, iso, utcnow
from lib.queue.reads import queue_health, status_summary

RESULTS = ROOT / "bench" / "results"
TARGET = {"postgresql": {"cold": 1.0, "warm": 0.3}, "sqlite": {"cold": 2.0, "warm": 0.6}}
TARGET_RSS_MB = 500
FEED_PAGE_SIZE = 50
LEASE_S = 600


def log(msg: str) -> None:
    print(msg, flush=True)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "ram_gb": round(mem_kb / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform()}


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --------------------------------------------------------------------------- naive baselines
def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True, format="mixed")


def naive_queue_counts(engine, now) -> dict:
    """What a quick script would do: the whole post_queue into pandas, then group and filter there."""
    with engine.connect() as conn:
        df = pd.read_sql(sa.select(post_queue), conn)
    counts = df.groupby(["business_account_id", "action_type", "status"]).size()
    nra, upd, cre = _utc(df["next_retry_at"]), _utc(df["updated_at"]), _utc(df["created_at"])
    due = int((df["status"].isin(["pending", "failed"]) & (nra.isna() | (nra <= now))).sum())
    stuck = int(((df["status"] == "processing") & (upd < now - timedelta(seconds=LEASE_S))).sum())
    oldest = cre[df["status"] == "pending"].min()
    return {"cells": len(counts), "due": due, "stuck": stuck, "oldest": oldest, "rows": len(df)}


def ours_queue_counts(engine, now) -> None:
    with engine.connect() as conn:
        status_summary(conn, now=now)
        queue_health(conn, now=now, lease_s=LEASE_S)


def naive_feed(engine, now) -> dict:
    """The whole audit_log into pandas; the last 24 h filtered, counted per hour and outcome, sorted for page 1."""
    with engine.connect() as conn:
        df = pd.read_sql(sa.select(audit_log), conn)
    df["created_at"] = _utc(df["created_at"])
    recent = df[df["created_at"] >= now - timedelta(hours=24)]
    chart = recent.groupby([recent["created_at"].dt.floor("h"), "success"]).size()
    page = recent.sort_values(["created_at", "id"], ascending=False).head(FEED_PAGE_SIZE)
    return {"rows": len(df), "matching": len(recent), "bars": len(chart), "page": len(page)}


def ours_feed(engine, now) -> None:
    f = AuditFilter(since=now - timedelta(hours=24))
    with engine.connect() as conn:
        feed_page(conn, filters=f, limit=FEED_PAGE_SIZE)
        count_matching(conn, filters=f)
        event_counts(conn, filters=f, bucket="hour")


def baselines(url: str, runs: int) -> dict:
    engine = make_engine(url)
    now = floor_time(utcnow(), 30)
    out = {}
    try:
        for name, naive, ours in (("queue_monitor_counts", naive_queue_counts, ours_queue_counts),
                                  ("activity_feed_first_page", naive_feed, ours_feed)):
            t = time.perf_counter()
            info = naive(engine, now)
            naive_s = time.perf_counter() - t  # once: it is the slow side, and its cost is the point
            ours_s = median_time(lambda ours=ours: ours(engine, now), runs)
            out[name] = {"naive_s": naive_s, "ours_s": ours_s, "ratio": naive_s / ours_s if ours_s else None,
                         "naive_rows_loaded": info["rows"]}
            log(f"  baseline {name}: naive {naive_s:.2f} s vs lib queries {ours_s:.3f} s "
                f"(x{out[name]['ratio']:.0f})")
    finally:
        engine.dispose()
    return out


# --------------------------------------------------------------------------- app process (child)
def probe(kind: str, url: str, args) -> dict:
    out = DATA / f"probe-{kind}.json"
    err = DATA / f"probe-{kind}.log"
    cmd = [sys.executable, "-m", "bench.app_probe", "--url", url, "--runs", str(args.runs), "--pages", args.pages,
           "--out", str(out)]
    if kind == "postgresql":
        cmd.append("--explain")
    with err.open("w") as fh:
        code = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"the app probe failed on {kind} (exit {code}); see {err.relative_to(ROOT)}")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- worker and SSE
def worker_throughput(server, rows: int) -> list[dict]:
    from bench.worker_throughput import prepare, run
    from sandbox.graph_api import GraphSandbox

    sandbox = GraphSandbox().start()
    results = []
    try:
        for k in (1, 4):
            url = prepare(server, rows)
            before = sandbox.stats()["requests"]
            res = run(url, sandbox, k, 20)
            res["graph_requests"] = sandbox.stats()["requests"] - before
            results.append(res)
            server.drop_database(url.rsplit("/", 1)[1])
            log(f"  worker x{k}: {res['sent']:,}/{rows:,} rows sent in {res['seconds']} s = {res['rows_per_second']} rows/s")
    finally:
        sandbox.stop()
    return results


def sse_cost(tokens: int, runs: int) -> dict:
    from bench.sse_client import _Burst, run_client, run_raw, run_write_stream
    from sandbox.sse_server import BackgroundServer

    with BackgroundServer(_Burst, tokens=tokens) as server:
        run_raw(server.url)  # warm-up
        raw = statistics.median(run_raw(server.url)[1] for _ in range(runs))
        client = statistics.median(run_client(server.url)[1] for _ in range(runs))
        page = statistics.median(run_write_stream(server.url, 0.05) for _ in range(max(2, runs // 2)))
    out = {"tokens": tokens, "raw_us_per_token": raw / tokens * 1e6, "client_us_per_token": client / tokens * 1e6,
           "write_stream_us_per_token": page / tokens * 1e6}
    log(f"  SSE per token: raw requests+sseclient {out['raw_us_per_token']:.1f} µs, lib.activity.sse client "
        f"{out['client_us_per_token']:.1f} µs, with st.write_stream (AppTest) {out['write_stream_us_per_token']:.1f} µs")
    return out


def growth(url_200k: str, url_1m: str, url_5m: str, runs: int) -> dict:
    from bench import growth as g

    load0 = os.getloadavg()[0]
    vols = {}
    for label, url in (("200k", url_200k), ("1M", url_1m), ("5M", url_5m)):
        log(f"  growth at {label}:")
        vols[label] = g.measure(url, max(runs, 5), log=log)
    load = (load0, os.getloadavg()[0])
    log("  dead-letter backlog at 5M:")
    backlog = g.dlq_backlog(url_5m, max(runs, 5), log=log)
    load_b = (load[1], os.getloadavg()[0])
    return {"volumes": vols, "load": load, "backlog": backlog, "backlog_load": load_b,
            "markdown": g.markdown(vols, load) + "\n" + g.backlog_markdown(backlog, load_b)}


# --------------------------------------------------------------------------- report
def verdicts(result: dict) -> list[str]:
    """Plain sentences for every missed target."""
    missed = []
    for kind, db in result["databases"].items():
        t = TARGET[kind]
        for page, p in db["pages"].items():
            if p["cold_s"] > t["cold"]:
                missed.append(f"{kind}: {page} cold {p['cold_s']:.2f} s > {t['cold']} s")
            if p["warm_s"] > t["warm"]:
                missed.append(f"{kind}: {page} warm {p['warm_s']:.2f} s > {t['warm']} s")
            if p["errors"]:
                missed.append(f"{kind}: {page} raised {p['errors'][0]}")
        if db["rss_peak_mb"] > TARGET_RSS_MB:
            missed.append(f"{kind}: peak RSS {db['rss_peak_mb']:.0f} MB > {TARGET_RSS_MB} MB")
        for page, e in db.get("explain", {}).items():
            for scan in e["seq_scans"]:
                if "table" in scan:
                    missed.append(f"{kind}: {page} {scan.get('node', 'Seq Scan')} on {scan['table']} "
                                  f"({scan['table_rows']:,} rows)")
                else:
                    missed.append(f"{kind}: {page} query could not be explained: {scan['error']}")
    return missed


def markdown(result: dict) -> str:
    dbs = result["databases"]
    kinds = [k for k in ("postgresql", "sqlite") if k in dbs]
    m = result["machine"]
    lines = [f"Measured {result['measured_at']} on {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, "
             f"Python {m['python']}; volumes: {result['volume_name']} "
             f"({', '.join(f'{k} {v:,}' for k, v in result['volumes'].items())}); median of {result['runs']} runs.", ""]
    head = "| page |" + "".join(f" {k} cold | {k} warm | queries cold/warm |" for k in kinds)
    lines += [head, "|---|" + "---:|---:|---:|" * len(kinds)]
    pages = [p for p in PAGES if any(p in dbs[k]["pages"] for k in kinds)]
    for page in pages:
        row = f"| {page} |"
        for k in kinds:
            p = dbs[k]["pages"].get(page)
            if p is None:
                row += " – | – | – |"
                continue
            flag_c = "" if p["cold_s"] <= TARGET[k]["cold"] else " ✗"
            flag_w = "" if p["warm_s"] <= TARGET[k]["warm"] else " ✗"
            row += (f" {p['cold_s']:.2f} s{flag_c} | {p['warm_s']:.2f} s{flag_w} | "
                    f"{p['queries_cold']:.0f} / {p['queries_warm']:.0f} |")
        lines.append(row)
    lines += ["", "| measurement |" + "".join(f" {k} |" for k in kinds), "|---|" + "---:|" * len(kinds)]

    def row(label, fn):
        cells = []
        for k in kinds:
            try:
                cells.append(fn(dbs[k]))
            except (KeyError, TypeError):
                cells.append("–")
        lines.append(f"| {label} |" + "".join(f" {c} |" for c in cells))

    row("Activity Feed next page (AppTest rerun)", lambda d: f"{d['pages']['activity_feed']['next_page_s']:.2f} s")
    row("DLQ retry all matching (1,000 rows, rolled back)",
        lambda d: f"{d['retry_all']['total_s']:.2f} s ({d['retry_all']['rows']:,} rows)")
    row("CSV export of audit rows",
        lambda d: f"{d['export']['csv_s']:.2f} s ({d['export']['rows']:,} rows, {d['export']['bytes'] / 1e6:.0f} MB)")
    row("peak RSS of the app process (AppTest, VmHWM): pages only", lambda d: f"{d['rss_pages_mb']:.0f} MB")
    row("peak RSS incl. the CSV export", lambda d: f"{d['rss_peak_mb']:.0f} MB")
    for name, label in (("queue_monitor_counts", "Queue Monitor counts"), ("activity_feed_first_page",
                                                                           "Activity Feed chart + first page")):
        row(f"naive pandas baseline: {label} (naive / lib, ratio)",
            lambda d, n=name: f"{d['baseline'][n]['naive_s']:.2f} s / {d['baseline'][n]['ours_s']:.3f} s "
                              f"= ×{d['baseline'][n]['ratio']:.0f}")
    if "postgresql" in dbs and "explain" in dbs["postgresql"]:
        n_q = sum(e["queries"] for e in dbs["postgresql"]["explain"].values())
        n_s = sum(len(e["seq_scans"]) for e in dbs["postgresql"]["explain"].values())
        lines += ["", f"PostgreSQL plans: {n_q} distinct SELECTs of the default views explained; "
                      f"sequential scans of tables over 10,000 rows: {n_s}."]
    if result.get("worker"):
        lines += ["", "| worker processes | rows | seconds | rows/s |", "|---:|---:|---:|---:|"]
        for w in result["worker"]:
            lines.append(f"| {w['workers']} | {w['sent']:,} | {w['seconds']} | {w['rows_per_second']} |")
    if result.get("sse"):
        s = result["sse"]
        lines += ["", f"SSE client, {s['tokens']:,} tokens from a local server: {s['raw_us_per_token']:.1f} µs/token for "
                      f"requests + sseclient-py alone, {s['client_us_per_token']:.1f} µs/token through lib.activity.sse "
                      f"(coalescing + escaping), {s['write_stream_us_per_token']:.1f} µs/token with st.write_stream (AppTest)."]
    if result.get("growth"):
        lines += ["", result["growth"]["markdown"]]
    missed = result["missed"]
    lines += ["", "Targets (PostgreSQL ≤ 1.0 s cold, ≤ 0.3 s warm; SQLite within 2×; RSS ≤ 500 MB; no whole-table "
                  "scan): " + ("all met." if not missed else "missed: " + "; ".join(missed) + ".")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("sqlite", "postgresql"))
    ap.add_argument("--pages", default=",".join(PAGES), help="comma-separated: " + ",".join(PAGES))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="small volumes (a smoke run of the whole command)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the databases even if they exist")
    ap.add_argument("--skip-worker", action="store_true")
    ap.add_argument("--skip-sse", action="store_true")
    ap.add_argument("--skip-api", action="store_true", help="skip the agents' API and WORKER_POLL_S (bench/api_bench.py)")
    ap.add_argument("--skip-review", action="store_true", help="skip approve-to-sent latency (bench/review_latency.py)")
    ap.add_argument("--worker-rows", type=int, default=None, help="rows per worker run (default 2000, --small 300)")
    ap.add_argument("--history", action="store_true",
                    help="PostgreSQL at the history volume (a year: 5M queue rows, 5M audit rows, 4M heartbeats; "
                         "built once from the scale volume, reused); SQLite stays at the scale volume")
    ap.add_argument("--growth", action="store_true",
                    help="with --history: the database time of the live loaders at 200k / 1M / 5M queue rows")
    ap.add_argument("--browser", action="store_true",
                    help="page times in a real browser against a bare-Streamlit floor (bench/browser.py)")
    ap.add_argument("--volumes", choices=("demo", "small", "scale"), default="demo",
                    help="--browser only: the data set (default demo)")
    args = ap.parse_args(argv)
    if args.browser:
        from bench import browser

        args.pages_given = any(a == "--pages" or a.startswith("--pages=") for a in (argv or sys.argv[1:]))
        return browser.main(args, log=log)
    unknown = set(args.pages.split(",")) - set(PAGES)
    if unknown:
        ap.error(f"unknown pages: {', '.join(sorted(unknown))}")
    name, volumes = ("small", SMALL) if args.small else ("scale", FULL)
    if args.growth and not args.history:
        ap.error("--growth needs --history")
    kinds = [args.only] if args.only else ["postgresql", "sqlite"]
    result = {"measured_at": iso(utcnow()), "machine": machine(),
              "volume_name": "history (PostgreSQL; SQLite at scale)" if args.history else name,
              "volumes": HISTORY if args.history else volumes,
              "runs": args.runs, "load_before": os.getloadavg()[0], "databases": {}}
    log(f"machine: {result['machine']['nproc']} CPUs, {result['machine']['cpu']}, {result['machine']['ram_gb']} GB; "
        f"load {result['load_before']:.1f}")
    server = None
    try:
        for kind in kinds:
            log(f"== {kind} ==")
            if kind == "sqlite":
                url, info = ensure_sqlite(name, volumes, rebuild=args.rebuild, log=log)
            else:
                server, url, info = ensure_postgres(name, volumes, rebuild=args.rebuild, log=log)
                if args.history:
                    t = time.perf_counter()
                    base_url, base_info = url, info
                    url, info = ensure_history(server, base_info, rebuild=args.rebuild, log=log)
                    if args.growth:
                        url_1m, _ = ensure_history(server, base_info, name="history1m", spec=HISTORY_1M,
                                                   rebuild=args.rebuild, log=log)
                    log(f"  history volumes ready in {time.perf_counter() - t:.0f} s")
                    if args.growth:
                        result["growth"] = growth(base_url, url_1m, url, args.runs)
            db = {"data": info}
            t = time.perf_counter()
            db.update(probe(kind, url, args))
            from bench import analysts_bench  # the analysts' targets: Metrics/Posts cold, Parquet/Excel exports
            db["analysts"] = analysts_bench.run_for(kind, url, args.runs)
            log(f"  app probe done in {time.perf_counter() - t:.0f} s; peak RSS {db['rss_peak_mb']:.0f} MB")
            for page, p in db["pages"].items():
                log(f"  {page:<16} cold {p['cold_s']:6.3f} s  warm {p['warm_s']:6.3f} s  "
                    f"queries {p['queries_cold']:.0f}/{p['queries_warm']:.0f}"
                    + (f"  next page {p['next_page_s']:.3f} s" if "next_page_s" in p else ""))
            if not args.history:  # the naive baseline loads whole tables into pandas: not at 5M rows
                db["baseline"] = baselines(url, args.runs)
            result["databases"][kind] = db
        if server is not None and not args.skip_worker:
            log("== worker ==")
            result["worker"] = worker_throughput(server, args.worker_rows or (300 if args.small else 2000))
        if not args.skip_sse:
            log("== SSE client ==")
            result["sse"] = sse_cost(1000 if args.small else 5000, args.runs)
        if not args.skip_api:
            from bench import api_bench  # the agents' API: enqueue -> Graph call latency, requests/s, the poll's cost
            result["api"] = api_bench.run_all(kinds, samples=5 if args.small else 20, seconds=3 if args.small else 10,
                                              history_rows=100_000 if args.small else 5_000_000)
        if not args.skip_review:
            from bench import review_latency  # a held row: approve -> sent with the worker as a service
            result["review"] = review_latency.run_all(kinds, rows=5 if args.small else 20)
    finally:
        if server is not None:
            server.stop()
    result["load_after"] = os.getloadavg()[0]
    result["missed"] = verdicts(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # only a full run at production volume replaces the table the README shows
    full = not args.only and set(args.pages.split(",")) == set(PAGES) and not (args.skip_worker or args.skip_sse or args.skip_api
                                                                              or args.skip_review)
    # the history volume is PostgreSQL's: its results are whole with every page measured there (the worker's
    # throughput and the SSE client do not depend on history; the json says which parts ran)
    full_history = args.history and args.only in (None, "postgresql") and set(args.pages.split(",")) == set(PAGES)
    stem = ("history" if full_history else "partial") if args.history else (
        "small" if args.small else "latest") if full else "partial"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = markdown(result)
    from bench import analysts_bench
    analysts = {k: d["analysts"] for k, d in result["databases"].items() if "analysts" in d}
    if analysts:
        md += "\n### Analysts' targets\n\n" + analysts_bench.markdown(analysts, (result["load_before"], result["load_after"]))
    if result.get("api"):
        from bench import api_bench
        md += "\n### The agents' API\n\n" + api_bench.markdown(result["api"])
    if result.get("review"):
        from bench import review_latency
        md += "\n### Review: approve to sent\n\n" + review_latency.markdown(result["review"])
    (RESULTS / f"{stem}.md").write_text(md)
    if result.get("growth"):  # the growth table on its own (README's table comes from it)
        gr = result["growth"]
        (RESULTS / "growth.json").write_text(json.dumps({k: v for k, v in gr.items() if k != "markdown"},
                                                        indent=2, default=str) + "\n")
        (RESULTS / "growth.md").write_text(gr["markdown"])
    print()
    print(md)
    log(f"written bench/results/{stem}.json and bench/results/{stem}.md")
    return 0
