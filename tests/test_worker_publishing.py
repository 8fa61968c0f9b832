"""The worker against the Graph sandbox as Meta documents Instagram (docs/graph-api.md), with a
clock shared by the worker and the sandbox (fast time), on SQLite and PostgreSQL: container
lifecycle, publishing quota, the (code, subcode) table, media types, usage headers, messaging,
and what happens after a timeout."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.core.schema import post_queue_state, system_alerts
from lib.instagram.usage import usage_rows
from lib.queue.reads import queue_health, waiting_rows
from sandbox.graph_api import GraphSandbox
from tests.support.worker import add_account, add_row, client_for, row, worker_settings
from worker.tick import run_tick


class Clock:
    """One 'now' for the worker (datetime) and the sandbox (epoch seconds)."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.t

    def epoch(self) -> float:
        return self.t.timestamp()

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sb(clock):
    s = GraphSandbox(clock=clock.epoch, timeout_sleep_s=2.0).start()
    yield s
    s.stop()


def account(conn, sb, *, username="acme", token=None):
    """An account in our table and the same account registered in the sandbox."""
    token = token or f"tok-{uuid.uuid4().hex[:8]}"
    ig = "1784" + uuid.uuid4().hex[:12]
    acc = add_account(conn, username=username, token=token, ig_id=ig)
    sb.add_account(ig, token, page_id="10" + ig[4:], username=username)
    return acc, ig


def tick(engine, db_url, sb, clock, **overrides):
    settings = worker_settings(db_url, sb, **overrides)
    return run_tick(engine, settings, client_for(settings), now_fn=clock.now)


def state(conn, row_id):
    return conn.execute(sa.select(post_queue_state).where(post_queue_state.c.queue_id == row_id)).first()


def alerts(conn, alert_type):
    return conn.execute(sa.select(system_alerts).where(system_alerts.c.alert_type == alert_type)).all()


def make_due(engine, row_id, clock):
    from lib.core.schema import post_queue as pq
    with engine.begin() as conn:
        conn.execute(sa.update(pq).where(pq.c.id == row_id).values(next_retry_at=clock.now()))


# -- container lifecycle ---------------------------------------------------------------------------

