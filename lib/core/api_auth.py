"""Who may call the agents' HTTP API (python -m worker.api) and how often: pure rules, no I/O.

API_TOKENS lists the callers, separated by commas or whitespace, each `name:role:token` or
`name:role:sha256:<64 hex digits>` (the SHA-256 of the token, so the secret itself need not sit
in the environment). Roles:

* `agent`    heartbeats and the five action routes (enqueue);
* `viewer`   the reads (queue status, DLQ);
* `operator` everything, the manual retry included.

A presented token is hashed once and compared with every entry's hash in constant time
(hmac.compare_digest, no early exit), so neither the answer's timing nor its content tells
which part of a guess was right. Tokens never leave this module: callers are known by name.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

AGENT, VIEWER, OPERATOR = "agent", "viewer", "operator"
ROLES = (AGENT, VIEWER, OPERATOR)
MIN_TOKEN_CHARS = 16  # a shorter secret is refused at start (it could be guessed)
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class TokenConfigError(ValueError):
    """API_TOKENS cannot be used; the message names the entry by position and name, never its token."""


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    digest: bytes = field(repr=False)  # SHA-256 of the token

    def may(self, roles: tuple[str, ...]) -> bool:
        """True when this caller's role is one of `roles`; operators may do everything."""
        return self.role == OPERATOR or self.role in roles


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(raw: str | None) -> tuple[Caller, ...]:
    """The callers of API_TOKENS; TokenConfigError for an entry that is malformed, a role that does
    not exist, a token shorter than MIN_TOKEN_CHARS, or a name or token used twice."""
    callers: list[Caller] = []
    for i, entry in enumerate(re.split(r"[\s,]+", (raw or "").strip()), 1):
        if not entry:
            continue
        parts = entry.split(":", 2)
        name = parts[0] if _NAME.match(parts[0] or "") else None
        where = f"API_TOKENS entry {i}" + (f" ({name})" if name else "")
        if len(parts) != 3 or not name:
            raise TokenConfigError(f"{where} is not name:role:token (a name of letters, digits, _ . @ -)")
        role, secret = parts[1], parts[2]
        if role not in ROLES:
            raise TokenConfigError(f"{where}: role must be one of {', '.join(ROLES)} (got {role!r})")
        if secret.startswith("sha256:"):
            hexed = secret[len("sha256:"):]
            if not _HEX64.match(hexed):
                raise TokenConfigError(f"{where}: sha256: must be followed by 64 hex digits")
            digest = bytes.fromhex(hexed)
        else:
            if len(secret) < MIN_TOKEN_CHARS:
                raise TokenConfigError(f"{where}: the token must have at least {MIN_TOKEN_CHARS} characters")
            digest = token_digest(secret)
        if any(c.name == name for c in callers):
            raise TokenConfigError(f"{where}: the name {name} is used twice")
        if any(hmac.compare_digest(c.digest, digest) for c in callers):
            raise TokenConfigError(f"{where}: the same token as another entry")
        callers.append(Caller(name, role, digest))
    return tuple(callers)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def identify(callers: tuple[Caller, ...], token: str | None) -> Caller | None:
    """The caller whose token this is, or None. Every entry is compared (constant time each)."""
    if not token:
        return None
    digest = token_digest(token)
    found = None
    for c in callers:
        if hmac.compare_digest(c.digest, digest):
            found = c
    return found


class RateLimiter:
    """A token bucket per key: `per_min` requests a minute, bursts of up to `per_min`.

    `take(key)` returns 0.0 when the request may go ahead, else the seconds until it could
    (the Retry-After). Thread-safe; `clock` is a parameter so tests can drive it."""

    def __init__(self, per_min: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.rate = per_min / 60.0
        self.burst = float(per_min)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self.clock()
        with self._lock:
            if key not in self._buckets and len(self._buckets) >= self.max_keys:
                self._forget_full(now)  # many keys (addresses guessing): drop the buckets that refilled
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return float((1.0 - tokens) / self.rate)

    def _forget_full(self, now: float) -> None:
        self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items()
                         if t + (now - at) * self.rate < self.burst}


def retry_after_header(wait_s: float) -> str:
    """Retry-After in whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
