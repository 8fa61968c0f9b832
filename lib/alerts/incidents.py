"""Incidents: one alert (a system_alerts row) from the moment it opened to the moment it was resolved, with
what happened in between, read back from the tables that already record it -- the alert's repeats, the
notifications sent or failed, acknowledgements with their comments, silences and maintenance windows,
operators' actions on the same account or agent, the heartbeat gap or the failed sends that caused it,
and the worker's ticks. Nothing is written here: an incident is a view of those rows.

Durations: time to acknowledge = first acknowledgement - opened; time to resolve = resolved - opened.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.alerts.maintenance import load_windows
from lib.alerts.store import resolved_by, severity
from lib.core.redact import redact, redact_text
from lib.core.schema import agent_heartbeats as hb
from lib.core.schema import alert_acknowledgements as acks
from lib.core.schema import (
    alert_silences,
    audit_log,
    notification_outbox,
    notify_alert_rows,
    post_queue,
    system_alerts,
    worker_ticks,
)
from lib.core.schema import post_queue_attempts as attempts
from lib.core.text import clip, md_escape
from lib.core.timeutil import as_utc, fmt_duration

LIST_CAP = 500
ACTIONS_CAP = 200
TICKS_LISTED = 20  # ticks shown one by one (the failed ones always); the rest are counted
LOOKBACK = timedelta(minutes=15)  # operator actions and failed sends this long before the opening belong to it


@dataclass(frozen=True)
class IncidentSummary:
    alert_id: uuid.UUID
    alert_type: str
    severity: str
    message: str | None
    business_account_id: uuid.UUID | None
    agent_id: str | None
    opened_at: datetime | None
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    repeats: int

    @property
    def state(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "acknowledged" if self.acknowledged_at else "open"

    def time_to_acknowledge(self) -> timedelta | None:
        return None if not (self.acknowledged_at and self.opened_at) else self.acknowledged_at - self.opened_at

    def time_to_resolve(self, now: datetime | None = None) -> timedelta | None:
        """Resolved - opened; with `now`, an open incident's age so far."""
        if self.opened_at is None:
            return None
        end = self.resolved_at or now
        return None if end is None else end - self.opened_at


@dataclass(frozen=True)
class IncidentFilter:
    since: datetime | None = None
    alert_type: str | None = None
    state: str | None = None  # open | acknowledged | resolved | None (any)
    account_id: uuid.UUID | None = None
    agent_id: str | None = None


def _agent(details) -> str | None:
    return details.get("agent_id") if isinstance(details, dict) else None


def _count(details) -> int:
    try:
        return int((details or {}).get("count", 1) or 1)
    except (TypeError, ValueError, AttributeError):
        return 1


def list_incidents(conn: sa.Connection, *, filters: IncidentFilter, limit: int = LIST_CAP) -> list[IncidentSummary]:
    """Alerts opened since `filters.since`, newest first, with their first acknowledgement."""
    a = system_alerts
    first_ack = (sa.select(acks.c.alert_id, sa.func.min(acks.c.acknowledged_at).label("at"))
                 .group_by(acks.c.alert_id).subquery())
    stmt = sa.select(a.c.id, a.c.alert_type, a.c.message, a.c.business_account_id, a.c.details, a.c.resolved,
                     a.c.resolved_at, a.c.created_at, first_ack.c.at).outerjoin(first_ack, first_ack.c.alert_id == a.c.id)
    if filters.since is not None:
        stmt = stmt.where(a.c.created_at >= filters.since)
    if filters.alert_type:
        stmt = stmt.where(a.c.alert_type == filters.alert_type)
    if filters.account_id is not None:
        stmt = stmt.where(a.c.business_account_id == filters.account_id)
    if filters.agent_id:
        stmt = stmt.where(a.c.details["agent_id"].as_string() == filters.agent_id)
    if filters.state == "resolved":
        stmt = stmt.where(a.c.resolved.is_(True))
    elif filters.state == "open":
        stmt = stmt.where(a.c.resolved.is_(False), first_ack.c.at.is_(None))
    elif filters.state == "acknowledged":
        stmt = stmt.where(a.c.resolved.is_(False), first_ack.c.at.is_not(None))
    rows = conn.execute(stmt.order_by(a.c.created_at.desc(), a.c.id).limit(limit)).all()
    ids = [r.id for r in rows]
    by = _ack_by(conn, ids)
    return [IncidentSummary(r.id, r.alert_type, severity(r.alert_type), r.message, r.business_account_id,
                            _agent(r.details), as_utc(r.created_at),
                            as_utc(r.resolved_at) if r.resolved else None, as_utc(r.at), by.get(r.id),
                            _count(r.details)) for r in rows]


