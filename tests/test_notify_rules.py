"""Pure rules of lib/notify: routes and their masking, message text, backoff, silence matching."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from lib.core.settings import Settings, load_settings
from lib.notify.messages import alert_link, digest_message, opened_message, resolved_message
from lib.notify.outbox import backoff_s
from lib.notify.routes import _ScrubFilter, mask_notify_url, route_id, routes, scrub, scrub_apprise_logs, split_urls
from lib.notify.silences import Silence, matching_silence

T0 = datetime(2026, 12, 1, 9, 12, tzinfo=UTC)


def test_urls_split_on_whitespace_and_commas():
    assert split_urls(" json://a:1 ,mailto://b\n\tjson://c, ") == ["json://a:1", "mailto://b", "json://c"]
    assert split_urls("") == [] and split_urls(None) == []


def test_routes_by_severity_merge_a_url_listed_twice():
    s = Settings(alert_notify_urls="json://127.0.0.1:9001/all", alert_notify_urls_critical="json://127.0.0.1:9002/pager, json://127.0.0.1:9001/all",
                 alert_notify_urls_warning="json://127.0.0.1:9003/chat")
    rs = {r.url: r for r in routes(s)}
    assert rs["json://127.0.0.1:9001/all"].severities == ("CRITICAL", "ERROR", "WARNING")
    assert rs["json://127.0.0.1:9002/pager"].severities == ("CRITICAL",)
    assert rs["json://127.0.0.1:9003/chat"].severities == ("WARNING",)
    assert len({r.id for r in rs.values()}) == 3 and all(r.id.startswith("r") for r in rs.values())


def test_environment_variables_alone_configure_everything():
    s = load_settings(env={"ALERT_NOTIFY_URLS": "json://127.0.0.1:1/a", "ALERT_NOTIFY_URLS_ERROR": "json://127.0.0.1:1/b",
                           "ALERT_REPEAT_INTERVAL_S": "600", "DASHBOARD_URL": "https://d.example.com"}, secrets={})
    assert (s.alert_repeat_interval_s, s.dashboard_url) == (600, "https://d.example.com")
    assert [r.severities for r in routes(s)] == [("CRITICAL", "ERROR", "WARNING"), ("ERROR",)]
    assert "json://" not in repr(s)  # Apprise URLs carry secrets: never in the settings' repr


def test_masking_hides_passwords_tokens_and_header_values():
    cases = {
        "json://bot:S3cretPassw0rd@127.0.0.1:8080/hook?+X-Api-Key=K3yK3yK3y&format=text": ("S3cretPassw0rd", "K3yK3yK3y"),
        "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/12345": ("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",),
        "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ": ("TIiajkdnlazkcOXrIdevi7FQ",),
        "mailto://alerts:MailPassw0rd@example.com?to=ops@example.com": ("MailPassw0rd",),
    }
    for url, secrets in cases.items():
        label = mask_notify_url(url)
        assert label.split("://")[0] == url.split("://")[0]
        for secret in secrets:
            assert secret not in label, label
    url = "json://bot:pw@127.0.0.1:8080/hook?+X-Api-Key=K&format=text"
    assert mask_notify_url(url) == f"json://127.0.0.1 #{route_id(url)[1:7]}"  # scheme + host only
    assert mask_notify_url("nonsense://secret-token-here").startswith("nonsense://… #")
    [bad] = routes(Settings(alert_notify_urls="nonsense://secret-token-here"))
    assert not bad.valid and "secret" not in bad.label and bad.problem


def test_error_texts_are_scrubbed_of_the_routes_secrets():
    [route] = routes(Settings(alert_notify_urls="json://bot:S3cretPassw0rd@hooks.example.com/T0kenPath?+X-Key=HdrS3cret"))
    text = "Failed json://bot:S3cretPassw0rd@hooks.example.com/T0kenPath?+X-Key=HdrS3cret: 401 for HdrS3cret / T0kenPath"
    out = scrub(text, route)
    for secret in ("S3cretPassw0rd", "HdrS3cret", "T0kenPath"):
        assert secret not in out
    assert "401" in out


def test_backoff_next_tick_three_times_then_doubling_minutes_capped_at_an_hour():
    assert [backoff_s(n) for n in range(1, 11)] == [0, 0, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_titles_links_and_texts():
    s = Settings(dashboard_url="https://dash.example.com/", display_timezone="Europe/Paris")
    title, body = opened_message(s, sev="CRITICAL", alert_type="auth_failure", subj="acme_store",
                                        message="Token expired", agent_id=None, account_name="acme store",
                                        first_seen=T0, occurrences=3)
    assert title == "[CRITICAL] auth_failure · acme_store"
    assert "First seen: 2026-12-01 10:12 CET" in body and "Seen 3 times so far." in body
    assert ("https://dash.example.com/system_alerts?alert_type=auth_failure&alert_state=open&alert_view=each"
            "&account=acme%20store") in body
    title, body = digest_message(s, sev="ERROR", alert_type="sync_failure", subj="x", repeats=14,
                                        since=T0, account_name=None, total=15)
    assert title == "[ERROR] sync_failure · x — repeated 14 times" and "Repeated 14 times since 10:12 CET" in body
    assert alert_link(Settings(), alert_type="x", account_name=None, state="open") is None
    _, body = resolved_message(Settings(), sev="WARNING", alert_type="rate_limit", subj="x", resolver="ops@x",
                                      opened=T0, now=T0 + timedelta(minutes=90), total=1, account_name=None)
    assert "Resolved by ops@x" in body and "Open for 1 h 30 min; 1 occurrence." in body and "dashboard" not in body


def test_silence_matching_and_state():
    acc = uuid.uuid4()
    s = Silence(uuid.uuid4(), "auth_failure", acc, None, T0, T0 + timedelta(hours=1), "rotation", "ops", T0)
    assert s.matches("auth_failure", acc, "agent-1") and not s.matches("auth_failure", uuid.uuid4(), None)
    assert not s.matches("rate_limit", acc, None)
    assert s.state(T0 - timedelta(minutes=1)) == "scheduled" and s.state(T0) == "active"
    assert s.state(T0 + timedelta(hours=1)) == "expired"
    ended = Silence(s.id, None, None, "agent-1", T0, T0 + timedelta(hours=1), "x", "ops", T0,
                           ended_early_at=T0 + timedelta(minutes=5))
    assert ended.is_active(T0 + timedelta(minutes=4)) and not ended.is_active(T0 + timedelta(minutes=5))
    assert ended.state(T0 + timedelta(minutes=6)) == "ended early"
    assert matching_silence([s, ended], alert_type="agent_down", business_account_id=None, agent_id="agent-1",
                                   now=T0 + timedelta(minutes=1)) is ended


def test_apprise_log_records_are_scrubbed(caplog):
    import logging

    s = Settings(alert_notify_urls="json://bot:S3cretPassw0rd@hooks.example.com/T0kenPath")
    scrub_apprise_logs(s)
    scrub_apprise_logs(s)  # once per set of routes
    logger = logging.getLogger("apprise")
    assert sum(isinstance(f, _ScrubFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="apprise"):
        logger.warning("posting to %s failed", "https://bot:S3cretPassw0rd@hooks.example.com/T0kenPath")
    assert "S3cretPassw0rd" not in caplog.text and "T0kenPath" not in caplog.text and "failed" in caplog.text
