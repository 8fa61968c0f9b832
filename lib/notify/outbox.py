"""The outbox and its delivery: due rows are claimed (SKIP LOCKED, so several workers share a backlog),
sent through Apprise with a timeout, and recorded with backoff; notify_tick runs detection and delivery
as the worker does; the history the Notifications page lists.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.core.audit import log_audit
from lib.core.counters import count_notification
from lib.core.db import write_transaction
from lib.core.identity import Actor, require_operator
from lib.core.schema import notification_outbox as outbox
from lib.core.schema import notify_alert_rows as rows_t
from lib.core.schema import notify_incidents as inc_t
from lib.core.settings import Settings
from lib.core.text import clip
from lib.core.timeutil import as_utc, utcnow
from lib.notify.detect import DetectReport, detect
from lib.notify.routes import Route, routes, scrub, scrub_apprise_logs, stored_label

log = logging.getLogger("worker.notify")



FAST_RETRIES = 3  # failed deliveries retried at the next tick; then backoff


BACKOFF_CAP_S = 3600


SENDING_LEASE_S = 300  # a row left "sending" by a crashed worker is taken back after this


DELIVERY_BATCH = 100  # rows one deliver_due call sends at most


CLAIM_BATCH = 5  # rows claimed at a time, so that several workers share a backlog


DELIVERY_HISTORY = 200


OUTCOMES = ("pending", "sending", "failed", "sent", "gave_up")


def backoff_s(attempts: int) -> float:
    """Wait before the next attempt after `attempts` failures: the next tick for the first three,
    then 1, 2, 4 … minutes, capped at an hour."""
    if attempts < FAST_RETRIES:
        return 0.0
    return float(min(60 * 2 ** (attempts - FAST_RETRIES), BACKOFF_CAP_S))


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
    import apprise  # lazy: Apprise loads its plugins at import; only a delivery needs it

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