def test_a_reel_waits_while_instagram_processes_it_then_publishes_once(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, ig = account(conn, sb)
        rid = add_row(conn, acc, "publish_post", {"media_type": "REELS", "video_url": "https://x/r.mp4",
                                                   "caption": "reel #proc=90"}, now=clock.now())
    first = tick(engine, db_url, sb, clock)
    assert (first.waiting, first.failed, first.dlq) == (1, 0, 0)
    with engine.connect() as conn:
        r, s = row(conn, rid), state(conn, rid)
        assert (r.status, r.retry_count, r.error_category) == ("pending", 0, None)
        assert r.error.startswith("waiting: Instagram is processing the REELS container")
        assert r.next_retry_at == clock.now() + timedelta(seconds=60)
        assert (s.wait_kind, s.creation_id) == ("container", r.payload["creation_id"])
        assert not conn.execute(sa.select(system_alerts)).all()  # waiting is no failure: no alert
        (w,) = waiting_rows(conn, now=clock.now())
        assert (w["id"], w["wait_kind"], w["due_in_s"]) == (rid, "container", 60)
        assert queue_health(conn, now=clock.now())["due_now"] == 0  # not due before its time
    assert tick(engine, db_url, sb, clock).claimed == 0  # a tick before next_retry_at leaves it alone
    clock.advance(60)
    assert tick(engine, db_url, sb, clock).waiting == 1  # 60 s of 90: still processing, no new container
    clock.advance(60)
    assert tick(engine, db_url, sb, clock).sent == 1
    stats = sb.stats()
    assert stats["effects"]["reel #proc=90"] == {"media": 1, "media_publish": 1}
    with engine.connect() as conn:
        r = row(conn, rid)
        assert (r.status, r.retry_count, r.error) == ("sent", 0, None)
        assert r.instagram_id == stats["published"][0]["media_id"]
        assert state(conn, rid) is None


def test_a_container_still_processing_after_the_limit_is_a_failed_attempt(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        rid = add_row(conn, acc, "publish_post", {"media_type": "REELS", "video_url": "https://x/r.mp4",
                                                   "caption": "stuck #proc=99999"}, now=clock.now())
    for _ in range(3):  # 0, 61, 122 s: within the 180 s limit
        assert tick(engine, db_url, sb, clock, container_timeout_s=180).waiting == 1
        clock.advance(61)
    assert tick(engine, db_url, sb, clock, container_timeout_s=180).failed == 1
    with engine.connect() as conn:
        r = row(conn, rid)
        assert (r.status, r.error_category, r.retry_count) == ("failed", "transient", 1)
        assert "still IN_PROGRESS" in r.error and "creation_id" not in r.payload  # next attempt: a new container


def test_a_container_that_instagram_could_not_process_is_permanent_with_its_reason(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        rid = add_row(conn, acc, "publish_post", {"media_type": "REELS", "video_url": "https://x/bad.mp4",
                                                   "caption": "bad #fail:container_error=2207026 #proc=30"},
                      now=clock.now())
    assert tick(engine, db_url, sb, clock).waiting == 1
    clock.advance(60)
    assert tick(engine, db_url, sb, clock).dlq == 1
    with engine.connect() as conn:
        r = row(conn, rid)
        assert (r.status, r.error_category) == ("dlq", "permanent")
        assert "2207026" in r.error  # Instagram's status reason
        assert len(alerts(conn, "content_violation")) == 1


def test_an_expired_container_is_replaced_and_a_published_one_never_published_again(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, ig = account(conn, sb)
        old = sb.add_container(ig, caption="old", created_at=clock.epoch() - 25 * 3600)
        live = sb.add_container(ig, caption="live", status_code="PUBLISHED", created_at=clock.epoch() - 600)
        r_old = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": "old",
                                                     "creation_id": old}, now=clock.now())
        r_live = add_row(conn, acc, "publish_post", {"image_url": "https://x/b.jpg", "caption": "live",
                                                      "creation_id": live}, now=clock.now())
    assert tick(engine, db_url, sb, clock).sent == 2
    stats = sb.stats()
    assert stats["containers"][old]["publishes"] == 0  # the expired one never went out
    assert stats["containers"][live]["publish_requests"] == 0  # live already: not published again
    with engine.connect() as conn:
        new_cid = row(conn, r_old).payload["creation_id"]
        assert new_cid != old and stats["containers"][new_cid]["publishes"] == 1
        assert row(conn, r_live).status == "sent"


def test_a_publish_whose_answer_was_lost_is_settled_by_reading_the_container(engine, db_url, sb, clock):
    caption = "late #fail:slow=2.5@media_publish*1"
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        rid = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": caption},
                      now=clock.now())
    assert tick(engine, db_url, sb, clock).failed == 1  # read timeout 1 s: Instagram published anyway
    with engine.connect() as conn:
        assert state(conn, rid).uncertain is True
    make_due(engine, rid, clock)
    assert tick(engine, db_url, sb, clock).sent == 1
    stats = sb.stats()
    assert stats["effects"][caption] == {"media": 1, "media_publish": 1}
    (cid,) = stats["containers"]
    assert stats["containers"][cid]["publish_requests"] == 1  # read PUBLISHED, never asked again


def test_not_ready_from_media_publish_waits_and_new_container_answers_make_a_new_one(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        r1 = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg",
                                                  "caption": "one #fail:sub=2207027@media_publish*1"}, now=clock.now())
        r2 = add_row(conn, acc, "publish_post", {"image_url": "https://x/b.jpg",
                                                  "caption": "two #fail:sub=2207053@media_publish*1"}, now=clock.now())
    result = tick(engine, db_url, sb, clock)
    assert (result.waiting, result.failed) == (1, 1)
    with engine.connect() as conn:
        a, b = row(conn, r1), row(conn, r2)
        assert (a.status, a.retry_count) == ("pending", 0) and a.error.startswith("waiting:")
        assert (b.status, b.error_category, b.retry_count) == ("failed", "transient", 1)
        assert "creation_id" not in b.payload
    clock.advance(60)
    make_due(engine, r2, clock)
    assert tick(engine, db_url, sb, clock).sent == 2
    effects = sb.stats()["effects"]
    assert effects["one #fail:sub=2207027@media_publish*1"] == {"media": 1, "media_publish": 1}
    assert effects["two #fail:sub=2207053@media_publish*1"] == {"media": 2, "media_publish": 1}


