"""Queue Monitor lib on SQLite and PostgreSQL: status summary, health, DLQ rows/groups, retry."""
from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from lib.core.audit import log_audit
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import audit_log, post_queue
from lib.core.timeutil import utcnow
from lib.queue.reads import count_rows, dlq_rows, error_groups, matching_ids, queue_health, queue_rows, row_detail, status_summary
from lib.queue.rules import MAX_BULK_RETRY, QueueFilter
from lib.queue.store import retry
from tests.support.queue_rows import add_account, insert_rows, queue_row


@pytest.fixture
def now():
    return utcnow().replace(microsecond=0)


@pytest.fixture
def two_accounts(engine, now):
    with engine.begin() as conn:
        return add_account(conn, "alpha", now), add_account(conn, "beta", now)


def statuses(engine, ids):
    with engine.connect() as conn:
        rows = conn.execute(sa.select(post_queue.c.id, post_queue.c.status, post_queue.c.retry_count,
                                      post_queue.c.next_retry_at).where(post_queue.c.id.in_(ids)))
        return {r.id: (r.status, r.retry_count, r.next_retry_at) for r in rows}


def test_status_summary_has_the_endpoint_shape_and_counts(engine, two_accounts, now):
    a, b = two_accounts
    rows = (
        [queue_row(account=a, now=now, status="pending", action_type="publish_post", retry_count=0) for _ in range(5)]
        + [queue_row(account=a, now=now, status="dlq") for _ in range(3)]
        + [queue_row(account=b, now=now, status="sent", action_type="send_dm", retry_count=0) for _ in range(2)]
        + [queue_row(account=b, now=now, status="failed", retry_count=2, next_retry_in_min=4)]
    )
    with engine.begin() as conn:
        insert_rows(conn, rows)
    with engine.connect() as conn:
        s = status_summary(conn, now=now)
        only_b = status_summary(conn, account_id=b, now=now)
    assert set(s) == {"success", "summary", "total", "timestamp",  # the spec's shape, plus the rollup's fields
                      "sent_24h", "sent_7d", "sent_as_of", "sent_exact_since"}
    assert s["success"] is True and s["total"] == 11 and s["timestamp"].endswith("Z")
    assert s["summary"] == {"publish_post::pending": 5, "reply_comment::dlq": 3, "reply_comment::failed": 1,
                            "send_dm::sent": 2}
    assert only_b["summary"] == {"reply_comment::failed": 1, "send_dm::sent": 2} and only_b["total"] == 3


def test_queue_health_due_oldest_and_stuck(engine, two_accounts, now):
    a, _ = two_accounts
    rows = [
        queue_row(account=a, now=now, status="pending", retry_count=0, age_min=30),  # due, oldest
        queue_row(account=a, now=now, status="pending", retry_count=0, age_min=1),  # due
        queue_row(account=a, now=now, status="failed", retry_count=1, next_retry_in_min=-1),  # due
        queue_row(account=a, now=now, status="failed", retry_count=1, next_retry_in_min=5),  # waiting
        queue_row(account=a, now=now, status="processing", retry_count=0, age_min=15),  # stuck (> 10 min)
        queue_row(account=a, now=now, status="processing", retry_count=0, age_min=2),  # held
    ]
    with engine.begin() as conn:
        insert_rows(conn, rows)
    with engine.connect() as conn:
        h = queue_health(conn, now=now, lease_s=600)
        empty = queue_health(conn, account_id=uuid.uuid4(), now=now)
    assert (h["due_now"], h["stuck"]) == (3, 1)
    assert h["oldest_pending_at"] == now - timedelta(minutes=35)
    assert h["oldest_pending_age_s"] == 35 * 60
    assert (empty["due_now"], empty["stuck"], empty["oldest_pending_at"]) == (0, 0, None)


