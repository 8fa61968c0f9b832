"""Detection: reads system_alerts (whoever wrote them) and turns them into incidents and outbox messages.

An *incident* is what gets messages: one per (alert_type, business account, agent id) while any of its
rows is unresolved. Repeats are either a higher details.count on the same row (our worker's
open_or_update_alert) or further unresolved rows of the same key (a backend that inserts one row per
failure); both add to the incident's repeat count. An incident gets one "opened" message per route, at
most one digest of repeats per ALERT_REPEAT_INTERVAL_S (none while acknowledged or silenced), and one
"resolved" message on the routes that got the opening once all of its rows are resolved. Detection writes
our state and the outbox in the caller's transaction.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.alerts.store import resolved_by, severity
from lib.core.db import insert_ignore
from lib.core.schema import alert_acknowledgements as acks
from lib.core.schema import instagram_business_accounts as accounts_t
from lib.core.schema import notification_outbox as outbox
from lib.core.schema import notify_alert_rows as rows_t
from lib.core.schema import notify_incidents as inc_t
from lib.core.schema import system_alerts
from lib.core.settings import Settings
from lib.core.timeutil import as_utc
from lib.notify.messages import MESSAGE_CHARS, NOTIFY_TYPES, digest_message, group_key, opened_message, resolved_message, subject
from lib.notify.routes import routes
from lib.notify.silences import load_silences, maintenance_silences, matching_silence

_DETECT_LOCK_KEY = 0x4E4F544946590001  # pg_try_advisory_xact_lock: one detection at a time


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
