"""Alert notifications: routes, detection, the outbox, delivery through Apprise, silences and
acknowledgements (docs/notifications.md). Never imports streamlit.

    routes(settings)                         -> [Route]: ALERT_NOTIFY_URLS (+ _CRITICAL/_ERROR/_WARNING)
    detect(conn, settings, now=...)          -> DetectReport: reads system_alerts, writes our state and
                                                the outbox in the caller's transaction
    deliver_due(engine, settings, now=...)   -> DeliveryReport: claims due outbox rows (SKIP LOCKED),
                                                sends each through Apprise with a timeout, records it
    notify_tick(engine, settings)            -> both, as the worker runs them
    send_test(engine, settings, route_id, actor=..., now=...)
    create_silence / end_silence / list_silences, acknowledge / acknowledgements, alert_badges,
    recent_deliveries, notification_totals

Detection reads `system_alerts`, so it sees alerts written by our worker, the user's backend or
anyone. An *incident* is what gets messages: one per (alert_type, business account, agent id) while
any of its rows is unresolved. Repeats are either a higher details.count on the same row (our
worker's open_or_update_alert) or further unresolved rows of the same key (the spec's backend
inserts one row per failure); both add to the incident's repeat count. An incident gets one
"opened" message per route, at most one digest of repeats per ALERT_REPEAT_INTERVAL_S (none while
acknowledged or silenced), and one "resolved" message on the routes that got the opening once all
of its rows are resolved.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.alerts.maintenance import load_windows
from lib.alerts.store import SEVERITIES, resolved_by, severity
from lib.core.audit import log_audit
from lib.core.counters import count_notification
from lib.core.db import insert_ignore, write_transaction
from lib.core.identity import Actor, require_operator
from lib.core.schema import alert_acknowledgements as acks
from lib.core.schema import alert_silences as silences_t
from lib.core.schema import instagram_business_accounts as accounts_t
from lib.core.schema import notification_outbox as outbox
from lib.core.schema import notify_alert_rows as rows_t
from lib.core.schema import notify_incidents as inc_t
from lib.core.schema import system_alerts
from lib.core.settings import Settings
from lib.core.text import clip
from lib.core.timeutil import as_utc, fmt_duration, utcnow

log = logging.getLogger("worker.notify")

MESSAGE_CHARS = 500  # of the alert's message in a notification
FAST_RETRIES = 3  # failed deliveries retried at the next tick; then backoff
BACKOFF_CAP_S = 3600
SENDING_LEASE_S = 300  # a row left "sending" by a crashed worker is taken back after this
DELIVERY_BATCH = 100  # rows one deliver_due call sends at most
CLAIM_BATCH = 5  # rows claimed at a time, so that several workers share a backlog
DELIVERY_HISTORY = 200
NOTIFY_TYPES = {"CRITICAL": "failure", "ERROR": "failure", "WARNING": "warning"}
_DETECT_LOCK_KEY = 0x4E4F544946590001  # pg_try_advisory_xact_lock: one detection at a time
OUTCOMES = ("pending", "sending", "failed", "sent", "gave_up")


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    id: str  # stable, secret-free: what the outbox stores
    url: str = field(repr=False)  # the Apprise URL: a secret, never logged or shown
    severities: tuple[str, ...]
    label: str  # masked, safe to show and log
    valid: bool = True
    problem: str | None = None

    def takes(self, sev: str) -> bool:
        return sev in self.severities


def split_urls(value: str | None) -> list[str]:
    """Apprise URLs separated by whitespace and/or commas."""
    return [u for u in re.split(r"[\s,]+", value or "") if u]


def route_id(url: str) -> str:
    return "r" + hashlib.sha256(url.encode()).hexdigest()[:10]


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")
_DNS_NAME = re.compile(r"^(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")


def _label_host(url: str) -> str | None:
    """The URL's host when it is one: an IP address, localhost or a dotted DNS name. Many Apprise
    services put a credential where a host would be (ntfy://<topic>, tgram://<bot token>,
    discord://<webhook id>/...): those are not host names and are never shown."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    if host == "localhost":
        return host
    try:
        ip = ipaddress.ip_address(host)
        return f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        pass
    return host if _DNS_NAME.match(host) else None


def route_label(url: str, rid: str | None = None) -> str:
    """How a route is shown, stored (notification_outbox.route_label, audit details) and logged:
    scheme + host + a short fingerprint (the first digits of its route id), e.g.
    `jsons://hooks.example.com #3f9a1c`. Never a user name, password, path segment, query value or
    ntfy topic: Apprise's privacy mode keeps paths and topics, and those often are the credential."""
    head, sep, _ = url.partition("://")
    scheme = head.strip().lower() if sep and _SCHEME.match(head.strip().lower()) else "?"
    fingerprint = (rid or route_id(url)).lstrip("r")[:6]
    return f"{scheme}://{_label_host(url) or '…'} #{fingerprint}"


def mask_notify_url(url: str) -> str:
    """The route's label (route_label): the one way a notification URL is ever shown."""
    return route_label(url)


def understood(url: str) -> bool:
    """Apprise can build a notifier from this URL."""
    try:
        import apprise

        return apprise.Apprise.instantiate(url) is not None
    except Exception:  # noqa: BLE001 - a URL Apprise chokes on is not understood
        return False


def stored_label(label: str | None, rid: str | None) -> str | None:
    """A route label read back from notification_outbox, in today's form: rows written before the
    labels were cut to scheme + host may hold a path, a topic or a masked user name."""
    if not label or label.startswith("("):  # "(route no longer configured)"
        return label
    return route_label(label.split(" #", 1)[0], rid)


def _secret_parts(url: str) -> list[str]:
    """Pieces of a URL that may be secret, longest first (for scrubbing error texts)."""
    pieces = {url}
    try:
        parts = urlsplit(url)
        pieces.update(p for p in (parts.username, parts.password, parts.hostname) if p)
        pieces.update(seg for seg in parts.path.split("/") if seg)
        pieces.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True) if v)
    except ValueError:
        pass
    return sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True)