def test_dlq_rows_filters_pages_and_groups(engine, two_accounts, now):
    a, b = two_accounts
    rows = (
        [queue_row(account=a, now=now, age_min=i, error=f"(#190) Error validating access token: session {i} expired")
         for i in range(6)]
        + [queue_row(account=b, now=now, age_min=100 + i, action_type="publish_post", error_category="permanent",
                     error="(#100) Invalid image_url 100%_sure", payload={"image_url": "x", "access_token": "EAA" + "k" * 30})
           for i in range(3)]
        + [queue_row(account=a, now=now, status="failed", retry_count=1, next_retry_in_min=3)]
    )
    with engine.begin() as conn:
        insert_rows(conn, rows)
    with engine.connect() as conn:
        page1 = dlq_rows(conn, limit=4, now=now)
        page3 = dlq_rows(conn, limit=4, offset=8, now=now)
        b_only = dlq_rows(conn, now=now, account_id=b)
        searched = dlq_rows(conn, now=now, search="100%_SURE")  # LIKE wildcards are taken literally
        wild = dlq_rows(conn, now=now, search="%")
        cat = count_rows(conn, filt=QueueFilter("dlq", error_category="permanent"))
        groups = error_groups(conn, filt=QueueFilter("dlq"))
        in_group = count_rows(conn, filt=QueueFilter("dlq", errors=groups[0]["errors"]))
        failed = queue_rows(conn, filt=QueueFilter("failed"))
    assert set(page1) == {"success", "dlq", "count", "timestamp"}
    assert page1["count"] == 4 and [r["id"] for r in page1["dlq"]] == [str(r["id"]) for r in rows[:4]]  # newest first
    assert page3["count"] == 1 and page3["dlq"][0]["id"] == str(rows[8]["id"])
    assert b_only["count"] == 3 and b_only["dlq"][0]["payload"]["access_token"] == "[redacted]"
    assert searched["count"] == 3 and wild["count"] == 3
    assert cat == 3
    assert [(g["error_category"], g["count"]) for g in groups] == [("auth_failure", 6), ("permanent", 3)]
    assert groups[0]["error_group"] == "(#190) Error validating access token: session # expired"
    assert in_group == 6
    assert [r["status"] for r in failed] == ["failed"]


@pytest.mark.pooler
@pytest.mark.parametrize("status", ["pending", "processing", "sent", "failed", "dlq"])
def test_retry_changes_only_failed_and_dlq_rows(engine, two_accounts, now, status):
    a, _ = two_accounts
    row = queue_row(account=a, now=now, status=status, retry_count=3, next_retry_in_min=7)
    with engine.begin() as conn:
        insert_rows(conn, [row])
    with engine.begin() as conn:
        [result] = retry(conn, [row["id"]], actor=Actor("op-ann", OPERATOR), now=now)
    assert set(result.as_response()) == {"success", "queue_id", "action_type", "previous_retry_count", "message"}
    assert result.queue_id == str(row["id"]) and result.action_type == "reply_comment"
    assert result.previous_retry_count == 3
    after = statuses(engine, [row["id"]])[row["id"]]
    with engine.connect() as conn:
        audits = conn.execute(sa.select(audit_log)).all()
    if status in ("failed", "dlq"):
        assert result.success and after == ("pending", 0, None)
        [audit] = audits
        assert (audit.event_type, audit.user_id, audit.resource_id) == ("queue_item_retried", "op-ann", str(row["id"]))
        assert audit.details["previous_status"] == status and audit.details["previous_retry_count"] == 3
        assert audit.details["previous_error"] == row["error"]
        assert audit.details["business_account_id"] == str(a)
    else:
        assert not result.success and after[:2] == (status, 3)
        assert audits == []
        assert "nothing changed" in result.message


def test_retry_reports_unknown_ids_and_ignores_duplicates(engine, two_accounts, now):
    a, _ = two_accounts
    row = queue_row(account=a, now=now)
    with engine.begin() as conn:
        insert_rows(conn, [row])
    ghost = uuid.uuid4()
    with engine.begin() as conn:
        results = retry(conn, [row["id"], str(row["id"]), ghost], actor=Actor("op", OPERATOR), now=now)
    assert [(r.queue_id, r.success) for r in results] == [(str(row["id"]), True), (str(ghost), False)]
    assert results[1].message == "No queue row with this id."
    with pytest.raises(ValueError):
        with engine.begin() as conn:
            retry(conn, [uuid.uuid4() for _ in range(MAX_BULK_RETRY + 1)], actor=Actor("op", OPERATOR), now=now)


