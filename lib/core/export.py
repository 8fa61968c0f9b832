"""CSV building, pure: from a DataFrame or from row chunks (a server-side cursor), with a cap."""
from __future__ import annotations

import collections.abc as _abc
import csv
import datetime as _dt
import decimal as _decimal
import gc
import io
import json
import queue
import tempfile
import threading
import uuid as _uuid
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# What a spreadsheet skips before it looks for a formula: spaces, tabs, line breaks (and the
# Unicode spaces Excel and LibreOffice also trim). "  =HYPERLINK(...)" and "\n=1+1" are formulas too.
_LEADING_BLANKS = " \t\r\n\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u202f\u205f\u3000\ufeff"
_FORMULA_CHARS = ("=", "+", "-", "@")


def csv_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run: text whose first character after any leading blanks
    (spaces, tabs, line breaks) is = + - or @, or that begins with a tab or a carriage return, gets
    a leading ' (OWASP, CSV injection). Numbers, booleans, dates and None are left alone."""
    if isinstance(value, str) and value and (value.startswith(FORMULA_STARTS)
                                             or value.lstrip(_LEADING_BLANKS).startswith(_FORMULA_CHARS)):
        return "'" + value
    return value


def frame_to_csv(df: pd.DataFrame) -> bytes:
    """Every CSV built from a DataFrame (counts, reports, chart data): text cells made csv_safe,
    column names too; numeric columns untouched."""
    safe = df.copy()
    for col in safe.columns:
        if not (pd.api.types.is_numeric_dtype(safe[col]) or pd.api.types.is_datetime64_any_dtype(safe[col])):
            safe[col] = safe[col].map(lambda v: csv_safe(_cell(v)))
    safe.columns = [csv_safe(str(c)) if isinstance(c, str) else c for c in safe.columns]
    return str(safe.to_csv(index=False, lineterminator="\r\n")).encode("utf-8")  # as the csv module: \r quoted too


def _cell(value: Any) -> Any:
    # JSON columns as JSON text, not Python reprs; text made safe for spreadsheets (csv_safe)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return csv_safe(value)


class Columns(_abc.Sequence[tuple[Any, ...]]):
    """A chunk of rows held as one list per column (what a column-wise reader such as
    lib.core.audit.export_chunks yields): it reads as a sequence of row tuples, and the writers take its
    columns as they are instead of taking rows apart again."""

    __slots__ = ("columns", "_rows")

    def __init__(self, columns: Sequence[Sequence[Any]]) -> None:
        self.columns = [list(c) for c in columns]
        self._rows: list[tuple[Any, ...]] | None = None

    def rows(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            self._rows = list(zip(*self.columns))
        return self._rows

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return Columns([c[i] for c in self.columns])
        return self.rows()[i]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Iterable) and list(self) == list(other)


def chunk_columns(chunk: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """The columns of a chunk (a Columns or a list of row tuples)."""
    if isinstance(chunk, Columns):
        return chunk.columns
    return [list(c) for c in zip(*chunk)] if len(chunk) else [[] for _ in range(width)]


_NONE = type(None)
_AS_IS = {_NONE, int, float, bool}  # cells every writer takes as they are


def _csv_column(values: Sequence[Any]) -> Sequence[Any]:
    """One column's cells as _cell makes them, the common column types without a call per cell."""
    kinds = set(map(type, values))
    if kinds <= _AS_IS:
        return values
    if kinds <= {str, _NONE}:
        return [csv_safe(v) for v in values]
    return [_cell(v) for v in values]


def rows_to_csv(columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]], cap: int | None = None,
                *, out: IO[bytes] | None = None, max_bytes: int | None = None) -> tuple[bytes | None, int, bool]:
    """CSV of the rows in `chunks` (lists of row tuples), at most `cap` rows and `max_bytes` bytes
    (whole rows: a chunk that would pass the byte cap is written only up to the last row that fits).

    Written into `out` (a binary file) when given, else into memory. Returns (the bytes, or None when
    written to `out`; rows written; truncated)."""
    # bytes from the start: a StringIO of the same text can take up to 4 bytes per character
    # (one emoji is enough), and .getvalue().encode() would hold a second copy next to it
    raw = io.BytesIO() if out is None else out
    buf = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(buf)
    writer.writerow([csv_safe(c) for c in columns])
    written = 0
    truncated = False
    pieces = _capped(chunks, cap)
    for chunk, done in pieces:
        if chunk is None:
            truncated = bool(done)
            break
        if not len(chunk):
            continue
        rows = list(zip(*[_csv_column(c) for c in chunk_columns(chunk, len(columns))]))
        start = raw.tell()
        writer.writerows(rows)
        if max_bytes is not None and raw.tell() > max_bytes:  # redo this chunk row by row up to the cap
            raw.seek(start)
            raw.truncate()
            for row in rows:
                before = raw.tell()
                writer.writerow(row)
                if raw.tell() > max_bytes:
                    raw.seek(before)
                    raw.truncate()
                    break
                written += 1
            truncated = True
            break
        written += len(chunk)
    pieces.close()  # the source is closed now, not when the garbage collector gets to it
    buf.flush()
    data = raw.getvalue() if out is None and isinstance(raw, io.BytesIO) else None
    buf.detach()
    return data, written, truncated