def scrub(text: str, route: Route | None) -> str:
    """Error text with the route's URL and its secret-looking pieces replaced by ***."""
    if route is None or not text:
        return text
    for piece in _secret_parts(route.url):
        if piece in ("127.0.0.1", "localhost"):
            continue
        text = text.replace(piece, "***")
    return text


def routes(settings: Settings) -> list[Route]:
    """The configured routes: ALERT_NOTIFY_URLS get every severity, ALERT_NOTIFY_URLS_<SEVERITY> one
    more each. A URL listed twice is one route (a CRITICAL alert reaches it once)."""
    wanted: dict[str, set[str]] = {}
    for url in split_urls(settings.alert_notify_urls):
        wanted.setdefault(url, set()).update(SEVERITIES)
    for sev in SEVERITIES:
        for url in split_urls(getattr(settings, f"alert_notify_urls_{sev.lower()}")):
            wanted.setdefault(url, set()).add(sev)
    out = []
    for url, sevs in wanted.items():
        label = route_label(url)
        valid = understood(url)
        out.append(Route(id=route_id(url), url=url, severities=tuple(s for s in SEVERITIES if s in sevs),
                         label=label, valid=valid,
                         problem=None if valid else "Apprise does not understand this URL (unknown scheme or bad syntax)"))
    return out


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
def group_key(alert_type: str, business_account_id, agent_id) -> str:
    return f"{alert_type}|{business_account_id or ''}|{agent_id or ''}"


def subject(account_name: str | None, agent_id: str | None) -> str:
    return account_name or agent_id or "system"


def alert_link(settings: Settings, *, alert_type: str, account_name: str | None, state: str) -> str | None:
    """DASHBOARD_URL + the System Alerts URL with its filters (type, status, account)."""
    base = (settings.dashboard_url or "").rstrip("/")
    if not base:
        return None
    if alert_type == "review_waiting":  # rows waiting for review (lib/queue/review.py): the review page itself
        return f"{base}/review"
    query = [("alert_type", alert_type), ("alert_state", state), ("alert_view", "each")]
    if account_name:
        query.append(("account", account_name))
    return f"{base}/system_alerts?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query)


def _fmt(ts: datetime | None, tz: ZoneInfo, with_date: bool = True) -> str:
    if ts is None:
        return "—"
    local = ts.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M %Z" if with_date else "%H:%M %Z")


def _tz(settings: Settings) -> ZoneInfo:
    try:
        return ZoneInfo(settings.display_timezone or "UTC")
    except Exception:  # noqa: BLE001 - a bad zone name must not stop notifications
        return ZoneInfo("UTC")


def title_for(sev: str, alert_type: str, subj: str) -> str:
    return f"[{sev}] {alert_type} · {subj}"


def opened_message(settings: Settings, *, sev: str, alert_type: str, subj: str, message: str | None,
                   agent_id: str | None, account_name: str | None, first_seen: datetime | None,
                   occurrences: int, silence_ended: bool = False) -> tuple[str, str]:
    tz = _tz(settings)
    lines = [clip((message or "(no message)").replace("\r", " "), MESSAGE_CHARS), ""]
    if account_name:
        lines.append(f"Account: {account_name}")
    if agent_id:
        lines.append(f"Agent: {agent_id}")
    lines.append(f"First seen: {_fmt(first_seen, tz)}")
    if occurrences > 1:
        lines.append(f"Seen {occurrences} times so far.")
    if silence_ended:
        lines.append("It was silenced when it opened; the silence has ended.")
    link = alert_link(settings, alert_type=alert_type, account_name=account_name, state="open")
    if link:
        lines.append(f"Open in the dashboard: {link}")
    return title_for(sev, alert_type, subj), "\n".join(lines)


def digest_message(settings: Settings, *, sev: str, alert_type: str, subj: str, repeats: int,
                   since: datetime | None, account_name: str | None, total: int) -> tuple[str, str]:
    tz = _tz(settings)
    times = "time" if repeats == 1 else "times"
    lines = [f"Repeated {repeats} {times} since {_fmt(since, tz, with_date=False)} (still open; {total} in all).",
             "Acknowledge it on the System Alerts page to stop these digests."]
    link = alert_link(settings, alert_type=alert_type, account_name=account_name, state="open")
    if link:
        lines.append(f"Open in the dashboard: {link}")
    return f"{title_for(sev, alert_type, subj)} — repeated {repeats} {times}", "\n".join(lines)


def resolved_message(settings: Settings, *, sev: str, alert_type: str, subj: str, resolver: str,
                     opened: datetime | None, now: datetime, total: int, account_name: str | None) -> tuple[str, str]:
    tz = _tz(settings)
    lines = [f"Resolved by {resolver} at {_fmt(now, tz)}."]
    if opened is not None:
        lines.append(f"Open for {fmt_duration((now - opened).total_seconds())}; {total} occurrence{'s' if total != 1 else ''}.")
    link = alert_link(settings, alert_type=alert_type, account_name=account_name, state="resolved")
    if link:
        lines.append(f"In the dashboard: {link}")
    return f"[RESOLVED] {title_for(sev, alert_type, subj)}", "\n".join(lines)


def backoff_s(attempts: int) -> float:
    """Wait before the next attempt after `attempts` failures: the next tick for the first three,
    then 1, 2, 4 … minutes, capped at an hour."""
    if attempts < FAST_RETRIES:
        return 0.0
    return float(min(60 * 2 ** (attempts - FAST_RETRIES), BACKOFF_CAP_S))


