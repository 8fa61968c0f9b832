"""Hostile rows for the fault suite, inserted directly (as someone else's tool or a compromised
backend could write them) into a seeded database.

`add_hostile(engine, now)` -> Hostile: a connected account of its own (username with emoji and
right-to-left text) holding a DLQ row with a 10 MB payload and a 100 KB error, error texts with
HTML and Markdown, audit rows, alerts, a heartbeat, a worker tick, a chat session with a hostile
answer, and analytics reports with deeply nested, malformed (SQLite only: JSON text that does
not parse), string-typed and wrongly typed JSON.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from lib.core.schema import (
    agent_heartbeats,
    analytics_reports,
    audit_log,
    instagram_business_accounts,
    oversight_chat_sessions,
    post_queue,
    system_alerts,
    worker_ticks,
)
from lib.core.timeutil import iso

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
MARKDOWN = ("**bold** [link](javascript:alert(1)) :material/home: $x^2$ [Reset your password](https://evil.example/login) "
            "![b](https://evil.example/beacon.png) www.evil.example ops@evil.example")
RTL = "مرحبا بالعالم · שלום עולם"
EMOJI = "🚀🔥👍🏽👨‍👩‍👧"
HOSTILE = f"{SCRIPT} {IMG} {MARKDOWN} {RTL} {EMOJI}"
# what the sidebar's account picker shows (and binds to ?account=): a phishing link and a tracking image too
USERNAME = f"متجر_shop {EMOJI[:2]} [Reset your password](https://evil.example/login) ![b](https://evil.example/b.png)"
AGENT_ID = f"agent-{SCRIPT}-وكيل"


def long_text(n: int) -> str:
    """n characters: the hostile line, then filler, with a marker at the very end (never shown when truncated)."""
    tail = "END-OF-LONG-TEXT"
    filler = (f" {HOSTILE} " + "x" * 200) * (n // 200 + 1)
    return (HOSTILE + filler)[: n - len(tail)] + tail


def nested(depth: int, leaf=HOSTILE):
    obj = {"leaf": leaf}
    for i in range(depth):
        obj = {"level": depth - i, "child": obj}
    return obj


@dataclass
class Hostile:
    account_id: uuid.UUID
    big_row_id: uuid.UUID  # DLQ row: 10 MB payload, 100 KB error
    html_row_id: uuid.UUID  # DLQ row: short HTML/Markdown error, nested payload
    alert_id: uuid.UUID
    session_id: uuid.UUID
    malformed_report_ids: list[uuid.UUID]


def add_hostile(engine, now: datetime, *, malformed_json: bool = True) -> Hostile:
    acc = uuid.uuid4()
    big, html, alert, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    t = now - timedelta(seconds=5)  # newer than anything the seed wrote: first in every newest-first list
    with engine.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts).values(
            id=acc, username=USERNAME, instagram_business_id="17841400000099999", access_token="EAAhostile" + "t" * 40,
            is_connected=True, created_at=t, updated_at=t))
        conn.execute(sa.insert(post_queue), [
            {"id": big, "business_account_id": acc, "action_type": "send_dm", "idempotency_key": big.hex,
             "payload": {"recipient_id": "1", "message_text": HOSTILE, "blob": "A" * 10_000_000},
             "status": "dlq", "retry_count": 5, "error": long_text(100_000), "error_category": "unknown",
             "next_retry_at": None, "created_at": t - timedelta(minutes=30), "updated_at": t},
            {"id": html, "business_account_id": acc, "action_type": "reply_comment", "idempotency_key": html.hex,
             "payload": {"comment_id": SCRIPT, "reply_text": MARKDOWN, "deep": nested(200)},
             "status": "dlq", "retry_count": 5, "error": f"(#100) {HOSTILE}", "error_category": "permanent",
             "next_retry_at": None, "created_at": t - timedelta(minutes=31), "updated_at": t - timedelta(seconds=1)},
            {"id": uuid.uuid4(), "business_account_id": acc, "action_type": "publish_post",
             "idempotency_key": uuid.uuid4().hex, "payload": {"caption": HOSTILE, "image_url": "javascript:alert(1)"},
             "status": "failed", "retry_count": 2, "error": long_text(100_000), "error_category": "transient",
             "next_retry_at": t + timedelta(minutes=4), "created_at": t - timedelta(minutes=20), "updated_at": t},
        ])
        conn.execute(sa.insert(audit_log), [
            {"id": uuid.uuid4(), "event_type": "post_failed_permanent", "action": "post_queue_dlq",
             "resource_type": "post_queue", "resource_id": str(big), "user_id": f"{IMG}@example.com",
             "success": False, "error_message": long_text(100_000),
             "details": {"business_account_id": str(acc), "note": HOSTILE, "nested": nested(40),
                         "numbers": ["1", 2, None, {"x": MARKDOWN}]},
             "ip_address": SCRIPT, "user_agent": MARKDOWN, "created_at": t},
            {"id": uuid.uuid4(), "event_type": f"custom_{EMOJI}", "action": MARKDOWN,
             "resource_type": SCRIPT, "resource_id": RTL, "user_id": "system", "success": True,
             "error_message": None, "details": {"business_account_id": str(acc), "html": IMG},
             "ip_address": None, "user_agent": None, "created_at": t - timedelta(seconds=1)},
        ])
        conn.execute(sa.insert(system_alerts), [
            {"id": alert, "alert_type": "rate_limit", "message": f"Instagram rate limit: {HOSTILE}",
             "business_account_id": acc, "details": {"last_error": HOSTILE, "nested": nested(60), "queue_id": str(big)},
             "resolved": False, "created_at": t, "updated_at": t},
            {"id": uuid.uuid4(), "alert_type": "sync_failure", "message": long_text(100_000),
             "business_account_id": acc, "details": {"huge": long_text(100_000)},
             "resolved": False, "created_at": t - timedelta(seconds=2), "updated_at": t - timedelta(seconds=2)},
        ])
        conn.execute(sa.insert(agent_heartbeats).values(
            id=uuid.uuid4(), agent_id=AGENT_ID, status=MARKDOWN, last_beat_at=t - timedelta(minutes=10),
            created_at=t - timedelta(minutes=10), updated_at=t - timedelta(minutes=10)))
        conn.execute(sa.insert(worker_ticks).values(
            id=uuid.uuid4(), host=SCRIPT, pid=1, started_at=t - timedelta(seconds=1), finished_at=t,
            claimed=0, sent=0, failed=0, dlq=0, rescued=0, error=long_text(100_000)))
        answer = f"{HOSTILE}\n\n# Heading\n\n```\ncode\n```\n" + long_text(100_000)
        question = f"Why? {SCRIPT} {RTL}"
        conn.execute(sa.insert(oversight_chat_sessions).values(
            id=session, business_account_id=acc, dashboard_user_id="local", session_title=f"{IMG} {RTL}",
            messages=[{"role": "user", "content": question, "timestamp": 12345},
                      {"role": "assistant", "content": {"not": "text"}, "timestamp": "yesterday", "incomplete": "yes"},
                      {"role": "user", "content": question, "timestamp": iso(t - timedelta(minutes=1))},
                      {"role": "assistant", "content": answer, "timestamp": iso(t), "tools_used": [SCRIPT, 42, None],
                       "latency_ms": "fast"}],
            is_active=True, last_question=question, last_answer=answer, last_latency_ms=5,
            last_tools_used=[SCRIPT], total_queries=1, created_at=t - timedelta(minutes=1), updated_at=t))
        reports = _reports(acc, now)
        conn.execute(sa.insert(analytics_reports), reports)
        malformed = []
        if malformed_json:  # JSON text that does not parse: only a text-backed JSON column can hold it
            for col, text in (("instagram_metrics", '{"impressions": 12,,, "reach": '),
                              ("media_metrics", "[[[[ not json"),
                              ("insights", '{"key_findings": ["unterminated'),
                              ("historical_comparison", "NaN garbage \x00"),
                              ("revenue_metrics", '"{\\"attributed_revenue\\": \\"12,3\\"'),
                              ("data_sources", "<script>alert(1)</script>")):
                rid = uuid.uuid4()
                row = {**reports[0], "id": rid, "run_id": f"malformed-{col}"}
                row["report_date"] = row["report_date"] - timedelta(days=len(malformed) + 1)
                conn.execute(sa.insert(analytics_reports).values(**row))
                conn.execute(sa.update(analytics_reports).where(analytics_reports.c.id == rid)
                             .values({col: sa.type_coerce(text, sa.Text)}))
                malformed.append(rid)
    return Hostile(acc, big, html, alert, session, malformed)


def _reports(acc: uuid.UUID, now: datetime) -> list[dict]:
    """Daily and weekly reports with wrong types, numbers as strings, deep nesting and hostile text."""
    today = now.replace(hour=2, minute=0, second=0, microsecond=0)
    rows = []
    for report_type, step in (("daily", 1), ("weekly", 7)):
        for i in range(3):
            day = today - timedelta(days=step * i)
            rows.append({
                "id": uuid.uuid4(), "business_account_id": acc, "report_type": report_type, "report_date": day,
                "start_date": (day - timedelta(days=step)).date().isoformat() if i != 1 else f"{SCRIPT}",
                "end_date": (day - timedelta(days=1)).date().isoformat() if i != 2 else None,
                "instagram_metrics": [
                    {"impressions": "1,234", "reach": "abc", "followers_count": 10**30, "profile_views": True,
                     "website_clicks": -5, "follower_growth": "NaN", "total_likes": {"x": 1},
                     "avg_engagement_rate": "4.5%", "posts_published": [1, 2]},
                    ["not", "an", "object"],
                    nested(500),
                ][i],
                "media_metrics": [
                    {"total_posts": "7", "avg_likes": None, "best_post": {"caption_snippet": HOSTILE, "likes": "many",
                                                                          "permalink": "javascript:alert(1)"},
                     "top_performing": [{"caption_snippet": MARKDOWN, "engagement": "1e309"}, "junk", None],
                     "by_media_type": {SCRIPT: {"count": "3", "avg_engagement_rate": "high"}, "REELS": ["x"]}},
                    "a string where an object belongs",
                    {"best_post": nested(300), "worst_post": [], "by_media_type": None},
                ][i],
                "revenue_metrics": [{"attributed_revenue": "$1,000", "conversion_rate": "0.5", "top_touchpoint_type": IMG},
                                    42, None][i],
                "historical_comparison": [
                    {"changes": {"reach": {"previous": "a", "current": MARKDOWN, "change_pct": "∞"},
                                 SCRIPT: {"previous": 1, "current": 2, "change_pct": 100}}},
                    {"changes": ["wrong"]},
                    nested(500),
                ][i],
                "insights": [
                    {"key_findings": [HOSTILE, long_text(20_000), 42, None, {"x": 1}],
                     "recommendations": MARKDOWN, "anomalies": [RTL + " " + EMOJI]},
                    {"key_findings": "not a list"},
                    nested(500),
                ][i],
                "data_sources": [[SCRIPT], {"x": nested(100)}, "str"][i],
                "processed_at": day + timedelta(minutes=5), "run_id": f"hostile-{report_type}-{i} {SCRIPT}",
                "created_at": day + timedelta(minutes=5),
            })
    return rows