# --------------------------------------------------------------------------- three formats
#
# Every export exists as CSV, Excel (.xlsx) and Parquet with the same columns. Cells are made
# plain first (export_value): JSON becomes text, datetimes become UTC-aware datetimes, UUIDs and
# Decimals become text and floats. Then per format:
#   csv     - as above (csv_safe text, ISO timestamps)
#   xlsx    - xlsxwriter in constant_memory mode (row by row, never the whole sheet in memory);
#             every text cell written as a string (never a formula, a URL or a number) and made
#             csv_safe as in CSV; timestamps as Excel datetimes in UTC (Excel has no time zone;
#             the column header says nothing else, docs/metrics.md says they are UTC)
#   parquet - pyarrow, one row group per chunk of the server-side cursor; timestamps as
#             timestamp[us, tz=UTC], numbers as int64/float64/bool, text unchanged (no csv_safe:
#             Parquet is not opened by a spreadsheet, and the text is the data)


FORMATS: dict[str, dict[str, str]] = {
    "csv": {"label": "CSV", "ext": "csv", "mime": "text/csv"},
    "xlsx": {"label": "Excel", "ext": "xlsx",
             "mime": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
    "parquet": {"label": "Parquet", "ext": "parquet", "mime": "application/vnd.apache.parquet"},
}
XLSX_MAX_ROWS = 1_048_575  # Excel's sheet limit, header excluded
XLSX_MAX_TEXT = 32_767  # Excel's cell text limit
PARQUET_HOLD_ROWS = 10_000  # rows held back at most while a column has no value yet (then it is text)


def export_value(value: Any) -> Any:
    """One cell, plain: JSON -> text, naive datetimes read as UTC, UUID/Decimal/date -> text/float/datetime."""
    if value is None:
        return None
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(value, bool):
        return value
    if isinstance(value, pd.Timestamp):
        if pd.isna(value):
            return None
        value = value.to_pydatetime()
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.UTC)
    if isinstance(value, _uuid.UUID):
        return str(value)
    if isinstance(value, _decimal.Decimal):
        return float(value)
    if isinstance(value, float) and value != value:  # NaN
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        try:
            return export_value(value.item())
        except (AttributeError, ValueError, TypeError):
            return str(value)
    return value


def plain_column(values: list[Any]) -> tuple[list[Any], set[type]]:
    """export_value of every cell of a column, and the types of the cells it holds then: text, numbers,
    booleans and datetimes without a call per cell (datetimes stay as they are: naive ones are UTC,
    and pyarrow reads them so)."""
    kinds = set(map(type, values))
    if kinds <= _AS_IS | {str, _dt.datetime}:
        if float in kinds and any(v != v for v in values if type(v) is float):  # NaN -> missing
            values = [None if type(v) is float and v != v else v for v in values]
            return values, set(map(type, values))
        return values, kinds
    values = [export_value(v) for v in values]
    return values, set(map(type, values))


MAX_CONCURRENT_EXPORTS = 2  # exports built at once in one app process; the others wait for a turn
EXPORT_WAIT_S = 30.0  # how long an export waits for its turn before it is refused
EXPORT_MAX_BYTES = 100 * 1024 * 1024  # one export file at most (its rows are cut there, whole)
BUSY_MESSAGE = (f"Another export is running: this app builds at most {MAX_CONCURRENT_EXPORTS} at once. "
                "Try again in a minute.")

