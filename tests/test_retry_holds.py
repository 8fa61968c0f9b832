"""A retry says when the row will not run at once (its account disconnected, held by Instagram,
throttled or paused) and when its last error was permanent; on SQLite, PostgreSQL and the user's DDL."""
from __future__ import annotations

import sqlalchemy as sa

from lib.core.identity import Actor
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.timeutil import utcnow
from lib.instagram.account_holds import hold
from lib.queue.holds import hold_reasons
from lib.queue.store import retry
from tests.support.queue_rows import add_account, insert_rows, queue_row

OPS = Actor("ops@example.com", "operator")


def test_retry_of_held_rows_says_why_they_wait_and_warns_of_a_permanent_error(engine):
    now = utcnow()
    with engine.begin() as conn:
        gone, held, fine = (add_account(conn, n, now) for n in ("gone", "held", "fine"))
        conn.execute(sa.update(accounts).where(accounts.c.id == gone).values(is_connected=False))
        hold(conn, business_account_id=held, kind="temporary_block", reason="368", owner_must="wait",
             until=None, code=368, subcode=None, now=now)
        rows = insert_rows(conn, [
            queue_row(account=gone, now=now),
            queue_row(account=held, now=now, error="HTTP 500 oops", error_category="transient"),
            queue_row(account=fine, now=now, error="HTTP 400 code 100/33 on POST /c1/replies: Unsupported post request",
                      error_category="permanent"),
            queue_row(account=fine, now=now, error="HTTP 500 oops", error_category="transient"),
        ])
        results = {r.queue_id: r for r in retry(conn, rows, actor=OPS, now=now)}
    r_gone, r_held, r_perm, r_fine = (results[str(i)] for i in rows)
    assert all(r.success for r in results.values())
    assert "but it waits: its account is disconnected" in r_gone.message and r_gone.held
    assert "will fail the same way" in r_gone.message  # auth_failure: reconnect first
    assert "but it waits: Instagram holds its account back" in r_held.message
    assert "Its last error was permanent (HTTP 400 code 100/33" in r_perm.message and r_perm.held is None
    assert r_fine.message == "Moved from dlq back to pending; the worker picks it up on its next tick."
    assert set(r_gone.as_response()) == {"success", "queue_id", "action_type", "previous_retry_count", "message"}
    with engine.connect() as conn:  # the Queue Monitor's cell for each row: what it waits for, in a word
        assert hold_reasons(conn, rows, now=now, short=True) == {rows[0]: "reconnect", rows[1]: "Instagram"}
