"""Queue control in a real browser: pause and resume an account on /accounts, discard all matching
DLQ rows through the confirmation dialog on /queue_monitor; viewers see the buttons disabled."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, post_queue, queue_pauses
from lib.core.timeutil import utcnow
from tests.e2e.conftest import wait_idle
from tests.support.queue_rows import add_account, insert_rows, queue_row

pytestmark = pytest.mark.e2e


@pytest.fixture
def control_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", now)
        insert_rows(conn, [queue_row(account=acc, now=now, age_min=i, error=f"HTTP 400 code 100 bad {i}")
                           for i in range(4)])
    eng.dispose()
    return sqlite_url


def _count(url, table, *where):
    eng = make_engine(url)
    with eng.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar()
    eng.dispose()
    return n


def test_pause_and_resume_an_account(start_app, control_db, page):
    server = start_app({"DATABASE_URL": control_db})
    page.goto(server.url + "/accounts")
    wait_idle(page)
    expect(page.get_by_text("e2e_shop").first).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_text("Paused e2e_shop")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Paused: everything of this account")).to_be_visible()
    assert _count(control_db, queue_pauses) == 1
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_text("Resumed e2e_shop")).to_be_visible(timeout=30_000)
    assert _count(control_db, queue_pauses) == 0
    assert page.locator("[data-testid='stException']").count() == 0


def test_discard_all_matching_asks_first_and_keeps_the_rows_in_the_audit_log(start_app, control_db, page):
    server = start_app({"DATABASE_URL": control_db})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    page.get_by_role("button", name="Discard all 4 matching").click()
    dialog = page.get_by_test_id("stDialog")
    expect(dialog).to_contain_text("Delete 4 row(s) of the dead-letter queue?", timeout=30_000)
    assert _count(control_db, post_queue) == 4  # nothing before confirming
    dialog.get_by_role("button", name="Discard 4 rows").click()
    expect(page.get_by_text("4 rows discarded")).to_be_visible(timeout=30_000)
    assert _count(control_db, post_queue) == 0
    assert _count(control_db, audit_log, audit_log.c.event_type == "queue_item_discarded") == 4


def test_viewers_see_pause_and_discard_disabled(start_app, control_db, page):
    server = start_app({"DATABASE_URL": control_db, "OPERATOR_EMAILS": "someone-else@example.com"})
    page.goto(server.url + "/accounts")
    wait_idle(page)
    expect(page.get_by_role("button", name="Pause")).to_be_disabled(timeout=30_000)
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_role("button", name="Discard all 4 matching")).to_be_disabled(timeout=30_000)
