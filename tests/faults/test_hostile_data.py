"""Fault injection: hostile data in a seeded database, every page in a real browser.

A 10 MB payload, 100 KB error texts, alert messages, audit rows and chat answers, 500-level
nested and malformed report JSON (SQLite: JSON stored as text that does not parse), numbers as
strings and wrong types, HTML and Markdown (`<script>`, `<img onerror>`, `[link](javascript:)`,
`:material/home:`, `$x^2$`), emoji and right-to-left text, a 3,000-character chat question and
an injection attempt in the search boxes. Every page must show them as text, shortened where
long, with no exception, no script or onerror element in the DOM, no JavaScript dialog, and
become idle within its timeout.
"""
from __future__ import annotations

import os
import urllib.parse

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import post_queue
from lib.core.timeutil import utcnow
from lib.ui.nav import existing_pages
from sandbox.seed import seed_demo
from tests.e2e.conftest import open_expander, wait_idle
from tests.support.hostile import SCRIPT, USERNAME, add_hostile
from tests.support.search_targets import decoy_of, plant_search_targets

pytestmark = pytest.mark.e2e
IDLE_MS = 45_000  # a page with hostile rows must still finish its run (2 shared cores)
INJECTION = "x'); DROP TABLE post_queue; -- %_\\ <script>alert(1)</script>"
SHOTS = os.environ.get("FAULT_SHOTS")  # a folder: save a screenshot of every step there (to look at)

# an element that would run code: a script in the app (Streamlit's own are in <head>) or one that
# mentions alert, an on* attribute, a javascript: link or source; and any link or image in the app
# that points outside it (Markdown from data rendered as a phishing link or a tracking image)
DANGEROUS_JS = """() => {
  const bad = [];
  const root = document.querySelector('#root') || document.body;
  for (const e of root.querySelectorAll('a[href], img[src], image, source[src], iframe[src], [srcset]')) {
    for (const attr of ['href', 'src', 'srcset', 'xlink:href']) {
      const v = e.getAttribute(attr);
      if (!v) continue;
      let u;
      try { u = new URL(v.split(' ')[0], location.href); } catch (err) { bad.push(e.tagName + ' ' + v); continue; }
      const local = u.protocol === 'data:' || u.protocol === 'blob:' || u.origin === location.origin;
      if (!local) bad.push(e.tagName + ' ' + attr + '=' + v);
    }
  }
  for (const s of document.querySelectorAll('script')) {
    if (s.closest('#root') || s.textContent.includes('alert')) bad.push('script');
  }
  for (const e of document.querySelectorAll('*')) {
    for (const a of e.getAttributeNames()) {
      if (a.startsWith('on')) bad.push(e.tagName + '[' + a + ']');
      if ((a === 'href' || a === 'src') && /^\\s*javascript:/i.test(e.getAttribute(a))) bad.push(e.tagName + '[' + a + ']');
    }
  }
  return bad;
}"""


@pytest.fixture
def hostile_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    seed_demo(eng, now=now)
    hostile = add_hostile(eng, now)
    with eng.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar()
    eng.dispose()
    return sqlite_url, hostile, total


def _check(page, step: str, dialogs: list[str]) -> None:
    wait_idle(page, timeout=IDLE_MS)
    page.wait_for_timeout(300)  # late renders (grids, JSON viewers) get their chance to misbehave
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{step.strip('/').replace('/', '_') or 'home'}.png"))
    assert page.get_by_test_id("stException").count() == 0, (step, page.get_by_test_id("stException").first.inner_text())
    assert page.evaluate(DANGEROUS_JS) == [], step
    assert dialogs == [], (step, dialogs)
    assert len(page.content()) < 3_000_000, step  # nothing megabyte-sized was sent to the browser


