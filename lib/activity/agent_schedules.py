"""Agent schedules: when an agent is expected to beat, so liveness follows the agent's own rhythm.

An agent either beats every `period_s` seconds (a service) or runs at the times a cron expression
names (a nightly job), and is given `grace_s` more after each expected beat. With no schedule an
agent follows the default rule: a beat at least every 60 s.

After a beat at time b the agent is
  * up   until due(b)            -- b + period, or the first cron time after b,
  * late until deadline(b)       -- due(b) + grace,
  * down after that, until it beats again.
So an agent set to beat every 5 minutes that beats every 4 is never down, and one that misses its
nightly run is down from the run's time + grace until its next beat.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from croniter import croniter

from lib.core.audit import audit_row
from lib.core.identity import Actor, require_operator
from lib.core.schema import agent_schedules as sched_t
from lib.core.schema import audit_log
from lib.core.timeutil import as_utc, fmt_duration, iso

DEFAULT_PERIOD_S = 60  # the spec's rule: alive while the newest beat is at most 60 s old
MIN_PERIOD_S = 10
MAX_PERIOD_S = 31 * 86400
MAX_GRACE_S = 7 * 86400
MAX_AGENT_ID = 200


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says why and nothing was written."""


@dataclass(frozen=True)
class Schedule:
    period_s: int | None = DEFAULT_PERIOD_S  # None when cron is set
    grace_s: int = 0
    cron: str | None = None
    availability_target: float | None = None  # 0-1
    is_default: bool = False

    def due(self, beat: datetime) -> datetime:
        """When the next beat is expected after a beat at `beat`."""
        if self.cron:
            return as_utc(croniter(self.cron, beat).get_next(datetime))
        return beat + timedelta(seconds=self.period_s or DEFAULT_PERIOD_S)

    def deadline(self, beat: datetime) -> datetime:
        """Down after this time unless another beat came."""
        return self.due(beat) + timedelta(seconds=self.grace_s)

    def lookback(self, now: datetime) -> timedelta:
        """How far before a window's start a beat may still cover it (the longest wait after a beat)."""
        if not self.cron:
            return timedelta(seconds=(self.period_s or DEFAULT_PERIOD_S) + self.grace_s)
        it = croniter(self.cron, now)
        slots = [as_utc(it.get_next(datetime)) for _ in range(4)]
        gap = max(b - a for a, b in zip(slots, slots[1:]))
        return gap + timedelta(seconds=self.grace_s)

    def describe(self) -> str:
        what = (f"runs at `{self.cron}` (UTC)" if self.cron
                else f"beats every {fmt_duration(self.period_s or DEFAULT_PERIOD_S)}")
        grace = f" + {fmt_duration(self.grace_s)} grace" if self.grace_s else ""
        return what + grace + (" (default)" if self.is_default else "")


DEFAULT_SCHEDULE = Schedule(is_default=True)


def as_schedule(rule: Schedule | timedelta | None) -> Schedule:
    """A Schedule from a Schedule, a plain threshold (a beat covers that long) or None (the default)."""
    if rule is None:
        return DEFAULT_SCHEDULE
    if isinstance(rule, Schedule):
        return rule
    return Schedule(period_s=int(rule.total_seconds()), grace_s=0)


def deadlines(beats: Iterable[datetime], schedule: Schedule) -> Iterator[tuple[datetime, datetime]]:
    """(beat, deadline) for sorted beats. A cron slot is computed once per run, not per beat: the first
    cron time after a beat is the same for every later beat before that time."""
    grace = timedelta(seconds=schedule.grace_s)
    slot: datetime | None = None
    for beat in beats:
        if schedule.cron:
            if slot is None or beat >= slot:
                slot = schedule.due(beat)
            yield beat, slot + grace
        else:
            yield beat, schedule.deadline(beat)


def liveness(last_beat_at: datetime | None, now: datetime, schedule: Schedule = DEFAULT_SCHEDULE) -> str:
    """'up', 'late' (past the expected beat, within grace) or 'down' (never beat, or past the grace)."""
    if last_beat_at is None:
        return "down"
    due = schedule.due(last_beat_at)
    if now <= due:
        return "up"
    return "late" if now <= due + timedelta(seconds=schedule.grace_s) else "down"


