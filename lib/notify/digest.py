"""The weekly digest: KPIs with deltas, top posts, anomalies, queue health and open alerts, for one
account or for all, sent through the alert notification routes (lib/notify/, Apprise).

Schedule: DIGEST_CRON (Monday 08:00 UTC by default). The worker's notify pass calls
queue_due_digests: the newest cron slot that has passed (at most a day ago) is queued once per
route and scope into notification_outbox (kind `weekly_digest`; the dedupe key names the slot, so
several workers and restarts queue it once), and lib.notify.outbox delivers it with its retries. The body
is HTML (e-mail routes get an HTML mail; Apprise turns it into text for text-only services).
DIGEST_SCOPE: `all` (one digest for every account) or `per_account` (one per account).
"Send now" (operators) queues and sends at once, audited.

Every text from the data (captions, messages, names) is escaped (html.escape) in the HTML.
"""
from __future__ import annotations

import html
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from croniter import croniter

from lib.alerts.store import severity
from lib.core.audit import log_audit
from lib.core.db import insert_ignore
from lib.core.identity import require_operator
from lib.core.schema import instagram_business_accounts, notification_outbox, post_queue, system_alerts
from lib.core.settings import Settings
from lib.notify.outbox import send
from lib.notify.routes import routes

KIND = "weekly_digest"
CATCH_UP = timedelta(days=1)  # a slot missed by longer than this (worker down) is not sent late
TOP_POSTS = 5
MAX_ALERTS = 10


@dataclass
class Digest:
    title: str
    period_start: datetime  # the reported week (title, KPIs, top posts, anomalies): [Monday 00:00, next Monday 00:00)
    period_end: datetime
    account_id: uuid.UUID | None
    account_name: str | None
    kpis: list[dict[str, Any]] = field(default_factory=list)  # {account, label, value, delta}
    top_posts: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    queue: dict[str, int] = field(default_factory=dict)  # sent, failed, dlq (the 7 days to as_of), dlq_now
    alerts: dict[str, int] = field(default_factory=dict)  # severity -> open count
    alert_items: list[dict[str, Any]] = field(default_factory=list)
    link: str | None = None
    as_of: datetime | None = None  # when it was built: the queue's 7 days and the open alerts end here

    @property
    def period_text(self) -> str:
        return f"{self.period_start.date()} – {(self.period_end - timedelta(days=1)).date()}"


# --------------------------------------------------------------------------- building

def digest_week(report_periods: list[tuple[str | None, str | None]], now: datetime) -> tuple[date, date]:
    """The week a digest reports on (first and last day, UTC): the newest period among the accounts'
    latest weekly reports, so the title names the week of the KPIs; without a report, the last
    whole Monday-Sunday week before `now`."""
    periods = []
    for start, end in report_periods:
        try:
            periods.append((date.fromisoformat(str(start)[:10]), date.fromisoformat(str(end)[:10])))
        except ValueError:  # a period that is not an ISO day: not a week to name
            continue
    if periods:
        return max(periods, key=lambda p: (p[1], p[0]))
    monday = now.date() - timedelta(days=now.weekday())
    return monday - timedelta(days=7), monday - timedelta(days=1)


def _names(conn) -> dict[str, str]:
    t = instagram_business_accounts
    return {str(r.id): r.username or str(r.id) for r in conn.execute(sa.select(t.c.id, t.c.username))}


