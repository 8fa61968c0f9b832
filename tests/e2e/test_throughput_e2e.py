"""Queue Monitor in a real browser: the throughput chart (sent / failed / dead-lettered per hour and
tick duration, from worker_ticks) shows what the ticks recorded, for 24 h and for 7 d."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import worker_ticks
from lib.core.timeutil import utcnow
from lib.ui.throughput import PANEL
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e

CHART_DATA = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(el => (el.data || []).map(t => ({name: t.name, y: Array.from(t.y || [])})))
    .filter(traces => traces.some(t => t.name === 'tick duration (avg)'))"""


@pytest.fixture
def ticks_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    rows = []
    for i, (hours_ago, sent, failed, dlq, seconds) in enumerate(
            [(0.2, 4, 1, 0, 2.0), (2, 6, 0, 1, 3.0), (5, 3, 2, 0, 1.0), (30, 50, 0, 4, 5.0), (100, 7, 7, 7, 2.0)]):
        started = now - timedelta(hours=hours_ago)
        rows.append({"id": uuid.uuid4(), "host": "h", "pid": i, "started_at": started,
                     "finished_at": started + timedelta(seconds=seconds), "claimed": sent + failed + dlq,
                     "sent": sent, "failed": failed, "dlq": dlq, "rescued": 0})
    with eng.begin() as conn:
        conn.execute(sa.insert(worker_ticks), rows)
    eng.dispose()
    return sqlite_url


def traces(page):
    chart = page.evaluate(CHART_DATA)[-1]  # (a rerun may briefly keep the old chart beside the new one)
    return {t["name"]: [v for v in t["y"] if v is not None] for t in chart}


def test_throughput_chart_shows_the_ticks_per_hour_for_24h_and_7d(start_app, ticks_db, page):
    server = start_app({"DATABASE_URL": ticks_db})
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    page.locator(f".st-key-{PANEL} summary").click()  # a lazy section: drawn once opened
    wait_idle(page)
    expect(page.get_by_text("13 sent, 3 failed, 1 dead-lettered in 3 ticks")).to_be_visible()
    page.wait_for_function(CHART_DATA.replace("() =>", "() => (") + ").length === 1")
    t = traces(page)
    assert sum(t["sent"]) == 13 and sum(t["failed (retry scheduled)"]) == 3 and sum(t["dead-lettered"]) == 1
    assert len(t["sent"]) == 24  # one bar per hour
    assert sorted(t["tick duration (avg)"]) == pytest.approx([1.0, 2.0, 3.0], abs=0.01)

    page.get_by_text("7 d", exact=True).click()  # the segmented control
    wait_idle(page)
    expect(page.get_by_text("70 sent, 10 failed, 12 dead-lettered in 5 ticks")).to_be_visible()
    page.wait_for_function(CHART_DATA.replace("() =>", "() => (") + ").some(c => c[0].y.length === 168)")  # redrawn
    t = next(c for c in ({x["name"]: x["y"] for x in chart} for chart in page.evaluate(CHART_DATA))
             if len(c["sent"]) == 168)
    t = {k: [v for v in y if v is not None] for k, y in t.items()}
    assert len(t["sent"]) == 168 and sum(t["sent"]) == 70
    assert page.locator("[data-testid='stException']").count() == 0
