"""Synthetic analytics_reports in the reports' JSON shapes, for the benchmark and browser tests.

Deterministic for a seed. Daily reports at 02:00 UTC cover the day before; weekly reports on
Mondays 08:00 UTC cover the Monday-Sunday before. Every report carries all sections, a
historical_comparison against the previous period and three insight lists.
"""
from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from lib.core.schema import analytics_reports, instagram_business_accounts

COMPARED = ("impressions", "reach", "profile_views", "website_clicks", "followers_count", "total_likes",
            "total_comments", "total_saves", "total_shares", "avg_engagement_rate")
CAPTIONS = ("New drop is live", "Behind the scenes at the studio", "3 ways to style it", "Customer story",
            "Weekend sale: 20% off", "Meet the team", "How it's made")


def _day(rng: random.Random, followers: float, d: date) -> dict:
    season = 1.15 if d.weekday() >= 5 else 1.0
    reach = round(followers * 0.3 * season * rng.lognormvariate(0, 0.15))
    likes = round(reach * 0.05 * rng.lognormvariate(0, 0.2))
    clicks = round(reach * 0.004 * rng.uniform(0.8, 1.2))
    orders = round(clicks * 0.03 * rng.lognormvariate(0, 0.3))
    return {"impressions": round(reach * rng.uniform(1.5, 2.0)), "reach": reach,
            "profile_views": round(reach * 0.04), "website_clicks": clicks,
            "follower_growth": round(followers * 0.002 * rng.lognormvariate(0, 0.4)),
            "posts_published": 1 + (rng.random() < 0.4), "total_likes": likes, "total_comments": round(likes * 0.04),
            "total_saves": round(likes * 0.08), "total_shares": round(likes * 0.03), "orders": orders,
            "revenue": round(orders * 42 * rng.lognormvariate(0, 0.2), 2)}


def _period(days: list[dict], followers: int) -> dict:
    ig = {k: sum(d[k] for d in days) for k in ("impressions", "reach", "profile_views", "website_clicks",
                                                "follower_growth", "posts_published", "total_likes",
                                                "total_comments", "total_saves", "total_shares")}
    ig["followers_count"] = followers
    ig["avg_engagement_rate"] = round((ig["total_likes"] + ig["total_comments"] + ig["total_saves"]) / max(1,
                                                                                                           ig["reach"]) * 100, 2)
    return ig


def report_rows(account_ids: list[uuid.UUID], *, now: datetime, days: int, weeks: int, seed: int = 7) -> Iterator[dict]:
    for n, acc in enumerate(account_ids):
        rng = random.Random(f"{seed}-{n}")
        first = now.date() - timedelta(days=max(days, weeks * 7 + 7) + 8)
        followers = 5_000 + 3_000 * n
        series: dict[date, tuple[dict, int]] = {}
        d = first
        while d < now.date():
            stats = _day(rng, followers, d)
            followers += stats["follower_growth"]
            series[d] = (stats, round(followers))
            d += timedelta(days=1)
        yesterday = now.date() - timedelta(days=1)
        for i in range(days):
            day = yesterday - timedelta(days=i)
            yield _row(rng, acc, "daily", datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, hours=2),
                       [day], [day - timedelta(days=1)], series)
        monday = now.date() - timedelta(days=now.date().weekday())
        for i in range(weeks):
            start = monday - timedelta(days=7 * (i + 1))
            cur = [start + timedelta(days=k) for k in range(7)]
            prev = [c - timedelta(days=7) for c in cur]
            rdate = datetime(monday.year, monday.month, monday.day, 8, tzinfo=UTC) - timedelta(days=7 * i)
            yield _row(rng, acc, "weekly", rdate, cur, prev, series)


