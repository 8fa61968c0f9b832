"""Silences (no message for matching alerts until they end; maintenance windows count as silences) and
acknowledgements (someone is on it: no more digests), and the badges the alert pages show for both.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from lib.alerts.maintenance import load_windows
from lib.core.audit import log_audit
from lib.core.identity import Actor, require_operator
from lib.core.schema import alert_acknowledgements as acks
from lib.core.schema import alert_silences as silences_t
from lib.core.schema import system_alerts
from lib.core.timeutil import as_utc


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