# ---------------------------------------------------------------------------------------------
# Silences (pure matching; storage below)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Silence:
    id: uuid.UUID
    alert_type: str | None
    business_account_id: uuid.UUID | None
    agent_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime | None
    ended_early_at: datetime | None = None
    ended_by: str | None = None

    @property
    def effective_end(self) -> datetime:
        return min(self.ends_at, self.ended_early_at) if self.ended_early_at else self.ends_at

    def is_active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.effective_end

    def state(self, now: datetime) -> str:
        if self.ended_early_at is not None and self.ended_early_at <= now:
            return "ended early"
        if now < self.starts_at:
            return "scheduled"
        return "active" if now < self.ends_at else "expired"

    def matches(self, alert_type: str | None, business_account_id, agent_id: str | None) -> bool:
        if self.alert_type is not None and self.alert_type != alert_type:
            return False
        if self.business_account_id is not None and self.business_account_id != business_account_id:
            return False
        if self.agent_id is not None and self.agent_id != agent_id:
            return False
        return True


def matching_silence(silences: list[Silence], *, alert_type, business_account_id, agent_id, now) -> Silence | None:
    for s in silences:
        if s.is_active(now) and s.matches(alert_type, business_account_id, agent_id):
            return s
    return None


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------
@dataclass
class DetectReport:
    skipped: bool = False  # another worker held the detection lock
    new_rows: int = 0
    repeats: int = 0
    opened: int = 0  # incidents whose opening was queued
    silenced: int = 0  # incidents held back by a silence
    digests: int = 0
    resolved: int = 0
    queued: int = 0  # outbox rows written


def _detect_lock(conn: sa.Connection) -> bool:
    if conn.dialect.name == "postgresql":
        return bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_DETECT_LOCK_KEY))).scalar())
    return True  # SQLite: BEGIN IMMEDIATE already serialises writers


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def load_silences(conn: sa.Connection, *, active_at: datetime | None = None, limit: int = 500) -> list[Silence]:
    s = silences_t
    query = sa.select(s)
    if active_at is not None:
        query = query.where(s.c.starts_at <= active_at, s.c.ends_at > active_at,
                            sa.or_(s.c.ended_early_at.is_(None), s.c.ended_early_at > active_at))
    rows = conn.execute(query.order_by(s.c.ends_at.desc()).limit(limit)).all()
    return [Silence(r.id, r.alert_type, r.business_account_id, r.agent_id, as_utc(r.starts_at), as_utc(r.ends_at),
                    r.reason, r.created_by, as_utc(r.created_at), as_utc(r.ended_early_at), r.ended_by) for r in rows]


def maintenance_silences(conn: sa.Connection, *, now: datetime) -> list[Silence]:
    """The maintenance windows active now, as silences of every type for what they cover: an incident
    they cover gets no opening and no digest until the window is over."""
    out = []
    for w in load_windows(conn, now=now):
        span = w.occurrence_at(now)
        if span is not None:
            out.append(Silence(w.id, None, w.business_account_id, w.agent_id, span[0], span[1],
                               f"maintenance: {w.reason}", w.created_by, w.created_at))
    return out


def _account_names(conn: sa.Connection, ids) -> dict:
    ids = [i for i in set(ids) if i is not None]
    if not ids:
        return {}
    return {r.id: r.username for r in conn.execute(
        sa.select(accounts_t.c.id, accounts_t.c.username).where(accounts_t.c.id.in_(ids)))}


