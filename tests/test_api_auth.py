"""lib.core.api_auth: API_TOKENS parsing, constant-time identification, the per-caller token bucket (pure)."""
from __future__ import annotations

import hashlib

import pytest

from lib.core.api_auth import RateLimiter, TokenConfigError, bearer_token, identify, parse_tokens, retry_after_header

TOK = "a-token-of-24-characters"


def test_entries_are_separated_by_commas_or_whitespace_and_may_hold_a_hash():
    hashed = hashlib.sha256(b"the-operators-secret").hexdigest()
    callers = parse_tokens(f" bot:agent:{TOK},\n view:viewer:{TOK}-2   ops:operator:sha256:{hashed.upper()} ")
    assert [(c.name, c.role) for c in callers] == [("bot", "agent"), ("view", "viewer"), ("ops", "operator")]
    assert identify(callers, TOK).name == "bot"
    assert identify(callers, "the-operators-secret").name == "ops"
    assert identify(callers, hashed) is None  # the hash itself is not a token
    assert identify(callers, TOK + "x") is None and identify(callers, "") is None and identify(callers, None) is None
    assert parse_tokens("") == () and parse_tokens(None) == ()
    assert TOK not in repr(callers)


@pytest.mark.parametrize("raw, message", [
    ("bot:agent", "entry 1 (bot) is not name:role:token"),
    (f"bot:admin:{TOK}", "role must be one of agent, viewer, operator"),
    ("bot:agent:short", "at least 16 characters"),
    ("bot:agent:sha256:abc", "64 hex digits"),
    (f"bot:agent:{TOK} bot:viewer:{TOK}-2", "entry 2 (bot): the name bot is used twice"),
    (f"bot:agent:{TOK} b2:viewer:{TOK}", "entry 2 (b2): the same token as another entry"),
    (f"b/t:agent:{TOK}", "entry 1 is not name:role:token"),
])
def test_a_bad_entry_is_refused_by_position_and_name_never_by_its_token(raw, message):
    with pytest.raises(TokenConfigError) as exc:
        parse_tokens(raw)
    assert message in str(exc.value)
    assert TOK not in str(exc.value) and "short" not in str(exc.value).replace("shorter", "")


def test_roles():
    bot, view, ops = parse_tokens(f"bot:agent:{TOK} view:viewer:{TOK}-2 ops:operator:{TOK}-3")
    assert bot.may(("agent",)) and not bot.may(("viewer",))
    assert view.may(("viewer",)) and not view.may(("agent",)) and not view.may(("operator",))
    assert ops.may(("agent",)) and ops.may(("viewer",)) and ops.may(("operator",))


def test_bearer_header():
    assert bearer_token(f"Bearer {TOK}") == TOK and bearer_token(f"bearer  {TOK} ") == TOK
    assert bearer_token(TOK) is None and bearer_token("Basic x") is None and bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_the_bucket_allows_a_burst_then_one_request_per_refill():
    t = [0.0]
    lim = RateLimiter(60, clock=lambda: t[0])  # one a second, bursts of 60
    assert all(lim.take("a") == 0.0 for _ in range(60))
    wait = lim.take("a")
    assert wait == pytest.approx(1.0) and retry_after_header(wait) == "1"
    assert lim.take("b") == 0.0  # another caller has its own bucket
    t[0] = 0.5
    assert lim.take("a") == pytest.approx(0.5)
    t[0] = 1.0
    assert lim.take("a") == 0.0 and lim.take("a") > 0
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


def test_the_bucket_forgets_refilled_keys_when_it_holds_too_many():
    t = [0.0]
    lim = RateLimiter(60, clock=lambda: t[0], max_keys=3)
    for k in "abc":
        lim.take(k)
    t[0] = 120.0  # every bucket full again
    lim.take("d")
    assert set(lim._buckets) == {"d"}


def test_the_api_and_poll_settings_and_their_defaults():
    from lib.core.settings import SettingsError, load_settings

    s = load_settings(env={}, secrets={})
    assert (s.api_port, s.api_address, s.api_tokens, s.worker_poll_s) == (8600, "127.0.0.1", "", 5.0)
    s = load_settings(env={"API_PORT": "9000", "WORKER_POLL_S": "0", "API_TOKENS": f"bot:agent:{TOK}"}, secrets={})
    assert (s.api_port, s.worker_poll_s) == (9000, 0.0)
    assert TOK not in repr(s)  # API_TOKENS is a secret
    for env in ({"WORKER_POLL_S": "-1"}, {"WORKER_POLL_S": "soon"}, {"API_RATE_LIMIT_PER_MIN": "0"}):
        with pytest.raises(SettingsError):
            load_settings(env=env, secrets={})