def build_digest(conn: sa.Connection, settings: Settings, *, now: datetime,
                 account_id: uuid.UUID | None = None) -> Digest:
    # lazy: pandas and the analytics modules load here, not at import: the worker imports this module and
    # would otherwise pay ~1 s of start-up per process for a digest it builds once a week.
    import pandas as pd

    from lib.analytics import anomalies, posts  # lazy: pandas (see above)
    from lib.analytics import reports as an  # lazy: pandas (see above)

    names = _names(conn)
    acc_name = names.get(str(account_id)) if account_id else None
    ids = None if account_id is None else [account_id]

    # KPIs: the newest weekly report per account against the one before (or its historical_comparison)
    rows = an.fetch_reports(conn, account_ids=ids, report_type="weekly", start=now - timedelta(days=21), end=now)
    by_acc: dict[str, list[dict]] = {}
    for r in rows:
        rep = an.parse_report(r, full=False)
        by_acc.setdefault(rep.business_account_id, []).append(an.flatten_report(rep, lists=False))
    first, last = digest_week([(reps[-1].get("start_date"), reps[-1].get("end_date")) for reps in by_acc.values()], now)
    start, end = an.day_bounds(first, last)
    d = Digest(title=f"Weekly digest · {'@' + acc_name if acc_name else 'all accounts'} · {first} – {last}",
               period_start=start, period_end=end, account_id=account_id, account_name=acc_name, as_of=now)
    for acc in sorted(by_acc, key=lambda a: names.get(a, a)):
        reps = by_acc[acc]
        latest, previous = reps[-1], (reps[-2] if len(reps) > 1 else None)
        if str(latest.get("end_date"))[:10] != last.isoformat():  # no report of the digest's week yet
            continue
        for k in an.kpi_deltas(latest, previous):
            if k.value is None:
                continue
            d.kpis.append({"account": names.get(acc, acc), "label": k.label, "value": an.fmt_value(k.value, k.kind),
                           "delta": an.fmt_delta(k) or "—"})

    # top posts of the week (with report data)
    view = posts.posts_view(conn, filt=posts.PostsFilter(since=start, until=end, account_id=account_id,
                                                         reported_only=True), names=names)
    top = view.frame[view.frame["engagement"].notna()].head(TOP_POSTS)
    d.top_posts = [{"account": r.account, "instagram_id": r.instagram_id,
                    "caption": r.caption if isinstance(r.caption, str) else "",
                    "engagement": r.engagement, "likes": r.likes, "reach": r.reach,
                    "published_at": r.published_at} for r in top.itertuples()]

    # anomalies of the week's daily reports
    flags = anomalies.load_flags(conn, account_ids=None if account_id is None else [str(account_id)],
                                 first=start.date(), last=(end - timedelta(seconds=1)).date(),
                                 threshold=settings.anomaly_threshold)
    d.anomalies = [{"account": names.get(str(f["business_account_id"]), f["business_account_id"]),
                    "day": pd.Timestamp(f["day"]).date().isoformat(), "label": f["label"], "value": f["value"],
                    "baseline": f["baseline"], "deviation": f["deviation"], "direction": f["direction"]}
                   for f in flags.to_dict("records")]

    # queue health: rows that reached sent / failed / dlq this week, and the DLQ now
    q = post_queue  # operational: the 7 days up to now, whatever week the reports cover
    cond = [q.c.updated_at >= now - timedelta(days=7), q.c.updated_at < now]
    if account_id is not None:
        cond.append(q.c.business_account_id == account_id)
    counts = dict(conn.execute(sa.select(q.c.status, sa.func.count()).where(*cond, q.c.status.in_(("sent", "failed", "dlq")))
                               .group_by(q.c.status)).all())
    dlq_now = sa.select(sa.func.count()).select_from(q).where(q.c.status == "dlq")
    if account_id is not None:
        dlq_now = dlq_now.where(q.c.business_account_id == account_id)
    d.queue = {"sent": int(counts.get("sent", 0)), "failed": int(counts.get("failed", 0)),
               "dlq": int(counts.get("dlq", 0)), "dlq_now": int(conn.execute(dlq_now).scalar() or 0)}

    # open alerts
    t = system_alerts
    aq = sa.select(t.c.alert_type, t.c.message, t.c.business_account_id, t.c.created_at).where(t.c.resolved.is_(False))
    if account_id is not None:
        aq = aq.where(t.c.business_account_id == account_id)
    open_alerts = conn.execute(aq.order_by(t.c.created_at.desc()).limit(5000)).all()
    for a in open_alerts:
        sev = severity(a.alert_type)
        d.alerts[sev] = d.alerts.get(sev, 0) + 1
    order = {"CRITICAL": 0, "ERROR": 1, "WARNING": 2}
    # the counts in severity order (they were counted newest alert first): "2 CRITICAL, 1 WARNING"
    d.alerts = dict(sorted(d.alerts.items(), key=lambda kv: order.get(kv[0], 3)))
    for a in sorted(open_alerts, key=lambda a: order.get(severity(a.alert_type), 3))[:MAX_ALERTS]:
        d.alert_items.append({"severity": severity(a.alert_type), "alert_type": a.alert_type,
                              "account": names.get(str(a.business_account_id)) if a.business_account_id else None,
                              "message": (a.message or "")[:300]})
    if settings.dashboard_url:
        d.link = settings.dashboard_url.rstrip("/") + "/metrics" + (f"?account={acc_name}" if acc_name else "")
    return d


