"""Activity Feed and System Alerts in a real browser: filter and page the feed, resolve an alert by
clicking, download both CSVs and check what they hold."""
from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.audit import audit_row
from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, system_alerts
from lib.core.timeutil import utcnow
from tests.e2e.conftest import open_expander, wait_idle

pytestmark = pytest.mark.e2e


@pytest.fixture
def demo_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    rows = []
    for i in range(130):
        ok = i % 2 == 0  # 65 failures
        rows.append(audit_row(event_type="post_published" if ok else "post_failed_permanent",
                              action="publish" if ok else "post_queue_dlq",
                              resource_type="instagram_post" if ok else "post_queue", resource_id=f"res-{i:03d}",
                              now=now - timedelta(minutes=i + 1), success=ok, error_message=None if ok else f"err {i}"))

    def alert(alert_type, minutes, message):
        t = now - timedelta(minutes=minutes)
        return {"id": uuid.uuid4(), "alert_type": alert_type, "message": message, "business_account_id": None,
                "details": {"source": "e2e"}, "resolved": False, "created_at": t, "updated_at": t}

    with eng.begin() as conn:
        conn.execute(sa.insert(audit_log), rows)
        conn.execute(sa.insert(system_alerts), [
            alert("agent_down", 2, "agent-x stopped beating"),
            alert("rate_limit", 10, "rate limit hit"),
        ])
    eng.dispose()
    return sqlite_url


def expanders(page):
    return page.get_by_test_id("stExpander")


