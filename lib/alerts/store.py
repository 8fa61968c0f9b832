"""system_alerts: severity by alert type, open-or-update (one open row per type and account), auto-resolve."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lib.alerts.maintenance import MUTED_TYPES, in_maintenance
from lib.core.audit import audit_row
from lib.core.identity import Actor, require_operator
from lib.core.redact import redact, redact_text
from lib.core.schema import audit_log, system_alerts
from lib.core.timebuckets import bucket_expr, bucket_value
from lib.core.timeutil import iso

ALERT_TYPES = ("auth_failure", "rate_limit", "content_violation", "agent_down", "sync_failure")  # the spec's
TOKEN_EXPIRING = "token_expiring"  # ours: an account's access token expires soon
SEVERITIES = ("CRITICAL", "ERROR", "WARNING")  # most severe first
_SEVERITY = {
    "auth_failure": "CRITICAL",
    "agent_down": "CRITICAL",
    "content_violation": "ERROR",
    "sync_failure": "ERROR",
    "rate_limit": "WARNING",
    "account_restricted": "ERROR",  # Instagram holds an account's queue (lib.instagram.account_holds)
    "slo_burn": "ERROR",  # replies go out too late too often (lib.health.service_levels)
}  # anything else (token_expiring, metric_anomaly, types of other writers) is WARNING


def severity(alert_type: str | None) -> str:
    return _SEVERITY.get(alert_type or "", "WARNING")


def severity_rank(alert_type: str | None) -> int:
    """0 for the most severe; for sorting."""
    return SEVERITIES.index(severity(alert_type))


def open_or_update_alert(
    conn: sa.Connection,
    *,
    alert_type: str,
    message: str,
    now: datetime,
    business_account_id: uuid.UUID | None = None,
    agent_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> uuid.UUID | None:
    """At most one unresolved alert per (alert_type, account or agent): a repeat updates it.

    The repeat keeps first_seen, bumps count and last_seen, and takes the new message/details.
    None, and nothing written, when a maintenance window covers the agent or account and mutes the type.
    """
    if alert_type in MUTED_TYPES and in_maintenance(conn, now=now, agent_id=agent_id,
                                                    business_account_id=business_account_id):
        return None
    details = dict(details or {})
    if agent_id is not None:
        details["agent_id"] = agent_id
    lock_alert_key(conn, alert_type=alert_type, business_account_id=business_account_id, agent_id=agent_id)
    t = system_alerts
    query = sa.select(t.c.id, t.c.details).where(t.c.alert_type == alert_type, t.c.resolved.is_(False))
    if business_account_id is not None:
        query = query.where(t.c.business_account_id == business_account_id)
    else:
        query = query.where(t.c.business_account_id.is_(None))
    if agent_id is not None:
        query = query.where(t.c.details["agent_id"].as_string() == agent_id)
    existing = conn.execute(query.order_by(t.c.created_at.desc()).limit(1)).first()
    if existing is None:
        new_id = uuid.uuid4()
        details.setdefault("count", 1)
        details.setdefault("first_seen", iso(now))
        details.setdefault("last_seen", iso(now))
        conn.execute(
            sa.insert(t).values(
                id=new_id,
                alert_type=alert_type,
                message=message,
                business_account_id=business_account_id,
                details=details,
                resolved=False,
                created_at=now,
                updated_at=now,
            )
        )
        return new_id
    old = existing.details if isinstance(existing.details, dict) else {}
    merged = {**old, **details}
    merged["count"] = int(old.get("count", 1) or 1) + 1
    merged["first_seen"] = old.get("first_seen", merged.get("first_seen", iso(now)))
    merged["last_seen"] = iso(now)
    conn.execute(sa.update(t).where(t.c.id == existing.id).values(message=message, details=merged, updated_at=now))
    return existing.id


ALERT_LOCK_CLASS = 0x416C7274  # 'Alrt': the advisory-lock namespace of open_or_update_alert


def lock_alert_key(conn: sa.Connection, *, alert_type: str, business_account_id=None, agent_id=None) -> None:
    """Serialise open_or_update_alert per (alert_type, account or agent) on PostgreSQL, so several
    workers cannot both find no open alert and both insert one.

    A transaction-level advisory lock (released at commit/rollback; never a session lock, which a
    transaction pooler would leak across clients). Needs no index, so init never fails on rows that
    already hold duplicates. SQLite serialises writers with BEGIN IMMEDIATE (the worker's write_txn)."""
    if conn.dialect.name != "postgresql":
        return
    key = f"{alert_type}|{business_account_id or ''}|{agent_id or ''}"
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ALERT_LOCK_CLASS, sa.func.hashtext(key))))