# -- media types ----------------------------------------------------------------------------------

def test_a_carousel_publishes_once_after_its_items_are_ready(engine, db_url, sb, clock):
    payload = {"media_type": "CAROUSEL_ALBUM", "caption": "trio",
               "children": [{"image_url": "https://x/1.jpg"}, {"image_url": "https://x/2.jpg"},
                            {"video_url": "https://x/3.mp4?proc=45"}]}
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        rid = add_row(conn, acc, "publish_post", payload, now=clock.now())
    assert tick(engine, db_url, sb, clock).waiting == 1
    with engine.connect() as conn:
        assert "1 of 3 carousel items" in row(conn, rid).error
        assert len(state(conn, rid).children) == 3
    clock.advance(60)
    assert tick(engine, db_url, sb, clock).sent == 1
    stats = sb.stats()
    (post,) = stats["published"]
    parent = stats["containers"][post["container_id"]]
    assert parent["media_type"] == "CAROUSEL" and len(parent["children"]) == 3
    items = [c for c in stats["containers"].values() if c["is_carousel_item"]]
    assert len(items) == 3 and all(c["publishes"] == 0 for c in items)  # items made once, never posted alone


def test_stories_and_a_video_sent_as_reels(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        add_row(conn, acc, "publish_post", {"media_type": "STORIES", "image_url": "https://x/s.jpg"}, now=clock.now())
        add_row(conn, acc, "publish_post", {"media_type": "STORIES", "video_url": "https://x/s.mp4",
                                             "caption": "vstory"}, now=clock.now())
        add_row(conn, acc, "publish_post", {"media_type": "VIDEO", "video_url": "https://x/v.mp4",
                                             "caption": "vid"}, now=clock.now())
    assert tick(engine, db_url, sb, clock).sent == 1  # the image story; the videos are processing
    clock.advance(60)
    assert tick(engine, db_url, sb, clock).sent == 2
    kinds = sorted(p["media_type"] for p in sb.stats()["published"])
    assert kinds == ["REELS", "STORIES", "STORIES"]


def test_a_post_the_worker_cannot_build_fails_before_any_call(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        rid = add_row(conn, acc, "publish_post", {"media_type": "CAROUSEL_ALBUM", "image_url": "https://x/1.jpg",
                                                   "caption": "not a carousel"}, now=clock.now())
        dm = add_row(conn, acc, "send_dm", {"recipient_id": "9" * 16, "message_text": "é" * 600}, now=clock.now())
    before = sb.stats()["requests"]
    assert tick(engine, db_url, sb, clock).dlq == 2
    assert sb.stats()["requests"] == before  # no container, no message, never a different post
    with engine.connect() as conn:
        assert "children" in row(conn, rid).error and row(conn, rid).error_category == "permanent"
        assert "1,200 bytes" in row(conn, dm).error


# -- quota and the error table -------------------------------------------------------------------

def test_a_used_up_quota_waits_without_a_container_and_raises_one_alert(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, ig = account(conn, sb)
        other, _ = account(conn, sb, username="other")
        full = [add_row(conn, acc, "publish_post", {"image_url": f"https://x/{i}.jpg", "caption": f"q{i}"},
                        now=clock.now()) for i in range(2)]
        ok = add_row(conn, other, "publish_post", {"image_url": "https://x/o.jpg", "caption": "fine"}, now=clock.now())
    sb.set_quota_usage(ig, 100)
    result = tick(engine, db_url, sb, clock)
    assert result.sent == 1 and result.waiting + result.released == 2
    with engine.connect() as conn:
        # the first waits for the window, the second is put back untouched (the account stopped for this tick)
        (r,) = [r for r in (row(conn, f) for f in full) if r.error]
        assert (r.status, r.retry_count) == ("pending", 0) and "publishing limit" in r.error
        assert r.next_retry_at > clock.now() + timedelta(minutes=10)
        assert state(conn, r.id).wait_kind == "quota"
        (alert,) = alerts(conn, "rate_limit")
        assert alert.business_account_id == acc and "publishing limit" in alert.message
        assert usage_rows(conn)[str(acc)]["quota_usage"] == 100
        assert row(conn, ok).status == "sent"
    assert all(s["key"] == "fine" for s in sb.stats()["containers"].values())  # no container for the full account


def test_the_daily_limit_answer_waits_for_the_window_never_the_dlq(engine, db_url, sb, clock):
    from lib.core.schema import post_queue as pq
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        rid = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg",
                                                   "caption": "cap #fail:sub=2207042@media_publish"}, now=clock.now())
        conn.execute(sa.update(pq).where(pq.c.id == rid).values(retry_count=5))
    assert tick(engine, db_url, sb, clock).failed == 1
    with engine.connect() as conn:
        r = row(conn, rid)
        assert (r.status, r.error_category, r.retry_count) == ("failed", "rate_limit", 5)
        assert r.next_retry_at - clock.now() >= timedelta(minutes=15)  # never the 2-minute step
        assert len(alerts(conn, "rate_limit")) == 1


def test_a_spam_restriction_holds_the_account_without_using_retries(engine, db_url, sb, clock):
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        spam = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": "buy #fail:spam@media_publish"},
                       now=clock.now())
        later = add_row(conn, acc, "publish_post", {"image_url": "https://x/b.jpg", "caption": "next"},
                        now=clock.now() + timedelta(seconds=1))
    result = tick(engine, db_url, sb, clock)
    assert (result.dlq, result.released) == (0, 1)  # the account's next post is not pushed into the restriction
    with engine.connect() as conn:
        r = row(conn, spam)
        assert (r.status, r.retry_count) == ("pending", 0) and "2207051" in r.error and r.error.startswith("held: ")
        (alert,) = alerts(conn, "account_restricted")
        assert "Account Status" in alert.message and not alerts(conn, "content_violation")
        assert row(conn, later).status == "pending"
    requests_before = sb.stats()["requests"]
    clock.advance(3600)  # an hour later the hold (24 h) still stands: no call is made for the account
    assert tick(engine, db_url, sb, clock).claimed == 0
    assert sb.stats()["requests"] == requests_before


