"""post_queue's rules: its action types and statuses, idempotency, which rows are due, active or stale
(as SQL conditions), how errors group, and the shapes the queue's functions return. No connection here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from lib.core.redact import REDACTED
from lib.core.schema import ACTION_TYPES, post_queue, queue_pauses
from lib.core.text import clip
from lib.instagram.client import AccountCreds
from lib.instagram.payload_rules import TEXT_FIELDS
from lib.instagram.publishing import ContainerState

CONTENT_ACTIONS = ("publish_post", "repost_ugc")  # the ones that make Instagram media containers


STATUSES = ("pending", "processing", "sent", "failed", "dlq")


PENDING, PROCESSING, SENT, FAILED, DLQ = STATUSES


ACTIVE_STATUSES = (PENDING, PROCESSING, FAILED, DLQ)  # the rows ix_post_queue_active holds


RETRYABLE_STATUSES = (FAILED, DLQ)  # what a person may retry: a failed row early, a dead letter at all


DUE_STATUSES = (PENDING, FAILED)  # the rows ix_post_queue_due holds: what the worker may take


ERROR_CATEGORIES = ("auth_failure", "permanent", "rate_limit", "transient", "unknown")


# The audit event (event type, action, resource type) written when an action of each type succeeds.
SUCCESS_EVENT = {
    "publish_post": ("post_published", "publish", "instagram_post"),
    "reply_comment": ("comment_replied", "reply", "instagram_comment"),
    "reply_dm": ("dm_sent", "send", "instagram_dm"),
    "send_dm": ("dm_sent", "send", "instagram_dm"),
    "repost_ugc": ("ugc_reposted", "repost", "ugc_content"),
}


# publish_post writes creation_id into its payload after step one; it is not part of identity.
_NOT_IDENTITY = {"creation_id"}


def idempotency_key(business_account_id: uuid.UUID | str, action_type: str, payload: dict[str, Any]) -> str:
    """SHA-256 of account, action type and canonical payload (sorted keys, no whitespace)."""
    identity = {k: v for k, v in (payload or {}).items() if k not in _NOT_IDENTITY or action_type == "repost_ugc"}
    canonical = json.dumps(
        {"account": str(business_account_id), "action_type": action_type, "payload": identity},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def due_clause(now: datetime):
    """Due: pending or failed, with next_retry_at unset or come. A pending row with a future
    next_retry_at waits on purpose (a container being processed, the publishing quota); a failed
    row without one, written by someone else's tool, is due."""
    q = post_queue
    # literal statuses, as in active_clause: SQLite uses the partial ix_post_queue_due only then
    return sa.and_(q.c.status.in_([sa.literal_column(f"'{s}'") for s in DUE_STATUSES]),
                   sa.or_(q.c.next_retry_at.is_(None), q.c.next_retry_at <= now))


def due_order():
    """The order the worker takes due rows in, oldest due first: ix_post_queue_due's columns."""
    q = post_queue
    return (sa.func.coalesce(q.c.next_retry_at, q.c.created_at), q.c.created_at, q.c.id)


def stale_clause(now: datetime, lease_s: int):
    """Rows left in processing longer than the lease (PROCESSING_LEASE_S), which the worker takes back."""
    q = post_queue
    return sa.and_(q.c.status == PROCESSING, q.c.updated_at < now - timedelta(seconds=lease_s))


MAX_BULK_RETRY = 1000  # "retry all matching" is capped here: one transaction stays short


IDS_PER_STATEMENT = 500  # ids per IN (...) list: well below SQLite's and psycopg2's parameter limits


def account_clause(account_id):
    return None if account_id is None else post_queue.c.business_account_id == account_id


def active_clause():
    """status IN ('pending', 'processing', 'failed', 'dlq') with the values as SQL literals, written as
    the partial indexes' predicate is: SQLite uses a partial index only when the query's WHERE names its
    terms, which a bound parameter cannot prove."""
    return post_queue.c.status.in_([sa.literal_column(f"'{s}'") for s in ACTIVE_STATUSES])


def other_clause():
    """status NOT IN (the spec's five): rows some other writer left with its own status, counted from
    ix_post_queue_other_status (same literal form as active_clause, for the same reason)."""
    return post_queue.c.status.not_in([sa.literal_column(f"'{s}'") for s in STATUSES])


