"""System Alerts through AppTest: default list, filters, grouping, resolve selected / all, empty states."""
from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, instagram_business_accounts, system_alerts
from lib.core.timeutil import utcnow
from lib.ui.system_alerts import Keys

PAGE = "pages/system_alerts.py"
ACC_A = uuid.UUID("aaaaaaaa-0000-0000-0000-000000000001")
ACC_B = uuid.UUID("bbbbbbbb-0000-0000-0000-000000000002")


def seed(url):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()

    def row(alert_type, minutes, account=None, resolved=False, message=None):
        t = now - timedelta(minutes=minutes)
        return {"id": uuid.uuid4(), "alert_type": alert_type, "message": message or f"{alert_type} {minutes}",
                "business_account_id": account, "details": {"source": "test"}, "resolved": resolved,
                "resolved_at": t if resolved else None, "created_at": t, "updated_at": t}

    rows = [
        row("rate_limit", 5, ACC_A), row("rate_limit", 25, ACC_A), row("rate_limit", 45, ACC_A),
        row("auth_failure", 60, ACC_B, message="token *expired* <script>"),
        row("agent_down", 3),
        row("sync_failure", 90, ACC_B, resolved=True),
    ]
    with eng.begin() as conn:
        conn.execute(sa.insert(system_alerts), rows)
        conn.execute(sa.insert(instagram_business_accounts), [
            {"id": ACC_A, "username": "acme", "is_connected": True},
            {"id": ACC_B, "username": "beta", "is_connected": True},
        ])
    eng.dispose()
    return rows


def metric(at, label_start):
    return [m.value for m in at.metric if m.label.startswith(label_start)][0]


def frame(at):
    return at.dataframe[0].value


def test_default_grouped_unresolved_by_severity(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    assert metric(at, "Unresolved") == "5"
    assert metric(at, ":red[:material/error: Critical]") == "2"
    df = frame(at)
    assert list(df["alert_type"]) == ["agent_down", "auth_failure", "rate_limit"]
    assert list(df["count"]) == [1, 1, 3]  # the three rate limits of acme as one group
    assert list(df["account"]) == ["—", "beta", "acme"]
    assert "token *expired* <script>" in list(df["message"])  # a dataframe cell: plain text


def test_alerts_over_time_chart_is_drawn_only_while_its_expander_is_open(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    chart = [e for e in at.expander if e.label == "Alerts over time"]
    assert len(chart) == 1 and not at.get("plotly_chart")  # closed: nothing computed or sent
    at.session_state[Keys.CHART] = True  # opened, as a click does
    at.run()
    assert len(at.get("plotly_chart")) == 1
    spec = at.get("plotly_chart")[0].proto.spec
    assert "rate_limit" in spec and "sync_failure" not in spec  # the unresolved view's alerts, by type
    assert list(frame(at)["alert_type"]) == ["agent_down", "auth_failure", "rate_limit"]  # the list unchanged


def test_filters_and_each_view(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.segmented_control(key=Keys.VIEW).set_value("each").run()
    assert len(frame(at)) == 5
    at.selectbox(key=Keys.TYPE).set_value("rate_limit").run()
    assert list(frame(at)["alert_type"]) == ["rate_limit"] * 3
    at.selectbox(key=Keys.TYPE).set_value("all").run()
    at.multiselect(key=Keys.SEVERITY).set_value(["CRITICAL"]).run()
    assert set(frame(at)["alert_type"]) == {"agent_down", "auth_failure"}
    at.multiselect(key=Keys.SEVERITY).set_value([]).run()
    at.segmented_control(key=Keys.STATE).set_value("resolved").run()
    df = frame(at)
    assert list(df["alert_type"]) == ["sync_failure"] and list(df["resolved_by"]) == ["auto / elsewhere"]
    at.selectbox(key="account").set_value(str(ACC_A)).run()
    assert "No alerts match these filters" in at.info[0].value


def test_resolve_all_matching_asks_with_count_then_resolves(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.selectbox(key=Keys.TYPE).set_value("rate_limit").run()
    at.button(key="alerts-resolve-all").click().run()
    assert "Resolve 3 unresolved alerts matching the current filter?" in at.warning[0].value
    at.button(key="alerts-confirm-cancel").click().run()
    assert not at.warning
    at.button(key="alerts-resolve-all").click().run()
    at.button(key="alerts-confirm-yes").click().run()
    assert "Resolved 3 alerts." in at.success[0].value
    assert "No alerts match these filters" in at.info[0].value
    eng = make_engine(sqlite_url)
    with eng.connect() as conn:
        audits = conn.execute(sa.select(audit_log.c.event_type, audit_log.c.user_id)).all()
        open_left = conn.execute(sa.select(sa.func.count()).select_from(system_alerts)
                                 .where(system_alerts.c.resolved.is_(False))).scalar_one()
    assert audits == [("alert_resolved", "local")] * 3 and open_left == 2
    at.segmented_control(key=Keys.STATE).set_value("resolved").run()
    at.segmented_control(key=Keys.VIEW).set_value("each").run()
    assert list(frame(at)["resolved_by"]) == ["local"] * 3


def test_resolve_selected(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    assert at.button(key="alerts-resolve-selected").disabled  # nothing selected yet
    # AppTest cannot click dataframe rows (nor fire on_select): set what the selection callback
    # stores, the ids behind the first row as drawn
    at.session_state[Keys.SELECTED] = list(at.session_state[Keys.SHOWN]["id_sets"][0])
    at.run()
    assert at.button(key="alerts-resolve-selected").label == "Resolve selected (1)"
    at.button(key="alerts-resolve-selected").click().run()
    assert "Resolved 1 alert." in at.success[0].value
    assert list(frame(at)["alert_type"]) == ["auth_failure", "rate_limit"]


def test_viewer_sees_disabled_resolve(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE, env={"OPERATOR_EMAILS": "someone-else@example.com"})
    assert at.button(key="alerts-resolve-all").disabled
    assert "operator role" in at.button(key="alerts-resolve-all").help


def test_empty_database(run_page, sqlite_url):
    init_db(make_engine(sqlite_url))
    at = run_page(sqlite_url, PAGE)
    assert "No unresolved alerts" in at.success[0].value
    assert metric(at, "Unresolved") == "0"


def test_resolve_all_matching_drops_its_snapshot_when_the_filter_changes(run_page, sqlite_url):
    """The confirmation's ids belong to the filter they were taken for."""
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.button(key="alerts-resolve-all").click().run()
    assert any(b.key == "alerts-confirm-yes" for b in at.button)
    at.selectbox(key="alert_type").set_value("rate_limit").run()
    assert not any(b.key == "alerts-confirm-yes" for b in at.button)
    assert "alerts_confirm_all" not in at.session_state
