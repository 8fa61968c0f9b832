"""Trusted-header identity (behind an oauth2-proxy style proxy) in a real browser: a viewer
cannot retry or resolve, also when a deep link is the first request on a fresh server."""
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e

ENV = {"TRUSTED_USER_HEADER": "X-Forwarded-Email", "OPERATOR_EMAILS": "ops@example.com"}


def as_user(browser, email):
    context = browser.new_context(extra_http_headers={"X-Forwarded-Email": email})
    return context.new_page()


def test_viewer_cannot_write_even_through_a_deep_link(browser, start_app, demo_url):
    server = start_app({"DATABASE_URL": demo_url, **ENV})
    page = as_user(browser, "viewer@example.com")
    page.goto(server.url + "/queue_monitor")  # the very first request on a fresh server
    wait_idle(page)
    expect(page.get_by_test_id("stSidebar").get_by_text("viewer@example.com")).to_be_visible()
    retry_all = page.get_by_role("button", name="Retry all")
    expect(retry_all).to_be_disabled()
    expect(page.get_by_role("button", name="Retry selected")).to_be_disabled()
    assert page.locator("[data-testid='stException']").count() == 0

    page.goto(server.url + "/system_alerts")
    wait_idle(page)
    expect(page.get_by_role("button", name="Resolve all matching")).to_be_disabled()
    assert page.locator("[data-testid='stException']").count() == 0


def test_operator_header_can_write(browser, start_app, demo_url):
    server = start_app({"DATABASE_URL": demo_url, **ENV})
    page = as_user(browser, "ops@example.com")
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_test_id("stSidebar").get_by_text("ops@example.com")).to_be_visible()
    expect(page.get_by_role("button", name="Retry all")).to_be_enabled()


def test_missing_header_is_refused(browser, start_app, demo_url):
    server = start_app({"DATABASE_URL": demo_url, **ENV})
    page = browser.new_context().new_page()
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_text("No signed-in user: the request carries no X-Forwarded-Email header")).to_be_visible()
    expect(page.get_by_role("button", name="Retry all")).to_have_count(0)


def test_a_request_that_did_not_come_from_the_trusted_proxy_is_refused(browser, start_app, demo_url):
    """With TRUSTED_PROXY_IPS set, a forged header from any other client address
    (here the browser on loopback) gets nothing, not even a disabled Retry button."""
    server = start_app({"DATABASE_URL": demo_url, **ENV, "OPERATOR_EMAILS": "ops@example.com",
                        "TRUSTED_PROXY_IPS": "10.9.9.9", "FORWARDED_ALLOW_IPS": ""})
    page = as_user(browser, "ops@example.com")
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_text("did not come through the sign-in proxy")).to_be_visible()
    expect(page.get_by_role("button", name="Retry all")).to_have_count(0)
    assert page.get_by_test_id("stDataFrame").count() == 0


@pytest.mark.parametrize("forwarded", [None, ""], ids=["forwarded-trust-default", "forwarded-trust-off"])
def test_a_forged_forwarded_address_is_refused(browser, start_app, demo_url, forwarded):
    """A local caller names the proxy's address in X-Forwarded-For. With the app server's default
    forwarded trust (loopback), that address would be the one checked: header mode with a proxy list
    refuses to serve at all until FORWARDED_ALLOW_IPS is set empty; with it empty, the address
    checked is the connection's (loopback), which is not the proxy."""
    env = {"DATABASE_URL": demo_url, **ENV, "TRUSTED_PROXY_IPS": "10.0.0.7"}
    if forwarded is not None:
        env["FORWARDED_ALLOW_IPS"] = forwarded
    server = start_app(env)
    context = browser.new_context(extra_http_headers={"X-Forwarded-Email": "ops@example.com",
                                                      "X-Forwarded-For": "10.0.0.7"})
    page = context.new_page()
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_text("FORWARDED_ALLOW_IPS" if forwarded is None
                            else "did not come through the sign-in proxy").first).to_be_visible()
    assert page.get_by_text("ops@example.com").count() == 0
    expect(page.get_by_role("button", name="Retry all")).to_have_count(0)
