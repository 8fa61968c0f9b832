"""Secrets never leave the app: token-like JSON fields and credentials inside text are redacted.

Pure. The one home of the rule: queue payloads, audit_log.details (when written and when read),
CSV exports, worker_ticks.error and log records all go through these functions.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

REDACTED = "[redacted]"
_SECRET_KEY_RE = re.compile(
    r"(^|_|-)(access_?token|token|secret|password|passwd|authorization|api_?key|apikey|cookie|"
    r"signature|credential|credentials|private_?key|refresh_?token|client_?secret|bearer)s?($|_|-)",
    re.I,
)
_SECRET_VALUE_RE = re.compile(r"^(EAA[A-Za-z0-9]{20,}|IG[A-Za-z0-9]{40,}|Bearer\s+\S+)$")
_SECRET_IN_TEXT_RE = re.compile(r"(access_token=)[^&\s\"']+|\bEAA[A-Za-z0-9]{20,}|\bBearer\s+[A-Za-z0-9._\-]+", re.I)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY_RE.search(str(key)))


def redact(value: Any, *, secrets: tuple[str | None, ...] = ()) -> Any:
    """A copy of a JSON value (or a text) with token-like fields replaced by '[redacted]'.

    A field is token-like by its name (access_token, token, *_secret, password, authorization, ...)
    or by its value (a Graph token 'EAA...', 'Bearer ...'); tokens inside longer strings
    (an URL's access_token=...) are cut out of the string, and so is every known secret in
    `secrets` (the account's own token, when Graph echoes it back in an error message)."""
    known = tuple(s for s in secrets if s)
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v, secrets=known))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets=known) for v in value]
    if isinstance(value, str):
        if _SECRET_VALUE_RE.match(value.strip()):
            return REDACTED
        for secret in known:
            value = value.replace(secret, REDACTED)
        return _SECRET_IN_TEXT_RE.sub(lambda m: (m.group(1) or "") + REDACTED, value)
    return value


_URL_PASSWORD_RE = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s]*@(?=[^\s@]*)", re.I)
_PASSWORD_PAIR_RE = re.compile(r"\b(password|passwd|pwd|client_secret|secret)(\s*[=:]\s*)([^\s&,;'\"]+)", re.I)


def redact_text(text: str | None) -> str | None:
    """Free text (an error message, a log line) with credentials cut out: the password of any
    URL (scheme://user:password@host, the password up to the last '@' before a space), access_token=...,
    Graph tokens (EAA...), Bearer tokens and password=/secret= pairs."""
    if text is None:
        return None
    text = str(text)
    text = _URL_PASSWORD_RE.sub(lambda m: m.group(1) + "***@", text)
    text = _PASSWORD_PAIR_RE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _SECRET_IN_TEXT_RE.sub(lambda m: (m.group(1) or "") + REDACTED, text)


# -- columns (exports) ----------------------------------------------------------------------------
#
# An export redacts whole columns: a vectorised pre-check (pyarrow's RE2, one pass over the column)
# picks the few cells that may hold a credential, and only those go through redact / redact_text.
# Each pre-check pattern is a superset of what its function changes (tests/test_redact_columns.py
# checks it on every rule's example). RE2's case folding of the patterns' ASCII letters equals
# Python's except for four characters (_RE_I_FOLDS), so the scan also picks cells holding one, and
# Python's re, the one that decides, checks every cell the scan picked.

# every name _SECRET_KEY_RE knows, the token values of _SECRET_VALUE_RE and _SECRET_IN_TEXT_RE, and
# the JSON escapes of characters that can spell them once parsed ("\u0074oken" is "token"): ASCII,
# and the four letters Python's re.I folds to ASCII (U+0130, U+0131, U+017F long s, U+212A Kelvin);
# not the escapes of other characters (emoji in captions: most of SQLite's JSON text)
_SUSPECT_JSON_PATTERN = (r"token|secret|passw|authoriz|api_?key|apikey|cookie|signature|credential|private_?key|"
                         r"bearer|EAA[A-Za-z0-9]{20}|IG[A-Za-z0-9]{40}|\\u00[0-7]|\\u013[01]|\\u017f|\\u212a")
# the three rules of redact_text: scheme://user:pw@, password/pwd/secret pairs, access_token=, EAA..., Bearer
_SUSPECT_TEXT_PATTERN = r"://|passw|pwd|secret|access_token=|EAA[A-Za-z0-9]{20}|bearer"
_RE_I_FOLDS = "[\u0130\u0131\u017f\u212a]"  # İ ı ſ K: match i, i, s, k under Python's re.I
_SUSPECT_JSON_PY = re.compile(_SUSPECT_JSON_PATTERN, re.I)
_SUSPECT_TEXT_PY = re.compile(_SUSPECT_TEXT_PATTERN, re.I)


def _suspects(values: list[str | None], pattern: str, py_re: re.Pattern[str]) -> list[int]:
    """Indexes of the text cells that match `pattern` case-insensitively as Python's re reads it."""
    import numpy as np  # lazy: pyarrow and numpy only for a column scan (pages and exports), never the worker
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # not all text: every non-empty cell
        return [i for i, v in enumerate(values) if v not in (None, "")]
    # one scan for the pattern and for the only characters Python's re.I matches to the pattern's
    # ASCII letters beside ASCII's own (its documentation); each hit is then checked by Python's
    # own expression, the one that decides (there are few: a few hundred in 100,000 audit rows)
    hit = pc.fill_null(pc.match_substring_regex(arr, f"(?i:{pattern})|{_RE_I_FOLDS}"), False)  # folds as they are
    return [i for i in np.flatnonzero(hit.to_numpy(zero_copy_only=False)).tolist() if py_re.search(values[i] or "")]


def redact_json_texts(texts: list[str | None]) -> list[str | None]:
    """A column of JSON texts (audit_log.details as the database's text) with token-like fields
    redacted, as redact() would: cells that may hold a secret are parsed, redacted and written back
    as JSON (sorted keys); a cell that is not JSON is redacted as text. The others stay as they are."""
    out = list(texts)
    for i in _suspects(out, _SUSPECT_JSON_PATTERN, _SUSPECT_JSON_PY):
        try:
            out[i] = json.dumps(redact(json.loads(out[i] or "")), ensure_ascii=False, sort_keys=True)
        except ValueError:
            out[i] = redact_text(out[i])
    return out


def redact_texts(texts: list[str | None]) -> list[str | None]:
    """A column of free texts (error messages), each as redact_text() would make it."""
    out = [None if v is None else str(v) for v in texts]
    for i in _suspects(out, _SUSPECT_TEXT_PATTERN, _SUSPECT_TEXT_PY):
        out[i] = redact_text(out[i])
    return out


# -- logs -------------------------------------------------------------------------------------------

class RedactingFilter(logging.Filter):
    """A handler filter: every record that passes the handler (urllib3's request lines at DEBUG
    included) has credentials cut from its message and its traceback text."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: leave it to the handler
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add RedactingFilter to the handlers of `logger` (the root logger by default), once each."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
