"""DNS rebinding: a page on a foreign host name that resolves to 127.0.0.1 must not reach the app.
`server.allowedHosts` (.streamlit/config.toml) makes Streamlit refuse the WebSocket of any other
Host, in every identity mode; the browser test maps rebind.example to 127.0.0.1 the way a
rebinding DNS answer would."""
from __future__ import annotations

import base64
import os
import socket

import pytest
from playwright.sync_api import expect

from tests.conftest import CHROMIUM
from tests.e2e.conftest import wait_idle

pytestmark = pytest.mark.e2e


def ws_upgrade_status(port: int, host: str) -> int:
    """The HTTP status of a WebSocket upgrade of /_stcore/stream sent with this Host header."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Origin: http://{host}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        head = s.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])


@pytest.mark.parametrize("mode", ["local", "header", "oidc"])
def test_a_websocket_with_a_foreign_host_is_refused_in_every_mode(start_app, demo_url, mode, tmp_path):
    env, args = {"DATABASE_URL": demo_url}, ()
    if mode == "header":
        env.update({"TRUSTED_USER_HEADER": "X-Forwarded-Email", "OPERATOR_EMAILS": "ops@example.com"})
    if mode == "oidc":  # a complete [auth] table (its provider is never asked: no one signs in here)
        secrets = tmp_path / "secrets.toml"
        secrets.write_text('[auth]\nredirect_uri = "http://127.0.0.1:1/oauth2callback"\n'
                           'cookie_secret = "test-cookie-secret-0123456789abcdef"\nclient_id = "c"\n'
                           'client_secret = "s"\nserver_metadata_url = "http://127.0.0.1:1/.well-known/openid-configuration"\n')
        args = ("--secrets.files", str(secrets))
    server = start_app(env, args=args)
    assert ws_upgrade_status(server.port, f"rebind.example:{server.port}") != 101
    assert ws_upgrade_status(server.port, f"127.0.0.1:{server.port}") == 101
    assert ws_upgrade_status(server.port, f"localhost:{server.port}") == 101


def test_a_rebinding_page_gets_no_operator_session(playwright, start_app, demo_url):
    server = start_app({"DATABASE_URL": demo_url})
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--host-resolver-rules=MAP rebind.example 127.0.0.1"])
    try:
        page = browser.new_page()
        page.goto(f"http://rebind.example:{server.port}/queue_monitor")
        page.wait_for_timeout(5_000)  # what the page could do in 5 s: open its WebSocket and run
        assert page.get_by_text("Signed in as").count() == 0
        assert page.get_by_role("button", name="Pause for every account").count() == 0
        assert page.get_by_test_id("stSidebar").count() == 0

        page.goto(server.url + "/queue_monitor")  # the same browser on the app's own address
        wait_idle(page)
        expect(page.get_by_test_id("stSidebar").get_by_text("local", exact=True)).to_be_visible()
    finally:
        browser.close()


def test_the_public_host_behind_a_proxy_is_listed_by_the_environment(start_app, demo_url):
    """What docs/configuration.md tells a deployment behind a proxy or with OIDC to set."""
    server = start_app({"DATABASE_URL": demo_url,
                        "STREAMLIT_SERVER_ALLOWED_HOSTS": "localhost 127.0.0.1 ::1 dashboard.example.com"})
    assert ws_upgrade_status(server.port, "dashboard.example.com") == 101
    assert ws_upgrade_status(server.port, f"127.0.0.1:{server.port}") == 101
    assert ws_upgrade_status(server.port, f"rebind.example:{server.port}") != 101
