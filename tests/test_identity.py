from datetime import datetime, timezone

import pytest

from lib.identity import OPERATOR, VIEWER, Actor, PermissionDenied, groups_from_claim, require_operator, role_for, token_expired

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def test_local_mode_without_lists_makes_the_local_user_operator():
    assert role_for("local", local_mode=True) == OPERATOR
    # a configured list applies in local mode too
    assert role_for("local", local_mode=True, operator_emails="ops@example.com") == VIEWER


@pytest.mark.parametrize(
    "user, groups, kwargs, expected",
    [
        ("Ops@Example.com", (), {"operator_emails": "ops@example.com, lead@example.com"}, OPERATOR),
        ("someone@example.com", (), {"operator_emails": "ops@example.com"}, VIEWER),
        ("anna@acme.io", (), {"operator_domains": "acme.io"}, OPERATOR),
        ("anna@notacme.io", (), {"operator_domains": "acme.io"}, VIEWER),
        ("anna@acme.io.evil.com", (), {"operator_domains": "acme.io"}, VIEWER),
        ("bob@x.com", ("staff", "SRE"), {"operator_groups": "sre"}, OPERATOR),
        ("bob@x.com", ("staff",), {"operator_groups": "sre"}, VIEWER),
        ("unknown@x.com", (), {}, VIEWER),
        ("", (), {"operator_domains": "x.com"}, VIEWER),
    ],
)
def test_role_mapping(user, groups, kwargs, expected):
    assert role_for(user, groups, **kwargs) == expected


def test_token_expiry_fails_closed():
    assert not token_expired({"exp": NOW.timestamp() + 60}, NOW)
    assert token_expired({"exp": NOW.timestamp()}, NOW)
    assert token_expired({}, NOW)
    assert token_expired({"exp": "tomorrow"}, NOW)
    assert token_expired({"exp": True}, NOW)


def test_groups_claim_shapes():
    assert groups_from_claim(["a", "b"]) == ("a", "b")
    assert groups_from_claim("a, b c") == ("a", "b", "c")
    assert groups_from_claim(None) == ()
    assert groups_from_claim({"weird": 1}) == ()


def test_require_operator():
    require_operator(Actor("ops", OPERATOR), "retry")
    with pytest.raises(PermissionDenied, match="viewer@x may not retry"):
        require_operator(Actor("viewer@x", VIEWER), "retry")
    with pytest.raises(PermissionDenied):
        require_operator("ops", "retry")  # a bare name carries no role
