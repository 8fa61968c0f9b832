"""The weekly digest on SQLite and PostgreSQL: its content (KPIs with deltas, top posts, anomalies,
queue health, open alerts), the schedule queued once per slot through the notification outbox and
delivered by lib.notify.outbox to a real json:// receiver on 127.0.0.1, and "Send now" to a real SMTP
server on 127.0.0.1 as an HTML mail (operators only, audited)."""
from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from lib.alerts.store import open_or_update_alert
from lib.core.identity import OPERATOR, VIEWER, Actor, PermissionDenied
from lib.core.schema import analytics_reports, audit_log, notification_outbox
from lib.core.settings import Settings
from lib.notify import digest
from lib.notify.outbox import notify_tick
from sandbox.notify_sink import NotifySink
from tests.support.pg import free_port
from tests.support.queue_rows import add_account, insert_rows, queue_row
from tests.support.reports import report

SLOT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # a Monday 08:00 UTC
NOW = SLOT + timedelta(minutes=1)
OPS = Actor("ops@example.com", OPERATOR)


def seed(engine):
    with engine.begin() as conn:
        acc = add_account(conn, "acme", NOW)
        rows = []
        for i, (media, caption, retries) in enumerate([("m-1", "<b>Espresso</b> & co", 0), ("m-2", "Latte", 1)]):
            r = queue_row(account=acc, now=NOW, status="sent", action_type="publish_post", retry_count=retries,
                          age_min=60 * 24 + i, payload={"caption": caption, "image_url": "https://x/y.jpg"})
            r["instagram_id"] = media
            rows.append(r)
        rows += [queue_row(account=acc, now=NOW, status="dlq", age_min=30 + i) for i in range(3)]
        rows += [queue_row(account=acc, now=NOW, status="failed", retry_count=1, age_min=40)]
        for r in rows:
            r.setdefault("instagram_id", None)
        insert_rows(conn, rows)
        reps = []
        for d in range(1, 60):  # daily reports with a planted spike 3 days ago
            day = (NOW - timedelta(days=d)).date()
            r = report(acc, "daily", day, reach=1000 + (d % 3) * 10 + (9000 if d == 3 else 0), comparison=None)
            r["media_metrics"] = {"top_performing": [{"media_id": "m-1", "engagement": 700}],
                                  "best_post": {"media_id": "m-2", "engagement": 300, "likes": 250, "reach": 4000}}
            reps.append(r)
        reps.append(report(acc, "weekly", (SLOT - timedelta(days=1)).date(), reach=7000, comparison=None))
        reps.append(report(acc, "weekly", (SLOT - timedelta(days=8)).date(), reach=5000, comparison=None))
        conn.execute(sa.insert(analytics_reports), reps)
        open_or_update_alert(conn, alert_type="auth_failure", business_account_id=acc, now=NOW,
                             message="Token expired <script>")
    return acc


def cfg(engine, *urls, **kw) -> Settings:
    return replace(Settings(database_url=str(engine.url), alert_notify_urls=" ".join(urls),
                            dashboard_url="https://dash.example.com", alert_notify_timeout_s=5.0), **kw)


def test_digest_content(engine):
    seed(engine)
    with engine.connect() as conn:
        d = digest.build_digest(conn, cfg(engine), now=NOW)
    kpis = {k["label"]: k for k in d.kpis}
    assert kpis["Reach"]["value"] == "7,000" and "+2,000" in kpis["Reach"]["delta"]
    assert [p["instagram_id"] for p in d.top_posts] == ["m-1", "m-2"] and d.top_posts[0]["engagement"] == 700
    assert [(a["label"], a["direction"]) for a in d.anomalies] == [("Reach", "up")]
    assert d.queue == {"sent": 2, "failed": 1, "dlq": 3, "dlq_now": 3}
    assert d.alerts == {"CRITICAL": 1}
    page = digest.render_html(d)
    assert "&lt;b&gt;Espresso&lt;/b&gt; &amp; co" in page and "<script>" not in page
    assert "https://dash.example.com/metrics" in page
    text = digest.render_text(d)
    assert "Queue: 2 sent, 1 failed, 3 dead-lettered in the 7 days to 2026-11-30 08:01 UTC" in text
    # the title names the week of the KPIs' report (Monday to Sunday), not the 7 days before now
    assert d.title == "Weekly digest · all accounts · 2026-11-23 – 2026-11-29"
    assert "KPIs (weekly report 2026-11-23 – 2026-11-29)" in text


