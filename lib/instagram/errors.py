"""Instagram Graph API error categorisation (spec "ERROR CATEGORIZATION FUNCTION") and backoff.

Pure: no I/O, no clock. `GraphError` carries what a failed call left us (HTTP status, the
decoded body, the response headers, or the network exception) and is what lib.instagram.client raises.

Decisions:
* Instagram's error table by (code, subcode) (IG_ERROR_TABLE, each row quoting Meta's page)
  comes first: "try again" rows are transient, "generate a new container" rows drop the
  container, 9007/2207027 means "not ready, wait", 9/2207042 is the publishing limit (wait for
  the window, never the DLQ), 4/2207051 a spam restriction (permanent: retrying deepens it).
* codes 190/102/104 -> auth_failure; 4/17/32/613 or HTTP 429 -> rate_limit (the spec's function
  forgot 32; its table has it), and the throttles 80001/80002/80006 and 341: they come with
  HTTP 400 and would otherwise be dead-lettered as permanent.
* Graph's `is_transient: true` (codes 1 and 2 carry it) makes an otherwise permanent/unknown
  error transient.
* Account-level answers hold the whole account back instead of failing rows one by one
  (action HOLD: no retry is used, the row waits with the account): 368 "temporarily blocked for
  policy violations" (wait, then try again), 25/2207050 (the account is restricted: its owner must
  sign in to the Instagram app), 4/2207051 (spam restriction), 10/1893063 (messaging restricted).
* Codes decide, not the HTTP status: Meta sends the same error as 400 or 403 depending on the
  login type (the Send API's 10/2018278 arrives as 403 10/2534022 with Instagram Login), so a
  documented code or (code, subcode) gives the same outcome under either status.
* any other 400/403 with a code -> permanent; 5xx and network timeouts/connection errors ->
  transient; anything else -> unknown (retryable).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import requests

AUTH_CODES = frozenset({190, 102, 104})
# The spec's rate-limit codes (+ 32, which its function forgot), and the Business Use Case throttles
# Meta's "Rate Limiting" page names: 80001 (Pages), 80002 (Instagram), 80006 (Messenger), and 341
# ("Application limit reached").
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80001, 80002, 80006, 341})
USAGE_HEADERS = ("x-business-use-case-usage", "x-app-usage", "x-ad-account-usage")
# Graph answers for a rejected publish/repost: 368 = "deemed abusive or otherwise disallowed";
# 2207xxx subcodes are the content publishing API's media/content rejections.
CONTENT_CODES = frozenset({368})
CONTENT_SUBCODE_RANGE = range(2207000, 2208000)

# What the worker does with an answer, beyond its category:
RETRY = "retry"                    # the schedule (backoff) decides
NEW_CONTAINER = "new_container"    # drop the stored creation_id; the next attempt makes a new container
WAIT_CONTAINER = "wait_container"  # the container is not ready: wait, no attempt used up
QUOTA = "quota"                    # the publishing limit: wait until the 24 h window allows, never DLQ
SPAM = "spam"                      # (kept for callers that test it) a spam restriction
HOLD = "hold"                      # the account must wait (or its owner act): hold its rows, use no retry

_ERRORS_DOC = "https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/error-codes"
_MESSENGER_DOC = "https://developers.facebook.com/docs/messenger-platform/error-codes"
_GRAPH_ERRORS_DOC = "https://developers.facebook.com/docs/graph-api/guides/error-handling"


@dataclass(frozen=True)
class ErrorRule:
    retryable: bool
    error_category: str
    action: str
    doc: str  # the table row this comes from, quoted
    hold: timedelta | None = None  # action HOLD: how long the account waits (None: until an operator resumes)
    owner_must: str | None = None  # action HOLD: what the account's owner must do, for the alert


# Instagram's own error table by (code, subcode); it takes precedence over the spec's rules where
# it names a pair. Each row quotes the "Error Codes" page of the Instagram
# Platform (HTTP 400 for all of them there).
IG_ERROR_TABLE: dict[tuple[int, int], ErrorRule] = {
    (-2, 2207003): ErrorRule(True, "transient", NEW_CONTAINER,
                             f"{_ERRORS_DOC} -2/2207003: 'It takes too long to download the media.' -> 'Try again.'"),
    (-2, 2207020): ErrorRule(True, "transient", NEW_CONTAINER,
                             f"{_ERRORS_DOC} -2/2207020: 'The media you are trying to access has expired.' -> "
                             "'Generate a new container ID and use it to try again.'"),
    (-1, 2207001): ErrorRule(True, "transient", RETRY,
                             f"{_ERRORS_DOC} -1/2207001: 'Instagram server error. Try again.'"),
    (-1, 2207032): ErrorRule(True, "transient", NEW_CONTAINER,
                             f"{_ERRORS_DOC} -1/2207032: 'Create media fail, please try to re-create media' -> "
                             "'Failed to create a media container. Try again.'"),
    (-1, 2207053): ErrorRule(True, "transient", NEW_CONTAINER,
                             f"{_ERRORS_DOC} -1/2207053: 'unknown upload error' -> 'Generate a new container and "
                             "use it to try again.'"),
    (1, 2207057): ErrorRule(False, "permanent", RETRY,
                            f"{_ERRORS_DOC} 1/2207057: 'Thumbnail offset must be ... less than video duration'"),
    (4, 2207051): ErrorRule(False, "permanent", HOLD,
                            f"{_ERRORS_DOC} 4/2207051: 'We restrict certain activity to protect our community.' "
                            "(the publishing action is suspected to be spam)",
                            hold=timedelta(hours=24),
                            owner_must="check the account in the Instagram app (Account Status) and tell Instagram "
                                       "if it made a mistake; publishing is held, since each attempt deepens it"),
    (25, 2207050): ErrorRule(False, "permanent", HOLD,
                             f"{_ERRORS_DOC} 25/2207050: 'The Instagram account is restricted.' -> 'The app user "
                             "must log in to the Instagram app to resolve the restriction.'",
                             hold=None,
                             owner_must="sign in to the Instagram app to lift the restriction, then resume the "
                                        "account here"),
    (10, 2018278): ErrorRule(False, "permanent", RETRY,
                             f"{_MESSENGER_DOC} 10/2018278: 'Message sent outside of allowed window' (the 24-hour "
                             "messaging window has closed; no retry can send it)"),
    (10, 2534022): ErrorRule(False, "permanent", RETRY,
                             f"{_MESSENGER_DOC} 10/2534022: the same 'outside of allowed window' answer as Instagram "
                             "Login sends it (HTTP 403)"),
    (10, 1893063): ErrorRule(False, "permanent", HOLD,
                             f"{_MESSENGER_DOC} 10/1893063: 'Pages temporarily restricted from messaging' -> wait "
                             "until the restriction ends",
                             hold=timedelta(hours=24),
                             owner_must="check the Page's and Instagram account's messaging status in Meta "
                                        "Business Suite; messages are held until then"),
    (9, 2207042): ErrorRule(True, "rate_limit", QUOTA,
                            f"{_ERRORS_DOC} 9/2207042: 'You reached maximum number of posts that is allowed to be "
                            "published by Content Publishing API' (the 24 h publishing limit)"),
    (24, 2207008): ErrorRule(True, "transient", NEW_CONTAINER,
                             f"{_ERRORS_DOC} 24/2207008: 'The media builder with creation id = {{creation-id}} does "
                             "not exist or has been expired.'"),
    (9007, 2207027): ErrorRule(True, "transient", WAIT_CONTAINER,
                               f"{_ERRORS_DOC} 9007/2207027: the media is not ready for publishing, please wait"),
}

# Rows keyed by code alone: they apply to every subcode the (code, subcode) table does not name.
IG_CODE_TABLE: dict[int, ErrorRule] = {
    368: ErrorRule(True, "rate_limit", HOLD,
                   f"{_GRAPH_ERRORS_DOC} 368: 'Temporarily blocked for policies violations' -> 'Wait and retry the "
                   "operation.'",
                   hold=timedelta(hours=1),
                   owner_must="wait: Instagram has temporarily blocked this account's actions; calls during the "
                              "block can lengthen it"),
    10: ErrorRule(False, "permanent", RETRY,
                  f"{_GRAPH_ERRORS_DOC} 10: 'API Permission Denied' -> 'Permission is either not granted or has been "
                  "removed.' (no retry can change it)"),
    200: ErrorRule(False, "permanent", RETRY,
                   f"{_GRAPH_ERRORS_DOC} 200-299: 'API Permission (Multiple values depending on permission)' -> "
                   "'Permission is either not granted or has been removed.'"),
}

BACKOFF_CAP = timedelta(minutes=60)


def rule_for(code: int | None, subcode: int | None) -> ErrorRule | None:
    """The table row for an answer: (code, subcode) first, then the code alone."""
    if code is None:
        return None
    return IG_ERROR_TABLE.get((code, subcode)) or IG_CODE_TABLE.get(code)


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
    action: str = RETRY
    doc: str | None = None
    rule: ErrorRule | None = None  # the table row that decided, if any


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def categorize_ig_error(error: BaseException, *, business_id: str | None = None) -> Category:
    """The spec's categorizeIgError for a GraphError (or a bare requests exception), refined by
    Instagram's (code, subcode) table. `business_id` picks this account's usage header entry."""
    if not isinstance(error, GraphError):
        error = GraphError(str(error), exc=error)
    status, code = error.status, error.code
    retry_after = regain_access_after(error.headers, business_id=business_id)
    rule = rule_for(code, error.subcode)
    if rule is not None:
        return Category(rule.retryable, rule.error_category, retry_after if rule.retryable else None,
                        rule.action, rule.doc, rule)
    if code in AUTH_CODES:
        return Category(False, "auth_failure")
    if code in RATE_LIMIT_CODES or status == 429:
        return Category(True, "rate_limit", retry_after)
    if error.error.get("is_transient") is True:
        return Category(True, "transient")
    if status in (400, 403) and code is not None:
        return Category(False, "permanent")
    if status is not None and status >= 500:
        return Category(True, "transient")
    if status is None and isinstance(error.exc, (requests.Timeout, requests.ConnectionError)):
        return Category(True, "transient")
    return Category(True, "unknown")


def container_error_subcode(status_text: str | None) -> int | None:
    """The error subcode in an IG Container's `status` ("If status_code is ERROR, this value will be an
    error subcode"): Instagram writes it as text (e.g. "Error: ... error code 2207053"), so the last
    7-digit 2207xxx number in it, or None when it names none."""

    found = re.findall(r"\b(22070\d\d)\b", status_text or "")
    return int(found[-1]) if found else None


def container_error_rule(status_text: str | None) -> ErrorRule | None:
    """The error table's row for a container's ERROR subcode (any code: the table is keyed by both)."""
    sub = container_error_subcode(status_text)
    if sub is None:
        return None
    return next((r for (c, s), r in IG_ERROR_TABLE.items() if s == sub), None)


def maybe_performed(error: BaseException) -> bool:
    """Could Instagram have acted on a call that got no answer? A read timeout or a connection
    broken after the request went out: yes (uncertain). A refused or timed-out connection: no."""
    exc = error.exc if isinstance(error, GraphError) else error
    if exc is None or isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.Timeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        seen, cause = set(), exc
        while cause is not None and id(cause) not in seen:  # walk the chain urllib3 wraps
            seen.add(id(cause))
            if type(cause).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectionRefusedError"):
                return False
            inner = getattr(cause, "reason", None) or getattr(cause, "__cause__", None) or getattr(cause, "__context__", None)
            if inner is None and cause.args and isinstance(cause.args[0], BaseException):
                inner = cause.args[0]
            cause = inner
        return True
    return isinstance(exc, requests.exceptions.ChunkedEncodingError)


def is_content_rejection(error: BaseException) -> bool:
    """Did Instagram refuse the content itself (policy, media format)? For content_violation alerts."""
    if not isinstance(error, GraphError):
        return False
    return error.code in CONTENT_CODES or (error.subcode in CONTENT_SUBCODE_RANGE)


@dataclass(frozen=True)
class Usage:
    """One scope's usage as Graph reported it: percentages (0-100) and minutes until access returns."""

    usage_type: str | None = None
    call_count: float | None = None
    total_cputime: float | None = None
    total_time: float | None = None
    regain_access_minutes: float | None = None

    @property
    def peak(self) -> float:
        return max((v for v in (self.call_count, self.total_cputime, self.total_time) if v is not None), default=0.0)

    @property
    def exhausted(self) -> bool:
        return self.peak >= 100 or bool(self.regain_access_minutes)


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _header(headers: Mapping[str, str] | None, name: str) -> Any:
    if not headers:
        return None
    for k, v in headers.items():
        if str(k).lower() == name:
            try:
                return json.loads(v)
            except (ValueError, TypeError):
                return None  # a malformed header must not turn a failure into a crash
    return None


