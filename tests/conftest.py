"""Shared fixtures: a throwaway PostgreSQL for the session (and a PgBouncer in front of it, started
when a test needs it), and `db_url`/`engine` fixtures that run each data test on SQLite, on
PostgreSQL with our schema, and on PostgreSQL with the user's own DDL (tests/support/supabase.sql:
NOT NULL where the spec's type has no "| null", no defaults for status or counts) -- a fresh database
per test; tests marked `pooler` also through PgBouncer."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from tests.support.pg import ThrowawayPostgres
from tests.support.servers import StreamlitServer


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pooler: PostgreSQL tests that run once more through PgBouncer in transaction mode "
                   "(ids [pgbouncer]; select them with -k pgbouncer)")
    config.addinivalue_line(
        "markers", "own_schema(reason): a data test whose premise the user's DDL rules out (an empty database, "
                   "rows it forbids): not run as [userschema]")


def pytest_generate_tests(metafunc):
    """db_url runs each data test on SQLite and PostgreSQL; a `pooler` test also through PgBouncer.
    A pooler test that takes pg_server without db_url runs direct and through PgBouncer."""
    pooled = metafunc.definition.get_closest_marker("pooler") is not None
    if "db_url" in metafunc.fixturenames:
        user = [] if metafunc.definition.get_closest_marker("own_schema") else ["userschema"]
        metafunc.parametrize("db_url", ["sqlite", "postgresql", *user] + (["pgbouncer"] if pooled else []),
                             indirect=True)
    elif pooled and "pg_server" in metafunc.fixturenames:
        metafunc.parametrize("pg_route", ["direct", "pgbouncer"], indirect=True)


@pytest.fixture(scope="session")
def pg_cluster():
    """The throwaway PostgreSQL, started once per test session; stopped and removed at the end."""
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def own_pg():
    """A PostgreSQL of the test's own, which it may stop and start (outage tests)."""
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pgbouncer(pg_cluster):
    """PgBouncer (transaction mode) in front of pg_cluster, started the first time a test needs it."""
    from tests.support.pgbouncer import PgBouncer

    bouncer = PgBouncer(pg_cluster)
    bouncer.start()
    yield bouncer
    bouncer.stop()


@pytest.fixture
def pg_route(request):
    """'pgbouncer' when this test runs through the pooler, else 'direct'."""
    param = getattr(request, "param", None)
    if param is None:
        callspec = getattr(request.node, "callspec", None)
        param = "pgbouncer" if callspec and callspec.params.get("db_url") == "pgbouncer" else "direct"
    return param


@pytest.fixture
def pg_server(request, pg_route):
    """Where this test's PostgreSQL databases live: .url, .url_for(name), .create_database(name).
    The server itself, or PgBouncer in front of it for the [pgbouncer] variant of a pooler test."""
    return request.getfixturevalue("pgbouncer" if pg_route == "pgbouncer" else "pg_cluster")


USER_SCHEMA_SQL = Path(__file__).parent / "support" / "supabase.sql"


@pytest.fixture(scope="session")
def user_schema_template(pg_cluster):
    """A template database holding the user's own tables (their DDL, as their Supabase project has
    them); each [userschema] test gets a copy of it, and init_db adds only our tables and indexes."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg_cluster.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('CREATE DATABASE "user_schema_template"')
    conn.close()
    conn = psycopg2.connect(host="127.0.0.1", port=pg_cluster.port, user="postgres", dbname="user_schema_template")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(USER_SCHEMA_SQL.read_text())
    conn.close()
    return "user_schema_template"


@pytest.fixture
def db_url(request, tmp_path):
    """An empty database URL of each kind (our tables not created; [userschema]: the user's are)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    if request.param == "userschema":
        template = request.getfixturevalue("user_schema_template")
        server = request.getfixturevalue("pg_cluster")
        return server.create_database("u_" + uuid.uuid4().hex[:12], template=template)
    server = request.getfixturevalue("pg_server")
    return server.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture
def engine(db_url):
    """An engine on a database initialised with our schema."""
    eng = make_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'test.sqlite'}"


@pytest.fixture
def demo_url(sqlite_url):
    """A SQLite database seeded with the demo data (sandbox.seed), as of now."""
    from lib.core.timeutil import utcnow
    from sandbox.seed import seed_demo

    eng = make_engine(sqlite_url)
    init_db(eng)
    seed_demo(eng, now=utcnow())
    eng.dispose()
    return sqlite_url


# Browser tests: pytest-playwright driving Debian's chromium (no `playwright install` here).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Playwright's 5 s for an expectation is too short for a fresh server's first run on a busy machine: the
# CI of stop 25 (its suite twice as slow as here) lost two System Alerts tests waiting for the grid's
# first rows. A longer wait only slows a test that is failing anyway.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
        ],
    }


@pytest.fixture
def start_app():
    """start_app(env) -> StreamlitServer; every server started is stopped after the test."""
    servers = []

    def start(env: dict[str, str], args: tuple[str, ...] = (), port: int | None = None) -> StreamlitServer:
        server = StreamlitServer(env, args, port)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()