def detect(conn: sa.Connection, settings: Settings, *, now: datetime) -> DetectReport:
    """Compare the unresolved system_alerts rows with what we saw last time and queue the messages
    that follow, in the caller's transaction (so state and outbox commit together).

    On PostgreSQL one worker detects at a time (a transaction-scoped advisory lock; the others skip);
    on SQLite the caller's write transaction serialises. Outbox rows carry a unique dedupe key, so
    even a second detection could not queue a message twice."""
    rep = DetectReport()
    if not _detect_lock(conn):
        rep.skipped = True
        return rep
    route_list = [r for r in routes(settings) if r.valid]
    interval = timedelta(seconds=max(1, settings.alert_repeat_interval_s))
    t = system_alerts
    agent_expr = t.c.details["agent_id"].as_string().label("agent_id")
    count_expr = t.c.details["count"].as_string().label("count")
    first_expr = t.c.details["first_seen"].as_string().label("first_seen")
    # Only the differences since the last pass are read (three joins on primary keys), so a pass
    # with thousands of open alerts and nothing new costs little.
    new_rows = conn.execute(
        sa.select(t.c.id, t.c.alert_type, t.c.business_account_id, agent_expr, count_expr, first_expr,
                  sa.func.substr(t.c.message, 1, MESSAGE_CHARS + 50).label("message"), t.c.created_at, t.c.updated_at,
                  rows_t.c.alert_id.label("seen_before"))
        .select_from(t.outerjoin(rows_t, rows_t.c.alert_id == t.c.id))
        .where(t.c.resolved.is_(False), sa.or_(rows_t.c.alert_id.is_(None), rows_t.c.resolved.is_(True)))
        .order_by(t.c.created_at, t.c.id)).all()
    changed = conn.execute(
        sa.select(t.c.id, count_expr, t.c.updated_at, rows_t.c.incident_id, rows_t.c.last_count,
                  rows_t.c.last_updated_at)
        .select_from(t.join(rows_t, rows_t.c.alert_id == t.c.id))
        .where(t.c.resolved.is_(False), rows_t.c.resolved.is_(False),
               t.c.updated_at.is_distinct_from(rows_t.c.last_updated_at))).all()
    gone_rows = conn.execute(
        sa.select(rows_t.c.alert_id, rows_t.c.incident_id)
        .select_from(rows_t.outerjoin(t, t.c.id == rows_t.c.alert_id))
        .where(rows_t.c.resolved.is_(False), sa.or_(t.c.id.is_(None), t.c.resolved.is_(True)))).all()
    baseline = conn.execute(sa.select(rows_t.c.alert_id).limit(1)).first() is None
    # the open incidents this pass may act on: touched by a difference, a row arriving for their key,
    # an opening not sent yet (silenced), or repeats waiting for a digest that is due
    keys = {group_key(r.alert_type, r.business_account_id, r.agent_id) for r in new_rows}
    touched_ids = {r.incident_id for r in changed} | {r.incident_id for r in gone_rows}
    wanted = [inc_t.c.opened_sent.is_(False),
              sa.and_(inc_t.c.repeats_pending > 0,
                      sa.func.coalesce(inc_t.c.last_message_at, inc_t.c.opened_at) <= now - interval)]
    for chunk in _chunks(sorted(touched_ids)):
        wanted.append(inc_t.c.id.in_(chunk))
    for chunk in _chunks(sorted(keys)):
        wanted.append(inc_t.c.group_key.in_(chunk))
    incidents = {r.id: dict(r._mapping) for r in conn.execute(
        sa.select(inc_t).where(inc_t.c.state == "open", sa.or_(*wanted)))}
    by_key = {i["group_key"]: i for i in incidents.values()}
    dirty: set[uuid.UUID] = set()
    first_messages: dict[uuid.UUID, Any] = {}

    # rows gone from the unresolved set: resolved (or deleted)
    gone = [r.alert_id for r in gone_rows]
    for chunk in _chunks(gone):
        conn.execute(sa.update(rows_t).where(rows_t.c.alert_id.in_(chunk)).values(resolved=True))
    touched = {r.incident_id for r in gone_rows}
    still_open: set = set()
    for chunk in _chunks(sorted(touched)):
        still_open.update(conn.execute(sa.select(rows_t.c.incident_id).where(
            rows_t.c.resolved.is_(False), rows_t.c.incident_id.in_(chunk)).distinct()).scalars())
    to_resolve = [i for i in touched if i not in still_open and i in incidents]
    for inc_id in to_resolve:  # a row arriving now for the same key starts a new incident
        by_key.pop(incidents[inc_id]["group_key"], None)

    # new rows: a new incident, or a repeat of an open one
    new_tracked: list[dict] = []
    for r in new_rows:
        aid = r.id
        rep.new_rows += 1
        count = max(1, _int(r.count) or 1)
        key = group_key(r.alert_type, r.business_account_id, r.agent_id)
        inc = by_key.get(key)
        created = as_utc(r.created_at) or now
        if inc is None:
            first_seen = as_utc(r.first_seen) if r.first_seen else created
            inc = {"id": uuid.uuid4(), "group_key": key, "alert_type": r.alert_type, "severity": severity(r.alert_type),
                   "business_account_id": r.business_account_id, "agent_id": r.agent_id, "first_alert_id": aid,
                   "state": "open", "opened_sent": False, "routes": [], "silence_id": None,
                   "repeats_total": count - 1, "repeats_pending": count - 1, "pending_since": first_seen if count > 1 else None,
                   "digests": 0, "first_seen": first_seen, "opened_at": now, "last_message_at": None,
                   "resolved_at": None, "resolved_by": None, "updated_at": now, "_new": True}
            last_activity = as_utc(r.updated_at) or created
            if baseline and now - last_activity > interval:
                inc["opened_sent"] = True  # adopted: open before notifications existed, quiet since
            incidents[inc["id"]] = inc
            by_key[key] = inc
            first_messages[inc["id"]] = r.message
        else:
            inc["repeats_total"] += count
            inc["repeats_pending"] += count
            inc["pending_since"] = inc["pending_since"] or created
            rep.repeats += count
        dirty.add(inc["id"])
        values = dict(incident_id=inc["id"], last_count=count, last_updated_at=r.updated_at, resolved=False, seen_at=now)
        if r.seen_before is not None:  # resolved once, unresolved again by someone: new again
            conn.execute(sa.update(rows_t).where(rows_t.c.alert_id == aid).values(**values))
        else:
            new_tracked.append({"alert_id": aid, **values})
    for start in range(0, len(new_tracked), 1000):  # one statement per thousand rows (a first run may see many)
        conn.execute(sa.insert(rows_t), new_tracked[start:start + 1000])

    # rows seen before whose updated_at moved: a higher count (or a change without a count) = repeats
    for r in changed:
        inc = incidents.get(r.incident_id)
        if inc is None:
            continue
        count = _int(r.count)
        delta = 0
        if count is not None and count > r.last_count:
            delta = count - r.last_count
        elif count is None and r.updated_at is not None and (
                r.last_updated_at is None or as_utc(r.updated_at) > as_utc(r.last_updated_at)):
            delta = 1
        if delta:
            inc["repeats_total"] += delta
            inc["repeats_pending"] += delta
            inc["pending_since"] = inc["pending_since"] or as_utc(r.updated_at) or now
            rep.repeats += delta
            dirty.add(inc["id"])
        conn.execute(sa.update(rows_t).where(rows_t.c.alert_id == r.id).values(
            last_count=max(count or 0, r.last_count + delta), last_updated_at=r.updated_at))

    names = _account_names(conn, [i["business_account_id"] for i in incidents.values()])
    active = load_silences(conn, active_at=now) + maintenance_silences(conn, now=now)
    acked = _acked_incidents(conn, [i for i in incidents if not incidents[i].get("_new")])
    messages: list[dict] = []

    def queue(inc, kind, title, body, route_ids, *, n=0, notify_type=None):
        for rid in route_ids:
            route = next((r for r in route_list if r.id == rid), None)
            messages.append({
                "id": uuid.uuid4(), "dedupe_key": f"{inc['id']}:{kind}:{n}:{rid}", "incident_id": inc["id"],
                "alert_id": inc["first_alert_id"], "kind": kind, "route_id": rid,
                "route_label": route.label if route else "(route no longer configured)",
                "severity": inc["severity"], "alert_type": inc["alert_type"],
                "business_account_id": inc["business_account_id"], "title": title, "body": body,
                "notify_type": notify_type or NOTIFY_TYPES.get(inc["severity"], "warning"), "status": "pending",
                "attempts": 0, "next_attempt_at": now, "updated_at": now,
                "created_at": now + timedelta(microseconds=len(messages))})  # delivery keeps the queueing order

    for inc_id in to_resolve:
        inc = incidents[inc_id]
        ids = [r.alert_id for r in conn.execute(sa.select(rows_t.c.alert_id).where(rows_t.c.incident_id == inc_id))]
        who = resolved_by(conn, ids)
        still_there = {r.id for r in conn.execute(sa.select(system_alerts.c.id).where(system_alerts.c.id.in_(ids)))}
        if who:
            resolver = who.get(inc["first_alert_id"]) or next(iter(who.values()))
        elif not still_there:
            resolver = "deletion (the alert rows are gone)"
        elif inc["alert_type"] == "agent_down":
            resolver = "the worker (the agent beats again)"
        else:
            resolver = "someone outside the dashboard (no audit record)"
        inc.update(state="resolved", resolved_at=now, resolved_by=resolver, updated_at=now)
        dirty.add(inc_id)
        rep.resolved += 1
        if inc["opened_sent"] and inc["routes"]:
            name = names.get(inc["business_account_id"])
            title, body = resolved_message(settings, sev=inc["severity"], alert_type=inc["alert_type"],
                                           subj=subject(name, inc["agent_id"]), resolver=resolver,
                                           opened=inc["first_seen"], now=now, total=inc["repeats_total"] + 1,
                                           account_name=name)
            queue(inc, "resolved", title, body, inc["routes"], notify_type="success")

    for inc_id, inc in incidents.items():
        if inc["state"] != "open":
            continue
        name = names.get(inc["business_account_id"])
        subj = subject(name, inc["agent_id"])
        silence = matching_silence(active, alert_type=inc["alert_type"], business_account_id=inc["business_account_id"],
                                   agent_id=inc["agent_id"], now=now)
        if not inc["opened_sent"]:
            if silence is not None:
                if inc["silence_id"] != silence.id:
                    inc["silence_id"] = silence.id
                    dirty.add(inc_id)
                if inc.get("_new"):
                    rep.silenced += 1
                continue
            message = first_messages.get(inc_id)
            if message is None:
                message = conn.execute(sa.select(sa.func.substr(system_alerts.c.message, 1, MESSAGE_CHARS + 50))
                                       .where(system_alerts.c.id == inc["first_alert_id"])).scalar()
            targets = [r.id for r in route_list if r.takes(inc["severity"])]
            title, body = opened_message(settings, sev=inc["severity"], alert_type=inc["alert_type"], subj=subj,
                                         message=message, agent_id=inc["agent_id"], account_name=name,
                                         first_seen=inc["first_seen"], occurrences=inc["repeats_total"] + 1,
                                         silence_ended=inc["silence_id"] is not None)
            queue(inc, "opened", title, body, targets)
            inc.update(opened_sent=True, routes=targets, repeats_pending=0, pending_since=None, last_message_at=now)
            dirty.add(inc_id)
            rep.opened += 1
            continue
        if inc["repeats_pending"] <= 0 or silence is not None or inc_id in acked or not inc["routes"]:
            continue
        last = inc["last_message_at"] or inc["opened_at"]
        if now - as_utc(last) < interval:
            continue
        title, body = digest_message(settings, sev=inc["severity"], alert_type=inc["alert_type"], subj=subj,
                                     repeats=inc["repeats_pending"], since=as_utc(inc["pending_since"]),
                                     account_name=name, total=inc["repeats_total"] + 1)
        inc["digests"] += 1
        queue(inc, "digest", title, body, inc["routes"], n=inc["digests"])
        inc.update(repeats_pending=0, pending_since=None, last_message_at=now)
        dirty.add(inc_id)
        rep.digests += 1

    columns = [c.name for c in inc_t.columns]
    inserts = []
    for inc_id in dirty:
        inc = incidents[inc_id]
        values = {k: inc[k] for k in columns if k != "id"}
        values["updated_at"] = now
        if inc.get("_new"):
            inserts.append({"id": inc_id, **values})
        else:
            conn.execute(sa.update(inc_t).where(inc_t.c.id == inc_id).values(**values))
    for start in range(0, len(inserts), 1000):
        conn.execute(sa.insert(inc_t), inserts[start:start + 1000])
    rep.queued = insert_ignore(conn, outbox, messages, key="dedupe_key")
    return rep


