"""Notifications in a real browser: a deep link to /notifications on a fresh server, a test message
to a real json:// receiver, a silence created and listed, and an alert acknowledged on System Alerts."""
from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import instagram_business_accounts, system_alerts
from lib.core.timeutil import utcnow
from lib.notify.routes import route_id
from lib.notify.silences import acknowledgements
from lib.ui.nav import MENU_KEY
from sandbox.notify_sink import NotifySink
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e
SHOTS = Path(os.environ.get("TMPDIR", "/tmp"))


@pytest.fixture
def alerts_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    acc = uuid.uuid4()
    with eng.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts).values(id=acc, username="acme_store", is_connected=True))
        conn.execute(sa.insert(system_alerts), [
            {"id": uuid.uuid4(), "alert_type": "auth_failure", "message": "token expired", "business_account_id": acc,
             "details": {"source": "e2e"}, "resolved": False, "created_at": now - timedelta(minutes=2),
             "updated_at": now - timedelta(minutes=2)},
        ])
    eng.dispose()
    return sqlite_url


def test_notifications_page_deep_link_test_send_silence_and_acknowledge(start_app, alerts_db, page):
    with NotifySink() as sink:
        url = f"json://bot:S3cretPassw0rd@127.0.0.1:{sink.port}/notify"
        server = start_app({"DATABASE_URL": alerts_db, "ALERT_NOTIFY_URLS": url, "ALERT_NOTIFY_TIMEOUT_S": "5"})
        page.goto(server.url + "/notifications")  # the first request of a fresh server is a deep link
        wait_idle(page)
        # the one menu (lib/ui/nav.py, drawn by the guard) lists the page even on a fresh server
        expect(page.locator(f".st-key-{MENU_KEY}")).to_contain_text("Notifications", timeout=30_000)
        label = f"json://127.0.0.1 #{route_id(url)[1:7]}"
        expect(page.get_by_text(label)).to_be_visible()
        assert "S3cretPassw0rd" not in page.content()
        page.locator(".st-key-route-test-0").get_by_role("button").click()
        page.get_by_test_id("stDialog").get_by_role("button", name="Send test").click()  # it asks first
        wait_idle(page)
        expect(page.get_by_text("Test notification delivered")).to_be_visible()
        assert [m["title"] for m in sink.received()] == ["[TEST] Agent Dashboard notification"]

        page.get_by_label("Reason (audited)").fill("token rotation")
        page.locator(".st-key-sil-type").click()
        page.get_by_role("option", name="auth_failure").click()
        page.get_by_role("button", name="Create silence").click()
        wait_idle(page)
        expect(page.get_by_text("Silence created until")).to_be_visible()
        expect(page.get_by_test_id("stDataFrame").first).to_contain_text("type=auth_failure")
        page.screenshot(path=str(SHOTS / "notifications-page.png"), full_page=True)

        page.goto(server.url + "/system_alerts")
        wait_idle(page)
        grid = page.get_by_test_id("stDataFrame")
        expect(grid).to_contain_text("silenced")
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        page.mouse.move(box["x"] + 16, box["y"] + 35 + 17)
        page.wait_for_timeout(500)
        page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
        wait_idle(page)
        button = page.locator(".st-key-alerts-ack").get_by_role("button")
        expect(button).to_contain_text("Acknowledge selected (1)")
        button.click()
        wait_idle(page)
        expect(page.get_by_text("Acknowledged 1 alert")).to_be_visible()
        page.screenshot(path=str(SHOTS / "system-alerts-ack.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0
    eng = make_engine(alerts_db)
    with eng.connect() as conn:
        [(alert_id,)] = conn.execute(sa.select(system_alerts.c.id)).all()
        assert acknowledgements(conn, [alert_id])[alert_id].by == "local"