_slots = threading.BoundedSemaphore(MAX_CONCURRENT_EXPORTS)
_running_lock = threading.Lock()
_running = 0


class ExportBusy(RuntimeError):
    """Every export slot stayed taken for the whole wait; nothing was built."""


def exports_running() -> int:
    """How many exports this process is building now."""
    return _running


@contextmanager
def export_slot(wait_s: float = 0.0) -> Iterator[None]:
    """One of the process's MAX_CONCURRENT_EXPORTS turns, waited for up to `wait_s` seconds, or
    ExportBusy: a burst of exports (any viewer may start several) is built a few at a time, so the
    memory they take together stays bounded."""
    global _running
    if not _slots.acquire(timeout=wait_s) if wait_s > 0 else not _slots.acquire(blocking=False):
        raise ExportBusy(BUSY_MESSAGE)
    with _running_lock:
        _running += 1
    try:
        yield
    finally:
        with _running_lock:
            _running -= 1
        _slots.release()


def build_export(fmt: str, columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]],
                 cap: int | None = None, *, max_bytes: int | None = EXPORT_MAX_BYTES,
                 wait_s: float | None = None) -> tuple[bytes, int, bool]:
    """The rows in `chunks` (lists of tuples, e.g. from a server-side cursor) as `fmt`, at most `cap`
    rows and about `max_bytes` bytes, built in one of the process's export turns (export_slot).

    The file is written to an unnamed temporary file as the rows arrive (never a second copy in
    memory while it grows) and read back once at the end: Streamlit's download button takes the
    finished file as bytes. Returns (file bytes, rows written, truncated by either cap)."""
    writers = {"csv": rows_to_csv, "xlsx": rows_to_xlsx, "parquet": rows_to_parquet}
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}")
    try:
        with (export_slot(EXPORT_WAIT_S if wait_s is None else wait_s), fewer_gc_passes(),
              tempfile.TemporaryFile(prefix="export-") as out):
            _, written, truncated = writers[fmt](columns, chunks, cap=cap, out=out, max_bytes=max_bytes)
            out.seek(0)
            return out.read(), written, truncated
    finally:
        close_source(chunks)  # a busy slot or a failed writer: the cursor under `chunks` is closed too


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] | None = None
EXPORT_GC_THRESHOLD = 100_000  # allocations (net of frees) before a young-generation pass


@contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """While a big export runs: the cycle collector's young-generation threshold raised from 700 to
    EXPORT_GC_THRESHOLD. An export of 100,000 rows makes over a million short-lived tuples and
    strings, freed by their reference counts, never in cycles; with the default threshold the
    collector ran some 200 young passes and one over the whole heap, a sixth of a Parquet export's
    time. Process-wide (Python has one collector): the first of concurrent exports raises it, the
    last one out puts back what was there."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(EXPORT_GC_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


def _capped(chunks: Iterable[Sequence[Sequence[Any]]], cap: int | None) -> Generator[tuple[Any, Any], None, None]:
    """Chunks cut at `cap` rows; the last item yielded is (None, truncated). A source left unread
    (the cap reached, or the writer failed) is closed here: a server-side cursor or a read-ahead
    thread under it stops now, not whenever the garbage collector gets to it."""
    written, truncated = 0, False
    try:
        for chunk in chunks:
            chunk = chunk if isinstance(chunk, Columns) else list(chunk)
            if cap is not None and written + len(chunk) > cap:
                yield chunk[: cap - written], None
                truncated = True
                break
            written += len(chunk)
            yield chunk, None
    finally:
        close_source(chunks)
    yield None, truncated


def close_source(chunks: Any) -> None:
    """Close an iterator of chunks if it can be closed (a generator over a cursor, a read-ahead)."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def rows_to_xlsx(columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]],
                 cap: int | None = None, *, out: IO[bytes] | None = None,
                 max_bytes: int | None = None) -> tuple[bytes | None, int, bool]:
    """Excel, row by row. The byte cap counts the cells' text and numbers as written (the zipped
    file comes out smaller): the rows stop at the first chunk that passes it."""
    import xlsxwriter  # lazy: only an Excel export needs it

    cap = XLSX_MAX_ROWS if cap is None else min(cap, XLSX_MAX_ROWS)
    target = io.BytesIO() if out is None else out
    book = xlsxwriter.Workbook(target, {
        "constant_memory": True, "in_memory": False,  # row by row, the sheet data in a temp file, not in RAM
        "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False,
        "nan_inf_to_errors": True,
    })
    sheet = book.add_worksheet("export")
    stamp = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss.000"})
    bold = book.add_format({"bold": True})
    for c, name in enumerate(columns):
        sheet.write_string(0, c, str(csv_safe(str(name))), bold)
    # xlsxwriter's public write_* go through a decorator that also accepts "A1" notation; with row and
    # column numbers the undecorated methods of the pinned version do the same work in half the time
    w_str = getattr(sheet, "_write_string", None) or (lambda r, c, v, f=None: sheet.write_string(r, c, v, f))
    w_num = getattr(sheet, "_write_number", None) or (lambda r, c, v, f=None: sheet.write_number(r, c, v, f))
    w_bool = getattr(sheet, "_write_boolean", None) or (lambda r, c, v, f=None: sheet.write_boolean(r, c, v, f))
    r = 0
    size = 0
    truncated = False
    pieces = _capped(chunks, cap)
    for chunk, done in pieces:
        if chunk is None:
            truncated = bool(done)
            break
        if max_bytes is not None and size > max_bytes:
            truncated = True
            break
        for row in chunk:
            r += 1
            size += 8 * len(row)
            for c, raw in enumerate(row):
                t = type(raw)
                if raw is None:
                    continue
                if t is str:  # the common case first
                    size += len(raw)
                    w_str(r, c, csv_safe(raw)[:XLSX_MAX_TEXT], None)
                    continue
                v = export_value(raw)
                if v is None:
                    continue
                if isinstance(v, bool):
                    w_bool(r, c, v, None)
                elif isinstance(v, (int, float)):
                    if v != v or v in (float("inf"), float("-inf")):
                        continue
                    w_num(r, c, v, None)
                elif isinstance(v, _dt.datetime):
                    sheet.write_datetime(r, c, v.replace(tzinfo=None), stamp)  # UTC wall time
                else:
                    w_str(r, c, str(csv_safe(str(v)))[:XLSX_MAX_TEXT], None)
    pieces.close()
    sheet.freeze_panes(1, 0)
    book.close()
    return (target.getvalue() if out is None and isinstance(target, io.BytesIO) else None), r, truncated


def _arrow_type(kinds: set[type]) -> Any:
    import pyarrow as pa  # lazy: only a Parquet export needs it (tens of MiB)

    seen = kinds - {_NONE}
    if not seen:
        return None
    if seen == {bool}:
        return pa.bool_()
    if seen <= {int}:
        return pa.int64()
    if seen <= {int, float}:
        return pa.float64()
    if seen <= {_dt.datetime}:
        return pa.timestamp("us", tz="UTC")
    return pa.string()


def _arrow_column(values: list[Any], typ: Any, kinds: set[type]) -> Any:
    import pyarrow as pa  # lazy: as above

    if pa.types.is_string(typ) and not kinds <= {str, _NONE}:
        values = [None if v is None else (_iso_utc(v) if isinstance(v, _dt.datetime) else str(v)) for v in values]
    elif pa.types.is_floating(typ) and not kinds <= {float, int, _NONE}:
        values = [None if v is None else float(v) for v in values]
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        # a value that does not fit the column's type (rare: the columns are typed in SQL)
        return pa.array([_fits(v, typ) for v in values], type=typ)


def _iso_utc(value: _dt.datetime) -> str:
    return str(export_value(value).isoformat())  # naive datetimes are UTC


def _fits(value: Any, typ: Any) -> Any:
    import pyarrow as pa  # lazy: as above

    try:
        pa.array([value], type=typ)
        return value
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None


