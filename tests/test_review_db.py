"""Review before sending on SQLite, PostgreSQL and the user's own schema: the claim holds exactly what the
policies say (the SQL rule against the pure one), decisions (approve, edit, reject, bulk, viewers refused),
DM expiry, the waiting alert, policies audited, the learning numbers and the export, and the context read
from the sandbox Graph API over HTTP."""
from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from lib.core.audit import audit_row
from lib.core.identity import OPERATOR, Actor, PermissionDenied
from lib.core.schema import audit_log, post_queue_state, review_decisions, system_alerts
from lib.core.schema import post_queue as pq
from lib.queue import review, review_rules
from lib.queue.review import decision_stats, export_decisions, fetch_context, held_rows, worker_pass
from lib.queue.review_rules import EXPIRE_ERROR, ReviewError, held_clause, should_hold
from lib.queue.store import approve, claim, decide_many, enqueue, expire_due, reject, remove_policy, retry, set_policy
from tests.support.worker import add_account, client_for, sandbox, worker_settings  # noqa: F401

OP = Actor("ops@example.com", OPERATOR)
VIEWER = Actor("viewer@example.com")
NOW = datetime.now(UTC).replace(microsecond=0)


def _add(conn, acc, action, payload, *, age_min=5, **values):
    rid = enqueue(conn, business_account_id=acc, action_type=action, payload=payload,
                  now=NOW - timedelta(minutes=age_min))
    if values:
        conn.execute(sa.update(pq).where(pq.c.id == rid).values(**values))
    return rid


def _held_ids(engine, actions=()):
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(pq.c.id).where(held_clause(NOW, actions)))}


def test_the_claim_holds_exactly_what_the_rule_says(engine, monkeypatch):
    actions = ("publish_post",)
    with engine.begin() as conn:
        a, b = add_account(conn, username="alpha"), add_account(conn, username="beta")
        set_policy(conn, actor=OP, now=NOW, action_type="reply_dm", mode="always")  # every account
        set_policy(conn, actor=OP, now=NOW, action_type="reply_dm", mode="never", business_account_id=a)
        set_policy(conn, actor=OP, now=NOW, action_type="reply_comment", mode="match",
                   terms="refund\n50% off\nfree*shipping")
        set_policy(conn, actor=OP, now=NOW, action_type="send_dm", mode="first_n", first_n=2, business_account_id=b)
        rows = {
            "dm_a": _add(conn, a, "reply_dm", {"conversation_id": "c", "message_text": "hi a"}),
            "dm_b": _add(conn, b, "reply_dm", {"conversation_id": "c", "message_text": "hi b"}),
            "refund": _add(conn, a, "reply_comment", {"comment_id": "1", "reply_text": "Your REFUND is coming"}),
            "pct": _add(conn, a, "reply_comment", {"comment_id": "2", "reply_text": "Get 50% off"}),
            "pct_no": _add(conn, a, "reply_comment", {"comment_id": "3", "reply_text": "Get 50 off"}),
            "ship": _add(conn, b, "reply_comment", {"comment_id": "4", "reply_text": "free and fast shipping"}),
            "plain": _add(conn, b, "reply_comment", {"comment_id": "5", "reply_text": "thanks!"}),
            "new_b1": _add(conn, b, "send_dm", {"recipient_id": "1", "message_text": "one"}),
            "sent_b": _add(conn, b, "send_dm", {"recipient_id": "1", "message_text": "sent"}, status="sent"),
            "new_a": _add(conn, a, "send_dm", {"recipient_id": "1", "message_text": "no policy for a"}),
            "post": _add(conn, a, "publish_post", {"image_url": "https://cdn.example/a.jpg", "caption": "c"}),
            "post_started": _add(conn, a, "publish_post", {"image_url": "https://cdn.example/b.jpg", "caption": "d"}),
            "failed": _add(conn, b, "reply_dm", {"conversation_id": "c", "message_text": "failed once"},
                           status="failed", retry_count=1, next_retry_at=NOW - timedelta(minutes=1)),
            "retried": _add(conn, b, "reply_dm", {"conversation_id": "c", "message_text": "retried by ops"}),
            "approved": _add(conn, b, "reply_dm", {"conversation_id": "c", "message_text": "approved"}),
        }
        conn.execute(sa.insert(post_queue_state).values(queue_id=rows["post_started"], creation_id="1790",
                                                        updated_at=NOW))
        conn.execute(sa.insert(audit_log), [audit_row(event_type="queue_item_retried", action="retry",
                                                      resource_type="post_queue", resource_id=str(rows["retried"]),
                                                      now=NOW, user_id="ops")])
        approve(conn, rows["approved"], actor=OP, now=NOW)
        policies = review.list_policies(conn)
        facts = {r.id: r for r in conn.execute(sa.select(pq))}
        decided = {r[0] for r in conn.execute(sa.select(review_decisions.c.queue_id))}
    expected = {"dm_b", "refund", "pct", "ship", "new_b1", "post"}
    name = {v: k for k, v in rows.items()}
    held = {name[i] for i in _held_ids(engine, actions)}
    assert held == expected
    # the pure rule says the same of every row
    for key, rid in rows.items():
        r = facts[rid]
        pol = effective_policy = review_rules.effective_policy(policies, business_account_id=r.business_account_id,
                                                         action_type=r.action_type, review_actions=actions)
        sent = sum(1 for f in facts.values() if f.business_account_id == r.business_account_id
                   and f.action_type == r.action_type and f.status == "sent")
        pure = should_hold(pol, status=r.status, retry_count=r.retry_count, decided=rid in decided,
                           started=key == "post_started", operator_touched=key == "retried",
                           text=review.action_text(r.action_type, r.payload), sent_count=sent)
        assert pure == (key in expected), (key, effective_policy)
    # the worker's claim takes everything due but the held rows
    monkeypatch.setenv("REVIEW_ACTIONS", ",".join(actions))
    claimed = {name[c.id] for c in claim(engine, now=NOW, batch_size=100)}
    assert claimed == set(rows) - expected - {"sent_b"}

    # first_n: one more sent send_dm of beta and its pending one is released
    with engine.begin() as conn:
        conn.execute(sa.update(pq).where(pq.c.id == rows["new_b1"]).values(status="pending"))
        _add(conn, b, "send_dm", {"recipient_id": "2", "message_text": "second sent"}, status="sent")
    assert rows["new_b1"] not in _held_ids(engine, actions)