def test_every_page_shows_hostile_data_as_text(start_app, hostile_db, page):
    url, hostile, total_rows = hostile_db
    server = start_app({"DATABASE_URL": url})
    page.set_viewport_size({"width": 1500, "height": 1300})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    acct = urllib.parse.quote(USERNAME)

    for p in existing_pages():  # every page, all accounts, default filters
        path = "/" + p.path.removeprefix("pages/").removesuffix(".py")
        page.goto(server.url + ("/" if path == "/overview" else path))
        _check(page, path, dialogs)
    # the same pages narrowed to the hostile account (its name is emoji + right-to-left text)
    for path in ("/agent_status", "/queue_monitor", "/system_alerts", "/activity_feed", "/metrics"):
        page.goto(f"{server.url}{path}?account={acct}")
        _check(page, path + "-account", dialogs)
    expect(page.get_by_text("malformed JSON").first).to_be_visible()  # Metrics says what it skipped

    # Queue Monitor: the DLQ row with the 10 MB payload and the 100 KB error, opened
    page.goto(f"{server.url}/queue_monitor?account={acct}")
    wait_idle(page)
    grid = page.get_by_test_id("stDataFrame").filter(has_text="Retries").first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 17, box["y"] + 35 + 17)  # first row (newest: the 10 MB one)
    detail = page.locator(".st-key-qm_detail")
    expect(detail).to_contain_text(str(hostile.big_row_id), timeout=20_000)
    _check(page, "queue_detail", dialogs)
    expect(detail).to_contain_text(SCRIPT)  # shown, as text
    expect(detail).to_contain_text("more characters not shown")  # the 100 KB error and the payload, shortened
    expect(detail).not_to_contain_text("END-OF-LONG-TEXT")

    # Queue Monitor and Activity Feed searches with an injection attempt: a literal search, no error.
    # Exactly the planted row matches; its decoy (what unescaped % _ \\ would also match) does not.
    plant_search_targets(make_engine(url), INJECTION, username=USERNAME, now=utcnow())
    total_rows += 2  # the two planted queue rows
    page.goto(f"{server.url}/queue_monitor?qm_search={urllib.parse.quote(INJECTION)}")
    _check(page, "queue_search", dialogs)
    expect(page.get_by_role("button", name="Retry all 1 matching")).to_be_visible()
    grid = page.get_by_test_id("stDataFrame").filter(has_text="Retries").first
    expect(grid).to_contain_text(f"Graph said: {INJECTION} (end)")  # the id column is off-screen: the error text
    expect(grid).not_to_contain_text(f"Graph said: {decoy_of(INJECTION)} (end)")
    page.goto(f"{server.url}/activity_feed?feed_q={urllib.parse.quote(INJECTION)}")
    _check(page, "feed_search", dialogs)
    expect(page.get_by_text("Search", exact=True).first).to_be_visible()
    # a text search shows no count (one bounded query per search string): exactly one row on the page
    expect(page.get_by_text("1 rows shown · matching among the newest")).to_be_visible(timeout=30_000)
    expect(page.get_by_test_id("stExpander").first).to_contain_text("audit_hit")
    expect(page.get_by_test_id("stExpander").filter(has_text="audit_decoy")).to_have_count(0)

    # Activity Feed: open the hostile event (newest) with its 100 KB error and nested details
    page.goto(f"{server.url}/activity_feed?account={acct}")
    wait_idle(page)
    open_expander(page, page.get_by_test_id("stExpander").first, "more characters not shown")
    _check(page, "feed_detail", dialogs)

    # System Alerts: open each hostile alert's details (the 100 KB sync_failure; the rate_limit
    # alert with HTML/Markdown in its message and 60-level nested details)
    for alert_type, expected in (("sync_failure", "more characters not shown"),
                                 ("rate_limit", "Instagram rate limit: <script>")):
        page.goto(f"{server.url}/system_alerts?account={acct}&alert_type={alert_type}")
        wait_idle(page)
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid).to_contain_text(alert_type)
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        page.mouse.move(box["x"] + 16, box["y"] + 35 + 17)
        page.wait_for_timeout(500)  # the canvas draws its row markers on hover
        page.mouse.click(box["x"] + 16, box["y"] + 35 + 17)
        alert_detail = page.locator(".st-key-alert-detail")
        expect(alert_detail).to_contain_text(expected, timeout=20_000)
        _check(page, f"alert_detail_{alert_type}", dialogs)
        expect(alert_detail).not_to_contain_text("END-OF-LONG-TEXT")

    # Oversight Chat: the session whose answer is hostile and 100 KB long
    page.goto(f"{server.url}/oversight_chat?account={acct}&session={hostile.session_id}")
    _check(page, "chat_session", dialogs)
    answer = page.get_by_test_id("stChatMessage").nth(3)
    expect(answer).to_contain_text(SCRIPT)
    expect(answer).to_contain_text("**bold** [link](javascript:alert(1)) :material/home: $x^2$")
    expect(answer).to_contain_text("more characters not shown")
    # a 3,000-character question: refused with the limit, kept for editing, nothing sent
    question = ("Why is this stuck? " + SCRIPT + " مرحبا ") * 60
    question = question[:3000]
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(question)
    box.press("Enter")
    _check(page, "chat_long_question", dialogs)
    expect(page.get_by_text("Your question has 3,000 characters")).to_be_visible()
    expect(page.locator(".st-key-oversight_draft textarea")).to_have_value(question)  # kept, whole, for editing

    eng = make_engine(url)
    with eng.connect() as conn:  # nothing was changed or lost by looking
        assert conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar() == total_rows
    eng.dispose()
