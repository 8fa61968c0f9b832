"""Security issue, data side, on SQLite and PostgreSQL: CSV/formula injection in every export,
credentials kept out of audit_log.details, the feed, CSVs and worker_ticks.error."""
from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from lib.activity.worker_ticks import record_tick_finish, record_tick_start, worker_health
from lib.alerts import store as alerts
from lib.core import audit
from lib.core.export import frame_to_csv, rows_to_csv
from lib.core.schema import audit_log, system_alerts
from lib.queue.reads import iter_export_rows
from lib.queue.rules import EXPORT_COLUMNS as QUEUE_COLUMNS
from lib.queue.rules import QueueFilter
from tests.support.queue_rows import add_account, insert_rows, queue_row

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DLQ_FORMULA = '=HYPERLINK("http://evil.example","open")'
AUDIT_FORMULA = "+SUM(1;1)*cmd|' /C calc'!A0"
ALERT_FORMULA = "@SUM(A1:A9)"
TOKEN = "EAAB" + "Z" * 40
DB_PASSWORD = "Pa55#w0rd/Zq"


def parse(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


# -- item 4: CSV injection ---------------------------------------------------------------------------

def test_queue_csv_neutralises_formulas(engine):
    with engine.begin() as conn:
        acc = add_account(conn, "acme", NOW)
        insert_rows(conn, [queue_row(account=acc, now=NOW, error=DLQ_FORMULA),
                           queue_row(account=acc, now=NOW, error="-1+2", age_min=20),
                           queue_row(account=acc, now=NOW, error="\tTAB", age_min=30)])
    with engine.connect() as conn:
        data, n, _ = rows_to_csv(QUEUE_COLUMNS, iter_export_rows(conn, filt=QueueFilter(status="dlq")))
    rows = parse(data)
    assert n == 3
    assert [r["error"] for r in rows] == ["'" + DLQ_FORMULA, "'-1+2", "'\tTAB"]
    assert [r["retry_count"] for r in rows] == ["5", "5", "5"]  # numbers stay numbers


def test_audit_csv_neutralises_formulas(engine):
    with engine.begin() as conn:
        audit.log_audit(conn, event_type="post_failed_permanent", action="post_queue_dlq", resource_type="post_queue",
                        resource_id="=1+1", now=NOW, success=False, error_message=AUDIT_FORMULA,
                        details={"n": 1})
    with engine.connect() as conn:
        data, _, _ = rows_to_csv(audit.EXPORT_COLUMNS, audit.export_chunks(conn, filters=audit.AuditFilter()))
    [row] = parse(data)
    assert row["error_message"] == "'" + AUDIT_FORMULA
    assert row["resource_id"] == "'=1+1"
    assert row["details"].startswith("{")


def test_alerts_csv_neutralises_formulas(engine):
    with engine.begin() as conn:
        alerts.open_or_update_alert(conn, alert_type="rate_limit", message=ALERT_FORMULA, now=NOW,
                                    details={"note": "=cmd"})
    with engine.connect() as conn:
        data, _, _ = rows_to_csv(alerts.EXPORT_COLUMNS, alerts.export_chunks(conn, filters=alerts.AlertFilter()))
    [row] = parse(data)
    assert row["message"] == "'" + ALERT_FORMULA
    assert row["count"] == "1"


def test_frame_csv_neutralises_text_and_keeps_numbers():
    df = pd.DataFrame({"agent": ["=evil()", "ok", "@x", "\rcr"], "n": [-1, 2, 3, 4], "rate": [-0.5, 1.0, 2.0, 3.0]})
    rows = parse(frame_to_csv(df))
    assert [r["agent"] for r in rows] == ["'=evil()", "ok", "'@x", "'\rcr"]
    assert [r["n"] for r in rows] == ["-1", "2", "3", "4"]
    assert rows[0]["rate"] == "-0.5"


# -- item 5: secrets ---------------------------------------------------------------------------------

def test_token_like_fields_never_reach_audit_log_details(engine):
    with engine.begin() as conn:
        audit.log_audit(conn, event_type="queue_item_retried", action="retry", resource_type="post_queue",
                        resource_id="r1", now=NOW, user_id="ops",
                        details={"payload": {"access_token": TOKEN, "caption": "hi"}, "client_secret": "s3cr3t",
                                 "url": f"https://graph.facebook.com/v21.0/me?access_token={TOKEN}"},
                        error_message=f"GET https://graph.facebook.com/x?access_token={TOKEN} failed")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.cast(audit_log.c.details, sa.Text), audit_log.c.error_message)).one()
    assert TOKEN not in stored[0] and "s3cr3t" not in stored[0] and "hi" in stored[0]
    assert TOKEN not in stored[1]