def test_turning_a_policy_on_holds_what_is_pending_and_off_releases_it(engine):
    with engine.begin() as conn:
        a = add_account(conn)
        rid = _add(conn, a, "reply_comment", {"comment_id": "1", "reply_text": "hello"})
    assert rid not in _held_ids(engine)
    with engine.begin() as conn:
        pid = set_policy(conn, actor=OP, now=NOW, action_type="reply_comment", mode="always", business_account_id=a)
    assert rid in _held_ids(engine)
    assert rid in _held_ids(engine, ("reply_comment",))
    with engine.begin() as conn:
        set_policy(conn, actor=OP, now=NOW, action_type="reply_comment", mode="never", business_account_id=a)
    assert rid not in _held_ids(engine, ("reply_comment",))  # the account's "never" beats REVIEW_ACTIONS
    with engine.begin() as conn:
        (pol,) = review.list_policies(conn)
        assert remove_policy(conn, pol.id, actor=OP, now=NOW) and not remove_policy(conn, pid, actor=OP, now=NOW)
        events = [r.event_type for r in conn.execute(sa.select(audit_log.c.event_type)
                                                     .where(audit_log.c.resource_type == "review_policies")
                                                     .order_by(audit_log.c.created_at))]
        assert events == ["review_policy_set", "review_policy_set", "review_policy_removed"]
        with pytest.raises(PermissionDenied):
            set_policy(conn, actor=VIEWER, now=NOW, action_type="reply_comment", mode="always")
        with pytest.raises(ReviewError, match="at least one word"):
            set_policy(conn, actor=OP, now=NOW, action_type="reply_comment", mode="match", terms="  ")
        with pytest.raises(ReviewError, match="between 1 and"):
            set_policy(conn, actor=OP, now=NOW, action_type="reply_comment", mode="first_n", first_n=0)
    assert rid not in _held_ids(engine) and rid in _held_ids(engine, ("reply_comment",))


