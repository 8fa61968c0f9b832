"""Queue control (lib.queue.store and lib.queue.reads) on SQLite and PostgreSQL: pause/resume against the worker's
claim, discard with the row kept in audit_log, edit and retry with validation; viewers refused;
nothing half-done when the worker holds a row."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.core.identity import OPERATOR, Actor, PermissionDenied
from lib.core.schema import audit_log
from lib.core.schema import post_queue as pq
from lib.queue.reads import active_pauses, discarded_row, queue_health
from lib.queue.rules import QueueControlError
from lib.queue.store import claim, discard, edit_and_retry, pause, resume
from tests.support.worker import add_account, add_row, client_for, row, sandbox, worker_settings  # noqa: F401
from worker.tick import run_tick

OP = Actor("ops@example.com", OPERATOR)
VIEWER = Actor("viewer@example.com")
NOW = datetime.now(UTC)


def _set(engine, rid, **values):
    with engine.begin() as conn:
        conn.execute(sa.update(pq).where(pq.c.id == rid).values(**values))


def _events(conn, event_type):
    return conn.execute(sa.select(audit_log).where(audit_log.c.event_type == event_type)).all()


def test_a_paused_account_is_left_alone_and_resuming_makes_its_rows_due(engine, db_url, sandbox):
    with engine.begin() as conn:
        a = add_account(conn, username="paused")
        b = add_account(conn, username="running")
        held = [add_row(conn, a, "send_dm", {"recipient_id": "1", "message_text": f"a{i}"}) for i in range(3)]
        sent = add_row(conn, b, "send_dm", {"recipient_id": "1", "message_text": "b"})
        pid = pause(conn, actor=OP, now=NOW, business_account_id=a, reason="token rotation")
        assert pause(conn, actor=OP, now=NOW, business_account_id=a) == pid  # already paused: same pause
    with engine.connect() as conn:
        (p,) = active_pauses(conn, now=datetime.now(UTC))
        assert (p.paused_by, p.reason, p.waiting) == ("ops@example.com", "token rotation", 3)
        assert queue_health(conn, now=datetime.now(UTC))["held_back"] == 3
    settings = worker_settings(db_url, sandbox)
    result = run_tick(engine, settings, client_for(settings))
    assert (result.claimed, result.sent) == (1, 1)
    with engine.connect() as conn:
        assert row(conn, sent).status == "sent" and all(row(conn, h).status == "pending" for h in held)
    with engine.begin() as conn:
        assert resume(conn, pid, actor=OP, now=datetime.now(UTC))
    assert run_tick(engine, settings, client_for(settings)).sent == 3
    with engine.connect() as conn:
        assert [e.action for e in _events(conn, "queue_paused")] == ["pause"]
        (r,) = _events(conn, "queue_resumed")
        assert r.user_id == "ops@example.com" and r.details["reason"] == "token rotation"


def test_pausing_one_action_type_of_one_account(engine, db_url, sandbox):
    with engine.begin() as conn:
        a = add_account(conn)
        dm = add_row(conn, a, "send_dm", {"recipient_id": "1", "message_text": "dm"})
        reply = add_row(conn, a, "reply_comment", {"comment_id": "1", "reply_text": "r"})
        pause(conn, actor=OP, now=NOW, business_account_id=a, action_type="send_dm")
    assert [r.id for r in claim(engine, now=datetime.now(UTC), batch_size=20)] == [reply]
    with engine.connect() as conn:
        assert row(conn, dm).status == "pending"


def test_pause_needs_an_operator_and_a_scope(engine):
    with engine.begin() as conn:
        with pytest.raises(PermissionDenied):
            pause(conn, actor=VIEWER, now=NOW, action_type="send_dm")
        with pytest.raises(QueueControlError, match="Pause what"):
            pause(conn, actor=OP, now=NOW)
        with pytest.raises(PermissionDenied):
            resume(conn, __import__("uuid").uuid4(), actor=VIEWER, now=NOW)


def test_discard_keeps_every_column_in_the_audit_row_and_refuses_live_rows(engine):
    with engine.begin() as conn:
        a = add_account(conn)
        dead = add_row(conn, a, "send_dm", {"recipient_id": "1", "message_text": "gone", "access_token": "EAAsecret"})
        busy = add_row(conn, a, "send_dm", {"recipient_id": "1", "message_text": "busy"})
        waiting = add_row(conn, a, "send_dm", {"recipient_id": "1", "message_text": "waiting"})
    _set(engine, dead, status="dlq", retry_count=5, error="boom", error_category="transient")
    _set(engine, busy, status="processing")
    with engine.begin() as conn:
        results = discard(conn, [dead, busy, waiting], actor=OP, now=NOW)
    assert [r.success for r in results] == [True, False, False]
    assert "processing" in results[1].message and "pending" in results[2].message
    with engine.connect() as conn:
        assert conn.execute(sa.select(pq.c.id).where(pq.c.id == dead)).first() is None
        assert row(conn, busy).status == "processing" and row(conn, waiting).status == "pending"
        kept = discarded_row(conn, dead)
        assert (kept["id"], kept["status"], kept["retry_count"], kept["error"]) == (str(dead), "dlq", 5, "boom")
        assert kept["payload"]["message_text"] == "gone" and kept["payload"]["access_token"] == "[redacted]"
        (event,) = _events(conn, "queue_item_discarded")
        assert event.user_id == "ops@example.com" and event.details["business_account_id"] == str(a)
    with engine.begin() as conn, pytest.raises(PermissionDenied):
        discard(conn, [busy], actor=VIEWER, now=NOW)


def test_discard_racing_a_claim_never_deletes_a_claimed_row(engine):
    """The worker claims between the page's read and the discard: the discard sees processing."""
    with engine.begin() as conn:
        a = add_account(conn)
        rid = add_row(conn, a, "send_dm", {"recipient_id": "1", "message_text": "x"})
    _set(engine, rid, status="failed", retry_count=1, next_retry_at=datetime.now(UTC) - timedelta(seconds=1))
    (claimed,) = claim(engine, now=datetime.now(UTC), batch_size=5)
    with engine.begin() as conn:
        (res,) = discard(conn, [rid], actor=OP, now=NOW)
    assert not res.success
    with engine.connect() as conn:
        assert row(conn, rid).status == "processing"