def _chunks(items, size: int = 500):
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _acked_incidents(conn: sa.Connection, incident_ids) -> set[uuid.UUID]:
    ids = list(incident_ids)
    if not ids:
        return set()
    return {r.incident_id for r in conn.execute(
        sa.select(rows_t.c.incident_id).join(acks, acks.c.alert_id == rows_t.c.alert_id)
        .where(rows_t.c.incident_id.in_(ids)).distinct())}


# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------
@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0  # will be retried
    gave_up: int = 0
    outcomes: dict[uuid.UUID, str] = field(default_factory=dict)

    def line(self) -> str:
        return f"notify claimed={self.claimed} sent={self.sent} failed={self.failed} gave_up={self.gave_up}"


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error: str | None = None
    elapsed_s: float = 0.0


def send(route: Route, *, title: str, body: str, notify_type: str, timeout_s: float,
         body_format: str = "text") -> SendResult:
    """One Apprise call to one route, limited to `timeout_s`; errors come back scrubbed of secrets."""
    import time

    import apprise

    started = time.monotonic()
    try:
        ap = apprise.Apprise()
        if not ap.add(route.url):
            return SendResult(False, "Apprise does not understand this URL", 0.0)
        result = ap.notify(body=body, title=title, notify_type=notify_type, body_format=body_format, timeout=timeout_s)
        elapsed = time.monotonic() - started
        if result:
            return SendResult(True, None, elapsed)
        lines = [e.message if hasattr(e, "message") else str(e) for e in result.logs()]
        reason = "; ".join(lines[-3:]) or f"Apprise reported {result.status.name}"
        return SendResult(False, clip(scrub(f"{result.status.name}: {reason}", route), 1000), elapsed)
    except Exception as exc:  # noqa: BLE001 - a plugin bug is a failed delivery, not a dead worker
        return SendResult(False, clip(scrub(f"{type(exc).__name__}: {exc}", route), 1000), time.monotonic() - started)


