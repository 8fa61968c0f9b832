"""Queue Monitor in a real browser: the error-group picker keeps its choice when a group's count
(part of its label) changes, and the "Edit and retry" form (validation messages with nothing
written, a valid edit that sends the row again with its audit row, disabled for viewers)."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import audit_log, post_queue
from lib.core.timeutil import utcnow
from lib.queue.rules import idempotency_key
from lib.queue.store import enqueue, pause
from tests.e2e.conftest import click_until, wait_idle
from tests.support.queue_rows import add_account, insert_rows, queue_row

pytestmark = pytest.mark.e2e

HEADER_PX, ROW_PX = 35, 35  # st.dataframe's default header and row heights

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
    choice = re.compile(r"^2 × permanent · \(#36003\)")

    def pick():
        if not choice.search(picker.input_value() or ""):
            picker.click()
            page.get_by_role("option", name=choice).click(timeout=10_000)

    click_until(page, pick, lambda ms: expect(picker).to_have_value(choice, timeout=ms))
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


# -- edit and retry ----------------------------------------------------------------------------------

@pytest.fixture
def edit_db(sqlite_url):
    """DLQ: a publish_post row (its container already made: creation_id) and, older, a reply_comment row."""
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", now)
        post = enqueue(conn, business_account_id=acc, action_type="publish_post", now=now,
                       payload={"image_url": "https://cdn.example/too-wide.jpg", "caption": "old caption",
                                "creation_id": "17900000000000001"})
        insert_rows(conn, _rows(acc, now, 1, age0=30))
        conn.execute(sa.update(post_queue).where(post_queue.c.id == post).values(
            status="dlq", retry_count=5, error=ASPECT, error_category="permanent", updated_at=now))
    eng.dispose()
    return sqlite_url, acc, post


def _db_row(url, queue_id):
    eng = make_engine(url)
    with eng.connect() as conn:
        row = conn.execute(sa.select(post_queue).where(post_queue.c.id == queue_id)).one()
        audits = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "queue_item_edited")).all()
    eng.dispose()
    return row, audits


def _open_edit_form(page, queue_id):
    """Select the newest DLQ row (its checkbox), then open its "Edit and retry" expander."""
    page.get_by_text(re.compile(r"^Rows 1–\d+ of \d+")).scroll_into_view_if_needed()  # below the table
    table = page.get_by_test_id("stDataFrame").filter(has_text="Retries").first
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    page.mouse.click(box["x"] + 17, box["y"] + HEADER_PX + ROW_PX / 2)
    detail = page.locator(".st-key-qm_detail")
    expect(detail).to_contain_text(str(queue_id), timeout=20_000)
    detail.get_by_test_id("stExpander").filter(has_text="Edit and retry").locator("summary").click()
    form = detail.get_by_test_id("stForm")
    expect(form.get_by_role("button", name="Save and retry")).to_be_visible()
    return form


def _submit(page, form, **fields):
    for name, value in fields.items():
        box = form.get_by_label(name, exact=True)
        box.fill(value)
    form.get_by_role("button", name="Save and retry").click()
    wait_idle(page)


def _refused(page, form, message: str, **fields):
    """Submit values the form refuses, until its message shows: a submit click that lands while the
    page redraws can be lost (a CI run lost one); a refused submit writes nothing, so a repeat is safe."""
    click_until(page, lambda: _submit(page, form, **fields),
                lambda ms: expect(page.get_by_text(message)).to_be_visible(timeout=ms))


def test_edit_and_retry_refuses_bad_values_then_sends_the_edited_row(start_app, edit_db, page):
    url, acc, post = edit_db
    before, _ = _db_row(url, post)
    server = start_app({"DATABASE_URL": url})
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_text("Rows 1–2 of 2")).to_be_visible()
    form = _open_edit_form(page, post)
    expect(form.get_by_label("caption", exact=True)).to_have_value("old caption")

    too_many = " ".join(f"#tag{i}" for i in range(31))
    _refused(page, form, "Not saved: caption has 31 hashtags; Instagram allows 30", caption=too_many)
    _refused(page, form, "Not saved: caption has 2,201 characters; Instagram allows 2,200", caption="x" * 2201)
    _refused(page, form, "image_url must be an http(s) URL Instagram can fetch", caption="fine",
             image_url="ftp://cdn.example/square.jpg")
    after_refusals, audits = _db_row(url, post)
    assert after_refusals._asdict() == before._asdict() and audits == []  # nothing written

    _submit(page, form, caption="Square at last #ok", image_url="https://cdn.example/square.jpg")
    expect(page.get_by_text("Saved and moved back to pending; the worker sends it on its next tick with a new "
                            "media container.")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Rows 1–1 of 1")).to_be_visible()  # it left the dead-letter queue
    row, audits = _db_row(url, post)
    payload = {"image_url": "https://cdn.example/square.jpg", "caption": "Square at last #ok"}
    assert (row.status, row.retry_count, row.next_retry_at) == ("pending", 0, None)
    assert row.payload == payload  # creation_id dropped: the old container shows the old image
    assert row.idempotency_key == idempotency_key(acc, "publish_post", payload)
    (audit,) = audits
    assert audit.user_id == "local" and audit.resource_id == str(post)
    assert audit.details["previous_status"] == "dlq" and audit.details["previous_retry_count"] == 5
    assert audit.details["changes"] == {
        "caption": {"before": "old caption", "after": "Square at last #ok"},
        "creation_id": {"before": "17900000000000001", "after": None},
        "image_url": {"before": "https://cdn.example/too-wide.jpg", "after": "https://cdn.example/square.jpg"},
    }
    assert page.locator("[data-testid='stException']").count() == 0


def test_viewers_see_the_edit_form_and_resume_disabled(start_app, edit_db, page):
    url, acc, post = edit_db
    eng = make_engine(url)
    with eng.begin() as conn:
        pause(conn, actor=Actor("ops@example.com", OPERATOR), now=utcnow(), business_account_id=acc,
              reason="token rotation")
    eng.dispose()
    server = start_app({"DATABASE_URL": url, "OPERATOR_EMAILS": "someone-else@example.com"})
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    form = _open_edit_form(page, post)
    expect(form.get_by_label("caption", exact=True)).to_be_disabled()
    expect(form.get_by_label("image_url", exact=True)).to_be_disabled()
    expect(form.get_by_role("button", name="Save and retry")).to_be_disabled()
    expect(page.locator(".st-key-qm_detail").get_by_role("button", name="Retry this row")).to_be_disabled()
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()  # the pause banner's
    page.goto(server.url + "/accounts")
    wait_idle(page)
    expect(page.get_by_text("Paused: everything of this account")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()
    row, audits = _db_row(url, post)
    assert row.status == "dlq" and audits == []
