"""Notifications page and the System Alerts badges/acknowledge through AppTest (SQLite)."""
from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import audit_log, instagram_business_accounts, system_alerts
from lib.core.timeutil import utcnow
from lib.notify.routes import route_id
from lib.notify.silences import acknowledgements, create_silence, list_silences
from lib.ui.notifications import SILENCE_PANEL
from lib.ui.system_alerts import Keys
from sandbox.notify_sink import NotifySink

PAGE = "pages/notifications.py"
ALERTS = "pages/system_alerts.py"
ACC = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")
OPS = Actor("ops@example.com", OPERATOR)


def seed(url):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts), [{"id": ACC, "username": "acme", "is_connected": True}])
        ids = [uuid.uuid4(), uuid.uuid4()]
        conn.execute(sa.insert(system_alerts), [
            {"id": ids[0], "alert_type": "auth_failure", "message": "token expired", "business_account_id": ACC,
             "details": {}, "resolved": False, "created_at": now - timedelta(minutes=5), "updated_at": now},
            {"id": ids[1], "alert_type": "rate_limit", "message": "slow down", "business_account_id": ACC,
             "details": {}, "resolved": False, "created_at": now - timedelta(minutes=9), "updated_at": now},
        ])
    return eng, ids


def all_text(at) -> str:
    parts = [e.value for e in at.text] + [e.value for e in at.caption] + [e.value for e in at.markdown]
    parts += [str(df.value.to_dict()) for df in at.dataframe]
    return "\n".join(str(p) for p in parts)


def test_routes_masked_test_send_and_delivery_history(run_page, sqlite_url):
    seed(sqlite_url)
    with NotifySink() as sink:
        url = f"json://bot:S3cretPassw0rd@127.0.0.1:{sink.port}/notify?+X-Api-Key=K3yK3yK3y"
        at = run_page(sqlite_url, PAGE, env={"ALERT_NOTIFY_URLS": url, "ALERT_NOTIFY_TIMEOUT_S": "5"})
        text = all_text(at)
        assert "S3cretPassw0rd" not in text and "K3yK3yK3y" not in text
        assert f"json://127.0.0.1 #{route_id(url)[1:7]}" in text  # scheme + host + fingerprint only
        at.button(key="route-test-0").click().run()
        assert not at.exception and sink.received() == []  # it asks first
        at.button(key="notify_confirm_ok").click().run()
        assert not at.exception
        assert [m["title"] for m in sink.received()] == ["[TEST] Agent Dashboard notification"]
        assert any("Test notification delivered" in s.value for s in at.success)
        history = at.dataframe[-1].value
        assert list(history["kind"]) == ["test"] and list(history["status"]) == ["sent"]
        assert "S3cretPassw0rd" not in all_text(at)


def test_no_routes_says_how_to_configure(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    assert any("ALERT_NOTIFY_URLS" in i.value for i in at.info)


def test_create_a_silence_then_end_it_early(run_page, sqlite_url):
    eng, _ = seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.selectbox(key="sil-type").set_value("auth_failure")
    at.selectbox(key="sil-account").set_value("acme")
    at.text_input(key="sil-reason").input("token rotation")
    at.button[[b.label for b in at.button].index("Create silence")].click().run()
    assert not at.exception
    assert any("Silence created" in s.value for s in at.success), [e.value for e in at.error]
    table = at.dataframe[0].value
    assert list(table["state"]) == ["active"] and list(table["matches"]) == ["type=auth_failure, account=acme"]
    at.button(key="sil-end").click().run()
    assert any("Silence ended" in s.value for s in at.success)
    with eng.connect() as conn:
        events = sorted(r.event_type for r in conn.execute(sa.select(audit_log.c.event_type)))
    assert events == ["alert_silence_created", "alert_silence_ended"]


def test_a_silence_needs_a_matcher_and_a_reason(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.button[[b.label for b in at.button].index("Create silence")].click().run()
    assert any("must match something" in e.value for e in at.error)


def test_system_alerts_shows_silenced_badge_and_acknowledges(run_page, sqlite_url):
    eng, ids = seed(sqlite_url)
    with eng.begin() as conn:
        create_silence(conn, actor=OPS, now=utcnow(), starts_at=utcnow() - timedelta(minutes=1),
                              ends_at=utcnow() + timedelta(hours=1), reason="x", alert_type="rate_limit")
    at = run_page(sqlite_url, ALERTS)
    df = at.dataframe[0].value
    marks = dict(zip(df["alert_type"], df["silenced"]))
    assert marks == {"auth_failure": "", "rate_limit": "silenced"}
    assert at.button(key="alerts-ack").disabled  # nothing selected
    at.session_state[Keys.SELECTED] = list(at.session_state[Keys.SHOWN]["id_sets"][0])  # the first row: auth_failure
    at.run()
    at.text_input(key="alerts-ack-note").input("on it")
    at.button(key="alerts-ack").click().run()
    assert not at.exception
    assert any("Acknowledged 1 alert" in s.value for s in at.success)
    df = at.dataframe[0].value
    assert dict(zip(df["alert_type"], df["on_it"]))["auth_failure"] == "local"
    with eng.connect() as conn:
        ack = acknowledgements(conn, [ids[0]])[ids[0]]
    assert (ack.by, ack.note) == ("local", "on it")


def test_viewer_sees_disabled_actions(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE, env={"OPERATOR_EMAILS": "someone@example.com",
                                         "ALERT_NOTIFY_URLS": "json://127.0.0.1:1/x"})
    assert at.button(key="route-test-0").disabled
    assert at.button[[b.label for b in at.button].index("Create silence")].disabled
    at = run_page(sqlite_url, ALERTS, env={"OPERATOR_EMAILS": "someone@example.com"})
    assert at.button(key="alerts-ack").disabled


def test_system_alerts_silences_like_the_selected_alert(run_page, sqlite_url):
    eng, ids = seed(sqlite_url)
    at = run_page(sqlite_url, ALERTS)
    at.session_state[Keys.SELECTED] = list(at.session_state[Keys.SHOWN]["id_sets"][0])  # the first row: auth_failure
    at.run()
    assert not any(b.key == "sa-sil-use" for b in at.button)  # the silence panel is lazy: closed, not drawn
    at.session_state[SILENCE_PANEL] = True  # open it, as a click does
    at.run()
    at.button(key="sa-sil-use").click().run()
    assert at.selectbox(key="sa-sil-type").value == "auth_failure" and at.selectbox(key="sa-sil-account").value == "acme"
    at.text_input(key="sa-sil-reason").input("rotating the token")
    at.button[[b.label for b in at.button].index("Create silence")].click().run()
    assert not at.exception
    assert any("Silence created" in s.value for s in at.success), [e.value for e in at.error]
    with eng.connect() as conn:
        [sil] = list_silences(conn, now=utcnow())
    assert (sil.alert_type, sil.business_account_id, sil.agent_id, sil.reason) == ("auth_failure", ACC, None,
                                                                                   "rotating the token")