def claim_due(engine: Engine, *, now: datetime, limit: int = DELIVERY_BATCH, skip=()) -> list:
    """Due outbox rows -> sending (claim token: claimed_at). SKIP LOCKED: workers never share a row.
    `skip`: rows this call already tried (a failure waits for the next tick)."""
    o = outbox
    due = sa.or_(
        sa.and_(o.c.status.in_(("pending", "failed")), o.c.next_attempt_at <= now),
        sa.and_(o.c.status == "sending", o.c.claimed_at < now - timedelta(seconds=SENDING_LEASE_S)),
    )
    if skip:
        due = sa.and_(due, o.c.id.not_in(list(skip)))
    with write_transaction(engine) as conn:
        rows = conn.execute(
            sa.select(o.c.id, o.c.route_id, o.c.title, o.c.body, o.c.notify_type, o.c.attempts, o.c.kind)
            .where(due).order_by(o.c.created_at, o.c.id).limit(limit).with_for_update(skip_locked=True)
        ).all()
        if rows:
            conn.execute(sa.update(o).where(o.c.id.in_([r.id for r in rows]))
                         .values(status="sending", claimed_at=now, updated_at=now))
    return rows


def _record(engine: Engine, row, token: datetime, result: SendResult, *, max_attempts: int) -> str:
    """The attempt's outcome, if the row is still ours (claim token). The backoff counts from the
    claim time, so a caller's simulated clock stays consistent."""
    o = outbox
    now = token
    attempts = (row.attempts or 0) + 1
    if result.ok:
        values = dict(status="sent", attempts=attempts, sent_at=now, last_error=None, updated_at=now)
    elif attempts >= max_attempts:
        values = dict(status="gave_up", attempts=attempts, last_error=result.error, updated_at=now)
    else:
        values = dict(status="failed", attempts=attempts, last_error=result.error, updated_at=now,
                      next_attempt_at=now + timedelta(seconds=backoff_s(attempts)))
    with engine.begin() as conn:
        done = conn.execute(sa.update(o).where(o.c.id == row.id, o.c.status == "sending", o.c.claimed_at == token)
                            .values(**values)).rowcount
    return values["status"] if done else "lost_claim"


def deliver_due(engine: Engine, settings: Settings, *, now: datetime | None = None,
                limit: int = DELIVERY_BATCH) -> DeliveryReport:
    """Send what is due, one Apprise call per row with ALERT_NOTIFY_TIMEOUT_S; a failure is retried at
    the next tick (backoff after three), given up after ALERT_NOTIFY_MAX_ATTEMPTS attempts."""
    now = now or utcnow()
    rep = DeliveryReport()
    by_id = {r.id: r for r in routes(settings)}
    while rep.claimed < limit:
        rows = claim_due(engine, now=now, limit=min(CLAIM_BATCH, limit - rep.claimed), skip=rep.outcomes)
        if not rows:
            break
        rep.claimed += len(rows)
        _deliver_rows(engine, settings, rows, by_id, rep, now)
    return rep


def _deliver_rows(engine: Engine, settings: Settings, rows, by_id: dict, rep: DeliveryReport, now: datetime) -> None:
    for row in rows:
        route = by_id.get(row.route_id)
        if route is None:
            result = SendResult(False, "route no longer configured (its URL was removed from the settings)")
            status = _record(engine, row, now, result, max_attempts=1)
        elif not route.valid:
            status = _record(engine, row, now, SendResult(False, route.problem), max_attempts=1)
        else:
            result = send(route, title=row.title, body=row.body, notify_type=row.notify_type,
                          timeout_s=settings.alert_notify_timeout_s,
                          body_format="html" if row.kind == "weekly_digest" else "text")  # lib/notify/digest.py
            status = _record(engine, row, now, result, max_attempts=max(1, settings.alert_notify_max_attempts))
            level = logging.INFO if result.ok else logging.WARNING
            log.log(level, "notification %s %s to %s -> %s%s (%.2fs)", row.kind, row.id, route.label, status,
                    f" error={result.error}" if result.error else "", result.elapsed_s)
        rep.outcomes[row.id] = status
        if status in ("sent", "failed", "gave_up"):
            count_notification(status)  # agent_dashboard_notifications_total{outcome}
        if status == "sent":
            rep.sent += 1
        elif status == "failed":
            rep.failed += 1
        elif status == "gave_up":
            rep.gave_up += 1


@dataclass
class NotifyReport:
    detect: DetectReport
    delivery: DeliveryReport

    def line(self) -> str:
        d = self.detect
        return (f"notify detect new={d.new_rows} repeats={d.repeats} opened={d.opened} silenced={d.silenced} "
                f"digests={d.digests} resolved={d.resolved} queued={d.queued}{' skipped' if d.skipped else ''} "
                f"delivery claimed={self.delivery.claimed} sent={self.delivery.sent} failed={self.delivery.failed} "
                f"gave_up={self.delivery.gave_up}")


KEEP_HISTORY = timedelta(days=30)  # finished deliveries and resolved incidents are kept this long


def notify_tick(engine: Engine, settings: Settings, *, now: datetime | None = None) -> NotifyReport:
    """What the worker runs every tick and every ~15 s: detect (one transaction), then deliver."""
    now = now or utcnow()
    scrub_apprise_logs(settings)
    with write_transaction(engine) as conn:
        d = detect(conn, settings, now=now)
        if not d.skipped and now.minute == 0 and now.second < 20:  # about once an hour
            prune_history(conn, before=now - KEEP_HISTORY)
    return NotifyReport(d, deliver_due(engine, settings, now=now))


