"""Queue control for operators (issue 16): pause / resume, discard, edit and retry.

Every action takes a lib.core.identity.Actor and refuses anyone but an operator (whatever the page
showed), runs in the caller's transaction (engine.begin()), is conditional on what was read
(a row the worker holds — processing — is never touched), and writes audit_log with the user.
The spec's status values stay as they are: a discarded row is deleted after all its columns
went into its `queue_item_discarded` audit row, so nothing is lost and it can be read back.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from lib.core.audit import audit_row
from lib.core.identity import Actor, require_operator
from lib.instagram.payload_rules import TEXT_FIELDS, payload_problems
from lib.queue.core import (ACTION_TYPES, MAX_BULK_RETRY, RETRYABLE_STATUSES, due_clause, idempotency_key)
from lib.core.redact import REDACTED, redact
from lib.core.schema import audit_log, post_queue, post_queue_state, queue_pauses
from lib.core.timeutil import as_utc, iso

PUBLISH_ACTIONS = ("publish_post", "repost_ugc")
# What goes into a media container (IG User Media's parameters). The container holds them as they
# were when it was made, so a change to any of them needs a new container; any other payload key of
# a publish row is treated the same way, as a key we do not know may be one Instagram reads.
CONTAINER_FIELDS = ("caption", "media_type", "children", "image_url", "video_url", "media_url", "cover_url",
                    "thumb_offset", "share_to_feed", "location_id", "user_tags", "product_tags", "collaborators",
                    "audio_name", "alt_text", "is_carousel_item", "trial_params")
# The marks a display copy puts into text (lib.core.text.clip / clip_json, lib.core.redact): a value still
# holding one was copied from the page, not from the row, and saving it would send the mark.
DISPLAY_MARKS = (
    re.compile(r"… \[[\d,]+ more (?:characters|keys|items) not shown\]"),
    re.compile(r"\[(?:object|list) nested deeper than \d+ levels not shown\]"),
    re.compile(re.escape(REDACTED)),
)


class QueueControlError(ValueError):
    """The action cannot be done as asked; the message says why and nothing was written."""


# -- pause / resume -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pause:
    id: uuid.UUID
    business_account_id: uuid.UUID | None
    action_type: str | None
    paused_by: str
    reason: str | None
    paused_at: datetime
    waiting: int = 0  # due rows held behind it

    @property
    def scope(self) -> str:
        what = self.action_type or "every action type"
        return what if self.business_account_id is None else f"{what} of one account"


def pause_covers(pause_table=queue_pauses, q=post_queue):
    """SQL: this pause row covers this post_queue row (NULL matches everything)."""
    return sa.and_(sa.or_(pause_table.c.business_account_id.is_(None),
                          pause_table.c.business_account_id == q.c.business_account_id),
                   sa.or_(pause_table.c.action_type.is_(None), pause_table.c.action_type == q.c.action_type))


def paused_clause():
    """post_queue rows that an active pause covers (lib.queue.core.held_back_clause uses it)."""
    return sa.exists().where(pause_covers())


def pause(conn: sa.Connection, *, actor: Actor, now: datetime, business_account_id: uuid.UUID | None = None,
          action_type: str | None = None, reason: str | None = None) -> uuid.UUID:
    """Pause an account, an action type, or one action type of one account. Pausing what is
    already paused is a no-op that returns the existing pause."""
    require_operator(actor, "pause the queue")
    if business_account_id is None and not action_type:
        raise QueueControlError("Pause what? Choose an account, an action type, or both.")
    if action_type and action_type not in ACTION_TYPES:
        raise QueueControlError(f"Unknown action type {action_type!r}.")
    p = queue_pauses
    same = sa.and_(p.c.business_account_id.is_(None) if business_account_id is None
                   else p.c.business_account_id == business_account_id,
                   p.c.action_type.is_(None) if not action_type else p.c.action_type == action_type)
    existing = conn.execute(sa.select(p.c.id).where(same)).scalar()
    if existing is not None:
        return existing
    pause_id = uuid.uuid4()
    reason = (reason or "").strip()[:500] or None
    conn.execute(sa.insert(p).values(id=pause_id, business_account_id=business_account_id,
                                     action_type=action_type or None, paused_by=actor.name, reason=reason,
                                     paused_at=now))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="queue_paused", action="pause", resource_type="queue_pauses", resource_id=str(pause_id),
        now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if business_account_id is None else str(business_account_id),
                 "action_type": action_type or None, "reason": reason})])
    return pause_id


def resume(conn: sa.Connection, pause_id: uuid.UUID, *, actor: Actor, now: datetime) -> bool:
    """End a pause: the rows behind it are due again at once (the claim no longer skips them)."""
    require_operator(actor, "resume the queue")
    p = queue_pauses
    row = conn.execute(sa.select(p).where(p.c.id == pause_id)).first()
    if row is None:
        return False
    conn.execute(sa.delete(p).where(p.c.id == pause_id))
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="queue_resumed", action="resume", resource_type="queue_pauses", resource_id=str(pause_id),
        now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if row.business_account_id is None else str(row.business_account_id),
                 "action_type": row.action_type, "paused_by": row.paused_by, "paused_at": iso(as_utc(row.paused_at)),
                 "reason": row.reason})])
    return True


def active_pauses(conn: sa.Connection, *, now: datetime, account_id: uuid.UUID | None = None) -> list[Pause]:
    """Every pause (of this account, or global), with how many due rows wait behind each."""
    p, q = queue_pauses, post_queue
    waiting = (sa.select(sa.func.count()).select_from(q).where(due_clause(now), pause_covers(p, q))
               .scalar_subquery())
    stmt = sa.select(p, waiting.label("waiting")).order_by(p.c.paused_at)
    if account_id is not None:
        stmt = stmt.where(sa.or_(p.c.business_account_id.is_(None), p.c.business_account_id == account_id))
    return [Pause(r.id, r.business_account_id, r.action_type, r.paused_by, r.reason, as_utc(r.paused_at),
                  int(r.waiting or 0)) for r in conn.execute(stmt)]


# -- discard ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ControlResult:
    success: bool
    queue_id: str
    message: str


def _json_row(r) -> dict[str, Any]:
    out = {}
    for k, v in r._mapping.items():
        if isinstance(v, datetime):
            v = iso(as_utc(v))
        elif isinstance(v, uuid.UUID):
            v = str(v)
        out[k] = v
    out["payload"] = redact(out.get("payload"))
    return out


def discard(conn: sa.Connection, ids, *, actor: Actor, now: datetime) -> list[ControlResult]:
    """Delete failed/dlq rows, each after writing all its columns to one audit_log row
    (queue_item_discarded; token-like payload fields redacted). Conditional on the status read:
    a row that the worker took meanwhile, or that is pending/processing/sent, is left alone."""
    require_operator(actor, "discard queue rows")
    wanted = list(dict.fromkeys(uuid.UUID(str(i)) for i in ids))
    if len(wanted) > MAX_BULK_RETRY:
        raise QueueControlError(f"At most {MAX_BULK_RETRY:,} rows per discard (got {len(wanted):,}).")
    q = post_queue
    results: list[ControlResult] = []
    audits = []
    for start in range(0, len(wanted), 500):
        chunk = sorted(wanted[start:start + 500])
        rows = {r.id: r for r in conn.execute(sa.select(q).where(q.c.id.in_(chunk)).order_by(q.c.id).with_for_update())}
        for qid in wanted[start:start + 500]:
            r = rows.get(qid)
            if r is None:
                results.append(ControlResult(False, str(qid), "No queue row with this id."))
                continue
            if r.status not in RETRYABLE_STATUSES:
                results.append(ControlResult(False, str(qid), f"Only failed or dlq rows can be discarded; this one is "
                                                              f"{r.status}. Nothing changed."))
                continue
            done = conn.execute(sa.delete(q).where(q.c.id == qid, q.c.status == r.status)).rowcount
            if not done:
                results.append(ControlResult(False, str(qid), "The row changed meanwhile; nothing changed."))
                continue
            conn.execute(sa.delete(post_queue_state).where(post_queue_state.c.queue_id == qid))
            audits.append(audit_row(
                event_type="queue_item_discarded", action="discard", resource_type="post_queue",
                resource_id=str(qid), now=now, user_id=actor.name, success=True,
                details={"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
                         "queue_id": str(qid), "action_type": r.action_type, "row": _json_row(r)}))
            results.append(ControlResult(True, str(qid), f"Discarded ({r.status}); its columns are kept in the "
                                                         "audit log."))
    if audits:
        conn.execute(sa.insert(audit_log), audits)
    return results


def discarded_row(conn: sa.Connection, queue_id: uuid.UUID) -> dict[str, Any] | None:
    """Read a discarded row back from its audit row (None when there is none)."""
    a = audit_log
    details = conn.execute(sa.select(a.c.details).where(a.c.event_type == "queue_item_discarded",
                                                        a.c.resource_id == str(queue_id))
                           .order_by(a.c.created_at.desc()).limit(1)).scalar()
    return (details or {}).get("row") if isinstance(details, dict) else None


# -- edit and retry ------------------------------------------------------------------------------

def editable_fields(action_type: str) -> tuple[str, ...]:
    return TEXT_FIELDS.get(action_type, ())


def stored_values(conn: sa.Connection, queue_id: uuid.UUID) -> dict[str, str] | None:
    """The editable fields of a row exactly as stored (never clipped, never redacted): what an
    edit form starts from, so that an edit changes only what the operator changed. None when the
    row is gone. Only operators see the form; the values are the row's own texts and URLs."""
    q = post_queue
    r = conn.execute(sa.select(q.c.action_type, q.c.payload).where(q.c.id == queue_id)).first()
    if r is None:
        return None
    payload = r.payload if isinstance(r.payload, dict) else {}
    return {k: "" if payload.get(k) is None else str(payload.get(k)) for k in editable_fields(r.action_type)}