def auto_resolve(conn: sa.Connection, *, alert_type: str, now: datetime, agent_id: str | None = None,
                 business_account_id: uuid.UUID | None = None) -> int:
    """Resolve the open alerts of a condition that has cleared (e.g. agent_down after a beat)."""
    t = system_alerts
    stmt = sa.update(t).where(t.c.alert_type == alert_type, t.c.resolved.is_(False))
    if agent_id is not None:
        stmt = stmt.where(t.c.details["agent_id"].as_string() == agent_id)
    if business_account_id is not None:
        stmt = stmt.where(t.c.business_account_id == business_account_id)
    return conn.execute(stmt.values(resolved=True, resolved_at=now, updated_at=now)).rowcount


# ---------------------------------------------------------------------------------------------
# Reads and the operator's resolve, for the System Alerts page.
# ---------------------------------------------------------------------------------------------
ALL_TYPES = "all"
ALERT_COLUMNS = ("id", "alert_type", "message", "business_account_id", "details", "resolved",
                 "resolved_at", "created_at", "updated_at")
LIST_CAP = 5000  # rows the page lists at most (sorted by severity, newest first)


@dataclass(frozen=True)
class AlertFilter:
    """The alert filter (type 'all' or one type; resolved), plus severity, account, time."""

    type: str = ALL_TYPES
    resolved: bool | None = False  # None = resolved and unresolved
    severities: tuple[str, ...] = ()
    account_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Alert:
    id: uuid.UUID
    alert_type: str
    severity: str
    message: str | None
    business_account_id: uuid.UUID | None
    details: dict[str, Any] | None
    resolved: bool
    resolved_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    resolved_by: str | None = None  # from the alert_resolved audit row; None when auto-resolved

    @property
    def count(self) -> int:
        """Occurrences this row stands for (the worker folds repeats into details.count)."""
        try:
            return max(1, int((self.details or {}).get("count", 1)))
        except (TypeError, ValueError):
            return 1

    @property
    def first_seen(self) -> datetime | None:
        return _detail_time(self.details, "first_seen") or self.created_at

    @property
    def last_seen(self) -> datetime | None:
        return _detail_time(self.details, "last_seen") or self.updated_at or self.created_at


@dataclass(frozen=True)
class AlertGroup:
    """Repeats of one alert type for one account, seen as one line."""

    alert_type: str
    severity: str
    business_account_id: uuid.UUID | None
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    message: str | None  # of the newest alert
    ids: tuple[uuid.UUID, ...]
    unresolved: int


@dataclass(frozen=True)
class ResolveResult:
    alert_id: uuid.UUID
    alert_type: str | None
    outcome: str  # "resolved", "already_resolved", "not_found"

    @property
    def message(self) -> str:
        return {
            "resolved": f"Alert {self.alert_id} ({self.alert_type}) resolved",
            "already_resolved": f"Alert {self.alert_id} ({self.alert_type}) was already resolved: nothing to do",
            "not_found": f"Alert {self.alert_id} not found",
        }[self.outcome]


def _detail_time(details, key: str) -> datetime | None:
    value = (details or {}).get(key) if isinstance(details, dict) else None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def types_for_severities(severities) -> tuple[list[str], bool]:
    """Known alert types with one of `severities`, and whether unknown types (WARNING) match too."""
    wanted = set(severities)
    return [a for a, s in _SEVERITY.items() if s in wanted], "WARNING" in wanted


def alert_conditions(filters: AlertFilter) -> list:
    t = system_alerts
    cond: list = []
    if filters.type and filters.type != ALL_TYPES:
        cond.append(t.c.alert_type == filters.type)
    if filters.resolved is not None:
        cond.append(t.c.resolved.is_(filters.resolved))
    if filters.severities:
        known, unknown_too = types_for_severities(filters.severities)
        parts = [t.c.alert_type.in_(known)] if known else []
        if unknown_too:
            parts.append(t.c.alert_type.not_in(list(_SEVERITY)))
        cond.append(sa.or_(*parts) if parts else sa.false())
    if filters.account_id is not None:
        cond.append(t.c.business_account_id == filters.account_id)
    if filters.since is not None:
        cond.append(t.c.created_at >= filters.since)
    if filters.until is not None:
        cond.append(t.c.created_at < filters.until)
    return cond


def _severity_order():
    t = system_alerts
    return sa.case({a: SEVERITIES.index(s) for a, s in _SEVERITY.items()}, value=t.c.alert_type,
                   else_=SEVERITIES.index("WARNING"))


