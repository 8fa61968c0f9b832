"""Posts view on SQLite and PostgreSQL: the queue's published rows joined with the reports' media ids
(top_performing, best_post, worst_post), search, sort, attempts, export; and the demo seed's joins."""
from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from lib.analytics import posts as lp
from lib.core.export import build_export
from lib.core.schema import analytics_reports
from tests.support.queue_rows import add_account, insert_rows, queue_row
from tests.support.reports import report

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SINCE, UNTIL = NOW - timedelta(days=30), NOW + timedelta(days=1)


def _sent(acc, media_id, caption, *, action="publish_post", age_min=60, retries=0, status="sent"):
    payload = {"caption": caption, "image_url": "https://cdn.example.com/x.jpg", "scheduled_post_id": f"sp-{media_id}"}
    if action == "repost_ugc":
        payload = {"permission_id": "perm-1", "media_url": "https://cdn.example.com/u.jpg"}
    row = queue_row(account=acc, now=NOW, status=status, action_type=action, retry_count=retries, age_min=age_min,
                    payload=payload)
    row["instagram_id"] = media_id if status == "sent" else None
    return row


def _seed(engine):
    with engine.begin() as conn:
        acc = add_account(conn, "acme", NOW)
        other = add_account(conn, "beta", NOW)
        insert_rows(conn, [
            _sent(acc, "m-top", "Espresso morning", age_min=300, retries=2),
            _sent(acc, "m-best", "Latte art #coffee", age_min=200),
            _sent(acc, "m-worst", "Decaf news", age_min=100),
            _sent(acc, "m-none", "Never reported", age_min=50),
            _sent(acc, "m-ugc", None, action="repost_ugc", age_min=40, retries=1),
            _sent(other, "b-1", "Beta espresso", age_min=30),
            _sent(acc, "x-failed", "Failed one", status="failed"),
            {**queue_row(account=acc, now=NOW, status="sent", action_type="reply_comment"), "instagram_id": "m-top"},
        ])
        day = (NOW - timedelta(days=3)).date()
        r1 = report(acc, "daily", day)
        r1["media_metrics"] = {
            "top_performing": [{"media_id": "m-top", "engagement": 900, "caption_snippet": "Espresso"},
                               {"media_id": "m-ugc", "engagement": 300, "caption_snippet": ""},
                               {"media_id": "m-best", "engagement": 500, "caption_snippet": "Latte"}],
            "best_post": {"media_id": "m-best", "engagement": 510, "likes": 400, "comments": 30, "reach": 9000,
                          "media_type": "IMAGE"},
            "worst_post": {"media_id": "m-worst", "engagement": 12, "likes": 10, "comments": 1, "reach": 700},
        }
        r2 = report(other, "weekly", day)
        r2["media_metrics"] = {"top_performing": [{"media_id": "b-1", "engagement": 42}], "best_post": {},
                               "worst_post": {"media_id": "unknown-media", "engagement": 1}}
        conn.execute(sa.insert(analytics_reports), [r1, r2])
    return acc, other


def test_join_on_known_media_ids(engine):
    acc, other = _seed(engine)
    with engine.connect() as conn:
        view = lp.posts_view(conn, filt=lp.PostsFilter(since=SINCE, until=UNTIL))
    df = view.frame
    assert view.total == 6 and len(df) == 6 and view.reported == 5  # no failed row, no reply_comment
    assert df["instagram_id"].tolist() == ["m-top", "m-best", "m-ugc", "b-1", "m-worst", "m-none"]  # by engagement
    by = df.set_index("instagram_id")
    assert by.loc["m-best", "engagement"] == 510 and by.loc["m-best", "likes"] == 400  # best_post wins (read last)
    assert by.loc["m-best", "reach"] == 9000 and by.loc["m-best", "media_type"] == "IMAGE"
    assert by.loc["m-best", "reported_as"] == "top_performing, best_post"
    assert by.loc["m-worst", "comments"] == 1 and by.loc["m-worst", "reported_as"] == "worst_post"
    assert by.loc["m-top", "attempts"] == 3 and by.loc["m-ugc", "attempts"] == 2
    assert by.loc["m-top", "caption"] == "Espresso morning" and by.loc["m-top", "scheduled_post_id"] == "sp-m-top"
    assert by.loc["m-ugc", "action_type"] == "repost_ugc" and pd.isna(by.loc["m-ugc", "caption"])
    assert pd.isna(by.loc["m-none", "engagement"]) and by.loc["m-none", "reports"] == 0
    assert by.loc["b-1", "account"] == "beta" and by.loc["m-top", "account"] == "acme"
    assert str(df["published_at"].dt.tz) == "UTC"
    assert df["engagement"].dtype == "float64" and df["attempts"].dtype == "int64"


