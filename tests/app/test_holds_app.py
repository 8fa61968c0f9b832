"""The Overview and the Queue Monitor say at the top what Instagram holds back (AppTest)."""
from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import account_holds, graph_usage
from lib.core.timeutil import utcnow
from lib.instagram.account_holds import hold
from tests.support.queue_rows import add_account, insert_rows, queue_row


def _held_db(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        a, b = add_account(conn, "alpha", now), add_account(conn, "beta", now)
        insert_rows(conn, [queue_row(account=a, now=now, status="pending", retry_count=0, age_min=i) for i in range(3)]
                    + [queue_row(account=b, now=now, status="pending", retry_count=0, age_min=i) for i in range(2)])
        conn.execute(sa.insert(graph_usage).values(scope="app", call_count=100.0, regain_at=now + timedelta(minutes=7),
                                                   seen_at=now))
        hold(conn, business_account_id=b, kind="restricted", reason="HTTP 400 code 25/2207050: restricted",
             owner_must="sign in to the Instagram app to lift the restriction, then resume the account here",
             until=None, code=25, subcode=2207050, now=now)
    return eng, b


def _banners(at):
    """The banners' text as a person reads it (Markdown escapes and zero-width breaks removed)."""
    return [v.replace("\u200b", "").replace("\\", "") for v in [w.value for w in at.warning] + [e.value for e in at.error]]


def test_queue_monitor_says_what_is_held_and_an_operator_resumes_the_account(run_page, sqlite_url):
    eng, beta = _held_db(sqlite_url)
    at = run_page(sqlite_url, "pages/queue_monitor.py")
    text = " | ".join(_banners(at))
    assert "Instagram throttles this app until" in text and ": 5 rows wait" in text, text
    assert "Instagram has restricted this account (beta) until an operator resumes it: 2 rows wait" in text
    assert "sign in to the Instagram app" in text
    resume = [b for b in at.button if b.label == "Resume account"][0]
    assert not resume.disabled
    resume.click().run()
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(account_holds)).scalar() == 0
    assert not any("restricted this account" in t for t in _banners(at))


def test_overview_says_it_too_and_a_viewer_cannot_resume(run_page, sqlite_url):
    _held_db(sqlite_url)
    at = run_page(sqlite_url, "pages/overview.py")
    text = " | ".join(_banners(at))
    assert "Instagram throttles this app until" in text and "(beta)" in text
    at = run_page(sqlite_url, "pages/queue_monitor.py", env={"OPERATOR_EMAILS": "other@example.com"})
    assert [b for b in at.button if b.label == "Resume account"][0].disabled


def test_the_row_detail_lists_every_attempt_newest_first(run_page, sqlite_url):
    from lib.core.schema import post_queue_attempts
    from lib.ui.queue_monitor import Keys

    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "alpha", now)
        (rid,) = insert_rows(conn, [queue_row(account=acc, now=now, retry_count=2, error="HTTP 500 third",
                                              error_category="transient")])
        conn.execute(sa.insert(post_queue_attempts), [
            {"id": uuid.uuid4(), "queue_id": rid, "attempted_at": now - timedelta(minutes=m),
             "outcome": outcome, "error_category": "transient", "error": f"HTTP 500 {label}", "retry_count": n}
            for m, outcome, label, n in ((30, "failed", "first", 1), (20, "failed", "second", 2), (5, "dlq", "third", 2))])
    at = run_page(sqlite_url, "pages/queue_monitor.py")
    at.session_state[Keys.SELECTED] = [str(rid)]
    at.run()
    assert any(m.value == "**Attempts** (newest first)" for m in at.markdown)
    frames = [d.value for d in at.dataframe if "outcome" in getattr(d.value, "columns", [])]
    assert frames and list(frames[0]["error"]) == ["HTTP 500 third", "HTTP 500 second", "HTTP 500 first"]
