"""The incident page in a real browser for a real sequence: an agent stops beating for three minutes, the
watchdog raises agent_down, an operator acknowledges it on the page with a comment, the agent restarts and
the watchdog resolves it -- the page follows by live refresh, and the postmortem download holds the
timeline in order with the comment and the durations."""
import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from lib.activity.heartbeats import record_beat
from lib.alerts.incidents import IncidentFilter, list_incidents
from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.health.watchdog import sync_agent_down_alerts
from lib.ui.incidents import Keys
from tests.e2e.conftest import click_until, wait_idle

pytestmark = pytest.mark.e2e
WAIT = 30_000


def metric(page, label):
    return page.get_by_test_id("stMetric").filter(has_text=label)


def expect_metric_without(page, label, text):
    """A metric that no longer shows `text` (a live refresh may briefly keep the old element beside the new)."""
    expect(metric(page, label).filter(has_not_text=text)).not_to_have_count(0, timeout=WAIT)


def test_agent_stopped_acknowledged_with_a_comment_and_restarted(start_app, sqlite_url, page):
    eng = make_engine(sqlite_url)
    init_db(eng)
    stopped = utcnow() - timedelta(seconds=180)
    with eng.begin() as conn:
        for i in range(30, -1, -1):  # beating every 10 s until it stopped three minutes ago
            record_beat(conn, "engagement", now=stopped - timedelta(seconds=10 * i))
        # the watchdog's passes every 30 s since: down 60 s after the last beat, raised once
        for i in range(1, 7):
            sync_agent_down_alerts(conn, now=stopped + timedelta(seconds=30 * i))
        (s,) = list_incidents(conn, filters=IncidentFilter())
    assert s.opened_at == stopped + timedelta(seconds=90)

    server = start_app({"DATABASE_URL": sqlite_url, "POLL_INTERVAL_S": "2"})
    page.set_default_timeout(WAIT)
    page.goto(f"{server.url}/incidents?incident={s.alert_id}")
    wait_idle(page)
    expect(page.get_by_role("heading", name="agent_down · agent engagement")).to_be_visible()
    expect(metric(page, "Time to acknowledge").first).to_contain_text("—")
    expect(metric(page, "Time to resolve").first).to_contain_text("open")

    page.locator(f".st-key-{Keys.ACK_NOTE} input").fill("restarting the engagement agent")
    page.locator(f".st-key-{Keys.ACK_NOTE} input").press("Enter")
    click_until(page, lambda: page.locator(f".st-key-{Keys.ACK}").get_by_role("button").click(),
                lambda ms: expect(page.get_by_text("Acknowledged: repeat digests stop")).to_be_visible(timeout=ms))
    expect_metric_without(page, "Time to acknowledge", "—")

    with eng.begin() as conn:  # the agent is back; the watchdog's next pass resolves the alert
        record_beat(conn, "engagement", now=utcnow())
        assert sync_agent_down_alerts(conn, now=utcnow())["resolved"] == ["engagement"]
    eng.dispose()
    # live refresh (every 2 s here) brings the resolution without a reload
    expect_metric_without(page, "Time to resolve", "open")
    assert page.locator("[data-testid='stException']").count() == 0

    with page.expect_download(timeout=WAIT) as info:
        page.locator(f".st-key-{Keys.EXPORT}").get_by_role("button").click()
    md = open(info.value.path(), encoding="utf-8").read()
    assert md.startswith("# Postmortem draft: agent\\_down · engagement")
    assert "- State: resolved" in md and "- Time to acknowledge: " in md
    rows = [line for line in md.splitlines() if line.startswith("| 20")]
    kinds = [row.split("**")[1] for row in rows]
    assert kinds == ["cause", "opened", "acknowledged", "cause", "resolved"], rows
    assert "restarting the engagement agent" in rows[2]
    assert re.search(r"after a gap of [34] min", rows[3]), rows[3]  # three minutes, plus the test's own time

