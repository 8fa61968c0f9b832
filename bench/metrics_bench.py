"""Metrics page render time for 10 accounts x 2 years of reports, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.metrics_bench [--accounts 10] [--days 730] [--weeks 104] [--repeat 3]
                                            [--sqlite-only] [--keep]

Fills a SQLite file (bench/results/) and a throwaway PostgreSQL (Debian's binaries, as in the
tests) with the demo seed's reports at scale (sandbox.seed.seed_scale, other tables kept
small; --data synthetic: bench/report_data.py), then renders pages/metrics.py through
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


def fill_database(url: str, accounts: int, days: int, weeks: int, data: str) -> tuple[int, float]:
    """The demo seed's report generator at scale (other tables kept small), or bench/report_data.py."""
    from lib.core.db import init_db, make_engine
    from lib.core.timeutil import utcnow

    engine = make_engine(url)
    init_db(engine)
    t = time.perf_counter()
    if data == "seed":
        from sandbox.seed import seed_scale

        counts = seed_scale(engine, now=utcnow(), accounts=accounts, report_days=days, report_weeks=weeks,
                            audit_rows=2_000, queue_rows=2_000, dlq_rows=20, heartbeats=200, alerts=100,
                            chat_sessions=10)
        n = counts["analytics_reports"]
    else:
        from bench.report_data import fill

        n = fill(engine, accounts=accounts, days=days, weeks=weeks, now=utcnow())
    engine.dispose()
    return n, time.perf_counter() - t


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _median(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def time_loader(url: str, report_type: str, preset: str, repeat: int) -> tuple[float, float]:
    """(wall, cpu) median of the page's loader alone: query + validation + flattening."""
    from lib.analytics import reports as an
    from lib.core.db import make_engine
    from lib.core.timeutil import utcnow
    from lib.ui.metrics import RANGE_PRESETS

    engine = make_engine(url)
    today = utcnow().date()
    days = RANGE_PRESETS[preset]
    first = None if days is None else today - timedelta(days=days - 1)
    start, end = an.day_bounds(first or today, today)
    times = []
    for _ in range(repeat):
        t = _clock()
        with engine.connect() as conn:
            reports = an.load_reports(conn, report_type=report_type, start=None if first is None else start, end=end,
                                      full=False)
        an.reports_frame(reports, lists=False)
        an.summarize_problems(reports)
        times.append(_since(t))
    engine.dispose()
    return _median(times)


def time_page(url: str, report_type: str, preset: str, repeat: int):
    """((wall, cpu) cold, (wall, cpu) warm, reports shown) of the page's run through AppTest.

    CPU is this process's CPU time (the script runs in a thread of it): on a shared machine it is
    the steadier number; the database server's own CPU (PostgreSQL) is not in it."""
    import streamlit as st
    from streamlit.logger import set_log_level
    from streamlit.testing.v1 import AppTest

    set_log_level("error")

    os.environ["DATABASE_URL"] = url
    cold, warm = [], []
    shown = 0
    for _ in range(repeat):
        st.cache_data.clear()
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()  # the default page: schema check, accounts, engine are warm after this
        at.switch_page(str(ROOT / "pages" / "metrics.py"))
        at.session_state["metrics_type"] = report_type
        at.session_state["metrics_range"] = preset
        t = _clock()
        at.run()
        cold.append(_since(t))
        assert not at.exception, [e.value for e in at.exception]
        t = _clock()
        at.run()
        warm.append(_since(t))
        caption = next((c.value for c in at.caption if " reports · " in c.value), "")
        shown = int(caption.split(" ")[0].replace(",", "")) if caption else 0
    return _median(cold), _median(warm), shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--weeks", type=int, default=104)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--data", choices=("seed", "synthetic"), default="seed",
                        help="reports from sandbox.seed (default) or bench/report_data.py")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file for a look in the browser")
    args = parser.parse_args()
    from streamlit.logger import set_log_level

    set_log_level("error")  # AppTest's bare-mode warnings would flood the table

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
            n, secs = fill_database(url, args.accounts, args.days, args.weeks, args.data)
            print(f"{name}: inserted {n:,} reports ({args.accounts} accounts x {args.days} daily + {args.weeks} weekly) "
                  f"in {secs:.1f} s")
        print()
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
              f"medians of {args.repeat}, seconds as wall / process CPU")
        print(f"{'database':<11} {'type':<7} {'range':<8} {'reports':>8} {'loader':>13} {'page cold':>13} {'page warm':>13}")
        for name, url in targets:
            for report_type, preset in SCENARIOS:
                loader = time_loader(url, report_type, preset, args.repeat)
                cold, warm, shown = time_page(url, report_type, preset, args.repeat)
                cells = " ".join(f"{w:>6.2f}/{c:<5.2f}" for w, c in (loader, cold, warm))
                print(f"{name:<11} {report_type:<7} {preset:<8} {shown:>8,} {cells}", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        if pg is not None:
            pg.cleanup()
        if not args.keep:
            for p in results.glob("metrics-bench.sqlite*"):
                p.unlink()


if __name__ == "__main__":
    main()