def test_search_sort_scope_and_reported_only(engine):
    acc, other = _seed(engine)
    with engine.connect() as conn:
        found = lp.posts_view(conn, filt=lp.PostsFilter(since=SINCE, until=UNTIL, search="ESPRESSO")).frame
        assert sorted(found["instagram_id"]) == ["b-1", "m-top"]
        mine = lp.posts_view(conn, filt=lp.PostsFilter(since=SINCE, until=UNTIL, account_id=acc), sort="published")
        assert mine.frame["instagram_id"].tolist() == ["m-ugc", "m-none", "m-worst", "m-best", "m-top"]
        reported = lp.posts_view(conn, filt=lp.PostsFilter(since=SINCE, until=UNTIL, reported_only=True)).frame
        assert "m-none" not in set(reported["instagram_id"]) and len(reported) == 5
        none = lp.posts_view(conn, filt=lp.PostsFilter(since=SINCE, until=UNTIL, search="100%_x")).frame
        assert none.empty


def test_posts_export_reads_back(engine):
    _seed(engine)
    with engine.connect() as conn:
        page = lp.posts_view(conn, filt=lp.PostsFilter(since=SINCE, until=UNTIL)).frame
        for fmt in ("parquet", "xlsx"):
            data, n, _ = build_export(fmt, lp.COLUMNS, lp.export_chunks(conn, filt=lp.PostsFilter(since=SINCE, until=UNTIL)))
            got = pd.read_parquet(io.BytesIO(data)) if fmt == "parquet" else pd.read_excel(io.BytesIO(data))
            assert n == 6 and list(got.columns) == list(lp.COLUMNS)
            assert got["instagram_id"].tolist() == page["instagram_id"].tolist()
            assert got["engagement"].fillna(-1).tolist() == page["engagement"].fillna(-1).tolist()
            assert got["attempts"].tolist() == page["attempts"].tolist()
            if fmt == "parquet":
                assert str(got["published_at"].dt.tz) == "UTC"
                assert got["published_at"].tolist() == page["published_at"].tolist()


def test_media_stats_newest_report_wins():
    from lib.analytics.reports import parse_report

    old = {"id": "1", "report_date": datetime(2026, 1, 1, tzinfo=UTC),
           "media_metrics": '{"top_performing": [{"media_id": "a", "engagement": 5}]}'}
    new = {"id": "2", "report_date": datetime(2026, 1, 8, tzinfo=UTC),
           "media_metrics": '{"top_performing": [{"media_id": "a", "engagement": 9}], '
                            '"best_post": {"media_id": "a", "likes": 3}}'}
    stats = lp.media_stats([parse_report(old), parse_report(new)])
    assert stats["a"]["engagement"] == 9 and stats["a"]["likes"] == 3 and stats["a"]["reports"] == 2


def test_demo_seed_has_joined_posts(demo_url):
    from lib.core.db import make_engine
    from lib.core.timeutil import utcnow

    eng = make_engine(demo_url)
    now = utcnow()
    with eng.connect() as conn:
        view = lp.posts_view(conn, filt=lp.PostsFilter(since=now - timedelta(days=30), until=now + timedelta(days=1)))
    eng.dispose()
    assert view.total > 0 and view.reported > 0
    joined = view.frame[view.frame["reports"] > 0]
    assert joined["engagement"].notna().all()


