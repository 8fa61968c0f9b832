"""Each error class over real HTTP lands in the right status with the right audit rows and
alerts, on SQLite and PostgreSQL; retries, rescue and the publish_post container reuse."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lib.alerts.store import severity
from lib.core.schema import audit_log, graph_usage, system_alerts
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.schema import post_queue as pq
from tests.support.worker import add_account, add_row, client_for, row, sandbox, worker_settings  # noqa: F401
from worker.tick import run_tick


def _tick(engine, db_url, sandbox, **overrides):
    settings = worker_settings(db_url, sandbox, **overrides)
    return run_tick(engine, settings, client_for(settings))


def _events(conn, queue_id=None):
    rows = conn.execute(sa.select(audit_log).order_by(audit_log.c.created_at)).all()
    return [(a.event_type, a.action, a.resource_type) for a in rows
            if queue_id is None or (a.details or {}).get("queue_id") == str(queue_id)]


def _alerts(conn, alert_type=None):
    q = sa.select(system_alerts)
    if alert_type:
        q = q.where(system_alerts.c.alert_type == alert_type)
    return conn.execute(q).all()


def _make_due(engine, row_id):
    with engine.begin() as conn:
        conn.execute(sa.update(pq).where(pq.c.id == row_id).values(
            next_retry_at=datetime.now(UTC) - timedelta(seconds=1)))


def test_auth_failure_dead_letters_disconnects_and_raises_one_alert_per_account(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn)
        r1 = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "a #fail:auth"})
        r2 = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "b, same account"})
    result = _tick(engine, db_url, sandbox)
    assert (result.dlq, result.released) == (1, 1)
    with engine.connect() as conn:
        r = row(conn, r1)
        assert (r.status, r.error_category, r.retry_count) == ("dlq", "auth_failure", 0)
        assert "190" in r.error and "tok-good" not in r.error
        assert row(conn, r2).status == "pending"  # put back: its account is disconnected now
        assert conn.execute(sa.select(accounts.c.is_connected).where(accounts.c.id == acc)).scalar() is False
        assert sorted(_events(conn)) == [("auth_failure", "disconnect", "instagram_business_accounts"),
                                         ("post_failed_permanent", "post_queue_dlq", "post_queue")]
        auth = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "auth_failure")).one()
        assert auth.resource_id == str(acc) and auth.details["business_account_id"] == str(acc)
        (alert,) = _alerts(conn)
        assert (alert.alert_type, alert.business_account_id, alert.resolved) == ("auth_failure", acc, False)
        assert severity(alert.alert_type) == "CRITICAL" and alert.details["count"] == 1
    assert _tick(engine, db_url, sandbox).claimed == 0  # disconnected: nothing more is tried
    # reconnected by an operator, fails again: the open alert is updated, not duplicated
    with engine.begin() as conn:
        conn.execute(sa.update(accounts).where(accounts.c.id == acc).values(is_connected=True))
        add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "c #fail:auth"})
    _tick(engine, db_url, sandbox)
    with engine.connect() as conn:
        (alert,) = _alerts(conn)
        assert alert.details["count"] == 2 and "last_seen" in alert.details and alert.details["last_error"]


def test_permanent_error_dead_letters_without_alert(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn)
        r1 = add_row(conn, acc, "reply_comment", {"comment_id": "1", "reply_text": "x #fail:permanent"})
    assert _tick(engine, db_url, sandbox).dlq == 1
    with engine.connect() as conn:
        r = row(conn, r1)
        assert (r.status, r.error_category) == ("dlq", "permanent") and "code 100" in r.error
        assert _events(conn) == [("post_failed_permanent", "post_queue_dlq", "post_queue")]
        assert _alerts(conn) == []


def test_rejected_content_of_a_publish_raises_content_violation(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn)
        r1 = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": "bad #fail:sub=2207004"})
        r2 = add_row(conn, acc, "repost_ugc", {"permission_id": "p", "image_url": "https://x/b.jpg",
                                               "caption": "bad too #fail:sub=2207026@media_publish"})
    assert _tick(engine, db_url, sandbox).dlq == 2
    with engine.connect() as conn:
        assert row(conn, r1).status == row(conn, r2).status == "dlq"
        assert row(conn, r2).payload.get("creation_id")  # the container existed; publishing it was refused
        (alert,) = _alerts(conn)
        assert (alert.alert_type, alert.business_account_id, alert.details["count"]) == ("content_violation", acc, 2)
        assert severity(alert.alert_type) == "ERROR"


def test_rate_limit_retries_no_earlier_than_the_headers_say_and_updates_one_alert(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)  # the usage header entry is keyed by its IG user id
        r1 = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "r #fail:rate=90"})
    before = datetime.now(UTC)
    assert _tick(engine, db_url, sandbox).failed == 1
    with engine.connect() as conn:
        r = row(conn, r1)
        assert (r.status, r.error_category, r.retry_count) == ("failed", "rate_limit", 1)
        assert r.next_retry_at >= before + timedelta(minutes=90)
        (alert,) = _alerts(conn)
        assert alert.alert_type == "rate_limit" and alert.details["retry_after_s"] == 5400
        assert severity("rate_limit") == "WARNING"
        assert _events(conn) == []  # a retryable failure is not an audit event
    _make_due(engine, r1)
    assert _tick(engine, db_url, sandbox).claimed == 0  # the account is throttled until access returns
    with engine.begin() as conn:  # ... 90 minutes later
        conn.execute(sa.update(graph_usage).values(regain_at=datetime.now(UTC) - timedelta(seconds=1)))
    _tick(engine, db_url, sandbox)
    with engine.connect() as conn:
        assert row(conn, r1).retry_count == 2
        (alert,) = _alerts(conn)
        assert alert.details["count"] == 2


def test_transient_timeout_and_unknown_errors_retry_on_the_schedule(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn)
        ids = {kind: add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": f"{kind} #fail:{kind}"})
               for kind in ("5xx", "timeout", "unknown")}
    before = datetime.now(UTC)
    result = _tick(engine, db_url, sandbox)
    after = datetime.now(UTC)
    assert result.failed == 3
    with engine.connect() as conn:
        expected = {"5xx": "transient", "timeout": "transient", "unknown": "unknown"}
        for kind, row_id in ids.items():
            r = row(conn, row_id)
            assert (r.status, r.retry_count, r.error_category) == ("failed", 1, expected[kind])
            assert before + timedelta(minutes=2) <= r.next_retry_at <= after + timedelta(minutes=2)
        assert "Timeout" in row(conn, ids["timeout"]).error
        assert _events(conn) == [] and _alerts(conn) == []


def test_retries_wait_2_4_8_16_32_minutes_then_the_sixth_failure_dead_letters(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn)
        r1 = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "always #fail:5xx"})
    waits = []
    for _ in range(6):
        result = _tick(engine, db_url, sandbox)
        assert result.claimed == 1
        with engine.connect() as conn:
            r = row(conn, r1)
        if r.status == "failed":
            waits.append(round((r.next_retry_at - r.updated_at).total_seconds() / 60))
            _make_due(engine, r1)
    assert waits == [2, 4, 8, 16, 32]
    assert (r.status, r.retry_count, r.error_category, r.next_retry_at) == ("dlq", 5, "transient", None)
    assert sandbox.stats()["attempts"]["always #fail:5xx"] == 6
    with engine.connect() as conn:
        assert _events(conn, r1) == [("post_failed_permanent", "post_queue_dlq", "post_queue")]


def test_publish_post_retry_publishes_the_stored_container(engine, db_url, sandbox):
    caption = "launch #fail:5xx@media_publish*1"
    with engine.begin() as conn:
        acc = add_account(conn)
        r1 = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": caption})
    assert _tick(engine, db_url, sandbox).failed == 1
    with engine.connect() as conn:
        creation_id = row(conn, r1).payload["creation_id"]
    _make_due(engine, r1)
    assert _tick(engine, db_url, sandbox).sent == 1
    stats = sandbox.stats()
    assert stats["effects"][caption] == {"media": 1, "media_publish": 1}
    assert list(stats["containers"]) == [creation_id]
    with engine.connect() as conn:
        r = row(conn, r1)
        assert r.status == "sent" and r.instagram_id == stats["containers"][creation_id]["published"]
        assert r.payload["creation_id"] == creation_id


def test_a_row_stuck_in_processing_is_rescued_as_a_failed_attempt(engine, db_url, sandbox):
    now = datetime.now(UTC)
    with engine.begin() as conn:
        acc = add_account(conn)
        stuck = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "stuck"})
        fresh = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "in hand elsewhere"})
        conn.execute(sa.update(pq).where(pq.c.id == stuck).values(status="processing",
                                                                  updated_at=now - timedelta(minutes=11)))
        conn.execute(sa.update(pq).where(pq.c.id == fresh).values(status="processing",
                                                                  updated_at=now - timedelta(minutes=1)))
    result = _tick(engine, db_url, sandbox)
    assert (result.rescued, result.sent) == (1, 1)
    with engine.connect() as conn:
        r = row(conn, stuck)
        assert (r.status, r.retry_count) == ("sent", 1)
        assert row(conn, fresh).status == "processing"  # within its lease: not ours to take


def test_an_exhausted_stuck_row_goes_to_dlq(engine, db_url, sandbox):
    now = datetime.now(UTC)
    with engine.begin() as conn:
        acc = add_account(conn)
        stuck = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "stuck"})
        conn.execute(sa.update(pq).where(pq.c.id == stuck).values(status="processing", retry_count=5,
                                                                  updated_at=now - timedelta(minutes=11)))
    assert _tick(engine, db_url, sandbox).rescued == 1
    with engine.connect() as conn:
        r = row(conn, stuck)
        assert (r.status, r.retry_count, r.error_category) == ("dlq", 5, "unknown")
        assert "lease" in r.error
        assert _events(conn) == [("post_failed_permanent", "post_queue_dlq", "post_queue")]


def test_a_long_batch_renews_its_claim_and_a_lost_claim_is_never_executed(engine, db_url, sandbox):
    from lib.queue.store import claim, renew_claim, rescue_stale

    t0 = datetime.now(UTC)
    with engine.begin() as conn:
        acc = add_account(conn)
        add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "kept"})
        add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "lost"}, now=t0 + timedelta(seconds=1))
    kept, lost = claim(engine, now=t0, batch_size=20)
    assert renew_claim(engine, kept, now=t0 + timedelta(minutes=6))
    # another worker, 11 minutes later, rescues what was not renewed
    assert rescue_stale(engine, now=t0 + timedelta(minutes=11), lease_s=600, max_retries=5) == 1
    assert not renew_claim(engine, lost, now=t0 + timedelta(minutes=11))
    with engine.connect() as conn:
        assert row(conn, kept.id).status == "processing" and row(conn, lost.id).status == "failed"