def _row(rng, acc, report_type, report_date, cur_days, prev_days, series) -> dict:
    cur = _period([series[d][0] for d in cur_days], series[cur_days[-1]][1])
    prev = _period([series[d][0] for d in prev_days], series[prev_days[-1]][1])
    orders = sum(series[d][0]["orders"] for d in cur_days)
    revenue = round(sum(series[d][0]["revenue"] for d in cur_days), 2)
    posts = [{"media_id": str(17_900_000_000_000_000 + rng.getrandbits(40)), "engagement": rng.randint(50, 900),
              "caption_snippet": rng.choice(CAPTIONS)} for _ in range(3)]
    posts.sort(key=lambda p: -p["engagement"])
    changes = {}
    for m in COMPARED:
        p, c = prev[m], cur[m]
        pct = round((c - p) / p * 100, 1) if p else 0.0
        changes[m] = {"previous": p, "current": c, "change_pct": pct,
                      "trend": "up" if pct >= 1 else "down" if pct <= -1 else "flat"}
    label = "vs_last_1d" if report_type == "daily" else "vs_last_7d"
    return {
        "id": uuid.UUID(int=rng.getrandbits(128)), "business_account_id": acc, "report_type": report_type,
        "report_date": report_date, "start_date": cur_days[0].isoformat(), "end_date": cur_days[-1].isoformat(),
        "instagram_metrics": cur,
        "media_metrics": {
            "total_posts": 300, "total_posts_in_period": cur["posts_published"],
            "avg_likes": round(cur["total_likes"] / max(1, cur["posts_published"]), 1),
            "avg_comments": round(cur["total_comments"] / max(1, cur["posts_published"]), 1),
            "avg_reach": round(cur["reach"] * 0.5, 1), "avg_engagement_rate": cur["avg_engagement_rate"],
            "top_performing": posts, "best_post": {**posts[0], "media_type": "VIDEO"},
            "worst_post": {**posts[-1], "media_type": "IMAGE"},
            "by_media_type": {"IMAGE": {"count": 2, "avg_engagement_rate": 3.1, "avg_likes": 120.0},
                              "VIDEO": {"count": 1, "avg_engagement_rate": 4.6, "avg_likes": 210.0}},
        },
        "revenue_metrics": {"attributed_revenue": revenue, "attribution_count": orders + 2,
                            "avg_order_value": round(revenue / orders, 2) if orders else 0.0,
                            "conversion_rate": round(orders / cur["website_clicks"], 4) if cur["website_clicks"] else 0.0,
                            "attributed_orders": orders, "avg_attribution_score": 0.62, "top_touchpoint_type": "reel"},
        "historical_comparison": {
            "period": label, "impressions_delta": cur["impressions"] - prev["impressions"],
            "reach_delta": cur["reach"] - prev["reach"], "follower_delta": cur["followers_count"] - prev["followers_count"],
            "engagement_delta": cur["total_likes"] - prev["total_likes"],
            "previous_period": {"start_date": prev_days[0].isoformat(), "end_date": prev_days[-1].isoformat()},
            "changes": changes, "note": "Compared with the previous period.",
        },
        "insights": {
            "key_findings": [f"Reach was {changes['reach']['change_pct']:+.1f}% vs the previous period."],
            "recommendations": ["Post more Reels on weekends.", "Add product tags to carousels."],
            "anomalies": [] if abs(changes["reach"]["change_pct"]) < 40 else ["Reach moved more than 40%."],
        },
        "data_sources": ["instagram_graph_api:insights", "shopify:orders"],
        "processed_at": report_date + timedelta(minutes=3), "run_id": f"bench-{rng.getrandbits(24):06x}",
        "created_at": report_date + timedelta(minutes=3),
    }


def insert_accounts(conn, n: int, *, now: datetime, prefix: str = "brand") -> list[uuid.UUID]:
    ids = [uuid.UUID(int=i + 1) for i in range(n)]
    conn.execute(sa.insert(instagram_business_accounts), [
        {"id": a, "username": f"{prefix}_{i + 1:02d}", "instagram_business_id": str(17_841_400_000 + i),
         "access_token": "never-shown", "is_connected": True, "created_at": now, "updated_at": now}
        for i, a in enumerate(ids)])
    return ids


def fill(engine, *, accounts: int, days: int, weeks: int, now: datetime, seed: int = 7) -> int:
    """Accounts plus their reports; returns the number of reports inserted."""
    with engine.begin() as conn:
        ids = insert_accounts(conn, accounts, now=now)
    batch, total = [], 0
    with engine.begin() as conn:
        for row in report_rows(ids, now=now, days=days, weeks=weeks, seed=seed):
            batch.append(row)
            if len(batch) >= 1000:
                conn.execute(sa.insert(analytics_reports), batch)
                total += len(batch)
                batch = []
        if batch:
            conn.execute(sa.insert(analytics_reports), batch)
            total += len(batch)
    return total