# --------------------------------------------------------------------------- rendering

def _n(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def render_text(d: Digest) -> str:
    lines = [d.title, ""]
    lines.append(f"KPIs (weekly report {d.period_text})")
    lines += [f"  {k['account']}: {k['label']} {k['value']} ({k['delta']})" for k in d.kpis] or ["  no weekly report"]
    lines += ["", "Top posts"]
    lines += [f"  {p['account']} {p['instagram_id']}: engagement {_n(p['engagement'])} · {p['caption'][:80]}"
              for p in d.top_posts] or ["  none with report data"]
    lines += ["", "Anomalies"]
    lines += [f"  {a['day']} {a['account']}: {a['label']} {_n(a['value'])} (median {_n(a['baseline'])}, "
              f"deviation {a['deviation']:+.1f})" for a in d.anomalies] or ["  none"]
    q = d.queue
    lines += ["", f"Queue: {q['sent']:,} sent, {q['failed']:,} failed, {q['dlq']:,} dead-lettered {_last_7_days(d)}; "
                  f"{q['dlq_now']:,} in the DLQ now"]
    lines += ["", "Open alerts: " + (", ".join(f"{n} {s}" for s, n in d.alerts.items()) or "none")]
    lines += [f"  [{a['severity']}] {a['alert_type']}{' · ' + a['account'] if a['account'] else ''}: {a['message']}"
              for a in d.alert_items]
    if d.link:
        lines += ["", f"Open in the dashboard: {d.link}"]
    return "\n".join(lines)


def _last_7_days(d: Digest) -> str:
    return f"in the 7 days to {d.as_of:%Y-%m-%d %H:%M} UTC" if d.as_of else "in the last 7 days"


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th style='text-align:left;padding:4px 8px;border-bottom:1px solid #ccc'>{html.escape(h)}</th>"
                 for h in head)
    body = "".join("<tr>" + "".join(f"<td style='padding:4px 8px'>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table style='border-collapse:collapse'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(d: Digest) -> str:
    e = html.escape
    parts = [f"<h2>{e(d.title)}</h2>", "<h3>KPIs</h3>"]
    parts.append(_table(["Account", "KPI", "Value", "Change"], [[k["account"], k["label"], k["value"], k["delta"]]
                                                                for k in d.kpis]) if d.kpis
                 else f"<p>No weekly report for {e(d.period_text)}.</p>")
    parts.append("<h3>Top posts</h3>")
    parts.append(_table(["Account", "Media id", "Engagement", "Likes", "Reach", "Caption"],
                        [[p["account"], p["instagram_id"], _n(p["engagement"]), _n(p["likes"]), _n(p["reach"]),
                          p["caption"][:120]] for p in d.top_posts]) if d.top_posts
                 else f"<p>No post published {e(d.period_text)} with report data.</p>")
    parts.append("<h3>Anomalies</h3>")
    parts.append(_table(["Day", "Account", "Metric", "Value", "28-day median", "Deviation"],
                        [[a["day"], a["account"], a["label"], _n(a["value"]), _n(a["baseline"]),
                          f"{a['deviation']:+.1f}"] for a in d.anomalies]) if d.anomalies
                 else "<p>No anomalies flagged.</p>")
    q = d.queue
    parts.append(f"<h3>Queue health</h3><p>{e(_last_7_days(d)[:1].upper() + _last_7_days(d)[1:])}</p>")
    parts.append(_table(["Sent", "Failed", "Dead-lettered", "In the DLQ now"],
                        [[f"{q['sent']:,}", f"{q['failed']:,}", f"{q['dlq']:,}", f"{q['dlq_now']:,}"]]))
    parts.append("<h3>Open alerts</h3>")
    parts.append("<p>" + (e(", ".join(f"{n} {s}" for s, n in d.alerts.items())) or "None.") + "</p>")
    if d.alert_items:
        parts.append(_table(["Severity", "Type", "Account", "Message"],
                            [[a["severity"], a["alert_type"], a["account"] or "—", a["message"]] for a in d.alert_items]))
    if d.link:
        parts.append(f"<p><a href=\"{e(d.link, quote=True)}\">Open in the dashboard</a></p>")
    return "<html><body style='font-family:sans-serif'>" + "".join(parts) + "</body></html>"


# --------------------------------------------------------------------------- scheduling and sending

def last_slot(cron: str, now: datetime) -> datetime:
    """The newest time at or before `now` that the cron expression names (UTC)."""
    return croniter(cron, now + timedelta(seconds=1)).get_prev(datetime)


def scopes(conn: sa.Connection, settings: Settings) -> list[uuid.UUID | None]:
    if settings.digest_scope == "per_account":
        t = instagram_business_accounts
        return [r.id for r in conn.execute(sa.select(t.c.id).order_by(t.c.username))]
    return [None]


def _rows(d: Digest, settings: Settings, *, dedupe: str, now: datetime, status: str = "pending") -> list[dict]:
    body = render_html(d)
    return [{"id": uuid.uuid4(), "dedupe_key": f"{dedupe}:{r.id}", "kind": KIND, "route_id": r.id,
             "route_label": r.label, "severity": None, "business_account_id": d.account_id, "title": d.title,
             "body": body, "notify_type": "info", "status": status, "attempts": 0, "next_attempt_at": now,
             "claimed_at": now if status == "sending" else None, "created_at": now, "updated_at": now}
            for r in routes(settings)]


def queue_due_digests(engine, settings: Settings, *, now: datetime) -> int:
    """Queue the digest of the newest passed slot, once per scope and route (the dedupe key names the
    slot). Returns the rows queued (0 when already queued, no routes, or the slot is too old)."""
    if not routes(settings):
        return 0
    slot = last_slot(settings.digest_cron, now)
    if now - slot > CATCH_UP:
        return 0
    queued = 0
    with engine.begin() as conn:
        for acc in scopes(conn, settings):
            key = f"{KIND}:{slot.isoformat()}:{acc or 'all'}"
            exists = conn.execute(sa.select(sa.literal(1)).where(
                notification_outbox.c.dedupe_key.like(key + ":%")).limit(1)).first()
            if exists:
                continue
            d = build_digest(conn, settings, now=slot, account_id=acc)
            queued += insert_ignore(conn, notification_outbox, _rows(d, settings, dedupe=key, now=now), key="dedupe_key")
    return queued


def send_now(engine, settings: Settings, *, actor, now: datetime, account_id: uuid.UUID | None = None) -> list[str]:
    """An operator sends the digest at once to every route (checked, audited). Returns the outcomes per route."""
    require_operator(actor, "send the weekly digest")
    with engine.connect() as conn:
        d = build_digest(conn, settings, now=now, account_id=account_id)
    key = f"{KIND}:now:{uuid.uuid4()}"
    rows = _rows(d, settings, dedupe=key, now=now, status="sending")
    by_id = {r.id: r for r in routes(settings)}
    with engine.begin() as conn:
        if rows:
            conn.execute(sa.insert(notification_outbox), rows)
    outcomes = []
    for row in rows:
        route = by_id[row["route_id"]]
        result = send(route, title=row["title"], body=row["body"], notify_type="info",
                      timeout_s=settings.alert_notify_timeout_s, body_format="html")
        outcomes.append("sent" if result.ok else f"failed: {result.error}")
        with engine.begin() as conn:
            conn.execute(sa.update(notification_outbox).where(notification_outbox.c.id == row["id"]).values(
                status="sent" if result.ok else "failed", attempts=1, last_error=result.error, updated_at=now,
                sent_at=now if result.ok else None, next_attempt_at=now + timedelta(minutes=1)))
    with engine.begin() as conn:
        log_audit(conn, event_type="digest_sent", action="send_digest_now", resource_type="notification_outbox",
                  resource_id=key, now=now, user_id=actor.name, success=all(o == "sent" for o in outcomes),
                  details={"account_id": str(account_id) if account_id else None, "routes": len(rows),
                           "outcomes": outcomes})
    return outcomes
