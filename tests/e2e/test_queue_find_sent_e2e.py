"""Queue Monitor at 1440x900: find a row by what was sent (a comment id, words of a reply), whatever
its status, and open its story from the result."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from tests.e2e.conftest import click_until, wait_idle
from tests.support.queue_rows import add_account, insert_rows, queue_row

pytestmark = pytest.mark.e2e


@pytest.fixture
def sent_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", now)
        sent = queue_row(account=acc, now=now, status="sent", age_min=30,
                         payload={"comment_id": "cmt_424242", "reply_text": "We ship to Norway too", "post_id": "p9"})
        dlq = queue_row(account=acc, now=now, age_min=3, payload={"comment_id": "cmt_777", "reply_text": "thanks!",
                                                                   "post_id": "p1"})
        insert_rows(conn, [sent, dlq])
    eng.dispose()
    return sqlite_url, sent


def test_find_a_sent_row_by_comment_id_and_open_it(start_app, sent_db, page):
    url, sent = sent_db
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": url})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    box = page.locator(".st-key-qm_find input")
    box.fill("CMT_424242")
    box.press("Enter")
    wait_idle(page)
    results = page.locator(".st-key-qm_find_results")
    expect(results).to_contain_text("cmt_424242")
    expect(results).to_contain_text("sent")  # a sent row: not in the DLQ / failed views
    expect(results).not_to_contain_text("cmt_777")
    expect(page.get_by_text("1 row, newest first.")).to_be_visible()
    assert "qm_find=CMT_424242" in page.url  # shareable
    grid = results.get_by_test_id("stDataFrame")
    grid.scroll_into_view_if_needed()
    b = grid.bounding_box()
    dialog = page.get_by_test_id("stDialog")
    click_until(page, lambda: dialog.count() or page.mouse.click(b["x"] + 28, b["y"] + 35 + 17),
                lambda ms: expect(dialog).to_be_visible(timeout=ms))
    expect(dialog).to_contain_text(str(sent["id"]))
    expect(dialog).to_contain_text("We ship to Norway too")

    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    box.fill("no such text anywhere")
    box.press("Enter")
    wait_idle(page)
    expect(page.get_by_text("has “no such text anywhere” in what it sends")).to_be_visible()
    assert page.locator("[data-testid='stException']").count() == 0
