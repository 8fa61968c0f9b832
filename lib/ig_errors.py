"""Instagram Graph API error categorisation (spec "ERROR CATEGORIZATION FUNCTION") and backoff.

Pure: no I/O, no clock. `GraphError` carries what a failed call left us (HTTP status, the
decoded body, the response headers, or the network exception) and is what lib.instagram raises.

Decisions (DESIGN decisions 1 and 2):
* codes 190/102/104 -> auth_failure; 4/17/32/613 or HTTP 429 -> rate_limit (the spec's function
  forgot 32; its table has it). We also treat 80002 (Instagram's Business Use Case throttle)
  as rate_limit: it comes with HTTP 400 and would otherwise be dead-lettered as permanent.
* Graph's `is_transient: true` makes an otherwise permanent/unknown error transient.
* 400 with any other code -> permanent; 5xx and network timeouts/connection errors -> transient;
  anything else -> unknown (retryable).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping

import requests

AUTH_CODES = frozenset({190, 102, 104})
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80002})
USAGE_HEADERS = ("x-business-use-case-usage", "x-app-usage", "x-ad-account-usage")
# Graph answers for a rejected publish/repost: 368 = "deemed abusive or otherwise disallowed";
# 2207xxx subcodes are the content publishing API's media/content rejections.
CONTENT_CODES = frozenset({368})
CONTENT_SUBCODE_RANGE = range(2207000, 2208000)

BACKOFF_CAP = timedelta(minutes=60)


@dataclass(eq=False)  # exceptions stay hashable
class GraphError(Exception):
    """A Graph call that did not succeed. `exc` is set for network failures (no response)."""

    message: str
    status: int | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    exc: BaseException | None = None

    def __str__(self) -> str:
        return self.message

    @property
    def error(self) -> dict[str, Any]:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"]
        return {}

    @property
    def code(self) -> int | None:
        return _int(self.error.get("code"))

    @property
    def subcode(self) -> int | None:
        return _int(self.error.get("error_subcode"))


@dataclass(frozen=True)
class Category:
    retryable: bool
    error_category: str
    retry_after: timedelta | None = None  # from the usage headers, when Graph says so


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def categorize_ig_error(error: BaseException) -> Category:
    """The spec's categorizeIgError for a GraphError (or a bare requests exception)."""
    if not isinstance(error, GraphError):
        error = GraphError(str(error), exc=error)
    status, code = error.status, error.code
    retry_after = regain_access_after(error.headers)
    if code in AUTH_CODES:
        return Category(False, "auth_failure")
    if code in RATE_LIMIT_CODES or status == 429:
        return Category(True, "rate_limit", retry_after)
    if error.error.get("is_transient") is True:
        return Category(True, "transient")
    if status == 400 and code is not None:
        return Category(False, "permanent")
    if status is not None and status >= 500:
        return Category(True, "transient")
    if status is None and isinstance(error.exc, (requests.Timeout, requests.ConnectionError)):
        return Category(True, "transient")
    return Category(True, "unknown")


def is_content_rejection(error: BaseException) -> bool:
    """Did Instagram refuse the content itself (policy, media format)? For content_violation alerts."""
    if not isinstance(error, GraphError):
        return False
    return error.code in CONTENT_CODES or (error.subcode in CONTENT_SUBCODE_RANGE)


def regain_access_after(headers: Mapping[str, str] | None) -> timedelta | None:
    """The longest `estimated_time_to_regain_access` (minutes) found in Graph's usage headers.

    X-Business-Use-Case-Usage is {"<id>": [{"type": ..., "estimated_time_to_regain_access": N}, ...]};
    X-App-Usage normally carries only percentages, but is read the same way in case it has one.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    minutes: list[float] = []
    for name in USAGE_HEADERS:
        raw = lowered.get(name)
        if not raw:
            continue
        try:
            _collect_regain(json.loads(raw), minutes)
        except (ValueError, TypeError):
            continue  # a malformed header must not turn a failure into a crash
    best = max((m for m in minutes if m > 0), default=None)
    return timedelta(minutes=best) if best is not None else None


def _collect_regain(node: Any, out: list[float]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "estimated_time_to_regain_access":
                try:
                    out.append(float(value))
                except (TypeError, ValueError):
                    pass
            else:
                _collect_regain(value, out)
    elif isinstance(node, list):
        for item in node:
            _collect_regain(item, out)


def backoff_delay(retry_count: int) -> timedelta:
    """Spec 1.6: min(2^retry_count minutes, 60 minutes)."""
    if retry_count >= 6:  # 2^6 = 64 > 60; avoid huge powers
        return BACKOFF_CAP
    return min(timedelta(minutes=2 ** max(retry_count, 0)), BACKOFF_CAP)


@dataclass(frozen=True)
class RetryDecision:
    status: str  # "failed" or "dlq"
    retry_count: int
    delay: timedelta | None  # None for dlq


def next_attempt(retry_count: int, category: Category, *, max_retries: int) -> RetryDecision:
    """DESIGN decision 2: retry_count counts retries; waits 2,4,8,16,32 min, then DLQ.

    Not retryable -> dlq at once. Retryable and retry_count >= max_retries -> dlq (count kept).
    Otherwise retry_count + 1 and a wait of backoff_delay(new count), at least the time the
    rate-limit headers gave.
    """
    if not category.retryable or retry_count >= max_retries:
        return RetryDecision("dlq", retry_count, None)
    new_count = retry_count + 1
    delay = backoff_delay(new_count)
    if category.retry_after is not None and category.retry_after > delay:
        delay = category.retry_after
    return RetryDecision("failed", new_count, delay)
