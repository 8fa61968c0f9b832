"""The app-process half of `python -m bench`: run in a child process of its own so that its peak
RSS is the dashboard's (AppTest runs the real scripts in this process, as `streamlit run` would),
not the seeding's or the naive baseline's.

    python -m bench.app_probe --url URL --runs 3 [--pages overview,queue_monitor] [--explain] --out FILE

Per page, `runs` times: a fresh AppTest runs app.py once (engine, schema check and settings are
process-wide resources, made once per server in production), then every st.cache_data cache is
emptied and the page runs (cold), then it runs again (warm). The Activity Feed also clicks "Older"
(next page). Every SQL statement of the cold runs is recorded (SQLAlchemy event); with --explain
(PostgreSQL) each SELECT is EXPLAINed and sequential scans of large tables are reported.
Then, in the same process: the CSV export of 100,000 audit rows and the DLQ retry-all-matching of
1,000 rows (rolled back). Writes a JSON result; prints nothing else of interest.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
PAGES = {  # name -> script (None: the home page, what app.py runs by default)
    "overview": None,
    "agent_status": "pages/agent_status.py",
    "queue_monitor": "pages/queue_monitor.py",
    "system_alerts": "pages/system_alerts.py",
    "activity_feed": "pages/activity_feed.py",
    "metrics": "pages/metrics.py",
    "oversight_chat": "pages/oversight_chat.py",
    "accounts": "pages/accounts.py",
}
LARGE_TABLE_ROWS = 10_000  # a sequential scan of a table with fewer (estimated) rows is not reported


class QueryLog:
    def __init__(self) -> None:
        self.page: str | None = None
        self.phase: str | None = None
        self.count = 0
        self.statements: dict[str, list[tuple[str, object]]] = {}

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        self.count += 1
        if self.phase == "cold" and self.page is not None and not executemany:
            self.statements.setdefault(self.page, []).append((statement, parameters))


def rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM (reset by exec; ru_maxrss is not: a child would inherit
    the parent's peak, e.g. the naive pandas baseline's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_pages(pages: list[str], runs: int, log: QueryLog) -> dict:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    out = {}
    for name in pages:
        cold, warm, nxt, q_cold, q_warm = [], [], [], [], []
        errors = []
        for i in range(runs):
            st.cache_data.clear()
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
            at.run()
            st.cache_data.clear()
            if PAGES[name]:
                at.switch_page(str(ROOT / PAGES[name]))
            log.page, log.phase = (name, "cold") if i == 0 else (None, None)
            n0 = log.count
            t = time.perf_counter()
            at.run()
            cold.append(time.perf_counter() - t)
            q_cold.append(log.count - n0)
            log.page, log.phase = None, None
            if at.exception:
                errors.append([e.value for e in at.exception])
            n0 = log.count
            t = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t)
            q_warm.append(log.count - n0)
            if name == "activity_feed":
                t = time.perf_counter()
                at.button(key="feed-pager-older").click().run()
                nxt.append(time.perf_counter() - t)
        out[name] = {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm), "cold_all": cold,
                     "warm_all": warm, "queries_cold": statistics.median(q_cold), "queries_warm": statistics.median(q_warm),
                     "errors": errors}
        if nxt:
            out[name]["next_page_s"] = statistics.median(nxt)
    return out


def plan_nodes(node: dict, under_limit: bool = False):
    """Every node of a plan; each gets "_under_limit": its parent is a Limit, which stops the scan early."""
    node["_under_limit"] = under_limit
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child, node.get("Node Type") == "Limit")


def explain(engine, log: QueryLog) -> dict:
    """EXPLAIN every SELECT a page ran cold; report whole-table scans of large tables: sequential scans, and
    index scans with no index condition on an index that is not partial (they read every row's entry)."""
    with engine.connect() as conn:
        sizes = dict(conn.execute(sa.text(
            "SELECT relname, reltuples::bigint FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )).all())
        partial = set(conn.execute(sa.text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indpred IS NOT NULL"
        )).scalars())
    raw = engine.raw_connection()
    out = {}
    try:
        for page, statements in log.statements.items():
            seen, scans, checked = set(), [], 0
            for statement, params in statements:
                if not statement.lstrip().upper().startswith(("SELECT", "WITH")) or statement in seen:
                    continue
                seen.add(statement)
                cur = raw.cursor()
                try:
                    cur.execute("EXPLAIN (FORMAT JSON) " + statement, params)
                    plan = cur.fetchone()[0][0]["Plan"]
                except Exception as exc:  # noqa: BLE001 - a statement we cannot explain is reported, not fatal
                    raw.rollback()
                    scans.append({"error": str(exc).splitlines()[0], "sql": " ".join(statement.split())[:300]})
                    continue
                finally:
                    cur.close()
                checked += 1
                for node in plan_nodes(plan):
                    rel = node.get("Relation Name")
                    kind = node.get("Node Type")
                    whole_index = (kind in ("Index Scan", "Index Only Scan") and not node.get("Index Cond")
                                   and node.get("Index Name") not in partial and not node["_under_limit"])
                    if (kind == "Seq Scan" or whole_index) and sizes.get(rel, 0) >= LARGE_TABLE_ROWS:
                        scans.append({"table": rel, "table_rows": sizes[rel], "plan_rows": node.get("Plan Rows"),
                                      "node": kind if kind == "Seq Scan" else f"{kind} on {node.get('Index Name')}",
                                      "filter": node.get("Filter"), "sql": " ".join(statement.split())[:600]})
            out[page] = {"queries": checked, "seq_scans": scans}
        raw.rollback()
    finally:
        raw.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pages", default=",".join(PAGES))
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--export-rows", type=int, default=100_000)
    ap.add_argument("--retry-rows", type=int, default=1_000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from streamlit.logger import set_log_level

    set_log_level("error")  # AppTest's bare-mode warnings
    os.environ["DATABASE_URL"] = args.url
    log = QueryLog()
    event.listen(sa.engine.Engine, "before_cursor_execute", log)
    result = {"rss_start_mb": rss_mb()}
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    result["pages"] = run_pages(pages, args.runs, log)
    result["rss_pages_mb"] = rss_mb()

    from bench.feed_bench import measure_export
    from bench.queue_bench import measure_retry_all
    from lib.core.db import make_engine
    from lib.core.timeutil import utcnow

    engine = make_engine(args.url)
    try:
        if args.explain and engine.dialect.name == "postgresql":
            result["explain"] = explain(engine, log)
        result["export"] = measure_export(engine, rows=args.export_rows)
        result["rss_export_mb"] = rss_mb()
        result["retry_all"] = measure_retry_all(engine, now=utcnow(), limit=args.retry_rows)
    finally:
        engine.dispose()
    result["rss_peak_mb"] = rss_mb()
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
