"""The tables exactly as the spec names them, in types that work on PostgreSQL and SQLite.

PostgreSQL gets native uuid, jsonb and timestamptz; SQLite gets CHAR(32), JSON text and
naive-UTC timestamps, normalised back to aware UTC on read (UTCDateTime below).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class _LenientSQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME, except that a value it cannot parse (text someone else's tool wrote) reads
    as NULL instead of failing the whole query: one bad row must not stop a page or a worker pass."""

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any]:
        parse = super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            try:
                return parse(value) if parse else value
            except (ValueError, TypeError):
                return None
        return process


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; on SQLite naive UTC in, aware UTC out. Naive input is refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_LenientSQLiteDateTime())  # type: ignore[no-untyped-call]  # SQLAlchemy's own __init__
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a SQLite row written by someone else's tool
            try:
                value = datetime.fromisoformat(value)
            except ValueError:  # unreadable: shown as unknown rather than stopping every read of the table
                return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Uuid(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


instagram_business_accounts = sa.Table(
    "instagram_business_accounts",
    metadata,
    _id(),
    sa.Column("username", sa.Text),
    sa.Column("instagram_business_id", sa.Text),
    sa.Column("access_token", sa.Text),
    sa.Column("is_connected", sa.Boolean, default=True),
    _ts("created_at"),
    _ts("updated_at"),
)

post_queue = sa.Table(
    "post_queue",
    metadata,
    _id(),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("action_type", sa.Text, nullable=False),
    sa.Column("payload", JSONType),
    sa.Column("idempotency_key", sa.Text, unique=True),
    sa.Column("status", sa.Text, nullable=False, default="pending"),
    sa.Column("retry_count", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("error_category", sa.Text),
    sa.Column("instagram_id", sa.Text),
    _ts("next_retry_at"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("ix_post_queue_status_next_retry_at", "status", "next_retry_at"),
    sa.Index("ix_post_queue_business_account_id", "business_account_id"),
    sa.Index("ix_post_queue_status_updated_at", "status", "updated_at"),
    sa.Index("ix_post_queue_action_type_status", "action_type", "status"),  # status_summary: index-only GROUP BY
    sa.Index("ix_post_queue_instagram_id", "instagram_id"),  # Posts: the join with the reports' media ids
    sa.Index("ix_post_queue_action_type_status_updated_at", "action_type", "status", "updated_at"),  # Posts: count in a range
    # status_summary's active counts: a partial index that holds only the rows not sent (issue: scale
    # with history), so counting them costs the same after a year of sent rows as on day one
    sa.Index("ix_post_queue_active", "status", "action_type", "business_account_id",
             postgresql_where=sa.text("status IN ('pending', 'processing', 'failed', 'dlq')"),
             sqlite_where=sa.text("status IN ('pending', 'processing', 'failed', 'dlq')")),
    # status_summary's rows of any other status (someone else's writer): usually none, so this stays empty
    sa.Index("ix_post_queue_other_status", "status", "action_type", "business_account_id",
             postgresql_where=sa.text("status NOT IN ('pending', 'processing', 'sent', 'failed', 'dlq')"),
             sqlite_where=sa.text("status NOT IN ('pending', 'processing', 'sent', 'failed', 'dlq')")),
    # status_summary's live part of `sent` (since the rollup's last closed day, and 24 h / 7 d): index-only
    sa.Index("ix_post_queue_sent_updated_at", "updated_at", "action_type", "business_account_id",
             postgresql_where=sa.text("status = 'sent'"), sqlite_where=sa.text("status = 'sent'")),
    # Accounts page: the newest sent / failed row of one account and action type is one probe
    sa.Index("ix_post_queue_account_outcome", "business_account_id", "action_type", "status", "updated_at"),
    # Service levels' time to send (updated_at - created_at of sent rows over 24 h / 7 d / 30 d): index-only,
    # where the index above without created_at made PostgreSQL read the whole table for the 30 days
    sa.Index("ix_post_queue_sent_latency", "updated_at", "action_type", "business_account_id", "created_at",
             postgresql_where=sa.text("status = 'sent'"), sqlite_where=sa.text("status = 'sent'")),
)
# The worker's claim (lib.queue.store.claim_query): the due rows in the order it takes them, so a claim
# reads the first few index entries instead of sorting every pending row. Partial: sent rows, the bulk
# of a year's queue, are not in it. An expression index, so it is declared after the table.
sa.Index("ix_post_queue_due", sa.func.coalesce(post_queue.c.next_retry_at, post_queue.c.created_at),
         post_queue.c.created_at, post_queue.c.id,
         postgresql_where=sa.text("status IN ('pending', 'failed')"),
         sqlite_where=sa.text("status IN ('pending', 'failed')"))

agent_heartbeats = sa.Table(
    "agent_heartbeats",
    metadata,
    _id(),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text),
    _ts("last_beat_at"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("ix_agent_heartbeats_agent_id_last_beat_at", "agent_id", "last_beat_at"),
    sa.Index("ix_agent_heartbeats_last_beat_at", "last_beat_at"),
)

oversight_chat_sessions = sa.Table(
    "oversight_chat_sessions",
    metadata,
    _id(),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("dashboard_user_id", sa.Text),
    sa.Column("messages", JSONType),
    sa.Column("session_title", sa.Text),
    sa.Column("is_active", sa.Boolean, default=True),
    sa.Column("last_question", sa.Text),
    sa.Column("last_answer", sa.Text),
    sa.Column("last_latency_ms", sa.Integer),
    sa.Column("last_tools_used", JSONType),
    sa.Column("total_queries", sa.Integer, default=0),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("ix_oversight_chat_sessions_user_updated", "dashboard_user_id", "updated_at"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    _id(),
    sa.Column("event_type", sa.Text),
    sa.Column("action", sa.Text),
    sa.Column("resource_type", sa.Text),
    sa.Column("resource_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("success", sa.Boolean),
    sa.Column("error_message", sa.Text),
    sa.Column("details", JSONType),
    sa.Column("ip_address", sa.Text),
    sa.Column("user_agent", sa.Text),
    _ts("created_at"),
    sa.Index("ix_audit_log_created_at_id", "created_at", "id"),
    sa.Index("ix_audit_log_event_type_created_at", "event_type", "created_at"),
    sa.Index("ix_audit_log_resource_id", "resource_id"),
    sa.Index("ix_audit_log_resource_type", "resource_type"),  # the feed's filter options (loose index scan)
)

system_alerts = sa.Table(
    "system_alerts",
    metadata,
    _id(),
    sa.Column("alert_type", sa.Text, nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("details", JSONType),
    sa.Column("resolved", sa.Boolean, nullable=False, default=False),
    _ts("resolved_at"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.Index("ix_system_alerts_resolved_created_at", "resolved", "created_at"),
)

analytics_reports = sa.Table(
    "analytics_reports",
    metadata,
    _id(),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("report_type", sa.Text),
    _ts("report_date"),
    sa.Column("start_date", sa.Text),
    sa.Column("end_date", sa.Text),
    sa.Column("instagram_metrics", JSONType),
    sa.Column("media_metrics", JSONType),
    sa.Column("revenue_metrics", JSONType),
    sa.Column("historical_comparison", JSONType),
    sa.Column("insights", JSONType),
    sa.Column("data_sources", JSONType),
    _ts("processed_at"),
    sa.Column("run_id", sa.Text),
    _ts("created_at"),
    sa.Index("ix_analytics_reports_account_type_date", "business_account_id", "report_type", "report_date"),
)

# Our own table (not in the spec): one row per worker tick, so the pages can tell whether the
# worker runs. Never agent_heartbeats: the backend reads its newest row to decide agent liveness.
worker_ticks = sa.Table(
    "worker_ticks",
    metadata,
    _id(),
    sa.Column("host", sa.Text),
    sa.Column("pid", sa.Integer),
    _ts("started_at", nullable=False),
    _ts("finished_at"),
    sa.Column("claimed", sa.Integer, default=0),
    sa.Column("sent", sa.Integer, default=0),
    sa.Column("failed", sa.Integer, default=0),
    sa.Column("dlq", sa.Integer, default=0),
    sa.Column("rescued", sa.Integer, default=0),
    sa.Column("error", sa.Text),
    sa.Index("ix_worker_ticks_started_at", "started_at"),
)

# Our own: what the worker knows about a post_queue row beyond the spec's columns,
# keyed by its id (the user's table never gets a column): the container it made and when, the
# carousel items, why it waits and until when, and whether its last attempt may have reached
# Instagram although no answer came back (a timeout or a crash).
post_queue_state = sa.Table(
    "post_queue_state",
    metadata,
    sa.Column("queue_id", sa.Uuid(as_uuid=True), primary_key=True),
    sa.Column("creation_id", sa.Text),
    _ts("container_created_at"),
    sa.Column("children", JSONType),  # carousel items: [{"key": <media url>, "id": <container id>, "created_at": iso}]
    sa.Column("wait_kind", sa.Text),  # container | quota | None (not waiting)
    sa.Column("wait_reason", sa.Text),
    _ts("waiting_since"),
    _ts("wait_until"),
    sa.Column("uncertain", sa.Boolean, default=False),
    _ts("updated_at"),
    sa.Index("ix_post_queue_state_wait_until", "wait_until"),
)

# Our own: the latest Graph usage per account (X-Business-Use-Case-Usage entry of its
# business id) and for the whole app (scope 'app', X-App-Usage), plus the account's content
# publishing quota (content_publishing_limit). Percentages 0-100 as Meta sends them.
graph_usage = sa.Table(
    "graph_usage",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),  # 'app' or str(business_account_id)
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("usage_type", sa.Text),
    sa.Column("call_count", sa.Float),
    sa.Column("total_cputime", sa.Float),
    sa.Column("total_time", sa.Float),
    sa.Column("regain_access_minutes", sa.Float),
    _ts("regain_at"),  # no calls for this scope before this time
    _ts("seen_at"),
    sa.Column("quota_usage", sa.Integer),
    sa.Column("quota_total", sa.Integer),
    sa.Column("quota_duration_s", sa.Integer),
    _ts("quota_seen_at"),
    _ts("token_expires_at"),  # debug_token's expires_at; NULL: unknown or never
    _ts("token_checked_at"),
)

# Our own: an account (or, scope 'app', every account) that Instagram itself holds back -- a temporary
# block (368), a restricted account (25/2207050), a spam restriction (4/2207051), messaging restricted
# (10/1893063). While a row is active (held_until in the future, or NULL: until an operator resumes)
# the worker claims none of the account's rows and uses none of their retries. Written by the worker
# (lib.instagram.account_holds.hold); an operator's resume deletes it (audit_log keeps the history).
account_holds = sa.Table(
    "account_holds",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),  # str(business_account_id)
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("kind", sa.Text, nullable=False),  # temporary_block | restricted | spam | messaging_restricted
    sa.Column("reason", sa.Text, nullable=False),  # Instagram's answer, redacted
    sa.Column("owner_must", sa.Text),
    sa.Column("error_code", sa.Integer),
    sa.Column("error_subcode", sa.Integer),
    _ts("held_at", nullable=False),
    _ts("held_until"),
)

# Our own: every attempt the worker made on a queue row (time, outcome, category, error), newest
# read first by the Queue Monitor's row detail. Kept 30 days (pruned by the worker).
post_queue_attempts = sa.Table(
    "post_queue_attempts",
    metadata,
    _id(),
    sa.Column("queue_id", sa.Uuid(as_uuid=True), nullable=False),
    _ts("attempted_at", nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),  # sent | failed | dlq | waiting | held
    sa.Column("error_category", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("error_code", sa.Integer),
    sa.Column("error_subcode", sa.Integer),
    sa.Column("retry_count", sa.Integer),
    sa.Index("ix_post_queue_attempts_queue", "queue_id", "attempted_at"),
    sa.Index("ix_post_queue_attempts_at", "attempted_at"),
)

# Our own: an operator's pause of an account, an action type, or both. While a row
# exists the worker claims nothing it covers; resuming deletes it (audit_log keeps the history).
queue_pauses = sa.Table(
    "queue_pauses",
    metadata,
    _id(),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),  # NULL: every account
    sa.Column("action_type", sa.Text),  # NULL: every action type
    sa.Column("paused_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    _ts("paused_at", nullable=False),
    sa.Index("ix_queue_pauses_scope", "business_account_id", "action_type"),
)

# Our own (scale with history): sent rows per UTC day of updated_at, account and action type, counted
# by the worker (lib.queue.store.refresh_sent_rollup) for the days before `closed_until`; status_summary adds
# the rows sent since then, counted live. No trigger or column on post_queue: see refresh_sent_rollup.
post_queue_sent_daily = sa.Table(
    "post_queue_sent_daily",
    metadata,
    _ts("day", nullable=False),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("action_type", sa.Text, nullable=False),
    sa.Column("sent", sa.Integer, nullable=False),
    sa.Index("ix_post_queue_sent_daily_day", "day"),
    sa.Index("ix_post_queue_sent_daily_account", "business_account_id", "action_type"),
)

# Our own: post_queue_sent_daily summed per account and action type (a few dozen rows), rewritten by the
# same refresh in the same transaction, so status_summary's `sent` reads these instead of a year of days.
post_queue_sent_totals = sa.Table(
    "post_queue_sent_totals",
    metadata,
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("action_type", sa.Text, nullable=False),
    sa.Column("sent", sa.BigInteger, nullable=False),
    sa.Index("ix_post_queue_sent_totals_account", "business_account_id", "action_type"),
)

# One row (id 1): how far post_queue_sent_daily reaches and where its re-verification walk stands.
post_queue_rollup_state = sa.Table(
    "post_queue_rollup_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _ts("closed_until", nullable=False),  # the days before this are in post_queue_sent_daily
    _ts("verify_cursor"),  # the next re-verification recounts the days just before this
    _ts("refreshed_at", nullable=False),
)

SPEC_TABLES = (
    post_queue,
    agent_heartbeats,
    oversight_chat_sessions,
    audit_log,
    system_alerts,
    analytics_reports,
)

# -- Alert notifications (lib/notify/, docs/notifications.md): our own tables, keyed by the
# ids of system_alerts rows; system_alerts itself gets no column.

# One incident per (alert_type, account, agent) while any of its alerts is open: the unit that gets
# one "opened" message, at most one digest of repeats per interval and one "resolved" message.
notify_incidents = sa.Table(
    "notify_incidents",
    metadata,
    _id(),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("alert_type", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("agent_id", sa.Text),
    sa.Column("first_alert_id", sa.Uuid(as_uuid=True), nullable=False),
    sa.Column("state", sa.Text, nullable=False, default="open"),  # open | resolved
    sa.Column("opened_sent", sa.Boolean, nullable=False, default=False),
    sa.Column("routes", JSONType),  # route ids that got the opening (the resolve goes there too)
    sa.Column("silence_id", sa.Uuid(as_uuid=True)),  # the silence that held the opening back, if any
    sa.Column("repeats_total", sa.Integer, nullable=False, default=0),
    sa.Column("repeats_pending", sa.Integer, nullable=False, default=0),  # since the last message
    _ts("pending_since"),
    sa.Column("digests", sa.Integer, nullable=False, default=0),
    _ts("first_seen"),
    _ts("opened_at", nullable=False),
    _ts("last_message_at"),
    _ts("resolved_at"),
    sa.Column("resolved_by", sa.Text),
    _ts("updated_at"),
    sa.Index("ix_notify_incidents_state_group_key", "state", "group_key"),
    sa.Index("ix_notify_incidents_opened_at", "opened_at"),
)

# The system_alerts rows detection has seen: new rows, count changes and resolutions show as diffs.
notify_alert_rows = sa.Table(
    "notify_alert_rows",
    metadata,
    sa.Column("alert_id", sa.Uuid(as_uuid=True), primary_key=True),
    sa.Column("incident_id", sa.Uuid(as_uuid=True), nullable=False),
    sa.Column("last_count", sa.Integer, nullable=False, default=1),
    _ts("last_updated_at"),
    sa.Column("resolved", sa.Boolean, nullable=False, default=False),
    _ts("seen_at"),
    sa.Index("ix_notify_alert_rows_resolved", "resolved"),
    sa.Index("ix_notify_alert_rows_incident_id", "incident_id"),
)

# The outbox: one row per message per route, written in the detection's transaction and delivered
# by any worker (claims with SKIP LOCKED). Holds the route's id and masked label, never its URL.
notification_outbox = sa.Table(
    "notification_outbox",
    metadata,
    _id(),
    sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
    sa.Column("incident_id", sa.Uuid(as_uuid=True)),
    sa.Column("alert_id", sa.Uuid(as_uuid=True)),
    sa.Column("kind", sa.Text, nullable=False),  # opened | digest | resolved | test
    sa.Column("route_id", sa.Text, nullable=False),
    sa.Column("route_label", sa.Text),
    sa.Column("severity", sa.Text),
    sa.Column("alert_type", sa.Text),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("notify_type", sa.Text, nullable=False, default="info"),
    sa.Column("status", sa.Text, nullable=False, default="pending"),  # pending|sending|failed|sent|gave_up
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    _ts("next_attempt_at"),
    _ts("claimed_at"),
    sa.Column("last_error", sa.Text),
    _ts("created_at", nullable=False),
    _ts("updated_at"),
    _ts("sent_at"),
    sa.Index("ix_notification_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_notification_outbox_created_at", "created_at"),
)

alert_silences = sa.Table(
    "alert_silences",
    metadata,
    _id(),
    sa.Column("alert_type", sa.Text),  # NULL = any type; at least one matcher is set
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("agent_id", sa.Text),
    _ts("starts_at", nullable=False),
    _ts("ends_at", nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    _ts("created_at"),
    _ts("ended_early_at"),
    sa.Column("ended_by", sa.Text),
    sa.Index("ix_alert_silences_ends_at", "ends_at"),
)

alert_acknowledgements = sa.Table(
    "alert_acknowledgements",
    metadata,
    _id(),
    sa.Column("alert_id", sa.Uuid(as_uuid=True), nullable=False),
    sa.Column("acknowledged_by", sa.Text, nullable=False),
    _ts("acknowledged_at", nullable=False),
    sa.Column("note", sa.Text),
    sa.Index("ix_alert_acknowledgements_alert_id", "alert_id"),
)

# -- Review before sending (lib/queue/review.py, docs/review.md): our own tables, keyed by account and
# action type (policies) or by post_queue ids (decisions, context); post_queue gets no column.

# Who reviews what: per account (NULL: every account) and action type, the mode always | first_n |
# match | never. The most specific row wins; with none, REVIEW_ACTIONS decides.
review_policies = sa.Table(
    "review_policies",
    metadata,
    _id(),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),  # NULL: every account
    sa.Column("action_type", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("first_n", sa.Integer),  # first_n: hold until the account has sent this many of the type
    sa.Column("terms", JSONType),  # match: the words/patterns as the operator typed them
    sa.Column("updated_by", sa.Text, nullable=False),
    _ts("updated_at", nullable=False),
    sa.Index("ix_review_policies_scope", "action_type", "business_account_id"),
)

# A match policy's terms as LIKE patterns (lib.queue.review_rules.like_pattern), so the claim can test them in SQL.
review_policy_terms = sa.Table(
    "review_policy_terms",
    metadata,
    sa.Column("policy_id", sa.Uuid(as_uuid=True), nullable=False),
    sa.Column("pattern", sa.Text, nullable=False),
    sa.Index("ix_review_policy_terms_policy_id", "policy_id"),
)

# One decision per queue row: approved | rejected | expired, by whom, the text before and after.
review_decisions = sa.Table(
    "review_decisions",
    metadata,
    sa.Column("queue_id", sa.Uuid(as_uuid=True), primary_key=True),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    sa.Column("action_type", sa.Text, nullable=False),
    sa.Column("decision", sa.Text, nullable=False),
    sa.Column("reviewer", sa.Text, nullable=False),  # the operator, or "worker" for an expiry
    sa.Column("reason", sa.Text),
    sa.Column("original_text", sa.Text),
    sa.Column("final_text", sa.Text),
    sa.Column("edited", sa.Boolean, nullable=False, default=False),
    sa.Column("edit_distance", sa.Integer),
    _ts("queued_at"),
    _ts("decided_at", nullable=False),
    _ts("window_ends_at"),  # a DM's 24-hour messaging window: an approved DM is never sent after it
    sa.Index("ix_review_decisions_decided_at", "decided_at"),
)

# The context a reviewer reads (the comment and its post, the conversation's last messages), as read
# from the Graph API when the row was opened; never a token. window_ends_at: the customer's last
# message + 24 h, when the conversation could be read.
review_context = sa.Table(
    "review_context",
    metadata,
    sa.Column("queue_id", sa.Uuid(as_uuid=True), primary_key=True),
    sa.Column("context", JSONType),
    sa.Column("error", sa.Text),
    _ts("window_ends_at"),
    _ts("fetched_at", nullable=False),
)

# Our own: when each agent is expected to beat (lib.activity.agent_schedules). No row: the default rule (a beat at
# least every 60 s). A row holds either a period (an agent that beats every period_s seconds) or a cron
# expression (an agent that runs at set times, e.g. nightly), plus the grace allowed after each expected
# beat, and the availability the agent should reach. Set by operators on Agent Status; audit_log keeps
# every change.
agent_schedules = sa.Table(
    "agent_schedules",
    metadata,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("period_s", sa.Integer),  # NULL when cron is set
    sa.Column("cron", sa.Text),  # five fields, UTC; NULL when period_s is set
    sa.Column("grace_s", sa.Integer, nullable=False),
    sa.Column("availability_target", sa.Float),  # 0-1, e.g. 0.995; NULL: no target
    sa.Column("updated_by", sa.Text, nullable=False),
    _ts("updated_at", nullable=False),
)

# Our own: maintenance windows (lib.alerts.maintenance). While one covers an agent, an account or (neither set)
# everything, no agent_down or queue alert is raised for it and no notification goes out. One-off
# (starts_at .. ends_at) or recurring (cron + duration_s, from starts_at until ends_at if set). An
# operator ending one early sets ended_at; rows are kept so the timelines can show past windows.
maintenance_windows = sa.Table(
    "maintenance_windows",
    metadata,
    _id(),
    sa.Column("agent_id", sa.Text),
    sa.Column("business_account_id", sa.Uuid(as_uuid=True)),
    _ts("starts_at", nullable=False),
    _ts("ends_at"),
    sa.Column("cron", sa.Text),
    sa.Column("duration_s", sa.Integer),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    _ts("created_at", nullable=False),
    _ts("ended_at"),
    sa.Column("ended_by", sa.Text),
)


# post_queue.action_type: what an agent may ask the worker to do
ACTION_TYPES = ("reply_comment", "reply_dm", "send_dm", "publish_post", "repost_ugc")
