"""What one /metrics scrape costs the database at the benchmark's queue volume (200,000 post_queue
rows, 5,000 dead-lettered; 100,000 heartbeats; 20,000 alerts; 10 accounts), SQLite and PostgreSQL.

    .venv/bin/python bench/metrics_scrape.py [--runs 15] [--rebuild]    -> bench/results/metrics_scrape.json

Per scrape: the statements the database collector sends (counted with a SQLAlchemy event), their
database time (the statement executed and fetched, median of --runs with the 10 s cache off), the
whole scrape (generate_latest), the plain GROUP BY of post_queue alone for comparison (the floor of
any exact count), on PostgreSQL EXPLAIN ANALYZE's execution time, and the load average (the
machine may be shared). A measurement, not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from bench.data import FULL, ensure_postgres, ensure_sqlite  # noqa: E402
from lib.core.db import make_engine  # noqa: E402
from lib.core.schema import post_queue  # noqa: E402
from lib.core.timeutil import iso, utcnow  # noqa: E402
from lib.health.metrics import DatabaseCollector, read_snapshot, snapshot_query  # noqa: E402

# The tables the scrape reads at the benchmark's volumes; the others small (they are not read).
VOLUMES = {**FULL, "audit_rows": 2_000, "report_days": 5, "report_weeks": 2, "chat_sessions": 10}


def _median_ms(fn, runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 2)


def _cpu_ms(engine, runs: int) -> float:
    """CPU time the database spends on the statement, which a busy machine does not inflate the way it
    inflates wall time: the PostgreSQL backend's utime+stime from /proc (parallel workers off, so
    all the work is in that backend), or this process's CPU time for SQLite (in-process)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET max_parallel_workers_per_gather = 0")
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()

            def cpu() -> float:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / ticks
        else:
            cpu = time.process_time
        read_snapshot(conn, now=utcnow())
        began = cpu()
        for _ in range(runs):
            read_snapshot(conn, now=utcnow())
        return round((cpu() - began) / runs * 1000, 2)


def measure(url: str, runs: int) -> dict:
    engine = make_engine(url)
    statements: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(conn, cursor, statement, *args):
        statements.append(statement)

    collector = DatabaseCollector(engine, cache_s=0)  # every scrape reads the database
    registry = CollectorRegistry()
    registry.register(collector)
    generate_latest(registry)  # warm the pool and the caches
    statements.clear()
    generate_latest(registry)
    out = {"statements_per_scrape": len(statements), "runs": runs,
           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    out["scrape_ms_median"] = _median_ms(lambda: generate_latest(registry), runs)
    with engine.connect() as conn:
        # database time of a scrape: the statement executed and its rows fetched (SQLite runs in-process,
        # so its work happens in the fetch)
        out["db_ms_median"] = _median_ms(lambda: read_snapshot(conn, now=utcnow()), runs)
        # the floor for any exact count of post_queue by status: the GROUP BY alone
        group_by = sa.select(post_queue.c.status, post_queue.c.action_type, sa.func.count()).group_by(
            post_queue.c.status, post_queue.c.action_type)
        out["group_by_alone_ms_median"] = _median_ms(lambda: conn.execute(group_by).all(), runs)
        out["queue_rows"] = conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar()
        if engine.dialect.name == "postgresql":
            compiled = snapshot_query(utcnow()).compile(dialect=engine.dialect,
                                                        compile_kwargs={"render_postcompile": True})
            executions = []
            for _ in range(5):
                plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled),
                                            compiled.params).scalar()
                plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
                executions.append(plan["Execution Time"])
            out["explain_execution_ms_median"] = round(statistics.median(executions), 2)
    out["db_cpu_ms_median"] = _cpu_ms(engine, runs)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["cpus"] = os.cpu_count()
    engine.dispose()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)
    result = {"measured_at": iso(utcnow()), "volumes": VOLUMES, "databases": {}}
    url, _ = ensure_sqlite("metrics", VOLUMES, rebuild=args.rebuild)
    result["databases"]["sqlite"] = measure(url, args.runs)
    server, url, _ = ensure_postgres("metrics", VOLUMES, rebuild=args.rebuild)
    try:
        result["databases"]["postgresql"] = measure(url, args.runs)
    finally:
        server.stop()
    out = ROOT / "bench" / "results" / "metrics_scrape.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["databases"], indent=2))
    print(f"-> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
