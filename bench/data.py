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

from lib.core.db import init_db, make_engine
from lib.core.timeutil import iso, utcnow
from sandbox.seed import seed_scale
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
    """A reused database gets the indexes the code added since it was built (init_db creates what is missing),
    fresh planner statistics (ANALYZE: the plan check must not depend on when statistics were last taken) and
    the worker's sent rollup brought up to date (prepare_steady_state)."""
    engine = make_engine(url)
    try:
        init_db(engine)
        prepare_steady_state(engine)
    finally:
        engine.dispose()


def init_db_only(url: str) -> None:
    engine = make_engine(url)
    try:
        init_db(engine)
    finally:
        engine.dispose()


def prepare_steady_state(engine) -> None:
    """What a running worker and autovacuum keep true: the sent rollup refreshed (as the worker does at most
    every 5 minutes), then VACUUM ANALYZE on PostgreSQL, so the run's plans see the statistics of the data
    as it is now and the visibility map lets the index-only counts skip the heap (autovacuum's job; cheap
    when nothing changed: VACUUM skips all-visible pages). SQLite: ANALYZE."""
    from lib.queue.store import refresh_sent_rollup

    with engine.begin() as conn:
        refresh_sent_rollup(conn, now=utcnow(), force=True)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))


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
        prepare_steady_state(engine)
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


# --------------------------------------------------------------------------- the --history volume
# A year of traffic on top of the --scale volume (which covers the last 90 days at its own rate): the
# extra rows lie in [now - 365 d, now - 7 d], so the last week carries the same traffic as the scale
# volume and what differs between the two is history only. Built in SQL on the server (generate_series)
# from a copy of database `bench`, in the same PostgreSQL data directory (data/bench/pg-scale/).
#
# What a year leaves behind in post_queue (docs/bench.md, "The history volume"): the history rows are all
# `sent` -- 95 % at the first attempt, `retried_share` after 1-3 retries (retry_count kept, error cleared,
# as lib.queue.store.record_sent leaves a row). The year's other outcomes leave no row: a discarded failure is
# deleted (lib.queue.store.discard; its audit row stays), a retried one ends up sent. The active backlog
# (pending, processing, failed, dlq) is the base volume's, so "history" means history; what a large
# unhandled dead-letter backlog costs is measured on its own (bench/growth.py, dlq_backlog).
HISTORY = dict(queue_rows=5_000_000, audit_rows=5_000_000, heartbeats=4_000_000, days=365, recent_days=7,
               retried_share=0.05)
HISTORY_1M = dict(HISTORY, queue_rows=1_000_000, audit_rows=1_000_000, heartbeats=1_000_000)
HISTORY_CHUNK = 500_000

_QUEUE_SQL = """
WITH acc AS (SELECT array_agg(id ORDER BY id) AS ids FROM instagram_business_accounts)
INSERT INTO post_queue (id, business_account_id, action_type, payload, idempotency_key, status, retry_count, error,
                        error_category, instagram_id, next_retry_at, created_at, updated_at)
SELECT gen_random_uuid(), acc.ids[1 + g % cardinality(acc.ids)],
       (ARRAY['reply_comment','reply_dm','send_dm','publish_post','repost_ugc'])[1 + g % 5],
       jsonb_build_object('message', 'history row ' || g), 'history-' || g,
       'sent', CASE WHEN g % :retried_every = 0 THEN 1 + (g / :retried_every) % 3 ELSE 0 END,
       NULL, NULL, (17900000000000000 + g)::text, NULL,
       t - CASE WHEN g % :retried_every = 0 THEN interval '40 minutes' ELSE interval '3 minutes' END, t
FROM acc, generate_series(:lo, :hi) AS g,
     LATERAL (SELECT CAST(:end_at AS timestamptz) - (g::float8 / :n) * CAST(:span AS interval) AS t) AS tt
"""

_AUDIT_SQL = """
WITH acc AS (SELECT array_agg(id ORDER BY id) AS ids FROM instagram_business_accounts)
INSERT INTO audit_log (id, event_type, action, resource_type, resource_id, user_id, success, error_message, details,
                       ip_address, user_agent, created_at)
SELECT gen_random_uuid(), (ARRAY['post_published','comment_replied','dm_sent','ugc_reposted','post_failed_permanent'])[1 + g % 5],
       (ARRAY['publish','reply','send','repost','publish'])[1 + g % 5],
       (ARRAY['instagram_post','instagram_comment','instagram_dm','ugc_content','post_queue'])[1 + g % 5],
       'hist-' || g, NULL, g % 5 <> 4,
       CASE WHEN g % 5 = 4 THEN '(#100) Invalid parameter' END,
       jsonb_build_object('business_account_id', acc.ids[1 + g % cardinality(acc.ids)]::text, 'queue_id', 'hist-' || g,
                          'note', 'history event ' || g),
       NULL, NULL, CAST(:end_at AS timestamptz) - (g::float8 / :n) * CAST(:span AS interval)
FROM acc, generate_series(:lo, :hi) AS g
"""

