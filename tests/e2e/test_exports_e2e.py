"""Downloads in a real browser (AppTest cannot read downloaded files): the Posts view as Parquet and
the Activity Feed as Excel, read back with pandas and compared with the page's rows."""
from __future__ import annotations

import io
from datetime import timedelta

import pandas as pd
import pytest
from playwright.sync_api import expect

from lib.analytics import posts as lp
from lib.core import audit
from lib.core.db import make_engine
from lib.core.timeutil import utcnow
from tests.e2e.conftest import wait_idle
from tests.e2e.test_feed_alerts_e2e import demo_db  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e
WAIT = 60_000  # a loaded 2-core machine


def pick_format(page, key: str, label: str) -> None:
    page.locator(f".st-key-{key}_fmt").get_by_role("combobox").click()
    page.get_by_role("option", name=label).click()
    wait_idle(page, WAIT)
    expect(page.locator(f".st-key-{key}").get_by_role("button")).to_contain_text(label, timeout=WAIT)


def download(page, key: str) -> bytes:
    with page.expect_download(timeout=WAIT) as info:
        page.locator(f".st-key-{key}").get_by_role("button").click()
    return open(info.value.path(), "rb").read()


def test_posts_parquet_download_equals_the_page(start_app, demo_url, page):
    server = start_app({"DATABASE_URL": demo_url})
    page.set_default_timeout(WAIT)
    page.goto(server.url + "/posts")
    wait_idle(page, WAIT)
    expect(page.get_by_text("published posts in the range")).to_be_visible(timeout=WAIT)
    pick_format(page, "posts_export", "Parquet")
    got = pd.read_parquet(io.BytesIO(download(page, "posts_export")))
    eng = make_engine(demo_url)
    today = utcnow().date()
    since = pd.Timestamp(today - timedelta(days=29), tz="UTC").to_pydatetime()
    until = pd.Timestamp(today + timedelta(days=1), tz="UTC").to_pydatetime()
    with eng.connect() as conn:
        want = lp.posts_view(conn, filt=lp.PostsFilter(since=since, until=until)).frame
    eng.dispose()
    assert "business_account_id" not in got.columns and got.columns[0] == "instagram_id"
    assert got["instagram_id"].tolist() == want["instagram_id"].tolist()
    assert got["engagement"].notna().sum() == want["engagement"].notna().sum() > 0
    assert str(got["published_at"].dt.tz) == "UTC" and got["published_at"].tolist() == want["published_at"].tolist()
    assert got["attempts"].dtype == "int64"
    assert page.locator("[data-testid='stException']").count() == 0


def test_feed_excel_download_equals_the_export_rows(start_app, demo_db, page):  # noqa: F811
    server = start_app({"DATABASE_URL": demo_db})
    page.set_default_timeout(WAIT)
    page.goto(server.url + "/activity_feed")
    wait_idle(page, WAIT)
    pick_format(page, "feed-export", "Excel")
    got = pd.read_excel(io.BytesIO(download(page, "feed-export")), engine="openpyxl")
    eng = make_engine(demo_db)
    with eng.connect() as conn:
        rows = [r for c in audit.export_chunks(conn, filters=audit.AuditFilter(since=utcnow() - timedelta(days=1)))
                for r in c]
    eng.dispose()
    assert list(got.columns) == list(audit.EXPORT_COLUMNS)
    assert got["resource_id"].tolist() == [r[5] for r in rows] and len(got) == 130
    assert got["success"].dtype == bool
    assert str(got["created_at"].dtype).startswith("datetime64")
    first = got["created_at"].dt.tz_localize("UTC").iloc[0].to_pydatetime()
    assert abs((first - rows[0][1]).total_seconds()) < 0.01
    assert page.locator("[data-testid='stException']").count() == 0
