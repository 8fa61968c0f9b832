"""Agent Status page through AppTest: alive, down, one-row-per-agent and empty data."""
import re
from datetime import timedelta

import sqlalchemy as sa

from lib.activity.heartbeats import record_beat
from lib.core.db import init_db, make_engine
from lib.core.schema import agent_heartbeats
from lib.core.text import md_escape
from lib.core.timeutil import utcnow
from lib.ui.agent_status import Keys

PAGE = "pages/agent_status.py"


def seed_beats(url, agents_minutes_ago: dict[str, int], history_minutes: int = 90):
    eng = make_engine(url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        for agent, last in agents_minutes_ago.items():
            for minute in range(last, history_minutes):
                record_beat(conn, agent, now=now - timedelta(minutes=minute, seconds=5))
    eng.dispose()


def metrics(at):
    return {m.label: m.value for m in at.metric}


def test_all_alive(run_page, sqlite_url):
    seed_beats(sqlite_url, {"a1": 0, "a2": 0})
    at = run_page(sqlite_url, PAGE)
    assert [s.value for s in at.success] == ["All 2 agents alive"]
    assert not at.error
    lines = [m.value for m in at.markdown if m.value.startswith("Availability")]
    # 90 minutes of beats: both figures say over what span they were measured
    assert len(lines) == 2 and all(re.fullmatch(
        r"Availability · 24 h \(over 1 h (29|30) min\) \*\*100\.0 %\*\* · 7 d \(over 1 h (29|30) min\) \*\*100\.0 %\*\*", line)
        for line in lines), lines


def test_one_down_is_named_first(run_page, sqlite_url):
    seed_beats(sqlite_url, {"ok-agent": 0, "dead-agent": 30})
    at = run_page(sqlite_url, PAGE)
    assert [e.value for e in at.error] == ["1 of 2 agents down: " + md_escape("dead-agent")]  # escaped Markdown source
    last_beats = [m.value for m in at.metric if m.label == "Last beat"]
    assert last_beats[0].startswith("30 min")  # down agents first
    assert last_beats[1].endswith("s ago")


def test_one_row_per_agent_table(run_page, sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:  # someone else's backend updating one row per agent in place
        conn.execute(sa.insert(agent_heartbeats), [
            {"agent_id": "solo", "status": "down", "last_beat_at": now - timedelta(seconds=10)},
            {"agent_id": "stale", "status": "alive", "last_beat_at": now - timedelta(minutes=5)},
        ])
    eng.dispose()
    at = run_page(sqlite_url, PAGE)
    # the stored status column is not trusted: liveness comes from the beat's age
    assert [e.value for e in at.error] == ["1 of 2 agents down: " + md_escape("stale")]
    captions = " ".join(c.value for c in at.caption)
    assert "Only the latest beat is stored" in captions


def test_timeline_window_follows_the_picker(run_page, sqlite_url):
    seed_beats(sqlite_url, {"old-agent": 120}, history_minutes=180)  # beats from 3 h to 2 h ago
    at = run_page(sqlite_url, PAGE)
    assert not at.info  # the default 24 h window holds the beats
    at.button_group(key=Keys.WINDOW).set_value("1 h").run()
    assert [i.value for i in at.info] == ["No heartbeats in the last 1 h."]


def test_empty_state(run_page, sqlite_url):
    init_db(make_engine(sqlite_url))
    at = run_page(sqlite_url, PAGE)
    assert "No heartbeats yet" in at.info[0].value
    assert not at.error


def test_works_on_postgresql(run_page, pg_server):
    import uuid

    url = pg_server.create_database("app_" + uuid.uuid4().hex[:8])
    seed_beats(url, {"pg-agent": 0})
    at = run_page(url, PAGE)
    assert [s.value for s in at.success] == ["All 1 agent alive"]


def test_a_beat_just_now_is_never_shown_in_the_future(run_page, sqlite_url):
    """The page rounds its cached 'now' down; relative times are taken from the real time."""
    eng = make_engine(sqlite_url)
    init_db(eng)
    with eng.begin() as conn:
        record_beat(conn, "fresh", now=utcnow())
    eng.dispose()
    at = run_page(sqlite_url, PAGE)
    (last,) = [m.value for m in at.metric if m.label == "Last beat"]
    assert last.endswith(" s ago") and not last.startswith("in ")
