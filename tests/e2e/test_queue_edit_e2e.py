"""Queue Monitor in a real browser: the error-group picker keeps its choice when a group's count
(part of its label) changes, and the "Edit and retry" form (validation messages with nothing
written, a valid edit that sends the row again with its audit row, disabled for viewers)."""
from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.db import init_db, make_engine
from lib.schema import audit_log, post_queue
from lib.timeutil import utcnow
from tests.e2e.conftest import wait_idle
from tests.support.queue_rows import add_account, insert_rows, queue_row

pytestmark = pytest.mark.e2e

ASPECT = "(#36003) The aspect ratio is not supported"


def _rows(acc, now, n, *, age0=0, error="(#100) The parameter comment_id is invalid", **kw):
    return [queue_row(account=acc, now=now, age_min=age0 + i, error=error, **kw) for i in range(n)]


@pytest.fixture
def groups_db(sqlite_url):
    """DLQ: 3 rows of a (#100) group, 2 of the aspect-ratio group."""
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", now)
        insert_rows(conn, _rows(acc, now, 3, error_category="permanent")
                    + _rows(acc, now, 2, age0=50, error=ASPECT, error_category="permanent", action_type="publish_post",
                            payload={"image_url": "https://cdn.example/a.jpg", "caption": "hi"}))
    eng.dispose()
    return sqlite_url, acc


def more_of_the_group(url, acc, n):
    eng = make_engine(url)
    with eng.begin() as conn:
        insert_rows(conn, _rows(acc, utcnow(), n, age0=70 + n, error=ASPECT, error_category="permanent",
                                action_type="publish_post"))
    eng.dispose()


def _search(page, text):
    box = page.get_by_label("Search error text")
    box.fill(text)
    box.press("Enter")
    wait_idle(page)


def test_error_group_choice_survives_a_changed_count_in_its_label(start_app, groups_db, page):
    url, acc = groups_db
    server = start_app({"DATABASE_URL": url})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    picker = page.locator(".st-key-qm_group").get_by_role("combobox")
    picker.click()
    page.get_by_role("option", name=re.compile(r"^2 × permanent · \(#36003\)")).click()
    wait_idle(page)
    expect(page.get_by_text("Rows 1–2 of 2")).to_be_visible()
    more_of_the_group(url, acc, 2)  # its label now says 4
    # each search is a new filter, so the groups (and their labels) are read afresh, not from the cache
    _search(page, "aspect")
    expect(page.get_by_text("Rows 1–4 of 4")).to_be_visible()
    expect(picker).to_have_value(re.compile(r"^4 × permanent · \(#36003\)"))  # the label says today's count
    more_of_the_group(url, acc, 1)
    _search(page, "the")  # matches both groups: had the choice been lost, all 3 + 5 rows would show
    expect(page.get_by_text("Rows 1–5 of 5")).to_be_visible()
    expect(picker).to_have_value(re.compile(r"^5 × permanent · \(#36003\)"))
    assert page.locator("[data-testid='stException']").count() == 0
