"""Exports take turns, in a real browser on PostgreSQL: two Activity Feed exports are started and
held (a test transaction locks audit_log, so each waits inside its export turn, deterministically);
another page then says that another export is running; once the lock goes, both files arrive."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import psycopg2
import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.alerts.store import open_or_update_alert
from lib.core.audit import audit_row
from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log
from lib.core.timeutil import utcnow
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e
WAIT = 60_000


@pytest.fixture
def pg_feed(pg_cluster):
    name = "e_" + uuid.uuid4().hex[:12]
    url = pg_cluster.create_database(name)
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        conn.execute(sa.insert(audit_log), [audit_row(event_type="post_published", action="publish",
                                                      resource_type="instagram_post", resource_id=f"r{i}",
                                                      now=now - timedelta(minutes=i), success=True)
                                            for i in range(50)])
        open_or_update_alert(conn, alert_type="rate_limit", message="slow down", now=now)  # System Alerts' export
    eng.dispose()
    return url, pg_cluster.port, name


def _waiting_on_locks(port: int, name: str) -> int:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        (name,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_a_third_export_is_told_another_is_running(start_app, pg_feed, browser):
    url, port, name = pg_feed
    server = start_app({"DATABASE_URL": url, "POLL_INTERVAL_S": "3600"})
    pages, downloads = [], []
    for _ in range(2):
        p = browser.new_context(accept_downloads=True).new_page()
        p.on("download", lambda d: downloads.append(d))
        p.goto(server.url + "/activity_feed")
        wait_idle(p, WAIT)
        expect(p.locator(".st-key-feed-export").get_by_role("button")).to_be_visible(timeout=WAIT)
        pages.append(p)
    lock = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=name)
    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
        for p in pages:
            p.locator(".st-key-feed-export").get_by_role("button").click()
        deadline = time.monotonic() + 30
        while _waiting_on_locks(port, name) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _waiting_on_locks(port, name) == 2  # both exports hold a turn, waiting on the lock

        third = browser.new_context().new_page()
        third.goto(server.url + "/system_alerts")
        wait_idle(third, WAIT)
        expect(third.get_by_text("Another export is running: this app builds at most 2 at once")).to_be_visible()
        assert downloads == []
    finally:
        lock.rollback()
        lock.close()
    deadline = time.monotonic() + 60
    while len(downloads) < 2 and time.monotonic() < deadline:
        pages[0].wait_for_timeout(200)
    assert len(downloads) == 2
    for d in downloads:
        lines = open(d.path(), "rb").read().decode("utf-8").splitlines()
        assert lines[0].startswith("id,created_at,event_type") and len(lines) == 51  # header + every row
    third.reload()
    wait_idle(third, WAIT)
    expect(third.get_by_text("Another export is running")).to_have_count(0)