def account_usage(headers: Mapping[str, str] | None, business_id: str | None) -> Usage | None:
    """This account's entry of X-Business-Use-Case-Usage ({"<business id>": [{type, call_count,
    total_cputime, total_time, estimated_time_to_regain_access}, ...]}), never another account's.
    Several types under one id: the highest of each figure."""
    body = _header(headers, "x-business-use-case-usage")
    if not isinstance(body, dict) or business_id is None:
        return None
    entries = body.get(str(business_id))
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        return None
    entries = [e for e in entries if isinstance(e, dict)]

    def top(key: str) -> float | None:
        vals = [v for v in (_num(e.get(key)) for e in entries) if v is not None]
        return max(vals) if vals else None

    return Usage(",".join(sorted({str(e.get("type")) for e in entries if e.get("type")})) or None,
                 top("call_count"), top("total_cputime"), top("total_time"), top("estimated_time_to_regain_access"))


def app_usage(headers: Mapping[str, str] | None) -> Usage | None:
    """X-App-Usage ({"call_count", "total_cputime", "total_time"} in %): the whole app's usage."""
    body = _header(headers, "x-app-usage")
    if not isinstance(body, dict):
        return None
    return Usage("app", _num(body.get("call_count")), _num(body.get("total_cputime")), _num(body.get("total_time")),
                 _num(body.get("estimated_time_to_regain_access")))


