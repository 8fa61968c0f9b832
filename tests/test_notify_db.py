"""Alert notifications on SQLite and PostgreSQL, delivered through Apprise to real receivers on
127.0.0.1: json:// to the sandbox sink (an HTTP server), mailto:// to aiosmtpd."""
from __future__ import annotations

import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lib.alerts.store import auto_resolve, open_or_update_alert, resolve
from lib.core.identity import OPERATOR, VIEWER, Actor, PermissionDenied
from lib.core.schema import audit_log, notification_outbox, system_alerts
from lib.core.settings import Settings
from lib.notify.outbox import notification_totals, notify_tick, prune_history, recent_deliveries, send_test
from lib.notify.routes import routes
from lib.notify.silences import (
    InvalidSilence,
    acknowledge,
    acknowledgements,
    alert_badges,
    create_silence,
    end_silence,
    list_silences,
)
from sandbox.notify_sink import NotifySink
from tests.support.smtp import SmtpBox
from tests.support.worker import add_account

OPS = Actor("ops@example.com", OPERATOR)
T0 = datetime(2026, 12, 1, 9, 12, tzinfo=UTC)


@pytest.fixture
def sink():
    with NotifySink() as s:
        yield s


def cfg(engine, *urls, **kw) -> Settings:
    base = Settings(database_url=str(engine.url), alert_notify_urls=" ".join(urls),
                    dashboard_url="https://dash.example.com", alert_notify_timeout_s=5.0)
    return replace(base, **kw)


def tick(engine, settings, now):
    return notify_tick(engine, settings, now=now)


def outbox_rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(notification_outbox).order_by(notification_outbox.c.created_at)).all()


def _auth_failure(conn, acc, now, message="Token expired: (#190) Error validating access token"):
    return open_or_update_alert(conn, alert_type="auth_failure", business_account_id=acc, now=now, message=message,
                                details={"source": "worker"})


