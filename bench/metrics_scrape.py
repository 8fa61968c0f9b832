"""What one /metrics scrape costs the database at the benchmark's queue volume (200,000 post_queue
rows, 5,000 dead-lettered; 100,000 heartbeats; 20,000 alerts; 10 accounts), SQLite and PostgreSQL.

    .venv/bin/python bench/metrics_scrape.py [--runs 15] [--rebuild]    -> bench/results/metrics_scrape.json

Per scrape: the statements the database collector sends (counted with a SQLAlchemy event), their
database time (cursor execute + fetch, median of --runs scrapes with the 10 s cache off), the whole
scrape (generate_latest) and, on PostgreSQL, EXPLAIN ANALYZE's execution time of the statement.
A measurement, not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from bench.data import FULL, ensure_postgres, ensure_sqlite  # noqa: E402
from lib.db import make_engine  # noqa: E402
from lib.metrics import DatabaseCollector, snapshot_query  # noqa: E402
from lib.timeutil import iso, utcnow  # noqa: E402

# The tables the scrape reads at the benchmark's volumes; the others small (they are not read).
VOLUMES = {**FULL, "audit_rows": 2_000, "report_days": 5, "report_weeks": 2, "chat_sessions": 10}


def measure(url: str, runs: int) -> dict:
    engine = make_engine(url)
    timings: list[float] = []
    statements: list[str] = []
    started: dict[int, float] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(conn, cursor, statement, *args):
        statements.append(statement)
        started[id(cursor)] = time.perf_counter()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def after(conn, cursor, statement, *args):
        timings.append(time.perf_counter() - started.pop(id(cursor)))

    collector = DatabaseCollector(engine, cache_s=0)  # every scrape reads the database
    registry = CollectorRegistry()
    registry.register(collector)
    generate_latest(registry)  # warm the pool and the caches
    statements.clear()
    timings.clear()
    scrape_s, per_scrape, db_s = [], [], []
    for _ in range(runs):
        n0, t0 = len(statements), len(timings)
        began = time.perf_counter()
        generate_latest(registry)
        scrape_s.append(time.perf_counter() - began)
        per_scrape.append(len(statements) - n0)
        db_s.append(sum(timings[t0:]))
    out = {
        "statements_per_scrape": max(per_scrape),
        "db_ms_median": round(statistics.median(db_s) * 1000, 2),
        "db_ms_max": round(max(db_s) * 1000, 2),
        "scrape_ms_median": round(statistics.median(scrape_s) * 1000, 2),
        "runs": runs,
    }
    with engine.connect() as conn:
        out["queue_rows"] = conn.execute(sa.text("SELECT count(*) FROM post_queue")).scalar()
        if engine.dialect.name == "postgresql":
            compiled = snapshot_query(utcnow()).compile(dialect=engine.dialect)
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), compiled.params).scalar()
            plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
            out["explain_execution_ms"] = round(plan["Execution Time"], 2)
            out["explain_planning_ms"] = round(plan["Planning Time"], 2)
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
