"""Service levels through AppTest: the Queue Monitor's table (p50/p95 per window, target, compliance) and the
Overview's lines, on rows sent in time and rows left overdue."""
import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import post_queue
from lib.core.timeutil import utcnow
from tests.support.worker import add_account


def seed(url, *, overdue: int):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, username="acme")
        rows = [(now - timedelta(hours=3, minutes=i), timedelta(seconds=30 + i), "sent") for i in range(20)]
        rows += [(now - timedelta(minutes=40 + i), timedelta(0), "pending") for i in range(overdue)]
        conn.execute(sa.insert(post_queue), [dict(
            id=uuid.uuid4(), business_account_id=acc, action_type="reply_dm", payload={"text": "hi"},
            idempotency_key=uuid.uuid4().hex, status=status, retry_count=0, created_at=created,
            updated_at=created + after) for created, after, status in rows])
    eng.dispose()


def test_queue_monitor_shows_percentiles_and_a_met_target(run_page, sqlite_url):
    seed(sqlite_url, overdue=0)
    at = run_page(sqlite_url, "pages/queue_monitor.py", env={"SLO_TARGETS": "reply_dm:95:15m"})
    frame = next(d.value for d in at.dataframe if "p95 24 h" in d.value.columns)
    (row,) = frame.to_dict("records")
    assert row["action_type"] == "reply_dm" and row["sent 24 h"] == 20
    assert (row["p50 24 h"], row["p95 24 h"]) == ("39 s", "48 s")  # 30..49 s: 10th and 19th values
    assert row["target"] == "95 % of reply_dm within 15 min" and row["state"] == "met"
    assert row["within target 7 d"] == "100.0 %"


def test_overdue_rows_miss_the_target_on_both_pages(run_page, sqlite_url):
    seed(sqlite_url, overdue=5)
    env = {"SLO_TARGETS": "reply_dm:95:15m"}
    at = run_page(sqlite_url, "pages/queue_monitor.py", env=env)
    assert any(e.value.startswith("Target missed over 7 d: reply_dm") for e in at.error)
    at = run_page(sqlite_url, "pages/overview.py", env=env)
    lines = [m.value for m in at.markdown if "reply\\_dm within" in m.value or "reply_dm within" in m.value]
    assert len(lines) == 1 and ":red-badge[missed]" in lines[0] and "80.0 %" in lines[0]


def test_a_bad_target_setting_is_a_clear_configuration_error(run_page, sqlite_url):
    seed(sqlite_url, overdue=0)
    at = run_page(sqlite_url, "pages/queue_monitor.py", env={"SLO_TARGETS": "reply_dm:95"})
    assert any("SLO_TARGETS" in e.value for e in at.error)
