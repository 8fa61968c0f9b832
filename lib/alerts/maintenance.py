"""Maintenance windows: planned time during which an agent, an account or everything is expected to be
down or noisy, so nobody is paged for it.

While a window covers an agent or an account, open_or_update_alert raises none of the agent and queue
alert types for it (MUTED_TYPES), the watchdog raises no agent_down, and notification detection holds
back openings and digests as a silence would. A window is either one-off (starts_at .. ends_at) or
recurring (every time its cron expression names, for duration_s, from starts_at on and until ends_at
when that is set). Ending a window early (ended_at) keeps its row, so timelines still show it.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from croniter import croniter

from lib.core.audit import audit_row
from lib.core.identity import Actor, require_operator
from lib.core.schema import audit_log
from lib.core.schema import maintenance_windows as mw
from lib.core.timeutil import as_utc, fmt_duration, iso

# the agent and queue alert types a window mutes; the rest (token expiry, metric anomalies, the Graph
# version warning) are about things a maintenance does not explain
MUTED_TYPES = ("agent_down", "auth_failure", "rate_limit", "content_violation", "sync_failure",
               "account_restricted", "slo_burn")
MAX_ONE_OFF = timedelta(days=31)
MIN_DURATION_S = 60
MAX_DURATION_S = 7 * 86400
MAX_OCCURRENCES = 500  # a timeline shows at most this many occurrences of one window


class MaintenanceError(ValueError):
    """A window that cannot be used; the message says why and nothing was written."""


@dataclass(frozen=True)
class MaintenanceWindow:
    id: uuid.UUID
    agent_id: str | None
    business_account_id: uuid.UUID | None
    starts_at: datetime
    ends_at: datetime | None
    cron: str | None
    duration_s: int | None
    reason: str
    created_by: str
    created_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None

    @property
    def scope(self) -> str:
        if self.agent_id is not None:
            return "agent"
        return "account" if self.business_account_id is not None else "all"

    def covers(self, *, agent_id: str | None = None, business_account_id=None) -> bool:
        """A window of everything covers all; an agent's window its agent; an account's window its account."""
        if self.agent_id is not None:
            return agent_id == self.agent_id
        if self.business_account_id is not None:
            return business_account_id is not None and str(business_account_id) == str(self.business_account_id)
        return True

    def _clip(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        if self.ended_at is not None:
            end = min(end, self.ended_at)
        return (start, end) if end > start else None

    def occurrence_at(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The occurrence (start, end) that covers `now`, or None."""
        if now < self.starts_at:
            return None
        if not self.cron:
            span = self._clip(self.starts_at, self.ends_at)
            return span if span and span[0] <= now < span[1] else None
        start = as_utc(croniter(self.cron, now + timedelta(seconds=1)).get_prev(datetime))
        if self.ends_at and start >= self.ends_at:
            return None
        span = self._clip(max(start, self.starts_at), start + timedelta(seconds=self.duration_s))
        return span if span and span[0] <= now < span[1] else None

    def occurrences(self, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
        """The occurrences overlapping [since, until], oldest first (at most MAX_OCCURRENCES)."""
        if not self.cron:
            span = self._clip(self.starts_at, self.ends_at)
            return [span] if span and span[0] < until and span[1] > since else []
        out = []
        it = croniter(self.cron, max(since, self.starts_at) - timedelta(seconds=self.duration_s))
        while len(out) < MAX_OCCURRENCES:
            start = as_utc(it.get_next(datetime))
            if start >= until or (self.ends_at and start >= self.ends_at) or (self.ended_at and start >= self.ended_at):
                break
            span = self._clip(max(start, self.starts_at), start + timedelta(seconds=self.duration_s))
            if span and span[1] > since:
                out.append(span)
        return out

    def next_start(self, now: datetime) -> datetime | None:
        """When the next occurrence after `now` begins (None when there is none)."""
        if self.ended_at is not None and self.ended_at <= now:
            return None
        if not self.cron:
            return self.starts_at if self.starts_at > now else None
        start = as_utc(croniter(self.cron, max(now, self.starts_at - timedelta(seconds=1))).get_next(datetime))
        return None if self.ends_at and start >= self.ends_at else start

    def describe(self) -> str:
        if self.cron:
            until = f" until {self.ends_at:%Y-%m-%d %H:%M} UTC" if self.ends_at else ""
            return f"at `{self.cron}` (UTC) for {fmt_duration(self.duration_s)}{until}"
        return f"{self.starts_at:%Y-%m-%d %H:%M} – {self.ends_at:%Y-%m-%d %H:%M} UTC"


def maintenance_until(windows: Iterable[MaintenanceWindow], now: datetime, *, agent_id: str | None = None,
                      business_account_id=None) -> datetime | None:
    """The end of the latest active occurrence covering the agent or account at `now`, or None."""
    ends = [span[1] for w in windows if w.covers(agent_id=agent_id, business_account_id=business_account_id)
            for span in [w.occurrence_at(now)] if span is not None]
    return max(ends, default=None)


def check_window(*, starts_at: datetime, ends_at: datetime | None, cron: str | None, duration_s: int | None,
                 agent_id: str | None, business_account_id, reason: str) -> None:
    """Raise MaintenanceError naming what is wrong."""
    if agent_id is not None and business_account_id is not None:
        raise MaintenanceError("A window covers one agent, one account, or everything: not an agent and an account.")
    if not (reason or "").strip():
        raise MaintenanceError("Say why (the reason is shown on the pages and audited).")
    if cron:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise MaintenanceError(f"{cron!r} is not a cron expression of five fields (minute hour day month weekday).")
        if duration_s is None or not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
            raise MaintenanceError("A recurring window lasts between 1 minute and 7 days.")
        if ends_at is not None and ends_at <= starts_at:
            raise MaintenanceError("The recurrence must end after it starts.")
        return
    if ends_at is None or ends_at <= starts_at:
        raise MaintenanceError("The window must end after it starts.")
    if ends_at - starts_at > MAX_ONE_OFF:
        raise MaintenanceError("A one-off window lasts at most 31 days; use a recurring one for regular work.")


def _from_row(r) -> MaintenanceWindow:
    return MaintenanceWindow(r.id, r.agent_id, r.business_account_id, as_utc(r.starts_at), as_utc(r.ends_at),
                             r.cron, r.duration_s, r.reason, r.created_by, as_utc(r.created_at),
                             as_utc(r.ended_at), r.ended_by)


def load_windows(conn: sa.Connection, *, now: datetime, since: datetime | None = None) -> list[MaintenanceWindow]:
    """Windows that may cover any time from `since` (default: now) on: not ended before it, and, one-off
    or with an end, not over before it. Unreadable rows are left out."""
    since = since or now
    rows = conn.execute(sa.select(mw).where(
        sa.or_(mw.c.ended_at.is_(None), mw.c.ended_at > since),
        sa.or_(mw.c.ends_at.is_(None), mw.c.ends_at > since)).order_by(mw.c.starts_at, mw.c.id))
    out = []
    for r in rows:
        try:
            w = _from_row(r)
            check_window(starts_at=w.starts_at, ends_at=w.ends_at, cron=w.cron, duration_s=w.duration_s,
                         agent_id=w.agent_id, business_account_id=w.business_account_id, reason=w.reason)
        except (ValueError, TypeError):
            continue
        out.append(w)
    return out


def in_maintenance(conn: sa.Connection, *, now: datetime, agent_id: str | None = None,
                   business_account_id=None) -> datetime | None:
    """Until when a window covers this agent or account now (None: not in maintenance)."""
    return maintenance_until(load_windows(conn, now=now), now, agent_id=agent_id,
                             business_account_id=business_account_id)


def _details(w: MaintenanceWindow) -> dict:
    return {"window_id": str(w.id), "agent_id": w.agent_id,
            "business_account_id": None if w.business_account_id is None else str(w.business_account_id),
            "starts_at": iso(w.starts_at), "ends_at": iso(w.ends_at) if w.ends_at else None, "cron": w.cron,
            "duration_s": w.duration_s, "reason": w.reason}


def create_window(conn: sa.Connection, *, actor: Actor, now: datetime, reason: str, starts_at: datetime | None = None,
                  ends_at: datetime | None = None, cron: str | None = None, duration_s: int | None = None,
                  agent_id: str | None = None, business_account_id: uuid.UUID | None = None) -> MaintenanceWindow:
    """A one-off (starts_at .. ends_at) or recurring (cron + duration_s) window; audited."""
    require_operator(actor, "plan maintenance windows")
    agent_id = (agent_id or "").strip() or None
    cron = (cron or "").strip() or None
    reason = (reason or "").strip()[:500]
    starts_at = starts_at or now
    check_window(starts_at=starts_at, ends_at=ends_at, cron=cron, duration_s=duration_s, agent_id=agent_id,
                 business_account_id=business_account_id, reason=reason)
    w = MaintenanceWindow(uuid.uuid4(), agent_id, business_account_id, starts_at, ends_at, cron,
                          None if not cron else int(duration_s), reason, actor.name, now)
    conn.execute(sa.insert(mw).values(id=w.id, agent_id=agent_id, business_account_id=business_account_id,
                                      starts_at=starts_at, ends_at=ends_at, cron=cron, duration_s=w.duration_s,
                                      reason=reason, created_by=actor.name, created_at=now))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="maintenance_window_created", action="create_window", resource_type="maintenance_windows",
        resource_id=str(w.id), now=now, user_id=actor.name, success=True, details=_details(w))])
    return w


def end_window(conn: sa.Connection, window_id, *, actor: Actor, now: datetime) -> bool:
    """End a window now (a planned one is cancelled); audited. False when it had already ended."""
    require_operator(actor, "end maintenance windows")
    wid = uuid.UUID(str(window_id))
    row = conn.execute(sa.select(mw).where(mw.c.id == wid)).first()
    if row is None or (row.ended_at is not None and as_utc(row.ended_at) <= now):
        return False
    conn.execute(sa.update(mw).where(mw.c.id == wid).values(ended_at=now, ended_by=actor.name))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="maintenance_window_ended", action="end_window", resource_type="maintenance_windows",
        resource_id=str(wid), now=now, user_id=actor.name, success=True, details=_details(_from_row(row)))])
    return True
