"""account_holds (ours): accounts that Instagram itself holds back, and the app-wide throttle.

The worker writes a hold when Graph answers with an account-level state (lib.instagram.errors action
HOLD: a temporary block, a restricted account, a spam restriction, messaging restricted). While a
hold is active the claim (lib.queue.holds.held_back_clause) takes none of the account's rows, so no call
is made into the restriction and no row uses a retry; the hold ends by itself at held_until, or
when an operator resumes the account (a hold with no end waits for that).

`active_holds` also lists the Graph usage throttles (graph_usage.regain_at, per account and for the
whole app) so the pages can say, at the top, what is held back and until when.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.alerts.store import auto_resolve
from lib.core.audit import log_audit
from lib.core.db import upsert
from lib.core.identity import Actor, require_operator
from lib.core.schema import account_holds as ah
from lib.core.schema import graph_usage as gu
from lib.core.schema import instagram_business_accounts as accounts
from lib.core.schema import post_queue as pq
from lib.core.timeutil import as_utc

ALERT_TYPE = "account_restricted"  # one open alert per held account (lib.alerts.store: severity ERROR)
KIND_OF_RULE = {  # (code, subcode) of the rule -> kind, for the page's wording
    (368, None): "temporary_block", (25, 2207050): "restricted", (4, 2207051): "spam",
    (10, 1893063): "messaging_restricted",
}
KIND_TEXT = {
    "temporary_block": "Instagram temporarily blocks this account's actions",
    "restricted": "Instagram has restricted this account",
    "spam": "Instagram restricts this account's publishing as suspected spam",
    "messaging_restricted": "Instagram restricts this account's messaging",
    "app_throttle": "Instagram throttles this app",
    "account_throttle": "Instagram throttles this account's calls",
}


def active_clause(now: datetime, table=ah):
    return sa.or_(table.c.held_until.is_(None), table.c.held_until > now)


def held_clause(now: datetime):
    """SQL: the post_queue row's account has an active hold (lib.queue.holds.held_back_clause uses it)."""
    return sa.exists().where(ah.c.business_account_id == pq.c.business_account_id, active_clause(now))


def hold(conn: sa.Connection, *, business_account_id: uuid.UUID, kind: str, reason: str, owner_must: str | None,
         until: datetime | None, code: int | None, subcode: int | None, now: datetime) -> bool:
    """Hold the account (or extend its hold). -> True when it was not held before (a new hold)."""
    scope = str(business_account_id)
    existing = conn.execute(sa.select(ah.c.held_until).where(ah.c.scope == scope, active_clause(now))).first()
    values = {"business_account_id": business_account_id, "kind": kind, "reason": reason[:1000],
              "owner_must": owner_must, "error_code": code, "error_subcode": subcode, "held_until": until}
    if existing is None:
        values["held_at"] = now
        upsert(conn, ah, key="scope", values={"scope": scope, **values}, update=values)
        return True
    if existing.held_until is not None and (until is None or as_utc(existing.held_until) < until):
        conn.execute(sa.update(ah).where(ah.c.scope == scope).values(**values))
    return False


def resume(conn: sa.Connection, business_account_id: uuid.UUID, *, actor: Actor, now: datetime) -> bool:
    """An operator ends the account's hold (after its owner acted). Audited. -> False if none was active."""
    require_operator(actor, "resume an account Instagram held back")
    row = conn.execute(sa.select(ah).where(ah.c.scope == str(business_account_id))).first()
    if row is None:
        return False
    conn.execute(sa.delete(ah).where(ah.c.scope == str(business_account_id)))
    auto_resolve(conn, alert_type=ALERT_TYPE, business_account_id=business_account_id, now=now)
    log_audit(conn, event_type="account_hold_resumed", action="resume", resource_type="instagram_business_accounts",
              resource_id=str(business_account_id), now=now, success=True, user_id=actor.name,
              details={"business_account_id": str(business_account_id), "kind": row.kind, "reason": row.reason,
                       "held_at": as_utc(row.held_at).isoformat() if row.held_at else None})
    return True


def end_expired(conn: sa.Connection, *, now: datetime) -> int:
    """Holds whose time is over end by themselves (the worker, each tick): the row is deleted and the
    account's alert resolved. -> how many ended."""
    ended = conn.execute(sa.select(ah.c.scope, ah.c.business_account_id)
                         .where(ah.c.held_until.is_not(None), ah.c.held_until <= now)).all()
    for r in ended:
        conn.execute(sa.delete(ah).where(ah.c.scope == r.scope, ah.c.held_until <= now))
        auto_resolve(conn, alert_type=ALERT_TYPE, business_account_id=r.business_account_id, now=now)
    return len(ended)


@dataclass(frozen=True)
class Hold:
    kind: str
    business_account_id: uuid.UUID | None  # None: the whole app
    username: str | None
    until: datetime | None  # None: until an operator resumes
    reason: str
    owner_must: str | None
    waiting: int  # due or pending rows held behind it

    @property
    def headline(self) -> str:
        return self.headline_with(lambda t: f"{t:%Y-%m-%d %H:%M} UTC")

    def headline_with(self, fmt_time) -> str:
        """'Instagram throttles this app until 14:32: 77 rows wait' with the time as fmt_time writes it."""
        who = "" if self.business_account_id is None else f" ({self.username or self.business_account_id})"
        until = f" until {fmt_time(self.until)}" if self.until else " until an operator resumes it"
        rows = f"{self.waiting} row{'' if self.waiting == 1 else 's'} wait"
        return f"{KIND_TEXT.get(self.kind, self.kind)}{who}{until}: {rows}"


def _waiting(conn: sa.Connection, account_id: uuid.UUID | None) -> int:
    q = sa.select(sa.func.count()).select_from(pq).where(pq.c.status.in_(("pending", "failed")))
    if account_id is not None:
        q = q.where(pq.c.business_account_id == account_id)
    return int(conn.execute(q).scalar() or 0)


def active_holds(conn: sa.Connection, *, now: datetime, account_id: uuid.UUID | None = None) -> list[Hold]:
    """Every active hold: the app throttle first, then account throttles and account holds."""
    names = {r.id: r.username for r in conn.execute(sa.select(accounts.c.id, accounts.c.username))}
    out: list[Hold] = []
    for r in conn.execute(sa.select(gu.c.scope, gu.c.business_account_id, gu.c.regain_at).where(gu.c.regain_at > now)):
        if r.scope == "app":
            out.insert(0, Hold("app_throttle", None, None, as_utc(r.regain_at), "Graph usage at its limit", None,
                               _waiting(conn, account_id)))
        elif account_id is None or r.business_account_id == account_id:
            out.append(Hold("account_throttle", r.business_account_id, names.get(r.business_account_id),
                            as_utc(r.regain_at), "Graph usage at its limit", None,
                            _waiting(conn, r.business_account_id)))
    q = sa.select(ah).where(active_clause(now)).order_by(ah.c.held_at)
    if account_id is not None:
        q = q.where(ah.c.business_account_id == account_id)
    for r in conn.execute(q):
        out.append(Hold(r.kind, r.business_account_id, names.get(r.business_account_id), as_utc(r.held_until),
                        r.reason, r.owner_must, _waiting(conn, r.business_account_id)))
    return out


def hold_rows(conn: sa.Connection, *, now: datetime) -> list[dict[str, Any]]:
    """Active account holds as plain dicts (the API and exports)."""
    return [dict(r._mapping) for r in conn.execute(sa.select(ah).where(active_clause(now)))]
