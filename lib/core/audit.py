"""audit_log: the one place rows are written (worker, retries, resolves) and read."""
from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from lib.core.db import distinct_values_cte, stream_rows, uuid_text
from lib.core.redact import redact, redact_json_texts, redact_text, redact_texts
from lib.core.schema import UTCDateTime, audit_log
from lib.core.timebuckets import bucket_expr, bucket_value

if TYPE_CHECKING:
    from lib.core.export import Columns

# The agents' event types, plus the ones this project writes for operator actions.
SPEC_EVENT_TYPES = (
    "post_published",
    "comment_replied",
    "dm_sent",
    "ugc_reposted",
    "post_failed_permanent",
    "auth_failure",
)
OPERATOR_EVENT_TYPES = ("queue_item_retried", "alert_resolved")


def audit_row(
    *,
    event_type: str,
    action: str,
    resource_type: str,
    resource_id: str,
    now: datetime,
    user_id: str | None = None,
    success: bool | None = None,
    error_message: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The values of one audit_log row (for bulk inserts). resource_id is required: the column is
    NOT NULL in the user's own table, so a missing id is a bug caught here, on every database."""
    if resource_id is None or resource_id == "":
        raise ValueError(f"audit_log.resource_id is required ({event_type}/{action})")
    return {
        "id": uuid.uuid4(),
        "event_type": event_type,
        "action": action,
        "resource_type": resource_type,
        "resource_id": None if resource_id is None else str(resource_id),
        "user_id": user_id,
        "success": success,
        "error_message": redact_text(error_message),
        "details": None if details is None else redact(details),  # tokens never reach audit_log.details
        "created_at": now,
    }


# The columns audit_row() fills, taken from it so that a prebuilt INSERT (worker.tick) cannot miss one.
AUDIT_ROW_COLUMNS = tuple(audit_row(event_type="", action="", resource_type="", resource_id="-",
                                    now=datetime.now(UTC)))


def log_audit(conn: sa.Connection, **kwargs: Any) -> None:
    """Insert one audit_log row; keyword arguments as audit_row()."""
    conn.execute(sa.insert(audit_log), [audit_row(**kwargs)])


# ---------------------------------------------------------------------------------------------
# Reads for the Activity Feed: filters, keyset pages (created_at, id), chart counts, export.
# Rows without created_at cannot be placed on a timeline and are left out of every read.
# ---------------------------------------------------------------------------------------------

FEED_COLUMNS = (
    "id", "created_at", "event_type", "action", "resource_type", "resource_id",
    "user_id", "success", "error_message", "details",
)
EXPORT_COLUMNS = FEED_COLUMNS + ("ip_address", "user_agent")
PAGE_SIZES = (50, 100, 200)
EXPORT_CAP = 1_000_000
SEARCH_WINDOW = 100_000  # a text search reads at most the newest this many rows (bounded work per search)
SEARCH_MAX_CHARS = 200  # longer search strings are cut
LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class AuditFilter:
    """What the feed shows. Empty/None means "no restriction" for each field."""

    event_types: tuple[str, ...] = ()
    success: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    resource_type: str | None = None
    account_id: uuid.UUID | None = None  # through details.business_account_id (audit_log has no account column)
    search: str = ""


@dataclass(frozen=True)
class Cursor:
    """A keyset position: the (created_at, id) of a row."""

    created_at: datetime
    id: uuid.UUID


@dataclass
class FeedPage:
    rows: list[dict[str, Any]] = field(default_factory=list)
    has_older: bool = False  # there are rows after the last one (older)
    has_newer: bool = False  # there are rows before the first one (newer); set for `before` pages

    @property
    def first_cursor(self) -> Cursor | None:
        return Cursor(self.rows[0]["created_at"], self.rows[0]["id"]) if self.rows else None

    @property
    def last_cursor(self) -> Cursor | None:
        return Cursor(self.rows[-1]["created_at"], self.rows[-1]["id"]) if self.rows else None


def escape_like(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (escape character backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _details_text() -> sa.ColumnElement[str]:
    return sa.cast(audit_log.c.details, sa.Text)


def feed_conditions(filters: AuditFilter) -> list[sa.ColumnElement[bool]]:
    """The WHERE conditions of a filter, every value a bound parameter."""
    t = audit_log
    cond: list[sa.ColumnElement[bool]] = [t.c.created_at.is_not(None)]
    if filters.event_types:
        cond.append(t.c.event_type.in_(list(filters.event_types)))
    if filters.success is not None:
        cond.append(t.c.success.is_(filters.success))
    if filters.since is not None:
        cond.append(t.c.created_at >= filters.since)
    if filters.until is not None:
        cond.append(t.c.created_at < filters.until)
    if filters.resource_type:
        cond.append(t.c.resource_type == filters.resource_type)
    if filters.account_id is not None:
        cond.append(t.c.details["business_account_id"].as_string() == str(filters.account_id))
    text = filters.search.strip()[:SEARCH_MAX_CHARS]
    if text:
        # bounded: LIKE '%x%' uses no index, so it runs only over the newest SEARCH_WINDOW rows, whose
        # lower edge is found by walking the created_at index (the window does not depend on the text)
        edge = (sa.select(t.c.created_at).where(t.c.created_at.is_not(None)).order_by(t.c.created_at.desc())
                .offset(SEARCH_WINDOW - 1).limit(1).scalar_subquery())
        cond.append(sa.or_(edge.is_(None), t.c.created_at >= edge))
        pattern = f"%{escape_like(text)}%"
        cond.append(
            sa.or_(
                t.c.resource_id.ilike(pattern, escape=LIKE_ESCAPE),
                t.c.error_message.ilike(pattern, escape=LIKE_ESCAPE),
                _details_text().ilike(pattern, escape=LIKE_ESCAPE),
            )
        )
    return cond


def _row_dict(row: Any) -> dict[str, Any]:
    """One feed row; details and error text redacted again (rows written before redaction existed)."""
    d = {c: getattr(row, c) for c in FEED_COLUMNS}
    d["details"] = redact(d["details"])
    d["error_message"] = redact_text(d["error_message"])
    return d


def _keyset() -> Any:
    return sa.tuple_(audit_log.c.created_at, audit_log.c.id)


def feed_page(
    conn: sa.Connection,
    *,
    filters: AuditFilter,
    limit: int = 50,
    after: Cursor | None = None,
    before: Cursor | None = None,
) -> FeedPage:
    """One page of the feed, newest first, by keyset on (created_at, id).

    `after`: the rows older than that cursor (the next page); `before`: the rows newer than it
    (the previous page). Neither: the newest rows. Never OFFSET.
    """
    if after is not None and before is not None:
        raise ValueError("pass either after or before, not both")
    t = audit_log
    cols = [t.c[c] for c in FEED_COLUMNS]
    query = sa.select(*cols).where(*feed_conditions(filters))
    if before is not None:
        query = query.where(_keyset() > sa.tuple_(sa.literal(before.created_at, t.c.created_at.type),
                                                  sa.literal(before.id, t.c.id.type)))
        query = query.order_by(t.c.created_at.asc(), t.c.id.asc()).limit(limit + 1)
        rows = [_row_dict(r) for r in conn.execute(query)]
        has_newer = len(rows) > limit
        rows = rows[:limit]
        rows.reverse()
        return FeedPage(rows=rows, has_older=True, has_newer=has_newer)
    if after is not None:
        query = query.where(_keyset() < sa.tuple_(sa.literal(after.created_at, t.c.created_at.type),
                                                 sa.literal(after.id, t.c.id.type)))
    query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1)
    rows = [_row_dict(r) for r in conn.execute(query)]
    return FeedPage(rows=rows[:limit], has_older=len(rows) > limit, has_newer=after is not None)


def feed_query(filters: AuditFilter, limit: int | None = None) -> sa.Select[Any]:
    """The SELECT of everything a filter matches, newest first (for export and plans)."""
    t = audit_log
    # details as the database's JSON text: no parse and re-serialise per row on a big export; the id as
    # text and created_at as the driver's datetime (no Python type processing per row: see export_chunks)
    special: dict[str, Any] = {"details": _details_text(), "id": uuid_text(t.c.id),
               "created_at": sa.type_coerce(t.c.created_at, sa.types.NullType())}
    cols = [special[c].label(c) if c in special else t.c[c] for c in EXPORT_COLUMNS]
    query = (
        sa.select(*cols)
        .where(*feed_conditions(filters))
        .order_by(t.c.created_at.desc(), t.c.id.desc())
    )
    return query if limit is None else query.limit(limit)


def count_matching(conn: sa.Connection, *, filters: AuditFilter, cap: int = EXPORT_CAP) -> int:
    """How many rows the filter matches, counting at most cap + 1 (so a huge table stays cheap)."""
    inner = sa.select(sa.literal(1).label("one")).select_from(audit_log).where(*feed_conditions(filters)).limit(cap + 1)
    return int(conn.execute(sa.select(sa.func.count()).select_from(inner.subquery())).scalar_one())


def export_chunks(
    conn: sa.Connection, *, filters: AuditFilter, cap: int = EXPORT_CAP, chunk_size: int = 5000
) -> Iterator[Columns]:
    """Rows of everything the filter matches (at most cap + 1, so a caller can tell it was capped),
    newest first, read from a server-side cursor in chunks of `chunk_size` (lib.core.export.Columns: they
    read as row tuples)."""
    from lib.core.export import prefetched  # lazy: lib.core.export brings pandas, which the worker's writes do not need

    chunks = _export_chunks(conn, filters, cap, chunk_size)
    # PostgreSQL: the server reads the next chunk while this one is written (the client waits on a
    # socket, without the GIL); sqlite3 builds its rows holding the GIL, so a thread only adds switches
    return iter(prefetched(chunks)) if conn.dialect.name == "postgresql" else chunks


def _export_chunks(conn: sa.Connection, filters: AuditFilter, cap: int, chunk_size: int) -> Iterator[Columns]:
    from lib.core.export import Columns  # lazy: pandas, as above

    d_at, e_at = EXPORT_COLUMNS.index("details"), EXPORT_COLUMNS.index("error_message")
    t_at, s_at = EXPORT_COLUMNS.index("created_at"), EXPORT_COLUMNS.index("success")
    # the driver's values (feed_query selects every column as text or as the driver reads it; only
    # sqlite3's 0/1 for success is made a bool here), then redaction column by column (lib.core.redact: a
    # vectorised pre-check, then only the few cells that may hold a credential are parsed)
    for part in stream_rows(conn, feed_query(filters, limit=cap + 1), chunk_size):
        cols: list[Any] = list(zip(*part))
        cols[t_at] = _utc_column(cols[t_at])
        cols[s_at] = [v if v is None or v is True or v is False else bool(v) for v in cols[s_at]]
        cols[d_at] = redact_json_texts(list(cols[d_at]))
        cols[e_at] = redact_texts(list(cols[e_at]))
        yield Columns(cols)


_to_utc = UTCDateTime().process_result_value  # the column type's own rule
_fromiso = datetime.fromisoformat


def _utc_column(values: Sequence[Any]) -> list[datetime | None]:
    """created_at as the driver gave it (SQLite: text, PostgreSQL: aware datetimes) as UTCDateTime
    would have made it (aware UTC datetimes), without its per-row call for the common forms."""
    if all(type(v) is str for v in values[:1]):  # SQLite: ISO text, naive UTC as SQLAlchemy writes it
        try:  # one call per value: the offset appended to the text (a seventh of parse + replace)
            return [None if v is None else _fromiso(v + "+00:00") for v in values]
        except ValueError:  # a text with an offset of its own (not written by SQLAlchemy)
            pass
        parsed = [None if v is None else datetime.fromisoformat(v) for v in values]
        return [v if v is None or v.tzinfo is UTC else
                v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC) for v in parsed]
    return [v if v is None or (type(v) is datetime and v.tzinfo is UTC) else _to_utc(v, None)  # type: ignore[arg-type]
            for v in values]  # the column type's own rule, which never reads its dialect argument


def event_counts(conn: sa.Connection, *, filters: AuditFilter, bucket: str) -> list[dict[str, Any]]:
    """Events per UTC hour/day and outcome: [{bucket, outcome ('success'|'failure'|'unknown'), count}]."""
    t = audit_log
    b = bucket_expr(t.c.created_at, bucket, conn.dialect.name).label("bucket")
    query = (
        sa.select(b, t.c.success, sa.func.count().label("n"))
        .where(*feed_conditions(filters))
        .group_by(b, t.c.success)
        .order_by(b)
    )
    outcome = {True: "success", False: "failure", None: "unknown"}
    return [
        {"bucket": bucket_value(r.bucket), "outcome": outcome[r.success], "count": int(r.n)}
        for r in conn.execute(query)
    ]


def distinct_event_types(conn: sa.Connection) -> list[str]:
    """The spec's event types, ours, and any other found in the data."""
    values = distinct_values_cte(audit_log.c.event_type)  # index probes, not a scan of the table
    found = conn.execute(sa.select(values.c.v).where(values.c.v.is_not(None))).scalars()
    known = list(SPEC_EVENT_TYPES) + list(OPERATOR_EVENT_TYPES)
    return known + sorted(set(found) - set(known))


def distinct_resource_types(conn: sa.Connection) -> list[str]:
    values = distinct_values_cte(audit_log.c.resource_type)  # ix_audit_log_resource_type probes
    found = conn.execute(sa.select(values.c.v).where(values.c.v.is_not(None))).scalars()
    return sorted(set(found))
