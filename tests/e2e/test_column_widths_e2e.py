"""At 1440x900 the columns people read first are on screen, left of anything else: the grid draws
(and lists in its accessibility table) only the columns that fit its width."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e


def headers(grid) -> list[str]:
    return [h.strip() for h in grid.locator("th").all_inner_texts()]


def test_important_columns_fit_1440(start_app, demo_url, page):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": demo_url})

    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame").filter(has_text="Retries").first
    expect(grid).to_contain_text("Error")
    grid.scroll_into_view_if_needed()
    seen = headers(grid)
    for name in ("Action type", "Account", "Category", "Error", "Retries", "Last attempt", "Created"):
        assert name in seen, seen
    expect(page.get_by_test_id("stDownloadButton").filter(has_text="Export CSV")).to_be_visible()

    page.goto(server.url + "/system_alerts")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_contain_text("CRITICAL")
    seen = headers(grid)
    for name in ("Severity", "Type", "Account", "Silenced", "On it", "Message", "Count", "Open", "Age"):
        assert name in seen, seen

    page.goto(server.url + "/posts")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_contain_text("Engagement")
    seen = headers(grid)
    assert seen[:3] == ["Caption", "Account", "Engagement"], seen  # sorted by engagement: its column is third
    expect(grid).not_to_contain_text("None")  # a post without caption shows an empty cell
    assert page.locator("[data-testid='stException']").count() == 0
