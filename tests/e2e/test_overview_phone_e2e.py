"""The Overview's queue numbers on a phone (390x844): Pending, Due, Failed and DLQ share one row
instead of taking a full-width row each."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("size", [(390, 844), (1440, 900)])
def test_queue_numbers_share_one_row(start_app, demo_url, page, size):
    page.set_viewport_size({"width": size[0], "height": size[1]})
    server = start_app({"DATABASE_URL": demo_url})
    page.goto(server.url + "/overview")
    wait_idle(page)
    queue = page.locator(".st-key-ov-queue")
    metrics = queue.get_by_test_id("stMetric")
    expect(metrics).to_have_count(4)
    queue.scroll_into_view_if_needed()
    boxes = [metrics.nth(i).bounding_box() for i in range(4)]
    tops = [b["y"] for b in boxes]
    assert max(tops) - min(tops) < 5, tops  # one row
    assert max(b["x"] + b["width"] for b in boxes) <= size[0]  # and inside the screen
    for i in range(4):  # no number is cut short
        value = metrics.nth(i).get_by_test_id("stMetricValue")
        assert value.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    alerts = page.locator(".st-key-ov-alerts").get_by_test_id("stMetric")
    tops = [alerts.nth(i).bounding_box()["y"] for i in range(3)]
    assert max(tops) - min(tops) < 5, tops
    page.screenshot(path=f"/tmp/overview-{size[0]}.png", full_page=False)
    assert page.locator("[data-testid='stException']").count() == 0
