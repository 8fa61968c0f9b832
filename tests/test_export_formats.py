"""Exports in three formats (CSV, Excel, Parquet) on SQLite and PostgreSQL: read back with pandas,
they hold the same columns and rows as the page's export rows, with types kept (UTC timestamps,
numbers, booleans), JSON as text, formulas neutralised in Excel, tokens never exported."""
from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from lib.alerts import store as alerts
from lib.core import audit
from lib.core.export import build_export, frame_export, rows_to_parquet
from lib.queue.reads import iter_export_rows
from lib.queue.rules import EXPORT_COLUMNS as QUEUE_COLUMNS
from lib.queue.rules import QueueFilter
from tests.support.queue_rows import add_account, insert_rows, queue_row

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "EAAB" + "Z" * 40
FORMULA = '=HYPERLINK("http://evil.example","open")'


def read(fmt: str, data: bytes) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    if fmt == "xlsx":
        return pd.read_excel(io.BytesIO(data), engine="openpyxl")
    return pd.read_csv(io.BytesIO(data))


def _audit_rows(engine, n: int = 30):
    with engine.begin() as conn:
        for i in range(n):
            audit.log_audit(conn, event_type="post_published" if i % 3 else "post_failed_permanent",
                            action="publish", resource_type="post_queue", resource_id=f"res-{i:03d}",
                            now=NOW - timedelta(minutes=i, microseconds=123000), success=bool(i % 3),
                            user_id=None if i % 2 else "ops@example.com",
                            error_message=FORMULA if i == 0 else None,
                            details={"n": i, "nested": {"k": [1, 2]}, "access_token": TOKEN})
    with engine.connect() as conn:
        return list(audit.export_chunks(conn, filters=audit.AuditFilter(), chunk_size=7))


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
def test_audit_export_reads_back_with_types(engine, fmt):
    chunks = _audit_rows(engine)
    page_rows = [r for c in chunks for r in c]
    data, written, truncated = build_export(fmt, audit.EXPORT_COLUMNS, iter(chunks))
    assert (written, truncated) == (30, False)
    df = read(fmt, data)
    assert list(df.columns) == list(audit.EXPORT_COLUMNS)  # same columns as the CSV
    assert len(df) == len(page_rows)
    created = df["created_at"]
    if fmt == "parquet":
        assert str(created.dtype).startswith("datetime64") and str(created.dt.tz) == "UTC"
    else:  # Excel has no time zone: the wall time is UTC
        assert str(created.dtype).startswith("datetime64")
        created = created.dt.tz_localize("UTC")
    expected = [r[1].astimezone(UTC) for r in page_rows]
    got = [t.to_pydatetime() for t in created]
    assert all(abs((g - e).total_seconds()) < 0.002 for g, e in zip(got, expected))
    assert df["success"].dtype == bool
    assert df["success"].tolist() == [r[7] for r in page_rows]
    assert df["resource_id"].tolist() == [r[5] for r in page_rows]
    details = [json.loads(d) for d in df["details"]]  # JSON became text
    assert [d["n"] for d in details] == [r[9]["n"] if isinstance(r[9], dict) else json.loads(r[9])["n"] for r in page_rows]
    assert all(d["access_token"] == "[redacted]" for d in details)
    assert TOKEN not in data.decode("latin-1")
    first = df["error_message"].iloc[0]
    assert first == ("'" + FORMULA if fmt == "xlsx" else FORMULA)  # neutralised in Excel, data in Parquet


def test_csv_xlsx_parquet_hold_the_same_table(engine):
    chunks = _audit_rows(engine, n=12)
    frames = {fmt: read(fmt, build_export(fmt, audit.EXPORT_COLUMNS, iter(chunks))[0]) for fmt in ("csv", "xlsx", "parquet")}
    cols = [list(f.columns) for f in frames.values()]
    assert cols[0] == cols[1] == cols[2]
    for col in ("id", "event_type", "resource_id", "success"):
        assert frames["csv"][col].astype(str).tolist() == frames["xlsx"][col].astype(str).tolist() \
            == frames["parquet"][col].astype(str).tolist(), col


def test_queue_export_numbers_stay_numbers(engine):
    with engine.begin() as conn:
        acc = add_account(conn, "acme", NOW)
        insert_rows(conn, [queue_row(account=acc, now=NOW, error=FORMULA, age_min=i,
                                     payload={"access_token": TOKEN, "comment_id": f"c{i}", "reply_text": "hi"})
                           for i in range(5)])
    for fmt in ("xlsx", "parquet"):
        with engine.connect() as conn:
            data, n, _ = build_export(fmt, QUEUE_COLUMNS, iter_export_rows(conn, filt=QueueFilter(status="dlq")))
        df = read(fmt, data)
        assert n == 5 and list(df.columns) == list(QUEUE_COLUMNS)
        assert pd.api.types.is_integer_dtype(df["retry_count"]) and set(df["retry_count"]) == {5}
        assert set(df["account"]) == {"acme"}
        assert TOKEN.encode() not in data


