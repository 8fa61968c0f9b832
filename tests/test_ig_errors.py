"""Pure rules: categorize_ig_error (the category rules and Instagram's error table) and the retry schedule."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests

from lib.instagram.errors import (
    HOLD,
    IG_ERROR_TABLE,
    NEW_CONTAINER,
    QUOTA,
    WAIT_CONTAINER,
    Category,
    GraphError,
    account_usage,
    app_usage,
    backoff_delay,
    categorize_ig_error,
    is_content_rejection,
    next_attempt,
    regain_access_after,
)


def err(status=None, code=None, exc=None, headers=None, **extra):
    body = {"error": {"message": "m", "code": code, **extra}} if code is not None or extra else None
    return GraphError("m", status=status, body=body, headers=headers or {}, exc=exc)


@pytest.mark.parametrize("code", [190, 102, 104])
@pytest.mark.parametrize("status", [400, 401, 403, 500])
def test_auth_codes_are_auth_failure_whatever_the_status(code, status):
    assert categorize_ig_error(err(status, code)) == Category(False, "auth_failure")


@pytest.mark.parametrize("code", [1, 2, 10, 100, 200, 9007])
@pytest.mark.parametrize("status", [400, 403])
def test_other_codes_with_400_or_403_are_permanent(code, status):
    got = categorize_ig_error(err(status, code))
    assert (got.retryable, got.error_category) == (False, "permanent")


@pytest.mark.parametrize("code", [4, 17, 32, 613, 80002])
def test_rate_limit_codes_including_32(code):
    for status in (400, 403, 500):
        got = categorize_ig_error(err(status, code))
        assert (got.retryable, got.error_category) == (True, "rate_limit")


def test_http_429_is_rate_limit_with_or_without_a_code():
    assert categorize_ig_error(err(429)).error_category == "rate_limit"
    assert categorize_ig_error(err(429, 100)).error_category == "rate_limit"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(status):
    assert categorize_ig_error(err(status, 1)) == Category(True, "transient")
    assert categorize_ig_error(err(status)) == Category(True, "transient")


@pytest.mark.parametrize("exc", [requests.ConnectTimeout(), requests.ReadTimeout(), requests.Timeout(),
                                 requests.ConnectionError()])
def test_network_timeouts_and_connection_errors_are_transient(exc):
    assert categorize_ig_error(err(exc=exc)) == Category(True, "transient")
    assert categorize_ig_error(exc) == Category(True, "transient")  # a bare requests exception too


def test_unknown_is_retryable():
    assert categorize_ig_error(err(403, 12345)) == Category(False, "permanent")  # a 403 with a code: by the code
    assert categorize_ig_error(err(400)) == Category(True, "unknown")  # a 400 without a Graph code
    assert categorize_ig_error(err(200, None)) == Category(True, "unknown")
    assert categorize_ig_error(ValueError("odd")) == Category(True, "unknown")


def test_is_transient_flag_makes_a_400_retryable_but_not_an_auth_failure():
    assert categorize_ig_error(err(400, 2, is_transient=True)) == Category(True, "transient")
    assert categorize_ig_error(err(400, 190, is_transient=True)).error_category == "auth_failure"
    assert categorize_ig_error(err(400, 100, is_transient=False)).error_category == "permanent"


def test_usage_headers_give_the_time_to_regain_access():
    buc = {"17841": [{"type": "instagram", "call_count": 100, "estimated_time_to_regain_access": 17},
                     {"type": "pages", "estimated_time_to_regain_access": 3}]}
    headers = {"X-Business-Use-Case-Usage": json.dumps(buc), "X-App-Usage": json.dumps({"call_count": 100})}
    assert regain_access_after(headers, business_id="17841") == timedelta(minutes=17)
    assert categorize_ig_error(err(400, 4, headers=headers), business_id="17841").retry_after == timedelta(minutes=17)
    # another account's throttle is not ours, and without an id nothing per-account is read
    assert regain_access_after(headers, business_id="999") is None
    assert regain_access_after(headers) is None
    assert regain_access_after({"x-app-usage": json.dumps({"call_count": 95})}) is None
    assert regain_access_after({"X-Business-Use-Case-Usage": "not json"}) is None
    assert regain_access_after(None) is None


def test_content_rejection():
    assert is_content_rejection(err(400, 368))
    assert is_content_rejection(err(400, 100, error_subcode=2207051))
    assert not is_content_rejection(err(400, 100, error_subcode=33))
    assert not is_content_rejection(requests.Timeout())


def test_backoff_sequence_and_cap():
    assert [backoff_delay(n) for n in range(1, 6)] == [timedelta(minutes=m) for m in (2, 4, 8, 16, 32)]
    assert backoff_delay(0) == timedelta(minutes=1)
    assert backoff_delay(6) == backoff_delay(7) == backoff_delay(60) == timedelta(minutes=60)


def test_retry_schedule_waits_2_4_8_16_32_minutes_then_dlq():
    retryable = Category(True, "transient")
    count, waits = 0, []
    while True:
        d = next_attempt(count, retryable, max_retries=5)
        if d.status == "dlq":
            break
        waits.append(d.delay)
        count = d.retry_count
    assert waits == [timedelta(minutes=m) for m in (2, 4, 8, 16, 32)]
    assert (d.status, d.retry_count, d.delay) == ("dlq", 5, None)
    assert len(waits) + 1 == 6  # six attempts in all


def test_not_retryable_goes_to_dlq_at_once_and_rate_limit_waits_for_the_headers():
    assert next_attempt(0, Category(False, "permanent"), max_retries=5).status == "dlq"
    d = next_attempt(0, Category(True, "rate_limit", timedelta(minutes=45)), max_retries=5)
    assert (d.status, d.retry_count, d.delay) == ("failed", 1, timedelta(minutes=45))
    d = next_attempt(4, Category(True, "rate_limit", timedelta(minutes=1)), max_retries=5)
    assert d.delay == timedelta(minutes=32)  # the schedule wins when it is longer


# -- Instagram's own table by (code, subcode) -------------------------------------------------------

@pytest.mark.parametrize("code, subcode, category, action", [
    (-2, 2207003, "transient", NEW_CONTAINER),
    (-2, 2207020, "transient", NEW_CONTAINER),
    (-1, 2207001, "transient", "retry"),
    (-1, 2207032, "transient", NEW_CONTAINER),
    (-1, 2207053, "transient", NEW_CONTAINER),
    (4, 2207051, "permanent", HOLD),          # not a rate limit, although code 4 is one: the account is held
    (25, 2207050, "permanent", HOLD),         # a restricted account: its owner must sign in
    (10, 1893063, "permanent", HOLD),         # messaging restricted
    (10, 2018278, "permanent", "retry"),      # outside the 24-hour window: never retried
    (10, 2534022, "permanent", "retry"),
    (9, 2207042, "rate_limit", QUOTA),        # the daily posts limit, not permanent
    (9007, 2207027, "transient", WAIT_CONTAINER),
    (24, 2207008, "transient", NEW_CONTAINER),
])
def test_error_table_rows_take_precedence(code, subcode, category, action):
    cat = categorize_ig_error(err(400, code, error_subcode=subcode))
    assert (cat.error_category, cat.action) == (category, action)
    assert "developers.facebook.com" in cat.doc  # every row cites its page


def test_every_table_row_quotes_the_error_codes_page():
    assert all("error-codes" in rule.doc or "error-handling" in rule.doc for rule in IG_ERROR_TABLE.values())


def test_throttle_codes_are_rate_limits_and_transient_codes_follow_is_transient():
    for code in (80001, 80002, 80006, 341):
        assert categorize_ig_error(err(400, code)).error_category == "rate_limit"
    assert categorize_ig_error(err(500, 1, is_transient=True)).error_category == "transient"
    assert categorize_ig_error(err(400, 2, is_transient=True)).error_category == "transient"
    assert categorize_ig_error(err(400, 4)).error_category == "rate_limit"  # code 4 without the spam subcode


def test_quota_waits_for_the_window_without_using_a_retry():
    d = next_attempt(5, Category(True, "rate_limit", timedelta(hours=3), QUOTA), max_retries=5)
    assert (d.status, d.retry_count, d.delay) == ("failed", 5, timedelta(hours=3))  # never the DLQ


def test_usage_is_read_for_this_account_and_for_the_app():
    headers = {"X-Business-Use-Case-Usage": json.dumps({
        "111": [{"type": "instagram", "call_count": 40, "total_cputime": 5, "total_time": 12}],
        "222": [{"type": "instagram", "call_count": 99, "estimated_time_to_regain_access": 30}]}),
        "x-app-usage": json.dumps({"call_count": 100, "total_cputime": 3, "total_time": 7})}
    mine = account_usage(headers, "111")
    assert (mine.call_count, mine.total_cputime, mine.total_time, mine.regain_access_minutes) == (40, 5, 12, None)
    assert not mine.exhausted
    assert account_usage(headers, "222").exhausted and account_usage(headers, "333") is None
    app = app_usage(headers)
    assert app.exhausted and app.peak == 100


# -- round 2: codes decide whatever the HTTP status, account-level holds, container subcodes ------------

@pytest.mark.parametrize("status", [400, 403])
def test_messaging_window_and_permission_errors_are_permanent_at_once_under_400_and_403(status):
    for code, sub in ((10, 2018278), (10, 2534022), (200, None), (10, None)):
        got = categorize_ig_error(err(status, code, error_subcode=sub))
        assert (got.retryable, got.error_category) == (False, "permanent"), (status, code, sub)
        assert got.doc and "developers.facebook.com" in got.doc


def test_a_temporary_block_368_is_a_hold_of_an_hour_not_a_content_rejection():
    got = categorize_ig_error(err(400, 368))
    assert (got.retryable, got.error_category, got.action) == (True, "rate_limit", HOLD)
    assert got.rule.hold == timedelta(hours=1) and "wait" in got.rule.owner_must.lower()


def test_restricted_account_holds_until_an_operator_resumes():
    got = categorize_ig_error(err(403, 25, error_subcode=2207050))
    assert got.action == HOLD and got.rule.hold is None and "sign in" in got.rule.owner_must


def test_container_error_subcode_is_read_from_the_status_text():
    from lib.instagram.errors import container_error_rule, container_error_subcode

    assert container_error_subcode("Error: Media upload has failed with error code 2207053") == 2207053
    assert container_error_subcode("ERROR") is None and container_error_subcode(None) is None
    assert container_error_rule("Error: ... 2207053").retryable  # "generate a new container and try again"
    assert container_error_rule("Error: ... 2207003").retryable  # "try again"
    assert container_error_rule("Error: ... 2207001").retryable
    assert container_error_rule("Error: ... 2207057").retryable is False  # thumbnail offset: permanent
    assert container_error_rule("Error: unknown reason") is None


def test_maybe_performed_tells_a_lost_answer_from_a_call_that_never_left():
    import urllib3

    from lib.instagram.errors import GraphError, maybe_performed

    assert maybe_performed(GraphError("t", exc=requests.ReadTimeout()))
    assert not maybe_performed(GraphError("t", exc=requests.ConnectTimeout()))
    reset = requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104)))
    assert maybe_performed(GraphError("reset", exc=reset))
    refused = requests.ConnectionError(urllib3.exceptions.MaxRetryError(
        None, "/x", urllib3.exceptions.NewConnectionError(None, "refused")))
    assert not maybe_performed(GraphError("refused", exc=refused))
    assert not maybe_performed(GraphError("http 500", status=500, body={}))


def test_graph_version_table_warns_within_60_days_of_the_end():
    from datetime import date

    from lib.core.settings import GRAPH_VERSION, GRAPH_VERSIONS, graph_version_warning

    assert GRAPH_VERSIONS["v21.0"] == date(2027, 1, 21)
    assert GRAPH_VERSION in GRAPH_VERSIONS and GRAPH_VERSION >= "v25.0"
    assert graph_version_warning("https://graph.facebook.com/v21.0", date(2026, 11, 21)) is None  # 61 days left
    text = graph_version_warning("https://graph.facebook.com/v21.0", date(2026, 12, 6))
    assert "v21.0" in text and "January 21, 2027" in text and "46 days" in text
    assert "ended" in graph_version_warning("https://graph.facebook.com/v20.0", date(2026, 12, 6))
    assert graph_version_warning(f"https://graph.facebook.com/{GRAPH_VERSION}", date(2026, 12, 6)) is None
