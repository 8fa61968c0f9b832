"""Markdown from data is never rendered, in a real browser: an account named like a phishing link
with a tracking image (`[Reset your password](https://evil.example/login) ![b](http://.../beacon.png)`)
and a hostile agent, alert and pause reason. Every page, for all accounts and narrowed to that
account, must show no link or image that points outside the app, and the beacon (a real HTTP
server on 127.0.0.1) must receive no request, viewers and operators alike."""
from __future__ import annotations

import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import instagram_business_accounts, system_alerts
from lib.core.timeutil import utcnow
from lib.queue.store import pause
from lib.ui.nav import existing_pages
from sandbox.seed import seed_demo
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e

# links and images whose address leaves the app's origin (data: and blob: stay inside the page)
OUTSIDE_JS = """() => {
  const bad = [];
  const root = document.querySelector('#root') || document.body;
  for (const e of root.querySelectorAll('a[href], img[src], image, source[src], iframe[src], [srcset]')) {
    for (const attr of ['href', 'src', 'srcset', 'xlink:href']) {
      const v = e.getAttribute(attr);
      if (!v) continue;
      let u;
      try { u = new URL(v.split(' ')[0], location.href); } catch (err) { bad.push(e.tagName + ' ' + v); continue; }
      if (u.protocol === 'data:' || u.protocol === 'blob:') continue;
      if (u.origin !== location.origin) bad.push(e.tagName + ' ' + attr + '=' + v);
    }
  }
  return bad;
}"""


class Beacon:
    """Counts every request that reaches it (an image the page should never load)."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def beacon():
    b = Beacon()
    yield b
    b.close()


def hostile_name(port: int) -> str:
    return f"[Reset your password](https://evil.example/login) ![b](http://127.0.0.1:{port}/beacon.png)"


@pytest.fixture
def phishing_db(sqlite_url, beacon):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    seed_demo(eng, now=now)
    name = hostile_name(beacon.port)
    acc = uuid.uuid4()
    with eng.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts).values(
            id=acc, username=name, instagram_business_id="17841400000077777", access_token="tok",
            is_connected=True, created_at=now, updated_at=now))
        conn.execute(sa.insert(system_alerts).values(
            id=uuid.uuid4(), alert_type="auth_failure", message=f"token expired for {name}",
            business_account_id=acc, details={"note": name}, resolved=False, created_at=now, updated_at=now))
        pause(conn, actor=Actor(name, OPERATOR), now=now, business_account_id=acc, reason=name)
    eng.dispose()
    return sqlite_url, name


def _visit_all(page, server, name, beacon):
    acct = urllib.parse.quote(name)
    paths = ["/" + p.path.removeprefix("pages/").removesuffix(".py") for p in existing_pages()]
    for path in paths:
        path = "/" if path == "/overview" else path
        for url in (server.url + path, f"{server.url}{path}?account={acct}"):
            page.goto(url)
            wait_idle(page, timeout=45_000)
            page.wait_for_timeout(300)
            assert page.evaluate(OUTSIDE_JS) == [], url
            assert page.get_by_test_id("stException").count() == 0, url
    assert beacon.hits == []


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_no_page_renders_a_link_or_image_from_data(start_app, phishing_db, beacon, page, role):
    url, name = phishing_db
    env = {"DATABASE_URL": url}
    if role == "viewer":
        env["OPERATOR_EMAILS"] = "someone-else@example.com"
    server = start_app(env)
    page.set_viewport_size({"width": 1500, "height": 1300})
    _visit_all(page, server, name, beacon)
    # the two places the review found: the digest's heading and the Pause button, shown as text
    page.goto(f"{server.url}/digest?account={urllib.parse.quote(name)}")
    wait_idle(page)
    expect(page.get_by_text("[Reset your password](https://evil.example/login)").first).to_be_visible()
    page.goto(f"{server.url}/queue_monitor?account={urllib.parse.quote(name)}")
    wait_idle(page)
    page.get_by_test_id("stExpander").filter(has_text="Pause the queue").locator("summary").click()
    expect(page.get_by_role("button", name="Pause for [Reset your password]")).to_be_visible()
    assert page.evaluate(OUTSIDE_JS) == [] and beacon.hits == []
