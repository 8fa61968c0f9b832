"""The analysts' targets (issue: Parquet and Excel exports, Posts, anomaly flags), at the bench volumes
(10 accounts x 2 years of reports, 200,000 queue rows, 1,000,000 audit rows).

    .venv/bin/python -m bench.analysts_bench [--only sqlite|postgresql] [--small] [--runs 3]

Per database, in a child process that plays the app process (its peak RSS is the app's):
* Metrics default view cold and warm (AppTest, st.cache_data emptied) and the Posts view (/posts);
* exports of 100,000 audit rows (Activity Feed, no filter) as Parquet and as Excel, from the
  server-side cursor, with the file sizes; the CSV beside them for comparison;
* the anomaly flags of one year of daily reports of every account (lib.analytics.anomalies.load_flags).
Targets: Metrics and Posts cold <= 1.0 s, Parquet <= 1 s, Excel <= 15 s, app peak RSS <= 500 MB.
`python -m bench` runs this too (bench/run.py) and adds its table to bench/results/latest.md.
Writes bench/results/analysts.json and .md (--small: analysts-small.*). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGES = {"metrics": "pages/metrics.py", "posts": "pages/posts.py"}
TARGETS = {"page_cold_s": 1.0, "parquet_s": 1.0, "xlsx_s": 15.0, "rss_mb": 500}


def measure_exports(engine, rows: int = 100_000, repeats: int = 3) -> dict:
    from lib.core import audit
    from lib.core.export import build_export

    # wall time and this process's CPU time (all threads): on a machine shared with other work the
    # CPU time is the steadier figure; a database server's own time is in the wall time only.
    # Each format: the first export in the process (it also loads the writer's library and may find
    # the rows on disk, not in memory) apart, then the median of `repeats` more: what a user waits
    # for on an app that has run an export before.
    out = {"rows": rows, "repeats": repeats}
    with engine.connect() as conn:  # the read alone (server-side cursor, redaction): what every format pays
        t, c = time.perf_counter(), time.process_time()
        for _ in audit.export_chunks(conn, filters=audit.AuditFilter(), cap=rows):
            pass
        out["read_s"] = round(time.perf_counter() - t, 3)
        out["read_cpu_s"] = round(time.process_time() - c, 3)
    for fmt in ("parquet", "xlsx", "csv"):
        walls, cpus = [], []
        for _ in range(1 + repeats):
            with engine.connect() as conn:
                t, c = time.perf_counter(), time.process_time()
                data, written, _ = build_export(fmt, audit.EXPORT_COLUMNS,
                                                audit.export_chunks(conn, filters=audit.AuditFilter(), cap=rows),
                                                cap=rows)
                walls.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
            out[f"{fmt}_bytes"] = len(data)
            out["written"] = written
            del data
        out[f"{fmt}_first_s"] = round(walls[0], 3)
        out[f"{fmt}_s"] = round(statistics.median(walls[1:]), 3)
        out[f"{fmt}_cpu_s"] = round(statistics.median(cpus[1:]), 3)
    return out


def measure_flags(engine) -> dict:
    from lib.analytics.anomalies import load_flags
    from lib.core.timeutil import utcnow

    last = utcnow().date()
    with engine.connect() as conn:
        t = time.perf_counter()
        flags = load_flags(conn, account_ids=None, first=last - timedelta(days=364), last=last, threshold=3.5)
    return {"seconds": round(time.perf_counter() - t, 3), "flags": int(len(flags))}


def probe_main(url: str, runs: int, out: str) -> None:
    from streamlit.logger import set_log_level

    from bench import app_probe
    from lib.core.db import make_engine

    set_log_level("error")
    os.environ["DATABASE_URL"] = url
    app_probe.PAGES.update(PAGES)  # this process only: the registry of pages to time
    log = app_probe.QueryLog()
    import sqlalchemy as sa
    from sqlalchemy import event

    event.listen(sa.engine.Engine, "before_cursor_execute", log)
    result = {"pages": app_probe.run_pages(list(PAGES), runs, log), "rss_pages_mb": app_probe.rss_mb()}
    engine = make_engine(url)
    try:
        result["exports"] = measure_exports(engine)
        result["rss_peak_mb"] = app_probe.rss_mb()
        result["flags"] = measure_flags(engine)
    finally:
        engine.dispose()
    Path(out).write_text(json.dumps(result, indent=2, default=str))


def run_for(kind: str, url: str, runs: int = 3) -> dict:
    """Called by bench/run.py per database: the child-process probe; returns its result."""
    from bench.data import DATA

    out = DATA / f"analysts-{kind}.json"
    err = DATA / f"analysts-{kind}.log"
    with open(err, "w") as fh:
        code = subprocess.call([sys.executable, "-m", "bench.analysts_bench", "--probe", "--url", url, "--runs",
                                str(runs), "--out", str(out)], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"the analysts probe failed on {kind} (exit {code}); see {err}")
    return json.loads(out.read_text())


def markdown(results: dict, load: tuple[float, float]) -> str:
    kinds = [k for k in ("postgresql", "sqlite") if k in results]
    lines = [f"Load average before/after: {load[0]:.1f} / {load[1]:.1f} (2 cores).", "",
             "| target |" + "".join(f" {k} |" for k in kinds), "|---|" + "---:|" * len(kinds)]

    def row(label, fn):
        cells = []
        for k in kinds:
            try:
                cells.append(fn(results[k]))
            except (KeyError, TypeError):
                cells.append("–")
        lines.append(f"| {label} |" + "".join(f" {c} |" for c in cells))

    def mark(value, target):
        return "" if value <= target else " ✗"

    for page, label in (("metrics", "Metrics default view"), ("posts", "Posts view")):
        row(f"{label} cold (≤ 1.0 s) / warm", lambda d, p=page: f"{d['pages'][p]['cold_s']:.2f} s"
            f"{mark(d['pages'][p]['cold_s'], TARGETS['page_cold_s'])} / {d['pages'][p]['warm_s']:.2f} s")
    def cpu(d, key):
        value = d["exports"].get(f"{key}_cpu_s")
        return "" if value is None else f", CPU {value:.2f} s"

    def first(d, key):
        value = d["exports"].get(f"{key}_first_s")
        return "" if value is None else f"; first in the process {value:.2f} s"

    row("Parquet export, 100,000 audit rows (≤ 1 s), median of the repeats", lambda d: f"{d['exports']['parquet_s']:.2f} s"
        f"{mark(d['exports']['parquet_s'], TARGETS['parquet_s'])} ({d['exports']['parquet_bytes'] / 1e6:.1f} MB"
        f"{cpu(d, 'parquet')}{first(d, 'parquet')})")
    row("Excel export, 100,000 audit rows (≤ 15 s), median of the repeats", lambda d: f"{d['exports']['xlsx_s']:.2f} s"
        f"{mark(d['exports']['xlsx_s'], TARGETS['xlsx_s'])} ({d['exports']['xlsx_bytes'] / 1e6:.1f} MB{cpu(d, 'xlsx')}"
        f"{first(d, 'xlsx')})")
    row("reading the rows alone, first time in the process (server-side cursor + redaction)",
        lambda d: f"{d['exports']['read_s']:.2f} s" + (f" (CPU {d['exports']['read_cpu_s']:.2f} s)"
                                                       if "read_cpu_s" in d["exports"] else ""))
    row("CSV export, same rows (for comparison), median of the repeats", lambda d: f"{d['exports']['csv_s']:.2f} s "
        f"({d['exports']['csv_bytes'] / 1e6:.1f} MB{cpu(d, 'csv')}{first(d, 'csv')})")
    row("app peak RSS incl. the exports (≤ 500 MB)", lambda d: f"{d['rss_peak_mb']:.0f} MB"
        f"{mark(d['rss_peak_mb'], TARGETS['rss_mb'])}")
    row("anomaly flags, 1 year of daily reports, all accounts", lambda d: f"{d['flags']['seconds']:.2f} s "
        f"({d['flags']['flags']:,} flags)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.analysts_bench")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url")
    ap.add_argument("--out")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("sqlite", "postgresql"))
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)
    if args.probe:
        probe_main(args.url, args.runs, args.out)
        return 0

    from bench.data import FULL, SMALL, ensure_postgres, ensure_sqlite

    volumes, name = (SMALL, "small") if args.small else (FULL, "scale")
    load0 = os.getloadavg()[0]
    results = {}
    if args.only in (None, "sqlite"):
        url, _ = ensure_sqlite(name, volumes, rebuild=args.rebuild)
        results["sqlite"] = run_for("sqlite", url, args.runs)
        print(json.dumps(results["sqlite"]["exports"]), flush=True)
    if args.only in (None, "postgresql"):
        server, url, _ = ensure_postgres(name, volumes, rebuild=args.rebuild)
        try:
            results["postgresql"] = run_for("postgresql", url, args.runs)
        finally:
            server.stop()
    load1 = os.getloadavg()[0]
    md = markdown(results, (load0, load1))
    stem = "analysts-small" if args.small else "analysts"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"load": [load0, load1], "results": results}, indent=2, default=str))
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
