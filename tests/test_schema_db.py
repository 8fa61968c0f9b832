"""Schema creation and init on SQLite and PostgreSQL, including Supabase-style tables."""
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from lib.core.db import index_names, init_db, make_engine
from lib.core.schema import SPEC_TABLES, agent_heartbeats, metadata

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.own_schema("starts from an empty database")
@pytest.mark.pooler
def test_init_creates_every_table_and_index_then_is_idempotent(db_url):
    eng = make_engine(db_url)
    first = init_db(eng)
    assert set(first.created_tables) == {t.name for t in metadata.sorted_tables}
    insp = sa.inspect(eng)
    with eng.connect() as conn:
        for table in SPEC_TABLES:
            assert {c.name for c in table.columns} <= {c["name"] for c in insp.get_columns(table.name)}
            assert {i.name for i in table.indexes} <= index_names(conn, table.name)
    second = init_db(eng)
    assert second.created_tables == [] and second.created_indexes == []
    eng.dispose()


@pytest.mark.own_schema("writes a heartbeat without status")
def test_times_come_back_aware_utc(engine):
    berlin = timezone(timedelta(hours=1))
    with engine.begin() as conn:
        conn.execute(sa.insert(agent_heartbeats).values(agent_id="a", last_beat_at=NOW.astimezone(berlin)))
        got = conn.execute(sa.select(agent_heartbeats.c.last_beat_at)).scalar_one()
        assert got == NOW and got.tzinfo is not None and got.utcoffset() == timedelta(0)
        # comparisons bind through the same type on both databases
        n = conn.execute(sa.select(sa.func.count()).where(agent_heartbeats.c.last_beat_at >= NOW - timedelta(seconds=1))).scalar()
        assert n == 1


SUPABASE_DDL = [
    """CREATE TABLE post_queue (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), business_account_id uuid,
       action_type text NOT NULL, payload jsonb, idempotency_key text UNIQUE, status text NOT NULL DEFAULT 'pending',
       retry_count integer NOT NULL DEFAULT 0, error text, error_category text, instagram_id text,
       next_retry_at timestamptz, created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now())""",
    """CREATE TABLE audit_log (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), event_type text, action text,
       resource_type text, resource_id text, user_id text, success boolean, error_message text, details jsonb,
       ip_address inet, user_agent text, created_at timestamptz DEFAULT now())""",
    """CREATE TABLE agent_heartbeats (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), agent_id text NOT NULL,
       status text, last_beat_at timestamptz, created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now())""",
]
@pytest.mark.pooler
def test_init_over_supabase_style_tables_adds_only_indexes(pg_server):
    import uuid

    url = pg_server.create_database("supa_" + uuid.uuid4().hex[:8])
    eng = make_engine(url)
    with eng.begin() as conn:
        for ddl in SUPABASE_DDL:
            conn.execute(sa.text(ddl))
        conn.execute(sa.text("INSERT INTO post_queue (action_type, idempotency_key) VALUES ('send_dm', 'k1')"))
        before = {t: sa.inspect(conn).get_columns(t) for t in ("post_queue", "audit_log", "agent_heartbeats")}
    report = init_db(eng)
    assert "post_queue" not in report.created_tables and "audit_log" not in report.created_tables
    assert "ix_post_queue_status_next_retry_at" in report.created_indexes
    assert "ix_audit_log_created_at_id" in report.created_indexes
    assert "system_alerts" in report.created_tables  # missing ones are created
    with eng.connect() as conn:
        after = {t: sa.inspect(conn).get_columns(t) for t in before}
        assert [(c["name"], str(c["type"])) for c in after["audit_log"]] == [
            (c["name"], str(c["type"])) for c in before["audit_log"]
        ]  # ip_address stays inet: nothing retyped
        assert conn.execute(sa.text("SELECT count(*) FROM post_queue")).scalar() == 1  # nothing dropped
    assert init_db(eng).created_indexes == []
    eng.dispose()


def test_init_reports_missing_columns_instead_of_altering(sqlite_url):
    eng = make_engine(sqlite_url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE system_alerts (id text primary key, alert_type text, message text)"))
    report = init_db(eng)
    assert "resolved" in report.missing_columns["system_alerts"]
    cols = {c["name"] for c in sa.inspect(eng).get_columns("system_alerts")}
    assert cols == {"id", "alert_type", "message"}
    eng.dispose()
