"""UTC helpers: everything inside is timezone-aware UTC; pure functions take `now`."""
from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str | None) -> datetime | None:
    """Aware UTC from a datetime or ISO-8601 string; naive values are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def floor_time(value: datetime, seconds: int) -> datetime:
    """Round down to a multiple of `seconds`: a cache key that changes only every few seconds."""
    epoch = int(value.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def fmt_ago(value: datetime | None, now: datetime) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'; 'in 4 min' for future times; '—' for None."""
    if value is None:
        return "—"
    delta = (now - value).total_seconds()
    text = fmt_duration(abs(delta))
    return f"in {text}" if delta < 0 else f"{text} ago"


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400 * 2:
        hours, rest = divmod(seconds, 3600)
        return f"{hours} h {rest // 60} min" if hours < 10 and rest >= 60 else f"{hours} h"
    return f"{seconds // 86400} d"


def fmt_local(value: datetime | None, tz: tzinfo | None, with_seconds: bool = True) -> str:
    """Absolute time in the display timezone, e.g. '2026-11-25 13:04:05 CET'."""
    if value is None:
        return "—"
    local = value.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if with_seconds else "%Y-%m-%d %H:%M %Z")


_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def cron_in_words(expr: str) -> str | None:
    """'0 8 * * 1' -> 'every Monday at 08:00'; '30 6 * * *' -> 'every day at 06:30'. None for anything
    else (ranges, steps, lists, a day of the month): the caller shows the expression itself."""
    parts = (expr or "").split()
    if len(parts) != 5 or parts[2:4] != ["*", "*"] or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    minute, hour, dow = int(parts[0]), int(parts[1]), parts[4]
    if minute > 59 or hour > 23:
        return None
    at = f"{hour:02d}:{minute:02d}"
    if dow == "*":
        return f"every day at {at}"
    if dow.isdigit() and int(dow) <= 7:
        return f"every {_DAYS[int(dow)]} at {at}"
    return None
