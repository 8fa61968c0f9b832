"""Benchmark: Activity Feed and System Alerts at 1,000,000 audit rows and 20,000 alerts.

    .venv/bin/python -m bench.feed_bench [--db sqlite|postgresql|both] [--audit-rows N] [--alerts N]
                                         [--sqlite-path PATH] [--reuse]

Seeds the database with sandbox.seed.seed_scale (other tables kept small), then measures:
  * lib queries: first page and next page of several filters, the capped count, chart counts;
  * page render times through AppTest (cold caches: the first run of the page, then "Older");
  * the CSV export of 100,000 rows (server-side cursor, chunks) through the same code as the button;
  * on PostgreSQL, the EXPLAIN plan of the default first page (must use ix_audit_log_created_at_id).
Numbers are printed, never asserted: performance is measured here, not in the test suite.
PostgreSQL is a throwaway server (tests/support/pg.py) that is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.alerts.store import AlertFilter, alert_summary, list_alerts  # noqa: E402
from lib.core.audit import (  # noqa: E402
    EXPORT_COLUMNS,
    AuditFilter,
    count_matching,
    event_counts,
    export_chunks,
    feed_conditions,
    feed_page,
    feed_query,
)
from lib.core.db import init_db, make_engine  # noqa: E402
from lib.core.export import rows_to_csv  # noqa: E402
from lib.core.schema import audit_log  # noqa: E402
from lib.core.timeutil import utcnow  # noqa: E402
from sandbox.seed import seed_scale  # noqa: E402


def timed(fn, repeat: int = 3):
    """(median seconds, last result) over `repeat` runs."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def seed(url: str, audit_rows: int, alerts: int) -> None:
    engine = make_engine(url)
    init_db(engine)
    t0 = time.perf_counter()
    counts = seed_scale(engine, now=utcnow(), audit_rows=audit_rows, alerts=alerts, queue_rows=10_000, dlq_rows=500,
                        heartbeats=2_000, report_days=30, report_weeks=4, chat_sessions=10, accounts=10)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()
    print(f"  seeded in {time.perf_counter() - t0:.1f} s: audit_log {counts.get('audit_log', 0):,}, "
          f"system_alerts {counts.get('system_alerts', 0):,}")


def some_account(conn):
    from lib.core.schema import instagram_business_accounts

    return conn.execute(sa.select(instagram_business_accounts.c.id).limit(1)).scalar_one()


def lib_queries(engine) -> None:
    now = utcnow()
    with engine.connect() as conn:
        acc = some_account(conn)
        cases = {
            "default (24 h)": AuditFilter(since=now - timedelta(hours=24)),
            "30 d, failures": AuditFilter(since=now - timedelta(days=30), success=False),
            "7 d, dm_sent": AuditFilter(since=now - timedelta(days=7), event_types=("dm_sent",)),
            "7 d, one account": AuditFilter(since=now - timedelta(days=7), account_id=acc),
            "24 h, search 'timeout'": AuditFilter(since=now - timedelta(hours=24), search="timeout"),
            "30 d, search (no match)": AuditFilter(since=now - timedelta(days=30), search="zz-no-such-text"),
        }
        print(f"  {'filter':<26} {'first page':>11} {'next page':>11} {'count(cap)':>11} {'chart':>11}  rows")
        for name, f in cases.items():
            first_t, page = timed(lambda f=f: feed_page(conn, filters=f, limit=50))
            next_t = 0.0
            if page.has_older:
                next_t, _ = timed(lambda f=f, page=page: feed_page(conn, filters=f, limit=50, after=page.last_cursor))
            count_t, n = timed(lambda f=f: count_matching(conn, filters=f), repeat=1)
            bucket = "hour" if f.since and now - f.since <= timedelta(days=2) else "day"
            chart_t, _ = timed(lambda f=f, bucket=bucket: event_counts(conn, filters=f, bucket=bucket), repeat=1)
            print(f"  {name:<26} {ms(first_t)} {ms(next_t)} {ms(count_t)} {ms(chart_t)}  {n:,}")
        # deep page: walk 20 pages of the 30-day view to show keyset cost does not grow
        f = AuditFilter(since=now - timedelta(days=30))
        page, t0 = feed_page(conn, filters=f, limit=200), time.perf_counter()
        for _ in range(20):
            page = feed_page(conn, filters=f, limit=200, after=page.last_cursor)
        print(f"  20 further pages of 200 (30 d): {ms((time.perf_counter() - t0) / 20)} per page")
        t_alerts, alerts = timed(lambda: list_alerts(conn, filters=AlertFilter(resolved=None)), repeat=1)
        t_sum, _ = timed(lambda: alert_summary(conn, filters=AlertFilter(resolved=None)), repeat=1)
        print(f"  alerts list (all, cap 5000): {ms(t_alerts)} ({len(alerts):,} rows); summary {ms(t_sum)}")