def list_alerts(conn: sa.Connection, *, filters: AlertFilter, limit: int = LIST_CAP) -> list[Alert]:
    """Matching alerts, most severe first, then newest; resolved ones carry who resolved them."""
    t = system_alerts
    query = (
        sa.select(*[t.c[c] for c in ALERT_COLUMNS])
        .where(*alert_conditions(filters))
        .order_by(_severity_order(), t.c.created_at.desc(), t.c.id.desc())
        .limit(limit)
    )
    rows = conn.execute(query).all()
    resolvers = resolved_by(conn, [r.id for r in rows if r.resolved])
    return [
        Alert(
            id=r.id, alert_type=r.alert_type, severity=severity(r.alert_type), message=r.message,
            business_account_id=r.business_account_id,
            details=r.details if isinstance(r.details, dict) else ({"value": r.details} if r.details is not None else None),
            resolved=bool(r.resolved), resolved_at=r.resolved_at, created_at=r.created_at, updated_at=r.updated_at,
            resolved_by=resolvers.get(r.id),
        )
        for r in rows
    ]


def resolved_by(conn: sa.Connection, ids) -> dict[uuid.UUID, str]:
    """Who resolved each alert, from its alert_resolved audit row (the newest one wins)."""
    out: dict[uuid.UUID, str] = {}
    by_text = {str(i): i for i in ids}
    keys = list(by_text)
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        # only resource_id in the WHERE: SQLite would otherwise pick the event_type index and scan
        rows = conn.execute(
            sa.select(audit_log.c.resource_id, audit_log.c.user_id, audit_log.c.event_type, audit_log.c.created_at)
            .where(audit_log.c.resource_id.in_(chunk))
        ).all()
        rows = [r for r in rows if r.event_type == "alert_resolved"]
        rows.sort(key=lambda r: (r.created_at is not None, r.created_at))
        for r in rows:
            out[by_text[r.resource_id]] = r.user_id
    return out


def group_alerts(alerts: list[Alert]) -> list[AlertGroup]:
    """Repeats of the same type and account as one group: count, first and last seen.

    Groups keep the order of their first (most severe, newest) member.
    """
    groups: dict[tuple, list[Alert]] = {}
    for a in alerts:
        groups.setdefault((a.alert_type, a.business_account_id), []).append(a)
    out = []
    for (alert_type, account), members in groups.items():
        firsts = [m.first_seen for m in members if m.first_seen is not None]
        lasts = [m.last_seen for m in members if m.last_seen is not None]
        newest = max(members, key=lambda m: m.last_seen or datetime.min.replace(tzinfo=UTC))
        out.append(AlertGroup(
            alert_type=alert_type, severity=severity(alert_type), business_account_id=account,
            count=sum(m.count for m in members), first_seen=min(firsts) if firsts else None,
            last_seen=max(lasts) if lasts else None, message=newest.message,
            ids=tuple(m.id for m in members), unresolved=sum(1 for m in members if not m.resolved),
        ))
    return out


def matching_ids(conn: sa.Connection, *, filters: AlertFilter, unresolved_only: bool = True) -> list[uuid.UUID]:
    """Ids of the alerts a filter matches (for "resolve all matching")."""
    t = system_alerts
    query = sa.select(t.c.id).where(*alert_conditions(filters))
    if unresolved_only:
        query = query.where(t.c.resolved.is_(False))
    return list(conn.execute(query.order_by(t.c.created_at.desc())).scalars())


def resolve(conn: sa.Connection, ids, *, actor: Actor, now: datetime) -> list[ResolveResult]:
    """Resolve alerts by id: resolved, resolved_at and updated_at set in one conditional UPDATE
    (an already-resolved alert is left alone and reported as such), and one `alert_resolved`
    audit row per alert actually resolved, recording the actor.

    `actor` is a lib.core.identity.Actor; anyone but an operator (or a bare name, which carries no
    role) gets PermissionDenied, whatever the page showed. Its name goes to audit_log.user_id.
    The worker's own clearing of a condition is auto_resolve(), not this."""
    require_operator(actor, "resolve alerts")
    actor = actor.name
    t = system_alerts
    wanted = list(dict.fromkeys(uuid.UUID(str(i)) for i in ids))
    results: dict[uuid.UUID, ResolveResult] = {}
    audit_rows = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        changed = conn.execute(
            sa.update(t)
            .where(t.c.id.in_(chunk), t.c.resolved.is_(False))
            .values(resolved=True, resolved_at=now, updated_at=now)
            .returning(t.c.id, t.c.alert_type, t.c.business_account_id)
        ).all()
        for r in changed:
            results[r.id] = ResolveResult(r.id, r.alert_type, "resolved")
            details = {"alert_id": str(r.id), "alert_type": r.alert_type, "severity": severity(r.alert_type)}
            if r.business_account_id is not None:
                details["business_account_id"] = str(r.business_account_id)
            audit_rows.append(audit_row_for_resolve(r.id, actor=actor, now=now, details=details))
        rest = [i for i in chunk if i not in results]
        if rest:
            for r in conn.execute(sa.select(t.c.id, t.c.alert_type).where(t.c.id.in_(rest))):
                results[r.id] = ResolveResult(r.id, r.alert_type, "already_resolved")
    if audit_rows:
        conn.execute(sa.insert(audit_log), audit_rows)
    return [results.get(i) or ResolveResult(i, None, "not_found") for i in wanted]


