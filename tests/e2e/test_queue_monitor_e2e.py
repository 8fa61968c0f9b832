"""Queue Monitor in a real browser: retry one DLQ row by clicking its button, retry all matching
with the confirmation dialog, download the filtered DLQ as CSV."""
from __future__ import annotations

import csv
import io
import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import post_queue
from lib.core.timeutil import utcnow
from tests.e2e.conftest import wait_idle
from tests.support.queue_rows import add_account, insert_rows, queue_row

pytestmark = pytest.mark.e2e

HEADER_PX, ROW_PX = 35, 35  # st.dataframe's default header and row heights


@pytest.fixture
def dlq_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "e2e_shop", now)
        rows = [queue_row(account=acc, now=now, age_min=i, error=f"(#190) Error validating access token: session {i} expired")
                for i in range(5)]
        rows += [queue_row(account=acc, now=now, age_min=60 + i, action_type="send_dm", error_category="rate_limit",
                           error="(#4) Application request limit reached") for i in range(3)]
        insert_rows(conn, rows)
    eng.dispose()
    return sqlite_url, rows


def status_of(url, ids):
    eng = make_engine(url)
    with eng.connect() as conn:
        out = dict(conn.execute(sa.select(post_queue.c.id, post_queue.c.status).where(post_queue.c.id.in_(ids))).all())
    eng.dispose()
    return out


def dlq_table(page):
    return page.get_by_test_id("stDataFrame").filter(has_text="Retries").first


def test_retry_one_row_by_clicking_its_button(start_app, dlq_db, page):
    url, rows = dlq_db
    server = start_app({"DATABASE_URL": url})
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    expect(page.get_by_text("Rows 1–8 of 8, newest attempt first")).to_be_visible()
    table = dlq_table(page)
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    # first data row, the "Retry" button column right of the selection checkboxes
    page.mouse.click(box["x"] + 60, box["y"] + HEADER_PX + ROW_PX / 2)
    expect(page.get_by_text("Retry: 1 row moved back to pending")).to_be_visible(timeout=20_000)
    wait_idle(page)
    expect(page.get_by_text("Rows 1–7 of 7, newest attempt first")).to_be_visible()
    assert status_of(url, [rows[0]["id"]]) == {rows[0]["id"]: "pending"}  # the newest row, first in the table
    assert page.locator("[data-testid='stException']").count() == 0


def test_retry_all_matching_with_confirmation(start_app, dlq_db, page):
    url, rows = dlq_db
    server = start_app({"DATABASE_URL": url})
    page.goto(server.url + "/queue_monitor?qm_category=rate_limit")
    wait_idle(page)
    expect(page.get_by_text("Rows 1–3 of 3")).to_be_visible()
    page.get_by_role("button", name="Retry all 3 matching").click()
    dialog = page.get_by_test_id("stDialog")
    expect(dialog).to_contain_text("Move 3 row(s) of the dead-letter queue back to pending?")
    assert set(status_of(url, [r["id"] for r in rows[5:]]).values()) == {"dlq"}  # nothing before confirming
    dialog.get_by_role("button", name="Retry 3 rows").click()
    expect(page.get_by_text("Retry all matching (3): 3 rows moved back to pending")).to_be_visible(timeout=20_000)
    expect(dialog).to_have_count(0)
    assert set(status_of(url, [r["id"] for r in rows[5:]]).values()) == {"pending"}
    assert set(status_of(url, [r["id"] for r in rows[:5]]).values()) == {"dlq"}  # outside the filter: untouched


