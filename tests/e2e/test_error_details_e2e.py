"""An uncaught exception never shows its traceback, file paths or message to users: the project's
.streamlit/config.toml sets client.showErrorDetails to "none". The server runs a two-line script
that raises, from the project's folder (so it reads the project's config), in a real browser."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.conftest import wait_idle
from tests.support.servers import ROOT, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def raising_app(tmp_path):
    script = tmp_path / "raises.py"
    script.write_text("import streamlit as st\nst.write('before the error')\n"
                      "raise RuntimeError('database password is hunter2 in /srv/secret/config.py')\n")
    port = free_port()
    log = open(tmp_path / "streamlit.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).text.strip() == "ok":
                    break
            except requests.RequestException:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", tmp_path / "streamlit.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_an_uncaught_exception_shows_no_traceback_path_or_message(raising_app, page):
    url, _ = raising_app
    page.goto(url)
    wait_idle(page)
    page.get_by_text("before the error").wait_for()
    body = page.locator("body").inner_text()
    assert "hunter2" not in body and "/srv/secret" not in body
    assert "Traceback" not in body and "raises.py" not in body and str(ROOT) not in body
    assert "RuntimeError" not in body
