"""Benchmark: peak memory of four 1,000,000-row audit exports started together.

    .venv/bin/python -m bench.export_memory [--rows N] [--fmt csv|xlsx|parquet] [--sqlite-path PATH]
                                            [--reuse] [--unlimited]

Seeds a SQLite file with N audit_log rows (sandbox.seed.seed_scale, other tables small), then
starts four threads at once, each building the Activity Feed's export exactly as its button does
(lib.core.audit.export_chunks on its own connection, lib.core.export.build_export with the feed's 1,000,000
row cap). A sampler reads the process's resident memory (VmRSS) every 20 ms. Printed: the resident
memory before, the peak during, the peak above the baseline, and per export its rows, bytes, whether
it was cut, and whether it was refused for want of a turn.

--unlimited measures what the app did before exports took turns and had a byte cap: all four at
once, no byte cap (the same writers otherwise). Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lib.core.export as ex  # noqa: E402
from lib.core.audit import EXPORT_CAP, EXPORT_COLUMNS, AuditFilter, export_chunks  # noqa: E402
from lib.core.db import init_db, make_engine  # noqa: E402
from lib.core.timeutil import utcnow  # noqa: E402
from sandbox.seed import seed_scale  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def seed(url: str, rows: int) -> None:
    engine = make_engine(url)
    init_db(engine)
    t0 = time.perf_counter()
    seed_scale(engine, now=utcnow(), audit_rows=rows, alerts=100, queue_rows=1_000, dlq_rows=50, heartbeats=100,
               report_days=7, report_weeks=2, chat_sessions=2, accounts=3)
    engine.dispose()
    print(f"seeded {rows:,} audit rows in {time.perf_counter() - t0:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fmt", choices=list(ex.FORMATS), default="csv")
    parser.add_argument("--sqlite-path", default="/tmp/export-bench.sqlite")
    parser.add_argument("--reuse", action="store_true", help="the SQLite file already holds the rows")
    parser.add_argument("--unlimited", action="store_true", help="as before: four at once, no byte cap")
    parser.add_argument("--exports", type=int, default=4)
    args = parser.parse_args()
    url = f"sqlite:///{args.sqlite_path}"
    if not args.reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(args.sqlite_path + suffix).unlink(missing_ok=True)
        seed(url, args.rows)
    if args.unlimited:
        ex._slots = threading.BoundedSemaphore(args.exports)
    max_bytes = None if args.unlimited else ex.EXPORT_MAX_BYTES
    engine = make_engine(url)
    with engine.connect() as conn:  # open the pool and warm the imports outside the measurement
        next(iter(export_chunks(conn, filters=AuditFilter(), cap=10)), None)
    import gc
    gc.collect()
    baseline = rss_mb()
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.02)

    results: list[str] = []
    go = threading.Barrier(args.exports)

    def one(i: int) -> None:
        go.wait()
        t0 = time.perf_counter()
        try:
            with engine.connect() as conn:
                data, rows, cut = ex.build_export(args.fmt, EXPORT_COLUMNS,
                                                  export_chunks(conn, filters=AuditFilter(), cap=EXPORT_CAP),
                                                  cap=EXPORT_CAP, max_bytes=max_bytes)
            results.append(f"export {i}: {rows:,} rows, {len(data) / 2**20:.1f} MB, cut: {cut}, "
                          f"{time.perf_counter() - t0:.1f} s")
            del data
        except ex.ExportBusy as exc:
            results.append(f"export {i}: refused after {time.perf_counter() - t0:.1f} s ({exc})")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.exports)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sampler.join()
    mode = "unlimited (as before)" if args.unlimited else (f"turns: {ex.MAX_CONCURRENT_EXPORTS}, byte cap "
                                                          f"{ex.EXPORT_MAX_BYTES / 2**20:.0f} MB, wait {ex.EXPORT_WAIT_S:.0f} s")
    print(f"{args.exports} {args.fmt} exports of {args.rows:,} audit rows started together ({mode}), "
          f"{time.perf_counter() - t0:.1f} s in all")
    for line in sorted(results):
        print("  " + line)
    print(f"resident memory: {baseline:.0f} MB before, peak {peak[0]:.0f} MB, +{peak[0] - baseline:.0f} MB")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