def _retry_is_blocked(engine, claim_pid: int, retry_started: threading.Event) -> bool:
    """True once the retry is inside the database, waiting for the claim's transaction.

    PostgreSQL: a backend other than the claim's waits on a lock (pg_stat_activity). SQLite has no
    view of waiters: the retry has sent its UPDATE, which cannot run while the claim holds the write lock."""
    if engine.dialect.name != "postgresql":
        return retry_started.is_set()
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> :claim "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query ILIKE '%post_queue%'"),
            {"claim": claim_pid}).scalar())
@pytest.mark.pooler
def test_retry_racing_a_worker_claim_changes_nothing_the_worker_holds(engine, two_accounts, now):
    """The worker claims the failed row (processing) in a transaction that is still open when the
    operator's retry starts; the retry must wait for it and then leave the claimed row alone.

    The claim is held until the retry is seen waiting on it (no timer): a retry that ran before or
    after the claim, instead of into it, fails the test."""
    a, _ = two_accounts
    row = queue_row(account=a, now=now, status="failed", retry_count=2, next_retry_in_min=-1)
    with engine.begin() as conn:
        insert_rows(conn, [row])
    claimed = threading.Event()
    proceed = threading.Event()
    retry_started = threading.Event()
    order: list[str] = []
    claim_pid: list[int] = []

    def worker_claim():
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                claim_pid.append(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar())
            conn.execute(sa.select(post_queue.c.id).where(post_queue.c.id == row["id"]).with_for_update(skip_locked=True))
            conn.execute(sa.update(post_queue).where(post_queue.c.id == row["id"], post_queue.c.status == "failed")
                         .values(status="processing", updated_at=now))
            claimed.set()
            assert proceed.wait(60)  # hold the claim open while the retry runs into it
            order.append("claim committed")
            conn.commit()

    results = []

    def operator_retry():
        with engine.begin() as conn:
            def sent(conn_, cursor, statement, *args):
                if statement.lstrip().upper().startswith("UPDATE"):
                    retry_started.set()
            sa.event.listen(conn, "before_cursor_execute", sent)
            order.append("retry started")
            results.extend(retry(conn, [row["id"]], actor=Actor("op", OPERATOR), now=now))
        order.append("retry done")

    t = threading.Thread(target=worker_claim)
    t.start()
    assert claimed.wait(10)
    r = threading.Thread(target=operator_retry)
    r.start()
    deadline = threading.Event()
    for _ in range(600):  # up to 60 s on a loaded machine; the state is polled, not the time asserted
        if _retry_is_blocked(engine, claim_pid[0] if claim_pid else 0, retry_started):
            break
        deadline.wait(0.1)
    else:
        proceed.set()
        t.join(10)
        r.join(10)
        pytest.fail(f"the retry never waited on the open claim: {order}")
    assert "retry done" not in order  # it could not finish while the claim was open
    proceed.set()
    t.join(30)
    r.join(30)
    assert order == ["retry started", "claim committed", "retry done"]
    [result] = results
    assert not result.success
    assert statuses(engine, [row["id"]])[row["id"]][:2] == ("processing", 2)
    if engine.dialect.name == "sqlite":
        # read 'failed' before the claim committed, then its conditional UPDATE found the row taken
        assert result.message == "The row changed while retrying (the worker took it); nothing changed."
    else:
        # SELECT ... FOR UPDATE waited for the claim and then read the row as the worker left it
        assert result.message == "The worker is executing this row right now; nothing changed."
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 0
@pytest.mark.pooler
def test_bulk_retry_of_1000_rows_in_one_transaction(engine, two_accounts, now):
    a, b = two_accounts
    rows = [queue_row(account=(a if i % 2 else b), now=now, status=("dlq" if i % 3 else "failed"),
                      retry_count=(5 if i % 3 else i % 5), age_min=i / 10) for i in range(MAX_BULK_RETRY)]
    held = queue_row(account=a, now=now, status="processing", retry_count=1)
    with engine.begin() as conn:
        insert_rows(conn, rows + [held])
    with engine.connect() as conn:
        ids = matching_ids(conn, filt=QueueFilter("dlq")) + matching_ids(conn, filt=QueueFilter("failed"))
    assert len(ids) == MAX_BULK_RETRY

    # all-or-nothing: an error after retry() inside the transaction leaves every row as it was
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            retry(conn, ids, actor=Actor("op", OPERATOR), now=now)
            raise RuntimeError("boom")
    assert {s for s, _, _ in statuses(engine, ids).values()} == {"dlq", "failed"}

    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.begin() as conn:
        results = retry(conn, ids, actor=Actor("op-bulk", OPERATOR), now=now)
    assert len(statements) <= 30  # chunked IN lists grouped by seen version, not 1,000 round trips
    assert sum(r.success for r in results) == MAX_BULK_RETRY
    assert statuses(engine, [held["id"]])[held["id"]][:2] == ("processing", 1)
    assert {v for v in statuses(engine, ids).values()} == {("pending", 0, None)}
    with engine.connect() as conn:
        n_audit = conn.execute(sa.select(sa.func.count()).select_from(audit_log)
                               .where(audit_log.c.event_type == "queue_item_retried", audit_log.c.user_id == "op-bulk")).scalar()
    assert n_audit == MAX_BULK_RETRY