class _ScrubFilter(logging.Filter):
    """Replaces the routes' secret pieces in Apprise's own log records (they go to the worker's log)."""

    def __init__(self, route_list: list[Route]) -> None:
        super().__init__()
        self.route_list = route_list

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = text
        for route in self.route_list:
            clean = scrub(clean, route)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def scrub_apprise_logs(settings: Settings) -> None:
    """Install (once per set of routes) a filter on the `apprise` logger that masks route secrets."""
    logger = logging.getLogger("apprise")
    route_list = routes(settings)
    for f in list(logger.filters):
        if isinstance(f, _ScrubFilter):
            if [r.id for r in f.route_list] == [r.id for r in route_list]:
                return
            logger.removeFilter(f)
    logger.addFilter(_ScrubFilter(route_list))


# ---------------------------------------------------------------------------------------------
# Operator actions: test message, silences, acknowledgements (require_operator, audited)
# ---------------------------------------------------------------------------------------------
def send_test(engine: Engine, settings: Settings, route_id_: str, *, actor: Actor, now: datetime) -> SendResult:
    """Send a test message to one route now; recorded in the outbox history and audit_log."""
    require_operator(actor, "send test notifications")
    route = next((r for r in routes(settings) if r.id == route_id_), None)
    if route is None:
        return SendResult(False, "no such route")
    row_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(sa.insert(outbox).values(
            id=row_id, dedupe_key=f"test:{row_id}", kind="test", route_id=route.id, route_label=route.label,
            title="[TEST] Agent Dashboard notification",
            body=f"A test message sent by {actor.name} from the Notifications page. If you read this, the route works.",
            notify_type="info", status="sending", attempts=0, claimed_at=now, created_at=now, updated_at=now))
    result = (send(route, title="[TEST] Agent Dashboard notification",
                   body=f"A test message sent by {actor.name} from the Notifications page. "
                        "If you read this, the route works.", notify_type="info",
                   timeout_s=settings.alert_notify_timeout_s)
              if route.valid else SendResult(False, route.problem))
    with engine.begin() as conn:
        conn.execute(sa.update(outbox).where(outbox.c.id == row_id).values(
            status="sent" if result.ok else "gave_up", attempts=1, last_error=result.error, updated_at=utcnow(),
            sent_at=utcnow() if result.ok else None))
        log_audit(conn, event_type="notification_test_sent", action="send_test", resource_type="notification_outbox",
                  resource_id=str(row_id), now=now, user_id=actor.name, success=result.ok, error_message=result.error,
                  details={"route_id": route.id, "route": route.label})
    return result


class InvalidSilence(ValueError):
    """A silence that matches nothing or everything, ends before it starts, or has no reason."""


