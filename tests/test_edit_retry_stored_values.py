"""Edit and retry works on the stored values, on SQLite, PostgreSQL and the user's own schema: the
form starts from the raw texts (never the page's clipped or redacted copy), a value that still
holds a display mark is refused with nothing written, and a change to what goes into a media
container drops the stored container and its state, so the worker publishes what was saved."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.core.identity import OPERATOR, Actor
from lib.core.schema import audit_log, post_queue_state
from lib.core.schema import post_queue as pq
from lib.core.text import clip_json
from lib.queue.reads import row_detail, stored_values
from lib.queue.rules import QueueControlError
from lib.queue.store import edit_and_retry
from sandbox.graph_api import GraphSandbox
from tests.support.worker import add_account, add_row, client_for, row, worker_settings
from worker.tick import run_tick

OP = Actor("ops@example.com", OPERATOR)


class Clock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.t

    def epoch(self) -> float:
        return self.t.timestamp()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sb(clock):
    s = GraphSandbox(clock=clock.epoch, timeout_sleep_s=2.0).start()
    yield s
    s.stop()


def _dead(engine, rid, **extra):
    with engine.begin() as conn:
        conn.execute(sa.update(pq).where(pq.c.id == rid).values(status="dlq", retry_count=5, error="HTTP 400",
                                                                  error_category="permanent", **extra))


def _state(conn, rid):
    return conn.execute(sa.select(post_queue_state).where(post_queue_state.c.queue_id == rid)).first()


def _edits(conn):
    return conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "queue_item_edited")).all()


def test_a_long_dm_is_edited_whole_and_the_display_copy_is_refused(engine):
    text = "Hi! " + ("Thanks for your order, it ships tomorrow. " * 18)[:750]  # 754 characters
    assert len(text) == 754
    with engine.begin() as conn:
        acc = add_account(conn)
        dm = add_row(conn, acc, "send_dm", {"recipient_id": "17841", "message_text": text})
    _dead(engine, dm)
    with engine.connect() as conn:
        shown = clip_json(row_detail(conn, dm)["payload"])["message_text"]  # what the page shows
        raw = stored_values(conn, dm)
    assert shown.endswith("… [254 more characters not shown]")
    assert raw == {"message_text": text}  # the form starts from this, whole
    with engine.begin() as conn:
        with pytest.raises(QueueControlError, match="254 more characters not shown"):
            edit_and_retry(conn, dm, {"message_text": shown.replace("Hi!", "Hello!", 1)}, actor=OP,
                           now=datetime.now(UTC))
    with engine.connect() as conn:
        assert row(conn, dm).payload["message_text"] == text and _edits(conn) == []  # nothing written
    with engine.begin() as conn:
        edit_and_retry(conn, dm, {"message_text": raw["message_text"].replace("Hi!", "Hello!", 1)}, actor=OP,
                       now=datetime.now(UTC))
    with engine.connect() as conn:
        r = row(conn, dm)
        assert r.payload["message_text"] == "Hello!" + text[3:] and len(r.payload["message_text"]) == 757
        assert r.status == "pending"
        (e,) = _edits(conn)
        assert e.details["changes"]["message_text"]["before"] == text
        assert e.details["changes"]["message_text"]["after"] == "Hello!" + text[3:]


def test_a_caption_that_looks_like_a_token_is_edited_raw_and_a_placeholder_is_refused(engine):
    with engine.begin() as conn:
        acc = add_account(conn)
        post = add_row(conn, acc, "publish_post", {"image_url": "https://cdn.example/a.jpg",
                                                   "caption": "Bearer bonds are back"})
    _dead(engine, post)
    with engine.connect() as conn:
        assert row_detail(conn, post)["payload"]["caption"] == "[redacted] are back"  # the page's copy
        raw = stored_values(conn, post)
    assert raw["caption"] == "Bearer bonds are back"
    with engine.begin() as conn, pytest.raises(QueueControlError, match=r"\[redacted\]"):
        edit_and_retry(conn, post, {"caption": "[redacted] are back!"}, actor=OP, now=datetime.now(UTC))
    with engine.connect() as conn:
        assert row(conn, post).payload["caption"] == "Bearer bonds are back" and _edits(conn) == []
    with engine.begin() as conn:
        edit_and_retry(conn, post, {"caption": "Bearer bonds are back!"}, actor=OP, now=datetime.now(UTC))
    with engine.connect() as conn:
        assert row(conn, post).payload["caption"] == "Bearer bonds are back!"


def test_a_text_that_really_holds_a_mark_stays_editable(engine):
    """A mark the stored text itself holds is not a copy from the page: editing around it is fine."""
    with engine.begin() as conn:
        acc = add_account(conn)
        dm = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "Your card: [redacted]"})
    _dead(engine, dm)
    with engine.begin() as conn:
        edit_and_retry(conn, dm, {"message_text": "Your card ends in [redacted]"}, actor=OP,
                       now=datetime.now(UTC))
    with engine.connect() as conn:
        assert row(conn, dm).payload["message_text"] == "Your card ends in [redacted]"


@pytest.mark.parametrize("status_code", ["FINISHED", "ERROR"])
def test_a_caption_only_edit_publishes_the_new_caption(engine, db_url, sb, clock, status_code):
    """A row whose container was made (creation_id, our post_queue_state row) has its caption
    changed: the worker makes a new container and publishes the new caption, once. A container
    in ERROR (which failed the row for good) no longer fails the edited row."""
    with engine.begin() as conn:
        ig = "1784000000000001"
        acc = add_account(conn, username="shop", token="tok-shop", ig_id=ig)
        sb.add_account(ig, "tok-shop", page_id="10" + ig[4:], username="shop")
        old = sb.add_container(ig, caption="Old caption", created_at=clock.epoch() - 60, status_code=status_code)
        post = add_row(conn, acc, "publish_post", {"image_url": "https://cdn.example/a.jpg",
                                                   "caption": "Old caption", "creation_id": old}, now=clock.now())
        conn.execute(sa.insert(post_queue_state).values(queue_id=post, creation_id=old,
                                                        container_created_at=clock.now() - timedelta(minutes=1),
                                                        children=[], uncertain=True, updated_at=clock.now()))
    _dead(engine, post)
    with engine.begin() as conn:
        res = edit_and_retry(conn, post, {"caption": "New caption"}, actor=OP, now=clock.now())
    assert "new media container" in res.message
    with engine.connect() as conn:
        r = row(conn, post)
        assert "creation_id" not in r.payload and r.payload["caption"] == "New caption"
        assert _state(conn, post) is None  # the worker would otherwise read the old container first
        (e,) = _edits(conn)
        assert e.details["new_container"] is True and e.details["dropped_container"] == old
        assert e.details["changes"]["caption"] == {"before": "Old caption", "after": "New caption"}
    settings = worker_settings(db_url, sb)
    assert run_tick(engine, settings, client_for(settings), now_fn=clock.now).sent == 1
    stats = sb.stats()
    assert [p["caption"] for p in stats["published"]] == ["New caption"]
    assert stats["containers"][old]["publishes"] == 0
    with engine.connect() as conn:
        assert row(conn, post).status == "sent"


def test_a_dm_edit_touches_no_container_state(engine):
    with engine.begin() as conn:
        acc = add_account(conn)
        dm = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "hi"})
    _dead(engine, dm)
    with engine.begin() as conn:
        res = edit_and_retry(conn, dm, {"message_text": "hello"}, actor=OP, now=datetime.now(UTC))
    assert "container" not in res.message
    with engine.connect() as conn:
        (e,) = _edits(conn)
        assert e.details["new_container"] is False
