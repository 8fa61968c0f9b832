"""The agents' HTTP API on a free 127.0.0.1 port for tests: uvicorn in a thread of the test process
(real HTTP, real sockets), or `python -m worker.api` as a process."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import requests
import uvicorn

from lib.core.settings import Settings
from tests.support.pg import free_port
from tests.support.servers import ROOT

TOKENS = {"bot": "agent-token-0123456789", "view": "viewer-token-0123456789", "ops": "operator-token-0123456789"}
ROLE_OF = {"bot": "agent", "view": "viewer", "ops": "operator"}
API_TOKENS = ",".join(f"{name}:{ROLE_OF[name]}:{tok}" for name, tok in TOKENS.items())


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


class ApiThread:
    """worker.api's app served by uvicorn in a thread; .url, .app, .stop()."""

    def __init__(self, db_url: str, **overrides) -> None:
        from worker.api import create_app

        settings = replace(Settings(database_url=db_url, api_tokens=API_TOKENS), **overrides)
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, access_log=False, log_config=None,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_healthy(self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.api.engine.dispose()


class ApiProcess:
    """`python -m worker.api` with `env` on a free port; .url, .output(), .stop()."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "worker.api", "--port", str(self.port), *args], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_healthy(self.url, self.proc)
        except Exception:
            self.stop()
            raise

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=20)
        return out


def wait_healthy(url: str, proc=None, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker.api exited early:\n{proc.stdout.read()}")
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not healthy after {limit_s}s")