# -- usage headers ------------------------------------------------------------------------------

def test_an_accounts_usage_entry_stops_that_account_only(engine, db_url, sb, clock):
    with engine.begin() as conn:
        hot, hot_ig = account(conn, sb, username="hot")
        cool, cool_ig = account(conn, sb, username="cool")
        h = [add_row(conn, hot, "reply_comment", {"comment_id": f"c{i}", "reply_text": f"h{i}"}, now=clock.now())
             for i in range(2)]
        c = add_row(conn, cool, "reply_comment", {"comment_id": "c9", "reply_text": "c"},
                    now=clock.now() + timedelta(seconds=1))
    sb.set_usage(hot_ig, call_count=100, estimated_time_to_regain_access=30)
    sb.set_usage(cool_ig, call_count=12, total_time=3)
    result = tick(engine, db_url, sb, clock)
    assert (result.sent, result.released) == (2, 1)  # hot's first reply went, then hot is left alone
    with engine.connect() as conn:
        usage = usage_rows(conn)
        assert usage[str(hot)]["call_count"] == 100 and usage[str(hot)]["regain_at"] >= clock.now() + timedelta(minutes=29)
        assert usage[str(cool)]["call_count"] == 12 and usage[str(cool)]["regain_at"] is None
        assert row(conn, c).status == "sent"
        assert sorted(row(conn, x).status for x in h) == ["pending", "sent"]
        assert queue_health(conn, now=clock.now())["held_back"] == 1
    assert tick(engine, db_url, sb, clock).claimed == 0  # not before access returns
    clock.advance(31 * 60)
    assert tick(engine, db_url, sb, clock).sent == 1


