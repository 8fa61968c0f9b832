"""One-click sends ask first, in a real browser: the Weekly digest's "Send now" and the
Notifications page's "Send test" open a confirmation naming the recipients (route labels: scheme,
host, fingerprint; never the webhook path), and nothing reaches the receiver until it is
confirmed; Cancel sends nothing."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from lib.notify.routes import route_id
from sandbox.notify_sink import NotifySink
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e


def _digest_messages(sink):
    return [m for m in sink.received() if m["title"].startswith("Weekly digest")]


def test_send_now_names_the_routes_and_sends_only_when_confirmed(start_app, demo_url, page):
    with NotifySink() as sink:
        hook = f"json://127.0.0.1:{sink.port}/webhook/S3CRETW3BHOOK"
        other = "jsons://hooks.example.invalid/hook/0THERS3CRET"  # never confirmed, never sent
        server = start_app({"DATABASE_URL": demo_url, "ALERT_NOTIFY_URLS": hook,
                            "ALERT_NOTIFY_URLS_CRITICAL": other, "ALERT_NOTIFY_TIMEOUT_S": "5"})
        page.goto(server.url + "/digest")
        wait_idle(page)
        page.get_by_role("button", name="Send now").click()
        dialog = page.get_by_test_id("stDialog")
        expect(dialog).to_contain_text("to 2 routes")
        grid_text = dialog.get_by_test_id("stText").inner_text()
        assert f"json://127.0.0.1 #{route_id(hook)[1:7]}" in grid_text
        assert f"jsons://hooks.example.invalid #{route_id(other)[1:7]}" in grid_text
        assert "S3CRETW3BHOOK" not in page.content() and "0THERS3CRET" not in page.content()
        assert _digest_messages(sink) == []  # asking sent nothing
        dialog.get_by_role("button", name="Cancel").click()
        wait_idle(page)
        expect(page.get_by_test_id("stDialog")).to_have_count(0)
        assert _digest_messages(sink) == []

        page.get_by_role("button", name="Send now").click()
        page.get_by_test_id("stDialog").get_by_role("button", name="Send to 2 routes").click()
        wait_idle(page)
        expect(page.get_by_text("Digest sent to 1 of 2 routes")).to_be_visible(timeout=30_000)
        assert len(_digest_messages(sink)) == 1
        assert "S3CRETW3BHOOK" not in page.content()


def test_send_test_names_the_route_and_sends_only_when_confirmed(start_app, demo_url, page):
    with NotifySink() as sink:
        hook = f"json://127.0.0.1:{sink.port}/webhook/S3CRETW3BHOOK"
        server = start_app({"DATABASE_URL": demo_url, "ALERT_NOTIFY_URLS": hook, "ALERT_NOTIFY_TIMEOUT_S": "5"})
        page.goto(server.url + "/notifications")
        wait_idle(page)
        page.locator(".st-key-route-test-0").get_by_role("button").click()
        dialog = page.get_by_test_id("stDialog")
        expect(dialog).to_contain_text(f"json://127.0.0.1 #{route_id(hook)[1:7]}")
        assert sink.received() == []
        dialog.get_by_role("button", name="Cancel").click()
        wait_idle(page)
        assert sink.received() == []
        page.locator(".st-key-route-test-0").get_by_role("button").click()
        page.get_by_test_id("stDialog").get_by_role("button", name="Send test").click()
        wait_idle(page)
        expect(page.get_by_text("Test notification delivered")).to_be_visible()
        assert [m["title"] for m in sink.received()] == ["[TEST] Agent Dashboard notification"]
        assert "S3CRETW3BHOOK" not in page.content()
