"""Queue Monitor at 1440x900: a row's "Open" button shows its whole story in a dialog on the first
screen (error, every attempt, payload, actions), and its Retry acts on that row."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import post_queue, post_queue_attempts
from lib.core.timeutil import utcnow
from tests.e2e.conftest import open_first_queue_row, wait_idle
from tests.support.queue_rows import add_account, insert_rows, queue_row

pytestmark = pytest.mark.e2e


@pytest.fixture
def story_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", now)
        newest = queue_row(account=acc, now=now, age_min=1, error="(#100) the comment was deleted",
                           error_category="content_violation",
                           payload={"comment_id": "c-777", "reply_text": "thanks for asking", "post_id": "p1"})
        older = queue_row(account=acc, now=now, age_min=30)
        insert_rows(conn, [newest, older])
        conn.execute(sa.insert(post_queue_attempts), [
            {"id": uuid.uuid4(), "queue_id": newest["id"], "attempted_at": now - timedelta(minutes=m),
             "outcome": outcome, "error_category": "content_violation" if outcome == "dlq" else "network",
             "error": err, "retry_count": n}
            for m, outcome, err, n in ((9, "failed", "connection reset by peer", 1),
                                       (5, "failed", "read timed out after 30 s", 2),
                                       (1, "dlq", "(#100) the comment was deleted", 3))])
    eng.dispose()
    return sqlite_url, newest, older


def test_open_shows_the_rows_story_in_a_dialog_and_retries_it(start_app, story_db, page):
    url, newest, older = story_db
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": url})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_text("Rows 1–2 of 2, newest attempt first")).to_be_visible()
    dialog = open_first_queue_row(page)
    expect(dialog).to_contain_text(str(newest["id"]))
    expect(dialog).to_contain_text("(#100) the comment was deleted")
    for attempt in ("connection reset by peer", "read timed out after 30 s"):  # every attempt, not only the last
        expect(dialog.get_by_test_id("stDataFrame").filter(has_text="outcome")).to_contain_text(attempt)
    expect(dialog).to_contain_text("c-777")  # the payload
    # the whole story fits the first screen: the dialog's top is in the viewport
    assert dialog.bounding_box()["y"] < 900
    dialog.get_by_role("button", name="Retry this row").click()
    expect(page.get_by_text("Retry: 1 row moved back to pending")).to_be_visible()
    expect(dialog).to_have_count(0)
    eng = make_engine(url)
    with eng.connect() as conn:
        status = dict(conn.execute(sa.select(post_queue.c.id, post_queue.c.status)).all())
    eng.dispose()
    assert status == {newest["id"]: "pending", older["id"]: "dlq"}  # that row, and only that row
    assert page.locator("[data-testid='stException']").count() == 0
