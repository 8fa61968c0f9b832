"""One menu in every mode: a deep link that is the very first request of a fresh server shows the
sectioned menu (not Streamlit's list of files), for every page, and the menu's links work from there."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.ui.nav import MENU_KEY, existing_pages, sections
from sandbox.seed import seed_demo
from tests.e2e.conftest import wait_idle
from tests.support.servers import StreamlitServer

pytestmark = pytest.mark.e2e

PAGES = existing_pages()
ACCOUNT = "acme.coffee"  # a demo account: ?account=<username> must survive the first request and a click


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('menu') / 'demo.sqlite'}"
    eng = make_engine(url)
    init_db(eng)
    seed_demo(eng, now=utcnow())
    eng.dispose()
    return url


def url_of(spec) -> str:
    return "/" + spec.url_path


def assert_menu(page, current) -> None:
    menu = page.locator(f".st-key-{MENU_KEY}")
    expect(menu).to_be_visible()
    # the registry's sections, icons and titles, in order, and nothing else (a Material icon's
    # element holds its name as text)
    expected = [t for section, specs in sections().items()
                for t in (section, *(s.icon.removeprefix(":material/").rstrip(":") + s.title for s in specs))]
    expect(menu.locator("[data-testid='stCaptionContainer'], [data-testid='stPageLink']")).to_have_text(expected)
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)  # Streamlit's own menu (the file list)
    expect(page.get_by_test_id("stSidebar").get_by_text("activity feed", exact=True)).to_have_count(0)
    weights = menu.get_by_test_id("stPageLink-NavLink").evaluate_all(
        "links => links.map(a => a.querySelector('p'))"
        ".map(p => getComputedStyle(p).fontWeight >= 600 ? p.innerText : null)")
    assert [w for w in weights if w] == [current.title]  # the current page, and only it, is highlighted


def menu_hrefs(page) -> list[str]:
    return page.locator(f".st-key-{MENU_KEY}").get_by_test_id("stPageLink-NavLink").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))")


@pytest.mark.parametrize("spec", PAGES, ids=[p.url_path or "overview" for p in PAGES])
def test_deep_link_as_first_request_shows_the_menu(demo_db, browser, spec):
    target = next(p for p in PAGES if p != spec and not p.default) if spec.default else PAGES[0]
    server = StreamlitServer({"DATABASE_URL": demo_db})  # fresh: nobody has opened "/" on it
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{server.url}{url_of(spec)}?account={ACCOUNT}")
        wait_idle(page)
        expect(page.get_by_role("heading", name=spec.title, exact=True)).to_be_visible()
        assert_menu(page, spec)
        assert page.locator("[data-testid='stException']").count() == 0
        assert menu_hrefs(page) == [f"{p.url_path}?account={ACCOUNT}" for p in PAGES]  # a new tab keeps the account

        page.locator(f".st-key-{MENU_KEY}").get_by_test_id("stPageLink").filter(has_text=target.title).click()
        expect(page.get_by_role("heading", name=target.title, exact=True)).to_be_visible(timeout=20_000)
        wait_idle(page)
        expect(page).to_have_url(re.compile(rf"^{re.escape(server.url + url_of(target))}(\?.*)?$"), timeout=10_000)
        assert_menu(page, target)
        assert page.locator("[data-testid='stException']").count() == 0
        assert menu_hrefs(page) == [f"{p.url_path}?account={ACCOUNT}" for p in PAGES]  # the account survived the click
    finally:
        context.close()
        server.stop()
