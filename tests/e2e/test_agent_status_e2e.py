"""The app in a real browser: Agent Status with an alive and a down agent; deep link first."""
import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from lib.activity.heartbeats import record_beat
from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.ui.agent_status import Keys
from lib.ui.nav import MENU_KEY, existing_pages
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e


@pytest.fixture
def beats_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        for minute in range(120):
            record_beat(conn, "agent-a", now=now - timedelta(minutes=minute))
            if minute >= 20:
                record_beat(conn, "agent-b", now=now - timedelta(minutes=minute))
    eng.dispose()
    return sqlite_url


def assert_card(page, agent_id, state):
    card = page.locator(f".st-key-{Keys.card(agent_id)}")
    expect(card).to_contain_text(state)
    expect(card).not_to_contain_text({"alive": "down", "down": "alive"}[state])


def test_deep_link_first_request_runs_through_the_guard(start_app, beats_db, page):
    server = start_app({"DATABASE_URL": beats_db})
    page.goto(server.url + "/agent_status")  # the very first request on a fresh server
    wait_idle(page)
    expect(page.get_by_role("heading", name="Agent Status")).to_be_visible()
    expect(page.get_by_text("1 of 2 agents down: agent-b")).to_be_visible()
    assert_card(page, "agent-a", "alive")
    assert page.locator("[data-testid='stException']").count() == 0
    # the sidebar offers the other pages even in this mode (every page: tests/e2e/test_menu_e2e.py)
    expect(page.get_by_test_id("stSidebar").get_by_text("Business account")).to_be_visible()
    expect(page.locator(f".st-key-{MENU_KEY}").get_by_text("Queue Monitor")).to_be_visible()


def test_app_loads_and_agent_status_shows_alive_and_down(start_app, beats_db, page):
    server = start_app({"DATABASE_URL": beats_db})
    page.goto(server.url + "/")
    wait_idle(page)
    if len(existing_pages()) > 1:  # no menu for a one-page app
        page.locator(f".st-key-{MENU_KEY}").get_by_text("Agent Status").click()
        wait_idle(page)
    expect(page.get_by_role("heading", name="Agent Status")).to_be_visible()
    expect(page.get_by_text("1 of 2 agents down")).to_be_visible()
    assert_card(page, "agent-a", "alive")
    assert_card(page, "agent-b", "down")
    expect(page.get_by_test_id("stPlotlyChart")).to_be_visible()
    assert page.locator("[data-testid='stException']").count() == 0


def test_dead_database_shows_clear_message(start_app, page, tmp_path):
    server = start_app({"DATABASE_URL": "postgresql://app:secret@127.0.0.1:1/nowhere"})
    page.goto(server.url + "/agent_status")
    wait_idle(page)
    expect(page.get_by_text("Database unavailable at postgresql+psycopg2://app:***@127.0.0.1:1/nowhere")).to_be_visible()
    assert "app:secret@" not in page.content()  # the password is masked
    assert page.locator("[data-testid='stException']").count() == 0


def test_down_agent_says_since_when_and_availability_its_span(start_app, beats_db, page):
    """A down agent's card: "Down since HH:MM, 20 min" (its last beat), never "Up since: —"; with two
    hours of beats, availability says it covers two hours, not 24 h or 7 d."""
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": beats_db})
    page.goto(server.url + "/agent_status")
    wait_idle(page)
    down = page.locator(f".st-key-{Keys.card('agent-b')}")
    expect(down).to_contain_text("down")
    expect(down).to_contain_text(re.compile(r"Down since \d{4}-\d\d-\d\d \d\d:\d\d \w+, 2\d min"))
    expect(down).not_to_contain_text("Up since")
    expect(down).to_contain_text(re.compile(r"24 h \(over 1 h \d+ min\) .*· 7 d \(over 1 h \d+ min\)"))
    alive = page.locator(f".st-key-{Keys.card('agent-a')}")
    expect(alive).to_contain_text("Up since")
    assert page.locator("[data-testid='stException']").count() == 0
