"""CSV building, pure: from a DataFrame or from row chunks (a server-side cursor), with a cap."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Sequence

import pandas as pd


def frame_to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def _cell(value: Any) -> Any:
    # JSON columns as JSON text, not Python reprs; everything else as the csv module writes it
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return value


def rows_to_csv(columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]], cap: int | None = None) -> tuple[bytes, int, bool]:
    """CSV of the rows in `chunks` (lists of row tuples), at most `cap` rows.

    Returns (csv bytes, rows written, truncated).
    """
    # bytes from the start: a StringIO of the same text can take up to 4 bytes per character
    # (one emoji is enough), and .getvalue().encode() would hold a second copy next to it
    raw = io.BytesIO()
    buf = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(buf)
    writer.writerow(columns)
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