def regain_access_after(headers: Mapping[str, str] | None, *, business_id: str | None = None) -> timedelta | None:
    """When Graph says access returns: this account's estimated_time_to_regain_access (minutes) in
    X-Business-Use-Case-Usage, or the app's when X-App-Usage carries one. Without a business id
    nothing is read from the per-account header (another account's throttle is not ours)."""
    minutes = [u.regain_access_minutes for u in (account_usage(headers, business_id), app_usage(headers))
               if u is not None and u.regain_access_minutes]
    best = max((m for m in minutes if m > 0), default=None)
    return timedelta(minutes=best) if best is not None else None


def backoff_delay(retry_count: int) -> timedelta:
    """The wait before retry number retry_count + 1: min(2^retry_count minutes, 60 minutes)."""
    if retry_count >= 6:  # 2^6 = 64 > 60; avoid huge powers
        return BACKOFF_CAP
    return min(timedelta(minutes=2 ** max(retry_count, 0)), BACKOFF_CAP)


@dataclass(frozen=True)
class RetryDecision:
    status: str  # "failed" or "dlq"
    retry_count: int
    delay: timedelta | None  # None for dlq


def next_attempt(retry_count: int, category: Category, *, max_retries: int) -> RetryDecision:
    """retry_count counts retries; waits 2,4,8,16,32 min, then DLQ.

    Not retryable -> dlq at once. Retryable and retry_count >= max_retries -> dlq (count kept).
    Otherwise retry_count + 1 and a wait of backoff_delay(new count), at least the time the
    rate-limit headers gave. The publishing limit (action QUOTA) is no failure of the row: it
    waits until the window allows (retry_after), retry_count unchanged, never the DLQ.
    """
    if category.action == QUOTA:
        return RetryDecision("failed", retry_count, category.retry_after or timedelta(minutes=15))
    if not category.retryable or retry_count >= max_retries:
        return RetryDecision("dlq", retry_count, None)
    new_count = retry_count + 1
    delay = backoff_delay(new_count)
    if category.retry_after is not None and category.retry_after > delay:
        delay = category.retry_after
    return RetryDecision("failed", new_count, delay)
