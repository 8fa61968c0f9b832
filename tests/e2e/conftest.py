"""Browser tests: pytest-playwright driving Debian's chromium (no `playwright install` here)."""
import shutil

import pytest

from tests.support.servers import StreamlitServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
        ],
    }


@pytest.fixture
def start_app():
    """start_app(env) -> StreamlitServer; every server started is stopped after the test."""
    servers = []

    def start(env: dict[str, str]) -> StreamlitServer:
        server = StreamlitServer(env)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until the script run finished (Streamlit marks the app element)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