def test_opening_reaches_the_json_receiver_once_with_title_message_and_link(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        acc = add_account(conn, username="acme_store")
        alert_id = _auth_failure(conn, acc, T0, message="<b>Token expired</b> " + "x" * 3000)
    rep = tick(engine, settings, T0 + timedelta(seconds=5))
    assert rep.detect.opened == 1 and rep.delivery.sent == 1
    [msg] = sink.received()
    assert msg["title"] == "[CRITICAL] auth_failure · acme_store"
    assert msg["type"] == "failure" and msg["version"] == "1.0"
    body = msg["message"]
    assert body.startswith("<b>Token expired</b> xxx")  # as text, clipped
    assert "more characters not shown" in body and len(body) < 1200
    assert "First seen: 2026-12-01 09:12 UTC" in body and "Account: acme_store" in body
    assert ("Open in the dashboard: https://dash.example.com/system_alerts?alert_type=auth_failure&alert_state=open"
            "&alert_view=each&account=acme_store") in body
    # nothing new: nothing sent
    tick(engine, settings, T0 + timedelta(seconds=20))
    assert len(sink.received()) == 1
    [row] = outbox_rows(engine)
    assert (row.kind, row.status, row.attempts, row.alert_id) == ("opened", "sent", 1, alert_id)


def test_agent_alert_names_the_agent(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        open_or_update_alert(conn, alert_type="agent_down", agent_id="agent-7", now=T0, message="Agent agent-7 silent")
    tick(engine, settings, T0)
    [msg] = sink.received()
    assert msg["title"] == "[CRITICAL] agent_down · agent-7" and "Agent: agent-7" in msg["message"]
    # the worker's auto-resolve is named as the resolver
    with engine.begin() as conn:
        auto_resolve(conn, alert_type="agent_down", agent_id="agent-7", now=T0 + timedelta(minutes=3))
    tick(engine, settings, T0 + timedelta(minutes=3))
    resolved = sink.received()[-1]
    assert resolved["title"] == "[RESOLVED] [CRITICAL] agent_down · agent-7" and resolved["type"] == "success"
    assert "Resolved by the worker (the agent beats again)" in resolved["message"]


def test_repeats_are_digested_at_most_once_per_interval_both_shapes(engine, sink):
    """Our worker folds repeats into details.count; the spec's backend inserts one row per failure."""
    settings = cfg(engine, sink.apprise_url(), alert_repeat_interval_s=3600)
    with engine.begin() as conn:
        acc = add_account(conn, username="acme_store")
        _auth_failure(conn, acc, T0)
    tick(engine, settings, T0)
    assert len(sink.received()) == 1
    for i in range(14):  # repeats through open_or_update_alert (count goes up)
        with engine.begin() as conn:
            _auth_failure(conn, acc, T0 + timedelta(minutes=1 + i))
        tick(engine, settings, T0 + timedelta(minutes=1 + i))
    with engine.begin() as conn:  # three rows from another writer, same type and account
        for i in range(3):
            conn.execute(sa.insert(system_alerts).values(
                id=uuid.uuid4(), alert_type="auth_failure", business_account_id=acc, message="backend insert",
                details={"source": "proactive_sync"}, resolved=False, created_at=T0 + timedelta(minutes=20 + i),
                updated_at=T0 + timedelta(minutes=20 + i)))
    tick(engine, settings, T0 + timedelta(minutes=30))
    assert len(sink.received()) == 1  # no message per repeat, no new "opened" for the inserted rows
    tick(engine, settings, T0 + timedelta(minutes=61))
    msgs = sink.received()
    assert len(msgs) == 2
    assert msgs[1]["title"] == "[CRITICAL] auth_failure · acme_store — repeated 17 times"
    assert "Repeated 17 times since 09:13 UTC" in msgs[1]["message"]
    tick(engine, settings, T0 + timedelta(minutes=90))  # no repeats since: no digest
    assert len(sink.received()) == 2
    # resolve every row (operator): one resolved message naming the operator
    with engine.begin() as conn:
        ids = list(conn.execute(sa.select(system_alerts.c.id).where(system_alerts.c.resolved.is_(False))).scalars())
        resolve(conn, ids, actor=OPS, now=T0 + timedelta(minutes=95))
    tick(engine, settings, T0 + timedelta(minutes=95))
    last = sink.received()[-1]
    assert last["title"] == "[RESOLVED] [CRITICAL] auth_failure · acme_store"
    assert "Resolved by ops@example.com" in last["message"] and "18 occurrences" in last["message"]
    assert len(sink.received()) == 3


def test_severity_routes_and_resolve_goes_where_the_opening_went(engine):
    with NotifySink() as every, NotifySink() as critical:
        settings = cfg(engine, every.apprise_url(), alert_notify_urls_critical=critical.apprise_url())
        with engine.begin() as conn:
            acc = add_account(conn, username="shop")
            warn = open_or_update_alert(conn, alert_type="rate_limit", business_account_id=acc, now=T0, message="slow down")
            crit = _auth_failure(conn, acc, T0)
        tick(engine, settings, T0)
        assert sorted(m["title"] for m in every.received()) == ["[CRITICAL] auth_failure · shop", "[WARNING] rate_limit · shop"]
        assert [m["title"] for m in critical.received()] == ["[CRITICAL] auth_failure · shop"]
        with engine.begin() as conn:
            resolve(conn, [warn, crit], actor=OPS, now=T0 + timedelta(minutes=1))
        tick(engine, settings, T0 + timedelta(minutes=1))
        assert len(every.received()) == 4
        assert [m["title"] for m in critical.received()][-1] == "[RESOLVED] [CRITICAL] auth_failure · shop"
        assert len(critical.received()) == 2


def test_a_receiver_answering_500_then_recovering_gets_exactly_one_delivery(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        _auth_failure(conn, add_account(conn), T0)
    sink.fail_next(2)
    r1 = tick(engine, settings, T0)
    r2 = tick(engine, settings, T0 + timedelta(seconds=15))
    assert (r1.delivery.failed, r2.delivery.failed) == (1, 1)
    [row] = outbox_rows(engine)
    assert row.status == "failed" and row.attempts == 2 and "500" in row.last_error
    r3 = tick(engine, settings, T0 + timedelta(seconds=30))
    assert r3.delivery.sent == 1
    assert sink.requests == 3 and len(sink.received()) == 1
    [row] = outbox_rows(engine)
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)
    tick(engine, settings, T0 + timedelta(seconds=45))
    assert sink.requests == 3


def test_backoff_after_three_failures_then_given_up_with_a_masked_error(engine, sink):
    url = f"json://bot:S3cretPassw0rd@127.0.0.1:{sink.port}/notify?+X-Api-Key=K3yK3yK3y"
    settings = cfg(engine, url, alert_notify_max_attempts=4)
    with engine.begin() as conn:
        _auth_failure(conn, add_account(conn), T0)
    sink.fail_next(100, status=503)
    for i in range(3):
        tick(engine, settings, T0 + timedelta(seconds=15 * i))
    [row] = outbox_rows(engine)
    assert row.status == "failed" and row.attempts == 3
    assert row.next_attempt_at == T0 + timedelta(seconds=30 + 60)  # backoff: one minute after the third
    tick(engine, settings, T0 + timedelta(seconds=75))
    assert outbox_rows(engine)[0].attempts == 3
    tick(engine, settings, T0 + timedelta(seconds=90))
    [row] = outbox_rows(engine)
    assert row.status == "gave_up" and row.attempts == 4 and "503" in row.last_error
    shown = " ".join(str(v) for v in row)
    assert "S3cretPassw0rd" not in shown and "K3yK3yK3y" not in shown
    [route] = routes(settings)
    assert route.label == f"json://127.0.0.1 #{route.id[1:7]}"  # scheme + host + fingerprint only
    with engine.connect() as conn:
        assert notification_totals(conn)["gave_up"] == 1
        [d] = recent_deliveries(conn)
    assert d.status == "gave_up" and d.attempts == 4


def test_mailto_to_a_local_smtp_server(engine):
    with SmtpBox() as box:
        settings = cfg(engine, box.apprise_url())
        with engine.begin() as conn:
            _auth_failure(conn, add_account(conn, username="acme_store"), T0)
        rep = tick(engine, settings, T0)
        assert rep.delivery.sent == 1, outbox_rows(engine)[0].last_error
        [mail] = box.messages
    assert mail["to"] == ["ops@example.com"] and mail["from"] == "alerts@example.com"
    assert mail["subject"] == "[CRITICAL] auth_failure · acme_store"
    assert "Token expired" in mail["body"] and "https://dash.example.com/system_alerts?" in mail["body"]


def test_silence_holds_the_opening_shows_a_badge_and_ending_it_early_sends(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        acc = add_account(conn, username="acme_store")
        other = add_account(conn, username="other")
        sil = create_silence(conn, actor=OPS, now=T0, ends_at=T0 + timedelta(hours=2), reason="token rotation",
                                    alert_type="auth_failure", business_account_id=acc)
        held = _auth_failure(conn, acc, T0 + timedelta(minutes=1))
        _auth_failure(conn, other, T0 + timedelta(minutes=1))  # not matched
    rep = tick(engine, settings, T0 + timedelta(minutes=1))
    assert rep.detect.silenced == 1
    assert [m["title"] for m in sink.received()] == ["[CRITICAL] auth_failure · other"]
    from lib.alerts.store import AlertFilter, list_alerts
    with engine.connect() as conn:
        alerts = list_alerts(conn, filters=AlertFilter())
        badges = alert_badges(conn, alerts, now=T0 + timedelta(minutes=2))
        assert badges[held].silenced_by.id == sil.id
        assert sum(1 for b in badges.values() if b.silenced_by) == 1
        [listed] = list_silences(conn, now=T0 + timedelta(minutes=2))
        assert listed.state(T0 + timedelta(minutes=2)) == "active" and listed.reason == "token rotation"
    with engine.begin() as conn:
        assert end_silence(conn, sil.id, actor=OPS, now=T0 + timedelta(minutes=10))
        assert not end_silence(conn, sil.id, actor=OPS, now=T0 + timedelta(minutes=11))
    tick(engine, settings, T0 + timedelta(minutes=10))
    last = sink.received()[-1]
    assert last["title"] == "[CRITICAL] auth_failure · acme_store" and "the silence has ended" in last["message"]
    with engine.connect() as conn:
        events = [r.event_type for r in conn.execute(sa.select(audit_log.c.event_type, audit_log.c.user_id)
                                                     .where(audit_log.c.user_id == OPS.name))]
        assert sorted(events) == ["alert_silence_created", "alert_silence_ended"]
        [expired] = list_silences(conn, now=T0 + timedelta(hours=3))
        assert expired.state(T0 + timedelta(hours=3)) == "ended early"


def test_an_alert_resolved_while_silenced_is_never_notified(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        create_silence(conn, actor=OPS, now=T0, ends_at=T0 + timedelta(hours=1), reason="maintenance",
                              agent_id="agent-1")
        aid = open_or_update_alert(conn, alert_type="agent_down", agent_id="agent-1", now=T0, message="down")
    tick(engine, settings, T0)
    with engine.begin() as conn:
        resolve(conn, [aid], actor=OPS, now=T0 + timedelta(minutes=5))
    tick(engine, settings, T0 + timedelta(minutes=5))
    tick(engine, settings, T0 + timedelta(hours=2))
    assert sink.received() == [] and outbox_rows(engine) == []


def test_acknowledge_stops_digests_and_shows_who_is_on_it(engine, sink):
    settings = cfg(engine, sink.apprise_url(), alert_repeat_interval_s=600)
    with engine.begin() as conn:
        acc = add_account(conn)
        aid = _auth_failure(conn, acc, T0)
    tick(engine, settings, T0)
    with engine.begin() as conn:
        [res] = acknowledge(conn, [aid], actor=OPS, now=T0 + timedelta(minutes=1), note="rotating the token")
        assert res.outcome == "acknowledged"
        assert acknowledge(conn, [aid], actor=OPS, now=T0 + timedelta(minutes=2))[0].outcome == "already_acknowledged"
    for i in range(5):
        with engine.begin() as conn:
            _auth_failure(conn, acc, T0 + timedelta(minutes=2 + i))
    tick(engine, settings, T0 + timedelta(minutes=30))
    assert len(sink.received()) == 1  # no digest
    with engine.connect() as conn:
        ack = acknowledgements(conn, [aid])[aid]
        assert (ack.by, ack.note) == ("ops@example.com", "rotating the token")
        audit = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "alert_acknowledged")).all()
        assert [(a.user_id, a.resource_id) for a in audit] == [("ops@example.com", str(aid))]
    # the resolve still goes out
    with engine.begin() as conn:
        resolve(conn, [aid], actor=OPS, now=T0 + timedelta(minutes=31))
        assert acknowledge(conn, [aid], actor=OPS, now=T0 + timedelta(minutes=32))[0].outcome == "resolved"
    tick(engine, settings, T0 + timedelta(minutes=31))
    assert sink.received()[-1]["title"].startswith("[RESOLVED]")


def test_operator_actions_refuse_viewers(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    viewer = Actor("v@example.com", VIEWER)
    with engine.begin() as conn:
        aid = _auth_failure(conn, add_account(conn), T0)
        with pytest.raises(PermissionDenied):
            create_silence(conn, actor=viewer, now=T0, ends_at=T0 + timedelta(hours=1), reason="x",
                                  alert_type="auth_failure")
        with pytest.raises(PermissionDenied):
            acknowledge(conn, [aid], actor=viewer, now=T0)
        with pytest.raises(PermissionDenied):
            acknowledge(conn, [aid], actor="ops@example.com", now=T0)  # a bare name has no role
        with pytest.raises(InvalidSilence):
            create_silence(conn, actor=OPS, now=T0, ends_at=T0 + timedelta(hours=1), reason="everything")
    with pytest.raises(PermissionDenied):
        send_test(engine, settings, routes(settings)[0].id, actor=viewer, now=T0)
    assert sink.received() == []


def test_send_test_per_route_is_recorded_and_audited(engine, sink):
    settings = cfg(engine, sink.apprise_url(), alert_notify_urls_warning="json://127.0.0.1:1/closed")
    ok_route, dead_route = routes(settings)
    assert send_test(engine, settings, ok_route.id, actor=OPS, now=T0).ok
    bad = send_test(engine, settings, dead_route.id, actor=OPS, now=T0)
    assert not bad.ok and bad.error
    assert [m["title"] for m in sink.received()] == ["[TEST] Agent Dashboard notification"]
    with engine.connect() as conn:
        history = recent_deliveries(conn)
        assert sorted((d.kind, d.status) for d in history) == [("test", "gave_up"), ("test", "sent")]
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)
                            .where(audit_log.c.event_type == "notification_test_sent")).scalar() == 2


def test_first_run_adopts_stale_open_alerts_quietly_and_notifies_fresh_ones(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        acc = add_account(conn, username="old_shop")
        _auth_failure(conn, acc, T0 - timedelta(days=2))
        open_or_update_alert(conn, alert_type="sync_failure", business_account_id=acc, now=T0, message="sync broke")
    tick(engine, settings, T0 + timedelta(seconds=10))
    assert [m["title"] for m in sink.received()] == ["[ERROR] sync_failure · old_shop"]


def test_nothing_is_lost_while_no_worker_runs(engine, sink):
    """Alerts opened, repeated and resolved while no worker ran are all seen at the next tick."""
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        acc = add_account(conn, username="a")
        first = _auth_failure(conn, acc, T0)
    tick(engine, settings, T0)
    with engine.begin() as conn:  # the worker is down from here
        resolve(conn, [first], actor=OPS, now=T0 + timedelta(minutes=5))
        open_or_update_alert(conn, alert_type="content_violation", business_account_id=acc, now=T0 + timedelta(minutes=6),
                             message="rejected")
    tick(engine, settings, T0 + timedelta(hours=1))
    assert [m["title"] for m in sink.received()] == [
        "[CRITICAL] auth_failure · a", "[RESOLVED] [CRITICAL] auth_failure · a", "[ERROR] content_violation · a"]


def test_alert_storm_2000_repeats_of_10_alerts_stays_bounded(engine, sink, capsys):
    """2,000 repeats of 10 alerts over three simulated hours, the worker detecting every minute:
    10 openings, at most one digest per alert per hour, 10 resolves."""
    interval = 3600
    settings = cfg(engine, sink.apprise_url(), alert_repeat_interval_s=interval)
    with engine.begin() as conn:
        accs = [add_account(conn, username=f"shop{i}") for i in range(10)]
    span_s = 3 * 3600
    step = span_s / 2000
    next_tick = 0.0
    for i in range(2000):
        at = T0 + timedelta(seconds=i * step)
        k = i % 10
        with engine.begin() as conn:
            if k < 5:  # our worker's shape: one row, count goes up
                _auth_failure(conn, accs[k], at)
            else:  # the backend's shape: a row per failure
                conn.execute(sa.insert(system_alerts).values(
                    id=uuid.uuid4(), alert_type="sync_failure", business_account_id=accs[k], message=f"sync {i}",
                    details={"source": "proactive_sync"}, resolved=False, created_at=at, updated_at=at))
        if i * step >= next_tick:
            tick(engine, settings, at)
            next_tick += 60
    end = T0 + timedelta(seconds=span_s)
    tick(engine, settings, end)
    with engine.begin() as conn:
        ids = list(conn.execute(sa.select(system_alerts.c.id).where(system_alerts.c.resolved.is_(False))).scalars())
        resolve(conn, ids, actor=OPS, now=end + timedelta(minutes=1))
    tick(engine, settings, end + timedelta(minutes=1))
    kinds = [r.kind for r in outbox_rows(engine)]
    bound = 10 * (1 + math.ceil(span_s / interval)) + 10
    with capsys.disabled():
        print(f"\n[storm {engine.dialect.name}] 2000 repeats of 10 alerts over 3 h: {len(sink.received())} messages "
              f"(opened {kinds.count('opened')}, digests {kinds.count('digest')}, resolved {kinds.count('resolved')}); "
              f"bound {bound}")
    assert kinds.count("opened") == 10 and kinds.count("resolved") == 10
    assert kinds.count("digest") <= 10 * math.ceil(span_s / interval)
    assert len(sink.received()) == len(kinds) <= bound


def test_history_older_than_the_window_is_pruned_open_work_stays(engine, sink):
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        acc = add_account(conn)
        old = _auth_failure(conn, acc, T0)
    tick(engine, settings, T0)
    with engine.begin() as conn:
        resolve(conn, [old], actor=OPS, now=T0 + timedelta(minutes=1))
        open_or_update_alert(conn, alert_type="rate_limit", business_account_id=acc, now=T0, message="open one")
    sink.fail_next(100)
    tick(engine, settings, T0 + timedelta(minutes=1))  # resolved sent? no: failing receiver, retried later
    with engine.begin() as conn:
        n = prune_history(conn, before=T0 + timedelta(days=31))
        left = dict(conn.execute(sa.select(notification_outbox.c.kind, notification_outbox.c.status)).all())
    assert n >= 1  # the sent opening (and nothing that still waits)
    assert left == {"resolved": "failed", "opened": "failed"}


def test_deliveries_are_counted_in_the_prometheus_counter(engine, sink):
    from lib.core.counters import NOTIFICATIONS

    def sent_so_far():
        return NOTIFICATIONS.labels("sent")._value.get()

    before = sent_so_far()
    settings = cfg(engine, sink.apprise_url())
    with engine.begin() as conn:
        _auth_failure(conn, add_account(conn, username="counted"), T0)
    assert tick(engine, settings, T0 + timedelta(seconds=5)).delivery.sent == 1
    assert sent_so_far() == before + 1  # agent_dashboard_notifications_total{outcome="sent"}
