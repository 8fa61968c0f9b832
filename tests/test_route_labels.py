"""A notification route is shown, stored and logged as scheme + host + a short fingerprint: never
a path segment, query value, ntfy topic or user name (Apprise's privacy mode keeps those, and a
webhook path or an ntfy topic is the credential). Data tests on SQLite, PostgreSQL and the user's
schema, against a real receiver on 127.0.0.1."""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa

from lib.alerts.store import open_or_update_alert
from lib.core.audit import AuditFilter, export_chunks
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import audit_log, notification_outbox
from lib.core.settings import Settings
from lib.notify.outbox import notify_tick, recent_deliveries, send_test
from lib.notify.routes import route_id, route_label, routes
from sandbox.notify_sink import NotifySink
from tests.support.worker import add_account

OPS = Actor("ops@example.com", OPERATOR)
T0 = datetime(2026, 12, 1, 9, 12, tzinfo=UTC)
LABEL = re.compile(r"^[a-z][a-z0-9+.-]*://(\S+|…) #[0-9a-f]{6}$")

SECRET_URLS = {
    "jsons://hooks.example.com/webhook/S3CRETW3BHOOK": ("S3CRETW3BHOOK", "webhook"),
    "json://bot:S3cretPassw0rd@127.0.0.1:8080/hook?+X-Api-Key=K3yK3yK3y&format=text": ("S3cret", "K3yK3y", "bot", "hook"),
    "xml://hooks.example.com/x/PathT0ken": ("PathT0ken",),
    "form://user@hooks.example.com/FormT0ken?token=QueryT0ken": ("FormT0ken", "QueryT0ken", "user"),
    "ntfy://s3cr3t-topic": ("s3cr3t-topic",),
    "ntfys://ntfy.example.com/s3cr3ttopic?priority=high": ("s3cr3ttopic", "high"),
    "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/12345": ("AAHdqTcv", "123456789", "12345"),
    "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ": ("T1JJ3T3L2", "TIiajkdnlazkcOXrIdevi7FQ"),
    "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js": ("4174216298", "JHMHI8qBe7bk2ZwO5U711o3dV_js"),
    "mailto://alerts:MailPassw0rd@example.com?to=ops@example.com": ("MailPassw0rd", "alerts", "ops@"),
    "nonsense://secret-token-here": ("secret-token",),
}


def test_a_label_is_scheme_host_and_fingerprint_only():
    for url, secrets in SECRET_URLS.items():
        label = route_label(url)
        assert LABEL.match(label), label
        assert label.startswith(url.split("://")[0] + "://")
        for secret in secrets:
            assert secret not in label, (url, label)
    assert route_label("jsons://hooks.example.com/webhook/S3CRETW3BHOOK").startswith(
        "jsons://hooks.example.com #")
    assert route_label("ntfys://ntfy.example.com/t").startswith("ntfys://ntfy.example.com #")
    # two routes to one host differ by their fingerprint, which is their route id's
    a, b = "json://h.example.com/one", "json://h.example.com/two"
    assert route_label(a) != route_label(b)
    assert route_label(a).endswith(route_id(a)[1:7])


def _cfg(engine, *urls) -> Settings:
    return replace(Settings(database_url=str(engine.url), alert_notify_urls=" ".join(urls),
                            alert_notify_timeout_s=5.0))


def test_outbox_audit_export_and_logs_hold_no_route_secret(engine, caplog):
    with NotifySink() as sink:
        hook = f"json://127.0.0.1:{sink.port}/webhook/S3CRETW3BHOOK"
        topic = f"ntfy://127.0.0.1:{sink.port}/s3cr3ttopic"
        settings = _cfg(engine, hook, topic)
        with engine.begin() as conn:
            acc = add_account(conn, username="acme")
            open_or_update_alert(conn, alert_type="auth_failure", message="token expired", business_account_id=acc,
                                 now=T0)
        caplog.set_level(logging.INFO, logger="worker.notify")
        notify_tick(engine, settings, now=T0)
        for r in routes(settings):
            send_test(engine, settings, r.id, actor=OPS, now=T0)
        assert sink.received()  # the receiver really got the deliveries
    with engine.connect() as conn:
        labels = [r.route_label for r in conn.execute(sa.select(notification_outbox))]
        details = [r.details for r in conn.execute(sa.select(audit_log).where(
            audit_log.c.event_type == "notification_test_sent"))]
        exported = "".join(str(row) for chunk in export_chunks(conn, filters=AuditFilter()) for row in chunk)
        shown = [d.route_label for d in recent_deliveries(conn)]
    assert len(labels) >= 4 and len(details) == 2
    text = " ".join(map(str, labels + details + shown)) + exported + caplog.text
    for secret in ("S3CRETW3BHOOK", "webhook", "s3cr3ttopic"):
        assert secret not in text
    assert all(LABEL.match(lbl) for lbl in labels + shown)
    assert f"json://127.0.0.1 #{route_id(hook)[1:7]}" in labels


def test_labels_stored_before_are_shown_in_todays_form(engine):
    old = "jsons://hooks.example.com/webhook/S3CRETW3BHOOK"
    with engine.begin() as conn:
        conn.execute(sa.insert(notification_outbox).values(
            id=__import__("uuid").uuid4(), dedupe_key="test:old", kind="test", route_id="r0123456789",
            route_label=old, title="t", body="b", notify_type="info", status="sent", attempts=1,
            created_at=T0, updated_at=T0))
    with engine.connect() as conn:
        (d,) = recent_deliveries(conn)
    assert d.route_label == "jsons://hooks.example.com #012345"
