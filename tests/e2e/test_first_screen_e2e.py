"""The first screen at 1440x900 in a real browser: relative times of fresh events read as past on every
page, a retry says when its row will wait or fail again, the period comparison compares per report
when a day is missing, and the weekly digest speaks of one week with its schedule in words."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.activity.heartbeats import record_beat
from lib.activity.worker_ticks import record_tick_finish, record_tick_start
from lib.core.db import init_db, make_engine
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.schema import post_queue, queue_pauses
from lib.core.timeutil import utcnow
from lib.queue.store import pause
from lib.ui.metrics import Keys as MetricsKeys
from tests.e2e.conftest import click_until, open_expander, open_first_queue_row, wait_idle
from tests.support.queue_rows import add_account, insert_rows, queue_row
from tests.support.reports import add_accounts, add_reports, report

pytestmark = pytest.mark.e2e

OPS = Actor("ops@example.com", OPERATOR)


def main_text(page) -> str:
    """What the page says, as a person reads it (zero-width breaks the Markdown escaping adds removed)."""
    return page.get_by_test_id("stMain").inner_text().replace("\u200b", "")


# -- relative times ---------------------------------------------------------------------------------

def _fresh_events(eng, account) -> None:
    """A heartbeat, a worker tick and an account pause from this very moment."""
    now = utcnow()
    with eng.begin() as conn:
        record_beat(conn, "agent-a", now=now)
        tick = record_tick_start(conn, now=now, host="e2e", pid=1)
        record_tick_finish(conn, tick, now=now, claimed=0, sent=0, failed=0, dlq=0, rescued=0, error=None)
        conn.execute(sa.delete(queue_pauses))
        pause(conn, actor=OPS, now=now, business_account_id=account, reason="checking the captions")


# each page's relative times of those events: (label of the phrase, pattern that finds its time)
FRESH_TIMES = {
    "/overview": [("worker ticked", r"worker ticked (\S+ \S+ \S+)"),
                  ("paused", r"by ops@example\.com (\S+ \S+ \S+)")],
    "/agent_status": [("last beat", r"Last beat\s+(\S+ \S+ \S+)")],
    "/queue_monitor": [("last tick", r"Worker: last tick (\S+ \S+ \S+)"),
                       ("paused", r"by ops@example\.com (\S+ \S+ \S+)")],
    "/accounts": [("paused", r"by ops@example\.com (\S+ \S+ \S+)")],
}


def test_fresh_events_read_as_past_never_in_the_future(start_app, sqlite_url, page):
    """Pages round their cached "now" down (5 or 30 s) for cache keys; a time formatted from it read
    "in 4 s" for an event of a moment ago. Each page is opened right after fresh events, so the
    rounded time lies before them."""
    eng = make_engine(sqlite_url)
    init_db(eng)
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", utcnow())
        insert_rows(conn, [queue_row(account=acc, now=utcnow(), status="pending", retry_count=0)])
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": sqlite_url})
    seen = {}
    for path, phrases in FRESH_TIMES.items():
        _fresh_events(eng, acc)
        page.goto(server.url + path)
        wait_idle(page)
        expect(page.get_by_test_id("stMain")).to_contain_text(re.compile(r"\d+ s ago"))
        text = main_text(page)
        for label, pattern in phrases:
            found = re.search(pattern, text)
            assert found, (path, label, text[:2000])
            seen[(path, label)] = found.group(1)
        assert page.locator("[data-testid='stException']").count() == 0
    eng.dispose()
    assert all(re.fullmatch(r"\d+ s ago", v) for v in seen.values()), seen  # never "in 4 s"


# -- retry of a row that will wait, or fail again ---------------------------------------------------

@pytest.fixture
def retry_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        gone, fine = add_account(conn, "gone_shop", now), add_account(conn, "fine_shop", now)
        conn.execute(sa.update(accounts).where(accounts.c.id == gone).values(is_connected=False))
        waits = queue_row(account=gone, now=now, age_min=1, error="HTTP 500 oops", error_category="transient")
        permanent = queue_row(account=fine, now=now, age_min=5, error_category="permanent",
                              error="HTTP 400 code 100/33 on POST /c1/replies: the comment was deleted")
        insert_rows(conn, [waits, permanent])
    eng.dispose()
    return sqlite_url, waits["id"], permanent["id"]


def _open_first_row_and_retry(page, says: str | None = None) -> None:
    dialog = open_first_queue_row(page)
    if says:
        expect(dialog).to_contain_text(says)
    else:
        expect(dialog).not_to_contain_text("Held back")
    dialog.get_by_role("button", name="Retry this row").click()
    expect(dialog).to_have_count(0)


def test_retry_says_when_the_row_waits_and_warns_of_a_permanent_error(start_app, retry_db, page):
    url, waits, permanent = retry_db
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": url})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_text("Rows 1–2 of 2, newest attempt first")).to_be_visible()
    # the table says which row is held back before anyone retries it
    grid = page.get_by_test_id("stDataFrame").filter(has_text="Retries").first
    expect(grid).to_contain_text("reconnect")
    headers = [h.strip() for h in grid.locator("th").all_inner_texts()]
    cells = [[c.strip() for c in tr.locator("td").all_inner_texts()] for tr in grid.locator("tbody tr").all()]
    held = [dict(zip(headers, c)).get("Waits for") for c in cells if c]
    assert held == ["reconnect", ""], (headers, cells)
    for name in ("Account", "Waits for", "Error", "Retries", "Last attempt", "Created"):  # all on screen at 1440 px
        assert name in headers, headers

    _open_first_row_and_retry(page, says="Held back: its account is disconnected")  # that row
    alerts = page.get_by_test_id("stAlert")
    expect(alerts.filter(has_text="Retry: 1 row moved back to pending; 1 of them wait")).to_be_visible()
    expect(alerts.filter(has_text="but it waits: its account is disconnected")).to_be_visible()
    expect(page.get_by_text("the worker picks them up on its next tick")).to_have_count(0)  # not promised

    expect(page.get_by_text("Rows 1–1 of 1, newest attempt first")).to_be_visible()
    expect(grid).not_to_contain_text("Waits for")  # no row on the page is held: no column
    _open_first_row_and_retry(page)  # the row whose comment was deleted
    expect(alerts.filter(has_text="Its last error was permanent (HTTP 400 code 100/33")).to_be_visible()
    expect(alerts.filter(has_text="unless its cause was fixed, it will fail the same way")).to_be_visible()

    eng = make_engine(url)
    with eng.connect() as conn:
        status = dict(conn.execute(sa.select(post_queue.c.id, post_queue.c.status)).all())
    eng.dispose()
    assert status == {waits: "pending", permanent: "pending"}  # both retried, as asked
    assert page.locator("[data-testid='stException']").count() == 0


# -- the period comparison when a day has no report -------------------------------------------------

def test_period_comparison_compares_per_report_when_a_day_is_missing(start_app, sqlite_url, page):
    eng = make_engine(sqlite_url)
    init_db(eng)
    last = utcnow().date() - timedelta(days=1)
    missing = last - timedelta(days=2)  # a day of period B without its daily report
    with eng.begin() as conn:
        (acc,) = add_accounts(conn, "steady_shop")
        # the same numbers every day: a missing day must not read as a fall
        add_reports(conn, [report(acc, "daily", last - timedelta(days=d))
                           for d in range(14) if last - timedelta(days=d) != missing])
    eng.dispose()
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": sqlite_url})
    page.goto(server.url + "/metrics")
    wait_idle(page)
    click_until(page, lambda: page.locator(f".st-key-{MetricsKeys.TYPE}").get_by_text("Daily").click(),
                lambda ms: expect(page.get_by_text("13 daily reports · 1 account")).to_be_visible(timeout=ms))
    expander = page.get_by_test_id("stExpander").filter(has_text="Period comparison")
    expander.scroll_into_view_if_needed()
    open_expander(page, expander, "Basis")
    # the caption counts each period's reports (period B ends today, so it lacks today's too)
    counts = re.search(r"steady_shop (\d+) vs (\d+)", expander.inner_text())
    assert counts, expander.inner_text()
    n_a, n_b = int(counts.group(1)), int(counts.group(2))
    assert n_a == 7 and n_b < 7, counts.group(0)
    grid = expander.get_by_test_id("stDataFrame")
    grid.scroll_into_view_if_needed()
    expect(grid).to_contain_text(f"per report ({n_a} vs {n_b})")
    headers = [h.strip() for h in grid.locator("th").all_inner_texts()]
    rows = {r["Metric"]: r for r in (dict(zip(headers, (c.strip() for c in tr.locator("td").all_inner_texts())))
                                     for tr in grid.locator("tbody tr").all()) if r.get("Metric")}
    posts = rows["Posts published"]  # two a day, every day that has a report
    assert (posts["Period A"], posts["Period B"]) == (str(2 * n_a), str(2 * n_b)), posts
    assert posts["Basis"] == f"per report ({n_a} vs {n_b})", posts
    assert float(re.sub(r"[^0-9.+-]", "", posts["Change %"])) == 0, posts  # fewer days, not fewer posts a day
    assert page.locator("[data-testid='stException']").count() == 0


# -- the weekly digest ------------------------------------------------------------------------------

SEVERITIES = ("CRITICAL", "ERROR", "WARNING", "INFO")


def test_digest_schedule_in_words_one_week_and_alerts_by_severity(start_app, demo_url, page):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": demo_url, "DIGEST_CRON": "0 8 * * 1"})
    page.goto(server.url + "/digest")
    wait_idle(page)
    expect(page.get_by_text("every Monday at 08:00 UTC")).to_be_visible()
    text = main_text(page)
    assert "0 8 * * 1" not in text and "\\*" not in text, text[:1500]
    title = page.get_by_role("heading", name=re.compile(r"^Weekly digest · ")).inner_text()
    week = title.rsplit(" · ", 1)[1].strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d – \d{4}-\d\d-\d\d", week), title
    kpis = next(line for line in text.splitlines() if line.startswith("KPIs"))
    assert f"weekly report {week}," in kpis, (week, kpis)  # the title's week is the KPIs' week
    alerts = next(line for line in text.splitlines() if line.startswith("Open alerts"))
    found = [s for s in SEVERITIES if s in alerts]
    assert len(found) >= 2 and [alerts.index(s) for s in found] == sorted(alerts.index(s) for s in found), alerts
    assert page.locator("[data-testid='stException']").count() == 0
