"""Engine factory and database initialisation (creates what is missing, never alters)."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles

from lib.core.schema import metadata
from lib.core.settings import mask_url, normalize_database_url

log = logging.getLogger(__name__)

# Errors that mean "the database is not there" rather than "our query is wrong".
UNAVAILABLE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    engine = sa.create_engine(url, **kwargs)
    _ping_when_rested(engine)
    return engine


def without_jit(conn: sa.Connection) -> None:
    """JIT compilation off for the rest of this transaction (PostgreSQL). The hold conditions'
    subqueries probe small tables but are estimated expensive, so a count over every active row with
    them passed the JIT threshold: 0.9 s of compiling for a 22 ms query on every refresh, at any queue
    volume. SET LOCAL, not SET: a transaction pooler keeps nothing past the transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")


# A pooled connection is pinged when it comes out of the pool after resting there PING_AFTER_IDLE_S
# or more (a server restart, a pooler or a firewall closing it while idle): a dead one is replaced,
# and the pool's older ones with it, before the caller's statement, as SQLAlchemy's pool_pre_ping
# does. Unlike pool_pre_ping, not on every checkout: the worker takes a connection per write,
# milliseconds apart, and a round trip per write was a tenth of its time per row.
PING_AFTER_IDLE_S = 1.0


def _ping_when_rested(engine: Engine) -> None:
    dialect = engine.dialect

    def rested(record: Any) -> None:
        record.info["rested_since"] = time.monotonic()

    @sa.event.listens_for(engine, "connect")
    def _connected(_dbapi_conn: Any, record: Any) -> None:  # a new connection counts as just used
        rested(record)

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            rested(record)

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("rested_since")
        if since is not None and time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            alive = dialect.do_ping(dbapi_conn)
        except Exception as exc:
            if not dialect.is_disconnect(exc, dbapi_conn, None):  # type: ignore[arg-type]  # any driver error
                raise
            alive = False
        if not alive:
            raise sa.exc.InvalidatePoolError()  # the pool drops it and its older ones, and reconnects


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the app read while the worker writes; busy_timeout queues writers instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


@dataclass
class InitReport:
    created_tables: list[str] = field(default_factory=list)
    created_indexes: list[str] = field(default_factory=list)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)


# pg_advisory_xact_lock key of init_db: any 64-bit number that nothing else in the database uses
# ("AgentDsh" in ASCII). Transaction-level: released at COMMIT/ROLLBACK, never held by a pooled
# server connection after our transaction ends (a session lock behind a transaction pooler would be).
INIT_LOCK_KEY = 0x4167656E74447368
INIT_ATTEMPTS = 5

# SQLSTATEs of "someone else created it first": duplicate_table (tables and indexes), duplicate_object,
# and unique_violation (two CREATE TABLEs racing on the catalog's pg_type/pg_class unique indexes).
_ALREADY_EXISTS_PGCODES = {"42P07", "42710", "23505"}


