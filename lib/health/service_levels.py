"""Service levels of the outbound queue: do replies go out in time?

Time to send of a row = its updated_at - created_at once it is `sent` (the worker's last write of a sent
row is the send). Percentiles are nearest-rank (the first value whose share of rows at or below it
reaches p), computed in SQL: percentile_disc on PostgreSQL, row_number/count on SQLite (same result).

A target reads "95 % of reply_dm within 15 minutes" (SLO_TARGETS). Over a window, a row counts
  * good: sent within the threshold;
  * bad:  sent later, dead-lettered, or not sent yet although older than the threshold (overdue now),
so a worker that stops makes the budget burn before anything is sent late. The error budget is the
share of bad rows the objective allows (5 % for 95 %); the burn rate is the bad share over the last
hour divided by that budget: 1 spends the budget exactly over the window, 14.4 spends a 7-day
budget in half a day. One `slo_burn` alert is open while any target burns faster than SLO_BURN_RATE.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.alerts.store import auto_resolve, open_or_update_alert
from lib.core.schema import post_queue as q
from lib.core.schema import system_alerts
from lib.core.settings import SloTarget, parse_targets
from lib.core.timeutil import iso

ALERT_TYPE = "slo_burn"
WINDOWS = {"24 h": timedelta(hours=24), "7 d": timedelta(days=7), "30 d": timedelta(days=30)}
BURN_WINDOW = timedelta(hours=1)
MIN_EVENTS = 5  # fewer rows than this in the burn window say nothing about a rate
OVERDUE_STATUSES = ("pending", "processing", "failed")


def send_seconds(dialect: str):
    """SQL: a row's time to send in seconds (the one place the dialects differ)."""
    if dialect == "postgresql":
        return sa.extract("epoch", q.c.updated_at - q.c.created_at)
    return (sa.func.julianday(q.c.updated_at) - sa.func.julianday(q.c.created_at)) * 86400.0


def _scope(stmt, account_id):
    return stmt if account_id is None else stmt.where(q.c.business_account_id == account_id)


def send_time_percentiles(conn: sa.Connection, *, now: datetime, window: timedelta, account_id=None,
                          by_account: bool = False) -> list[dict[str, Any]]:
    """[{action_type, business_account_id (with by_account), sent, p50_s, p95_s}] of the rows sent in
    (now - window, now], by action type (and account). Reads the partial index of sent rows by updated_at."""
    dur = send_seconds(conn.dialect.name).label("dur")
    keys = [q.c.action_type] + ([q.c.business_account_id] if by_account else [])
    where = [q.c.status == "sent", q.c.updated_at > now - window, q.c.updated_at <= now,
             q.c.created_at.is_not(None)]
    if conn.dialect.name == "postgresql":
        stmt = _scope(sa.select(*keys, sa.func.count().label("sent"),
                                sa.func.percentile_disc(0.5).within_group(dur).label("p50"),
                                sa.func.percentile_disc(0.95).within_group(dur).label("p95"))
                      .where(*where).group_by(*keys), account_id)
    else:
        part = keys
        inner = _scope(sa.select(*keys, dur, sa.func.row_number().over(partition_by=part, order_by=dur).label("rn"),
                                 sa.func.count().over(partition_by=part).label("n")).where(*where), account_id).subquery()
        ik = [inner.c[k.name] for k in keys]

        def pct(p: int):
            return sa.func.min(sa.case((inner.c.rn * 100 >= p * inner.c.n, inner.c.dur)))
        stmt = sa.select(*ik, sa.func.max(inner.c.n).label("sent"), pct(50).label("p50"),
                         pct(95).label("p95")).group_by(*ik)
    out = []
    for r in conn.execute(stmt):
        row = {"action_type": r.action_type, "sent": int(r.sent), "p50_s": max(0.0, float(r.p50)),
               "p95_s": max(0.0, float(r.p95))}
        if by_account:
            row["business_account_id"] = r.business_account_id
        out.append(row)
    return sorted(out, key=lambda d: (d["action_type"], str(d.get("business_account_id") or "")))


@dataclass(frozen=True)
class Compliance:
    good: int
    late: int  # sent after the threshold
    dead: int  # dead-lettered in the window
    overdue: int  # not sent yet, older than the threshold

    @property
    def total(self) -> int:
        return self.good + self.late + self.dead + self.overdue

    @property
    def bad(self) -> int:
        return self.total - self.good

    @property
    def ratio(self) -> float | None:
        return None if self.total == 0 else self.good / self.total


