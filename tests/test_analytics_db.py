"""analytics_reports queries on SQLite and PostgreSQL: by account, type and range; broken JSON."""
from datetime import UTC, date, datetime

import pytest

from lib.analytics import reports as an
from tests.support.reports import add_accounts, add_raw_json, add_reports, report


def seed(engine):
    with engine.begin() as conn:
        a, b = add_accounts(conn, "alpha", "beta")
        rows = [report(a, "daily", date(2026, 11, d), reach=100 * d) for d in range(1, 11)]
        rows += [report(b, "daily", date(2026, 11, d), reach=7) for d in range(1, 11)]
        rows += [report(a, "weekly", date(2026, 11, 8)), report(a, "weekly", date(2026, 11, 15))]
        add_reports(conn, rows)
    return a, b


def test_reports_by_account_type_and_range(engine):
    a, b = seed(engine)
    start, end = an.day_bounds(date(2026, 11, 4), date(2026, 11, 6))  # report dates (period day + 1)
    with engine.connect() as conn:
        rows = an.fetch_reports(conn, account_ids=[a], report_type="daily", start=start, end=end)
        both = an.fetch_reports(conn, account_ids=[a, str(b)], report_type="daily", start=start, end=end)
        weekly = an.fetch_reports(conn, report_type="weekly")
        everything = an.fetch_reports(conn)
        none = an.fetch_reports(conn, account_ids=[])
    assert [r["end_date"] for r in rows] == ["2026-11-03", "2026-11-04", "2026-11-05"]
    assert all(r["business_account_id"] == a for r in rows)
    assert len(both) == 6
    assert [r["end_date"] for r in weekly] == ["2026-11-08", "2026-11-15"]
    assert len(everything) == 22
    assert none == []
    parsed = [an.parse_report(r) for r in rows]
    assert [p.sections["instagram_metrics"]["reach"] for p in parsed] == [300.0, 400.0, 500.0]
    assert all(p.problems == [] for p in parsed)
    assert parsed[0].report_date == datetime(2026, 11, 4, 2, tzinfo=UTC)


def test_previous_reports_per_account(engine):
    a, b = seed(engine)
    before = datetime(2026, 11, 5, tzinfo=UTC)
    with engine.connect() as conn:
        prev = an.fetch_previous_reports(conn, account_ids=None, report_type="daily", before=before)
        only_a = an.fetch_previous_reports(conn, account_ids=[a], report_type="daily", before=before)
        none = an.fetch_previous_reports(conn, account_ids=[a], report_type="weekly", before=before)
    assert sorted((r["business_account_id"], r["end_date"]) for r in prev) == sorted([(a, "2026-11-03"), (b, "2026-11-03")])
    assert [r["end_date"] for r in only_a] == ["2026-11-03"]
    assert none == []


def test_reports_by_id_and_load_reports(engine):
    a, _ = seed(engine)
    with engine.connect() as conn:
        ids = [r["id"] for r in an.fetch_reports(conn, report_type="weekly")]
        rows = an.fetch_reports_by_id(conn, [str(i) for i in ids])
        lean = an.load_reports(conn, report_type="weekly", full=False)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    full = an.parse_report(rows[0])
    assert full.sections["insights"]["recommendations"] == ["Post more reels."]
    assert full.sections["historical_comparison"]["changes"]["reach"]["change_pct"] == 11.1
    assert set(lean[0].sections) == {"instagram_metrics", "media_metrics", "revenue_metrics"}  # CHART_SECTIONS
    assert "top_performing" not in lean[0].sections["media_metrics"]


@pytest.mark.own_schema("writes NULL into columns the user's DDL makes NOT NULL")
def test_broken_json_never_breaks_the_query(engine):
    a, _ = seed(engine)
    bad = report(a, "daily", date(2026, 11, 20))
    with engine.begin() as conn:
        # SQLite keeps the malformed text; PostgreSQL's jsonb stores it as a JSON string
        add_raw_json(conn, bad, media_metrics='{"avg_likes": 3,', instagram_metrics='{"reach": "42"}')
    start, end = an.day_bounds(date(2026, 11, 21), date(2026, 11, 21))
    with engine.connect() as conn:
        reports = an.load_reports(conn, account_ids=[a], report_type="daily", start=start, end=end)
    assert len(reports) == 1
    assert reports[0].problems == ["media_metrics: malformed JSON"]
    assert reports[0].sections["instagram_metrics"] == {"reach": 42.0}
    assert an.summarize_problems(reports).with_problems == 1
