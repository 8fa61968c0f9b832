"""Prometheus metrics of the worker process (docs/observability.md has the names and the rules).

Two kinds of metrics:

* The process's own counters and histograms (ticks, executed rows, Graph calls, notifications),
  kept in `REGISTRY` and incremented where things happen (`observe_tick`, `count_action`,
  `observe_graph_call`, `count_notification`). Each worker process exports its own.
* Gauges read from the database at scrape time by `DatabaseCollector`: one SQL statement per
  scrape (a UNION ALL of small aggregates, `snapshot_query`), cached for 10 s, never updated by
  the tick. Every worker exports the same values, since they read the same database.

Label values are names (status, action type, endpoint template, alert type, agent id, account
username), never a token or a queue row id: endpoints go through `endpoint_label`, which only
passes the Graph client's templates (`/{ig-user-id}/media`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lib.activity.heartbeats import latest_beats_query
from lib.alerts.store import ALERT_TYPES, severity
from lib.core.counters import PREFIX, name_label
from lib.core.db import error_line, without_jit
from lib.core.schema import ACTION_TYPES, UTCDateTime, graph_usage, instagram_business_accounts, post_queue, system_alerts
from lib.core.timeutil import as_utc, utcnow
from lib.queue.holds import claimable_clause
from lib.queue.reads import status_summary
from lib.queue.rules import PENDING, STATUSES

log = logging.getLogger("worker.metrics")

CACHE_S = 10.0  # the database gauges are read at most once per 10 s, however often Prometheus scrapes
USAGE_KINDS = ("call_count", "total_cputime", "total_time")
APP_ACCOUNT = "(app)"  # graph_usage's whole-app scope (X-App-Usage); not a possible Instagram username

# -- the database gauges --------------------------------------------------------------------------

@dataclass
class Snapshot:
    """What the database gauges show (read_snapshot: status_summary's statements and one more)."""

    rows: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, action_type) -> n
    due: int = 0
    oldest_pending_at: datetime | None = None
    alerts_open: dict[str, int] = field(default_factory=dict)  # alert_type -> n unresolved
    beats: dict[str, datetime] = field(default_factory=dict)  # agent_id -> newest beat
    usage: dict[tuple[str, str], float] = field(default_factory=dict)  # (account, kind) -> 0..1


def snapshot_query(now: datetime) -> sa.CompoundSelect:
    """One statement, one row per value: (metric, a, b, n, t).

    due:   n=count of lib.queue.holds.claimable_clause     (the worker's own rule)
    oldest: t=min(created_at) of pending rows
    alerts: a=alert_type, n=unresolved count
    beat:  a=agent_id, t=newest beat                 (lib.activity.heartbeats.latest_beats_query: index probes)
    usage: a=account username (or IG id), b=kind, n=percent as Meta sends it
    """
    q, al, gu, acc = post_queue, system_alerts, graph_usage, instagram_business_accounts
    no_text, no_n, no_t = sa.null(), sa.null(), sa.cast(sa.null(), UTCDateTime())

    def lit(name: str):
        return sa.literal(name, sa.Text).label("metric")

    parts = [
        sa.select(lit("due"), sa.cast(no_text, sa.Text).label("a"), sa.cast(no_text, sa.Text).label("b"),
                  sa.cast(sa.func.count(), sa.Float).label("n"), no_t.label("t")).where(claimable_clause(now)),
        sa.select(lit("oldest"), no_text, no_text, no_n, sa.func.min(q.c.created_at)).where(q.c.status == PENDING),
        sa.select(lit("alerts"), al.c.alert_type, no_text, sa.func.count(), no_t)
        .where(al.c.resolved.is_(False)).group_by(al.c.alert_type),
    ]
    beats = latest_beats_query().subquery("beats")
    parts.append(sa.select(lit("beat"), beats.c.agent_id, no_text, no_n, beats.c.last))
    account = sa.case((gu.c.scope == "app", sa.literal(APP_ACCOUNT, sa.Text)),
                      else_=sa.func.coalesce(acc.c.username, acc.c.instagram_business_id, gu.c.scope))
    joined = gu.outerjoin(acc, acc.c.id == gu.c.business_account_id)
    for kind in USAGE_KINDS:
        parts.append(sa.select(lit("usage"), account, sa.literal(kind, sa.Text), gu.c[kind], no_t)
                     .select_from(joined).where(gu.c[kind].is_not(None)))
    return sa.union_all(*parts)


