"""Agent liveness: alive while the newest beat is within the agent's
schedule (lib.activity.agent_schedules): by default at most 60 s old; an agent with a period or a cron schedule
is alive until its next expected beat plus its grace.

The stored `status` column is never trusted. agent_heartbeats may hold one row per beat or one
row per agent (updated in place); with only one row we know liveness and the last beat, not
history, so up-since and availability are None then.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from lib.activity.agent_schedules import DEFAULT_SCHEDULE, Schedule, as_schedule, deadlines, liveness, load_schedules
from lib.alerts.maintenance import load_windows, maintenance_until
from lib.core.db import distinct_values_cte
from lib.core.schema import agent_heartbeats as hb
from lib.core.timeutil import as_utc as _utc  # max() comes back untyped on SQLite

LIVENESS_THRESHOLD = timedelta(seconds=60)


Rule = Schedule | timedelta  # a schedule, or a plain threshold (each beat covers that long)


def is_alive(last_beat_at: datetime | None, now: datetime, threshold: Rule = LIVENESS_THRESHOLD) -> bool:
    """Up or late (within grace): not down."""
    return liveness(last_beat_at, now, as_schedule(threshold)) != "down"


def beat_runs(beats: Sequence[datetime], threshold: Rule = LIVENESS_THRESHOLD) -> list[tuple[datetime, datetime]]:
    """Unbroken runs of sorted beats as (first beat, last beat); a beat after the previous beat's
    deadline (the threshold, or the schedule's next expected beat + grace) starts a new run."""
    runs: list[tuple[datetime, datetime]] = []
    deadline = None
    for beat, next_deadline in deadlines(beats, as_schedule(threshold)):
        if runs and beat <= deadline:
            runs[-1] = (runs[-1][0], beat)
        else:
            runs.append((beat, beat))
        deadline = next_deadline
    return runs


def up_since(beats: Sequence[datetime], now: datetime, threshold: Rule = LIVENESS_THRESHOLD) -> datetime | None:
    """Start of the current unbroken run of beats, or None when the agent is down."""
    runs = beat_runs(beats, threshold)
    if not runs or not is_alive(runs[-1][1], now, threshold):
        return None
    return runs[-1][0]


def availability(beats: Sequence[datetime], window_start: datetime, now: datetime,
                 threshold: Rule = LIVENESS_THRESHOLD) -> float | None:
    """Share of [window_start, now] during which the agent was not down.

    Each beat covers the time until its deadline (the threshold after it, or the schedule's next
    expected beat + grace), so a nightly agent asleep between its runs is not down, and one that
    missed a run is down from the run's time + grace until it beats again. The window starts no
    earlier than the first beat we know of (a new agent is not "down" before it existed). None when
    there is no beat to judge by.
    """
    if not beats:
        return None
    start = max(window_start, beats[0])
    if now <= start:
        return 1.0 if is_alive(beats[-1], now, threshold) else 0.0
    covered = timedelta(0)
    cursor = start
    for beat, deadline in deadlines(beats, as_schedule(threshold)):
        lo, hi = max(beat, cursor), min(deadline, now)
        if hi > lo:
            covered += hi - lo
            cursor = hi
    return min(1.0, covered / (now - start))


@dataclass(frozen=True)
class AgentStatus:
    agent_id: str
    last_beat_at: datetime | None
    alive: bool  # up or late: not down
    up_since: datetime | None
    up_since_before_window: bool  # the current run began before the history we read
    availability_24h: float | None
    availability_7d: float | None
    history: bool  # False when the table keeps one row per agent
    state: str = "up"  # up | late | down (lib.activity.agent_schedules.liveness)
    schedule: Schedule = DEFAULT_SCHEDULE
    due_at: datetime | None = None  # the next beat is expected by then (late after, down after the grace)
    maintenance_until: datetime | None = None  # a maintenance window covers the agent until then
    beats_since: datetime | None = None  # the first beat of the last 7 days: availability covers no more

    @property
    def below_target(self) -> bool:
        """The 7-day availability misses the agent's target (False when there is no target or no history)."""
        target = self.schedule.availability_target
        return target is not None and self.availability_7d is not None and self.availability_7d < target


def agent_statuses(conn: sa.Connection, *, now: datetime, threshold: Rule | None = None,
                   schedules: dict[str, Schedule] | None = None) -> list[AgentStatus]:
    """One status per agent_id, down agents first, then by id. Each agent is judged by its schedule
    (read from agent_schedules unless given); agents without one by `threshold` (default: 60 s)."""
    latest = conn.execute(latest_beats_query()).all()
    if schedules is None:
        schedules = load_schedules(conn)
    default = as_schedule(threshold)
    rules = {r.agent_id: schedules.get(r.agent_id, default) for r in latest}
    windows = load_windows(conn, now=now)
    window_7d = now - timedelta(days=7)
    lookback = max((rule.lookback(now) for rule in rules.values()), default=LIVENESS_THRESHOLD)
    beats = beats_by_agent(conn, since=window_7d - lookback, until=now, agent_ids=[r.agent_id for r in latest])
    out = []
    for row in latest:
        rule = rules[row.agent_id]
        last = _utc(row.last)
        mine = beats.get(row.agent_id, [])
        history = bool(row.history)
        start = up_since(mine, now, rule) if history else None
        state = liveness(last, now, rule)
        out.append(
            AgentStatus(
                agent_id=row.agent_id,
                last_beat_at=last,
                alive=state != "down",
                up_since=start,
                up_since_before_window=bool(start and mine and start == mine[0] and start <= window_7d),
                availability_24h=availability(mine, now - timedelta(hours=24), now, rule) if history else None,
                availability_7d=availability(mine, window_7d, now, rule) if history else None,
                history=history,
                state=state,
                schedule=rule,
                due_at=None if last is None else rule.due(last),
                maintenance_until=maintenance_until(windows, now, agent_id=row.agent_id),
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
    """The newest beat of any agent: what the backend reads before opening an SSE chat."""
    return _utc(conn.execute(sa.select(sa.func.max(hb.c.last_beat_at))).scalar())


def record_beat(conn: sa.Connection, agent_id: str, *, now: datetime) -> None:
    """One row per beat, as the backend's POST /agent/heartbeat writes it."""
    conn.execute(
        sa.insert(hb).values(
            id=uuid.uuid4(), agent_id=agent_id, status="alive", last_beat_at=now, created_at=now, updated_at=now
        )
    )

