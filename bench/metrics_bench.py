"""Metrics page render time for 10 accounts x 2 years of reports, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.metrics_bench [--accounts 10] [--days 730] [--weeks 104] [--repeat 3]
                                            [--sqlite-only] [--keep]

Fills a SQLite file (bench/results/) and a throwaway PostgreSQL (Debian's binaries, as in the
tests) with synthetic reports (bench/report_data.py), then renders pages/metrics.py through
AppTest for several scopes: cold (caches cleared: query + parse + render) and warm (the cached
report set: render only). Also times the loader alone (query + validation + flattening).
Prints a table; numbers are wall-clock on this machine, so run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (  # (report type, range preset)
    ("weekly", "90 days"),
    ("daily", "90 days"),
    ("daily", "1 year"),
    ("weekly", "All"),
    ("daily", "All"),
)


def fill_database(url: str, accounts: int, days: int, weeks: int) -> tuple[int, float]:
    from bench.report_data import fill
    from lib.db import init_db, make_engine
    from lib.timeutil import utcnow

    engine = make_engine(url)
    init_db(engine)
    t = time.perf_counter()
    n = fill(engine, accounts=accounts, days=days, weeks=weeks, now=utcnow())
    engine.dispose()
    return n, time.perf_counter() - t


def time_loader(url: str, report_type: str, preset: str, repeat: int) -> float:
    from lib import analytics as an
    from lib.db import make_engine
    from lib.timeutil import utcnow
    from lib.ui.metrics import RANGE_PRESETS

    engine = make_engine(url)
    today = utcnow().date()
    days = RANGE_PRESETS[preset]
    first = None if days is None else today - timedelta(days=days - 1)
    start, end = an.day_bounds(first or today, today)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        with engine.connect() as conn:
            reports = an.load_reports(conn, report_type=report_type, start=None if first is None else start, end=end)
        an.reports_frame(reports)
        an.summarize_problems(reports)
        times.append(time.perf_counter() - t)
    engine.dispose()
    return statistics.median(times)


def time_page(url: str, report_type: str, preset: str, repeat: int) -> tuple[float, float, int]:
    """(cold median s, warm median s, reports shown) of the page's run through AppTest."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["DATABASE_URL"] = url
    cold, warm = [], []
    shown = 0
    for _ in range(repeat):
        st.cache_data.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()  # the overview/default page: schema check, accounts, engine are warm after this
        at.switch_page(str(ROOT / "pages" / "metrics.py"))
        at.session_state["metrics_type"] = report_type
        at.session_state["metrics_range"] = preset
        t = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - t)
        assert not at.exception, [e.value for e in at.exception]
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
        caption = next((c.value for c in at.caption if " reports · " in c.value), "")
        shown = int(caption.split(" ")[0].replace(",", "")) if caption else 0
    return statistics.median(cold), statistics.median(warm), shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--weeks", type=int, default=104)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file for a look in the browser")
    args = parser.parse_args()

    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / "metrics-bench.sqlite"
    for p in results.glob("metrics-bench.sqlite*"):
        p.unlink()
    targets = [("SQLite", f"sqlite:///{path}")]
    pg = None
    if not args.sqlite_only:
        from tests.support.pg import ThrowawayPostgres

        pg = ThrowawayPostgres()
        pg.start()
        targets.append(("PostgreSQL", pg.create_database("metrics_bench")))
    try:
        for name, url in targets:
            n, secs = fill_database(url, args.accounts, args.days, args.weeks)
            print(f"{name}: inserted {n:,} reports ({args.accounts} accounts x {args.days} daily + {args.weeks} weekly) "
                  f"in {secs:.1f} s")
        print()
        print(f"{'database':<11} {'type':<7} {'range':<9} {'reports':>8} {'loader':>8} {'page cold':>10} {'page warm':>10}")
        for name, url in targets:
            for report_type, preset in SCENARIOS:
                loader = time_loader(url, report_type, preset, args.repeat)
                cold, warm, shown = time_page(url, report_type, preset, args.repeat)
                print(f"{name:<11} {report_type:<7} {preset:<9} {shown:>8,} {loader:>7.2f}s {cold:>9.2f}s {warm:>9.2f}s",
                      flush=True)
    finally:
        if pg is not None:
            pg.cleanup()
        if not args.keep:
            for p in results.glob("metrics-bench.sqlite*"):
                p.unlink()


if __name__ == "__main__":
    main()