def create_silence(conn: sa.Connection, *, actor: Actor, now: datetime, ends_at: datetime, reason: str,
                   starts_at: datetime | None = None, alert_type: str | None = None,
                   business_account_id: uuid.UUID | None = None, agent_id: str | None = None) -> Silence:
    require_operator(actor, "create silences")
    starts_at = starts_at or now
    agent_id = (agent_id or "").strip() or None
    alert_type = (alert_type or "").strip() or None
    reason = (reason or "").strip()
    if alert_type is None and business_account_id is None and agent_id is None:
        raise InvalidSilence("choose an alert type, an account and/or an agent: a silence must match something")
    if ends_at <= starts_at:
        raise InvalidSilence("the silence must end after it starts")
    if not reason:
        raise InvalidSilence("say why (the reason is audited)")
    sid = uuid.uuid4()
    conn.execute(sa.insert(silences_t).values(
        id=sid, alert_type=alert_type, business_account_id=business_account_id, agent_id=agent_id,
        starts_at=starts_at, ends_at=ends_at, reason=reason, created_by=actor.name, created_at=now))
    details = {"silence_id": str(sid), "alert_type": alert_type, "agent_id": agent_id, "reason": reason,
               "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
    if business_account_id is not None:
        details["business_account_id"] = str(business_account_id)
    log_audit(conn, event_type="alert_silence_created", action="create_silence", resource_type="alert_silences",
              resource_id=str(sid), now=now, user_id=actor.name, success=True, details=details)
    return Silence(sid, alert_type, business_account_id, agent_id, starts_at, ends_at, reason, actor.name, now)


def end_silence(conn: sa.Connection, silence_id, *, actor: Actor, now: datetime) -> bool:
    """End a silence now (audited). False when it had already ended."""
    require_operator(actor, "end silences")
    sid = uuid.UUID(str(silence_id))
    s = silences_t
    done = conn.execute(sa.update(s).where(s.c.id == sid, s.c.ends_at > now, s.c.ended_early_at.is_(None))
                        .values(ended_early_at=now, ended_by=actor.name)).rowcount
    if done:
        log_audit(conn, event_type="alert_silence_ended", action="end_silence", resource_type="alert_silences",
                  resource_id=str(sid), now=now, user_id=actor.name, success=True, details={"silence_id": str(sid)})
    return bool(done)


def list_silences(conn: sa.Connection, *, now: datetime, limit: int = 200) -> list[Silence]:
    """Active and scheduled first (soonest end first), then ended ones (newest first)."""
    out = load_silences(conn, limit=limit)
    live = sorted((s for s in out if s.effective_end > now), key=lambda s: s.effective_end)
    done = sorted((s for s in out if s.effective_end <= now), key=lambda s: s.effective_end, reverse=True)
    return live + done


@dataclass(frozen=True)
class Ack:
    alert_id: uuid.UUID
    by: str
    at: datetime
    note: str | None


@dataclass(frozen=True)
class AckResult:
    alert_id: uuid.UUID
    outcome: str  # acknowledged | already_acknowledged | resolved | not_found


def acknowledge(conn: sa.Connection, alert_ids, *, actor: Actor, now: datetime, note: str | None = None) -> list[AckResult]:
    """"I'm on it": an open alert gets who/when/note; its repeat digests stop. Audited per alert."""
    require_operator(actor, "acknowledge alerts")
    wanted = list(dict.fromkeys(uuid.UUID(str(i)) for i in alert_ids))
    note = (note or "").strip() or None
    have = acknowledgements(conn, wanted)
    state = {r.id: (r.resolved, r.alert_type) for r in conn.execute(
        sa.select(system_alerts.c.id, system_alerts.c.resolved, system_alerts.c.alert_type)
        .where(system_alerts.c.id.in_(wanted)))} if wanted else {}
    out = []
    for aid in wanted:
        if aid not in state:
            out.append(AckResult(aid, "not_found"))
        elif state[aid][0]:
            out.append(AckResult(aid, "resolved"))
        elif aid in have:
            out.append(AckResult(aid, "already_acknowledged"))
        else:
            conn.execute(sa.insert(acks).values(id=uuid.uuid4(), alert_id=aid, acknowledged_by=actor.name,
                                                acknowledged_at=now, note=note))
            log_audit(conn, event_type="alert_acknowledged", action="acknowledge", resource_type="system_alerts",
                      resource_id=str(aid), now=now, user_id=actor.name, success=True,
                      details={"alert_id": str(aid), "alert_type": state[aid][1], "note": note})
            out.append(AckResult(aid, "acknowledged"))
    return out


def acknowledgements(conn: sa.Connection, alert_ids) -> dict[uuid.UUID, Ack]:
    """The first acknowledgement of each alert."""
    ids = list(alert_ids)
    out: dict[uuid.UUID, Ack] = {}
    for start in range(0, len(ids), 500):
        for r in conn.execute(sa.select(acks).where(acks.c.alert_id.in_(ids[start:start + 500]))
                              .order_by(acks.c.acknowledged_at)):
            out.setdefault(r.alert_id, Ack(r.alert_id, r.acknowledged_by, as_utc(r.acknowledged_at), r.note))
    return out


@dataclass(frozen=True)
class Badges:
    silenced_by: Silence | None = None
    ack: Ack | None = None


def alert_badges(conn: sa.Connection, alerts, *, now: datetime) -> dict[uuid.UUID, Badges]:
    """For lib.alerts.store.Alert objects: the active silence matching each (shown as "silenced") and its
    acknowledgement (who is on it)."""
    alerts = list(alerts)
    return badges_for(alerts, load_silences(conn, active_at=now), acknowledgements(conn, [a.id for a in alerts]),
                      now=now)


def active_marks(conn: sa.Connection, *, now: datetime, ack_limit: int = 10_000) -> tuple[list[Silence], dict]:
    """What the list's badges need, in two queries whatever the list's length: the silences active at
    `now` and the newest acknowledgements (pages cache this once per interval)."""
    rows = conn.execute(sa.select(acks).order_by(acks.c.acknowledged_at.desc()).limit(ack_limit)).all()
    ack_map: dict[uuid.UUID, Ack] = {}
    for r in reversed(rows):  # the first acknowledgement of each alert wins
        ack_map.setdefault(r.alert_id, Ack(r.alert_id, r.acknowledged_by, as_utc(r.acknowledged_at), r.note))
    return load_silences(conn, active_at=now), ack_map


def badges_for(alerts, silences: list[Silence], ack_map: dict, *, now: datetime) -> dict[uuid.UUID, Badges]:
    """Pure: badges of lib.alerts.store.Alert objects from active silences and acknowledgements."""
    active = silences
    out = {}
    for a in alerts:
        agent = (a.details or {}).get("agent_id") if isinstance(a.details, dict) else None
        sil = None if a.resolved else matching_silence(active, alert_type=a.alert_type,
                                                        business_account_id=a.business_account_id,
                                                        agent_id=agent, now=now)
        out[a.id] = Badges(sil, ack_map.get(a.id))
    return out


@dataclass(frozen=True)
class Delivery:
    id: uuid.UUID
    created_at: datetime
    kind: str
    route_label: str | None
    title: str
    status: str
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    next_attempt_at: datetime | None


def recent_deliveries(conn: sa.Connection, *, limit: int = DELIVERY_HISTORY) -> list[Delivery]:
    o = outbox
    rows = conn.execute(sa.select(o.c.id, o.c.created_at, o.c.kind, o.c.route_label, o.c.route_id, o.c.title, o.c.status,
                                  o.c.attempts, o.c.last_error, o.c.sent_at, o.c.next_attempt_at)
                        .order_by(o.c.created_at.desc(), o.c.id.desc()).limit(limit)).all()
    return [Delivery(r.id, as_utc(r.created_at), r.kind, stored_label(r.route_label, r.route_id), r.title, r.status,
                     r.attempts or 0,
                     r.last_error, as_utc(r.sent_at), as_utc(r.next_attempt_at)) for r in rows]


def notification_totals(conn: sa.Connection) -> dict[str, int]:
    """Outbox rows by status (for agent_dashboard_notifications_total{outcome})."""
    counts = dict(conn.execute(sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)).all())
    return {k: int(counts.get(k, 0)) for k in OUTCOMES}


def prune_history(conn: sa.Connection, *, before: datetime) -> int:
    """Finished deliveries, resolved incidents and their rows older than `before` go (pending and
    failed deliveries and open incidents stay)."""
    n = conn.execute(sa.delete(outbox).where(outbox.c.created_at < before,
                                             outbox.c.status.in_(("sent", "gave_up")))).rowcount
    old = sa.select(inc_t.c.id).where(inc_t.c.state == "resolved", inc_t.c.resolved_at < before)
    n += conn.execute(sa.delete(rows_t).where(rows_t.c.resolved.is_(True), rows_t.c.incident_id.in_(old))).rowcount
    n += conn.execute(sa.delete(inc_t).where(inc_t.c.state == "resolved", inc_t.c.resolved_at < before)).rowcount
    return n

