"""Identity fails closed (security items 1-3) through AppTest: the bind address off loopback,
OIDC's verified email, a partial [auth] table, and the re-check at the moment of a write."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from streamlit import config

from lib.core.db import make_engine
from lib.core.schema import system_alerts
from tests.app.test_access_app import AUTH, signed_in


@pytest.fixture
def bind(monkeypatch):
    """bind("0.0.0.0"): the effective server.address, as a config file, --server.address or
    STREAMLIT_SERVER_ADDRESS would set it; restored afterwards."""
    before = config.get_option("server.address")

    def set_(address):
        config.set_option("server.address", address)

    yield set_
    config.set_option("server.address", before)


def texts(at) -> str:
    return " ".join(str(e.value) for e in [*at.error, *at.warning, *at.info])


def test_header_mode_off_loopback_without_trusted_proxies_serves_nothing(run_page, demo_url, bind):
    bind("0.0.0.0")
    at = run_page(demo_url, "pages/queue_monitor.py",
                  env={"TRUSTED_USER_HEADER": "X-Forwarded-Email", "OPERATOR_DOMAINS": "example.com"})
    assert "TRUSTED_PROXY_IPS is empty" in texts(at)
    assert not [b for b in at.button if b.label.startswith("Retry")]
    assert not at.dataframe


def test_header_mode_off_loopback_refuses_a_client_that_is_not_the_proxy(run_page, demo_url, bind):
    bind("0.0.0.0")
    at = run_page(demo_url, "pages/system_alerts.py",
                  env={"TRUSTED_USER_HEADER": "X-Forwarded-Email", "TRUSTED_PROXY_IPS": "10.1.2.3",
                       "FORWARDED_ALLOW_IPS": ""})
    assert "did not come through the sign-in proxy" in texts(at)
    assert not [b for b in at.button if b.label.startswith("Resolve")]


def test_local_mode_off_loopback_is_never_operator(run_page, demo_url, bind):
    bind("0.0.0.0")
    at = run_page(demo_url, "pages/queue_monitor.py")
    assert any("· viewer" in c.value for c in at.sidebar.caption)
    assert all(b.disabled for b in at.button if b.label.startswith("Retry"))


def test_local_mode_on_loopback_is_operator(run_page, demo_url, bind):
    bind("127.0.0.1")
    at = run_page(demo_url, "pages/queue_monitor.py")
    assert any("· operator" in c.value for c in at.sidebar.caption)


@pytest.mark.parametrize("claims", [
    {"email_verified": False},
    {"email_verified": None},
    {"email": None, "preferred_username": "ops@example.com", "sub": "ops@example.com"},
])
def test_oidc_needs_a_verified_email_and_never_falls_back(run_page, demo_url, claims):
    user = {**signed_in("ops@example.com"), **claims}
    user = {k: v for k, v in user.items() if v is not None}
    at = run_page(demo_url, "pages/system_alerts.py", env={"OPERATOR_EMAILS": "ops@example.com"}, user=user,
                  secrets=AUTH)
    assert "cannot tell who you are" in texts(at) or "has not verified" in texts(at)
    assert not [b for b in at.button if b.label.startswith("Resolve")]


def test_oidc_verified_claim_is_a_setting(run_page, demo_url):
    user = {**signed_in("ops@example.com"), "email_verified": None, "xms_edov": True}
    user = {k: v for k, v in user.items() if v is not None}
    at = run_page(demo_url, "pages/system_alerts.py",
                  env={"OPERATOR_EMAILS": "ops@example.com", "OIDC_EMAIL_VERIFIED_CLAIM": "xms_edov"},
                  user=user, secrets=AUTH)
    assert any("ops@example.com" in c.value and "operator" in c.value for c in at.sidebar.caption)


def test_partial_auth_table_fails_closed(run_page, demo_url):
    partial = {"auth": {k: v for k, v in AUTH["auth"].items() if k != "client_secret"}}
    at = run_page(demo_url, "pages/queue_monitor.py", user=signed_in("ops@example.com"), secrets=partial)
    assert "incomplete (missing: client_secret)" in texts(at)
    assert not at.dataframe  # not local mode, not header mode: nothing


def _open_alerts(url) -> int:
    eng = make_engine(url)
    with eng.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(system_alerts)
                         .where(system_alerts.c.resolved.is_(False))).scalar_one()
    eng.dispose()
    return n


def test_resolve_re_checks_the_sign_in_at_the_moment_of_writing(run_page, demo_url):
    """The confirmation was drawn for a valid operator; the token expires before "Yes" is clicked:
    the callback must not use the Actor of the last full run."""
    before = _open_alerts(demo_url)
    assert before > 0
    at = run_page(demo_url, "pages/system_alerts.py", env={"OPERATOR_EMAILS": "ops@example.com"},
                  user=signed_in("ops@example.com"), secrets=AUTH)
    at.button(key="alerts-resolve-all").click().run()
    yes = at.button(key="alerts-confirm-yes")
    at.user = {**signed_in("ops@example.com"), "exp": int(time.time() - 5)}  # expired meanwhile
    yes.click().run()
    assert _open_alerts(demo_url) == before


def test_database_down_page_drawn_before_sign_in_never_shows_the_password(run_page, monkeypatch):
    """The unavailable page comes before sign-in; a password with '#', '/' or '@'
    was shown whole by the old mask."""
    from tests.support.pg import free_port

    url = f"postgresql://u:Pa55#w0rd/Zq@127.0.0.1:{free_port()}/db"
    at = run_page(url, "pages/overview.py", user={"is_logged_in": False}, secrets=AUTH)
    shown = " ".join(e.value for e in at.error)
    assert "Database unavailable" in shown
    assert "Pa55" not in shown and "w0rd" not in shown and "Zq" not in shown
    assert "u:***@127.0.0.1" in shown