def make_schedule(*, period_s: int | None = None, grace_s: int | None = 0, cron: str | None = None,
                  availability_target: float | None = None) -> Schedule:
    """A checked Schedule: exactly one of a period and a cron expression, a grace within a week, a target
    between 0 and 100 % (exclusive of 0)."""
    cron = (cron or "").strip() or None
    if (period_s is None) == (cron is None):
        raise ScheduleError("Give either a period or a cron schedule (one of them, not both).")
    if period_s is not None and not MIN_PERIOD_S <= int(period_s) <= MAX_PERIOD_S:
        raise ScheduleError(f"The period must be between {MIN_PERIOD_S} s and 31 days.")
    if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        raise ScheduleError(f"{cron!r} is not a cron expression of five fields (minute hour day month weekday).")
    grace_s = int(grace_s or 0)
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise ScheduleError("The grace time must be between 0 and 7 days.")
    if availability_target is not None and not 0 < float(availability_target) <= 1:
        raise ScheduleError("The availability target must be above 0 % and at most 100 %.")
    return Schedule(period_s=None if period_s is None else int(period_s), grace_s=grace_s, cron=cron,
                    availability_target=None if availability_target is None else float(availability_target))


def _from_row(r) -> Schedule:
    """Checked again on read: a row someone else's tool wrote badly raises ScheduleError."""
    return make_schedule(period_s=r.period_s, grace_s=r.grace_s, cron=r.cron,
                         availability_target=r.availability_target)


def load_schedules(conn: sa.Connection) -> dict[str, Schedule]:
    """Every agent's schedule that an operator set; an agent not in it follows DEFAULT_SCHEDULE."""
    out = {}
    for r in conn.execute(sa.select(sched_t)):
        try:
            out[r.agent_id] = _from_row(r)
        except ValueError:  # a row someone else's tool broke: the agent keeps the default
            continue
    return out


def schedule_rows(conn: sa.Connection) -> list[dict]:
    """The schedules operators set, for the page: agent, what it means, target, who set it and when."""
    out = []
    for r in conn.execute(sa.select(sched_t).order_by(sched_t.c.agent_id)):
        try:
            what = _from_row(r).describe()
        except ValueError:
            what = "unreadable (the default rule applies)"
        out.append({"agent_id": r.agent_id, "schedule": what, "availability_target": r.availability_target,
                    "updated_by": r.updated_by, "updated_at": as_utc(r.updated_at)})
    return out


def _details(agent_id: str, s: Schedule | None) -> dict:
    if s is None:
        return {"agent_id": agent_id, "schedule": "default"}
    return {"agent_id": agent_id, "period_s": s.period_s, "cron": s.cron, "grace_s": s.grace_s,
            "availability_target": s.availability_target}


def set_schedule(conn: sa.Connection, agent_id: str, schedule: Schedule, *, actor: Actor, now: datetime) -> None:
    """Set (or replace) an agent's schedule; audited with the old and the new values."""
    require_operator(actor, "change agent schedules")
    agent_id = (agent_id or "").strip()
    if not agent_id or len(agent_id) > MAX_AGENT_ID:
        raise ScheduleError("Which agent? Give its agent_id.")
    schedule = make_schedule(period_s=schedule.period_s, grace_s=schedule.grace_s, cron=schedule.cron,
                             availability_target=schedule.availability_target)
    old = conn.execute(sa.select(sched_t).where(sched_t.c.agent_id == agent_id)).first()
    values = dict(period_s=schedule.period_s, cron=schedule.cron, grace_s=schedule.grace_s,
                  availability_target=schedule.availability_target, updated_by=actor.name, updated_at=now)
    if old is None:
        conn.execute(sa.insert(sched_t).values(agent_id=agent_id, **values))
    else:
        conn.execute(sa.update(sched_t).where(sched_t.c.agent_id == agent_id).values(**values))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="agent_schedule_set", action="set_schedule", resource_type="agent_schedules",
        resource_id=agent_id, now=now, user_id=actor.name, success=True,
        details={**_details(agent_id, schedule), "before": _details(agent_id, None if old is None else _from_row(old)),
                 "at": iso(now)})])


def clear_schedule(conn: sa.Connection, agent_id: str, *, actor: Actor, now: datetime) -> bool:
    """Back to the default rule; audited. False when the agent had no schedule."""
    require_operator(actor, "change agent schedules")
    old = conn.execute(sa.select(sched_t).where(sched_t.c.agent_id == agent_id)).first()
    if old is None:
        return False
    conn.execute(sa.delete(sched_t).where(sched_t.c.agent_id == agent_id))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="agent_schedule_cleared", action="clear_schedule", resource_type="agent_schedules",
        resource_id=agent_id, now=now, user_id=actor.name, success=True,
        details={"agent_id": agent_id, "before": _details(agent_id, _from_row(old)), "at": iso(now)})])
    return True
