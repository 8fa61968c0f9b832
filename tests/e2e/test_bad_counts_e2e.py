"""Counts that are bad when above zero stand out at 1440x900: the Overview's DLQ and critical alerts
carry a red note, plain counts none; the Activity Feed puts its failures first and in red."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.audit import audit_row
from lib.core.db import make_engine
from lib.core.schema import audit_log
from lib.core.timeutil import utcnow
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e


def rgb(locator) -> tuple[int, int, int]:
    colour = locator.evaluate("e => getComputedStyle(e).color")
    return tuple(int(x) for x in re.findall(r"\d+", colour)[:3])


def is_red(colour) -> bool:
    r, g, b = colour
    return r > g + 60 and r > b + 60


def metric(page, label):
    return page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))


def test_overview_colours_dlq_and_critical(start_app, demo_url, page):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": demo_url})
    page.goto(server.url + "/overview")
    wait_idle(page)
    dlq, critical, pending = metric(page, "DLQ"), metric(page, "Critical"), metric(page, "Pending")
    expect(dlq.get_by_test_id("stMetricValue")).not_to_have_text("0")  # the demo has dead-lettered rows
    expect(dlq.get_by_test_id("stMetricDelta")).to_have_text("triage")
    assert is_red(rgb(dlq.get_by_test_id("stMetricDelta")))
    expect(critical.get_by_test_id("stMetricDelta")).to_be_visible()
    assert is_red(rgb(critical.get_by_test_id("stMetricDelta")))
    expect(pending.get_by_test_id("stMetricDelta")).to_have_count(0)  # a plain count stays plain
    assert page.locator("[data-testid='stException']").count() == 0


def test_activity_feed_shows_its_failures_first(start_app, demo_url, page):
    eng = make_engine(demo_url)
    now = utcnow()
    with eng.begin() as conn:  # the two newest events: one failure among successes
        conn.execute(sa.insert(audit_log), [
            audit_row(event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
                      resource_id="res-failed", now=now, success=False, error_message="(#100) deleted"),
            audit_row(event_type="post_published", action="publish", resource_type="instagram_post",
                      resource_id="res-ok", now=now, success=True),
        ])
    eng.dispose()
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": demo_url})
    page.goto(server.url + "/activity_feed")
    wait_idle(page)
    expect(page.get_by_text(re.compile(r"\d+ of these \d+ events failed"))).to_be_visible()
    failed = page.get_by_test_id("stExpander").filter(has_text="res-failed")
    expect(failed.locator("summary")).to_contain_text(re.compile(r"^\s*\S*\s*failure"))  # the badge leads
    expect(page.get_by_text("no user")).to_have_count(0)
    assert page.locator("[data-testid='stException']").count() == 0
