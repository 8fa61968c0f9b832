"""Maintenance windows through AppTest: an operator plans one for an agent, the pages say "in maintenance
until …", ending it is audited; a window without a reason is refused; viewers see the planner disabled."""
import json
from datetime import timedelta

import sqlalchemy as sa

from lib.activity.heartbeats import record_beat
from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, maintenance_windows
from lib.core.timeutil import utcnow
from lib.ui.maintenance import AGENT, ONE_OFF, Keys

PAGE = "pages/agent_status.py"


def seed(url):
    eng = make_engine(url)
    init_db(eng)
    with eng.begin() as conn:
        record_beat(conn, "deployer", now=utcnow() - timedelta(minutes=3))
    return eng


def plan(at, reason="deploy"):
    start = utcnow() - timedelta(minutes=2)
    at.radio(key=Keys.SCOPE).set_value(AGENT).run()
    at.selectbox(key=Keys.AGENT).set_value("deployer")
    at.radio(key=Keys.KIND).set_value(ONE_OFF).run()
    at.date_input(key=Keys.DATE).set_value(start.date())
    at.time_input(key=Keys.TIME).set_value(start.time().replace(second=0, microsecond=0))
    at.number_input(key=Keys.DURATION_MIN).set_value(60.0)
    at.text_input(key=Keys.REASON).input(reason)
    at.button(key=Keys.CREATE).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_an_operator_plans_a_window_and_the_page_says_until_when(run_page, sqlite_url):
    eng = seed(sqlite_url)
    at = plan(run_page(sqlite_url, PAGE))
    assert any(s.value.startswith("Maintenance planned for agent deployer") for s in at.success)
    banners = [i.value for i in at.info if i.value.startswith("In maintenance until")]
    assert len(banners) == 1 and "agent deployer" in banners[0] and "deploy" in banners[0]
    with eng.connect() as conn:
        w = conn.execute(sa.select(maintenance_windows)).one()
    assert w.agent_id == "deployer" and w.ends_at - w.starts_at == timedelta(hours=1)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)  # the heartbeat timeline shows the window in grey
    assert [t["hovertemplate"].split("<br>")[0] for t in spec["data"]] == ["maintenance", "%{y}"]
    at.button(key=Keys.end(w.id)).click().run()
    assert not [i for i in at.info if i.value.startswith("In maintenance until")]
    with eng.connect() as conn:
        events = [r.event_type for r in conn.execute(sa.select(audit_log.c.event_type).where(
            audit_log.c.resource_type == "maintenance_windows").order_by(audit_log.c.created_at))]
    assert events == ["maintenance_window_created", "maintenance_window_ended"]


def test_the_overview_shows_the_window(run_page, sqlite_url):
    seed(sqlite_url)
    plan(run_page(sqlite_url, PAGE))
    at = run_page(sqlite_url, "pages/overview.py")
    assert any(i.value.startswith("In maintenance until") for i in at.info)


def test_a_window_without_a_reason_is_refused(run_page, sqlite_url):
    eng = seed(sqlite_url)
    at = plan(run_page(sqlite_url, PAGE), reason="")
    assert any(e.value.startswith("Not planned:") and "Say why" in e.value for e in at.error)
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(maintenance_windows)).scalar() == 0


def test_viewers_see_the_planner_disabled(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE, env={"OPERATOR_EMAILS": "someone-else@example.com"})
    assert at.button(key=Keys.CREATE).disabled and at.radio(key=Keys.SCOPE).disabled
