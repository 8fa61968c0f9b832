"""Agent Status's schedules through AppTest: an operator's schedule changes liveness at once and is
audited; a bad cron is refused with a message; viewers see the editor disabled."""
from datetime import timedelta

import sqlalchemy as sa

from lib.activity.heartbeats import record_beat
from lib.core.db import init_db, make_engine
from lib.core.schema import agent_schedules, audit_log
from lib.core.text import md_escape
from lib.core.timeutil import utcnow
from lib.ui.agent_schedules import CRON, PERIOD, Keys

PAGE = "pages/agent_status.py"


def seed(url):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        for i in range(4, 120, 4):  # a poller that beats every 4 minutes
            record_beat(conn, "poller", now=now - timedelta(minutes=i))
    return eng


def test_an_operator_gives_a_4_minute_agent_a_5_minute_period(run_page, sqlite_url):
    eng = seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    assert [e.value for e in at.error] == ["1 of 1 agents down: " + md_escape("poller")]
    at.radio(key=Keys.KIND).set_value(PERIOD)
    at.number_input(key=Keys.PERIOD_MIN).set_value(5.0)
    at.number_input(key=Keys.GRACE_MIN).set_value(1.0)
    at.number_input(key=Keys.TARGET_PCT).set_value(99.0)
    at.button(key=Keys.SAVE).click().run()
    assert not at.exception
    assert not at.error
    assert sorted(s.value for s in at.success) == ["All 1 agent alive",
                                                   "poller now beats every 5 min \\+ 1 min grace."]  # Markdown-escaped
    assert any("Schedule: beats every 5 min + 1 min grace" in c.value for c in at.caption)
    with eng.connect() as conn:
        row = conn.execute(sa.select(agent_schedules)).one()
        audit = conn.execute(sa.select(audit_log).where(audit_log.c.event_type == "agent_schedule_set")).one()
    assert (row.period_s, row.grace_s, row.cron, row.availability_target) == (300, 60, None, 0.99)
    assert audit.resource_id == "poller" and audit.user_id
    at.button(key=Keys.CLEAR).click().run()
    assert [e.value for e in at.error] == ["1 of 1 agents down: " + md_escape("poller")]


def test_a_bad_cron_is_refused_and_nothing_is_written(run_page, sqlite_url):
    eng = seed(sqlite_url)
    at = run_page(sqlite_url, PAGE)
    at.radio(key=Keys.KIND).set_value(CRON)
    at.text_input(key=Keys.CRON).input("every night")
    at.button(key=Keys.SAVE).click().run()
    assert any(e.value.startswith("Not saved:") and "five fields" in e.value for e in at.error)
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(agent_schedules)).scalar() == 0


def test_viewers_see_the_editor_disabled(run_page, sqlite_url):
    seed(sqlite_url)
    at = run_page(sqlite_url, PAGE, env={"OPERATOR_EMAILS": "someone-else@example.com"})
    assert at.button(key=Keys.SAVE).disabled and at.button(key=Keys.CLEAR).disabled
    assert at.radio(key=Keys.KIND).disabled


def test_a_late_agent_is_alive_and_named_late_on_both_pages(run_page, sqlite_url):
    from lib.activity.agent_schedules import make_schedule, set_schedule
    from lib.core.identity import OPERATOR, Actor

    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        for minutes in (16.5, 11, 5.5):  # every ~5 minutes; the last beat 5.5 minutes ago
            record_beat(conn, "poller", now=now - timedelta(minutes=minutes))
        set_schedule(conn, "poller", make_schedule(period_s=300, grace_s=120), actor=Actor("ops", OPERATOR), now=now)
    at = run_page(sqlite_url, PAGE)
    assert [s.value for s in at.success] == ["All 1 agent alive · late (within grace): poller"]
    at = run_page(sqlite_url, "pages/overview.py")
    assert any(m.value.startswith(":orange-badge[:material/schedule: late] poller") for m in at.markdown)