def read_snapshot(conn: sa.Connection, *, now: datetime) -> Snapshot:
    """The gauges' values. The queue rows come from lib.queue.reads.status_summary (the same counts as the
    pages: active statuses live from their partial index, `sent` from the rollup plus a live count since
    its last closed day), not a GROUP BY over post_queue, whose cost grows with every row ever sent."""
    snap = Snapshot()
    for key, n in status_summary(conn, now=now)["summary"].items():
        action_type, _, status = key.partition("::")
        snap.rows[(status, action_type)] = int(n)
    without_jit(conn)
    for metric, a, b, n, t in conn.execute(snapshot_query(now)):
        if metric == "due":
            snap.due = int(n or 0)
        elif metric == "oldest":
            snap.oldest_pending_at = as_utc(t)
        elif metric == "alerts":
            snap.alerts_open[a] = int(n)
        elif metric == "beat" and a is not None and t is not None:
            snap.beats[a] = as_utc(t)
        elif metric == "usage" and n is not None:
            key = (str(a), b)
            snap.usage[key] = max(snap.usage.get(key, 0.0), float(n) / 100.0)
    return snap


def families(snap: Snapshot, now: datetime) -> list[GaugeMetricFamily]:
    rows = GaugeMetricFamily(PREFIX + "queue_rows", "Rows of post_queue by status and action type (sent: the worker's "
                             "rollup of closed days plus a live count since; see lib.queue.reads.status_summary).",
                             labels=["status", "action_type"])
    cells = {(s, a): 0 for s in STATUSES for a in ACTION_TYPES}  # known combinations as 0, so rates start at 0
    cells.update(snap.rows)
    for (status, action_type), n in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        rows.add_metric([name_label(status), name_label(action_type)], n)
    due = GaugeMetricFamily(PREFIX + "queue_due_rows", "Rows the next tick would claim (lib.queue.holds.claimable_clause).",
                            value=snap.due)
    oldest = GaugeMetricFamily(PREFIX + "queue_oldest_pending_seconds",
                               "Age of the oldest pending row (0 when none is pending).",
                               value=0.0 if snap.oldest_pending_at is None
                               else max(0.0, (now - snap.oldest_pending_at).total_seconds()))
    alerts = GaugeMetricFamily(PREFIX + "alerts_open", "Unresolved system_alerts by type and severity.",
                               labels=["alert_type", "severity"])
    open_by_type = {t: 0 for t in ALERT_TYPES}
    open_by_type.update(snap.alerts_open)
    merged: dict[tuple[str, str], int] = {}
    for alert_type, n in open_by_type.items():
        key = (name_label(alert_type, "other"), severity(alert_type))
        merged[key] = merged.get(key, 0) + n
    for key, n in sorted(merged.items()):
        alerts.add_metric(list(key), n)
    beats = GaugeMetricFamily(PREFIX + "agent_heartbeat_age_seconds", "Age of each agent's newest heartbeat.",
                              labels=["agent_id"])
    newest: dict[str, datetime] = {}
    for agent_id, last in snap.beats.items():  # ids that are not plain names share 'other' (the newest beat)
        label = name_label(agent_id, "other")
        newest[label] = max(last, newest.get(label, last))
    for label, last in sorted(newest.items()):
        beats.add_metric([label], max(0.0, (now - last).total_seconds()))
    usage = GaugeMetricFamily(PREFIX + "graph_usage_ratio",
                              "Latest Graph usage headers per account (0-1: percent / 100).", labels=["account", "kind"])
    for (account, kind), ratio in sorted(snap.usage.items()):
        usage.add_metric([name_label(account, "other"), kind], ratio)
    return [rows, due, oldest, alerts, beats, usage]


class DatabaseCollector(Collector):
    """The database gauges, computed at scrape time by read_snapshot (a fixed handful of statements,
    none of whose cost grows with the sent history), cached CACHE_S seconds.

    A database error leaves the database gauges out of that scrape (the process's counters are
    still served; /readyz says the database is gone) and is logged once per failure streak."""

    def __init__(self, engine, *, now_fn: Callable[[], datetime] = utcnow, clock: Callable[[], float] = time.monotonic,
                 cache_s: float = CACHE_S) -> None:
        self.engine, self.now_fn, self.clock, self.cache_s = engine, now_fn, clock, cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None
        self._failing = False

    def describe(self) -> Iterable:
        return []  # registering must not run a query

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            if self._cached is not None and self.clock() - self._cached[0] < self.cache_s:
                return list(self._cached[1])
            now = self.now_fn()
            try:
                with self.engine.connect() as conn:
                    snap = read_snapshot(conn, now=now)
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database did
                if not self._failing:
                    log.warning("metrics: database gauges unavailable: %s",
                                error_line(exc))
                self._failing = True
                self._cached = None
                return []
            self._failing = False
            fams = families(snap, now)
            self._cached = (self.clock(), fams)
            return list(fams)
