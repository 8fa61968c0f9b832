"""Cost against history (`python -m bench --history --growth`): the database work behind one live refresh,
at each volume, measured by calling the lib functions the pages' loaders call (warm: one run first, then the
median of --runs). Also the queue summary as it was before the rollup (one GROUP BY over post_queue), on the
same databases in the same run, for the before/after.

Beside the time, the work: the shared buffers (8 kB pages, hit + read) all the loader's SELECTs touch,
from EXPLAIN (ANALYZE, BUFFERS) of each statement it sent, and the heap fetches of its index-only scans.
On a machine other people load the time wanders; the buffers do not, so they say whether a cost grows.

dlq_backlog: what the same loaders cost with a large dead-letter backlog nobody dealt with (rows added
to the 5M database, VACUUM ANALYZE, measured, removed again): the active statuses are counted exactly
and live, so that cost grows with the backlog, and is reported per 100,000 dlq rows."""
from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta

import sqlalchemy as sa

from lib.activity.heartbeats import agent_statuses
from lib.activity.worker_ticks import worker_health
from lib.alerts.store import AlertFilter, alert_summary
from lib.core.audit import AuditFilter, count_matching, event_counts, feed_page
from lib.core.db import make_engine
from lib.core.schema import post_queue
from lib.core.settings import Settings, parse_targets
from lib.core.timeutil import floor_time, utcnow
from lib.health.metrics import read_snapshot, snapshot_query
from lib.health.service_levels import WINDOWS, send_time_percentiles, slo_statuses, sync_slo_alerts
from lib.queue.reads import queue_health, search_sent, status_summary

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


def _sent_search_id(conn, now):
    """The Queue Monitor's search by what was sent, for one history row's text (one match, or a few)."""
    search_sent(conn, "history row 4321987")


def _sent_search_nothing(conn, now):
    search_sent(conn, NOTHING)


def _overview(conn, now):
    """The Overview's live loaders: agents, queue tiles, worker, open alerts, recent events."""
    agent_statuses(conn, now=now)
    status_summary(conn, now=now)
    queue_health(conn, now=now, lease_s=600)
    worker_health(conn, now=now, cron="*/5 * * * *")
    alert_summary(conn, filters=AlertFilter(resolved=False))
    feed_page(conn, filters=AuditFilter(), limit=10)


def _scrape(conn, now):
    """One /metrics scrape's database gauges: what lib.health.metrics.DatabaseCollector runs."""
    read_snapshot(conn, now=now)


def _scrape_before(conn, now):
    """The scrape before this change: the same gauges with the queue rows by a GROUP BY over post_queue."""
    _old_summary(conn, now)
    conn.execute(snapshot_query(now)).all()


SLO_TARGETS = parse_targets(Settings.slo_targets)


def _slo_percentiles(conn, now):
    """The Queue Monitor's time to send: p50/p95 per action type over 24 h, 7 d and 30 d."""
    for window in WINDOWS.values():
        send_time_percentiles(conn, now=now, window=window)


def _slo_targets(conn, now):
    """Every default target's compliance over 7 d and the last hour (Queue Monitor and Overview)."""
    slo_statuses(conn, SLO_TARGETS, now=now, window_days=7)


def _slo_burn(conn, now):
    """The worker's watchdog pass: the last hour of every target (rolled back by the caller)."""
    sync_slo_alerts(conn, SLO_TARGETS, now=now, burn_threshold=14.4)


MEASURES = {
    "queue summary before (GROUP BY over post_queue)": _old_summary,
    "queue summary (status_summary)": lambda c, n: status_summary(c, now=n),
    "queue health (queue_health)": lambda c, n: queue_health(c, now=n, lease_s=600),
    "agent statuses (newest beats + 24 h / 7 d)": lambda c, n: agent_statuses(c, now=n),
    "Activity Feed first page (24 h: page, count, chart)": _feed_first,
    "Activity Feed next page": _feed_next,
    "feed search matching nothing over 30 days": _search_nothing,
    "queue search by what was sent: one row's text (search_sent)": _sent_search_id,
    "queue search by what was sent: matching nothing": _sent_search_nothing,
    "Overview live refresh (all its loaders)": _overview,
    "metrics scrape before (GROUP BY over post_queue)": _scrape_before,
    "metrics scrape (lib.health.metrics.read_snapshot)": _scrape,
    "service levels: time to send p50/p95, 24 h + 7 d + 30 d": _slo_percentiles,
    "service levels: targets, 7 d + 1 h compliance": _slo_targets,
    "service levels: slo_burn check (watchdog pass)": _slo_burn,
}
BACKLOG_MEASURES = ("queue summary (status_summary)", "Overview live refresh (all its loaders)",
                    "metrics scrape (lib.health.metrics.read_snapshot)")


def _work(engine, conn, fn, now) -> dict:
    """Buffers (hit + read) and heap fetches of every SELECT `fn` sends, by EXPLAIN (ANALYZE, BUFFERS)."""
    sent = []

    def before(_c, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        fn(conn, now)
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
    buffers = heap_fetches = 0
    scans = []
    cur = conn.connection.driver_connection.cursor()
    for statement, parameters in sent:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
        top = cur.fetchone()[0][0]["Plan"]
        buffers += top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)  # a node's count includes its children's
        stack = [top]
        while stack:
            node = stack.pop()
            heap_fetches += node.get("Heap Fetches", 0)
            if node["Node Type"] == "Seq Scan":
                scans.append(node.get("Relation Name"))
            stack.extend(node.get("Plans", []))
    cur.close()
    conn.rollback()
    return {"buffers": buffers, "heap_fetches": heap_fetches, "statements": len(sent), "seq_scans": sorted(set(scans))}