def test_edit_and_retry_validates_clears_the_container_and_audits_the_difference(engine):
    with engine.begin() as conn:
        a = add_account(conn)
        post = add_row(conn, a, "publish_post", {"image_url": "https://x/old.jpg", "caption": "old",
                                                  "creation_id": "17800001"})
        other = add_row(conn, a, "publish_post", {"image_url": "https://x/taken.jpg", "caption": "taken"})
    _set(engine, post, status="dlq", retry_count=5, error="HTTP 400 bad image")
    with engine.begin() as conn:
        with pytest.raises(QueueControlError, match="2,200"):
            edit_and_retry(conn, post, {"caption": "x" * 2201}, actor=OP, now=NOW)
        with pytest.raises(QueueControlError, match="http"):
            edit_and_retry(conn, post, {"image_url": "file:///etc/passwd"}, actor=OP, now=NOW)
        with pytest.raises(QueueControlError, match="cannot be edited"):
            edit_and_retry(conn, post, {"scheduled_post_id": "x"}, actor=OP, now=NOW)
        with pytest.raises(QueueControlError, match="already holds this exact action"):
            edit_and_retry(conn, post, {"image_url": "https://x/taken.jpg", "caption": "taken"}, actor=OP, now=NOW)
        with pytest.raises(PermissionDenied):
            edit_and_retry(conn, post, {"caption": "new"}, actor=VIEWER, now=NOW)
    with engine.connect() as conn:
        r = row(conn, post)
        assert (r.status, r.payload["caption"], r.payload["creation_id"]) == ("dlq", "old", "17800001")  # nothing written
    with engine.begin() as conn:
        res = edit_and_retry(conn, post, {"image_url": "https://x/new.jpg", "caption": "new"}, actor=OP, now=NOW)
    assert res.success and "new media container" in res.message
    with engine.connect() as conn:
        r = row(conn, post)
        assert (r.status, r.retry_count, r.next_retry_at) == ("pending", 0, None)
        assert r.payload == {"image_url": "https://x/new.jpg", "caption": "new"}  # creation_id dropped
        assert r.idempotency_key != row(conn, other).idempotency_key
        (e,) = _events(conn, "queue_item_edited")
        assert e.details["changes"]["caption"] == {"before": "old", "after": "new"}
        assert e.details["changes"]["creation_id"] == {"before": "17800001", "after": None}
        assert e.details["previous_status"] == "dlq" and e.user_id == "ops@example.com"


def test_edit_keeps_the_container_when_only_the_text_of_a_dm_changes_and_refuses_held_rows(engine):
    with engine.begin() as conn:
        a = add_account(conn)
        dm = add_row(conn, a, "send_dm", {"recipient_id": "1", "message_text": "hi"})
    _set(engine, dm, status="failed", retry_count=2)
    with engine.begin() as conn:
        with pytest.raises(QueueControlError, match="1,0"):
            edit_and_retry(conn, dm, {"message_text": "é" * 600}, actor=OP, now=NOW)
        edit_and_retry(conn, dm, {"message_text": "hello"}, actor=OP, now=NOW)
    _set(engine, dm, status="processing")
    with engine.begin() as conn, pytest.raises(QueueControlError, match="processing"):
        edit_and_retry(conn, dm, {"message_text": "again"}, actor=OP, now=NOW)
