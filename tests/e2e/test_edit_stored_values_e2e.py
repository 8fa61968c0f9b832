"""Edit and retry in a real browser works on the stored text: a 754-character DM (the page's copy
is clipped at 500 characters) shows whole in the form, "Hi!" -> "Hello!" saves all 757
characters, and pasting the page's clipped copy back is refused with nothing written."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, post_queue
from lib.core.timeutil import utcnow
from lib.queue.store import enqueue
from tests.e2e.conftest import wait_idle
from tests.e2e.test_queue_edit_e2e import _open_edit_form
from tests.support.queue_rows import add_account

pytestmark = pytest.mark.e2e

TEXT = "Hi! " + ("Thanks for your order, it ships tomorrow. " * 18)[:750]


@pytest.fixture
def dm_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", now)
        dm = enqueue(conn, business_account_id=acc, action_type="send_dm", now=now,
                     payload={"recipient_id": "17841000", "message_text": TEXT})
        conn.execute(sa.update(post_queue).where(post_queue.c.id == dm).values(
            status="dlq", retry_count=5, error="(#100) bad recipient", error_category="permanent", updated_at=now))
    eng.dispose()
    return sqlite_url, dm


def _stored(url, queue_id):
    eng = make_engine(url)
    with eng.connect() as conn:
        text = conn.execute(sa.select(post_queue.c.payload).where(post_queue.c.id == queue_id)).scalar()["message_text"]
        edits = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "queue_item_edited")).all()
    eng.dispose()
    return text, edits


def test_the_form_holds_the_whole_stored_text_and_saves_exactly_the_edit(start_app, dm_db, page):
    url, dm = dm_db
    assert len(TEXT) == 754
    server = start_app({"DATABASE_URL": url})
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    form = _open_edit_form(page, dm)
    box = form.get_by_label("message_text", exact=True)
    expect(box).to_have_value(TEXT)  # whole, not the page's clipped copy
    # the page's copy, pasted back (what the old form held): refused, nothing written
    box.fill(TEXT[:500].replace("Hi!", "Hello!", 1) + "… [254 more characters not shown]")
    form.get_by_role("button", name="Save and retry").click()
    wait_idle(page)
    expect(page.get_by_text("254 more characters not shown]': that is a mark of the shortened")).to_be_visible()
    assert _stored(url, dm) == (TEXT, [])

    box.fill(TEXT.replace("Hi!", "Hello!", 1))
    form.get_by_role("button", name="Save and retry").click()
    wait_idle(page)
    expect(page.get_by_text("Saved and moved back to pending")).to_be_visible(timeout=20_000)
    text, edits = _stored(url, dm)
    assert text == "Hello!" + TEXT[3:] and len(text) == 757
    assert len(edits) == 1
    assert page.locator("[data-testid='stException']").count() == 0