def display_marks(text: str) -> list[str]:
    """The display marks (clipping notes, redaction placeholders) found in a text."""
    return [m.group(0) for rx in DISPLAY_MARKS for m in rx.finditer(text)]


def container_changed(action_type: str, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """A publish row's stored container no longer shows what the row asks for."""
    if action_type not in PUBLISH_ACTIONS:
        return False
    keys = (set(before) | set(after)) - {"creation_id"}
    return any(before.get(k) != after.get(k) for k in keys)


def edit_and_retry(conn: sa.Connection, queue_id: uuid.UUID, changes: dict[str, Any], *, actor: Actor,
                   now: datetime) -> ControlResult:
    """Change a failed/dlq row's text fields and send it again: validated per action type
    (lib.instagram.payload_rules), idempotency_key recomputed (a clash with another row: nothing written),
    the before/after difference audited (queue_item_edited), then pending with retry_count 0.
    A row the worker holds is refused; so is a value that still holds a display mark (a clipping
    note or a redaction placeholder the stored value does not have). On a publish row, any change
    to what goes into a media container drops the stored container (creation_id and our
    post_queue_state row): the worker makes a new one, so what publishes is what was saved."""
    require_operator(actor, "edit queue rows")
    q = post_queue
    r = conn.execute(sa.select(q).where(q.c.id == queue_id).with_for_update()).first()
    if r is None:
        raise QueueControlError("No queue row with this id.")
    if r.status not in RETRYABLE_STATUSES:
        raise QueueControlError(f"Only failed or dlq rows can be edited; this one is {r.status}. Nothing changed.")
    allowed = editable_fields(r.action_type)
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise QueueControlError(f"{', '.join(unknown)} cannot be edited on {r.action_type} (editable: "
                                f"{', '.join(allowed)}).")
    before = dict(r.payload or {})
    after = dict(before)
    for k, v in changes.items():
        v = v.strip() if isinstance(v, str) else v
        if isinstance(v, str):
            stored = "" if before.get(k) is None else str(before.get(k))
            marks = [m for m in dict.fromkeys(display_marks(v)) if v.count(m) > stored.count(m)]
            if marks:
                raise QueueControlError(
                    f"{k} still holds {', '.join(repr(m) for m in marks)}: that is a mark of the shortened or "
                    "redacted copy shown on the page, not part of the stored text. Edit the full text; "
                    "nothing was saved.")
        if v in (None, ""):
            after.pop(k, None)
        else:
            after[k] = v
    new_container = container_changed(r.action_type, before, after)
    if new_container:
        after.pop("creation_id", None)
    problems = payload_problems(r.action_type, after)
    if problems:
        raise QueueControlError("; ".join(problems))
    diff = {k: {"before": before.get(k), "after": after.get(k)}
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
    if not diff:
        raise QueueControlError("Nothing changed: use Retry to send the row as it is.")
    new_key = (idempotency_key(r.business_account_id, r.action_type, after)
               if r.business_account_id is not None else r.idempotency_key)
    if new_key != r.idempotency_key:
        clash = conn.execute(sa.select(q.c.id, q.c.status).where(q.c.idempotency_key == new_key, q.c.id != queue_id)).first()
        if clash is not None:
            raise QueueControlError(f"Another queue row ({clash.id}, {clash.status}) already holds this exact action; "
                                    "nothing written.")
    done = conn.execute(
        sa.update(q).where(q.c.id == queue_id, q.c.status == r.status, q.c.retry_count == r.retry_count)
        .values(payload=after, idempotency_key=new_key, status="pending", retry_count=0, next_retry_at=None,
                updated_at=now)
    ).rowcount
    if not done:
        raise QueueControlError("The row changed meanwhile (the worker took it); nothing changed.")
    dropped_state = 0
    if new_container:  # the worker reads creation_id and this row first: both must go
        dropped_state = conn.execute(sa.delete(post_queue_state).where(post_queue_state.c.queue_id == queue_id)).rowcount
    conn.execute(sa.insert(audit_log), [audit_row(
        event_type="queue_item_edited", action="edit_retry", resource_type="post_queue", resource_id=str(queue_id),
        now=now, user_id=actor.name, success=True,
        details={"business_account_id": None if r.business_account_id is None else str(r.business_account_id),
                 "queue_id": str(queue_id), "action_type": r.action_type, "previous_status": r.status,
                 "previous_retry_count": r.retry_count, "previous_error": r.error,
                 "changes": redact(diff), "new_container": new_container,
                 "dropped_container": before.get("creation_id") if new_container else None,
                 "dropped_container_state": bool(dropped_state)})])
    return ControlResult(True, str(queue_id), "Saved and moved back to pending; the worker sends it on its next tick"
                         + (" with a new media container." if new_container else "."))
