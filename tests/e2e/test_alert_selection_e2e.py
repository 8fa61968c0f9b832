"""System Alerts at 1440x900: after "Resolve selected" no checkmark is left on another alert;
"Silence…" on a selected alert opens the silence form filled in with its type and account, from now."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import alert_silences, system_alerts
from lib.core.timeutil import utcnow
from tests.e2e.conftest import click_until, wait_idle
from tests.support.queue_rows import add_account

pytestmark = pytest.mark.e2e


@pytest.fixture
def alerts_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()

    with eng.begin() as conn:
        shop = add_account(conn, "northwind_outdoors", now)

    def alert(alert_type, minutes, message):
        t = now - timedelta(minutes=minutes)
        return {"id": uuid.uuid4(), "alert_type": alert_type, "message": message,
                "business_account_id": shop if alert_type == "sync_failure" else None,
                "details": {"source": "e2e"}, "resolved": False, "created_at": t, "updated_at": t}

    with eng.begin() as conn:
        conn.execute(sa.insert(system_alerts), [
            alert("sync_failure", 2, "sync failed"),
            alert("content_violation", 10, "image too large"),
            alert("rate_limit", 20, "rate limit hit"),
        ])
    eng.dispose()
    return sqlite_url


def selected_rows(page):
    """The grid's selected rows as its accessibility table reports them (the canvas draws the same)."""
    return page.locator("[data-testid='stDataFrame'] tr[aria-selected='true']")


def tick_first_row(page):
    """Tick the first row; a click that a redraw swallowed is repeated (never one that took)."""
    grid = page.get_by_test_id("stDataFrame")
    grid.scroll_into_view_if_needed()

    def click():
        if selected_rows(page).count() == 0:
            box = grid.bounding_box()
            page.mouse.move(box["x"] + 16, box["y"] + 35 + 17)
            page.wait_for_timeout(500)  # the canvas draws its row markers on hover
            page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)

    click_until(page, click, lambda ms: expect(selected_rows(page)).to_have_count(1, timeout=ms))
    wait_idle(page)


@pytest.mark.parametrize("view", ["grouped", "each"])
def test_no_checkmark_moves_to_another_alert_after_resolve(start_app, alerts_db, page, view):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": alerts_db})
    page.goto(server.url + f"/system_alerts?alert_view={view}")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame")
    expect(grid).to_contain_text("sync_failure")
    button = page.locator(".st-key-alerts-resolve-selected").get_by_role("button")
    for resolved, left in (("sync_failure", "content_violation"), ("content_violation", "rate_limit")):
        tick_first_row(page)
        expect(selected_rows(page)).to_have_count(1)
        expect(selected_rows(page)).to_contain_text(resolved)
        expect(button).to_contain_text("Resolve selected (1)")
        button.click()
        wait_idle(page)
        expect(page.get_by_text("Resolved 1 alert.")).to_be_visible()
        expect(grid).not_to_contain_text(resolved)
        expect(grid).to_contain_text(left)
        # the alert that moved into the resolved one's place is not ticked, and the button agrees
        expect(selected_rows(page)).to_have_count(0)
        # the button of this run comes first; the previous run's copy can linger a moment below it
        expect(button.first).to_contain_text("Resolve selected (0)")
    eng = make_engine(alerts_db)
    with eng.connect() as conn:
        state = dict(conn.execute(sa.select(system_alerts.c.alert_type, system_alerts.c.resolved)).all())
    eng.dispose()
    assert state == {"sync_failure": True, "content_violation": True, "rate_limit": False}
    assert page.locator("[data-testid='stException']").count() == 0


def test_silence_the_selected_alert_prefilled_from_now(start_app, alerts_db, page):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": alerts_db})
    page.goto(server.url + "/system_alerts")
    wait_idle(page)
    expect(page.get_by_test_id("stDataFrame")).to_contain_text("sync_failure")
    silence = page.locator(".st-key-sa-sil-selected").get_by_role("button")
    expect(silence).to_be_disabled()  # nothing selected yet
    tick_first_row(page)
    expect(selected_rows(page)).to_contain_text("sync_failure")
    clicked_at = utcnow()
    form = page.get_by_test_id("stForm")
    click_until(page, lambda: form.count() or silence.click(), lambda ms: expect(form).to_be_visible(timeout=ms))
    expect(page.locator(".st-key-sa-sil-type input")).to_have_value("sync_failure")
    expect(page.locator(".st-key-sa-sil-account input")).to_have_value("northwind_outdoors")
    start = page.locator(".st-key-sa-sil-start-time input").input_value()[:5]
    # this minute (or the next, if the click crossed one), never rounded back to a quarter hour
    assert start in {(clicked_at + timedelta(minutes=m)).strftime("%H:%M") for m in (0, 1)}, start
    page.locator(".st-key-sa-sil-reason input").fill("shop is migrating its catalogue")
    form.get_by_role("button", name="Create silence").click()
    expect(page.get_by_text("Silence created until")).to_be_visible()
    eng = make_engine(alerts_db)
    with eng.connect() as conn:
        sil = conn.execute(sa.select(alert_silences)).mappings().one()
    eng.dispose()
    assert sil["alert_type"] == "sync_failure" and sil["business_account_id"] is not None
    assert sil["reason"] == "shop is migrating its catalogue"
    assert page.locator("[data-testid='stException']").count() == 0
