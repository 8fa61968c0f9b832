"""Cost against history (`python -m bench --history --growth`): the database work behind one live refresh,
at each volume, measured by calling the lib functions the pages' loaders call (warm: one run first, then the
median of --runs). Also the queue summary as it was before the rollup (one GROUP BY over post_queue), on the
same databases in the same run, for the before/after."""
from __future__ import annotations

import statistics
import time
from datetime import timedelta

import sqlalchemy as sa

from lib.alerts import AlertFilter, alert_summary
from lib.audit import AuditFilter, count_matching, event_counts, feed_page
from lib.db import make_engine
from lib.heartbeats import agent_statuses
from lib.queue import queue_health, status_summary
from lib.schema import post_queue
from lib.timeutil import floor_time, utcnow
from lib.worker_ticks import worker_health

NOTHING = "zq-no-such-text-xj"


def _old_summary(conn, now):
    """status_summary before this change: counts by action_type x status over every row."""
    q = post_queue
    return conn.execute(sa.select(q.c.action_type, q.c.status, sa.func.count()).group_by(q.c.action_type, q.c.status)).all()


def _feed_first(conn, now):
    f = AuditFilter(since=now - timedelta(hours=24))
    feed_page(conn, filters=f, limit=50)
    count_matching(conn, filters=f)
    event_counts(conn, filters=f, bucket="hour")


def _feed_next(conn, now):
    f = AuditFilter()
    first = feed_page(conn, filters=f, limit=50)
    feed_page(conn, filters=f, limit=50, after=first.last_cursor)


def _search_nothing(conn, now):
    feed_page(conn, filters=AuditFilter(since=now - timedelta(days=30), search=NOTHING), limit=50)


def _overview(conn, now):
    """The Overview's live loaders: agents, queue tiles, worker, open alerts, recent events."""
    agent_statuses(conn, now=now)
    status_summary(conn, now=now)
    queue_health(conn, now=now, lease_s=600)
    worker_health(conn, now=now, cron="*/5 * * * *")
    alert_summary(conn, filters=AlertFilter(resolved=False))
    feed_page(conn, filters=AuditFilter(), limit=10)


def _scrape(conn, now):
    """What the Prometheus exporter's queue gauges call (observability branch)."""
    status_summary(conn, now=now)
    queue_health(conn, now=now, lease_s=600)


MEASURES = {
    "queue summary before (GROUP BY over post_queue)": _old_summary,
    "queue summary (status_summary)": lambda c, n: status_summary(c, now=n),
    "queue health (queue_health)": lambda c, n: queue_health(c, now=n, lease_s=600),
    "agent statuses (newest beats + 24 h / 7 d)": lambda c, n: agent_statuses(c, now=n),
    "Activity Feed first page (24 h: page, count, chart)": _feed_first,
    "Activity Feed next page": _feed_next,
    "feed search matching nothing over 30 days": _search_nothing,
    "Overview live refresh (all its loaders)": _overview,
    "metrics scrape (queue gauges)": _scrape,
}


def measure(url: str, runs: int, log=print) -> dict[str, float]:
    engine = make_engine(url)
    out = {}
    try:
        now = floor_time(utcnow(), 30)
        with engine.connect() as conn:
            for name, fn in MEASURES.items():
                fn(conn, now)  # warm
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    fn(conn, now)
                    times.append(time.perf_counter() - t)
                    conn.rollback()
                out[name] = statistics.median(times)
                log(f"    {name}: {out[name] * 1000:.1f} ms")
    finally:
        engine.dispose()
    return out


def markdown(volumes: dict[str, dict], load: tuple[float, float]) -> str:
    labels = list(volumes)
    lines = [f"Database time, warm, median (PostgreSQL; load average {load[0]:.1f} before / {load[1]:.1f} after):", "",
             "| measurement |" + "".join(f" {v} |" for v in labels) + " 5M / 200k |",
             "|---|" + "---:|" * (len(labels) + 1)]
    first, last = labels[0], labels[-1]
    for name in MEASURES:
        cells = "".join(f" {volumes[v][name] * 1000:.1f} ms |" for v in labels)
        ratio = volumes[last][name] / volumes[first][name] if volumes[first][name] else float("nan")
        lines.append(f"| {name} |{cells} ×{ratio:.2f} |")
    return "\n".join(lines) + "\n"
