"""Metrics page in a real browser: Plotly charts render, report type and account switch them,
the reports CSV holds the flattened dotted columns."""
import csv
import io
import time
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.ui.metrics import Keys
from tests.e2e.conftest import wait_idle
from tests.support.reports import add_accounts, add_reports, report

pytestmark = pytest.mark.e2e

PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(g => ({traces: g.data.length, names: g.data.map(t => t.name), points: g._fullData.map(t => t.x.length),
                yaxes: Object.keys(g._fullLayout).filter(k => /^yaxis[0-9]*$/.test(k)).sort().map(k => ({
                    name: k, side: g._fullLayout[k].side, overlaying: g._fullLayout[k].overlaying || null,
                    title: g._fullLayout[k].title.text || null,
                    ticks: g.querySelectorAll('.' + k.replace('axis', '') + 'tick').length}))}))"""


@pytest.fixture
def reports_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    today = utcnow().date()
    with eng.begin() as conn:
        alpha, beta = add_accounts(conn, "alpha", "beta")
        rows = []
        for acc, base in ((alpha, 1000), (beta, 300)):
            rows += [report(acc, "weekly", today - timedelta(days=1 + 7 * w), reach=base + w) for w in range(6)]
            rows += [report(acc, "daily", today - timedelta(days=d), reach=base + d) for d in range(1, 21)]
        add_reports(conn, rows)
    eng.dispose()
    return sqlite_url


def reach_chart(page, ready, timeout_s: float = 15.0) -> dict:
    """The Instagram-metrics chart (its traces start with Reach) once `ready(chart)` holds:
    Plotly draws after the script run ends, so poll a little."""
    deadline = time.monotonic() + timeout_s
    chart = None
    while time.monotonic() < deadline:
        chart = next((c for c in page.evaluate(PLOTS) if c["names"] and c["names"][0].startswith("Reach")), None)
        if chart is not None and ready(chart):
            return chart
        page.wait_for_timeout(200)
    return chart or {}


def test_charts_follow_report_type_and_account(start_app, reports_db, page):
    server = start_app({"DATABASE_URL": reports_db})
    page.goto(server.url + "/metrics")
    wait_idle(page)
    expect(page.get_by_role("heading", name="Metrics")).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    assert page.locator("[data-testid='stException']").count() == 0
    weekly = reach_chart(page, lambda c: True)
    # reach and impressions for two accounts; six weekly reports each
    assert weekly["traces"] == 4
    assert "Reach · alpha" in weekly["names"] and "Reach · beta" in weekly["names"]
    assert set(weekly["points"]) == {6}

    page.locator(f".st-key-{Keys.TYPE}").get_by_text("Daily").click()
    wait_idle(page)
    expect(page.get_by_text("40 daily reports · 2 accounts")).to_be_visible()
    daily = reach_chart(page, lambda c: set(c["points"]) == {20})
    assert daily["traces"] == 4 and set(daily["points"]) == {20}

    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="beta").click()
    wait_idle(page)
    expect(page.get_by_text("20 daily reports · 1 account")).to_be_visible()
    one = reach_chart(page, lambda c: c["traces"] == 2)
    assert one["names"] == ["Reach", "Impressions"]
    assert page.locator("[data-testid='stException']").count() == 0


def test_reports_csv_has_flattened_columns(start_app, reports_db, page):
    server = start_app({"DATABASE_URL": reports_db})
    page.goto(server.url + "/metrics")
    wait_idle(page)
    with page.expect_download() as info:
        page.locator(f".st-key-{Keys.CSV_REPORTS}").get_by_role("button").click()
    text = open(info.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 12  # the weekly reports of the default range, both accounts
    header = rows[0].keys()
    for column in ("id", "account", "report_date", "instagram_metrics.reach", "revenue_metrics.conversion_rate",
                   "media_metrics.by_media_type.VIDEO.count", "historical_comparison.changes.reach.change_pct",
                   "insights.key_findings", "problems"):
        assert column in header, column
    assert "access_token" not in text and "secret-token" not in text
    assert sorted({r["account"] for r in rows}) == ["alpha", "beta"]
    assert sorted(float(r["instagram_metrics.reach"]) for r in rows if r["account"] == "beta") == [300 + w for w in range(6)]


def test_default_chart_has_one_y_axis_and_a_rate_gets_its_own_or_the_right_one(start_app, reports_db, page):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": reports_db})
    page.goto(server.url + "/metrics")
    wait_idle(page)
    chart = reach_chart(page, lambda c: c["yaxes"] and c["yaxes"][0]["ticks"] > 0)
    # the default: counts of one scale, one y axis drawn (ticks on the left only)
    assert [a["name"] for a in chart["yaxes"]] == ["yaxis"], chart["yaxes"]
    assert chart["yaxes"][0]["side"] == "left" and chart["yaxes"][0]["title"] == "count"
    assert page.locator(f".st-key-{Keys.IG_RIGHT_AXIS}").count() == 0  # no axis choice without a rate

    # adding a rate: a panel of its own below, again with one (left) axis each
    chooser = page.locator(f".st-key-{Keys.IG_CHOICE}")
    chooser.get_by_role("combobox").click()
    page.get_by_role("option", name="Avg engagement rate (%)").click()
    page.keyboard.press("Escape")
    wait_idle(page)
    chart = reach_chart(page, lambda c: len(c["yaxes"]) == 2 and all(a["ticks"] > 0 for a in c["yaxes"]))
    assert [(a["name"], a["side"], a["overlaying"], a["title"]) for a in chart["yaxes"]] == [
        ("yaxis", "left", None, "count"), ("yaxis2", "left", None, "rate (%)")], chart["yaxes"]

    # asked for explicitly: the rate moves to a right axis over the counts' panel
    toggle = page.locator(f".st-key-{Keys.IG_RIGHT_AXIS}")
    expect(toggle).to_be_visible()
    toggle.get_by_text("Rates on a right axis").click()
    wait_idle(page)
    chart = reach_chart(page, lambda c: any(a["overlaying"] for a in c["yaxes"]))
    assert [(a["name"], a["side"], a["overlaying"], a["title"]) for a in chart["yaxes"]] == [
        ("yaxis", "left", None, "count"), ("yaxis2", "right", "y", "rate (%)")], chart["yaxes"]
    assert page.locator("[data-testid='stException']").count() == 0


def test_best_and_worst_posts_table_is_readable_on_the_demo_data(start_app, demo_url, page):
    page.set_viewport_size({"width": 1440, "height": 900})
    server = start_app({"DATABASE_URL": demo_url})
    page.goto(server.url + "/metrics")
    wait_idle(page)
    heading = page.get_by_role("heading", name="Best and worst posts")
    expect(heading).to_be_visible()
    grid = page.locator(f".st-key-{Keys.BEST_WORST}")
    # reached within two screens of scrolling, not at the bottom of "Report details"
    top = grid.evaluate("e => e.getBoundingClientRect().top - document.querySelector("
                        "'[data-testid=stMain]').getBoundingClientRect().top")
    assert 0 < top < 2 * 900, top
    grid.scroll_into_view_if_needed()
    expect(grid).to_contain_text("Worst")
    headers = [h.strip() for h in grid.locator("th").all_inner_texts()]
    for name in ("Account", "Post", "Type", "Caption", "Engagement", "Likes", "Comments", "Reach"):
        assert name in headers, " | ".join(headers)
    assert not any("_" in h for h in headers), headers  # human labels, no raw keys
    rows = [[c.strip() for c in r.locator("td").all_inner_texts()] for r in grid.locator("tbody tr").all()]
    rows = [dict(zip(headers, r)) for r in rows if r]
    assert rows and all(r["Caption"] and r["Caption"] != "None" for r in rows), rows
    by_account: dict[str, dict[str, str]] = {}
    for r in rows:
        by_account.setdefault(r["Account"], {})[r["Post"]] = r["Caption"]
    assert set(by_account) == {"acme.coffee", "northwind.outdoors", "lumen.studio"}, rows
    for account, posts in by_account.items():
        assert set(posts) in ({"Best", "Worst"}, {"Best and worst"}), (account, posts)
        if "Worst" in posts:
            assert posts["Best"] != posts["Worst"], (account, posts)
    assert page.locator("[data-testid='stException']").count() == 0
