"""The README's first command: scripts/demo seeds an empty database, serves the app with the
sandbox stack, and Ctrl-C (SIGINT to its process group) stops everything it started."""
import os
import re
import signal
import subprocess
import time

import pytest
import requests
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.activity.heartbeats import agent_statuses
from lib.activity.sse import ChatStream, build_chat_request, open_chat
from lib.core.db import make_engine
from lib.core.schema import post_queue, worker_ticks
from lib.core.timeutil import utcnow
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
           "OVERSIGHT_PORT": str(free_port()), "NOTIFY_SINK_PORT": str(free_port()), "API_PORT": str(free_port())}
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
        # ... through the agents' API, with the demo agent's own token; the operator token it printed works
        api = f"http://127.0.0.1:{env['API_PORT']}"
        deadline = time.monotonic() + 60
        while 'caller="demo-agent",method="POST",route="/agent/heartbeat",status="200"' not in \
                requests.get(api + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "no heartbeat of the demo agent through the API"
            time.sleep(1)
        log.seek(0)
        operator_token = re.search(r"demo-operator \(operator\): (\S+)", log.read()).group(1)
        status = requests.get(api + "/post-queue/status", headers={"Authorization": f"Bearer {operator_token}"},
                              timeout=10)
        assert status.status_code == 200 and status.json()["total"] > 0
        # the worker ticks against the sandbox Graph API, and the chat backend answers
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with eng.connect() as conn:
                ticks = conn.execute(sa.select(sa.func.count()).select_from(worker_ticks)
                                     .where(worker_ticks.c.finished_at.is_not(None))).scalar()
            if ticks:
                break
            time.sleep(1)
        assert ticks >= 1
        def dlq_of(account):  # plain SQL, not the backend's tool
            with eng.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(post_queue).where(
                    post_queue.c.status == "dlq", post_queue.c.business_account_id == account)).scalar()

        with eng.connect() as conn:  # the account with the most dead-lettered rows
            n = sa.func.count().label("n")
            account = conn.execute(sa.select(post_queue.c.business_account_id).where(post_queue.c.status == "dlq")
                                   .group_by(post_queue.c.business_account_id).order_by(n.desc()).limit(1)).scalar()
        dlq_before = dlq_of(account)
        assert dlq_before > 0
        req = build_chat_request(f"http://127.0.0.1:{env['OVERSIGHT_PORT']}", "/api/instagram/oversight/chat",
                                 user_id="t", business_account_id=str(account),
                                 question="how many items are in the dlq?", chat_history=[])
        stream = ChatStream.from_response(open_chat(req, connect_timeout_s=5, read_timeout_s=30), max_duration_s=60)
        stream.drain()
        # an answer that ended with its done event, not an error event or a dropped stream
        assert (stream.outcome, stream.error) == ("done", None), (stream.outcome, stream.error, stream.text)
        assert stream.tools_used == ["get_dlq_summary"]
        # the true count for this account (the demo worker only ever adds to the DLQ meanwhile)
        said = re.match(r"There are (\d+) items in the DLQ", stream.text)
        assert said, stream.text
        assert dlq_before <= int(said.group(1)) <= dlq_of(account), (dlq_before, stream.text)
        eng.dispose()
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