def test_row_detail_redacts_payload_and_shows_history(engine, two_accounts, now):
    a, _ = two_accounts
    row = queue_row(account=a, now=now, payload={"recipient_id": "r1", "message_text": "hi", "access_token": "EAA" + "t" * 30})
    with engine.begin() as conn:
        insert_rows(conn, [row])
        log_audit(conn, event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
                  resource_id=str(row["id"]), now=now - timedelta(minutes=9), success=False,
                  error_message=row["error"], details={"queue_id": str(row["id"])})
        log_audit(conn, event_type="comment_replied", action="reply", resource_type="instagram_comment",
                  resource_id="ig-999", now=now - timedelta(minutes=20), success=True,
                  details={"queue_id": str(row["id"])})
        log_audit(conn, event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
                  resource_id=str(uuid.uuid4()), now=now, success=False)
    with engine.begin() as conn:
        retry(conn, [row["id"]], actor=Actor("op", OPERATOR), now=now)
    with engine.connect() as conn:
        d = row_detail(conn, row["id"])
        assert row_detail(conn, uuid.uuid4()) is None
    assert d["payload"] == {"recipient_id": "r1", "message_text": "hi", "access_token": "[redacted]"}
    assert [h["event_type"] for h in d["history"]] == ["comment_replied", "post_failed_permanent", "queue_item_retried"]
    assert d["status"] == "pending" and d["created_at"].tzinfo is not None


def test_retry_checks_the_dashboard_users_role(engine, two_accounts, now):
    from lib.core.identity import VIEWER, PermissionDenied

    a, _ = two_accounts
    row = queue_row(account=a, now=now)
    with engine.begin() as conn:
        insert_rows(conn, [row])
    with pytest.raises(PermissionDenied):
        with engine.begin() as conn:
            retry(conn, [row["id"]], actor=Actor("viewer@x", VIEWER), now=now)
    assert statuses(engine, [row["id"]])[row["id"]][0] == "dlq"
    with engine.begin() as conn:
        [result] = retry(conn, [row["id"]], actor=Actor("ops@x", OPERATOR), now=now)
    assert result.success
    with engine.connect() as conn:
        assert conn.execute(sa.select(audit_log.c.user_id)).scalar() == "ops@x"


def test_retry_refuses_a_bare_name(engine, two_accounts, now):
    """A name carries no role: only an Actor that is an operator may write."""
    from lib.core.identity import PermissionDenied

    a, _ = two_accounts
    row = queue_row(account=a, now=now)
    with engine.begin() as conn:
        insert_rows(conn, [row])
    with pytest.raises(PermissionDenied):
        with engine.begin() as conn:
            retry(conn, [row["id"]], actor="ops@x", now=now)