def test_feed_and_export_redact_rows_written_before(engine):
    # a row written by an older version, straight into the table
    with engine.begin() as conn:
        conn.execute(sa.insert(audit_log).values(
            id=uuid.uuid4(), event_type="dm_sent", action="send", resource_type="instagram_dm", resource_id="d1",
            user_id="worker", success=True, created_at=NOW,
            details={"access_token": TOKEN, "nested": [{"password": "hunter22"}], "business_account_id": "x"},
            error_message=f"access_token={TOKEN}",
        ))
    with engine.connect() as conn:
        page = audit.feed_page(conn, filters=audit.AuditFilter())
        data, _, _ = rows_to_csv(audit.EXPORT_COLUMNS, audit.export_chunks(conn, filters=audit.AuditFilter()))
    [row] = page.rows
    assert row["details"]["access_token"] == "[redacted]"
    assert row["details"]["nested"][0]["password"] == "[redacted]"
    assert TOKEN not in row["error_message"]
    text = data.decode()
    assert TOKEN not in text and "hunter22" not in text
    assert '"business_account_id": "x"' in parse(data)[0]["details"]


def test_alert_details_are_redacted_in_the_csv(engine):
    with engine.begin() as conn:
        conn.execute(sa.insert(system_alerts).values(
            id=uuid.uuid4(), alert_type="auth_failure", message=f"token {TOKEN} rejected", resolved=False,
            details={"access_token": TOKEN}, created_at=NOW, updated_at=NOW))
    with engine.connect() as conn:
        data, _, _ = rows_to_csv(alerts.EXPORT_COLUMNS, alerts.export_chunks(conn, filters=alerts.AlertFilter()))
    assert TOKEN not in data.decode()


def test_no_credential_in_worker_ticks_error(engine):
    url = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/prod"
    with engine.begin() as conn:
        tick = record_tick_start(conn, now=NOW, host="h", pid=1)
        record_tick_finish(conn, tick, now=NOW + timedelta(seconds=1), claimed=0, sent=0, failed=0, dlq=0, rescued=0,
                           error=f"OperationalError: could not connect with {url}; Bearer abc.def.ghi; "
                                 f"https://graph.facebook.com/me?access_token={TOKEN}")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT error FROM worker_ticks")).scalar_one()
        shown = worker_health(conn, now=NOW + timedelta(seconds=2), cron="*/5 * * * *")["last_error"]
    for text in (stored, shown):
        assert DB_PASSWORD not in text and "Pa55" not in text and TOKEN not in text and "abc.def.ghi" not in text
        assert "db.internal:5432/prod" in text  # the useful part stays


# -- item 9: an error group with more distinct texts than SQLite's bound-value limit -------------------

def test_a_huge_error_group_is_selected_with_bounded_values(engine):
    from lib.queue.reads import count_rows, error_groups, group_filter, matching_ids, queue_rows
    from lib.queue.rules import GROUP_ROW_CAP

    n = 33_000  # > 32,766: SQLite refuses an IN list of every raw text
    with engine.begin() as conn:
        acc = add_account(conn, "big", NOW)
        rows = [queue_row(account=acc, now=NOW, error=f"Invalid media id {i}", error_category="permanent",
                          age_min=i / 100) for i in range(n)]
        rows.append(queue_row(account=acc, now=NOW, error="(#190) token expired", age_min=1))
        insert_rows(conn, rows)
    base = QueueFilter(status="dlq")
    with engine.connect() as conn:
        [group] = [g for g in error_groups(conn, filt=base) if g["error_group"] == "Invalid media id #"]
        assert group["count"] == n
        filt, capped = group_filter(conn, base, error_category=group["error_category"],
                                    error_group=group["error_group"], errors=group["errors"])
        assert capped
        assert len(filt.errors or ()) + len(filt.ids or ()) <= GROUP_ROW_CAP  # bound values, whatever the data
        assert count_rows(conn, filt=filt) == GROUP_ROW_CAP
        page = queue_rows(conn, filt=filt, limit=50)
        assert all(r["error"].startswith("Invalid media id") for r in page)
        assert len(matching_ids(conn, filt=filt)) > 0
        data, written, _ = rows_to_csv(QUEUE_COLUMNS, iter_export_rows(conn, filt=filt))
        assert written == GROUP_ROW_CAP
        # a small group keeps the exact selection by its texts
        [small] = [g for g in error_groups(conn, filt=base) if g["error_category"] == "auth_failure"]
        filt2, capped2 = group_filter(conn, base, error_category=small["error_category"],
                                      error_group=small["error_group"], errors=small["errors"])
        assert not capped2 and count_rows(conn, filt=filt2) == 1