def test_the_app_usage_limit_stops_every_account(engine, db_url, sb, clock):
    with engine.begin() as conn:
        a, _ = account(conn, sb, username="a")
        b, _ = account(conn, sb, username="b")
        add_row(conn, a, "reply_comment", {"comment_id": "1", "reply_text": "x"}, now=clock.now())
        add_row(conn, b, "reply_comment", {"comment_id": "2", "reply_text": "y"}, now=clock.now() + timedelta(seconds=1))
    sb.set_app_usage(call_count=100)
    result = tick(engine, db_url, sb, clock)
    assert (result.sent, result.released) == (1, 1)
    with engine.connect() as conn:
        assert usage_rows(conn)["app"]["regain_at"] > clock.now()
    assert tick(engine, db_url, sb, clock).claimed == 0


# -- messages and replies ---------------------------------------------------------------------------

@pytest.mark.parametrize("api", ["facebook_login", "instagram_login"])
def test_reply_dm_messages_the_customer_through_the_right_node(engine, db_url, clock, api):
    sb = GraphSandbox(clock=clock.epoch, api=api).start()
    try:
        with engine.begin() as conn:
            acc, ig = account(conn, sb)
            rows = [add_row(conn, acc, "reply_dm", {"conversation_id": f"conv{i}", "message_text": f"hi {i}"},
                            now=clock.now()) for i in range(6)]
            for i in range(6):  # half the conversations list the customer first, half our account
                sb.add_conversation(f"conv{i}", ig, f"9{i:015d}")
        assert tick(engine, db_url, sb, clock, instagram_api=api).sent == 6
        sent = sb.stats()["sent_messages"]
        assert sorted(m["recipient_id"] for m in sent) == [f"9{i:015d}" for i in range(6)]
        with engine.connect() as conn:
            assert all(row(conn, r).status == "sent" for r in rows)
    finally:
        sb.stop()


def test_a_reply_whose_answer_was_lost_is_found_instead_of_posted_twice(engine, db_url, sb, clock):
    text = "thanks! #fail:slow=2.5@replies*1"
    with engine.begin() as conn:
        acc, _ = account(conn, sb)
        rid = add_row(conn, acc, "reply_comment", {"comment_id": "c1", "reply_text": text}, now=clock.now())
    assert tick(engine, db_url, sb, clock).failed == 1  # timed out; Instagram posted it anyway
    make_due(engine, rid, clock)
    assert tick(engine, db_url, sb, clock).sent == 1
    assert sb.stats()["effects"][text] == {"replies": 1}
    with engine.connect() as conn:
        r = row(conn, rid)
        assert r.instagram_id == sb.stats()["replies"]["c1"][0]["id"]


def test_the_token_never_travels_in_a_url(engine, db_url, sb, clock, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    with engine.begin() as conn:
        acc, _ = account(conn, sb, token="tok-SECRET-123")
        add_row(conn, acc, "reply_dm", {"conversation_id": "conv", "message_text": "hi"}, now=clock.now())
        add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": "p"}, now=clock.now())
    assert tick(engine, db_url, sb, clock).sent == 2
    assert "tok-SECRET-123" not in caplog.text  # urllib3 logs URLs at DEBUG: the token is in a header