def test_scheduled_digest_through_the_outbox_to_a_json_receiver(engine):
    acc = seed(engine)
    with NotifySink() as sink:
        settings = cfg(engine, sink.apprise_url())
        assert digest.queue_due_digests(engine, settings, now=NOW) == 1
        assert digest.queue_due_digests(engine, settings, now=NOW + timedelta(minutes=5)) == 0  # once per slot
        rep = notify_tick(engine, settings, now=NOW + timedelta(seconds=10))
        assert rep.delivery.sent >= 1
        msgs = [m for m in sink.received() if m["title"].startswith("Weekly digest")]
        assert len(msgs) == 1
        body = msgs[0]["message"]
        assert "Top posts" in body and "m-1" in body and "Espresso" in body and "Queue health" in body
        assert msgs[0]["title"] == "Weekly digest · all accounts · 2026-11-23 – 2026-11-29"
    with engine.connect() as conn:
        [row] = conn.execute(sa.select(notification_outbox).where(notification_outbox.c.kind == "weekly_digest")).all()
    assert row.status == "sent" and row.dedupe_key.startswith("weekly_digest:2026-11-30T08:00:00+00:00:all:")
    # too late (the worker was down for two days): not sent late
    assert digest.queue_due_digests(engine, settings, now=SLOT + timedelta(days=2)) == 0
    # per account: one digest per account
    per = replace(settings, digest_scope="per_account", digest_cron="0 9 * * 1")
    assert digest.queue_due_digests(engine, per, now=SLOT + timedelta(hours=1, minutes=1)) == 1
    with engine.connect() as conn:
        titles = conn.execute(sa.select(notification_outbox.c.title).where(
            notification_outbox.c.business_account_id == acc, notification_outbox.c.kind == "weekly_digest")).scalars().all()
    assert titles and titles[0].startswith("Weekly digest · @acme")


class _Box:
    def __init__(self):
        self.lock, self.messages, self.port = threading.Lock(), [], free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


def test_send_now_delivers_an_html_mail_and_is_audited(engine):
    seed(engine)
    box = _Box()
    box.controller.start()
    try:
        settings = cfg(engine, f"mailto://127.0.0.1:{box.port}/ops@example.com?from=digest@example.com&format=html")
        with pytest.raises(PermissionDenied):
            digest.send_now(engine, settings, actor=Actor("v@example.com", VIEWER), now=NOW)
        assert digest.send_now(engine, settings, actor=OPS, now=NOW) == ["sent"]
    finally:
        box.controller.stop()
    [msg] = box.messages
    assert str(msg["subject"]).startswith("Weekly digest")
    html_part = msg.get_body(("html",)).get_content()
    assert "<h3>Top posts</h3>" in html_part and "&lt;b&gt;Espresso&lt;/b&gt;" in html_part
    assert "<h3>Queue health</h3>" in html_part and "Token expired &lt;script&gt;" in html_part
    with engine.connect() as conn:
        [audit] = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "digest_sent")).mappings().all()
    assert audit["user_id"] == "ops@example.com" and audit["success"] is True


def test_digest_week_is_the_kpis_week_on_any_day():
    # the newest of the accounts' latest weekly reports names the week, on any weekday
    periods = [("2026-11-16", "2026-11-22"), ("2026-11-23", "2026-11-29")]
    for day in range(7):
        now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC) + timedelta(days=day)
        assert digest.digest_week(periods, now) == (date(2026, 11, 23), date(2026, 11, 29))
    # no report (or none with a readable period): the last whole Monday-Sunday week before now
    sunday = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    assert digest.digest_week([], sunday) == (date(2026, 11, 23), date(2026, 11, 29))
    assert digest.digest_week([(None, "later")], sunday + timedelta(hours=1)) == (date(2026, 11, 30), date(2026, 12, 6))


def test_title_kpis_and_posts_share_the_reported_week_days_after_it(engine):
    acc = seed(engine)
    later = NOW + timedelta(days=6)  # Sunday: the next week's report is not written yet
    with engine.connect() as conn:
        d = digest.build_digest(conn, cfg(engine), now=later, account_id=acc)
    assert d.title == "Weekly digest · @acme · 2026-11-23 – 2026-11-29"
    assert (d.period_start, d.period_end) == (datetime(2026, 11, 23, tzinfo=UTC),
                                              datetime(2026, 11, 30, tzinfo=UTC))
    assert {k["label"]: k["value"] for k in d.kpis}["Reach"] == "7,000"  # that week's report
    assert [p["instagram_id"] for p in d.top_posts] == ["m-1", "m-2"]  # published in that week
    assert "No weekly report" not in digest.render_html(d)