def _already_exists(exc: BaseException) -> bool:
    """True when a CREATE failed because a concurrent initialisation created the object first."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "pgcode", None) in _ALREADY_EXISTS_PGCODES:
        return True
    return "already exists" in str(orig or exc).lower()


def init_db(engine: Engine) -> InitReport:
    """Create missing tables and indexes. Never drops, renames or retypes anything.

    On tables created by someone else's DDL (Supabase) only the missing indexes are added;
    columns we rely on but cannot find are reported, not added.

    Safe to run from any number of processes at once (app replicas, workers, `python -m lib.db`),
    on an empty or a partly initialised database: every table of `metadata.sorted_tables` is
    inspected and created inside one transaction that first takes a lock --
    PostgreSQL: `pg_advisory_xact_lock` (transaction-level, so it is also safe behind a transaction
    pooler such as PgBouncer or Supabase's port 6543); SQLite: `BEGIN IMMEDIATE` (the database's
    write lock). The second process waits, then sees the committed schema and creates nothing.
    Where the lock cannot help (another tool creating the same tables without it) an "already
    exists" error rolls the attempt back and the whole inspection is repeated, up to INIT_ATTEMPTS.
    """
    for attempt in range(1, INIT_ATTEMPTS + 1):
        try:
            return _init_once(engine)
        except sa.exc.DBAPIError as exc:
            if attempt == INIT_ATTEMPTS or not _already_exists(exc):
                raise
            log.info("init_db: %s was created concurrently; inspecting again (attempt %d)",
                     error_line(exc, 200), attempt + 1)
    raise AssertionError("unreachable")


def _init_once(engine: Engine) -> InitReport:
    report = InitReport()
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # pysqlite would run DDL outside a transaction; the write lock first, then inspect
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(INIT_LOCK_KEY)))
        try:
            _create_missing(conn, report)
            report.created_indexes += ensure_trigram_indexes(conn)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return report


TRIGRAM_EXTENSION = "pg_trgm"
# The Activity Feed's search (lib.core.audit.feed_conditions): ILIKE '%text%' over these expressions. A GIN
# trigram index answers it without reading the rows; the expressions are written as the query's.
TRIGRAM_INDEXES = {
    "ix_audit_log_resource_id_trgm": "resource_id",
    "ix_audit_log_error_message_trgm": "error_message",
    "ix_audit_log_details_trgm": "(CAST(details AS TEXT))",
}
QUEUE_TRIGRAM_INDEX = "ix_post_queue_payload_trgm"


def ensure_trigram_indexes(conn: sa.Connection) -> list[str]:
    """PostgreSQL with pg_trgm available (Supabase has it): create the extension if it is missing and
    we may, then the feed search's trigram indexes. Anything else (SQLite, no extension, no privilege,
    audit_log made by someone else without these columns) creates nothing and never fails init.
    Returns the names of the indexes created."""
    if conn.dialect.name != "postgresql":
        return []
    found = conn.execute(sa.text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                                 "WHERE e.extname = :x"), {"x": TRIGRAM_EXTENSION}).scalar()
    if found is None:
        if conn.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = :x"),
                        {"x": TRIGRAM_EXTENSION}).first() is None:
            return []
        try:
            with conn.begin_nested():
                conn.execute(sa.text(f"CREATE EXTENSION IF NOT EXISTS {TRIGRAM_EXTENSION}"))
        except sa.exc.DBAPIError:  # not allowed to create extensions here: search stays bounded (lib.core.audit)
            return []
        found = conn.execute(sa.text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                                     "ON n.oid = e.extnamespace WHERE e.extname = :x"), {"x": TRIGRAM_EXTENSION}).scalar()
    inspector = sa.inspect(conn)
    if "audit_log" not in inspector.get_table_names():
        return []
    have_cols = {c["name"] for c in inspector.get_columns("audit_log")}
    if not {"resource_id", "error_message", "details"} <= have_cols:
        return []
    have = {i["name"] for i in inspector.get_indexes("audit_log")}
    opclass = f'"{found}".gin_trgm_ops'
    created = []
    for name, expr in TRIGRAM_INDEXES.items():
        if name not in have:
            conn.execute(sa.text(f"CREATE INDEX {name} ON audit_log USING gin ({expr} {opclass})"))
            created.append(name)
    # the Queue Monitor's search by what was sent (lib.queue.reads.search_sent): ILIKE over the payload's text
    if "post_queue" in inspector.get_table_names() and "payload" in {c["name"] for c in inspector.get_columns("post_queue")}:
        if QUEUE_TRIGRAM_INDEX not in {i["name"] for i in inspector.get_indexes("post_queue")}:
            conn.execute(sa.text(f"CREATE INDEX {QUEUE_TRIGRAM_INDEX} ON post_queue USING gin "
                                 f"((CAST(payload AS TEXT)) {opclass})"))
            created.append(QUEUE_TRIGRAM_INDEX)
    return created


def take_write_lock(conn: sa.Connection) -> None:
    """SQLite: take the database write lock now (BEGIN IMMEDIATE) unless this transaction already
    wrote; a no-op elsewhere. Call it before the read of a read-modify-write."""
    if conn.dialect.name != "sqlite":
        return
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[sa.Connection]:
    """A transaction that holds the write lock from its first read (read-modify-write writes).

    SQLite has no row locks and pysqlite starts its transaction only at the first write, so two
    read-then-update writers (two tabs answering in one chat session) could both read the old
    row and the second would overwrite the first: BEGIN IMMEDIATE takes the database write lock
    before the read, as the worker does. PostgreSQL: the caller's SELECT ... FOR UPDATE locks rows."""
    with engine.connect() as conn:
        take_write_lock(conn)
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def index_names(conn: sa.Connection, table: str, inspector: Any = None) -> set[str]:
    """The names of a table's indexes. On SQLite from sqlite_master: SQLAlchemy's reflection leaves
    out expression indexes (ix_post_queue_due), and init would then create it again on every start."""
    if conn.dialect.name == "sqlite":
        return set(conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
                                        "AND sql IS NOT NULL"), {"t": table}).scalars())
    return {str(i["name"]) for i in (inspector or sa.inspect(conn)).get_indexes(table)}


def _create_missing(conn: sa.Connection, report: InitReport) -> None:
    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(conn)
            report.created_tables.append(table.name)
            continue
        have_cols = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have_cols]
        if missing:
            report.missing_columns[table.name] = missing
            continue  # an index over a missing column would fail; say so instead
        have_idx = index_names(conn, table.name, inspector)
        for index in table.indexes:
            if index.name not in have_idx:
                index.create(conn)
                report.created_indexes.append(str(index.name))


