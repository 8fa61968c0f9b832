"""The review hold's rule (lib.queue.review, pure): which policy applies, what each mode holds, what is never held
again, the DM window, edit distance and term patterns."""
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lib.queue.review_rules import (
    Policy,
    dm_window_ends,
    edit_distance,
    effective_policy,
    like_pattern,
    parse_review_actions,
    parse_terms,
    policy_holds,
    should_hold,
    term_matches,
    too_late,
    unknown_actions,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
A, B = uuid.uuid4(), uuid.uuid4()
FRESH = dict(status="pending", retry_count=0, decided=False, started=False, operator_touched=False)


def test_review_actions_parse_and_ignore_unknown_names():
    assert parse_review_actions(" reply_dm, send_dm,,reply_dm ") == ("reply_dm", "send_dm")
    assert parse_review_actions("") == () and parse_review_actions(None) == ()
    assert parse_review_actions("send_dm,tweet") == ("send_dm",) and unknown_actions("send_dm,tweet") == ("tweet",)


def test_the_most_specific_policy_wins_then_review_actions():
    own = Policy("reply_dm", "never", A)
    every = Policy("reply_dm", "always", None)
    assert effective_policy([every, own], business_account_id=A, action_type="reply_dm", review_actions=()) is own
    assert effective_policy([every, own], business_account_id=B, action_type="reply_dm", review_actions=()) is every
    fallback = effective_policy([every], business_account_id=A, action_type="send_dm", review_actions=("send_dm",))
    assert (fallback.mode, fallback.source) == ("always", "REVIEW_ACTIONS")
    assert effective_policy([], business_account_id=A, action_type="send_dm", review_actions=()).mode == "never"
    # an account's "never" beats REVIEW_ACTIONS too
    assert effective_policy([Policy("send_dm", "never", A)], business_account_id=A, action_type="send_dm",
                            review_actions=("send_dm",)).mode == "never"


def test_modes():
    assert policy_holds(Policy("send_dm", "always"), text="", sent_count=10**6)
    assert not policy_holds(Policy("send_dm", "never"), text="refund", sent_count=0)
    first = Policy("send_dm", "first_n", first_n=3)
    assert [policy_holds(first, text="", sent_count=n) for n in range(5)] == [True, True, True, False, False]
    match = Policy("send_dm", "match", terms=("refund", "free * shipping"))
    assert policy_holds(match, text="Your REFUND is on its way", sent_count=0)
    assert policy_holds(match, text="free express shipping today", sent_count=0)
    assert not policy_holds(match, text="shipping is free", sent_count=0)


@pytest.mark.parametrize("touched", [dict(status="failed"), dict(retry_count=1), dict(decided=True),
                                     dict(started=True), dict(operator_touched=True), dict(status="processing")])
def test_a_row_someone_acted_on_is_never_held_by_a_policy(touched):
    always = Policy("reply_comment", "always")
    assert should_hold(always, **FRESH, text="x", sent_count=0)
    assert not should_hold(always, **{**FRESH, **touched}, text="x", sent_count=0)


def test_an_approved_dm_is_held_again_only_when_its_window_is_closing():
    never = Policy("reply_dm", "never")
    approved = {**FRESH, "decided": True}
    ends = NOW + timedelta(hours=1)
    assert not should_hold(never, **approved, text="", sent_count=0, approved_window_ends_at=ends, now=NOW)
    assert should_hold(never, **approved, text="", sent_count=0, approved_window_ends_at=ends,
                       now=ends - timedelta(minutes=1))  # inside the sending margin
    assert should_hold(never, **approved, text="", sent_count=0, approved_window_ends_at=ends, now=ends)


def test_the_dm_window():
    queued = NOW - timedelta(hours=3)
    assert dm_window_ends(created_at=queued, last_customer_message_at=None) == queued + timedelta(hours=24)
    wrote = NOW - timedelta(hours=1)
    assert dm_window_ends(created_at=queued, last_customer_message_at=wrote) == wrote + timedelta(hours=24)
    assert not too_late(None, NOW) and not too_late(NOW + timedelta(minutes=3), NOW)
    assert too_late(NOW + timedelta(minutes=1), NOW) and too_late(NOW - timedelta(seconds=1), NOW)


def test_terms_and_their_like_patterns():
    assert parse_terms("refund\n  cancel , refund\n\n") == ("refund", "cancel")
    assert like_pattern("50% off_now*") == "50\\% off\\_now%"
    assert like_pattern("a\\b") == "a\\\\b"
    assert term_matches("Get 50% OFF", "50% off") and not term_matches("Get 50 off", "50% off")
    assert term_matches("a.b", "a.b") and not term_matches("axb", "a.b")  # no regex meaning
    assert term_matches("free and fast shipping", "free*shipping")


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("same", "same") == 0 and edit_distance(None, "") == 0


def test_the_waiting_alert_links_to_the_review_page():
    from lib.core.settings import Settings
    from lib.notify.messages import alert_link

    assert alert_link(Settings(dashboard_url="https://dash.example/"), alert_type="review_waiting",
                      account_name=None, state="open") == "https://dash.example/review"
    assert alert_link(Settings(), alert_type="review_waiting", account_name=None, state="open") is None