def test_feed_filter_page_and_export(start_app, demo_db, page):
    server = start_app({"DATABASE_URL": demo_db})
    page.goto(server.url + "/activity_feed")
    wait_idle(page)
    expect(expanders(page)).to_have_count(50)
    page.locator(".st-key-feed_outcome").get_by_text("Failure").click()
    wait_idle(page)
    expect(page.get_by_text("65 matching")).to_be_visible()
    expect(expanders(page).first).to_contain_text("res-001")
    assert "feed_outcome=Failure" in page.url  # the view is shareable by its link
    page.locator(".st-key-feed-pager-older").get_by_role("button").click()
    wait_idle(page)
    expect(page.get_by_text("Page 2 · 15 rows shown")).to_be_visible()
    expect(expanders(page).first).to_contain_text("res-101")
    page.locator(".st-key-feed-pager-newer").get_by_role("button").click()
    wait_idle(page)
    expect(expanders(page).first).to_contain_text("res-001")

    with page.expect_download() as info:
        page.get_by_test_id("stDownloadButton").get_by_role("button").click()
    text = open(info.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 65  # everything the filter matches, not only the page
    assert {r["success"] for r in rows} == {"False"}
    assert rows[0]["resource_id"] == "res-001" and rows[-1]["resource_id"] == "res-129"
    assert page.locator("[data-testid='stException']").count() == 0


def test_resolve_alert_by_clicking_and_export(start_app, demo_db, page):
    server = start_app({"DATABASE_URL": demo_db})
    page.goto(server.url + "/system_alerts")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame")
    expect(grid).to_contain_text("agent_down")
    # tick the first row's checkbox (the grid is a canvas: click the row-marker cell)
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.move(box["x"] + 16, box["y"] + 35 + 17)
    page.wait_for_timeout(500)  # the canvas draws its row markers on hover
    page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
    wait_idle(page)
    button = page.locator(".st-key-alerts-resolve-selected").get_by_role("button")
    expect(button).to_contain_text("Resolve selected (1)")
    button.click()
    wait_idle(page)
    expect(page.get_by_text("Resolved 1 alert.")).to_be_visible()
    expect(grid).not_to_contain_text("agent_down")
    expect(grid).to_contain_text("rate_limit")

    page.locator(".st-key-alert_state").get_by_text("All").click()
    wait_idle(page)
    # the rerun may not have started when wait_idle looks: wait for the resolved alert to be listed again
    expect(grid).to_contain_text("agent_down")
    wait_idle(page)
    with page.expect_download() as info:
        page.get_by_test_id("stDownloadButton").get_by_role("button").click()
    rows = list(csv.DictReader(io.StringIO(open(info.value.path(), encoding="utf-8").read())))
    by_type = {r["alert_type"]: r for r in rows}
    assert set(by_type) == {"agent_down", "rate_limit"}
    assert by_type["agent_down"]["resolved"] == "True" and by_type["agent_down"]["resolved_by"] == "local"
    assert by_type["agent_down"]["severity"] == "CRITICAL"
    assert by_type["rate_limit"]["resolved"] == "False"
    # the chart is behind the lazy "Alerts over time" expander: opening it draws it, by type
    chart = expanders(page).filter(has_text="Alerts over time")
    expect(chart.get_by_test_id("stPlotlyChart")).to_have_count(0)
    open_expander(page, chart, "agent_down")
    expect(chart.get_by_test_id("stPlotlyChart").locator(".main-svg").first).to_be_visible()
    assert page.locator("[data-testid='stException']").count() == 0


def test_alerts_live_refresh_keeps_the_selection(start_app, demo_db, page):
    server = start_app({"DATABASE_URL": demo_db, "POLL_INTERVAL_S": "2"})
    page.goto(server.url + "/system_alerts")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame")
    expect(grid).to_contain_text("agent_down")
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.move(box["x"] + 16, box["y"] + 35 + 17)
    page.wait_for_timeout(500)
    page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
    button = page.locator(".st-key-alerts-resolve-selected").get_by_role("button")
    expect(button).to_contain_text("Resolve selected (1)")
    updated = page.get_by_text("Updated ")
    before = updated.inner_text()
    expect(updated).not_to_have_text(before, timeout=20_000)  # the fragment ticked (5 s clock buckets)
    expect(button).to_contain_text("Resolve selected (1)")  # and the selection survived it
    # pausing (sidebar toggle) stops the ticks
    page.get_by_test_id("stSidebar").get_by_text("Live refresh (2 s)").click()  # POLL_INTERVAL_S above
    wait_idle(page)
    expect(page.get_by_text("live refresh paused")).to_be_visible()


def test_resolve_selected_resolves_the_selected_alert_after_a_more_severe_one_arrives(start_app, demo_db, page):
    """The selection is ids, and the list is frozen while rows are selected, so a
    new alert sorting above the selected one cannot make "Resolve selected" resolve another alert."""
    server = start_app({"DATABASE_URL": demo_db, "POLL_INTERVAL_S": "2"})
    page.goto(server.url + "/system_alerts")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame")
    expect(grid).to_contain_text("rate_limit", timeout=30_000)  # a shared 2-core machine can be slow
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    second_row = (box["x"] + 16, box["y"] + 35 + 35 + 17)  # rows: agent_down, rate_limit
    page.mouse.move(*second_row)
    page.wait_for_timeout(500)  # the canvas draws its row markers on hover
    page.mouse.click(*second_row)
    button = page.locator(".st-key-alerts-resolve-selected").get_by_role("button")
    expect(button).to_contain_text("Resolve selected (1)", timeout=30_000)
    expect(page.get_by_text("paused while 1 alert(s) are selected")).to_be_visible(timeout=30_000)

    eng = make_engine(demo_db)
    now = utcnow()
    with eng.begin() as conn:  # more severe than both: sorts first in a refreshed list
        conn.execute(sa.insert(system_alerts).values(
            id=uuid.uuid4(), alert_type="auth_failure", message="token revoked", business_account_id=None,
            details={"source": "e2e"}, resolved=False, created_at=now, updated_at=now))
    # the live summary (not frozen) shows the new alert once the loaders' cache has expired ...
    unresolved = page.get_by_test_id("stMetric").filter(has_text="Unresolved alerts")
    expect(unresolved).to_contain_text("3", timeout=60_000)
    # ... then two more refreshes of the panel
    updated = page.get_by_text("Updated ")
    for _ in range(2):
        before = updated.inner_text()
        expect(updated).not_to_have_text(before, timeout=20_000)
    expect(button).to_contain_text("Resolve selected (1)")
    button.click()
    wait_idle(page)
    expect(page.get_by_text("Resolved 1 alert.")).to_be_visible(timeout=30_000)
    with eng.connect() as conn:
        state = dict(conn.execute(sa.select(system_alerts.c.alert_type, system_alerts.c.resolved)).all())
    eng.dispose()
    assert state == {"agent_down": False, "rate_limit": True, "auth_failure": False}
    assert page.locator("[data-testid='stException']").count() == 0
