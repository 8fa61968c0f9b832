"""The database gauges (lib.health.metrics.DatabaseCollector) against the database, on SQLite and PostgreSQL:
every gauge equals what the tables hold, a fixed number of statements per scrape, cached 10 s, no token or row id
in any label value."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lib.activity.heartbeats import record_beat
from lib.alerts.store import open_or_update_alert, severity
from lib.core.counters import endpoint_label
from lib.core.schema import ACTION_TYPES, agent_heartbeats, instagram_business_accounts, post_queue, system_alerts
from lib.core.timeutil import utcnow
from lib.health.metrics import APP_ACCOUNT, DatabaseCollector
from lib.instagram import usage as gu_lib
from lib.instagram.errors import Usage
from lib.queue.reads import queue_health
from lib.queue.rules import STATUSES
from tests.support.queue_rows import add_account, insert_rows, queue_row

TOKEN = "EAA" + "x" * 40  # tests.support.queue_rows' account token


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def count_statements(engine):
    seen = []

    def before(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and statement.strip() != "SELECT 1":
            seen.append(statement)  # reads only (the test's own DELETE is not the collector's)

    sa.event.listen(engine, "before_cursor_execute", before)
    return seen


def scrape(collector) -> dict[str, list]:
    reg = CollectorRegistry()
    reg.register(collector)
    text = generate_latest(reg).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def seed(engine, now):
    with engine.begin() as conn:
        acme = add_account(conn, "acme", now)
        shop = add_account(conn, "shop", now)
        nameless = uuid.uuid4()
        conn.execute(sa.insert(instagram_business_accounts).values(
            id=nameless, username=None, instagram_business_id="17840000000099", access_token=TOKEN,
            is_connected=False, created_at=now, updated_at=now))
        rows = []
        rows += [queue_row(account=acme, now=now, status="pending", action_type="publish_post", age_min=40 + i)
                 for i in range(4)]
        rows += [queue_row(account=acme, now=now, status="pending", action_type="send_dm", age_min=1,
                           next_retry_in_min=5)]  # waits on purpose: not due
        rows += [queue_row(account=nameless, now=now, status="pending", action_type="send_dm", age_min=3)]  # held back
        rows += [queue_row(account=shop, now=now, status="failed", action_type="reply_comment",
                           error_category="transient", next_retry_in_min=-1, retry_count=1)]  # due
        rows += [queue_row(account=shop, now=now, status="failed", action_type="reply_comment",
                           error_category="transient", next_retry_in_min=30, retry_count=2)]  # not yet
        rows += [queue_row(account=shop, now=now, status="dlq", action_type="reply_dm") for _ in range(3)]
        rows += [queue_row(account=shop, now=now, status="sent", action_type="repost_ugc") for _ in range(2)]
        rows += [queue_row(account=shop, now=now, status="processing", action_type="publish_post")]
        rows += [queue_row(account=shop, now=now, status="weird", action_type="custom_action")]  # someone else's
        ids = insert_rows(conn, rows)
        open_or_update_alert(conn, alert_type="auth_failure", business_account_id=acme, message="m", now=now)
        open_or_update_alert(conn, alert_type="rate_limit", business_account_id=acme, message="m", now=now)
        open_or_update_alert(conn, alert_type="rate_limit", business_account_id=shop, message="m", now=now)
        resolved = open_or_update_alert(conn, alert_type="agent_down", agent_id="agent-x", message="m", now=now)
        conn.execute(sa.update(system_alerts).where(system_alerts.c.id == resolved).values(resolved=True))
        open_or_update_alert(conn, alert_type="something_new", message="m", now=now)
        for agent, age in (("agent-1", 5), ("agent-2", 90), ("agent-1", 30)):
            record_beat(conn, agent, now=now - timedelta(seconds=age))
        gu_lib.record_usage(conn, account_id=acme, usage=Usage("IG", 42.0, 10.0, 85.0, None), now=now)
        gu_lib.record_usage(conn, account_id=nameless, usage=Usage("IG", 100.0, 3.0, 4.0, 7.0), now=now)
        gu_lib.record_usage(conn, account_id=None, usage=Usage("app", 12.0, 0.0, 1.0, None), now=now)
    return ids, {"acme": acme, "shop": shop, "nameless": nameless}


def test_every_gauge_equals_the_database(engine):
    now = utcnow()
    ids, _ = seed(engine, now)
    got = scrape(DatabaseCollector(engine, now_fn=lambda: now))

    with engine.connect() as conn:
        by_cell = {(s, a): n for s, a, n in conn.execute(
            sa.select(post_queue.c.status, post_queue.c.action_type, sa.func.count())
            .group_by(post_queue.c.status, post_queue.c.action_type))}
        health = queue_health(conn, now=now)
        unresolved = conn.execute(sa.select(system_alerts.c.alert_type)
                                  .where(system_alerts.c.resolved.is_(False))).scalars().all()
        beats = dict(conn.execute(sa.select(agent_heartbeats.c.agent_id, sa.func.max(agent_heartbeats.c.last_beat_at))
                                  .group_by(agent_heartbeats.c.agent_id)).all())
        usage = gu_lib.usage_rows(conn)

    rows = {(s.labels["status"], s.labels["action_type"]): s.value for s in got["agent_dashboard_queue_rows"]}
    expected = {(s, a): 0 for s in STATUSES for a in ACTION_TYPES}
    expected.update(by_cell)
    assert rows == expected
    assert sum(rows.values()) == len(ids)

    [due] = got["agent_dashboard_queue_due_rows"]
    assert due.value == health["due_now"] == 5  # 4 publish_post pending + 1 failed come due; held back/waiting not
    [oldest] = got["agent_dashboard_queue_oldest_pending_seconds"]
    assert oldest.value == pytest.approx(health["oldest_pending_age_s"], abs=0.01)

    alerts = {(s.labels["alert_type"], s.labels["severity"]): s.value for s in got["agent_dashboard_alerts_open"]}
    assert alerts == {("auth_failure", "CRITICAL"): 1, ("rate_limit", "WARNING"): 2, ("agent_down", "CRITICAL"): 0,
                      ("content_violation", "ERROR"): 0, ("sync_failure", "ERROR"): 0,
                      ("something_new", "WARNING"): 1}
    assert sum(alerts.values()) == len(unresolved)
    assert all(sev == severity(t) for t, sev in alerts)

    ages = {s.labels["agent_id"]: s.value for s in got["agent_dashboard_agent_heartbeat_age_seconds"]}
    assert ages.keys() == beats.keys()
    for agent, last in beats.items():
        last = last if last.tzinfo else last.replace(tzinfo=now.tzinfo)
        assert ages[agent] == pytest.approx((now - last).total_seconds(), abs=0.01)
    assert ages["agent-1"] == pytest.approx(5, abs=0.01)

    ratios = {(s.labels["account"], s.labels["kind"]): s.value for s in got["agent_dashboard_graph_usage_ratio"]}
    label_of = {"app": APP_ACCOUNT}
    with engine.connect() as conn:
        for acc in conn.execute(sa.select(instagram_business_accounts)):
            label_of[str(acc.id)] = acc.username or acc.instagram_business_id
    want = {(label_of[scope], kind): row[kind] / 100 for scope, row in usage.items()
            for kind in ("call_count", "total_cputime", "total_time") if row[kind] is not None}
    assert ratios == pytest.approx(want)
    assert ratios[("acme", "total_time")] == pytest.approx(0.85)
    assert ratios[("17840000000099", "call_count")] == pytest.approx(1.0)  # no username: the IG user id
    assert ratios[(APP_ACCOUNT, "call_count")] == pytest.approx(0.12)


def test_one_read_per_scrape_cached_for_ten_seconds(engine):
    now = utcnow()
    seed(engine, now)
    clock = Clock()
    collector = DatabaseCollector(engine, now_fn=lambda: now, clock=clock)
    statements = count_statements(engine)
    first = scrape(collector)
    per_read = len(statements)
    assert 1 <= per_read <= 5  # status_summary's few statements and the snapshot's one; not per row or account
    with engine.begin() as conn:  # a change within the cache window is not seen yet ...
        conn.execute(sa.delete(post_queue).where(post_queue.c.status == "dlq"))
    clock.t += 9.9
    assert scrape(collector) == first
    assert len(statements) == per_read
    clock.t += 0.2  # ... and is after 10 s, with one more read
    after = scrape(collector)
    assert len(statements) == 2 * per_read
    assert sum(s.value for s in after["agent_dashboard_queue_rows"] if s.labels["status"] == "dlq") == 0


def test_no_label_value_holds_a_token_or_a_row_id(engine):
    now = utcnow()
    ids, accounts = seed(engine, now)
    got = scrape(DatabaseCollector(engine, now_fn=lambda: now))
    values = {v for samples in got.values() for s in samples for v in s.labels.values()}
    forbidden = {TOKEN, *map(str, ids), *(i.hex for i in ids)}
    assert not {v for v in values if any(f in v for f in forbidden)}
    assert "EAA" not in "".join(values)


def test_a_down_database_leaves_the_database_gauges_out_of_the_scrape(tmp_path):
    from lib.core.db import make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'missing' / 'x.sqlite'}")  # no tables: every query fails
    assert scrape(DatabaseCollector(eng)) == {}


def test_endpoint_labels_are_templates_never_paths_with_ids():
    assert endpoint_label("/{ig-user-id}/media") == "/{ig-user-id}/media"
    assert endpoint_label("/me/messages") == "/me/messages"
    assert endpoint_label("/{ig-container-id}") == "/{ig-container-id}"
    assert endpoint_label("/17841400000000/media") == "other"
    assert endpoint_label("/me/messages?access_token=EAAxyz") == "other"
