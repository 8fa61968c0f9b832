"""Secrets never leave the app: token-like JSON fields and credentials inside text are redacted.

Pure. The one home of the rule: queue payloads, audit_log.details (when written and when read),
CSV exports, worker_ticks.error and log records all go through these functions.
"""
from __future__ import annotations

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


def redact(value: Any) -> Any:
    """A copy of a JSON value with token-like fields replaced by '[redacted]'.

    A field is token-like by its name (access_token, token, *_secret, password, authorization, ...)
    or by its value (a Graph token 'EAA...', 'Bearer ...'); tokens inside longer strings
    (an URL's access_token=...) are cut out of the string."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        if _SECRET_VALUE_RE.match(value.strip()):
            return REDACTED
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


_SUSPECT_JSON_RE = re.compile(
    r"token|secret|passw|authoriz|api_?key|apikey|cookie|signature|credential|private_?key|bearer|EAA[A-Za-z0-9]{20}",
    re.I,
)


def may_hold_secret(json_text: str | None) -> bool:
    """Cheap pre-check for JSON text (exports): only texts that match are parsed and redacted."""
    return bool(json_text) and bool(_SUSPECT_JSON_RE.search(json_text))
