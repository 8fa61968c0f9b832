"""The benchmark's databases: the --scale volumes built once and reused.

SQLite: data/bench/<name>.sqlite. PostgreSQL: a data directory data/bench/pg-<name>/ (initdb as the
postgres user, like tests/support/pg.py), started on a free port for the run and stopped at the end.
A small JSON marker beside each records the volumes and the time the data was built; a database whose
marker is missing or has other volumes is rebuilt (as is everything with --rebuild).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import sqlalchemy as sa

from lib.db import init_db, make_engine
from lib.sandbox.seed import seed_scale
from lib.timeutil import iso, utcnow
from tests.support.pg import ThrowawayPostgres, free_port, pg_bindir

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "bench"

FULL = dict(audit_rows=1_000_000, audit_days=90, queue_rows=200_000, dlq_rows=5_000, accounts=10, report_days=730,
            report_weeks=104, heartbeats=100_000, alerts=20_000, chat_sessions=2_000)
SMALL = dict(audit_rows=20_000, audit_days=90, queue_rows=6_000, dlq_rows=1_200, accounts=10, report_days=60,
             report_weeks=10, heartbeats=2_000, alerts=500, chat_sessions=50)


class BenchPostgres(ThrowawayPostgres):
    """A PostgreSQL whose data directory persists under data/bench/ (the throwaway server's code,
    another folder): initdb when missing, start on a free port, stop (not remove) at the end."""

    def __init__(self, folder: Path) -> None:  # not super().__init__: that one runs initdb under /tmp
        self.bindir = pg_bindir()
        self.port = free_port()
        self.dir = folder
        self.data = folder / "data"
        self.as_root = os.geteuid() == 0
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        if not self.is_running():  # a run killed earlier may have left its pid file behind
            (self.data / "postmaster.pid").unlink(missing_ok=True)
        super().start()

    def drop_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    def database_exists(self, name: str) -> bool:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            found = cur.fetchone() is not None
        conn.close()
        return found


def _apply_schema(url: str) -> None:
    """A reused database gets the indexes the code added since it was built (init_db creates what is missing)."""
    engine = make_engine(url)
    try:
        init_db(engine)
    finally:
        engine.dispose()


def _marker_ok(marker: Path, volumes: dict) -> dict | None:
    if not marker.exists():
        return None
    try:
        info = json.loads(marker.read_text())
    except ValueError:
        return None
    return info if info.get("volumes") == volumes else None


def _seed(url: str, volumes: dict, log) -> dict:
    engine = make_engine(url)
    try:
        init_db(engine)
        t0 = time.perf_counter()
        now = utcnow()
        counts = seed_scale(engine, now=now, **volumes)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
        else:
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        seconds = round(time.perf_counter() - t0, 1)
    finally:
        engine.dispose()
    log(f"  seeded {engine.dialect.name} in {seconds} s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return {"volumes": volumes, "counts": counts, "seeded_at": iso(now), "seed_seconds": seconds}


def ensure_sqlite(name: str, volumes: dict, *, rebuild: bool, log=print) -> tuple[str, dict]:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"{name}.sqlite"
    marker = DATA / f"{name}.sqlite.json"
    info = None if rebuild else _marker_ok(marker, volumes)
    url = f"sqlite:///{path}"
    if info is None or not path.exists():
        log(f"building SQLite {path.relative_to(ROOT)} ...")
        marker.unlink(missing_ok=True)
        for p in DATA.glob(f"{name}.sqlite*"):
            p.unlink()
        info = _seed(url, volumes, log)
        marker.write_text(json.dumps(info, indent=2))
    else:
        log(f"reusing SQLite {path.relative_to(ROOT)} (built {info['seeded_at']})")
        _apply_schema(url)
    return url, info


def ensure_postgres(name: str, volumes: dict, *, rebuild: bool, log=print) -> tuple[BenchPostgres, str, dict]:
    """Start the persistent server (the caller stops it) and make sure database `bench` holds the volumes."""
    folder = DATA / f"pg-{name}"
    marker = DATA / f"pg-{name}.json"
    server = BenchPostgres(folder)
    server.start()
    info = None if rebuild else _marker_ok(marker, volumes)
    if info is None or not server.database_exists("bench"):
        log(f"building PostgreSQL {folder.relative_to(ROOT)} ...")
        marker.unlink(missing_ok=True)
        server.drop_database("bench")
        url = server.create_database("bench")
        info = _seed(url, volumes, log)
        marker.write_text(json.dumps(info, indent=2))
    else:
        log(f"reusing PostgreSQL {folder.relative_to(ROOT)} (built {info['seeded_at']})")
        _apply_schema(server.url_for("bench"))
    return server, server.url_for("bench"), info
