"""Identity in a real browser: OIDC sign-in through a real local OpenID provider, and sign out."""
import re

import pytest
from oidc_provider_mock import User, run_server_in_thread
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from tests.e2e.conftest import wait_idle
from tests.support.pg import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider():
    users = [User(sub="ops-1", claims={"email": "ops@example.com", "email_verified": True, "name": "Ops", "groups": ["sre"]})]
    with run_server_in_thread(port=free_port(), user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


def test_oidc_sign_in_lands_with_role_and_signs_out(provider, start_app, page, tmp_path, sqlite_url):
    init_db(make_engine(sqlite_url))
    port = free_port()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        'cookie_secret = "test-cookie-secret-0123456789abcdef"\n'
        'client_id = "agent-dashboard"\n'
        'client_secret = "test-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )
    server = start_app({"DATABASE_URL": sqlite_url, "OPERATOR_GROUPS": "sre"},
                       args=("--secrets.files", str(secrets)), port=port)
    page.goto(server.url + "/agent_status")
    wait_idle(page)
    expect(page.get_by_text("Sign in to use the Agent Dashboard.")).to_be_visible()
    assert page.get_by_text("No heartbeats yet").count() == 0  # nothing shown before sign-in
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{provider}/**")
    page.locator("input[name='sub']").fill("ops-1")
    page.get_by_role("button", name="Authorize").click()
    # the provider redirects to /oauth2callback, which redirects to the app
    page.wait_for_url(re.compile(rf"http://127\.0\.0\.1:{port}/(\?.*)?$"))
    wait_idle(page)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Signed in as ops@example.com · operator")).to_be_visible()
    expect(page.get_by_text("No heartbeats yet")).to_be_visible()
    sidebar.get_by_role("button", name="Sign out").click()
    # RP-initiated logout: the provider ends its session too, then sends the browser back
    page.wait_for_url(f"{provider}/oauth2/end_session**")
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(re.compile(rf"http://127\.0\.0\.1:{port}/(\?.*)?$"))
    wait_idle(page)
    expect(page.get_by_text("Sign in to use the Agent Dashboard.")).to_be_visible()