def _ack_by(conn, ids) -> dict:
    out = {}
    for start in range(0, len(ids), 500):
        for r in conn.execute(sa.select(acks.c.alert_id, acks.c.acknowledged_by).where(
                acks.c.alert_id.in_(ids[start:start + 500])).order_by(acks.c.acknowledged_at)):
            out.setdefault(r.alert_id, r.acknowledged_by)
    return out


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str  # opened | repeat | notification | acknowledged | silence | maintenance | action | cause | tick | resolved
    text: str  # plain text (escape before Markdown)
    by: str | None = None


@dataclass
class Incident:
    summary: IncidentSummary
    events: list[Event] = field(default_factory=list)
    resolved_by: str | None = None
    ticks_total: int = 0
    ticks_failed: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0


def _window_end(s: IncidentSummary, now: datetime) -> datetime:
    return s.resolved_at or now


def _details_key(key: str):
    return audit_log.c.details[key].as_string()


def incident(conn: sa.Connection, alert_id, *, now: datetime) -> Incident | None:
    """The timeline of one alert, oldest event first (None when the alert does not exist)."""
    aid = uuid.UUID(str(alert_id))
    a = system_alerts
    r = conn.execute(sa.select(a).where(a.c.id == aid)).first()
    if r is None:
        return None
    details = r.details if isinstance(r.details, dict) else {}
    ack_rows = conn.execute(sa.select(acks).where(acks.c.alert_id == aid).order_by(acks.c.acknowledged_at)).all()
    first_ack = ack_rows[0] if ack_rows else None
    s = IncidentSummary(aid, r.alert_type, severity(r.alert_type), r.message, r.business_account_id, _agent(details),
                        as_utc(r.created_at), as_utc(r.resolved_at) if r.resolved else None,
                        as_utc(first_ack.acknowledged_at) if first_ack else None,
                        first_ack.acknowledged_by if first_ack else None, _count(details))
    inc = Incident(s)
    ev = inc.events
    opened, end = s.opened_at or now, _window_end(s, now)
    ev.append(Event(opened, "opened", f"{s.alert_type} opened ({s.severity}): {clip(redact_text(r.message) or '', 500)}"))
    last_seen = as_utc(details.get("last_seen")) if details.get("last_seen") else None
    if s.repeats > 1:
        ev.append(Event(last_seen or as_utc(r.updated_at) or opened, "repeat",
                        f"seen {s.repeats} times in all (the last time here)"))
    for k in ack_rows:
        note = f": “{clip(k.note, 500)}”" if k.note else " (no comment)"
        ev.append(Event(as_utc(k.acknowledged_at), "acknowledged", f"acknowledged{note}", k.acknowledged_by))
    _notifications(conn, inc, aid)
    _silences(conn, inc, opened, end, now)
    _actions(conn, inc, aid, opened, end)
    _cause(conn, inc, details, opened, end)
    _ticks(conn, inc, opened, end)
    if s.resolved_at is not None:
        who = resolved_by(conn, [aid]).get(aid)
        inc.resolved_by = who or ("the worker (the agent beats again)" if s.alert_type == "agent_down"
                                  else "automatically (the condition cleared)")
        ev.append(Event(s.resolved_at, "resolved", f"resolved by {inc.resolved_by}", who))
    ev.sort(key=lambda e: (e.at, _ORDER.get(e.kind, 5)))
    return inc


_ORDER = {"cause": 0, "opened": 1, "maintenance": 2, "silence": 2, "repeat": 3, "notification": 4,
          "acknowledged": 5, "action": 6, "tick": 7, "resolved": 9}


def _notifications(conn, inc: Incident, aid) -> None:
    o = notification_outbox
    incident_ids = sa.select(notify_alert_rows.c.incident_id).where(notify_alert_rows.c.alert_id == aid)
    for m in conn.execute(sa.select(o.c.kind, o.c.route_label, o.c.status, o.c.attempts, o.c.last_error,
                                    o.c.created_at, o.c.sent_at, o.c.updated_at)
                          .where(sa.or_(o.c.alert_id == aid, o.c.incident_id.in_(incident_ids)))
                          .order_by(o.c.created_at)):
        route = m.route_label or "a route"
        if m.status == "sent":
            inc.notifications_sent += 1
            ev = Event(as_utc(m.sent_at or m.updated_at or m.created_at), "notification",
                       f"{m.kind} message sent to {route}")
        elif m.status in ("failed", "gave_up"):
            inc.notifications_failed += 1
            ev = Event(as_utc(m.updated_at or m.created_at), "notification",
                       f"{m.kind} message to {route} {'given up' if m.status == 'gave_up' else 'failed'} after "
                       f"{m.attempts} attempt(s): {clip(redact_text(m.last_error) or '', 300)}")
        else:
            ev = Event(as_utc(m.created_at), "notification", f"{m.kind} message to {route} queued ({m.status})")
        inc.events.append(ev)