def test_decisions_approve_edit_reject_bulk_and_viewers(engine):
    actions = ("reply_comment", "publish_post")
    with engine.begin() as conn:
        a = add_account(conn)
        plain = _add(conn, a, "reply_comment", {"comment_id": "1", "reply_text": "as is"})
        edit = _add(conn, a, "reply_comment", {"comment_id": "2", "reply_text": "draft"})
        post = _add(conn, a, "publish_post", {"image_url": "https://cdn.example/x.jpg", "caption": "old",
                                              "creation_id": "1790001"})
        bad = _add(conn, a, "reply_comment", {"comment_id": "3", "reply_text": "nope"})
        bulk = [_add(conn, a, "reply_comment", {"comment_id": f"b{i}", "reply_text": f"bulk {i}"}) for i in range(3)]
    with engine.begin() as conn:
        with pytest.raises(PermissionDenied):
            approve(conn, plain, actor=VIEWER, now=NOW)
        with pytest.raises(PermissionDenied):
            reject(conn, plain, actor=VIEWER, now=NOW)
        with pytest.raises(PermissionDenied):
            decide_many(conn, bulk, decision="approve", actor=VIEWER, now=NOW)
    with engine.begin() as conn:
        assert approve(conn, plain, actor=OP, now=NOW).success
        with pytest.raises(ReviewError, match="decided already"):
            approve(conn, plain, actor=OP, now=NOW)
        with pytest.raises(ReviewError, match="cannot be edited"):
            approve(conn, edit, actor=OP, now=NOW, changes={"comment_id": "9"})
        with pytest.raises(ReviewError, match="Not approved"):
            approve(conn, edit, actor=OP, now=NOW, changes={"reply_text": ""})
        approve(conn, edit, actor=OP, now=NOW, changes={"reply_text": "  the final reply  "})
        approve(conn, post, actor=OP, now=NOW, changes={"caption": "new caption"})
        reject(conn, bad, actor=OP, now=NOW, reason="off-brand")
        results = decide_many(conn, [*bulk, plain], decision="approve", actor=OP, now=NOW)
        assert [r.success for r in results] == [True, True, True, False]
    held = _held_ids(engine, actions)
    assert held.isdisjoint({plain, edit, post, bad, *bulk})
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(pq))}
        d = {r.queue_id: r for r in conn.execute(sa.select(review_decisions))}
        audits = conn.execute(sa.select(audit_log).where(audit_log.c.event_type.in_(
            ["review_approved", "review_rejected"]))).all()
    assert rows[edit].payload["reply_text"] == "the final reply" and rows[edit].status == "pending"
    assert rows[post].payload == {"image_url": "https://cdn.example/x.jpg", "caption": "new caption"}  # no creation_id
    assert rows[bad].status == "dlq" and rows[bad].error == "rejected in review: off-brand"
    assert (d[edit].edited, d[edit].original_text, d[edit].final_text, d[edit].edit_distance) == \
        (True, "draft", "the final reply", review_rules.edit_distance("draft", "the final reply"))
    assert (d[plain].edited, d[bad].decision, d[bad].reason) == (False, "rejected", "off-brand")
    assert sorted((a.event_type, a.resource_type, a.user_id) for a in audits) == sorted(
        [("review_approved", "post_queue", OP.name)] * 6 + [("review_rejected", "post_queue", OP.name)])
    assert {a.resource_id for a in audits} == {str(i) for i in (plain, edit, post, bad, *bulk)}

    # an operator's retry of the rejected row is a new decision of its own: not held again
    with engine.begin() as conn:
        (res,) = retry(conn, [bad], actor=OP, now=NOW)
        assert res.success
    assert bad not in _held_ids(engine, actions)


def test_held_dms_expire_unsent_and_approved_ones_are_never_sent_late(engine):
    with engine.begin() as conn:
        a = add_account(conn)
        old = _add(conn, a, "send_dm", {"recipient_id": "1", "message_text": "too late"}, age_min=25 * 60)
        fresh = _add(conn, a, "send_dm", {"recipient_id": "1", "message_text": "in time"}, age_min=60)
        late = _add(conn, a, "reply_dm", {"conversation_id": "c", "message_text": "approved late"}, age_min=60)
        comment = _add(conn, a, "reply_comment", {"comment_id": "1", "reply_text": "old comment"}, age_min=48 * 60)
    actions = ("send_dm", "reply_dm", "reply_comment")
    with engine.begin() as conn:
        approve(conn, late, actor=OP, now=NOW)
        with pytest.raises(ReviewError, match="Too late"):
            approve(conn, old, actor=OP, now=NOW)
        rows = held_rows(conn, now=NOW, review_actions=actions)
    assert [r.id for r in rows][:2] == [old, fresh]  # DMs first, least time left first
    assert rows[0].time_left(NOW) < timedelta(0) < rows[1].time_left(NOW)
    # later, the approved DM's window (ends 23 h from NOW) is about to close before any worker sent it
    later = NOW + timedelta(hours=23) - timedelta(minutes=1)
    with engine.begin() as conn:
        assert expire_due(conn, now=NOW, review_actions=actions) == 1  # only `old` at NOW
        assert late not in _held_ids(engine, actions)
    with engine.connect() as conn:
        assert conn.execute(sa.select(pq.c.id).where(held_clause(later, actions), pq.c.id == late)).first()
    with engine.begin() as conn:
        assert expire_due(conn, now=later, review_actions=actions) == 2  # `late` (approved) and `fresh`
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(pq))}
        d = {r.queue_id: r.decision for r in conn.execute(sa.select(review_decisions))}
        expired = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "review_expired")).all()
    assert {k: (rows[k].status, rows[k].error) for k in (old, fresh, late)} == {
        k: ("dlq", EXPIRE_ERROR) for k in (old, fresh, late)}
    assert rows[comment].status == "pending"  # not a DM: no window
    assert d == {old: "expired", fresh: "expired", late: "expired"}
    assert sorted(e.resource_id for e in expired) == sorted(str(k) for k in (old, fresh, late))
    assert {(e.user_id, e.resource_type) for e in expired} == {("worker", "post_queue")}


