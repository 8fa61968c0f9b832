"""Small, fixed analytics_reports rows for the metrics tests (numbers chosen by hand)."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from lib.core.schema import analytics_reports, instagram_business_accounts


def ig(reach=1000, impressions=2000, followers=5000, growth=50, engagement=4.0, **extra) -> dict:
    return {"impressions": impressions, "reach": reach, "profile_views": 40, "website_clicks": 10,
            "follower_growth": growth, "followers_count": followers, "posts_published": 2, "total_likes": 100,
            "total_comments": 5, "total_saves": 8, "total_shares": 3, "avg_engagement_rate": engagement, **extra}


def report(account_id, report_type: str, day: date, *, reach=1000, revenue=100.0, followers=5000,
           comparison: dict | None | str = "auto", insights: dict | None = None, **sections) -> dict:
    """A row for analytics_reports: the period ends on `day`; the report is dated the day after."""
    days = 1 if report_type == "daily" else 7
    start = day - timedelta(days=days - 1)
    row = {
        "id": uuid.uuid4(),
        "business_account_id": account_id,
        "report_type": report_type,
        "report_date": datetime(day.year, day.month, day.day, 2, tzinfo=UTC) + timedelta(days=1),
        "start_date": start.isoformat(),
        "end_date": day.isoformat(),
        "instagram_metrics": ig(reach=reach, followers=followers),
        "media_metrics": {
            "total_posts": 100, "total_posts_in_period": 2, "avg_likes": 50.0, "avg_comments": 2.5, "avg_reach": 500.0,
            "avg_engagement_rate": 4.0,
            "top_performing": [{"media_id": "m1", "engagement": 80, "caption_snippet": "Top *post*"},
                               {"media_id": "m2", "engagement": 40, "caption_snippet": "Second"}],
            "best_post": {"media_id": "m1", "engagement": 80}, "worst_post": {"media_id": "m2", "engagement": 40},
            "by_media_type": {"IMAGE": {"count": 1, "avg_engagement_rate": 3.0},
                              "VIDEO": {"count": 1, "avg_engagement_rate": 5.0}},
        },
        "revenue_metrics": {"attributed_revenue": revenue, "attribution_count": 3, "avg_order_value": 50.0,
                            "conversion_rate": 0.2, "attributed_orders": 2, "avg_attribution_score": 0.5,
                            "top_touchpoint_type": "reel"},
        "historical_comparison": None,
        "insights": insights if insights is not None else {
            "key_findings": [f"Reach was {reach} in the period."],
            "recommendations": ["Post more reels."],
            "anomalies": [],
        },
        "data_sources": ["graph"],
        "processed_at": datetime(day.year, day.month, day.day, 3, tzinfo=UTC) + timedelta(days=1),
        "run_id": "run-1",
        "created_at": datetime(day.year, day.month, day.day, 3, tzinfo=UTC) + timedelta(days=1),
    }
    if comparison == "auto":
        row["historical_comparison"] = {
            "period": "vs_last_7d" if report_type == "weekly" else "vs_last_1d",
            "reach_delta": 100,
            "changes": {"reach": {"previous": reach - 100, "current": reach, "change_pct": 11.1, "trend": "up"},
                        "impressions": {"previous": 2200, "current": 2000, "change_pct": -9.1, "trend": "down"}},
        }
    else:
        row["historical_comparison"] = comparison
    row.update(sections)
    return row


def add_accounts(conn, *names: str) -> list[uuid.UUID]:
    ids = [uuid.uuid5(uuid.NAMESPACE_DNS, n) for n in names]
    conn.execute(sa.insert(instagram_business_accounts), [
        {"id": i, "username": n, "instagram_business_id": n, "access_token": "secret-token", "is_connected": True}
        for i, n in zip(ids, names)])
    return ids


def add_reports(conn, rows: list[dict]) -> None:
    conn.execute(sa.insert(analytics_reports), rows)


def add_raw_json(conn, row: dict, **raw_text: str) -> None:
    """Insert a report whose JSON columns hold the given raw text exactly (e.g. malformed JSON).

    SQLite stores the text as is; PostgreSQL's jsonb cannot hold malformed JSON, so there the
    text is stored as a JSON string (the "JSON stored as text" case)."""
    conn.execute(sa.insert(analytics_reports), [{k: v for k, v in row.items() if k not in raw_text}])
    for column, text in raw_text.items():
        if conn.dialect.name == "sqlite":
            conn.execute(sa.text(f"UPDATE analytics_reports SET {column} = :v WHERE id = :id"),
                         {"v": text, "id": row["id"].hex})
        else:
            conn.execute(sa.text(f"UPDATE analytics_reports SET {column} = CAST(:v AS jsonb) WHERE id = :id"),
                         {"v": json.dumps(text), "id": str(row["id"])})