def test_download_filtered_dlq_csv(start_app, dlq_db, page):
    url, rows = dlq_db
    server = start_app({"DATABASE_URL": url})
    page.goto(server.url + "/queue_monitor?qm_search=token")
    wait_idle(page)
    expect(page.get_by_text("Rows 1–5 of 5")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_test_id("stDownloadButton").filter(has_text="Export CSV").click()
    data = open(info.value.path(), encoding="utf-8").read()
    got = list(csv.DictReader(io.StringIO(data)))
    assert [r["id"] for r in got] == [str(r["id"]) for r in rows[:5]]
    assert {r["account"] for r in got} == {"e2e_shop"} and {r["status"] for r in got} == {"dlq"}
    assert "access_token" not in data and "EAA" not in data


def updated_caption(page) -> str:
    return page.get_by_text("Updated ").last.inner_text()


def wait_for_ticks(page, n: int = 2) -> None:
    """Wait until the live panel has re-run n times (its "Updated hh:mm:ss" caption changes)."""
    for _ in range(n):
        before = updated_caption(page)
        page.wait_for_function(
            "b => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
            ".some(e => e.innerText.startsWith('Updated ') && e.innerText !== b)", arg=before, timeout=20_000)


def test_live_refresh_keeps_the_selection_and_the_open_dialog(start_app, dlq_db, page):
    url, rows = dlq_db
    server = start_app({"DATABASE_URL": url, "POLL_INTERVAL_S": "2"})
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    table = dlq_table(page)
    table.scroll_into_view_if_needed()  # the page has more above the triage table now (throughput, pauses)
    box = table.bounding_box()
    page.mouse.click(box["x"] + 17, box["y"] + HEADER_PX + ROW_PX / 2)  # the first row's checkbox
    expect(page.get_by_text("refresh paused while 1 row(s) are selected")).to_be_visible(timeout=20_000)
    detail = page.locator(".st-key-qm_detail")
    expect(detail).to_contain_text(str(rows[0]["id"]))
    eng = make_engine(url)
    with eng.begin() as conn:  # a newer DLQ row would take position 0 on a refresh
        insert_rows(conn, [queue_row(account=rows[0]["business_account_id"], now=utcnow(), age_min=0)])
    eng.dispose()
    wait_for_ticks(page)
    expect(page.get_by_role("button", name="Retry 1 selected")).to_be_visible()
    expect(detail).to_contain_text(str(rows[0]["id"]))

    page.locator(".st-key-qm_clear button").click()
    expect(page.get_by_text("refresh paused while")).to_have_count(0)
    retry_all = page.get_by_role("button", name=re.compile(r"^Retry all [89] matching$"))
    n = int(retry_all.inner_text().split()[-2])  # 8 or 9: the count is cached for up to 25 s
    retry_all.click()
    dialog = page.get_by_test_id("stDialog")
    expect(dialog).to_contain_text(re.compile(r"Move [89] row\(s\)"))
    wait_for_ticks(page)
    expect(dialog).to_be_visible()
    dialog.locator(".st-key-qm_confirm_ok button").click()
    expect(page.get_by_text(f"Retry all matching ({n}): {n} rows moved back to pending")).to_be_visible(timeout=20_000)
    eng = make_engine(url)
    with eng.connect() as conn:  # exactly the confirmed number, newest first
        assert conn.execute(sa.select(sa.func.count()).where(post_queue.c.status == "dlq")).scalar() == 9 - n
    eng.dispose()


@pytest.mark.parametrize("width", [1440, 1024])
def test_metric_values_fit_their_cards(start_app, sqlite_url, page, width):
    """The longest values (a 10-character age, six-digit counts) are shown whole, not "1 h …"."""
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "wide_shop", now)
        insert_rows(conn, [queue_row(account=acc, now=now, status="pending", age_min=9 * 60 + 54)])  # "9 h 59 min"
        insert_rows(conn, [queue_row(account=acc, now=now, status="sent", age_min=1) for _ in range(100_500)])
    eng.dispose()
    server = start_app({"DATABASE_URL": sqlite_url})
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url + "/queue_monitor")
    wait_idle(page)
    values = page.locator(".st-key-qm_metrics [data-testid='stMetricValue']")
    expect(values).to_have_count(7)
    expect(values.nth(3)).to_have_text(re.compile(r"^9 h 5\d min$"))  # whole (its last minute depends on timing)
    expect(values.nth(0)).to_have_text("100,501")
    cut = values.evaluate_all("els => els.filter(e => [e, ...e.querySelectorAll('*')]"
                              ".some(x => x.scrollWidth > x.clientWidth + 1)).map(e => e.innerText)")
    assert cut == []