def test_the_waiting_alert_opens_and_resolves(engine, sandbox):
    settings = worker_settings("sqlite://", sandbox, review_actions="reply_comment", review_wait_alert_s=600,
                               dashboard_url="https://dash.example")
    with engine.begin() as conn:
        a = add_account(conn)
        rid = _add(conn, a, "reply_comment", {"comment_id": "1", "reply_text": "waits"}, age_min=30)
    worker_pass(engine, settings, now=NOW)
    worker_pass(engine, settings, now=NOW)  # no change: no repeat
    with engine.connect() as conn:
        (alert,) = conn.execute(sa.select(system_alerts)).all()
    assert alert.alert_type == "review_waiting" and not alert.resolved
    assert alert.message == "1 row(s) wait for review for more than 10 min: https://dash.example/review"
    assert alert.details["count"] == 1
    with engine.begin() as conn:
        approve(conn, rid, actor=OP, now=NOW)
    worker_pass(engine, settings, now=NOW)
    with engine.connect() as conn:
        assert conn.execute(sa.select(system_alerts.c.resolved)).scalar() is True


def test_learning_numbers_and_the_export(engine):
    with engine.begin() as conn:
        a = add_account(conn, username="alpha")
        ids = [_add(conn, a, "reply_comment", {"comment_id": str(i), "reply_text": f"text {i}"}) for i in range(4)]
        approve(conn, ids[0], actor=OP, now=NOW - timedelta(days=10))
        approve(conn, ids[1], actor=OP, now=NOW, changes={"reply_text": "text 1, better"})
        reject(conn, ids[2], actor=OP, now=NOW, reason="too pushy")
        reject(conn, ids[3], actor=OP, now=NOW, reason="too pushy")
        (stats,) = decision_stats(conn, now=NOW)
        data = {fmt: export_decisions(conn, fmt) for fmt in ("csv", "xlsx", "parquet")}
    assert (stats["account"], stats["action_type"]) == ("alpha", "reply_comment")
    assert (stats["approved_7d"], stats["edited_7d"], stats["rejected_7d"], stats["approved_30d"]) == (1, 1, 2, 2)
    assert stats["mean_edit_distance"] == 8.0 and stats["rejection_reasons"] == "too pushy (2)"
    frames = {"csv": pd.read_csv(io.BytesIO(data["csv"])), "xlsx": pd.read_excel(io.BytesIO(data["xlsx"])),
              "parquet": pd.read_parquet(io.BytesIO(data["parquet"]))}
    for df in frames.values():
        assert len(df) == 4 and list(df.columns) == list(review.EXPORT_COLUMNS)
        edited = df[df["queue_id"] == str(ids[1])].iloc[0]
        assert (edited["original_text"], edited["final_text"]) == ("text 1", "text 1, better")


