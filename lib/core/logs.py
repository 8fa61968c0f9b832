"""Log output of the worker: the usual text lines, or with LOG_FORMAT=json one JSON object per line.

JSON keys: time (UTC, ISO 8601), level, logger, message, pid, and where a line is about a queue
row or a tick the fields its call passed with `extra=fields(...)`: row_id, action_type, outcome,
error_category, duration (seconds). Tokens never reach a log line (they travel in the
Authorization header only); as a last guard every message goes through lib.core.redact.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from lib.core.redact import redact

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"


def fields(**values: Any) -> dict[str, Any]:
    """`log.info(..., extra=fields(row_id=..., outcome=...))`: structured fields of a line."""
    return {"fields": {k: v for k, v in values.items() if v is not None}}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            out.setdefault(key, value if isinstance(value, (int, float, bool)) else redact(str(value)))
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Root logging for a process: `fmt` text (the default) or json."""
    fmt = (fmt or "text").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)} (got {fmt!r})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
