"""Time buckets in SQL (events per hour/day), the one place where the dialects differ.

Buckets are UTC hours/days; the pages convert the bucket start to the display timezone.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_SQLITE_FORMAT = {"hour": "%Y-%m-%d %H:00:00", "day": "%Y-%m-%d 00:00:00"}


def bucket_expr(column: Any, unit: str, dialect_name: str) -> sa.ColumnElement[Any]:
    """A SQL expression giving the start of the UTC hour/day of `column`."""
    if unit not in BUCKETS:
        raise ValueError(f"unknown bucket {unit!r}; expected one of {', '.join(BUCKETS)}")
    if dialect_name == "postgresql":
        return sa.func.date_trunc(unit, sa.func.timezone("UTC", column))
    return sa.func.strftime(_SQLITE_FORMAT[unit], column)


def bucket_value(value: datetime | str) -> datetime:
    """Aware UTC datetime from what bucket_expr returned (naive datetime on PG, text on SQLite)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def bucket_for_range(since: datetime | None, until: datetime) -> str:
    """Hourly bars up to two days, daily bars beyond."""
    if since is None or until - since > timedelta(days=2):
        return "day"
    return "hour"
