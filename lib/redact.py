"""One home for redaction: token-like values never reach a page, a log, an export or audit_log."""
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
