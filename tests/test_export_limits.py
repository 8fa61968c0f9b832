"""Heavy and hostile exports: formulas behind leading blanks and line breaks are neutralised in CSV
and Excel (audit rows, queue errors and alert messages, on SQLite, PostgreSQL and the user's
schema); exports take turns (at most MAX_CONCURRENT_EXPORTS at once per process, the rest wait,
then are refused); and a file stops at the byte cap with whole rows."""
from __future__ import annotations

import csv
import hashlib
import io
import threading
import time
from datetime import UTC, datetime

import pandas as pd
import pytest

from lib.alerts import store as alerts
from lib.core import audit
from lib.core.export import (
    MAX_CONCURRENT_EXPORTS,
    ExportBusy,
    build_export,
    csv_safe,
    export_slot,
    exports_running,
    frame_export,
    frame_to_csv,
)
from lib.queue.reads import iter_export_rows
from lib.queue.rules import EXPORT_COLUMNS as QUEUE_COLUMNS
from lib.queue.rules import QueueFilter
from tests.support.queue_rows import add_account, insert_rows, queue_row

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HIDDEN = ['  =HYPERLINK("http://evil.example","open")', "\n=1+1", "\r\n+SUM(A1)", " \t@SUM(A1:A9)",
          "\u00a0-2+3", "\u3000=1", "\ufeff=1"]
HARMLESS = ["  hello", "\nline", "a=1", "x - y", "", " ", "1 + 1"]


def parse(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def xlsx_cells(data: bytes) -> pd.DataFrame:
    return pd.read_excel(io.BytesIO(data), engine="openpyxl", dtype=str, keep_default_na=False)


def test_formulas_behind_blanks_and_line_breaks_are_neutralised():
    for text in HIDDEN:
        assert csv_safe(text) == "'" + text, repr(text)
    for text in HARMLESS:
        assert csv_safe(text) == text, repr(text)
    out = parse(frame_to_csv(pd.DataFrame({"t": HIDDEN, "n": range(len(HIDDEN))})))
    assert [r["t"] for r in out] == ["'" + t for t in HIDDEN]


def test_every_export_neutralises_hidden_formulas_in_csv_and_excel(engine):
    with engine.begin() as conn:
        acc = add_account(conn, "acme", NOW)
        insert_rows(conn, [queue_row(account=acc, now=NOW, error=text, age_min=i) for i, text in enumerate(HIDDEN)])
        for text in HIDDEN:
            audit.log_audit(conn, event_type="post_failed_permanent", action="post_queue_dlq",
                            resource_type="post_queue", resource_id=text, now=NOW, success=False,
                            error_message=text, details={"n": 1})
        alerts.open_or_update_alert(conn, alert_type="rate_limit", message=HIDDEN[1], now=NOW, details={})
    exports = {
        "queue": (QUEUE_COLUMNS, lambda c: iter_export_rows(c, filt=QueueFilter(status="dlq")), "error"),
        "audit": (audit.EXPORT_COLUMNS, lambda c: audit.export_chunks(c, filters=audit.AuditFilter()), "error_message"),
        "alerts": (alerts.EXPORT_COLUMNS, lambda c: alerts.export_chunks(c, filters=alerts.AlertFilter()), "message"),
    }
    for name, (columns, rows, column) in exports.items():
        for fmt in ("csv", "xlsx"):
            with engine.connect() as conn:
                data, n, _ = build_export(fmt, columns, rows(conn))
            values = [r[column] for r in parse(data)] if fmt == "csv" else xlsx_cells(data)[column].tolist()
            assert n >= 1 and values, (name, fmt)
            for v in values:
                assert v.startswith("'"), (name, fmt, v)  # the spreadsheet shows text, runs nothing
                if fmt == "csv":
                    assert v[1:] in HIDDEN, (name, v)


def _text(i: int) -> str:
    return f"row {i:07d} " + (hashlib.sha256(str(i).encode()).hexdigest() * 2)[:100]  # compresses poorly


def _rows(n: int):
    chunk = []
    for i in range(n):
        chunk.append((i, _text(i)))
        if len(chunk) == 1000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_the_byte_cap_cuts_the_file_with_whole_rows(fmt):
    data, n, truncated = build_export(fmt, ["id", "text"], _rows(20_000), max_bytes=200_000)
    full, n_full, cut_full = build_export(fmt, ["id", "text"], _rows(20_000), max_bytes=None)
    assert truncated and 0 < n < 20_000 and (n_full, cut_full) == (20_000, False)
    if fmt == "csv":
        assert len(data) <= 200_000
        rows = parse(data)
        assert len(rows) == n and rows[-1]["text"] == _text(n - 1)  # the last row whole
    elif fmt == "xlsx":
        assert len(xlsx_cells(data)) == n
    else:
        got = pd.read_parquet(io.BytesIO(data))
        assert len(got) == n and len(data) < 200_000 + 60_000  # one row group past the cap at most


def test_exports_take_turns_and_the_rest_are_refused_after_their_wait():
    release = threading.Event()
    started = []
    peak = []

    def slow_rows():
        started.append(1)
        peak.append(exports_running())
        release.wait(30)
        yield [(1, "a")]

    results, errors = [], []

    def run(wait_s):
        try:
            results.append(build_export("csv", ["id", "text"], slow_rows(), wait_s=wait_s)[1])
        except ExportBusy as exc:
            errors.append(str(exc))

    four = [threading.Thread(target=run, args=(10,)) for _ in range(4)]
    for t in four:
        t.start()
    deadline = time.monotonic() + 10
    while len(started) < MAX_CONCURRENT_EXPORTS and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(started) == MAX_CONCURRENT_EXPORTS == exports_running()  # the other two wait for a turn
    run(0)  # one that does not wait: refused at once, with the message the page shows
    assert errors == ["Another export is running: this app builds at most 2 at once. Try again in a minute."]
    release.set()
    for t in four:
        t.join(30)
    assert results == [1, 1, 1, 1] and max(peak) <= MAX_CONCURRENT_EXPORTS and exports_running() == 0


def test_a_refused_export_closes_its_source():
    class Source:
        closed = False

        def __iter__(self):
            return iter([[(1, "a")]])

        def close(self):
            self.closed = True

    src = Source()
    with export_slot(), export_slot():  # both turns taken
        with pytest.raises(ExportBusy):
            build_export("csv", ["id", "text"], src, wait_s=0)
    assert src.closed and exports_running() == 0


def test_frame_exports_take_a_turn_too():
    with export_slot(), export_slot():
        with pytest.raises(ExportBusy):
            import lib.core.export as ex
            saved, ex.EXPORT_WAIT_S = ex.EXPORT_WAIT_S, 0.0
            try:
                frame_export(pd.DataFrame({"a": [1]}), "xlsx")
            finally:
                ex.EXPORT_WAIT_S = saved