def measure(url: str, runs: int, log=print, names=None) -> dict[str, dict]:
    """{measurement: {"s": median seconds, "buffers", "heap_fetches", "statements", "seq_scans"}}."""
    engine = make_engine(url)
    out = {}
    try:
        now = floor_time(utcnow(), 30)
        with engine.connect() as conn:
            for name in names or MEASURES:
                fn = MEASURES[name]
                fn(conn, now)  # warm
                conn.rollback()
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    fn(conn, now)
                    times.append(time.perf_counter() - t)
                    conn.rollback()
                out[name] = {"s": statistics.median(times), **_work(engine, conn, fn, now)}
                log(f"    {name}: {out[name]['s'] * 1000:.1f} ms, {out[name]['buffers']:,} buffers, "
                    f"{out[name]['heap_fetches']:,} heap fetches (load {os.getloadavg()[0]:.1f})")
    finally:
        engine.dispose()
    return out


_BACKLOG_SQL = """
WITH acc AS (SELECT array_agg(id ORDER BY id) AS ids FROM instagram_business_accounts)
INSERT INTO post_queue (id, business_account_id, action_type, payload, idempotency_key, status, retry_count, error,
                        error_category, created_at, updated_at)
SELECT gen_random_uuid(), acc.ids[1 + g % cardinality(acc.ids)],
       (ARRAY['reply_comment','reply_dm','send_dm','publish_post','repost_ugc'])[1 + g % 5],
       jsonb_build_object('message', 'backlog row ' || g), 'bench-backlog-' || g, 'dlq', 5,
       '(#100) Invalid parameter: media ' || g, 'permanent',
       now() - (g % 300) * interval '1 day' - interval '1 hour', now() - (g % 300) * interval '1 day'
FROM acc, generate_series(:lo, :hi) AS g
"""


def dlq_backlog(url: str, runs: int, steps=(100_000, 250_000), log=print) -> dict:
    """The live loaders with `steps` extra dlq rows (added, VACUUM ANALYZE, measured; removed at the end)."""
    engine = make_engine(url)
    out = {}
    try:
        base = measure(url, runs, log=log, names=BACKLOG_MEASURES)
        out["0"] = base
        added = 0
        for n in steps:
            with engine.begin() as conn:
                conn.execute(sa.text(_BACKLOG_SQL), {"lo": added + 1, "hi": n})
            added = n
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE post_queue"))
            log(f"  with {n:,} more dlq rows:")
            out[str(n)] = measure(url, runs, log=log, names=BACKLOG_MEASURES)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM post_queue WHERE status = 'dlq' AND idempotency_key LIKE 'bench-backlog-%'"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE post_queue"))
        engine.dispose()
    return out


def markdown(volumes: dict[str, dict], load: tuple[float, float]) -> str:
    labels = list(volumes)
    first, last = labels[0], labels[-1]
    lines = [f"Database time, warm, median, and the buffers the statements touch (PostgreSQL; load average "
             f"{load[0]:.1f} before / {load[1]:.1f} after):", "",
             "| measurement |" + "".join(f" {v} |" for v in labels) + f" {last} / {first} time | buffers |",
             "|---|" + "---:|" * (len(labels) + 2)]
    for name in MEASURES:
        cells = "".join(f" {volumes[v][name]['s'] * 1000:.1f} ms ({volumes[v][name]['buffers']:,} b) |" for v in labels)
        a, b = volumes[first][name], volumes[last][name]
        ratio = b["s"] / a["s"] if a["s"] else float("nan")
        bratio = b["buffers"] / a["buffers"] if a["buffers"] else float("nan")
        lines.append(f"| {name} |{cells} ×{ratio:.2f} | ×{bratio:.2f} |")
    return "\n".join(lines) + "\n"


def backlog_markdown(backlog: dict, load: tuple[float, float]) -> str:
    steps = list(backlog)
    lines = [f"With a dead-letter backlog on the 5M database (extra dlq rows; load average {load[0]:.1f} before / "
             f"{load[1]:.1f} after):", "",
             "| measurement |" + "".join(f" +{int(k):,} dlq |" for k in steps) + " per 100k dlq rows |",
             "|---|" + "---:|" * (len(steps) + 1)]
    top = steps[-1]
    for name in BACKLOG_MEASURES:
        cells = "".join(f" {backlog[k][name]['s'] * 1000:.1f} ms ({backlog[k][name]['buffers']:,} b) |" for k in steps)
        per = (backlog[top][name]["s"] - backlog["0"][name]["s"]) / (int(top) / 100_000)
        perb = (backlog[top][name]["buffers"] - backlog["0"][name]["buffers"]) / (int(top) / 100_000)
        lines.append(f"| {name} |{cells} +{per * 1000:.1f} ms, +{perb:,.0f} b |")
    return "\n".join(lines) + "\n"
