"""Incidents page through AppTest: the list with durations and filters, the timeline of one incident
(opened by ?incident=), acknowledging an open one with a comment; viewers cannot."""
from datetime import timedelta

from lib.activity.heartbeats import record_beat
from lib.alerts.incidents import IncidentFilter, list_incidents
from lib.core.db import init_db, make_engine
from lib.core.timeutil import utcnow
from lib.health.watchdog import sync_agent_down_alerts
from lib.ui.incidents import Keys

PAGE = "pages/incidents.py"


def seed(url, *, restart: bool):
    """An agent that stopped 4 minutes ago (raised by the watchdog), restarted a minute ago if `restart`."""
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        for i in range(600, 240, -10):
            record_beat(conn, "engagement", now=now - timedelta(seconds=i))
        sync_agent_down_alerts(conn, now=now - timedelta(seconds=170))
        if restart:
            record_beat(conn, "engagement", now=now - timedelta(seconds=60))
            sync_agent_down_alerts(conn, now=now - timedelta(seconds=55))
        (s,) = list_incidents(conn, filters=IncidentFilter())
    eng.dispose()
    return str(s.alert_id)


def test_list_and_timeline_of_a_resolved_incident(run_page, sqlite_url):
    alert_id = seed(sqlite_url, restart=True)
    at = run_page(sqlite_url, PAGE)
    frame = at.dataframe[0].value
    assert frame["type"].tolist() == ["agent_down"] and frame["state"].tolist() == ["resolved"]
    assert frame["time to resolve"].tolist() == ["1 min"]
    at.query_params["incident"] = alert_id
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Time to resolve"] == "1 min" and metrics["Time to acknowledge"] == "—"
    timeline = at.dataframe[-1].value
    assert timeline["kind"].tolist() == ["cause", "opened", "cause", "resolved"]
    assert not [b for b in at.button if b.key == Keys.ACK]  # nothing to acknowledge once resolved
    at.selectbox(key=Keys.AGENT).set_value("engagement").run()
    assert at.dataframe[0].value["about"].tolist() == ["agent engagement"]
    at.selectbox(key=Keys.STATE).set_value("open").run()
    assert [i.value for i in at.info] == ["No incident matches these filters."]


def test_an_operator_acknowledges_with_a_comment(run_page, sqlite_url):
    alert_id = seed(sqlite_url, restart=False)
    at = run_page(sqlite_url, PAGE)
    at.query_params["incident"] = alert_id
    at.run()
    at.text_input(key=Keys.ACK_NOTE).input("restarting it now")
    at.button(key=Keys.ACK).click().run()
    assert any(s.value.startswith("Acknowledged") for s in at.success)
    timeline = at.dataframe[-1].value
    assert "acknowledged: “restarting it now”" in timeline["what"].tolist()
    assert {m.label: m.value for m in at.metric}["Time to acknowledge"] != "—"


def test_viewers_cannot_acknowledge(run_page, sqlite_url):
    alert_id = seed(sqlite_url, restart=False)
    at = run_page(sqlite_url, PAGE, env={"OPERATOR_EMAILS": "someone-else@example.com"})
    at.query_params["incident"] = alert_id
    at.run()
    assert at.button(key=Keys.ACK).disabled
