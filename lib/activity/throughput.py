"""Throughput history from worker_ticks: sent, failed and dead-lettered per hour, and tick duration.

One GROUP BY over worker_ticks (ix_worker_ticks_started_at), every hour of the window filled in
(hours without a tick are zeros, so a stopped worker shows as a gap, not as a shorter axis).
worker_ticks keeps 7 days (the worker prunes older ticks), so 7 d is the longest window.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.core.schema import worker_ticks as wt
from lib.core.timebuckets import bucket_expr, bucket_value

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
HOUR = timedelta(hours=1)


def _duration_s(dialect_name: str):
    """finished_at - started_at in seconds: the one place where the dialects differ here."""
    if dialect_name == "postgresql":
        return sa.func.extract("epoch", wt.c.finished_at - wt.c.started_at)
    return (sa.func.julianday(wt.c.finished_at) - sa.func.julianday(wt.c.started_at)) * 86400.0


def throughput_history(conn: sa.Connection, *, now: datetime, window: str = "24h") -> list[dict[str, Any]]:
    """[{hour, ticks, sent, failed, dlq, avg_duration_s, max_duration_s}] for each UTC hour of the
    window, oldest first; the last hour is the current (partial) one. Durations are None for an hour
    without a finished tick. Counts are those the ticks recorded (all workers, all accounts)."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {', '.join(WINDOWS)}")
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = current - WINDOWS[window] + HOUR
    dialect = conn.dialect.name
    bucket = bucket_expr(wt.c.started_at, "hour", dialect).label("hour")
    duration = _duration_s(dialect)
    stmt = (
        sa.select(bucket, sa.func.count().label("ticks"),
                  sa.func.coalesce(sa.func.sum(wt.c.sent), 0).label("sent"),
                  sa.func.coalesce(sa.func.sum(wt.c.failed), 0).label("failed"),
                  sa.func.coalesce(sa.func.sum(wt.c.dlq), 0).label("dlq"),
                  sa.func.avg(duration).label("avg_duration_s"), sa.func.max(duration).label("max_duration_s"))
        .where(wt.c.started_at >= first, wt.c.started_at < current + HOUR)
        .group_by(bucket)
    )
    found = {bucket_value(r.hour): r for r in conn.execute(stmt)}
    out = []
    hour = first
    while hour <= current:
        r = found.get(hour)
        out.append({
            "hour": hour,
            "ticks": int(r.ticks) if r else 0,
            "sent": int(r.sent) if r else 0,
            "failed": int(r.failed) if r else 0,
            "dlq": int(r.dlq) if r else 0,
            "avg_duration_s": None if r is None or r.avg_duration_s is None else float(r.avg_duration_s),
            "max_duration_s": None if r is None or r.max_duration_s is None else float(r.max_duration_s),
        })
        hour += HOUR
    return out
