"""The Overview through AppTest: numbers agree with the lib functions its blocks reuse."""
import sqlalchemy as sa

from lib.alerts import AlertFilter, alert_summary
from lib.db import init_db, make_engine
from lib.queue import queue_health, status_summary, summary_matrix
from lib.sandbox.seed import seed_demo
from lib.timeutil import utcnow
from lib.ui.text import md_escape

PAGE = "pages/overview.py"


def metrics(at):
    return {m.label: m.value for m in at.metric}


def test_overview_with_demo_data(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    seed_demo(eng, now=now)
    with eng.connect() as conn:
        summary = status_summary(conn, now=now)
        health = queue_health(conn, now=now, lease_s=600)
        alerts = alert_summary(conn, filters=AlertFilter(resolved=False))
    eng.dispose()
    by_status = {}
    for (_, status), n in summary_matrix(summary["summary"])[2].items():
        by_status[status] = by_status.get(status, 0) + n

    at = run_page(sqlite_url, PAGE)
    m = metrics(at)
    assert m["Alive"] == "3 / 4"
    assert m["Pending"] == f"{by_status['pending']:,}" and m["DLQ"] == f"{by_status['dlq']:,}"
    assert m["Failed"] == f"{by_status['failed']:,}" and m["Due"] == f"{health['due_now']:,}"
    assert (m["Critical"], m["Error"], m["Warning"]) == tuple(
        str(alerts["severity"][s]) for s in ("CRITICAL", "ERROR", "WARNING"))
    assert m["Critical"] != "0"  # the seeded open agent_down and auth_failure
    assert len(at.expander) == 10  # the last 10 audit events
    assert any(md_escape("ugc-discovery") in md.value for md in at.markdown)  # the down agent is named
    # latest daily metrics: one KPI card per account, with a delta
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


def test_overview_follows_the_sidebar_account(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    seed_demo(eng, now=now)
    with eng.connect() as conn:
        acc = conn.execute(sa.text("SELECT id FROM instagram_business_accounts ORDER BY username LIMIT 1")).scalar()
        import uuid

        acc = uuid.UUID(str(acc))
        summary = status_summary(conn, account_id=acc, now=now)
    eng.dispose()
    at = run_page(sqlite_url, PAGE)
    at.selectbox(key="account").set_value(str(acc)).run()
    dlq = sum(n for (a, s), n in summary_matrix(summary["summary"])[2].items() if s == "dlq")
    assert metrics(at)["DLQ"] == f"{dlq:,}"
