"""The worker against the documented sandbox over real HTTP, on SQLite, PostgreSQL and the user's own
DDL: account-level holds, errors read by code whatever the HTTP status, container error subcodes,
public replies and DMs never sent twice, unreadable rows, every attempt recorded, the Graph version."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lib.core.identity import Actor
from lib.core.schema import account_holds, audit_log, system_alerts
from lib.core.schema import post_queue as pq
from lib.core.schema import post_queue_attempts as pqa
from lib.instagram.account_holds import active_holds, resume
from lib.queue.reads import row_detail
from tests.support.worker import add_account, add_row, client_for, row, sandbox, worker_settings  # noqa: F401
from worker.tick import run_tick

OPS = Actor("ops@example.com", "operator")


def _tick(engine, db_url, sandbox, **overrides):
    settings = worker_settings(db_url, sandbox, **overrides)
    return run_tick(engine, settings, client_for(settings))


def _make_due(engine, *row_ids):
    with engine.begin() as conn:
        conn.execute(sa.update(pq).where(pq.c.id.in_(row_ids)).values(
            status="failed", next_retry_at=datetime.now(UTC) - timedelta(seconds=1)))


def _alerts(conn, alert_type):
    return conn.execute(sa.select(system_alerts).where(system_alerts.c.alert_type == alert_type)).all()


def _attempts(conn, row_id):
    return conn.execute(sa.select(pqa).where(pqa.c.queue_id == row_id).order_by(pqa.c.attempted_at)).all()


# -- account-level holds ------------------------------------------------------------------------

def test_a_temporary_block_holds_the_account_for_an_hour_without_calls_or_retries(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        other = add_account(conn, username="other", token="tok-other", sandbox=sandbox)
        blocked = add_row(conn, acc, "reply_comment", {"comment_id": "c1", "reply_text": "hi #fail:block"})
        rest = [add_row(conn, acc, "send_dm", {"recipient_id": str(i), "message_text": f"dm {i}"}) for i in range(3)]
        fine = add_row(conn, other, "send_dm", {"recipient_id": "9", "message_text": "other account"})
    result = _tick(engine, db_url, sandbox)
    assert (result.sent, result.dlq, result.failed, result.released) == (1, 0, 0, 3)
    assert sandbox.stats()["requests"] == 2  # the blocked call and the other account's DM: nothing more
    with engine.connect() as conn:
        r = row(conn, blocked)
        assert (r.status, r.retry_count) == ("pending", 0) and r.error.startswith("held: ")
        assert all(row(conn, i).status == "pending" and row(conn, i).retry_count == 0 for i in rest)
        assert row(conn, fine).status == "sent"
        (hold,) = conn.execute(sa.select(account_holds)).all()
        assert hold.kind == "temporary_block" and hold.error_code == 368
        assert timedelta(minutes=59) < hold.held_until - hold.held_at <= timedelta(hours=1)
        (alert,) = _alerts(conn, "account_restricted")
        assert "until" in alert.message and "wait" in alert.message.lower()
        (h,) = active_holds(conn, now=datetime.now(UTC))
        assert h.headline.startswith("Instagram temporarily blocks this account's actions (acme) until")
        assert h.headline.endswith(": 4 rows wait")
        assert [a.outcome for a in _attempts(conn, blocked)] == ["held"]
    assert _tick(engine, db_url, sandbox).claimed == 0  # still held: no claim, no call
    assert sandbox.stats()["requests"] == 2
    with engine.begin() as conn:  # the hour is over
        conn.execute(sa.update(account_holds).values(held_until=datetime.now(UTC) - timedelta(seconds=1)))
        conn.execute(sa.update(pq).where(pq.c.id == blocked).values(
            payload={"comment_id": "c1", "reply_text": "hi again"}, next_retry_at=None))
    result = _tick(engine, db_url, sandbox)
    assert result.sent == 4
    with engine.connect() as conn:
        assert conn.execute(sa.select(account_holds)).all() == []
        assert all(a.resolved for a in _alerts(conn, "account_restricted"))  # resolved by itself


def test_a_restricted_account_waits_for_an_operator_and_resumes_when_told(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        first = add_row(conn, acc, "publish_post", {"image_url": "https://x/a.jpg", "caption": "a #fail:restricted*1"})
        second = add_row(conn, acc, "publish_post", {"image_url": "https://x/b.jpg", "caption": "b"})
    assert _tick(engine, db_url, sandbox).dlq == 0
    with engine.connect() as conn:
        (hold,) = conn.execute(sa.select(account_holds)).all()
        assert (hold.kind, hold.held_until) == ("restricted", None)
        (alert,) = _alerts(conn, "account_restricted")
        assert "sign in to the Instagram app" in alert.message and "until an operator resumes" in alert.message
        assert row(conn, first).status == row(conn, second).status == "pending"
    assert _tick(engine, db_url, sandbox).claimed == 0
    with engine.begin() as conn:
        assert resume(conn, acc, actor=OPS, now=datetime.now(UTC))
        resumed = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "account_hold_resumed")).one()
        assert (resumed.user_id, resumed.resource_id) == ("ops@example.com", str(acc))
    assert _tick(engine, db_url, sandbox).sent == 2
    with engine.connect() as conn:
        assert row(conn, first).retry_count == 0


def test_a_viewer_cannot_resume_a_held_account(engine, db_url, sandbox):
    import pytest

    from lib.core.identity import PermissionDenied

    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "x #fail:msgrestricted"})
    _tick(engine, db_url, sandbox)
    with engine.begin() as conn, pytest.raises(PermissionDenied):
        resume(conn, acc, actor=Actor("v@example.com", "viewer"), now=datetime.now(UTC))
    with engine.connect() as conn:
        assert conn.execute(sa.select(account_holds.c.kind)).scalar() == "messaging_restricted"


# -- errors read by code, whatever the HTTP status -----------------------------------------------

def test_messaging_window_and_permission_answers_dead_letter_at_once_under_403(engine, db_url, sandbox):
    sandbox.state.api = "instagram_login"  # the window error arrives as HTTP 403 10/2534022 here
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        late = add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "too late #fail:window"})
        denied = add_row(conn, acc, "send_dm", {"recipient_id": "2", "message_text": "no perm #fail:permission"})
    result = _tick(engine, db_url, sandbox, instagram_api="instagram_login")
    assert (result.dlq, result.failed) == (2, 0)
    assert sandbox.stats()["requests"] == 2  # one call each: no doomed retries
    with engine.connect() as conn:
        assert row(conn, late).error_category == row(conn, denied).error_category == "permanent"
        assert "HTTP 403 code 10/2534022" in row(conn, late).error
        assert "HTTP 403 code 200" in row(conn, denied).error


# -- containers in ERROR -------------------------------------------------------------------------

def test_a_reel_whose_upload_failed_transiently_gets_a_new_container_and_is_published(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        reel = add_row(conn, acc, "publish_post", {"media_type": "REELS", "video_url": "https://x/r.mp4?proc=0",
                                                  "caption": "reel #fail:container_error=2207053*1"})
        bad = add_row(conn, acc, "publish_post", {"image_url": "https://x/t.jpg",
                                                 "caption": "thumb #fail:container_error=2207057"})
    result = _tick(engine, db_url, sandbox)
    assert (result.failed, result.dlq) == (1, 1)
    with engine.connect() as conn:
        r = row(conn, reel)
        assert (r.status, r.error_category, r.retry_count) == ("failed", "transient", 1)
        assert "2207053" in r.error and "new container" in r.error and "creation_id" not in r.payload
        assert not _alerts(conn, "content_violation") or all(
            a.details.get("queue_id") != str(reel) for a in _alerts(conn, "content_violation"))
        assert row(conn, bad).status == "dlq" and "2207057" in row(conn, bad).error
    _make_due(engine, reel)
    assert _tick(engine, db_url, sandbox).sent == 1
    published = sandbox.stats()["published"]
    assert len(published) == 1 and published[0]["media_type"] == "REELS"


def test_a_container_found_published_is_audited_with_its_container_id(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        ig = conn.execute(sa.text("SELECT instagram_business_id FROM instagram_business_accounts")).scalar()
    cid = sandbox.add_container(ig, caption="lost answer")
    sandbox.set_container_status(cid, "PUBLISHED")
    with engine.begin() as conn:
        rid = add_row(conn, acc, "publish_post", {"image_url": "https://x/p.jpg", "caption": "lost answer",
                                                 "creation_id": cid})
    assert _tick(engine, db_url, sandbox).sent == 1
    with engine.connect() as conn:
        audit = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "post_published")).one()
        assert audit.resource_id == cid  # the media id cannot be read back: the container id stands in
        assert row(conn, rid).status == "sent"


# -- public replies and DMs: never twice ----------------------------------------------------------

def test_a_reply_stays_uncertain_while_the_look_first_read_fails_and_is_never_posted_twice(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        rid = add_row(conn, acc, "reply_comment", {"comment_id": "c42", "reply_text": "Thanks! #fail:reset*1"})
    assert _tick(engine, db_url, sandbox).failed == 1  # posted, but the connection dropped before the answer
    assert len(sandbox.stats()["replies"].get("c42", [])) == 1
    sandbox.fail_next("comment_replies", "5xx", 2)
    for _ in range(2):  # the look-first read fails twice: the row waits, it never posts blind
        _make_due(engine, rid)
        assert _tick(engine, db_url, sandbox).failed == 1
        with engine.connect() as conn:
            st = conn.execute(sa.text("SELECT uncertain FROM post_queue_state WHERE queue_id = :q"),
                              {"q": rid if engine.dialect.name == "postgresql" else rid.hex}).scalar()
            assert bool(st) is True
    _make_due(engine, rid)
    assert _tick(engine, db_url, sandbox).sent == 1  # the read answers: the reply is found, not posted again
    assert len(sandbox.stats()["replies"]["c42"]) == 1
    with engine.connect() as conn:
        r = row(conn, rid)
        assert r.instagram_id == sandbox.stats()["replies"]["c42"][0]["id"]
        outcomes = [a.outcome for a in _attempts(conn, rid)]
        assert outcomes == ["failed", "failed", "failed", "sent"]
        detail = row_detail(conn, rid)
        assert [a["outcome"] for a in detail["attempts"]] == list(reversed(outcomes))  # newest first


def test_a_reply_to_a_reply_is_looked_up_under_the_top_level_comment_through_every_page(engine, db_url, sandbox):
    import requests

    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
    # a top-level comment with 60 replies from customers, one of which our reply answers
    for i in range(60):
        requests.post(f"{sandbox.url}/top1/replies", data={"message": f"customer {i}", "access_token": f"cust{i}"})
    target = sandbox.stats()["replies"]["top1"][59]["id"]
    with engine.begin() as conn:
        rid = add_row(conn, acc, "reply_comment", {"comment_id": target, "reply_text": "We hear you #fail:slow=2"})
    assert _tick(engine, db_url, sandbox).failed == 1  # timed out after Instagram acted
    replies = sandbox.stats()["replies"]["top1"]
    assert len(replies) == 61 and target not in sandbox.stats()["replies"]  # attached to the top-level comment
    _make_due(engine, rid)
    assert _tick(engine, db_url, sandbox).sent == 1
    assert len(sandbox.stats()["replies"]["top1"]) == 61  # found on the third page, not posted again


def test_a_dm_whose_answer_was_lost_is_read_back_from_the_conversation(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        rid = add_row(conn, acc, "send_dm", {"recipient_id": "5551", "message_text": "Your order shipped #fail:slow=2"})
    assert _tick(engine, db_url, sandbox).failed == 1
    assert len(sandbox.stats()["sent_messages"]) == 1
    _make_due(engine, rid)
    assert _tick(engine, db_url, sandbox).sent == 1
    assert len(sandbox.stats()["sent_messages"]) == 1  # found in the conversation, not sent again
    with engine.connect() as conn:
        assert row(conn, rid).instagram_id == sandbox.stats()["sent_messages"][0]["message_id"]


# -- rows that cannot be read --------------------------------------------------------------------

def test_a_payload_that_is_not_an_object_is_dead_lettered_alone(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        good = [add_row(conn, acc, "send_dm", {"recipient_id": str(i), "message_text": f"ok {i}"}) for i in range(3)]
        bad_string = add_row(conn, acc, "send_dm", {"recipient_id": "7", "message_text": "to be broken"})
        bad_array = add_row(conn, acc, "send_dm", {"recipient_id": "8", "message_text": "to be broken too"})
        conn.execute(sa.update(pq).where(pq.c.id == bad_string).values(payload="just a string"))
        conn.execute(sa.update(pq).where(pq.c.id == bad_array).values(payload=[1, 2]))
        if engine.dialect.name == "sqlite":  # text someone else's tool wrote: not JSON, a bad timestamp
            conn.execute(sa.text("UPDATE post_queue SET payload = '{not json' WHERE id = :i"), {"i": good[0].hex})
            conn.execute(sa.text("UPDATE post_queue SET created_at = 'yesterday-ish' WHERE id = :i"),
                         {"i": good[1].hex})
    result = _tick(engine, db_url, sandbox)
    with engine.connect() as conn:
        assert row(conn, bad_string).status == row(conn, bad_array).status == "dlq"
        assert "payload is a JSON string, not an object" in row(conn, bad_string).error
        assert "payload is a JSON list, not an object" in row(conn, bad_array).error
        if engine.dialect.name == "sqlite":
            assert (result.sent, result.dlq, result.claimed) == (1, 4, 5)
            errors = {r.id: r.error for r in conn.execute(sa.select(pq.c.id, pq.c.error).where(pq.c.status == "dlq"))}
            assert "not valid JSON" in errors[good[0]] and "created_at 'yesterday-ish'" in errors[good[1]]
        else:
            assert (result.sent, result.dlq, result.claimed) == (3, 2, 5)
        dlq_audits = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "post_failed_permanent")).all()
        assert len(dlq_audits) == (4 if engine.dialect.name == "sqlite" else 2)


# -- repost_ugc --------------------------------------------------------------------------------

def test_repost_ugc_is_a_new_container_from_the_ugc_media_with_its_options_and_permission(engine, db_url, sandbox):
    with engine.begin() as conn:
        acc = add_account(conn, sandbox=sandbox)
        add_row(conn, acc, "repost_ugc", {"permission_id": "perm-77", "media_url": "https://x/ugc.jpg",
                                              "caption": "via @fan", "collaborators": ["fan"], "location_id": "123"})
        only_id = add_row(conn, acc, "repost_ugc", {"permission_id": "perm-78", "creation_id": "17890000000000000"})
        wrong = add_row(conn, acc, "repost_ugc", {"permission_id": "p", "media_url": "https://x/u.jpg",
                                                 "share_to_feed": True})
    result = _tick(engine, db_url, sandbox)
    assert (result.sent, result.dlq) == (1, 2)
    with engine.connect() as conn:
        audit = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "ugc_reposted")).one()
        assert audit.details["permission_id"] == "perm-77"
        assert "no media URL to make a new one" in row(conn, only_id).error or "is gone" in row(conn, only_id).error
        assert "share_to_feed is not taken by a IMAGE post" in row(conn, wrong).error
    (container,) = [c for c in sandbox.stats()["containers"].values() if c["published"]]
    assert container["caption"] == "via @fan" and container["media_type"] == "IMAGE"


# -- the Graph API version -----------------------------------------------------------------------

def test_a_version_near_its_end_raises_one_alert_that_resolves_after_the_change(engine, db_url, sandbox):
    old = sandbox.url.rsplit("/", 1)[0] + "/v21.0"
    for _ in range(2):
        _tick(engine, db_url, sandbox, instagram_graph_url=old)
    with engine.connect() as conn:
        (alert,) = _alerts(conn, "graph_api_version")
        assert "v21.0" in alert.message and "January 21, 2027" in alert.message and not alert.resolved
    _tick(engine, db_url, sandbox)
    with engine.connect() as conn:
        assert all(a.resolved for a in _alerts(conn, "graph_api_version"))


def test_the_sandbox_default_mix_throttles_one_account_not_the_app(sandbox):
    import requests

    sandbox.state.error_rate, sandbox.state.mix = 1.0, {"buc": 1.0}
    resp = requests.post(f"{sandbox.url}/1784000000001/messages", data={
        "recipient": json.dumps({"id": "1"}), "message": json.dumps({"text": "hi"}), "access_token": "t"})
    assert resp.json()["error"]["code"] == 80002
    app = json.loads(resp.headers["X-App-Usage"])
    assert app["call_count"] < 100  # the app's usage is what its calls make it
    buc = json.loads(resp.headers["X-Business-Use-Case-Usage"])
    assert list(buc.values())[0][0]["call_count"] == 100


def test_an_alert_with_an_unreadable_timestamp_never_stops_a_notification_pass(sqlite_url):
    import uuid

    from lib.core.db import init_db, make_engine
    from lib.core.settings import Settings
    from lib.notify.outbox import notify_tick

    eng = make_engine(sqlite_url)
    init_db(eng)
    now = datetime.now(UTC)
    with eng.begin() as conn:
        for i in range(3):
            conn.execute(sa.insert(system_alerts).values(
                id=uuid.uuid4(), alert_type="sync_failure", message=f"m{i}", resolved=False,
                created_at=now - timedelta(minutes=i), updated_at=now, details={}))
        conn.execute(sa.text("UPDATE system_alerts SET created_at = 'not a time', updated_at = '2026-13-99' "
                             "WHERE message = 'm1'"))
    report = notify_tick(eng, Settings(database_url=sqlite_url, alert_notify_urls="json://127.0.0.1:9/x"), now=now)
    assert report.detect.new_rows == 3 and report.detect.opened == 1  # the pass ran over every row
    eng.dispose()


def test_the_demo_mix_rejects_media_by_the_error_table_and_never_blocks_an_account(sandbox):
    import requests

    sandbox.state.error_rate = 1.0  # every unmarked POST fails, drawn from the demo's mix
    codes = set()
    for i in range(60):
        resp = requests.post(f"{sandbox.url}/1784000000002/media",
                             data={"image_url": f"https://x/{i}.jpg", "access_token": "t"}, timeout=10)
        if resp.status_code != 504:
            codes.add(resp.json()["error"].get("code"))
    assert 368 not in codes  # a 368 holds the whole account for an hour: never drawn at random
    assert codes & {36000, 36003, 352}  # content rejections come from the error table
