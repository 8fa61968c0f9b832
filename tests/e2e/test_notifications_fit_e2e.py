"""Notifications at 1440x900: the deliveries table shows every column a reader needs (the grid draws
only the columns that fit), and no control's label is cut short."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from sandbox.notify_sink import NotifySink
from tests.e2e.conftest import wait_idle
from tests.e2e.test_notifications_e2e import alerts_db  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e
SHOTS = Path(os.environ.get("TMPDIR", "/tmp"))

# every label that does not fit its box: cut with an ellipsis (widget and metric labels) or clipped by
# a box that hides its overflow (a segmented control's buttons); the grids scroll, and are left out
CUT = """() => Array.from(document.querySelectorAll('[data-testid=stMain] *'))
    .filter(e => !e.closest('[data-testid=stDataFrame]') && e.textContent.trim()
                 && e.textContent.trim().length < 200 && e.scrollWidth > e.clientWidth + 1
                 && (getComputedStyle(e).textOverflow === 'ellipsis'
                     || ['hidden', 'clip', 'auto'].includes(getComputedStyle(e).overflowX)))
    .map(e => e.textContent.trim())"""


def cut_labels(page, timeout_ms: int = 5_000) -> list[str]:
    """The cut labels once the page has laid out (widgets settle after the run ends): a label that
    stays cut is reported, one cut only for a moment is not."""
    cut = page.evaluate(CUT)
    for _ in range(timeout_ms // 250):
        if not cut:
            break
        page.wait_for_timeout(250)
        cut = page.evaluate(CUT)
    return cut


def test_deliveries_and_labels_fit_1440(start_app, alerts_db, page):  # noqa: F811
    page.set_viewport_size({"width": 1440, "height": 900})
    with NotifySink() as sink:
        url = f"json://127.0.0.1:{sink.port}/notify"
        server = start_app({"DATABASE_URL": alerts_db, "ALERT_NOTIFY_URLS": url, "ALERT_NOTIFY_TIMEOUT_S": "5"})
        page.goto(server.url + "/notifications")
        wait_idle(page)
        page.locator(".st-key-route-test-0").get_by_role("button").click()
        page.get_by_test_id("stDialog").get_by_role("button", name="Send test").click()
        wait_idle(page)
        expect(page.get_by_text("Test notification delivered")).to_be_visible()
        page.reload()
        wait_idle(page)
        grid = page.get_by_test_id("stDataFrame").last  # the deliveries, below the silences
        grid.scroll_into_view_if_needed()
        expect(grid).to_contain_text("sent")
        page.screenshot(path=str(SHOTS / "notifications-1440.png"), full_page=True)
        headers = [h.strip() for h in grid.locator("th").all_inner_texts()]
        for name in ("Queued", "Status", "Kind", "Route", "Title", "Sent", "Tries"):
            assert name in headers, " | ".join(headers)
        assert cut_labels(page) == []
        assert page.locator("[data-testid='stException']").count() == 0


@pytest.mark.parametrize("path", ["/notifications", "/digest", "/posts", "/queue_monitor", "/metrics"])
def test_no_label_is_cut_at_1440_on_the_demo_data(start_app, demo_url, page, path):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": demo_url})
    page.goto(server.url + path)
    wait_idle(page)
    assert cut_labels(page) == [], path
    assert page.locator("[data-testid='stException']").count() == 0
