"""CSV building, pure: from a DataFrame or from row chunks (a server-side cursor), with a cap."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Sequence

import pandas as pd


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run: text that begins with = + - @, a tab or a carriage return
    gets a leading ' (OWASP, CSV injection). Numbers, booleans, dates and None are left alone."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
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
    return safe.to_csv(index=False, lineterminator="\r\n").encode("utf-8")  # as the csv module: \r quoted too


def _cell(value: Any) -> Any:
    # JSON columns as JSON text, not Python reprs; text made safe for spreadsheets (csv_safe)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return csv_safe(value)


def rows_to_csv(columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]], cap: int | None = None) -> tuple[bytes, int, bool]:
    """CSV of the rows in `chunks` (lists of row tuples), at most `cap` rows.

    Returns (csv bytes, rows written, truncated).
    """
    # bytes from the start: a StringIO of the same text can take up to 4 bytes per character
    # (one emoji is enough), and .getvalue().encode() would hold a second copy next to it
    raw = io.BytesIO()
    buf = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(buf)
    writer.writerow([csv_safe(c) for c in columns])
    written = 0
    truncated = False
    for chunk in chunks:
        for row in chunk:
            if cap is not None and written >= cap:
                truncated = True
                break
            writer.writerow([_cell(v) for v in row])
            written += 1
        if truncated:
            break
    buf.flush()
    data = raw.getvalue()
    buf.detach()
    return data, written, truncated
