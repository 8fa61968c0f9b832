"""Fault injection with real processes: PostgreSQL stops while the app and the worker run.

The pages must say "database unavailable" (no traceback), the worker must log and keep its
schedule, and after PostgreSQL is back both recover without a restart, with no queue row lost
or left in `processing`.
"""
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import post_queue, worker_ticks
from lib.core.timeutil import utcnow
from lib.queue.store import enqueue
from lib.ui.nav import existing_pages
from sandbox.graph_api import GraphSandbox
from sandbox.seed import seed_demo
from tests.e2e.conftest import wait_idle
from tests.support.servers import ROOT

pytestmark = pytest.mark.e2e


def _page_paths():
    return ["/" + p.path.removeprefix("pages/").removesuffix(".py") for p in existing_pages()]


def _count(url, query):
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(query).scalar()
    finally:
        eng.dispose()


def test_postgres_outage_and_recovery(own_pg, start_app, page, tmp_path):
    url = own_pg.url
    eng = make_engine(url)
    init_db(eng)
    seed_demo(eng, now=utcnow())
    with eng.begin() as conn:  # fresh work for the worker, so it has something to do after the outage
        acc = conn.execute(sa.text("SELECT id FROM instagram_business_accounts WHERE is_connected LIMIT 1")).scalar()
        ours = [
            enqueue(conn, business_account_id=acc, action_type="send_dm",
                    payload={"recipient_id": f"6{i:015d}", "message_text": f"outage test {i}"}, now=utcnow())
            for i in range(60)
        ]
    eng.dispose()
    total_rows = _count(url, sa.select(sa.func.count()).select_from(post_queue))

    graph = GraphSandbox().start()
    worker_log = open(tmp_path / "worker.log", "w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "--interval-seconds", "1", "--batch-size", "5"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url, "INSTAGRAM_GRAPH_URL": graph.url, "PYTHONPATH": str(ROOT)},
        stdout=worker_log, stderr=subprocess.STDOUT,
    )
    server = start_app({"DATABASE_URL": url})
    try:
        pages = _page_paths()
        for path in pages:
            page.goto(server.url + path)
            wait_idle(page)
            assert page.locator("[data-testid='stException']").count() == 0, path
            expect(page.get_by_text("Database unavailable")).to_have_count(0)

        own_pg.stop()
        time.sleep(6)  # longer than the page guard's 5 s ping cache
        for path in pages:
            page.goto(server.url + path)
            wait_idle(page)
            expect(page.get_by_text("Database unavailable at")).to_be_visible()
            assert page.locator("[data-testid='stException']").count() == 0, path
        assert worker.poll() is None, "the worker died with the database"
        worker_log.flush()
        down_lines = open(tmp_path / "worker.log").read()

        own_pg.start()
        outage_end = utcnow()
        for path, title in zip(pages, [p.title for p in existing_pages()]):  # same app process: no restart
            page.goto(server.url + path)
            wait_idle(page)
            expect(page.get_by_text("Database unavailable")).to_have_count(0)
            assert page.locator("[data-testid='stException']").count() == 0, path
            # the page itself is back, not a blank one: the guard passed (it stops on a dead database) and drew it
            expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
            expect(page.get_by_test_id("stSidebar").get_by_text("Business account")).to_be_visible()

        # the worker recovers on its own: ticks after the outage, and the queue drains
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ticks_after = _count(url, sa.select(sa.func.count()).select_from(worker_ticks)
                                 .where(worker_ticks.c.started_at > outage_end, worker_ticks.c.error.is_(None)))
            # seeded rows of the disconnected account stay pending by design: watch ours
            pending = _count(url, sa.select(sa.func.count()).select_from(post_queue)
                             .where(post_queue.c.id.in_(ours), post_queue.c.status.in_(["pending", "processing"])))
            if ticks_after >= 2 and pending == 0:
                break
            time.sleep(1)
        if pending:  # say which rows and what the worker did, not only how many
            eng = make_engine(url)
            with eng.connect() as conn:
                left = conn.execute(sa.select(post_queue.c.id, post_queue.c.status, post_queue.c.retry_count,
                                              post_queue.c.error, post_queue.c.next_retry_at, post_queue.c.updated_at)
                                    .where(post_queue.c.id.in_(ours), post_queue.c.status.in_(["pending", "processing"]))
                                    ).all()
            eng.dispose()
            worker_log.flush()
            tail = open(tmp_path / "worker.log").read()[-4000:]
            pytest.fail(f"{pending} of our rows not done 60 s after the outage (ticks after it: {ticks_after}):\n"
                        + "\n".join(map(str, left)) + "\n--- worker log tail ---\n" + tail)
        assert ticks_after >= 2, ticks_after
    finally:
        worker.terminate()
        rc = worker.wait(20)
        graph.stop()
    assert rc == 0
    assert "database" in down_lines.lower()  # it said what was wrong
    assert "Traceback" not in down_lines
    assert _count(url, sa.select(sa.func.count()).select_from(post_queue)) == total_rows  # nothing lost
    assert _count(url, sa.select(sa.func.count()).select_from(post_queue)
                  .where(post_queue.c.id.in_(ours), post_queue.c.status == "sent")) == len(ours)
