"""The README's first command: scripts/demo seeds an empty database, serves the app with the
sandbox stack, and Ctrl-C (SIGINT to its process group) stops everything it started."""
import os
import signal
import subprocess
import time

import pytest
import requests
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.db import make_engine
from lib.heartbeats import agent_statuses
from lib.schema import instagram_business_accounts, worker_ticks
from lib.timeutil import utcnow
from tests.e2e.conftest import wait_idle
from tests.support.pg import free_port
from tests.support.servers import ROOT

pytestmark = pytest.mark.e2e


def _children(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split(None, 1)[0] == str(pgid)]


def test_demo_command_runs_and_ctrl_c_stops_everything(tmp_path, page):
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "PORT": str(port), "GRAPH_PORT": str(free_port()),
           "OVERSIGHT_PORT": str(free_port()), "NOTIFY_SINK_PORT": str(free_port())}
    log = open(tmp_path / "demo.log", "w+")
    proc = subprocess.Popen(["bash", "scripts/demo"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).text.strip() == "ok":
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            log.seek(0)
            pytest.fail("demo did not come up:\n" + log.read()[-3000:])
        page.goto(f"http://127.0.0.1:{port}/agent_status")
        wait_idle(page)
        expect(page.get_by_text("1 of 4 agents down: ugc-discovery")).to_be_visible()
        # the demo agent keeps the three others alive after the seeded history ends
        eng = make_engine(url)
        with eng.connect() as conn:
            alive = {s.agent_id for s in agent_statuses(conn, now=utcnow()) if s.alive}
        assert alive == {"engagement-monitor", "content-scheduler", "oversight-brain"}
        # the worker ticks against the sandbox Graph API, and the chat backend answers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with eng.connect() as conn:
                ticks = conn.execute(sa.select(sa.func.count()).select_from(worker_ticks)
                                     .where(worker_ticks.c.finished_at.is_not(None))).scalar()
                account = conn.execute(sa.select(instagram_business_accounts.c.id)).scalars().first()
            if ticks:
                break
            time.sleep(1)
        assert ticks >= 1
        eng.dispose()
        r = requests.post(f"http://127.0.0.1:{env['OVERSIGHT_PORT']}/api/instagram/oversight/chat",
                          json={"question": "how many items are in the dlq?", "stream": True, "chat_history": [],
                                "business_account_id": str(account), "user_id": "t"},
                          headers={"Accept": "text/event-stream", "X-User-ID": "t"}, timeout=30)
        assert r.status_code == 200 and "data:" in r.text
        # the worker routes alert notifications to the local sink (seeded open alerts are recent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = requests.get(f"http://127.0.0.1:{env['NOTIFY_SINK_PORT']}/messages", timeout=5).json()
            if got:
                break
            time.sleep(1)
        assert got and all(m["title"].startswith("[") for m in got)
        assert any(f"http://127.0.0.1:{port}/system_alerts?" in m["message"] for m in got)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("scripts/demo did not stop on Ctrl-C")
    time.sleep(1)
    assert _children(proc.pid) == []