def ping(engine: Engine) -> None:
    """Raise one of UNAVAILABLE_ERRORS when the database cannot be reached."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def error_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error, from the driver's own exception when SQLAlchemy wraps one: what a log
    line or a page shows of a database error (the rest is SQL and parameters)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [""])[0][:limit]


def unavailable_message(url: str, exc: BaseException) -> str:
    """What an operator needs when the database is down: which URL, what failed, what to check."""
    reason = error_line(exc)
    return (
        f"Database unavailable at {mask_url(url)}.\n\n"
        f"Reason: {reason}\n\n"
        "Check that the server is running and reachable, that DATABASE_URL (or the secrets file) "
        "names the right host, port, database and password, and that the network allows the connection."
    )


def distinct_values_cte(column: Any, name: str = "distinct_values") -> sa.CTE:
    """The distinct non-NULL values of an indexed column as a recursive CTE (one column, `v`): a loose
    index scan, one index probe per value, instead of reading the whole table as SELECT DISTINCT does
    (PostgreSQL before 18 and SQLite have no skip scan). Portable SQL; needs an index led by `column`."""
    first = sa.select(sa.func.min(column).label("v")).where(column.is_not(None))
    values = first.cte(name, recursive=True)
    following = sa.select(sa.select(sa.func.min(column)).where(column > values.c.v).scalar_subquery())
    return values.union_all(following.where(values.c.v.is_not(None)))


class uuid_text(sa.sql.functions.FunctionElement[str]):
    """A Uuid column as its canonical text (8-4-4-4-12, lower case), made by the database: a big
    export reads plain strings instead of building a uuid.UUID per row and printing it again."""

    type = sa.Text()
    name = "uuid_text"
    inherit_cache = True


@compiles(uuid_text)
def _uuid_text_default(element: Any, compiler: Any, **kw: Any) -> str:  # PostgreSQL: uuid::text is the canonical form
    return f"CAST({compiler.process(element.clauses, **kw)} AS TEXT)"


@compiles(uuid_text, "sqlite")
def _uuid_text_sqlite(element: Any, compiler: Any, **kw: Any) -> str:  # SQLAlchemy stores a Uuid on SQLite as 32 hex digits
    x = compiler.process(element.clauses, **kw)
    parts = " || '-' || ".join(f"substr({x}, {a}, {n})" for a, n in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12)))
    return f"CASE WHEN length({x}) = 32 THEN lower({parts}) ELSE lower({x}) END"


def stream_rows(conn: sa.Connection, query: Any, chunk_size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
    """The query's rows as the driver gives them (plain tuples, no SQLAlchemy result types applied:
    the caller's columns must not need them), in lists of at most `chunk_size`. PostgreSQL reads
    from a server-side cursor; sqlite3 steps its cursor lazily anyway. For big exports: SQLAlchemy's
    Row objects were a fifth of the time of reading 100,000 rows."""
    streamed = conn.dialect.name == "postgresql"
    result = (conn.execution_options(stream_results=True, yield_per=chunk_size) if streamed else conn).execute(query)
    try:
        # with stream_results SQLAlchemy has taken the first row into its own buffer at execute:
        # that one through the Result, the rest straight from the DBAPI cursor
        first: list[tuple[Any, ...]] = [tuple(r) for r in result.fetchmany(1)] if streamed else []
        cursor = result.cursor  # None when that fetch found no row and closed the result
        while cursor is not None:
            part = list(cursor.fetchmany(chunk_size - len(first)))
            if first:
                part, first = first + part, []
            if not part:
                break
            yield part
    finally:
        result.close()


# -- INSERT ... ON CONFLICT: both PostgreSQL and SQLite have it, each in its own SQLAlchemy dialect ---------

def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT for the connection's dialect, so that .on_conflict_do_nothing/_do_update are available."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def insert_ignore(conn: sa.Connection, table: sa.Table, rows: dict[str, Any] | list[dict[str, Any]], *,
                  key: str) -> int:
    """Insert one row (a dict) or many (a list); a row whose `key` is taken already is skipped.
    -> how many rows were inserted."""
    if not rows:
        return 0
    stmt = dialect_insert(conn, table).on_conflict_do_nothing(index_elements=[key])
    if isinstance(rows, dict):
        return conn.execute(stmt.values(**rows)).rowcount or 0
    return conn.execute(stmt, rows).rowcount or 0


def upsert(conn: sa.Connection, table: sa.Table, *, key: str, values: dict[str, Any], update: dict[str, Any]) -> None:
    """Insert `values`, or, when a row with the same `key` exists, set `update` on it."""
    conn.execute(dialect_insert(conn, table).values(**values).on_conflict_do_update(index_elements=[key], set_=update))
