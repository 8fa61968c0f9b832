"""Scale with history: agent availability reads the window's beats only (an index range per agent)."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lib.activity.heartbeats import agent_statuses, beats_by_agent
from lib.core.schema import agent_heartbeats as hb

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def _beats(conn, agents=("a", "b"), days=60, every_s=120):
    rows, t = [], NOW - timedelta(days=days)
    while t <= NOW:
        rows += [{"id": uuid.uuid4(), "agent_id": a, "status": "alive", "last_beat_at": t, "created_at": t,
                  "updated_at": t} for a in agents]
        t += timedelta(seconds=every_s)
    conn.execute(sa.insert(hb), rows)


def test_window_read_equals_the_unrestricted_read(engine):
    with engine.begin() as conn:
        _beats(conn, days=10, every_s=600)
        since = NOW - timedelta(days=2)
        assert beats_by_agent(conn, since=since, until=NOW, agent_ids=["a", "b"]) == beats_by_agent(
            conn, since=since, until=NOW)
        assert beats_by_agent(conn, since=since, until=NOW, agent_ids=[]) == {}
        statuses = agent_statuses(conn, now=NOW)
        assert [s.agent_id for s in statuses] == ["a", "b"] and all(s.history for s in statuses)


def test_the_window_is_an_index_range_on_postgresql(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    with engine.begin() as conn:
        _beats(conn)  # 60 days, 2 agents: 86,000 beats
        conn.execute(sa.text("ANALYZE agent_heartbeats"))
        stmt = (sa.select(hb.c.agent_id, hb.c.last_beat_at)
                .where(hb.c.last_beat_at >= NOW - timedelta(days=7), hb.c.last_beat_at <= NOW,
                       hb.c.agent_id.in_(["a", "b"]))
                .order_by(hb.c.agent_id, hb.c.last_beat_at))
        sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql)))
    # either index serves it (the planner picks); what matters is that the scan is bounded by the window
    assert "Seq Scan" not in plan, plan
    assert any("Index Cond" in line and "last_beat_at >=" in line for line in plan.splitlines()), plan