def _silences(conn, inc: Incident, opened: datetime, end: datetime, now: datetime) -> None:
    s, sm = inc.summary, alert_silences
    for r in conn.execute(sa.select(sm).where(sm.c.starts_at <= end, sm.c.ends_at >= opened)):
        if (r.alert_type not in (None, s.alert_type)
                or (r.business_account_id is not None and r.business_account_id != s.business_account_id)
                or (r.agent_id is not None and r.agent_id != s.agent_id)):
            continue
        stop = min(as_utc(r.ends_at), as_utc(r.ended_early_at) or as_utc(r.ends_at))
        inc.events.append(Event(as_utc(r.starts_at), "silence",
                                f"silence until {stop:%Y-%m-%d %H:%M} UTC: “{clip(r.reason, 300)}”", r.created_by))
    for w in load_windows(conn, now=now, since=opened):
        if not w.covers(agent_id=s.agent_id, business_account_id=s.business_account_id):
            continue
        for start, stop in w.occurrences(opened - timedelta(seconds=w.duration_s or 0), end)[:20]:
            inc.events.append(Event(start, "maintenance", f"maintenance until {stop:%Y-%m-%d %H:%M} UTC: "
                                                          f"“{clip(w.reason, 300)}”", w.created_by))


def _actions(conn, inc: Incident, aid, opened: datetime, end: datetime) -> None:
    """People's audit rows (user_id set) on this alert, its account or its agent, from a little before it opened."""
    s, al = inc.summary, audit_log
    about = [al.c.resource_id == str(aid)]
    if s.business_account_id is not None:
        about += [_details_key("business_account_id") == str(s.business_account_id),
                  al.c.resource_id == str(s.business_account_id)]
    if s.agent_id is not None:
        about += [al.c.resource_id == s.agent_id, _details_key("agent_id") == s.agent_id]
    rows = conn.execute(sa.select(al.c.event_type, al.c.action, al.c.resource_type, al.c.resource_id, al.c.user_id,
                                  al.c.success, al.c.created_at, al.c.details)
                        .where(al.c.created_at >= opened - LOOKBACK, al.c.created_at <= end,
                               al.c.user_id.is_not(None), sa.or_(*about))
                        .order_by(al.c.created_at).limit(ACTIONS_CAP)).all()
    for r in rows:
        if r.event_type == "alert_acknowledged" and str(r.resource_id) == str(aid):
            continue  # shown from the acknowledgement itself, with its comment
        ok = "" if r.success is not False else " (failed)"
        note = ""
        d = redact(r.details) if isinstance(r.details, dict) else {}
        if d.get("reason"):
            note = f": “{clip(str(d['reason']), 200)}”"
        inc.events.append(Event(as_utc(r.created_at), "action",
                                f"{r.event_type} on {r.resource_type} {clip(str(r.resource_id), 60)}{ok}{note}",
                                r.user_id))


def _cause(conn, inc: Incident, details: dict, opened: datetime, end: datetime) -> None:
    """The heartbeat gap (agent_down) or the failed sends of the account (queue alerts) around the opening."""
    s = inc.summary
    if s.alert_type == "agent_down" and s.agent_id:
        last = conn.execute(sa.select(sa.func.max(hb.c.last_beat_at)).where(
            hb.c.agent_id == s.agent_id, hb.c.last_beat_at <= opened)).scalar()
        back = conn.execute(sa.select(sa.func.min(hb.c.last_beat_at)).where(
            hb.c.agent_id == s.agent_id, hb.c.last_beat_at > opened)).scalar()
        last, back = as_utc(last), as_utc(back)
        if last is not None:
            expected = details.get("schedule")
            inc.events.append(Event(last, "cause", f"last heartbeat of {s.agent_id} before the gap"
                                    + (f" (schedule: {expected})" if expected else "")))
        if back is not None and (s.resolved_at is None or back <= s.resolved_at + timedelta(minutes=5)):
            gap = f" after a gap of {fmt_duration((back - last).total_seconds())}" if last else ""
            inc.events.append(Event(back, "cause", f"{s.agent_id} beats again{gap}"))
        return
    if s.business_account_id is None:
        return
    q, at = post_queue, attempts
    rows = conn.execute(sa.select(at.c.outcome, sa.func.count(), sa.func.min(at.c.attempted_at),
                                  sa.func.max(at.c.attempted_at))
                        .select_from(at.join(q, q.c.id == at.c.queue_id))
                        .where(q.c.business_account_id == s.business_account_id,
                               at.c.attempted_at >= opened - LOOKBACK, at.c.attempted_at <= end,
                               at.c.outcome.in_(("failed", "dlq", "held")))
                        .group_by(at.c.outcome)).all()
    for outcome, n, first, last in rows:
        inc.events.append(Event(as_utc(first), "cause", f"{n} attempt(s) of this account ended {outcome} "
                                                        f"between here and {as_utc(last):%H:%M:%S} UTC"))


