"""The Overview through AppTest. Expected numbers are known from the rows the test writes (or
counted with plain SQL), never taken from the lib functions the page itself calls."""
import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.activity.heartbeats import record_beat
from lib.core.db import init_db, make_engine
from lib.core.schema import system_alerts
from lib.core.timeutil import utcnow
from lib.ui.metrics import Keys as MetricsKeys
from lib.ui.text import md_escape
from sandbox.seed import seed_demo
from tests.support.queue_rows import add_account, insert_rows, queue_row

PAGE = "pages/overview.py"
TILES = ("Pending", "Due", "Failed", "DLQ", "Critical", "Error", "Warning")


def metrics(at):
    return {m.label: m.value for m in at.metric}


def tiles(at):
    m = metrics(at)
    return {k: str(m[k]) for k in TILES}


def test_overview_with_demo_data(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    seed_demo(eng, now=now)
    with eng.connect() as conn:  # plain SQL, not the page's lib functions
        by_status = dict(conn.execute(sa.text("SELECT status, count(*) FROM post_queue GROUP BY status")).all())
        open_alerts = conn.execute(sa.text("SELECT count(*) FROM system_alerts WHERE NOT resolved")).scalar()
    eng.dispose()
    assert by_status["pending"] and by_status["dlq"] and by_status["failed"] and open_alerts

    at = run_page(sqlite_url, PAGE)
    m = metrics(at)
    assert m["Alive"] == "3 / 4"
    assert m["Pending"] == f"{by_status['pending']:,}" and m["DLQ"] == f"{by_status['dlq']:,}"
    assert m["Failed"] == f"{by_status['failed']:,}"
    assert int(m["Critical"]) + int(m["Error"]) + int(m["Warning"]) == open_alerts
    assert m["Critical"] != "0"  # the seeded open agent_down and auth_failure
    events = [e for e in at.expander if not e.label.startswith("KPI cards")]
    assert len(events) == 10  # the last 10 audit events
    assert any(md_escape("ugc-discovery") in md.value for md in at.markdown)  # the down agent is named
    # latest daily metrics of the three accounts: the Metrics page's KPI board, a row per account
    # with each change; the cards on demand
    (board,) = [md.value for md in at.markdown if md.value.startswith("| Account |")]
    rows = board.splitlines()[2:]
    assert len(rows) == 3 and all(":small[:" in row for row in rows)
    assert "Followers" not in [x.label for x in at.metric]
    at.session_state[MetricsKeys.MORE_KPIS] = True  # opened, as a click does
    at.run()
    followers = [x for x in at.metric if x.label == "Followers"]
    assert len(followers) == 3 and all(x.delta for x in followers)
    assert not at.error


def test_overview_on_an_empty_database(run_page, sqlite_url):
    init_db(make_engine(sqlite_url))
    at = run_page(sqlite_url, PAGE)
    captions = " ".join(c.value for c in at.caption)
    assert "No heartbeats yet." in captions and "No audit events yet." in captions
    assert "No daily analytics report in the last 7 days." in captions
    assert metrics(at)["Pending"] == "0"
    assert not at.error and not at.exception


def _known_rows(url):
    """Two accounts with a queue and alerts whose counts are written down below, and 2 of 3 agents alive."""
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        a = add_account(conn, "alpha", now)
        b = add_account(conn, "beta", now)
        rows = (
            [queue_row(account=a, now=now, status="pending", retry_count=0) for _ in range(3)]
            + [queue_row(account=a, now=now, status="failed", retry_count=1, next_retry_in_min=-1) for _ in range(2)]
            + [queue_row(account=a, now=now, status="failed", retry_count=2, next_retry_in_min=30)]  # not due yet
            + [queue_row(account=a, now=now, status="dlq") for _ in range(4)]
            + [queue_row(account=a, now=now, status="sent", retry_count=0) for _ in range(2)]
            + [queue_row(account=b, now=now, status="pending", retry_count=0) for _ in range(5)]
            + [queue_row(account=b, now=now, status="dlq")]
            + [queue_row(account=b, now=now, status="processing", retry_count=0, age_min=1)]
        )
        insert_rows(conn, rows)
        for acc, alert_type, resolved in ((a, "auth_failure", False), (a, "rate_limit", False), (a, "rate_limit", False),
                                          (b, "sync_failure", False), (a, "content_violation", True)):
            conn.execute(sa.insert(system_alerts).values(
                id=uuid.uuid4(), alert_type=alert_type, message=f"{alert_type} test", business_account_id=acc,
                resolved=resolved, created_at=now - timedelta(minutes=3), updated_at=now - timedelta(minutes=3)))
        record_beat(conn, "agent-one", now=now - timedelta(seconds=5))
        record_beat(conn, "agent-two", now=now - timedelta(seconds=20))
        record_beat(conn, "agent-gone", now=now - timedelta(minutes=30))
    eng.dispose()
    return a, b


# counted by hand from _known_rows: Due = pending + failed whose next_retry_at has come
ALL = {"Pending": "8", "Due": "10", "Failed": "3", "DLQ": "5", "Critical": "1", "Error": "1", "Warning": "2"}
ALPHA = {"Pending": "3", "Due": "5", "Failed": "3", "DLQ": "4", "Critical": "1", "Error": "0", "Warning": "2"}
BETA = {"Pending": "5", "Due": "5", "Failed": "0", "DLQ": "1", "Critical": "0", "Error": "1", "Warning": "0"}


def test_overview_counts_known_rows(run_page, sqlite_url):
    _known_rows(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    assert tiles(at) == ALL
    assert metrics(at)["Alive"] == "2 / 3"
    assert any(md_escape("agent-gone") in md.value for md in at.markdown)
    assert not at.error


def test_overview_follows_the_sidebar_account(run_page, sqlite_url):
    a, b = _known_rows(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    assert tiles(at) == ALL
    # as in a browser, where the bound widget also writes ?account= (AppTest does not bind query params,
    # and the guard restores a session's last account when the URL names none: a page switch drops it)
    at.query_params["account"] = "alpha"
    at.selectbox(key="account").set_value(str(a)).run()
    assert tiles(at) == ALPHA  # every tile narrowed: 3 of 8 pending, 4 of 5 dead-lettered, ...
    at.query_params["account"] = "beta"
    at.selectbox(key="account").set_value(str(b)).run()
    assert tiles(at) == BETA
    assert ALPHA != ALL and BETA != ALL
