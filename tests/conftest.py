"""Shared fixtures: a throwaway PostgreSQL for the session, and `db_url`/`engine` fixtures that
run each data test on SQLite and on PostgreSQL (a fresh database per test)."""
from __future__ import annotations

import shutil
import uuid

import pytest

from lib.db import init_db, make_engine
from tests.support.pg import ThrowawayPostgres
from tests.support.servers import StreamlitServer


@pytest.fixture(scope="session")
def pg_server():
    """Started once per test session; stopped and removed at the end."""
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database URL of each kind (tables not created)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
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
    """A SQLite database seeded with the demo data (lib.sandbox.seed), as of now."""
    from lib.sandbox.seed import seed_demo
    from lib.timeutil import utcnow

    eng = make_engine(sqlite_url)
    init_db(eng)
    seed_demo(eng, now=utcnow())
    eng.dispose()
    return sqlite_url


# Browser tests: pytest-playwright driving Debian's chromium (no `playwright install` here).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


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