def test_alerts_export_in_excel_and_parquet(engine):
    with engine.begin() as conn:
        alerts.open_or_update_alert(conn, alert_type="rate_limit", message="@SUM(A1:A9)", now=NOW, details={"n": 1})
    with engine.connect() as conn:
        chunks = list(alerts.export_chunks(conn, filters=alerts.AlertFilter()))
    x = read("xlsx", build_export("xlsx", alerts.EXPORT_COLUMNS, iter(chunks))[0])
    p = read("parquet", build_export("parquet", alerts.EXPORT_COLUMNS, iter(chunks))[0])
    assert list(x.columns) == list(p.columns) == list(alerts.EXPORT_COLUMNS)
    assert x["message"].iloc[0] == "'@SUM(A1:A9)" and p["message"].iloc[0] == "@SUM(A1:A9)"
    assert not bool(p["resolved"].iloc[0])


def test_caps_are_kept_in_every_format():
    chunks = [[(i, f"t{i}") for i in range(k, k + 10)] for k in range(0, 50, 10)]
    for fmt in ("csv", "xlsx", "parquet"):
        data, n, truncated = build_export(fmt, ["n", "text"], iter(chunks), cap=25)
        assert (n, truncated) == (25, True), fmt
        assert len(read(fmt, data)) == 25


def test_frame_export_keeps_dtypes():
    df = pd.DataFrame({
        "account": ["a", "=b"], "report_date": pd.to_datetime(["2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z"]),
        "reach": [10, 20], "rate": [1.5, None], "changes": [{"x": 1}, None],
    })
    p = read("parquet", frame_export(df, "parquet"))
    assert str(p["report_date"].dt.tz) == "UTC" and p["reach"].tolist() == [10, 20]
    assert p["rate"].isna().tolist() == [False, True] and json.loads(p["changes"][0]) == {"x": 1}
    x = read("xlsx", frame_export(df, "xlsx"))
    assert x["account"].tolist() == ["a", "'=b"] and x["reach"].tolist() == [10, 20]
    assert x["report_date"].dt.tz_localize("UTC").tolist() == df["report_date"].tolist()


def test_parquet_column_types_from_a_later_chunk():
    chunks = [[(1, None)] * 3, [(2, 2.5)], [(3, None)]]
    df = read("parquet", rows_to_parquet(["n", "v"], iter(chunks))[0])
    assert df["v"].dtype == "float64" and df["v"].isna().sum() == 4
    empty = read("parquet", rows_to_parquet(["n", "v"], iter([]))[0])
    assert list(empty.columns) == ["n", "v"] and empty.empty


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_no_secret_reaches_any_format(engine, fmt):
    # rows written by an older version straight into the table (no write-time redaction), read back:
    # the files are compressed (xlsx, Parquet), so every cell is searched after reading them back
    import uuid

    import sqlalchemy as sa

    from lib.core.schema import audit_log

    pw = "Pa55#w0rd/Zq"
    with engine.begin() as conn:
        for i in range(40):
            conn.execute(sa.insert(audit_log).values(
                id=uuid.uuid4(), event_type="dm_sent", action="send", resource_type="instagram_dm", resource_id=f"d{i}",
                user_id="worker", success=True, created_at=NOW - timedelta(seconds=i),
                details={"n": i, "payload": {"Access_Token": TOKEN, "list": [{"client_secret": pw}]}} if i % 4 == 0
                else {"n": i, "url": f"https://graph.facebook.com/me?access_token={TOKEN}"} if i % 4 == 1
                else {"n": i, "caption": "=1+1"},
                error_message=[f"connect failed for postgresql://app:{pw}@db:5432/prod", f"Authorization: Bearer {TOKEN}",
                               f"password={pw}", None][i % 4],
            ))
    with engine.connect() as conn:
        data, written, _ = build_export(fmt, audit.EXPORT_COLUMNS, audit.export_chunks(conn, filters=audit.AuditFilter(),
                                                                                        chunk_size=9))
    df = read(fmt, data)
    assert written == 40 and len(df) == 40
    cells = "\n".join(str(v) for v in df.astype(str).to_numpy().ravel())
    assert TOKEN not in cells and pw not in cells
    assert sorted(json.loads(d)["n"] for d in df["details"]) == list(range(40))
    assert "db:5432/prod" in cells  # the rest of the text stays
    assert df["resource_id"].tolist() == [f"d{i}" for i in range(40)]  # newest first, every row once