def _ticks(conn, inc: Incident, opened: datetime, end: datetime) -> None:
    t = worker_ticks
    where = (t.c.started_at >= opened, t.c.started_at <= end)
    inc.ticks_total = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar() or 0)
    failed = conn.execute(sa.select(t.c.started_at, t.c.error).where(*where, t.c.error.is_not(None))
                          .order_by(t.c.started_at).limit(TICKS_LISTED)).all()
    inc.ticks_failed = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
        *where, t.c.error.is_not(None))).scalar() or 0)
    for r in failed:
        inc.events.append(Event(as_utc(r.started_at), "tick", f"worker tick failed: {clip(redact_text(r.error), 200)}"))
    shown = conn.execute(sa.select(t.c.started_at, t.c.sent, t.c.failed, t.c.dlq).where(*where, t.c.error.is_(None))
                         .order_by(t.c.started_at).limit(TICKS_LISTED)).all()
    for r in shown:
        inc.events.append(Event(as_utc(r.started_at), "tick",
                                f"worker tick: {r.sent or 0} sent, {r.failed or 0} failed, {r.dlq or 0} dead-lettered"))


def _fmt(td: timedelta | None) -> str:
    return "—" if td is None else fmt_duration(td.total_seconds())


def postmortem_markdown(inc: Incident, *, now: datetime, account_name: str | None = None, tz=None) -> str:
    """A postmortem draft: summary, durations, the timeline, and the headings the team fills in. Untrusted
    text (messages, comments, reasons) is put in code spans or escaped, so the export renders as written."""
    s = inc.summary

    def when(t: datetime | None) -> str:
        if t is None:
            return "—"
        return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z") if tz else f"{t:%Y-%m-%d %H:%M:%S} UTC"

    subject = s.agent_id or account_name or (str(s.business_account_id) if s.business_account_id else "")
    lines = [f"# Postmortem draft: {md_escape(s.alert_type)}" + (f" · {md_escape(subject)}" if subject else ""), "",
             f"- Severity: {s.severity}",
             f"- State: {s.state}",
             f"- Opened: {when(s.opened_at)}",
             f"- Acknowledged: {when(s.acknowledged_at)}" + (f" by {md_escape(s.acknowledged_by)}"
                                                             if s.acknowledged_by else ""),
             f"- Resolved: {when(s.resolved_at)}" + (f" by {md_escape(inc.resolved_by)}" if inc.resolved_by else ""),
             f"- Time to acknowledge: {_fmt(s.time_to_acknowledge())}",
             f"- Time to resolve: {_fmt(s.time_to_resolve())}" + ("" if s.resolved_at else
                                                                 f" (open for {_fmt(s.time_to_resolve(now))} so far)"),
             f"- Occurrences: {s.repeats}",
             f"- Notifications: {inc.notifications_sent} sent, {inc.notifications_failed} failed",
             f"- Worker ticks during the incident: {inc.ticks_total} ({inc.ticks_failed} failed)",
             "", "## Timeline", "", "| time | what | who |", "|---|---|---|"]
    for e in inc.events:
        what = md_escape(e.text).replace("|", "\\|").replace("\n", " ")
        who = md_escape(e.by or "").replace("|", "\\|")
        lines.append(f"| {when(e.at)} | **{e.kind}** {what} | {who} |")
    lines += ["", "## Impact", "", "_What did customers notice? How many replies went out late?_", "",
              "## Root cause", "", "_Why did it happen?_", "", "## What went well / what did not", "", "_…_", "",
              "## Follow-ups", "", "- [ ] …", ""]
    return "\n".join(lines)


def timeline_rows(inc: Incident) -> list[dict[str, Any]]:
    """The events as rows for a table, with the time since the opening."""
    opened = inc.summary.opened_at
    return [{"at": e.at, "after": "—" if opened is None else ("-" if e.at < opened else "+")
             + fmt_duration(abs((e.at - opened).total_seconds())), "kind": e.kind, "what": e.text, "by": e.by}
            for e in inc.events]
