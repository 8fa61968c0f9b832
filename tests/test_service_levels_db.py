"""Service levels on every database: p50/p95 in SQL (the same on both dialects), compliance with
overdue rows, and an injected delay that moves the SLO and fires exactly one slo_burn alert."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lib.core.schema import post_queue, system_alerts
from lib.core.settings import SloTarget
from lib.health.service_levels import compliance, send_time_percentiles, slo_statuses, sync_slo_alerts
from tests.support.worker import add_account

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = timedelta(minutes=1)
DM = SloTarget("reply_dm", 0.95, 900)


def add(conn, acc, action, created, *, sent_after=None, status=None):
    status = status or ("sent" if sent_after is not None else "pending")
    conn.execute(sa.insert(post_queue).values(
        id=uuid.uuid4(), business_account_id=acc, action_type=action, payload={"text": "hi"},
        idempotency_key=uuid.uuid4().hex, status=status, retry_count=0, created_at=created,
        updated_at=created + (sent_after or timedelta(0))))


def test_percentiles_are_nearest_rank_per_action_type_and_account(engine):
    with engine.begin() as conn:
        a, b = add_account(conn, username="a"), add_account(conn, username="b")
        for i in range(1, 21):  # 20 DMs of account a sent after 1..20 s
            add(conn, a, "reply_dm", NOW - 2 * 60 * M, sent_after=i * S)
        for i in range(1, 5):  # 4 of account b sent after 100..400 s
            add(conn, b, "reply_dm", NOW - 2 * 60 * M, sent_after=i * 100 * S)
        add(conn, a, "publish_post", NOW - 3 * 60 * M, sent_after=30 * M)
        add(conn, a, "reply_dm", NOW - 3 * 24 * 60 * M, sent_after=5 * S)  # outside 24 h, inside 7 d
        add(conn, a, "reply_dm", NOW - 30 * M)  # pending: not in the percentiles
        day = send_time_percentiles(conn, now=NOW, window=timedelta(hours=24))
        week = send_time_percentiles(conn, now=NOW, window=timedelta(days=7))
        per_account = send_time_percentiles(conn, now=NOW, window=timedelta(hours=24), by_account=True)
        only_b = send_time_percentiles(conn, now=NOW, window=timedelta(hours=24), account_id=b)
    # 24 values: 1..20, 100, 200, 300, 400 -> p50 = 12th (12 s), p95 = 23rd (300 s)
    assert [(r["action_type"], r["sent"], round(r["p50_s"]), round(r["p95_s"])) for r in day] == [
        ("publish_post", 1, 1800, 1800), ("reply_dm", 24, 12, 300)]
    assert [(r["sent"], round(r["p50_s"])) for r in week if r["action_type"] == "reply_dm"] == [(25, 12)]
    by_acc = {(str(r["business_account_id"]), r["action_type"]): (r["sent"], round(r["p50_s"]), round(r["p95_s"]))
              for r in per_account}
    assert by_acc[(str(a), "reply_dm")] == (20, 10, 19) and by_acc[(str(b), "reply_dm")] == (4, 200, 400)
    assert [(r["sent"], round(r["p95_s"])) for r in only_b] == [(4, 400)]


def test_compliance_counts_late_dead_and_overdue(engine):
    with engine.begin() as conn:
        acc = add_account(conn)
        for _ in range(16):
            add(conn, acc, "reply_dm", NOW - 60 * M, sent_after=2 * M)  # good
        add(conn, acc, "reply_dm", NOW - 60 * M, sent_after=20 * M)  # late
        add(conn, acc, "reply_dm", NOW - 50 * M, sent_after=M, status="dlq")  # dead
        add(conn, acc, "reply_dm", NOW - 16 * M)  # overdue (pending past 15 min)
        add(conn, acc, "reply_dm", NOW - 5 * M)  # pending, not overdue yet
        add(conn, acc, "reply_comment", NOW - 60 * M, sent_after=30 * M)  # another action type
        c = compliance(conn, DM, now=NOW, window=timedelta(hours=24))
    assert (c.good, c.late, c.dead, c.overdue, c.total) == (16, 1, 1, 1, 19)


def test_an_injected_delay_moves_the_slo_and_fires_exactly_one_alert(engine):
    with engine.begin() as conn:
        acc = add_account(conn)
        # a week of DMs every 10 minutes, each sent within a minute
        t = NOW - timedelta(days=7)
        while t < NOW - 2 * 60 * M:
            add(conn, acc, "reply_dm", t, sent_after=40 * S)
            t += 10 * M
        (before,) = slo_statuses(conn, [DM], now=NOW - 2 * 60 * M, window_days=7)
        assert before.window.ratio == 1.0 and before.burn == 0.0
        # the delay: for two hours the worker sends nothing; a DM arrives every 30 s, the check runs as often
        raised, now = [], NOW - 2 * 60 * M
        while now < NOW:
            add(conn, acc, "reply_dm", now)
            now += 30 * S
            r = sync_slo_alerts(conn, [DM], now=now, burn_threshold=14.4)
            raised += r["raised"]
        (during,) = slo_statuses(conn, [DM], now=NOW, window_days=7)
        alerts = conn.execute(sa.select(system_alerts).where(system_alerts.c.alert_type == "slo_burn")).all()
        assert raised == ["reply_dm"] and len(alerts) == 1 and alerts[0].resolved is False
        assert during.window.ratio < 1.0 and during.window.overdue > 0 and during.burn >= 14.4
        assert alerts[0].details["action_types"] == ["reply_dm"]
        assert "95 % of reply_dm within 15 min" in alerts[0].message
        # the worker catches up: every waiting row is sent now; after an hour of good sends it resolves
        conn.execute(sa.update(post_queue).where(post_queue.c.status == "pending").values(
            status="sent", updated_at=NOW))
        later = NOW + 61 * M
        t = NOW
        while t < later:
            add(conn, acc, "reply_dm", t, sent_after=30 * S)
            t += 2 * M
        assert sync_slo_alerts(conn, [DM], now=later, burn_threshold=14.4)["resolved"] == ["reply_dm"]
        assert conn.execute(sa.select(system_alerts.c.resolved).where(
            system_alerts.c.alert_type == "slo_burn")).scalar() is True
