"""Activity Feed reads on SQLite and PostgreSQL: filters, keyset pages, search literals, export."""
from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.core.audit import (
    AuditFilter,
    audit_row,
    count_matching,
    distinct_event_types,
    distinct_resource_types,
    escape_like,
    event_counts,
    export_chunks,
    feed_page,
)
from lib.core.export import rows_to_csv
from lib.core.schema import audit_log

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ACC_A = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")
ACC_B = uuid.UUID("bbbbbbbb-0000-0000-0000-000000000002")
INJECTION = "'; drop table audit_log; --"
WILDCARDS = "%_\\"


def make_rows():
    """A deterministic mix: 6 spec event types, both outcomes, two accounts, hours and days back.

    Several rows share one created_at so the keyset has to break ties on id."""
    events = [
        ("post_published", "publish", "instagram_post"),
        ("comment_replied", "reply", "instagram_comment"),
        ("dm_sent", "send", "instagram_dm"),
        ("ugc_reposted", "repost", "ugc_content"),
        ("post_failed_permanent", "post_queue_dlq", "post_queue"),
        ("auth_failure", "disconnect", "instagram_business_accounts"),
    ]
    rows = []
    for i in range(150):
        ev, action, rtype = events[i % 6]
        created = NOW - timedelta(minutes=20 * (i // 3))  # three rows per timestamp
        ok = i % 4 != 0
        acc = ACC_A if i % 2 == 0 else ACC_B
        rows.append(audit_row(
            event_type=ev, action=action, resource_type=rtype, resource_id=f"res-{i:03d}", now=created,
            user_id="worker", success=ok, error_message=None if ok else f"Graph error {i}",
            details={"business_account_id": str(acc), "n": i},
        ))
    # the literal search targets and look-alikes that a LIKE wildcard would also match
    rows.append(audit_row(event_type="custom_event", action="x", resource_type="weird", resource_id=INJECTION,
                          now=NOW - timedelta(minutes=5), success=False, error_message="plain"))
    rows.append(audit_row(event_type="custom_event", action="x", resource_type="weird", resource_id="r-wild",
                          now=NOW - timedelta(minutes=6), success=False, error_message=f"bad value {WILDCARDS} here"))
    rows.append(audit_row(event_type="custom_event", action="x", resource_type="weird", resource_id="r-look",
                          now=NOW - timedelta(minutes=7), success=False, error_message="bad value ab\\ here"))
    rows.append(audit_row(event_type="custom_event", action="x", resource_type="weird", resource_id="r-details",
                          now=NOW - timedelta(minutes=8), success=True, details={"note": "Needle in the DETAILS"}))
    return rows


@pytest.fixture
def feed_db(engine):
    rows = make_rows()
    with engine.begin() as conn:
        conn.execute(sa.insert(audit_log), rows)
        # a row without created_at (someone else's writer) is not on the timeline
        conn.execute(sa.insert(audit_log), [{**audit_row(event_type="dm_sent", action="send", resource_type="x",
                                                          resource_id="no-time", now=NOW), "created_at": None}])
    return engine, rows


def expected(rows, pred):
    sel = [r for r in rows if pred(r)]
    sel.sort(key=lambda r: (r["created_at"], r["id"].bytes), reverse=True)
    return sel


def ids_of(rows):
    return [r["id"] for r in rows]


def walk(conn, filters, limit):
    pages, after = [], None
    while True:
        page = feed_page(conn, filters=filters, limit=limit, after=after)
        pages.append(page)
        if not page.has_older:
            return pages
        after = page.last_cursor


def direct_ids(conn, filters_sql):
    t = audit_log
    return list(conn.execute(
        sa.select(t.c.id).where(t.c.created_at.is_not(None), *filters_sql).order_by(t.c.created_at.desc(), t.c.id.desc())
    ).scalars())


FILTER_CASES = {
    "none": (AuditFilter(), lambda r: True),
    "event_types": (AuditFilter(event_types=("dm_sent", "auth_failure")), lambda r: r["event_type"] in ("dm_sent",
                                                                                                        "auth_failure")),
    "failures": (AuditFilter(success=False), lambda r: r["success"] is False),
    "successes": (AuditFilter(success=True), lambda r: r["success"] is True),
    "time_range": (AuditFilter(since=NOW - timedelta(hours=10), until=NOW - timedelta(hours=2)),
                   lambda r: NOW - timedelta(hours=10) <= r["created_at"] < NOW - timedelta(hours=2)),
    "resource_type": (AuditFilter(resource_type="instagram_dm"), lambda r: r["resource_type"] == "instagram_dm"),
    "account": (AuditFilter(account_id=ACC_A), lambda r: (r["details"] or {}).get("business_account_id") == str(ACC_A)),
    "search_resource": (AuditFilter(search="RES-01"), lambda r: "res-01" in (r["resource_id"] or "")),
    "combined": (
        AuditFilter(event_types=("post_published", "dm_sent"), success=True, since=NOW - timedelta(days=1),
                    account_id=ACC_A, resource_type="instagram_post"),
        lambda r: r["event_type"] in ("post_published", "dm_sent") and r["success"] is True
        and r["created_at"] >= NOW - timedelta(days=1) and r["resource_type"] == "instagram_post"
        and (r["details"] or {}).get("business_account_id") == str(ACC_A),
    ),
}


@pytest.mark.parametrize("case", list(FILTER_CASES))
def test_each_filter_pages_disjoint_and_complete(feed_db, case):
    engine, rows = feed_db
    filters, pred = FILTER_CASES[case]
    want = expected(rows, pred)
    assert want, "the fixture must exercise the filter"
    with engine.connect() as conn:
        pages = walk(conn, filters, limit=7)
        got = [r["id"] for p in pages for r in p.rows]
        assert len(got) == len(set(got))  # disjoint
        assert got == ids_of(want)  # complete and in order
        assert all(len(p.rows) == 7 for p in pages[:-1])
        assert count_matching(conn, filters=filters) == len(want)


def test_previous_page_is_the_page_before(feed_db):
    engine, _ = feed_db
    with engine.connect() as conn:
        pages = walk(conn, AuditFilter(), limit=10)
        assert len(pages) >= 3
        back = feed_page(conn, filters=AuditFilter(), limit=10, before=pages[2].first_cursor)
        assert ids_of(back.rows) == ids_of(pages[1].rows)
        assert back.has_newer
        first = feed_page(conn, filters=AuditFilter(), limit=10, before=pages[1].first_cursor)
        assert ids_of(first.rows) == ids_of(pages[0].rows)
        assert not first.has_newer
        assert not pages[0].has_newer and pages[1].has_newer


def test_page_is_the_direct_query(feed_db):
    engine, _ = feed_db
    t = audit_log
    with engine.connect() as conn:
        want = direct_ids(conn, [t.c.success.is_(False)])
        pages = walk(conn, AuditFilter(success=False), limit=50)
        assert [r["id"] for p in pages for r in p.rows] == want


@pytest.mark.parametrize("text, expected_ids", [
    (INJECTION, [INJECTION]),
    (WILDCARDS, ["r-wild"]),
    ("%_", ["r-wild"]),  # unescaped, this would match every row
    ("value %", ["r-wild"]),  # unescaped, also r-look
    ("value _", []),  # unescaped, r-look and r-wild
    ("needle in the details", ["r-details"]),
])
def test_search_is_literal(feed_db, text, expected_ids):
    engine, _ = feed_db
    with engine.connect() as conn:
        page = feed_page(conn, filters=AuditFilter(search=text), limit=200)
        assert sorted(r["resource_id"] for r in page.rows) == sorted(expected_ids)
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one() == len(make_rows()) + 1


def test_escape_like():
    assert escape_like("a%b_c\\d") == "a\\%b\\_c\\\\d"


def test_row_without_created_at_is_left_out(feed_db):
    engine, _ = feed_db
    with engine.connect() as conn:
        page = feed_page(conn, filters=AuditFilter(search="no-time"), limit=10)
    assert page.rows == []
@pytest.mark.pooler
def test_export_matches_filter(feed_db):
    engine, rows = feed_db
    filters = AuditFilter(success=False, account_id=ACC_A)
    want = expected(rows, lambda r: r["success"] is False and (r["details"] or {}).get("business_account_id") == str(ACC_A))
    assert want
    with engine.connect() as conn:
        data, written, truncated = rows_to_csv(
            ["id", "created_at", "event_type", "action", "resource_type", "resource_id", "user_id", "success",
             "error_message", "details", "ip_address", "user_agent"],
            export_chunks(conn, filters=filters, chunk_size=4),
        )
    assert not truncated and written == len(want)
    parsed = list(csv.DictReader(io.StringIO(data.decode())))
    assert [uuid.UUID(r["id"]) for r in parsed] == ids_of(want)
    assert {r["success"] for r in parsed} == {"False"}
    assert [json.loads(r["details"]) for r in parsed] == [r["details"] for r in want]  # JSON text, not a repr
@pytest.mark.pooler
def test_export_cap_reports_truncation(feed_db):
    engine, _ = feed_db
    with engine.connect() as conn:
        _, written, truncated = rows_to_csv(["id"], export_chunks(conn, filters=AuditFilter(), cap=10, chunk_size=3), cap=10)
    assert written == 10 and truncated


def test_event_counts_by_bucket(feed_db):
    engine, rows = feed_db
    filters = AuditFilter(since=NOW - timedelta(hours=6), until=NOW + timedelta(minutes=1))
    with engine.connect() as conn:
        counts = event_counts(conn, filters=filters, bucket="hour")
        days = event_counts(conn, filters=AuditFilter(), bucket="day")
    in_range = [r for r in rows if filters.since <= r["created_at"] < filters.until]
    assert sum(c["count"] for c in counts) == len(in_range)
    fails = sum(1 for r in in_range if r["success"] is False)
    assert sum(c["count"] for c in counts if c["outcome"] == "failure") == fails
    assert all(c["bucket"].minute == 0 and c["bucket"].tzinfo is not None for c in counts)
    assert {c["bucket"] for c in days} == {datetime(2026, 11, d, tzinfo=UTC) for d in (24, 25)}
    assert sum(c["count"] for c in days) == len(rows)
    assert sum(c["count"] for c in days if c["bucket"].day == 24) == sum(1 for r in rows if r["created_at"].day == 24)


def test_distinct_types(feed_db):
    engine, _ = feed_db
    with engine.connect() as conn:
        types = distinct_event_types(conn)
        rtypes = distinct_resource_types(conn)
    assert types[:6] == ["post_published", "comment_replied", "dm_sent", "ugc_reposted", "post_failed_permanent", "auth_failure"]
    assert "custom_event" in types
    assert "weird" in rtypes and "instagram_dm" in rtypes


def test_search_reads_only_the_newest_window(engine, monkeypatch):
    """LIKE '%x%' runs over the newest SEARCH_WINDOW rows only (bounded per search)."""
    import lib.core.audit

    monkeypatch.setattr(lib.core.audit, "SEARCH_WINDOW", 10)
    with engine.begin() as conn:
        conn.execute(sa.insert(audit_log), [
            audit_row(event_type="dm_sent", action="send", resource_type="instagram_dm", resource_id=f"needle-{i}",
                      now=NOW - timedelta(minutes=i), success=True) for i in range(30)])
    with engine.connect() as conn:
        page = feed_page(conn, filters=AuditFilter(search="needle"), limit=50)
        assert [r["resource_id"] for r in page.rows] == [f"needle-{i}" for i in range(10)]
        assert count_matching(conn, filters=AuditFilter(search="needle")) == 10
        assert count_matching(conn, filters=AuditFilter()) == 30  # no search: no window
