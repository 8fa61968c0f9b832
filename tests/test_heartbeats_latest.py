"""agent_statuses' newest-beat query (a loose index scan per agent) on SQLite and PostgreSQL: the
newest beat per agent, and whether the table keeps history for it (one row per beat) or one row."""
from datetime import timedelta

from lib.activity.heartbeats import agent_statuses, record_beat
from lib.core.timeutil import utcnow


def test_newest_beat_and_history_per_agent(engine):
    now = utcnow().replace(microsecond=0)
    with engine.begin() as conn:
        for minutes in (30, 20, 0):  # one row per beat, newest of all the table
            record_beat(conn, "beats-a-lot", now=now - timedelta(minutes=minutes))
        record_beat(conn, "one-row", now=now - timedelta(minutes=5))  # one row per agent, not the newest
        record_beat(conn, "also-one-row", now=now - timedelta(seconds=10))
        statuses = {s.agent_id: s for s in agent_statuses(conn, now=now)}
    assert set(statuses) == {"beats-a-lot", "one-row", "also-one-row"}
    assert statuses["beats-a-lot"].history and statuses["beats-a-lot"].last_beat_at == now
    assert not statuses["one-row"].history and statuses["one-row"].last_beat_at == now - timedelta(minutes=5)
    assert not statuses["also-one-row"].history and statuses["also-one-row"].alive
    assert not statuses["one-row"].alive
