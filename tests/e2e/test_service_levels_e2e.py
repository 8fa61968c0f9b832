"""The Queue Monitor's service levels in a real browser: the live table, and the 30-day percentiles and the
per-account table drawn only when their expander is opened."""
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import open_expander, wait_idle

pytestmark = pytest.mark.e2e
WAIT = 30_000


def test_queue_monitor_service_levels_30_days_on_demand(start_app, demo_url, page):
    server = start_app({"DATABASE_URL": demo_url})
    page.set_default_timeout(WAIT)
    page.goto(f"{server.url}/queue_monitor")
    wait_idle(page)
    expect(page.get_by_role("heading", name="Service levels")).to_be_visible()
    expect(page.get_by_text("Time to send: queued (created_at)")).to_be_visible()
    expander = page.locator(".st-key-slo_more")
    open_expander(page, expander, "")
    expect(expander.get_by_test_id("stDataFrame")).to_have_count(2)
    assert page.locator("[data-testid='stException']").count() == 0
