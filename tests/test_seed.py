"""The demo data generator: coverage the pages rely on, determinism, and the bulk (COPY) path."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.activity.heartbeats import agent_statuses
from lib.alerts.store import ALERT_TYPES
from lib.core import schema
from lib.core.audit import OPERATOR_EVENT_TYPES, SPEC_EVENT_TYPES
from lib.core.db import init_db, make_engine
from lib.core.schema import ACTION_TYPES
from lib.queue.rules import ERROR_CATEGORIES, STATUSES, idempotency_key
from sandbox.seed import ALIVE_DEMO_AGENTS, DEMO_AGENTS, is_empty, seed_demo, seed_scale

NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)  # a Wednesday

IG_KEYS = {"impressions", "reach", "profile_views", "website_clicks", "follower_growth", "followers_count",
           "posts_published", "total_likes", "total_comments", "total_saves", "total_shares", "avg_engagement_rate"}
MEDIA_KEYS = {"total_posts", "total_posts_in_period", "avg_likes", "avg_comments", "avg_likes_per_post",
              "avg_comments_per_post", "avg_reach", "avg_engagement_rate", "top_performing", "best_post",
              "worst_post", "by_media_type"}
REVENUE_KEYS = {"attributed_revenue", "attribution_count", "avg_order_value", "conversion_rate",
                "attributed_orders", "avg_attribution_score", "top_touchpoint_type"}
COMPARISON_KEYS = {"period", "impressions_delta", "reach_delta", "engagement_delta", "follower_delta",
                   "previous_period", "changes", "note"}
INSIGHT_KEYS = {"key_findings", "recommendations", "anomalies"}


@pytest.fixture
def seeded(engine):
    assert is_empty(engine)
    counts = seed_demo(engine, now=NOW)
    return engine, counts


def _all(conn, table):
    return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


def test_every_table_is_filled_and_not_empty_anymore(seeded):
    engine, counts = seeded
    assert not is_empty(engine)
    with engine.connect() as conn:
        for table in schema.SPEC_TABLES + (schema.instagram_business_accounts,):
            n = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            assert n == counts[table.name] > 0, table.name
        accounts = _all(conn, schema.instagram_business_accounts)
    assert {a["username"] for a in accounts} == {"acme.coffee", "northwind.outdoors", "lumen.studio"}
    assert sum(a["is_connected"] for a in accounts) == 2
    assert all(a["access_token"].startswith("demo-token-") and a["instagram_business_id"].isdigit() for a in accounts)
    assert 200 <= counts["post_queue"] <= 1000 and 2000 <= counts["audit_log"] <= 10_000


def test_queue_covers_every_status_and_action_type(seeded):
    engine, _ = seeded
    with engine.connect() as conn:
        rows = _all(conn, schema.post_queue)
    cells = {(r["status"], r["action_type"]) for r in rows}
    assert cells == {(s, a) for s in STATUSES for a in ACTION_TYPES}
    keys = [r["idempotency_key"] for r in rows]
    assert len(set(keys)) == len(keys)
    assert all(k == idempotency_key(r["business_account_id"], r["action_type"], r["payload"]) for k, r in zip(keys, rows))
    payload_keys = {"reply_comment": {"comment_id", "reply_text", "post_id"}, "reply_dm": {"conversation_id", "message_text"},
                    "send_dm": {"recipient_id", "message_text"},
                    "publish_post": {"caption", "media_type", "scheduled_post_id", "creation_id"},
                    "repost_ugc": {"permission_id", "creation_id", "media_url"}}  # + the media the worker reposts
    media_key = {"IMAGE": "image_url", "VIDEO": "video_url", "CAROUSEL_ALBUM": "children"}  # what Instagram needs
    assert all(set(r["payload"]) == payload_keys[r["action_type"]] | (
        {media_key[r["payload"]["media_type"]]} if r["action_type"] == "publish_post" else set()) for r in rows)
    from lib.instagram.payload_rules import media_spec
    assert all(media_spec("publish_post", r["payload"]) for r in rows if r["action_type"] == "publish_post")

    dlq = [r for r in rows if r["status"] == "dlq"]
    assert {r["error_category"] for r in dlq} == set(ERROR_CATEGORIES)
    assert all(r["error"] for r in dlq)
    top_error = max({r["error"] for r in dlq}, key=lambda e: sum(r["error"] == e for r in dlq))
    assert "Session has expired" in top_error and sum(r["error"] == top_error for r in dlq) >= 40

    failed = [r for r in rows if r["status"] == "failed"]
    assert all(1 <= r["retry_count"] <= 4 and r["next_retry_at"] is not None for r in failed)
    assert any(r["next_retry_at"] <= NOW for r in failed) and any(r["next_retry_at"] > NOW for r in failed)

    processing = [r for r in rows if r["status"] == "processing"]
    assert sum(NOW - r["updated_at"] > timedelta(minutes=10) for r in processing) == 1
    assert all(r["instagram_id"] for r in rows if r["status"] == "sent")


def test_audit_alerts_and_chat(seeded):
    engine, _ = seeded
    with engine.connect() as conn:
        audit = _all(conn, schema.audit_log)
        alerts = _all(conn, schema.system_alerts)
        chats = _all(conn, schema.oversight_chat_sessions)
        queue_ids = {str(i) for i in conn.execute(sa.select(schema.post_queue.c.id)).scalars()}
    assert {r["event_type"] for r in audit} == set(SPEC_EVENT_TYPES) | set(OPERATOR_EVENT_TYPES)
    assert min(r["created_at"] for r in audit) >= NOW - timedelta(days=31)
    assert max(r["created_at"] for r in audit) <= NOW
    assert all(r["details"]["business_account_id"] for r in audit if r["event_type"] != "alert_resolved")
    assert all(r["error_message"] for r in audit if r["success"] is False)
    assert any(r["details"].get("queue_id") in queue_ids for r in audit)  # linked to live queue rows
    assert all(r["user_id"] == "ops@example.com" for r in audit if r["event_type"] in OPERATOR_EVENT_TYPES)
    day = sum(12 <= r["created_at"].hour < 18 for r in audit)
    night = sum(0 <= r["created_at"].hour < 6 for r in audit)
    assert day > 2 * night

    assert {a["alert_type"] for a in alerts} == set(ALERT_TYPES)
    assert {a["alert_type"] for a in alerts if a["resolved"]} == set(ALERT_TYPES)
    assert all(a["resolved_at"] for a in alerts if a["resolved"])
    assert any(not a["resolved"] and a["alert_type"] == "agent_down" and a["details"]["agent_id"] == "ugc-discovery"
               for a in alerts)
    assert any(a["details"]["count"] > 1 for a in alerts)
    open_keys = [(a["alert_type"], a["business_account_id"], a["details"].get("agent_id")) for a in alerts if not a["resolved"]]
    assert len(open_keys) == len(set(open_keys))  # one open alert per condition, as the worker keeps it

    assert {c["dashboard_user_id"] for c in chats} >= {"local"} and len({c["dashboard_user_id"] for c in chats}) == 2
    messages = [m for c in chats for m in c["messages"]]
    assert {m["role"] for m in messages} == {"user", "assistant"}
    assert sum(bool(m.get("incomplete")) for m in messages) == 1
    for c in chats:
        assert c["total_queries"] == sum(m["role"] == "user" for m in c["messages"])
        assert c["last_answer"] == c["messages"][-1]["content"] and c["last_tools_used"]


def test_reports_cover_90_days_13_weeks_and_every_field(seeded):
    engine, _ = seeded
    with engine.connect() as conn:
        reports = _all(conn, schema.analytics_reports)
    by = {}
    for r in reports:
        by.setdefault((r["business_account_id"], r["report_type"]), []).append(r)
    assert len(by) == 6
    for (_, kind), rows in by.items():
        rows.sort(key=lambda r: r["report_date"])
        assert len(rows) == (90 if kind == "daily" else 13)
        for r in rows:
            rd = r["report_date"]
            assert (rd.hour, rd.minute) == ((2, 0) if kind == "daily" else (8, 0)) and rd <= NOW
            assert kind == "daily" or rd.weekday() == 0
            assert set(r["instagram_metrics"]) == IG_KEYS and set(r["media_metrics"]) == MEDIA_KEYS
            assert set(r["revenue_metrics"]) == REVENUE_KEYS and set(r["historical_comparison"]) == COMPARISON_KEYS
            assert set(r["insights"]) == INSIGHT_KEYS and r["insights"]["key_findings"]
            assert r["data_sources"] and r["processed_at"] >= rd and r["run_id"]
            assert set(r["media_metrics"]["top_performing"][0]) == {"media_id", "engagement", "caption_snippet"}
            assert 0 <= r["revenue_metrics"]["conversion_rate"] <= 1
        for prev, cur in zip(rows, rows[1:]):  # the comparison repeats the previous report's numbers
            comp = cur["historical_comparison"]
            assert comp["previous_period"] == {"start_date": prev["start_date"], "end_date": prev["end_date"]}
            for metric, change in comp["changes"].items():
                assert change["previous"] == prev["instagram_metrics"][metric]
                assert change["current"] == cur["instagram_metrics"][metric]
            assert comp["reach_delta"] == cur["instagram_metrics"]["reach"] - prev["instagram_metrics"]["reach"]
    assert any(r["insights"]["anomalies"] for r in reports)


def test_heartbeats_three_alive_one_down_one_gap(seeded):
    engine, _ = seeded
    with engine.connect() as conn:
        statuses = {s.agent_id: s for s in agent_statuses(conn, now=NOW)}
    assert set(statuses) == set(DEMO_AGENTS)
    assert {a for a, s in statuses.items() if s.alive} == set(ALIVE_DEMO_AGENTS)
    down = statuses["ugc-discovery"]
    assert timedelta(minutes=16) < NOW - down.last_beat_at < timedelta(minutes=18)
    assert statuses["content-scheduler"].availability_24h < 0.99
    for agent in ALIVE_DEMO_AGENTS:
        assert NOW - statuses[agent].last_beat_at <= timedelta(seconds=30)
    for agent in ("engagement-monitor", "oversight-brain"):
        assert statuses[agent].availability_24h > 0.999


def test_same_seed_and_now_give_the_same_data(seeded, tmp_path):
    engine, _ = seeded
    other = make_engine(f"sqlite:///{tmp_path / 'again.sqlite'}")
    init_db(other)
    seed_demo(other, now=NOW)
    different = make_engine(f"sqlite:///{tmp_path / 'different.sqlite'}")
    init_db(different)
    seed_demo(different, now=NOW, seed=7)
    with engine.connect() as a, other.connect() as b, different.connect() as c:
        for table in schema.SPEC_TABLES + (schema.instagram_business_accounts,):
            assert _all(a, table) == _all(b, table), table.name
        assert _all(a, schema.post_queue) != _all(c, schema.post_queue)
    other.dispose()
    different.dispose()


def test_scale_path_with_tiny_volumes(engine):
    counts = seed_scale(engine, now=NOW, audit_rows=3_000, audit_days=10, queue_rows=600, dlq_rows=50, accounts=10,
                        report_days=20, report_weeks=4, heartbeats=800, alerts=120, chat_sessions=30, chunk=250)
    assert counts == {"instagram_business_accounts": 10, "agent_heartbeats": 800, "system_alerts": 120,
                      "post_queue": 600, "audit_log": 3_000, "analytics_reports": 10 * 24,
                      "oversight_chat_sessions": 30}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(schema.post_queue.c.status == "dlq")).scalar() == 50
        for table in schema.SPEC_TABLES:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == counts[table.name]
        statuses = {s.agent_id: s.alive for s in agent_statuses(conn, now=NOW)}
        report = conn.execute(sa.select(schema.analytics_reports).limit(1)).mappings().first()
        texts = conn.execute(sa.select(schema.audit_log.c.error_message).where(
            schema.audit_log.c.error_message.is_not(None)).limit(5)).scalars().all()
    assert statuses == {a: a in ALIVE_DEMO_AGENTS for a in DEMO_AGENTS}
    assert set(report["instagram_metrics"]) == IG_KEYS and isinstance(report["media_metrics"]["top_performing"], list)
    assert all(t and t != r"\N" for t in texts)


def test_best_and_worst_posts_are_different_posts_with_their_own_captions(seeded):
    engine, _ = seeded
    with engine.connect() as conn:
        reports = _all(conn, schema.analytics_reports)
    pairs = single = 0
    for r in reports:
        media = r["media_metrics"]
        best, worst = media["best_post"], media["worst_post"]
        if media["total_posts_in_period"] == 1:  # the only post is the best one, not also the worst
            assert best and worst == {}
            single += 1
        elif best and worst:
            assert best["media_id"] != worst["media_id"] and best["engagement"] >= worst["engagement"]
            pairs += 1
    assert single and pairs
    # a week's posts repeat no caption (so best and worst never read as the same post): generated
    # captions only, the queue's published rows keep theirs
    weekly = [r for r in reports if r["report_type"] == "weekly"]
    same = sum(r["media_metrics"]["best_post"]["caption_snippet"] == r["media_metrics"]["worst_post"]["caption_snippet"]
               for r in weekly if r["media_metrics"]["worst_post"])
    assert same <= len(weekly) // 20, same