def sent_clause():
    return post_queue.c.status == sa.literal_column(f"'{SENT}'")


ROLLUP_EVERY_S = 300  # the worker refreshes the sent rollup at most this often


ROLLUP_VERIFY_DAYS = 7  # closed days recounted per refresh (the walk back through history)


ROLLUP_RECENT_DAYS = 2  # closed days recounted on every refresh (late writes land there most)


def day_start(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def summary_matrix(summary: dict[str, int]) -> tuple[list[str], list[str], dict[tuple[str, str], int]]:
    """(action types, statuses, {(action_type, status): n}) from a status_summary()["summary"].

    Known names come first in spec order; anything else (someone else's writer) is kept after them.
    """
    cells: dict[tuple[str, str], int] = {}
    for key, n in summary.items():
        action_type, _, status = key.partition("::")
        cells[(action_type, status)] = cells.get((action_type, status), 0) + n
    extra_a = sorted({a for a, _ in cells} - set(ACTION_TYPES))
    extra_s = sorted({s for _, s in cells} - set(STATUSES))
    return [*ACTION_TYPES, *extra_a], [*STATUSES, *extra_s], cells


WAIT_KINDS = {"container": "container processing", "quota": "publishing limit"}


@dataclass(frozen=True)
class QueueFilter:
    """Which rows a table, an export or a "retry all matching" is about."""

    status: str = "dlq"
    account_id: uuid.UUID | None = None
    action_type: str | None = None
    error_category: str | None = None
    search: str | None = None  # case-insensitive substring of the error text
    errors: tuple[str, ...] | None = None  # exact error texts (one small normalised error group)
    ids: tuple[str, ...] | None = None  # row ids (a big error group, at most GROUP_ROW_CAP; see group_filter)

    def clauses(self) -> list:
        q = post_queue
        out = [q.c.status == self.status]
        if self.account_id is not None:
            out.append(q.c.business_account_id == self.account_id)
        if self.action_type:
            out.append(q.c.action_type == self.action_type)
        if self.error_category == "(none)":
            out.append(q.c.error_category.is_(None))
        elif self.error_category:
            out.append(q.c.error_category == self.error_category)
        if self.search and self.search.strip():
            out.append(sa.func.lower(q.c.error).contains(self.search.strip().lower(), autoescape=True))
        if self.errors is not None:
            out.append(q.c.error.in_(self.errors) if self.errors else sa.false())
        if self.ids is not None:
            out.append(q.c.id.in_([uuid.UUID(i) for i in self.ids]) if self.ids else sa.false())
        return out


ERRORS_IN_CAP = 500  # an error group with at most this many distinct texts is selected by its texts


GROUP_ROW_CAP = 10_000  # a bigger group is selected by the ids of its first rows (table order)


_UUID_RE = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I)


_HEX_RE = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{12,}\b", re.I)


_NUM_RE = re.compile(r"\d+")


_QUOTED_RE = re.compile(r"(['\"])(?:(?!\1).){1,200}\1")


_WS_RE = re.compile(r"\s+")


def normalize_error(error: str | None) -> str:
    """The error text with the parts that differ per row (ids, numbers, quoted values, times)
    replaced, so equal causes group together: 'Invalid media id 1789' -> 'Invalid media id #'.

    The leading '(#190)'-style Graph code is kept: it names the cause."""
    if not error:
        return "(no error text)"
    text = _WS_RE.sub(" ", str(error)).strip()
    code = ""
    m = re.match(r"^\(#\d+\)\s*", text)
    if m:
        code, text = m.group(0).strip() + " ", text[m.end():]
    text = _UUID_RE.sub("<id>", text)
    text = _HEX_RE.sub("<id>", text)
    text = _QUOTED_RE.sub("'…'", text)
    text = _NUM_RE.sub("#", text)
    text = text[:160] + ("…" if len(text) > 160 else "")
    return code + text