# --------------------------------------------------------------------------- best and worst posts

def test_best_and_worst_rows_have_readable_values_best_first():
    media = {"top_performing": [{"media_id": 7, "engagement": 90, "caption_snippet": "From the top list"}],
             "best_post": {"media_id": 7, "media_type": "CAROUSEL_ALBUM", "caption_snippet": None, "engagement": 90,
                           "likes": 70, "comments": 5, "reach": 1200},
             "worst_post": {"media_id": "m-2", "media_type": "REELS", "caption_snippet": "None", "engagement": "n/a",
                            "likes": 3}}
    table = lp.best_and_worst(media)
    assert list(table.columns) == list(lp.BEST_WORST_COLUMNS)
    rows = table.to_dict("records")
    assert [r["rank"] for r in rows] == ["Best", "Worst"]
    assert rows[0]["media_id"] == "7" and rows[0]["media_type"] == "Carousel"
    assert rows[0]["caption"] == "From the top list"  # missing here, found in top_performing
    assert rows[0]["likes"] == 70 and rows[0]["reach"] == 1200
    assert rows[1]["caption"] == lp.NO_CAPTION and rows[1]["media_type"] == "Reel"  # "None" is no caption
    assert rows[1]["engagement"] is None or pd.isna(rows[1]["engagement"])  # a non-number is not shown as one
    assert "None" not in table["caption"].tolist()


def test_one_post_that_is_best_and_worst_is_one_row():
    post = {"media_id": "m-1", "caption_snippet": "Only post", "engagement": 5}
    table = lp.best_and_worst({"best_post": post, "worst_post": dict(post)})
    assert table["rank"].tolist() == ["Best and worst"] and table["caption"].tolist() == ["Only post"]
    assert lp.best_and_worst({"best_post": {}, "worst_post": {}}).empty
    assert lp.best_and_worst(None).empty
    only_worst = lp.best_and_worst({"best_post": {}, "worst_post": {"media_id": "w", "caption_snippet": " "}})
    assert only_worst["rank"].tolist() == ["Worst"] and only_worst["caption"].tolist() == [lp.NO_CAPTION]


def test_caption_text():
    assert [lp.caption_text(v) for v in (None, "", "  ", "None", float("nan"), " Hi ")] == \
        [lp.NO_CAPTION] * 5 + ["Hi"]


def test_best_and_worst_as_markdown_escapes_captions_and_formats_numbers():
    media = {"best_post": {"media_id": "b1", "media_type": "IMAGE", "caption_snippet": "Sale | 50% *off* [shop](http://x.example)",
                           "engagement": 1234, "likes": 1000, "comments": 34, "reach": 98765},
             "worst_post": {"media_id": "w1", "caption_snippet": "=HYPERLINK(\"http://x\")" + "x" * 300, "likes": 2.5}}
    table = lp.best_and_worst(media)
    table.insert(0, "account", ["acme|shop", "acme|shop"])
    text = lp.best_worst_markdown(table)
    lines = text.splitlines()
    assert lines[0] == "| Account | Post | Type | Caption | Engagement | Likes | Comments | Reach |"
    assert "Media id" not in text and "b1" not in text  # the id is for the report details
    cells = [c.strip() for c in lines[2].strip("|").split(" | ")]  # an escaped \| stays inside its cell
    assert len(cells) == 8 and cells[0] == "acme\\|shop"
    assert "\\|" in cells[3] and "\\*off\\*" in cells[3] and "\\[shop\\]" in cells[3]
    assert cells[4:] == ["1,234", "1,000", "34", "98,765"]
    worst = [c.strip() for c in lines[3].strip("|").split(" | ")]
    assert worst[2] == "—" and worst[4] == "—" and worst[5] == "2.50"
    assert worst[3].endswith("…") and len(worst[3]) < 200
    assert lp.best_worst_markdown(lp.best_and_worst(None)) == ""