def _repeating(names: list[str], first: list[tuple[list[Any], set[type]]]) -> list[str]:
    """The columns worth dictionary encoding: those whose first chunk repeats its values (event
    types, accounts, statuses). Ids, timestamps and texts are all different: a dictionary of them
    (a new one per row group) is only extra work and bytes."""
    return [n for n, (values, _kinds) in zip(names, first) if len(set(values)) <= len(values) // 2]


def rows_to_parquet(columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]],
                    cap: int | None = None, *, out: IO[bytes] | None = None,
                 max_bytes: int | None = None) -> tuple[bytes | None, int, bool]:
    """Parquet, one row group per chunk. Column types come from the first chunk that has a value in
    the column (the chunks before it are held until every column's type is known, at most
    PARQUET_HOLD_ROWS rows); a column with no value by then is text."""
    import pyarrow as pa  # lazy: only a Parquet export needs it
    import pyarrow.parquet as pq

    names = [str(c) for c in columns]
    types: list[Any] = [None] * len(names)
    held: list[list[tuple[list[Any], set[type]]]] = []  # chunks as (column, its types), before the schema is known
    target = io.BytesIO() if out is None else out
    writer: Any = None
    written = 0
    truncated = False

    def flush(held_chunks: list[list[tuple[list[Any], set[type]]]]) -> None:
        for cols in held_chunks:
            if cols and cols[0][0]:
                writer.write_batch(pa.record_batch([_arrow_column(v, t, k) for (v, k), t in zip(cols, types)],
                                                   schema=schema))

    schema = None
    pieces = _capped(chunks, cap)
    for chunk, done in pieces:
        if chunk is None:
            truncated = bool(done)
            break
        if max_bytes is not None and target.tell() > max_bytes:  # row groups are written as they come
            truncated = True
            break
        cols = [plain_column(c) for c in chunk_columns(chunk, len(names))]  # (values, their types)
        written += len(chunk)
        if writer is None:
            for i, (_v, kinds) in enumerate(cols):
                if types[i] is None:
                    types[i] = _arrow_type(kinds)
            held.append(cols)
            if any(t is None for t in types) and sum(len(h[0][0]) if h else 0 for h in held) < PARQUET_HOLD_ROWS:
                continue
            types = [t or pa.string() for t in types]
            for i, t in enumerate(types):  # widen int to float where a held chunk had floats
                if pa.types.is_integer(t) and any(float in h[i][1] for h in held):
                    types[i] = pa.float64()
            schema = pa.schema([pa.field(n, t) for n, t in zip(names, types)])
            writer = pq.ParquetWriter(target, schema, compression="zstd", use_dictionary=_repeating(names, held[0]))
            flush(held)
            held = []
        else:
            flush([cols])
    if writer is None:
        types = [t or pa.string() for t in types]
        schema = pa.schema([pa.field(n, t) for n, t in zip(names, types)])
        writer = pq.ParquetWriter(target, schema, compression="zstd", use_dictionary=_repeating(names, held[0] if held else []))
        flush(held)
    pieces.close()
    writer.close()
    return (target.getvalue() if out is None and isinstance(target, io.BytesIO) else None), written, truncated


def prefetched(chunks: Iterable[Any], depth: int = 2) -> Iterable[Any]:
    """`chunks` read ahead on a thread, at most `depth` chunks ahead, in order. The source runs, and is
    closed, on that thread only (a database connection under it is used by one thread at a time);
    its errors are raised here; closing this generator stops the source and waits for it."""
    pipe: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                pipe.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(chunks)
        try:
            for chunk in source:
                if not put(("chunk", chunk)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the reader, raised there
            put(("error", exc))
        finally:
            close_source(source)

    thread = threading.Thread(target=produce, name="export-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = pipe.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def frame_rows(df: pd.DataFrame, chunk_size: int = 5000) -> Iterable[list[tuple[Any, ...]]]:
    """A DataFrame as chunks of row tuples (missing values as None) for build_export."""
    obj = df.astype(object).where(df.notna(), None)
    for start in range(0, len(obj), chunk_size):
        yield list(obj.iloc[start:start + chunk_size].itertuples(index=False, name=None))


def frame_export(df: pd.DataFrame, fmt: str) -> bytes:
    """A DataFrame (counts, reports, chart data) as `fmt`; CSV is frame_to_csv as before."""
    if fmt == "csv":
        return frame_to_csv(df)
    return build_export(fmt, [str(c) for c in df.columns], frame_rows(df))[0]
