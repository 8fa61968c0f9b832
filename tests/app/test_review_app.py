"""Review page through AppTest: held rows listed with their context note, a viewer's disabled buttons."""
import uuid

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import instagram_business_accounts
from lib.core.timeutil import utcnow
from lib.queue.store import enqueue

PAGE = "pages/review.py"


def _db(url):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    acc = uuid.uuid4()
    with eng.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts).values(
            id=acc, username="shop", instagram_business_id="1784000000000001", access_token="tok-secret-value",
            is_connected=True, created_at=now, updated_at=now))
        enqueue(conn, business_account_id=acc, action_type="reply_comment", now=now,
                payload={"comment_id": "1790001", "reply_text": "Thanks, *we* <b>love</b> it", "post_id": "1780001"})
        enqueue(conn, business_account_id=acc, action_type="send_dm", now=now,
                payload={"recipient_id": "555", "message_text": "Your order ships today"})
    eng.dispose()
    return acc


def test_held_rows_are_listed_and_viewers_cannot_decide(run_page, sqlite_url):
    _db(sqlite_url)
    env = {"REVIEW_ACTIONS": "reply_comment,send_dm", "INSTAGRAM_GRAPH_URL": "http://127.0.0.1:9/v21.0",
           "GRAPH_CONNECT_TIMEOUT_S": "0.5"}
    at = run_page(sqlite_url, PAGE, env=env)
    df = at.dataframe[0].value
    assert sorted(df["Action"]) == ["reply_comment", "send_dm"]
    assert df["Action"].iloc[0] == "send_dm"  # DMs first: their window runs out
    assert "Thanks, *we* <b>love</b> it" in list(df["Text"])  # untrusted text as data, never Markdown/HTML
    at.selectbox(key="rv_open").set_value(df["Queue id"].iloc[1]).run()
    assert any(t.value == "Thanks, *we* <b>love</b> it" for t in at.text)
    assert any("could not be read from Instagram" in w.value for w in at.warning)
    assert all("tok-secret-value" not in str(e.value) for e in [*at.warning, *at.text, *at.caption])

    viewer = run_page(sqlite_url, PAGE, env={**env, "OPERATOR_EMAILS": "someone@example.com"})
    approve = [b for b in viewer.get("button") if "Approve" in str(b.proto.label)]
    assert approve and all(b.proto.disabled for b in approve)
