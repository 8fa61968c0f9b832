"""Scenario, round 2: replies, DMs and Reels through the worker against the documented sandbox with
fast time, on SQLite, PostgreSQL and the user's DDL -- answers lost after Instagram acted, look-first
reads that fail, a reply to a reply, a 368 temporary block, a restricted account, Reels whose upload
failed transiently.

What must hold: no public reply and no DM twice, no Reel lost or published twice, no row of a blocked
or restricted account dead-lettered and none of their retries used."""
from __future__ import annotations

import requests
import sqlalchemy as sa

from lib.core.schema import post_queue as pq
from tests.support.worker import add_row, client_for, worker_settings
from tests.test_worker_publishing import Clock, account, clock, sb  # noqa: F401 - fixtures
from worker.tick import run_tick


def test_lost_answers_failed_reads_blocks_and_container_errors_never_double_or_lose(engine, db_url, sb, clock):
    for i in range(30):  # a busy thread: the top-level comment has 30 customer replies (two pages)
        requests.post(f"{sb.url}/top/replies", data={"message": f"customer {i}", "access_token": f"cust{i}"})
    thread_reply = sb.stats()["replies"]["top"][29]["id"]
    with engine.begin() as conn:
        main, _ = account(conn, sb, username="main")
        blocked, _ = account(conn, sb, username="blocked")
        restricted, _ = account(conn, sb, username="restricted")
        replies = [add_row(conn, main, "reply_comment", {"comment_id": f"c{i}", "reply_text": f"Thanks {i}"},
                           now=clock.now()) for i in range(6)]
        replies += [add_row(conn, main, "reply_comment", {"comment_id": f"c{i}", "reply_text": f"Late {i} #fail:slow=2"},
                            now=clock.now()) for i in range(6, 9)]
        replies.append(add_row(conn, main, "reply_comment", {"comment_id": thread_reply,
                                                             "reply_text": "In the thread #fail:slow=2"}, now=clock.now()))
        dms = [add_row(conn, main, "send_dm", {"recipient_id": f"77{i}", "message_text": f"DM {i} #fail:slow=2"},
                       now=clock.now()) for i in range(2)]
        reels = [add_row(conn, main, "publish_post", {
            "media_type": "REELS", "video_url": f"https://x/reel{i}.mp4?proc=30",
            "caption": f"#key:reel{i} reel" + (" #fail:container_error=2207053*1" if i < 2 else "")},
            now=clock.now()) for i in range(4)]
        blocked_rows = [add_row(conn, blocked, "reply_comment", {"comment_id": f"b{i}", "reply_text": f"B {i}"
                                                                 + (" #fail:block*1" if i == 0 else "")},
                                now=clock.now()) for i in range(4)]
        restricted_rows = [add_row(conn, restricted, "publish_post", {"image_url": f"https://x/r{i}.jpg",
                                                                      "caption": f"R {i} #fail:restricted"},
                                   now=clock.now()) for i in range(3)]

    settings = worker_settings(db_url, sb)
    client = client_for(settings)
    read_failures_left = 2
    for step in range(100):  # a hundred minutes of fake time, a tick a minute
        if step == 1:
            sb.fail_next("comment_replies", "5xx", read_failures_left)  # the look-first reads fail twice
        run_tick(engine, settings, client, now_fn=clock.now)
        clock.advance(60)

    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(pq))}
    stats = sb.stats()
    # no public reply twice: every reply text once, under the top-level comment for the thread reply
    texts = [r["text"] for thread in stats["replies"].values() for r in thread if not r["text"].startswith("customer")]
    assert sorted(texts) == sorted(set(texts)) and len(texts) == 10 + 4  # main's ten, blocked's four after the block
    assert "In the thread #fail:slow=2" in [r["text"] for r in stats["replies"]["top"]]
    for rid in replies + dms + reels:
        assert rows[rid].status == "sent", (rows[rid].action_type, rows[rid].status, rows[rid].error)
    # no DM twice
    assert sorted(m["text"] for m in stats["sent_messages"]) == ["DM 0 #fail:slow=2", "DM 1 #fail:slow=2"]
    # no Reel lost, none published twice
    assert sorted(p["key"] for p in stats["published"]) == [f"reel{i}" for i in range(4)]
    # the block held its account for an hour: nothing dead-lettered, no retry used, all sent after it
    for rid in blocked_rows:
        assert rows[rid].status == "sent" and rows[rid].retry_count == 0
    # the restricted account waits for an operator: its rows pending, not dead-lettered, retries untouched
    for rid in restricted_rows:
        assert (rows[rid].status, rows[rid].retry_count) == ("pending", 0)
    tried = [rid for rid in restricted_rows if (rows[rid].error or "").startswith("held: ")]
    assert len(tried) == 1  # one call found the restriction; the account's other rows never reached Instagram
    assert sum(stats["attempts"].get(f"R {i} #fail:restricted", 0) for i in range(3)) == 1
    assert not [r for r in rows.values() if r.status == "dlq"]