def audit_row_for_resolve(alert_id, *, actor: str, now: datetime, details: dict[str, Any]) -> dict[str, Any]:
    return audit_row(
        event_type="alert_resolved", action="resolve", resource_type="system_alerts",
        resource_id=str(alert_id), now=now, user_id=actor, success=True, details=details,
    )


def alert_summary(conn: sa.Connection, *, filters: AlertFilter) -> dict[str, dict[str, int]]:
    """Counts of matching alerts: {"severity": {CRITICAL: n, ...}, "type": {alert_type: n}}."""
    t = system_alerts
    rows = conn.execute(
        sa.select(t.c.alert_type, sa.func.count().label("n")).where(*alert_conditions(filters)).group_by(t.c.alert_type)
    ).all()
    by_type = {r.alert_type: int(r.n) for r in rows}
    by_severity = {s: 0 for s in SEVERITIES}
    for alert_type, n in by_type.items():
        by_severity[severity(alert_type)] += n
    return {"severity": by_severity, "type": dict(sorted(by_type.items(), key=lambda kv: (severity_rank(kv[0]), kv[0])))}


def alert_counts(conn: sa.Connection, *, filters: AlertFilter, bucket: str) -> list[dict[str, Any]]:
    """Alerts created per UTC hour/day and type: [{bucket, alert_type, count}]."""
    t = system_alerts
    b = bucket_expr(t.c.created_at, bucket, conn.dialect.name).label("bucket")
    query = (
        sa.select(b, t.c.alert_type, sa.func.count().label("n"))
        .where(t.c.created_at.is_not(None), *alert_conditions(filters))
        .group_by(b, t.c.alert_type)
        .order_by(b)
    )
    return [{"bucket": bucket_value(r.bucket), "alert_type": r.alert_type, "count": int(r.n)} for r in conn.execute(query)]


EXPORT_COLUMNS = ("id", "severity", "alert_type", "business_account_id", "message", "resolved", "resolved_at",
                  "resolved_by", "created_at", "updated_at", "count", "details")
EXPORT_CAP = 1_000_000


def export_chunks(conn: sa.Connection, *, filters: AlertFilter, cap: int = EXPORT_CAP, chunk_size: int = 2000):
    """Rows of the filtered alerts for CSV (EXPORT_COLUMNS order, same order as the list), read from a
    server-side cursor in chunks: memory stays bounded by the chunk, not by the table. Details are
    redacted; who resolved each alert is looked up per chunk."""
    t = system_alerts
    query = (
        sa.select(*[t.c[c] for c in ALERT_COLUMNS])
        .where(*alert_conditions(filters))
        .order_by(_severity_order(), t.c.created_at.desc(), t.c.id.desc())
        .limit(cap)
    )
    result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(query)
    try:
        for part in result.partitions(chunk_size):
            resolvers = resolved_by(conn, [r.id for r in part if r.resolved])
            yield [_export_row(r, resolvers) for r in part]
    finally:
        result.close()


def _export_row(r, resolvers: dict) -> tuple:
    details = r.details if isinstance(r.details, dict) else ({"value": r.details} if r.details is not None else None)
    count = Alert(id=r.id, alert_type=r.alert_type, severity="", message=None, business_account_id=None,
                  details=details, resolved=False, resolved_at=None, created_at=None, updated_at=None).count
    return (str(r.id), severity(r.alert_type), r.alert_type,
            "" if r.business_account_id is None else str(r.business_account_id), redact_text(r.message),
            bool(r.resolved), r.resolved_at, resolvers.get(r.id), r.created_at, r.updated_at, count,
            None if details is None else redact(details))
