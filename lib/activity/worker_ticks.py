"""worker_ticks: one row per worker tick, so the pages can tell whether the worker runs."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from croniter import croniter

from lib.core.redact import redact_text
from lib.core.schema import worker_ticks as wt
from lib.core.timeutil import as_utc


def record_tick_start(conn: sa.Connection, *, now: datetime, host: str | None, pid: int | None) -> uuid.UUID:
    tick_id = uuid.uuid4()
    conn.execute(sa.insert(wt).values(id=tick_id, host=host, pid=pid, started_at=now, claimed=0, sent=0, failed=0,
                                      dlq=0, rescued=0))
    return tick_id


def record_tick_finish(conn: sa.Connection, tick_id: uuid.UUID, *, now: datetime, claimed: int, sent: int,
                       failed: int, dlq: int, rescued: int, error: str | None) -> None:
    conn.execute(sa.update(wt).where(wt.c.id == tick_id).values(
        finished_at=now, claimed=claimed, sent=sent, failed=failed, dlq=dlq, rescued=rescued,
        error=redact_text(error)))  # no credential in worker_ticks.error


def prune_ticks(conn: sa.Connection, *, before: datetime) -> int:
    """Keep the table small: ticks older than `before` go."""
    return conn.execute(sa.delete(wt).where(wt.c.started_at < before)).rowcount


def missed_schedule(last_started_at: datetime | None, *, now: datetime, cron: str) -> bool:
    """True when two scheduled ticks have passed since the last tick started (or none ever ran)."""
    if last_started_at is None:
        return True
    it = croniter(cron, last_started_at)
    it.get_next(datetime)
    second = it.get_next(datetime)
    return as_utc(second) < now


def worker_health(conn: sa.Connection, *, now: datetime, cron: str) -> dict[str, Any]:
    """The newest tick and whether the schedule was missed, for the pages.

    {last_started_at, last_finished_at, running, claimed, sent, failed, dlq, rescued,
     last_error, host, pid, missed, never_ran}; counts and errors are those of the newest tick.
    `last_error` is the newest tick's error (None when it went well).
    """
    row = conn.execute(sa.select(wt).order_by(wt.c.started_at.desc()).limit(1)).first()
    if row is None:
        return {"last_started_at": None, "last_finished_at": None, "running": False, "claimed": None, "sent": None,
                "failed": None, "dlq": None, "rescued": None, "last_error": None, "host": None, "pid": None,
                "missed": True, "never_ran": True}
    started = as_utc(row.started_at)
    return {
        "last_started_at": started,
        "last_finished_at": as_utc(row.finished_at),
        "running": row.finished_at is None,
        "claimed": row.claimed, "sent": row.sent, "failed": row.failed, "dlq": row.dlq, "rescued": row.rescued,
        "last_error": redact_text(row.error),
        "host": row.host, "pid": row.pid,
        "missed": missed_schedule(started, now=now, cron=cron),
        "never_ran": False,
    }
