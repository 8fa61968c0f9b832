"""Every page in a real browser on a seeded PostgreSQL -- and, as a `pooler` test, once more through
PgBouncer in transaction mode (Supabase's pooler): each page shows its title and its data, with no
exception and no "Database unavailable", and the Queue Monitor's CSV export downloads."""
from __future__ import annotations

import csv
import io
import uuid

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.ui.nav import existing_pages
from sandbox.seed import seed_demo
from tests.e2e.conftest import wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.pooler]


def test_every_page_on_postgresql(pg_server, start_app, page):
    url = pg_server.create_database("walk_" + uuid.uuid4().hex[:12])
    eng = make_engine(url)
    init_db(eng)
    seed_demo(eng, now=utcnow())
    with eng.connect() as conn:
        dlq = conn.execute(sa.text("SELECT count(*) FROM post_queue WHERE status = 'dlq'")).scalar()
    eng.dispose()
    assert dlq > 0
    server = start_app({"DATABASE_URL": url})
    for spec in existing_pages():
        path = "/" + spec.path.removeprefix("pages/").removesuffix(".py")
        page.goto(server.url + ("/" if spec.default else path))
        wait_idle(page, timeout=60_000)
        assert page.get_by_test_id("stException").count() == 0, path
        expect(page.get_by_text("Database unavailable")).to_have_count(0)
        expect(page.get_by_role("heading", name=spec.title, level=1)).to_be_visible()
        expect(page.get_by_test_id("stSidebar").get_by_text("Business account")).to_be_visible()
    # a server-side cursor export through the pooler (a named cursor inside one transaction)
    page.goto(server.url + "/queue_monitor")
    wait_idle(page, timeout=60_000)
    with page.expect_download() as info:
        page.get_by_role("button", name="Export CSV").first.click()
    rows = list(csv.DictReader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    assert len(rows) == dlq and {r["status"] for r in rows} == {"dlq"}
    assert "Traceback" not in server.output()