def measure_export(engine, rows: int = 100_000) -> dict:
    """The Activity Feed's CSV export of `rows` audit rows (server-side cursor, chunks), through the
    same lib code as the button: reading alone, then reading + CSV. Used by `python -m bench`."""

    def run():
        with engine.connect() as conn:
            return rows_to_csv(EXPORT_COLUMNS, export_chunks(conn, filters=AuditFilter(), cap=rows), cap=rows)

    def fetch_only():
        with engine.connect() as conn:
            return sum(len(c) for c in export_chunks(conn, filters=AuditFilter(), cap=rows))

    t_fetch, n = timed(fetch_only, repeat=1)
    t, (data, written, truncated) = timed(run, repeat=1)
    return {"read_s": t_fetch, "read_rows": n, "csv_s": t, "rows": written, "bytes": len(data), "truncated": truncated}


def export_100k(engine) -> None:
    r = measure_export(engine)
    print(f"  reading {r['read_rows']:,} rows through the server-side cursor (no CSV): {r['read_s']:.2f} s")
    print(f"  CSV export of {r['rows']:,} rows: {r['csv_s']:.2f} s, {r['bytes'] / 1e6:.1f} MB "
          f"(truncated at cap: {r['truncated']})")


def explain(engine) -> None:
    query = feed_query(AuditFilter(since=utcnow() - timedelta(hours=24)), limit=51)
    compiled = query.compile(engine, compile_kwargs={"render_postcompile": True})
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN ANALYZE " + str(compiled), compiled.params).scalars().all()
        after = feed_query(AuditFilter(since=utcnow() - timedelta(days=30), event_types=("dm_sent",)), limit=51)
        c2 = after.compile(engine, compile_kwargs={"render_postcompile": True})
        plan2 = conn.exec_driver_sql("EXPLAIN " + str(c2), c2.params).scalars().all()
        first = feed_page(conn, filters=AuditFilter(since=utcnow() - timedelta(hours=24)), limit=50)
        nxt = sa.select(audit_log.c.id).where(
            *feed_conditions(AuditFilter(since=utcnow() - timedelta(hours=24))),
            sa.tuple_(audit_log.c.created_at, audit_log.c.id)
            < sa.tuple_(sa.literal(first.last_cursor.created_at, audit_log.c.created_at.type),
                        sa.literal(first.last_cursor.id, audit_log.c.id.type)),
        ).order_by(audit_log.c.created_at.desc(), audit_log.c.id.desc()).limit(51)
        c3 = nxt.compile(engine, compile_kwargs={"render_postcompile": True})
        params3 = {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in c3.params.items()}
        plan3 = conn.exec_driver_sql("EXPLAIN ANALYZE " + str(c3), params3).scalars().all()
    print("  EXPLAIN ANALYZE default first page (24 h, limit 51):")
    for line in plan:
        print("    " + line)
    print("  EXPLAIN next page (keyset condition, same shape as feed_page(after=...)):")
    for line in plan3:
        print("    " + line)
    print("  EXPLAIN 30 d + event type:")
    for line in plan2:
        print("    " + line)


def page_renders(url: str) -> None:
    """Render times of both pages through AppTest with cold caches."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["DATABASE_URL"] = url
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    t0 = time.perf_counter()
    at.switch_page(str(ROOT / "pages/activity_feed.py"))
    at.run()
    first = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    t0 = time.perf_counter()
    at.button(key="feed-pager-older").click().run()
    nxt = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.selectbox(key="feed_range").set_value("30d").run()
    wide = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.button(key="feed-pager-older").click().run()
    wide_next = time.perf_counter() - t0
    print(f"  Activity Feed render: first page {ms(first)} (cold: filter options, page, count, chart), "
          f"next page {ms(nxt)}; 30 d view {ms(wide)}, its next page {ms(wide_next)}")
    t0 = time.perf_counter()
    at.switch_page(str(ROOT / "pages/system_alerts.py"))
    at.run()
    alerts_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.segmented_control(key="alert_state").set_value("all").run()
    alerts_all = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    print(f"  System Alerts render: unresolved {ms(alerts_first)}, all 20k (list capped at 5000) {ms(alerts_all)}")


def run_one(kind: str, url: str, args) -> None:
    print(f"\n== {kind} ==")
    if not args.reuse:
        seed(url, args.audit_rows, args.alerts)
    engine = make_engine(url)
    try:
        lib_queries(engine)
        export_100k(engine)
        if kind == "postgresql":
            explain(engine)
    finally:
        engine.dispose()
    page_renders(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--sqlite-path", default="/tmp/feed-bench.sqlite")
    parser.add_argument("--reuse", action="store_true", help="do not seed (the SQLite file already has the data)")
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        if not args.reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(args.sqlite_path + suffix).unlink(missing_ok=True)
        run_one("sqlite", f"sqlite:///{args.sqlite_path}", args)
    if args.db in ("postgresql", "both"):
        from tests.support.pg import ThrowawayPostgres

        server = ThrowawayPostgres()
        server.start()
        try:
            args_pg = argparse.Namespace(**{**vars(args), "reuse": False})
            run_one("postgresql", server.create_database("bench"), args_pg)
        finally:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
