"""Initialisation run by many processes at once (app replicas, workers, `python -m lib.db`) on an
empty or a partly initialised database: every one ends without an error, with the same schema, and
each missing table or index is created exactly once (lib.core.db.init_db's transaction-level lock)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from lib.core.db import QUEUE_TRIGRAM_INDEX, TRIGRAM_INDEXES, index_names, init_db, make_engine
from lib.core.schema import metadata
from tests.support.servers import ROOT

pytestmark = pytest.mark.pooler

THREADS = 8
ROUNDS = int(os.environ.get("CONCURRENT_START_ROUNDS",
                            "1"))  # fresh databases per run; 20 for the acceptance loop (docs/deploy.md)


def schema_of(url: str) -> dict[str, set[str]]:
    """{table: {index names}} of our tables as the database has them."""
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            have = set(sa.inspect(conn).get_table_names())
            return {t.name: index_names(conn, t.name) for t in metadata.sorted_tables if t.name in have}
    finally:
        eng.dispose()


EXPECTED = {t.name: {i.name for i in t.indexes} for t in metadata.sorted_tables}


def _race(url: str, n: int = THREADS):
    """n threads, each with its own engine (own connections), call init_db at the same moment."""
    barrier = threading.Barrier(n)
    reports, errors = [], []

    def one():
        eng = make_engine(url)
        try:
            barrier.wait(30)
            reports.append(init_db(eng))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(exc))
        finally:
            eng.dispose()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return reports, errors


def _assert_complete(url: str) -> None:
    have = schema_of(url)
    assert set(have) == set(EXPECTED)
    for table, indexes in EXPECTED.items():
        assert indexes <= have[table], (table, indexes - have[table])


@pytest.mark.own_schema("starts from an empty database")
def test_concurrent_init_on_an_empty_database(db_url):
    reports, errors = _race(db_url)
    assert errors == []
    assert len(reports) == THREADS
    created = Counter(t for r in reports for t in r.created_tables)
    # every table created once, by whichever init held the lock first; the others found it there
    assert created == Counter({t.name: 1 for t in metadata.sorted_tables})
    assert all(r.missing_columns == {} for r in reports)
    _assert_complete(db_url)


@pytest.mark.own_schema("starts from a partly initialised database")
def test_concurrent_init_on_a_partly_initialised_database(db_url):
    tables = metadata.sorted_tables
    first_half = tables[: len(tables) // 2]
    eng = make_engine(db_url)
    metadata.create_all(eng, tables=first_half)
    dropped = []
    with eng.begin() as conn:  # an earlier version, or someone's DDL, without some of our indexes
        for table in first_half:
            for index in list(table.indexes)[:1]:
                index.drop(conn)
                dropped.append(index.name)
    eng.dispose()
    assert dropped

    reports, errors = _race(db_url)
    assert errors == []
    created_tables = Counter(t for r in reports for t in r.created_tables)
    created_indexes = Counter(i for r in reports for i in r.created_indexes)
    assert created_tables == Counter({t.name: 1 for t in tables[len(tables) // 2:]})
    # the trigram indexes of the feed and queue searches (PostgreSQL with pg_trgm) are made once, by the first init
    trigram = Counter({n: c for n, c in created_indexes.items() if n in (*TRIGRAM_INDEXES, QUEUE_TRIGRAM_INDEX)})
    assert all(c == 1 for c in trigram.values())
    assert created_indexes - trigram == Counter({name: 1 for name in dropped})
    _assert_complete(db_url)


def _start_all(url: str, log_dir) -> list[tuple[str, subprocess.Popen, object]]:
    """4 workers (one tick each) and 2 `python -m lib.db`, all started before any is waited for."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           # nothing is queued: the tick makes no Graph call; a closed port makes any call fail loudly
           "INSTAGRAM_GRAPH_URL": "http://127.0.0.1:9/v26.0"}
    commands = [("worker", [sys.executable, "-m", "worker", "--once"])] * 4 + \
               [("lib.db", [sys.executable, "-m", "lib.db"])] * 2
    started = []
    for i, (name, cmd) in enumerate(commands):
        log = open(log_dir / f"{name}-{i}.log", "w+")
        started.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    return started


@pytest.mark.slow
def test_workers_and_lib_db_started_together_on_fresh_postgresql(pg_server, tmp_path):
    """What a deployment that starts every replica at once does, ROUNDS times on a fresh database."""
    for round_no in range(ROUNDS):
        url = pg_server.create_database("ci_" + uuid.uuid4().hex[:12])
        log_dir = tmp_path / f"round{round_no}"
        log_dir.mkdir()
        procs = _start_all(url, log_dir)
        outcomes = []
        for name, proc, log in procs:
            rc = proc.wait(120)
            log.seek(0)
            outcomes.append((name, rc, log.read()))
            log.close()
        for name, rc, out in outcomes:
            assert rc == 0, (round_no, name, out[-3000:])
            assert "WARNING" not in out and "ERROR" not in out and "Traceback" not in out, (round_no, name, out[-3000:])
        # every worker ran its tick against the schema: one finished worker_ticks row each
        eng = make_engine(url)
        with eng.connect() as conn:
            ticks = conn.execute(sa.text("SELECT count(*) FROM worker_ticks WHERE finished_at IS NOT NULL "
                                         "AND error IS NULL")).scalar()
        eng.dispose()
        assert ticks == 4, round_no
        _assert_complete(url)
        # the two `python -m lib.db` runs and four workers together created each table once
        created = Counter()
        for name, _, out in outcomes:
            if name == "lib.db":
                line = next(x for x in out.splitlines() if x.startswith("created tables:"))
                created.update(t.strip() for t in line.split(":", 1)[1].split(",") if t.strip() != "none")
        assert all(n <= 1 for n in created.values()), created
