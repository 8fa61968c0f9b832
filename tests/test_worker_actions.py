"""The worker against the sandbox Graph API over real HTTP, on SQLite and PostgreSQL: successes,
claiming rules, idempotency."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa

from lib.core.schema import audit_log
from lib.core.schema import post_queue as pq
from lib.queue.rules import idempotency_key
from tests.support.worker import add_account, add_row, client_for, row, sandbox, statuses, worker_settings  # noqa: F401
from worker.tick import run_tick


def _tick(engine, db_url, sandbox, **overrides):
    settings = worker_settings(db_url, sandbox, **overrides)
    return run_tick(engine, settings, client_for(settings))
@pytest.mark.pooler
def test_each_action_type_succeeds_with_its_audit_row(engine, db_url, sandbox):
    # a container made beforehand under the account, as the UGC agent would have done, for repost_ugc
    # with creation_id (a container belongs to the user who made it)
    made = requests.post(f"{sandbox.url}/17840000000001/media", data={"image_url": "https://x/ugc.jpg",
                                                                     "caption": "ugc-ready", "access_token": "tok-good"}).json()
    with engine.begin() as conn:
        acc = add_account(conn, ig_id="17840000000001", sandbox=sandbox)
        ids = {
            "reply_comment": add_row(conn, acc, "reply_comment", {"comment_id": "1790001", "reply_text": "thanks!",
                                                                  "post_id": "1780001"}),
            "reply_dm": add_row(conn, acc, "reply_dm", {"conversation_id": "aWdfconv1", "message_text": "hi back"}),
            "send_dm": add_row(conn, acc, "send_dm", {"recipient_id": "9001", "message_text": "hello"}),
            "publish_post": add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": "new post",
                                                                "media_type": "IMAGE", "scheduled_post_id": "sp1"}),
            "repost_ugc": add_row(conn, acc, "repost_ugc", {"permission_id": "perm1", "creation_id": made["id"]}),
            "repost_ugc_media": add_row(conn, acc, "repost_ugc", {"permission_id": "perm2",
                                                                  "image_url": "https://x/u.jpg", "caption": "ugc2"}),
        }
    result = _tick(engine, db_url, sandbox)
    assert (result.claimed, result.sent, result.failed, result.dlq, result.error) == (6, 6, 0, 0, None)
    stats = sandbox.stats()
    assert stats["effects"]["thanks!"] == {"replies": 1}
    assert stats["effects"]["hi back"] == {"messages": 1}
    assert stats["effects"]["new post"] == {"media": 1, "media_publish": 1}
    assert stats["effects"]["ugc-ready"] == {"media": 1, "media_publish": 1}  # no second container
    assert stats["effects"]["ugc2"] == {"media": 1, "media_publish": 1}
    expected_event = {"reply_comment": "comment_replied", "reply_dm": "dm_sent", "send_dm": "dm_sent",
                      "publish_post": "post_published", "repost_ugc": "ugc_reposted", "repost_ugc_media": "ugc_reposted"}
    with engine.connect() as conn:
        audits = {a.details["queue_id"]: a for a in conn.execute(sa.select(audit_log))}
        assert len(audits) == 6
        for name, row_id in ids.items():
            r = row(conn, row_id)
            assert r.status == "sent" and r.instagram_id and r.error is None and r.error_category is None
            a = audits[str(row_id)]
            assert a.event_type == expected_event[name] and a.success is True
            assert a.details["business_account_id"] == str(acc) and a.resource_id == r.instagram_id
        pub = row(conn, ids["publish_post"])
        assert pub.payload["creation_id"] in stats["containers"]
        assert stats["containers"][pub.payload["creation_id"]]["published"] == pub.instagram_id
        assert audits[str(ids["publish_post"])].action == "publish"
        assert audits[str(ids["publish_post"])].resource_type == "instagram_post"
        assert row(conn, ids["repost_ugc"]).instagram_id == stats["containers"][made["id"]]["published"]


def test_sent_rows_are_never_executed_again(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn)
        add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "once"})
    assert _tick(engine, db_url, sandbox).sent == 1
    again = _tick(engine, db_url, sandbox)
    assert again.claimed == 0
    assert sandbox.stats()["attempts"] == {"once": 1}


def test_a_batch_takes_at_most_batch_size_rows_oldest_first(engine, db_url, sandbox):
    t0 = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as conn:
        acc = add_account(conn)
        for i in range(25):
            add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": f"m{i:02d}"},
                    now=t0 + timedelta(seconds=i))
    result = _tick(engine, db_url, sandbox)
    assert result.claimed == 20 and result.sent == 20
    with engine.connect() as conn:
        assert statuses(conn) == {"sent": 20, "pending": 5}
        left = {r.payload["message_text"] for r in conn.execute(sa.select(pq).where(pq.c.status == "pending"))}
    assert left == {f"m{i}" for i in range(20, 25)}


def test_due_failed_rows_are_claimed_and_not_yet_due_ones_wait(engine, db_url, sandbox):
    now = datetime.now(UTC)
    with engine.begin() as conn:
        acc = add_account(conn)
        due = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "due"})
        later = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "later"})
        conn.execute(sa.update(pq).where(pq.c.id == due).values(status="failed", retry_count=2,
                                                                next_retry_at=now - timedelta(seconds=5)))
        conn.execute(sa.update(pq).where(pq.c.id == later).values(status="failed", retry_count=2,
                                                                  next_retry_at=now + timedelta(minutes=8)))
    result = _tick(engine, db_url, sandbox)
    assert result.claimed == 1
    with engine.connect() as conn:
        assert row(conn, due).status == "sent"
        assert row(conn, later).status == "failed" and row(conn, later).retry_count == 2


def test_rows_of_disconnected_accounts_are_skipped(engine, db_url, sandbox):
    with engine.begin() as conn:
        off = add_account(conn, username="off", connected=False)
        on = add_account(conn, username="on")
        skipped = add_row(conn, off, "send_dm", {"recipient_id": "1", "message_text": "skip me"})
        add_row(conn, on, "send_dm", {"recipient_id": "1", "message_text": "send me"})
    assert _tick(engine, db_url, sandbox).claimed == 1
    with engine.connect() as conn:
        assert row(conn, skipped).status == "pending"


def test_a_row_whose_action_was_already_sent_is_marked_sent_without_calling_instagram(engine, db_url, sandbox):
    payload = {"recipient_id": "1", "message_text": "dup"}
    with engine.begin() as conn:
        acc = add_account(conn)
        first = add_row(conn, acc, "send_dm", payload)
    _tick(engine, db_url, sandbox)
    with engine.begin() as conn:
        sent_id = row(conn, first).instagram_id
        # a twin written by another tool, whose stored key differs from ours (ours is unique here)
        twin = add_row(conn, acc, "send_dm", {**payload, "extra": 1})
        conn.execute(sa.update(pq).where(pq.c.id == twin).values(payload=payload, idempotency_key="legacy-key-1"))
        assert idempotency_key(acc, "send_dm", payload) == row(conn, first).idempotency_key
    result = _tick(engine, db_url, sandbox)
    assert result.sent == 1
    assert sandbox.stats()["attempts"] == {"dup": 1}
    with engine.connect() as conn:
        t = row(conn, twin)
        assert t.status == "sent" and t.instagram_id == sent_id
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 1


def test_demo_enqueuer_rows_are_executed_by_the_worker(engine, db_url, sandbox):
    import random

    from sandbox.demo_enqueuer import enqueue_some

    with engine.begin() as conn:
        add_account(conn, sandbox=sandbox)
        add_account(conn, username="off", connected=False)
    assert enqueue_some(engine, random.Random(3), 12) == 12
    result = _tick(engine, db_url, sandbox)
    # every row goes out, except a reel that Instagram is still processing: it waits, no failure
    assert (result.claimed, result.failed, result.dlq) == (12, 0, 0)
    assert result.sent + result.waiting == 12 and result.sent >= 10


def test_graph_errors_never_carry_the_access_token():
    from lib.instagram.client import AccountCreds, GraphClient
    from lib.instagram.errors import GraphError, categorize_ig_error
    from tests.support.pg import free_port

    client = GraphClient(f"http://127.0.0.1:{free_port()}/v26.0", connect_timeout=1, read_timeout=1)
    acc = AccountCreds("a", "1784", "secret-token-123")
    for call in (lambda: client.conversation_peer("c1", acc),  # a GET
                 lambda: client.send_message("1", "x", acc)):
        try:
            call()
        except GraphError as exc:
            assert "secret-token-123" not in str(exc) and categorize_ig_error(exc).error_category == "transient"
        else:
            raise AssertionError("expected a connection error")
