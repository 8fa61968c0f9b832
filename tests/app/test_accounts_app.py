"""Accounts page through AppTest: one card per account with connection, pause, counts, outcomes and
usage; Pause and Resume for operators, disabled for viewers; the token never shown."""
from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, graph_usage, instagram_business_accounts, post_queue, queue_pauses
from lib.core.timeutil import utcnow
from lib.queue.store import enqueue

PAGE = "pages/accounts.py"
ACC_A = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")
ACC_B = uuid.UUID("bbbbbbbb-0000-0000-0000-000000000002")


def seed(url):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts), [
            {"id": ACC_A, "username": "acme", "instagram_business_id": "1784a", "access_token": "EAASECRETTOKENvalue1234567890",
             "is_connected": True},
            {"id": ACC_B, "username": "beta", "instagram_business_id": "1784b", "access_token": "tok-b", "is_connected": False},
        ])
        for i in range(3):
            enqueue(conn, business_account_id=ACC_A, action_type="send_dm",
                    payload={"recipient_id": str(i), "message_text": f"m{i}"}, now=now)
        rid = enqueue(conn, business_account_id=ACC_A, action_type="publish_post",
                      payload={"image_url": "https://x/a.jpg", "caption": "c"}, now=now)
        conn.execute(sa.update(post_queue).where(post_queue.c.id == rid).values(
            status="dlq", error="HTTP 400 code 36003/2207009 bad aspect ratio", updated_at=now - timedelta(minutes=3)))
        conn.execute(sa.insert(audit_log).values(
            id=uuid.uuid4(), event_type="auth_failure", action="disconnect", resource_type="instagram_business_accounts",
            resource_id=str(ACC_B), success=False, error_message="HTTP 400 code 190/463: Session has expired",
            created_at=now - timedelta(hours=2)))
        conn.execute(sa.insert(graph_usage).values(scope=str(ACC_A), business_account_id=ACC_A, call_count=91,
                                                   total_cputime=10, total_time=20, seen_at=now, quota_usage=12,
                                                   quota_total=100, quota_seen_at=now))
    eng.dispose()


def text_of(at) -> str:
    parts = [m.value for m in at.markdown] + [w.value for w in at.warning] + [c.value for c in at.caption]
    parts += [c.value for c in at.code] + [str(m.value) for m in at.metric]
    return "\n".join(str(p) for p in parts)


def test_cards_show_health_and_never_the_token(run_page, tmp_path):
    url = f"sqlite:///{tmp_path}/a.sqlite"
    seed(url)
    at = run_page(url, PAGE)
    text = text_of(at)
    assert "acme" in text and "beta" in text
    assert "Session has expired" in text  # why beta was disconnected
    assert "Graph usage above 80 %" in text and "calls 91 %" in text
    assert "publishing quota 12 of 100 posts in 24 h" in text
    assert "SECRET" not in text and "tok-b" not in text
    assert [b.label for b in at.button] == ["Pause", "Pause"]


def test_operator_pauses_and_resumes_an_account(run_page, tmp_path):
    url = f"sqlite:///{tmp_path}/b.sqlite"
    seed(url)
    at = run_page(url, PAGE)  # local mode without an operator list: the local user is an operator
    at.text_input(key=f"acc_reason_{ACC_A}").input("rotating the token")
    at.button(key=f"acc_pause_{ACC_A}").click().run()
    eng = make_engine(url)
    with eng.connect() as conn:
        (p,) = conn.execute(sa.select(queue_pauses)).all()
        assert (p.business_account_id, p.reason, p.paused_by) == (ACC_A, "rotating the token", "local")
    assert any("Paused acme" in s.value for s in at.success)
    assert any("3 due rows wait behind it" in w.value for w in at.warning)
    at.button(key=f"acc_resume_{ACC_A}").click().run()
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(queue_pauses)).scalar() == 0
    assert any("Resumed acme" in s.value for s in at.success)


def test_viewers_see_the_buttons_disabled(run_page, tmp_path):
    url = f"sqlite:///{tmp_path}/c.sqlite"
    seed(url)
    at = run_page(url, PAGE, env={"OPERATOR_EMAILS": "someone-else@example.com"})
    assert all(b.disabled for b in at.button)
