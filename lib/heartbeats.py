"""Agent liveness (spec 2.4, DESIGN decision 7): alive when the newest beat is <= 60 s old.

The stored `status` column is never trusted. agent_heartbeats may hold one row per beat or one
row per agent (updated in place); with only one row we know liveness and the last beat, not
history, so up-since and availability are None then.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

import sqlalchemy as sa

from lib.db import distinct_values_cte
from lib.schema import agent_heartbeats as hb
from lib.timeutil import as_utc as _utc  # max() comes back untyped on SQLite

LIVENESS_THRESHOLD = timedelta(seconds=60)


def is_alive(last_beat_at: datetime | None, now: datetime, threshold: timedelta = LIVENESS_THRESHOLD) -> bool:
    return last_beat_at is not None and now - last_beat_at <= threshold


def beat_runs(beats: Sequence[datetime], threshold: timedelta = LIVENESS_THRESHOLD) -> list[tuple[datetime, datetime]]:
    """Unbroken runs of sorted beats as (first beat, last beat); a gap > threshold starts a new run."""
    runs: list[tuple[datetime, datetime]] = []
    for beat in beats:
        if runs and beat - runs[-1][1] <= threshold:
            runs[-1] = (runs[-1][0], beat)
        else:
            runs.append((beat, beat))
    return runs


def up_since(beats: Sequence[datetime], now: datetime, threshold: timedelta = LIVENESS_THRESHOLD) -> datetime | None:
    """Start of the current unbroken run of beats, or None when the agent is down."""
    runs = beat_runs(beats, threshold)
    if not runs or not is_alive(runs[-1][1], now, threshold):
        return None
    return runs[-1][0]


def availability(
    beats: Sequence[datetime], window_start: datetime, now: datetime, threshold: timedelta = LIVENESS_THRESHOLD
) -> float | None:
    """Share of [window_start, now] during which the agent counted as alive.

    Each beat covers the threshold after it, so gaps longer than the threshold count as down.
    The window starts no earlier than the first beat we know of (a new agent is not "down"
    before it existed). None when there is no beat to judge by.
    """
    if not beats:
        return None
    start = max(window_start, beats[0])
    if now <= start:
        return 1.0 if is_alive(beats[-1], now, threshold) else 0.0
    covered = timedelta(0)
    cursor = start
    for beat in beats:
        lo, hi = max(beat, cursor), min(beat + threshold, now)
        if hi > lo:
            covered += hi - lo
            cursor = hi
    return min(1.0, covered / (now - start))


@dataclass(frozen=True)
class AgentStatus:
    agent_id: str
    last_beat_at: datetime | None
    alive: bool
    up_since: datetime | None
    up_since_before_window: bool  # the current run began before the history we read
    availability_24h: float | None
    availability_7d: float | None
    history: bool  # False when the table keeps one row per agent
    beats_since: datetime | None = None  # the first beat of the last 7 days: availability covers no more


def agent_statuses(conn: sa.Connection, *, now: datetime, threshold: timedelta = LIVENESS_THRESHOLD) -> list[AgentStatus]:
    """One status per agent_id, down agents first, then by id."""
    latest = conn.execute(latest_beats_query()).all()
    window_7d = now - timedelta(days=7)
    beats = beats_by_agent(conn, since=window_7d - threshold, until=now, agent_ids=[r.agent_id for r in latest])
    out = []
    for row in latest:
        last = _utc(row.last)
        mine = beats.get(row.agent_id, [])
        history = bool(row.history)
        start = up_since(mine, now, threshold) if history else None
        out.append(
            AgentStatus(
                agent_id=row.agent_id,
                last_beat_at=last,
                alive=is_alive(last, now, threshold),
                up_since=start,
                up_since_before_window=bool(start and mine and start == mine[0] and start <= window_7d),
                availability_24h=availability(mine, now - timedelta(hours=24), now, threshold) if history else None,
                availability_7d=availability(mine, window_7d, now, threshold) if history else None,
                history=history,
                beats_since=mine[0] if history and mine else None,
            )
        )
    return sorted(out, key=lambda s: (s.alive, s.agent_id))


def latest_beats_query() -> sa.Select:
    """(agent_id, last, history) per agent, history = the table holds more than one row for it.
    Index probes per agent (ix_agent_heartbeats_agent_id_last_beat_at), not a GROUP BY over every beat."""
    agents = distinct_values_cte(hb.c.agent_id, "agents")
    last = sa.select(sa.func.max(hb.c.last_beat_at)).where(hb.c.agent_id == agents.c.v).scalar_subquery()
    # more than one row <=> a second-newest row exists: at most two index entries read per agent
    second = (sa.select(hb.c.last_beat_at).where(hb.c.agent_id == agents.c.v)  # index-only, like `last`
              .order_by(hb.c.last_beat_at.desc()).limit(1).offset(1).correlate(agents).scalar_subquery())
    history = second.is_not(None)
    return sa.select(agents.c.v.label("agent_id"), last.label("last"), history.label("history")).where(
        agents.c.v.is_not(None))


def beats_by_agent(conn: sa.Connection, *, since: datetime, until: datetime,
                   agent_ids: Sequence[str] | None = None) -> dict[str, list[datetime]]:
    """Sorted beat times per agent in [since, until].

    With `agent_ids` (agent_statuses passes the ones latest_beats_query found) the read is an index range
    per agent on ix_agent_heartbeats_agent_id_last_beat_at (agent_id = ANY(...) AND last_beat_at in the
    window, index-only): it reads the window's beats and nothing of the history before it."""
    if agent_ids is not None and not agent_ids:
        return {}
    stmt = sa.select(hb.c.agent_id, hb.c.last_beat_at).where(hb.c.last_beat_at >= since, hb.c.last_beat_at <= until)
    if agent_ids is not None:
        stmt = stmt.where(hb.c.agent_id.in_(list(agent_ids)))
    rows = conn.execute(stmt.order_by(hb.c.agent_id, hb.c.last_beat_at))
    out: dict[str, list[datetime]] = {}
    for agent_id, beat in rows:
        out.setdefault(agent_id, []).append(_utc(beat))
    return out


def newest_beat(conn: sa.Connection) -> datetime | None:
    """The newest beat of any agent: what the backend reads before opening an SSE chat (spec 3.5)."""
    return _utc(conn.execute(sa.select(sa.func.max(hb.c.last_beat_at))).scalar())


def record_beat(conn: sa.Connection, agent_id: str, *, now: datetime) -> None:
    """One row per beat, as the backend's POST /agent/heartbeat writes it."""
    conn.execute(
        sa.insert(hb).values(
            id=uuid.uuid4(), agent_id=agent_id, status="alive", last_beat_at=now, created_at=now, updated_at=now
        )
    )

