from datetime import UTC, datetime

import pytest

from lib.core.identity import (
    OPERATOR,
    VIEWER,
    Actor,
    PermissionDenied,
    groups_from_claim,
    require_operator,
    role_for,
    token_expired,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


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


# -- fail closed off loopback ------------------------------------------------------
from lib.core.identity import (  # noqa: E402
    IdentityRefused,
    check_auth_table,
    client_is_trusted,
    header_identity,
    is_loopback,
    local_role,
    oidc_identity,
    parse_proxy_ips,
)


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), (None, False), ("10.0.0.5", False), ("example.com", False),
])
def test_is_loopback(address, expected):
    assert is_loopback(address) is expected


def test_header_mode_off_loopback_serves_nothing_without_trusted_proxies():
    with pytest.raises(IdentityRefused, match="TRUSTED_PROXY_IPS is empty"):
        header_identity(["x@example.com"], header="X-Forwarded-Email", bind_address="0.0.0.0",
                        client_ip="203.0.113.9", trusted_proxy_ips="")


def test_header_mode_off_loopback_trusts_only_the_listed_proxies():
    kw = dict(header="X-Forwarded-Email", bind_address="0.0.0.0", trusted_proxy_ips="10.0.0.7, 192.168.1.0/24",
              forwarded_allow_ips="")
    assert header_identity(["x@example.com"], client_ip="10.0.0.7", **kw) == "x@example.com"
    assert header_identity(["x@example.com"], client_ip="192.168.1.200", **kw) == "x@example.com"
    assert header_identity(["x@example.com"], client_ip="::ffff:10.0.0.7", **kw) == "x@example.com"
    for client in ("203.0.113.9", None, "garbage"):
        with pytest.raises(IdentityRefused, match="did not come through the sign-in proxy"):
            header_identity(["x@example.com"], client_ip=client, **kw)


def test_header_mode_on_loopback_enforces_a_configured_proxy_list():
    assert header_identity(["a@x.com"], header="H", bind_address="127.0.0.1", client_ip=None,
                           trusted_proxy_ips="") == "a@x.com"
    with pytest.raises(IdentityRefused):
        header_identity(["a@x.com"], header="H", bind_address="127.0.0.1", client_ip=None, trusted_proxy_ips="10.0.0.7",
                        forwarded_allow_ips="")


def test_a_proxy_list_needs_the_forwarded_address_trust_switched_off():
    """The app server rewrites the client address from X-Forwarded-For on connections from
    FORWARDED_ALLOW_IPS (127.0.0.1 and ::1 when unset): the address checked would be the caller's
    choice. Header mode with a proxy list serves nothing until that trust is explicitly empty."""
    kw = dict(header="X-Forwarded-Email", bind_address="0.0.0.0", trusted_proxy_ips="10.0.0.7")
    for forwarded in (None, "127.0.0.1,::1", "*", "10.0.0.7", " , 10.0.0.8"):
        with pytest.raises(IdentityRefused, match="FORWARDED_ALLOW_IPS"):
            header_identity(["ops@example.com"], client_ip="10.0.0.7", forwarded_allow_ips=forwarded, **kw)
    for forwarded in ("", " ", ","):
        assert header_identity(["ops@example.com"], client_ip="10.0.0.7", forwarded_allow_ips=forwarded,
                               **kw) == "ops@example.com"
    # without a proxy list (loopback bind) no address is checked, so the setting does not matter
    assert header_identity(["a@x.com"], header="H", bind_address="127.0.0.1", client_ip=None,
                           trusted_proxy_ips="", forwarded_allow_ips=None) == "a@x.com"


def test_a_repeated_header_is_refused():
    kw = dict(header="X-Forwarded-Email", bind_address="127.0.0.1", client_ip=None, trusted_proxy_ips="")
    with pytest.raises(IdentityRefused, match="more than once"):
        header_identity(["viewer@example.com", "ops@example.com"], **kw)
    with pytest.raises(IdentityRefused, match="more than once"):
        header_identity(["viewer@example.com, ops@example.com"], **kw)  # folded by a proxy
    with pytest.raises(IdentityRefused, match="No signed-in user"):
        header_identity([], **kw)


def test_bad_proxy_list_is_an_error_not_silence():
    with pytest.raises(ValueError, match="TRUSTED_PROXY_IPS"):
        parse_proxy_ips("10.0.0.1, proxy.internal")
    assert not client_is_trusted("10.0.0.1", ())


def test_local_mode_is_never_operator_off_loopback():
    assert local_role("local", bind_address="127.0.0.1") == OPERATOR
    assert local_role("local", bind_address="0.0.0.0") == VIEWER
    assert local_role("local", bind_address=None) == VIEWER
    assert local_role("local", bind_address="0.0.0.0", operator_emails="local") == VIEWER


# -- OIDC --------------------------------------------------------------------------

def test_oidc_identity_is_the_verified_email_only():
    assert oidc_identity({"email": "ops@example.com", "email_verified": True}) == "ops@example.com"
    assert oidc_identity({"email": "ops@example.com", "email_verified": "true"}) == "ops@example.com"
    for claims in ({"email": "ops@example.com"}, {"email": "ops@example.com", "email_verified": False},
                   {"email": "ops@example.com", "email_verified": "yes"},
                   {"preferred_username": "ops@example.com", "sub": "ops@example.com", "email_verified": True}):
        with pytest.raises(IdentityRefused):
            oidc_identity(claims)
    # providers that omit email_verified name another claim
    assert oidc_identity({"email": "a@b.c", "xms_edov": True}, verified_claim="xms_edov") == "a@b.c"


AUTH_OK = {"redirect_uri": "https://d/oauth2callback", "cookie_secret": "s", "client_id": "c", "client_secret": "x",
           "server_metadata_url": "https://idp/.well-known/openid-configuration"}


def test_auth_table_must_be_complete():
    check_auth_table(AUTH_OK)
    check_auth_table({"redirect_uri": "r", "cookie_secret": "s",
                      "google": {"client_id": "c", "client_secret": "x", "server_metadata_url": "m"}})
    for missing in AUTH_OK:
        partial = {k: v for k, v in AUTH_OK.items() if k != missing}
        with pytest.raises(IdentityRefused, match=missing) as info:
            check_auth_table(partial)
        assert "https://" not in str(info.value) and "cookie_secret = " not in str(info.value)
    with pytest.raises(IdentityRefused):
        check_auth_table("not a table")