def test_context_is_read_from_graph_cached_and_never_shows_the_token(engine, sandbox):
    sandbox.add_comment("c-1", text="Is this vegan?", username="kim", media_id="m-9", caption="New recipe",
                        media_url="https://cdn.example/m9.jpg")
    sandbox.add_conversation("conv-1", "1784000000000077", "900000000000001", customer_username="lee")
    t0 = float(int(sandbox.now()))  # Graph times are whole seconds
    sandbox.add_message("conv-1", "hello?", created_time=t0 - 7200)
    sandbox.add_message("conv-1", "we are here", from_customer=False, created_time=t0 - 3600)
    sandbox.add_message("conv-1", "any news?", created_time=t0 - 1800)
    client = client_for(worker_settings("sqlite://", sandbox))
    with engine.begin() as conn:
        a = add_account(conn, token="tok-very-secret", ig_id="1784000000000077", username="shop", sandbox=sandbox)
        comment = _add(conn, a, "reply_comment", {"comment_id": "c-1", "reply_text": "Yes!"})
        dm = _add(conn, a, "send_dm", {"recipient_id": "900000000000001", "message_text": "Soon"})
        missing = _add(conn, a, "reply_comment", {"comment_id": "nope", "reply_text": "?"})
    ctx = fetch_context(engine, comment, client, now=NOW)
    assert ctx.error is None and ctx.data["comment"]["text"] == "Is this vegan?"
    assert ctx.data["post"]["caption"] == "New recipe" and ctx.data["post"]["media_url"] == "https://cdn.example/m9.jpg"
    reads = sandbox.stats()["reads"]
    again = fetch_context(engine, comment, client, now=NOW + timedelta(minutes=1))
    assert again.cached and again.data == ctx.data and sandbox.stats()["reads"] == reads  # from the cache

    ctx = fetch_context(engine, dm, client, now=NOW)
    assert [m["message"] for m in ctx.data["messages"]] == ["any news?", "we are here", "hello?"]
    assert [m["from_us"] for m in ctx.data["messages"]] == [False, True, False]
    customer_last = datetime.fromtimestamp(t0 - 1800, UTC)
    assert ctx.window_ends_at == customer_last + timedelta(hours=24)
    with engine.connect() as conn:  # the window read from the conversation is the one the page and expiry use
        (row,) = [r for r in held_rows(conn, now=NOW, review_actions=("send_dm",)) if r.id == dm]
    assert row.window_ends_at == customer_last + timedelta(hours=24)

    bad = fetch_context(engine, missing, client, now=NOW)
    assert bad.data is None and "Unsupported get request" in bad.error
    assert "tok-very-secret" not in repr(bad) and "tok-very-secret" not in repr(ctx)
    assert sandbox.stats()["requests"] == 0  # reads only: nothing was sent


def test_a_row_written_by_another_program_is_held_the_moment_it_exists(engine, monkeypatch):
    """The agents' backend inserts rows itself (its own INSERT, every column the user's schema requires)."""
    monkeypatch.setenv("REVIEW_ACTIONS", "reply_dm")  # the claim reads the setting itself
    with engine.begin() as conn:
        a = add_account(conn)
        rid = uuid.uuid4()
        conn.execute(sa.insert(pq).values(id=rid, business_account_id=a, action_type="reply_dm",
                                          payload={"conversation_id": "c9", "message_text": "from the backend"},
                                          idempotency_key="backend-" + rid.hex, status="pending", retry_count=0,
                                          created_at=NOW, updated_at=NOW))
    assert claim(engine, now=NOW, batch_size=10) == []
    with engine.begin() as conn:
        assert [h.id for h in held_rows(conn, now=NOW)] == [rid]
        approve(conn, rid, actor=OP, now=NOW)
    assert [c.id for c in claim(engine, now=NOW, batch_size=10)] == [rid]


class _NoGraph:  # worker_settings reads only .url; no Graph call is made here
    url = "http://127.0.0.1:9/v21.0"


def test_the_waiting_alert_reaches_the_notification_routes_with_a_link_to_the_review_page(engine):
    from lib.notify.outbox import notify_tick
    from sandbox.notify_sink import NotifySink

    with NotifySink() as sink:
        settings = worker_settings("sqlite://", _NoGraph, review_actions="send_dm",
                                   review_wait_alert_s=60, dashboard_url="https://dash.example.com",
                                   alert_notify_urls=sink.apprise_url(), alert_notify_timeout_s=5.0)
        with engine.begin() as conn:
            a = add_account(conn, username="dm_shop")
            _add(conn, a, "send_dm", {"recipient_id": "1", "message_text": "waiting"}, age_min=5)
        worker_pass(engine, settings, now=NOW)
        rep = notify_tick(engine, settings, now=NOW + timedelta(seconds=5))
        assert rep.detect.opened == 1 and rep.delivery.sent == 1
        [msg] = sink.received()
    assert msg["title"] == "[WARNING] review_waiting · system"
    assert "1 row(s) wait for review for more than 1 min" in msg["message"]
    assert "Open in the dashboard: https://dash.example.com/review" in msg["message"]
