"""Account health (lib.queue.accounts.account_health) and the token expiry check (worker.checks.check_tokens)
against the sandbox over real HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lib.alerts.store import TOKEN_EXPIRING
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import system_alerts
from lib.queue.accounts import account_health
from lib.queue.store import pause
from tests.support.worker import add_account, add_row, client_for, sandbox, worker_settings  # noqa: F401
from worker.checks import check_tokens
from worker.tick import run_tick

OP = Actor("ops@example.com", OPERATOR)


def test_cards_show_connection_pause_counts_last_outcomes_usage_and_quota_never_the_token(engine, db_url, sandbox):
    with engine.begin() as conn:
        good = add_account(conn, username="good", token="tok-GOOD-secret", sandbox=sandbox)
        bad = add_account(conn, username="gone", token="expired-SECRET")
        add_row(conn, good, "publish_post", {"image_url": "https://x/a.jpg", "caption": "ok"})
        add_row(conn, good, "send_dm", {"recipient_id": "1", "message_text": "boom #fail:permanent"})
        add_row(conn, good, "reply_comment", {"comment_id": "1", "reply_text": "later"},
                now=datetime.now(UTC) + timedelta(seconds=1))
        add_row(conn, bad, "send_dm", {"recipient_id": "1", "message_text": "x"})
    settings = worker_settings(db_url, sandbox)
    run_tick(engine, settings, client_for(settings))
    with engine.begin() as conn:
        add_row(conn, good, "send_dm", {"recipient_id": "2", "message_text": "waits behind the pause"})
        pause(conn, actor=OP, now=datetime.now(UTC), business_account_id=good, action_type="send_dm",
              reason="checking DMs")
    now = datetime.now(UTC)
    with engine.connect() as conn:
        cards = {c.name: c for c in account_health(conn, now=now)}
    g, b = cards["good"], cards["gone"]
    assert g.is_connected and not b.is_connected
    assert b.disconnected_at is not None and "190" in b.disconnect_reason
    assert g.paused and g.pauses[0].reason == "checking DMs" and g.pauses[0].waiting == 1
    assert (g.counts["pending"], g.counts["dlq"], g.counts["due"], g.counts["held_back"]) == (1, 1, 0, 1)
    assert set(g.last_success) == {"publish_post", "reply_comment"}
    when, error, status = g.last_failure["send_dm"]
    assert status == "dlq" and "100" in error
    assert g.usage["call_count"] is not None and g.quota[0] == 0 and g.quota[1] == 100
    text = repr(cards) + repr([asdict(c) for c in cards.values()])
    assert "SECRET" not in text and "secret" not in text


def test_token_expiry_is_read_with_the_app_token_and_raises_then_resolves_one_alert(engine, db_url, sandbox):
    soon = time.time() + 3 * 86400
    with engine.begin() as conn:
        acc = add_account(conn, username="soon", token="tok-soon")
        never = add_account(conn, username="never", token="tok-never")
    sandbox.add_account("1784soon", "tok-soon", username="soon", token_expires_at=soon)
    sandbox.add_account("1784never", "tok-never", username="never", token_expires_at=0)
    settings = worker_settings(db_url, sandbox)
    assert check_tokens(engine, settings, client_for(settings), now=datetime.now(UTC)) == 0  # no app token
    settings = replace(settings, meta_app_token="1000000000000001|app-secret")
    now = datetime.now(UTC)
    assert check_tokens(engine, settings, client_for(settings), now=now) == 2
    assert check_tokens(engine, settings, client_for(settings), now=now + timedelta(hours=1)) == 0  # not again so soon
    with engine.connect() as conn:
        (alert,) = conn.execute(sa.select(system_alerts).where(system_alerts.c.alert_type == TOKEN_EXPIRING)).all()
        assert alert.business_account_id == acc and "expires in 3 days" in alert.message and not alert.resolved
        cards = {c.name: c for c in account_health(conn, now=now)}
        assert abs(cards["soon"].usage["token_expires_at"].timestamp() - soon) < 1
        assert cards["never"].usage["token_expires_at"] is None and cards["never"].usage["token_checked_at"]
    sandbox.add_account("1784soon", "tok-soon", username="soon", token_expires_at=time.time() + 60 * 86400)  # renewed
    assert check_tokens(engine, settings, client_for(settings), now=now + timedelta(hours=7)) == 2
    with engine.connect() as conn:
        assert conn.execute(sa.select(system_alerts.c.resolved)
                            .where(system_alerts.c.alert_type == TOKEN_EXPIRING)).scalar() is True
    assert never


def test_last_outcomes_are_the_newest_row_of_each_account_and_action_type(engine):
    """The per-(account, action type) probes: newest sent and newest failed/dlq row, each account on its own."""
    from tests.support.queue_rows import add_account as add_plain_account
    from tests.support.queue_rows import insert_rows, queue_row

    now = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as conn:
        a, b = add_plain_account(conn, "alpha", now), add_plain_account(conn, "beta", now)
        rows = [queue_row(account=a, now=now, status="sent", retry_count=0, action_type="send_dm", age_min=m)
                for m in (30, 5, 60)]
        rows += [queue_row(account=a, now=now, status="failed", retry_count=1, action_type="send_dm", age_min=20,
                           error="newer failure"),
                 queue_row(account=a, now=now, status="dlq", action_type="send_dm", age_min=40, error="older dlq"),
                 queue_row(account=b, now=now, status="dlq", action_type="publish_post", age_min=1, error="beta's"),
                 queue_row(account=b, now=now, status="pending", retry_count=0, action_type="send_dm", age_min=0)]
        insert_rows(conn, rows)
    with engine.connect() as conn:
        cards = {c.name: c for c in account_health(conn, now=now)}
        (only_b,) = account_health(conn, now=now, account_id=b)
    assert cards["alpha"].last_success == {"send_dm": now - timedelta(minutes=5)}
    assert cards["alpha"].last_failure == {"send_dm": (now - timedelta(minutes=20), "newer failure", "failed")}
    assert cards["beta"].last_success == {} and only_b.last_success == {}
    assert only_b.last_failure == {"publish_post": (now - timedelta(minutes=1), "beta's", "dlq")}
    assert (only_b.counts["pending"], only_b.counts["dlq"]) == (1, 1)
    assert (cards["alpha"].counts["failed"], cards["alpha"].counts["dlq"], cards["alpha"].counts["pending"]) == (1, 1, 0)