def group_errors(rows) -> list[dict[str, Any]]:
    """Merge (error_category, error, n) rows into groups by category and normalised text,
    biggest first: [{error_category, error_group, count, errors: (raw texts...)}]."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for category, error, n in rows:
        key = (category or "(none)", normalize_error(error))
        g = groups.setdefault(key, {"error_category": key[0], "error_group": key[1], "count": 0, "errors": []})
        g["count"] += int(n)
        g["errors"].append(error)
    out = sorted(groups.values(), key=lambda g: (-g["count"], g["error_category"], g["error_group"]))
    for g in out:
        g["errors"] = tuple(sorted(e for e in g["errors"] if e is not None))
    return out


@dataclass(frozen=True)
class RetryResult:
    """POST /post-queue/retry's response for one row, plus the status it had."""

    success: bool
    queue_id: str
    action_type: str | None
    previous_retry_count: int | None
    message: str
    previous_status: str | None = field(default=None, compare=False)
    held: str | None = field(default=None, compare=False)  # why the worker will not take it at once

    def as_response(self) -> dict[str, Any]:
        """Exactly the endpoint's shape: {success, queue_id, action_type, previous_retry_count, message}."""
        d = asdict(self)
        d.pop("previous_status")
        d.pop("held")
        return d


REFUSALS = {
    "pending": "Already pending: the worker will take it on its next tick; nothing changed.",
    "processing": "The worker is executing this row right now; nothing changed.",
    "sent": "Already sent to Instagram; nothing changed.",
}


def with_warnings(result: RetryResult, held: str | None, seen_row) -> RetryResult:
    """A reset row that will not run at once, or whose last error was permanent, says so."""
    message = result.message
    if held:
        message = f"Moved from {result.previous_status} back to pending, but it waits: {held}."
    if seen_row is not None and seen_row.error_category in ("permanent", "auth_failure"):
        last = clip(seen_row.error or "", 160)
        message += (f" Its last error was {seen_row.error_category} ({last}): "
                    "unless its cause was fixed, it will fail the same way.")
    return dataclasses.replace(result, message=message, held=held)


EXPORT_COLUMNS = ("id", "account", "business_account_id", "action_type", "status", "error_category", "error",
                  "retry_count", "next_retry_at", "created_at", "updated_at")


# -- find a row by what was sent ---------------------------------------------------------------------
SENT_SEARCH_MIN_CHARS = 3  # shorter text matches nearly every row (and a trigram index needs three)


SENT_SEARCH_MAX_CHARS = 200


SENT_SEARCH_CAP = 200  # matches read at most; the newest SENT_SEARCH_SHOWN of them are listed


SENT_SEARCH_SHOWN = 50


@dataclass(frozen=True)
class SentSearch:
    rows: list[dict[str, Any]]  # newest first, payload redacted
    more: bool  # more than SENT_SEARCH_CAP rows matched: the text is too common to list them all


def payload_text():
    """The payload as text, the expression the trigram index ix_post_queue_payload_trgm is built on."""
    return sa.cast(post_queue.c.payload, sa.Text)


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
    """post_queue rows that an active pause covers (lib.queue.holds.held_back_clause uses it)."""
    return sa.exists().where(pause_covers())


@dataclass(frozen=True)
class ControlResult:
    success: bool
    queue_id: str
    message: str


def editable_fields(action_type: str) -> tuple[str, ...]:
    return TEXT_FIELDS.get(action_type, ())


def display_marks(text: str) -> list[str]:
    """The display marks (clipping notes, redaction placeholders) found in a text."""
    return [m.group(0) for rx in DISPLAY_MARKS for m in rx.finditer(text)]


def container_changed(action_type: str, before: dict[str, Any], after: dict[str, Any]) -> bool:
    """A publish row's stored container no longer shows what the row asks for."""
    if action_type not in PUBLISH_ACTIONS:
        return False
    keys = (set(before) | set(after)) - {"creation_id"}
    return any(before.get(k) != after.get(k) for k in keys)


class LostClaim(Exception):
    """The row is no longer ours (rescued by another worker after our lease ran out)."""


@dataclass
class Claimed:
    id: uuid.UUID
    business_account_id: uuid.UUID | None
    action_type: str
    payload: dict[str, Any]
    idempotency_key: str | None
    retry_count: int
    prev_status: str
    prev_updated_at: datetime | None
    token: datetime  # updated_at we wrote when claiming
    account: AccountCreds | None = None
    state: ContainerState = field(default_factory=ContainerState)
    waiting_since: datetime | None = None
    has_state: bool = False  # a post_queue_state row exists (claimed with one, or written since)
    blocked_reason: str | None = None  # set when this row's failure stops the account for this tick
    settled: bool = False  # an uncertain earlier attempt was looked up this attempt (the look-first read answered)