_BEATS_SQL = """
WITH agents AS (SELECT array_agg(DISTINCT agent_id ORDER BY agent_id) AS ids FROM agent_heartbeats)
INSERT INTO agent_heartbeats (id, agent_id, status, last_beat_at, created_at, updated_at)
SELECT gen_random_uuid(), agents.ids[1 + g % cardinality(agents.ids)], 'alive', t, t, t
FROM agents, generate_series(:lo, :hi) AS g,
     LATERAL (SELECT CAST(:end_at AS timestamptz) - (g::float8 / :n) * CAST(:span AS interval) AS t) AS tt
"""


def _extend(url: str, base_counts: dict, spec: dict, seeded_at: str, log) -> dict:
    """Add the rows that take the --scale volume to `spec`'s totals, then VACUUM ANALYZE."""
    from datetime import datetime, timedelta

    end_at = datetime.fromisoformat(seeded_at.replace("Z", "+00:00")) - timedelta(days=spec["recent_days"])
    span = f"{spec['days'] - spec['recent_days']} days"
    from lib.core.db import TRIGRAM_INDEXES

    engine = make_engine(url)
    added = {}
    try:
        from lib.core.schema import agent_heartbeats, audit_log, post_queue

        with engine.begin() as conn:  # indexes build much faster at once than row by row: init_db remakes them
            for index in TRIGRAM_INDEXES:
                conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
            for table in (post_queue, audit_log, agent_heartbeats):  # the plain ones; keys and unique stay
                for index in table.indexes:
                    if not index.unique:
                        conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index.name}"'))
            dbname = sa.engine.make_url(url).database
            conn.execute(sa.text(f'ALTER DATABASE "{dbname}" SET maintenance_work_mem = \'512MB\''))
        for table, sql, total, key in (("post_queue", _QUEUE_SQL, spec["queue_rows"], "post_queue"),
                                       ("audit_log", _AUDIT_SQL, spec["audit_rows"], "audit_log"),
                                       ("agent_heartbeats", _BEATS_SQL, spec["heartbeats"], "agent_heartbeats")):
            n = max(0, total - int(base_counts.get(key, 0)))
            t = time.perf_counter()
            for lo in range(1, n + 1, HISTORY_CHUNK):
                with engine.begin() as conn:
                    conn.execute(sa.text(sql), {"lo": lo, "hi": min(n, lo + HISTORY_CHUNK - 1), "n": n,
                                                "end_at": end_at, "span": span,
                                                "retried_every": round(1 / spec["retried_share"])})
            added[table] = n
            log(f"  {table}: +{n:,} rows in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
        log(f"  VACUUM ANALYZE in {time.perf_counter() - t:.0f} s")
    finally:
        engine.dispose()
    return added


def ensure_history(server: BenchPostgres, base_info: dict, *, name: str = "history", spec: dict = HISTORY,
                   rebuild: bool, log=print) -> tuple[str, dict]:
    """Database `name` on the --scale server: a copy of `bench` extended to `spec` (built once, reused)."""
    marker = DATA / f"pg-scale-{name}.json"
    info = None if rebuild else _marker_ok(marker, spec)
    if info is not None and info.get("base_seeded_at") != base_info["seeded_at"]:
        info = None  # the base volume was rebuilt since
    if info is None or not server.database_exists(name):
        log(f"building PostgreSQL database {name} (history volume) from bench ...")
        marker.unlink(missing_ok=True)
        server.drop_database(name)
        import psycopg2

        t0 = time.perf_counter()
        conn = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE bench')
        conn.close()
        url = server.url_for(name)
        init_db_only(url)
        added = _extend(url, base_info["counts"], spec, base_info["seeded_at"], log)
        engine = make_engine(url)
        try:  # the copy's rollup predates the history rows (old updated_at): start it again, as on a new database
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM post_queue_rollup_state"))
                conn.execute(sa.text("DELETE FROM post_queue_sent_daily"))
                conn.execute(sa.text("DELETE FROM post_queue_sent_totals"))
        finally:
            engine.dispose()
        _apply_schema(url)  # the dropped indexes again, the rollup's first refresh (all history once), VACUUM ANALYZE
        seconds = round(time.perf_counter() - t0, 1)
        log(f"  history volume {name} built in {seconds} s")
        info = {"volumes": spec, "added": added, "base_seeded_at": base_info["seeded_at"],
                "seeded_at": base_info["seeded_at"], "seed_seconds": seconds}
        marker.write_text(json.dumps(info, indent=2))
    else:
        log(f"reusing PostgreSQL database {name} (built on the base of {info['base_seeded_at']})")
        _apply_schema(server.url_for(name))
    return server.url_for(name), info