def compliance(conn: sa.Connection, target: SloTarget, *, now: datetime, window: timedelta,
               account_id=None) -> Compliance:
    """How the rows of the target's action type fared in (now - window, now] (see the module's rules)."""
    dur = send_seconds(conn.dialect.name)
    late = sa.and_(q.c.status == "sent", dur > target.threshold_s)
    in_window = sa.and_(q.c.updated_at > now - window, q.c.updated_at <= now)
    finished = _scope(sa.select(
        sa.func.count().filter(q.c.status == "sent").label("sent"),
        sa.func.count().filter(late).label("late"),
        sa.func.count().filter(q.c.status == "dlq").label("dead"),
    ).where(q.c.action_type == target.action_type, q.c.status.in_(("sent", "dlq")), in_window), account_id)
    overdue = _scope(sa.select(sa.func.count()).where(
        q.c.action_type == target.action_type, q.c.status.in_(OVERDUE_STATUSES),
        q.c.created_at <= now - timedelta(seconds=target.threshold_s)), account_id)
    r = conn.execute(finished).one()
    waiting = int(conn.execute(overdue).scalar() or 0)
    sent, late_n = int(r.sent or 0), int(r.late or 0)
    return Compliance(good=sent - late_n, late=late_n, dead=int(r.dead or 0), overdue=waiting)


def burn_rate(c: Compliance, target: SloTarget) -> float | None:
    """The bad share over the error budget (None without rows)."""
    return None if c.ratio is None else (c.bad / c.total) / target.budget


@dataclass(frozen=True)
class SloStatus:
    target: SloTarget
    window: Compliance  # over the SLO window (SLO_WINDOW_DAYS)
    recent: Compliance  # over the burn window (the last hour)
    burn: float | None  # burn rate over the last hour

    @property
    def met(self) -> bool | None:
        return None if self.window.ratio is None else self.window.ratio >= self.target.objective

    @property
    def budget_left(self) -> float | None:
        """Share of the window's error budget not spent yet (negative: overspent)."""
        if self.window.ratio is None:
            return None
        return 1.0 - (self.window.bad / self.window.total) / self.target.budget

    def burning(self, threshold: float) -> bool:
        return self.burn is not None and self.recent.total >= MIN_EVENTS and self.burn >= threshold


def slo_statuses(conn: sa.Connection, targets: list[SloTarget], *, now: datetime, window_days: int,
                 account_id=None) -> list[SloStatus]:
    out = []
    for t in targets:
        recent = compliance(conn, t, now=now, window=BURN_WINDOW, account_id=account_id)
        out.append(SloStatus(t, compliance(conn, t, now=now, window=timedelta(days=window_days),
                                           account_id=account_id), recent, burn_rate(recent, t)))
    return out


def sync_slo_alerts(conn: sa.Connection, targets: list[SloTarget], *, now: datetime,
                    burn_threshold: float) -> dict[str, list[str]]:
    """One open slo_burn alert while any target burns its budget faster than burn_threshold (over the last
    hour, with at least MIN_EVENTS rows); it is updated only when the set of burning targets changes and
    resolves itself when none burns. -> {"raised": [...action types], "resolved": [...]}"""
    statuses = []
    for t in targets:  # the last hour only: cheap enough for every watchdog pass
        recent = compliance(conn, t, now=now, window=BURN_WINDOW)
        statuses.append(SloStatus(t, recent, recent, burn_rate(recent, t)))
    burning = [s for s in statuses if s.burning(burn_threshold)]
    open_row = conn.execute(sa.select(system_alerts.c.details).where(
        system_alerts.c.alert_type == ALERT_TYPE, system_alerts.c.resolved.is_(False)).limit(1)).first()
    before = sorted((open_row.details or {}).get("action_types", [])) if open_row and isinstance(
        open_row.details, dict) else []
    names = sorted(s.target.action_type for s in burning)
    if not burning:
        if open_row is not None and auto_resolve(conn, alert_type=ALERT_TYPE, now=now):
            return {"raised": [], "resolved": before}
        return {"raised": [], "resolved": []}
    if open_row is not None and names == before:
        return {"raised": [], "resolved": []}  # nothing new: no repeat, no digest
    text = "; ".join(f"{s.target.describe()}: {s.recent.bad} of {s.recent.total} rows in the last hour missed it "
                     f"(burn rate {s.burn:.1f})" for s in burning)
    alert_id = open_or_update_alert(
        conn, alert_type=ALERT_TYPE, now=now, message=f"Error budget burning too fast: {text}",
        details={"action_types": names, "burn_threshold": burn_threshold, "source": "service_levels",
                 "occurred_at": iso(now),
                 "targets": [{"action_type": s.target.action_type, "objective": s.target.objective,
                              "threshold_s": s.target.threshold_s, "burn_rate": round(s.burn, 2),
                              "bad": s.recent.bad, "total": s.recent.total} for s in burning]})
    return {"raised": names if alert_id is not None else [], "resolved": []}


def sync_from_settings(conn: sa.Connection, settings, *, now: datetime) -> dict[str, list[str]]:
    """The worker's watchdog pass: SLO_TARGETS and SLO_BURN_RATE from the settings."""
    return sync_slo_alerts(conn, parse_targets(settings.slo_targets), now=now, burn_threshold=settings.slo_burn_rate)
