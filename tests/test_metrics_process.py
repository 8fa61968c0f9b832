"""A real `python -m worker --metrics-port N` against the sandbox Graph API, scraped over HTTP and parsed
with prometheus_client's parser: gauges equal the database (SQLite and PostgreSQL), counters equal
what the worker did, /healthz turns 503 when the loop stops or is stuck, /readyz follows the
database; LOG_FORMAT=json writes one JSON object per line and never a token."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from lib.activity.heartbeats import record_beat
from lib.alerts.store import open_or_update_alert
from lib.core.schema import ACTION_TYPES, agent_heartbeats, system_alerts
from lib.core.schema import post_queue as pq
from lib.core.timeutil import utcnow
from lib.queue.reads import queue_health
from lib.queue.rules import STATUSES
from tests.support.pg import free_port
from tests.support.servers import ROOT
from tests.support.worker import add_account, add_row, sandbox, worker_command, worker_env  # noqa: F401

pytestmark = pytest.mark.slow

TOKEN = "EAA" + "Z" * 40  # looks like a Graph token: it must never show up in a label or a log line
TEMPLATES = {"/{ig-comment-id}/replies", "/me/messages", "/{ig-user-id}/messages", "/{conversation-id}",
             "/{ig-user-id}/media", "/{ig-container-id}", "/{ig-user-id}/media_publish",
             "/{ig-user-id}/content_publishing_limit"}


class Worker:
    def __init__(self, url, sandbox, tmp_path, *args, **env):
        self.port = free_port()
        self.log_path = tmp_path / f"worker-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(worker_command(*args), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=worker_env(url, sandbox, METRICS_PORT=self.port, **env))
        wait_for(lambda: self.get("/metrics"), what="the metrics server", proc=self.proc, log=self.log_path)

    def get(self, path):
        try:
            return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)
        except requests.ConnectionError:
            return None

    def scrape(self) -> dict[str, list]:
        resp = self.get("/metrics")
        assert resp is not None and resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}

    def output(self):
        self.log.flush()
        return self.log_path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def start_worker(sandbox, tmp_path):
    started = []

    def start(url, *args, **env):
        w = Worker(url, sandbox, tmp_path, *args, **env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def wait_for(fn, *, what, limit_s=60, proc=None, log=None):
    deadline = time.monotonic() + limit_s
    while True:
        value = fn()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited while waiting for {what}:\n{log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def health_is(w, code):
    """[response] when /healthz answers `code` (a 503 Response is falsy itself)."""
    r = w.get("/healthz")
    return [r] if r is not None and r.status_code == code else None


def value(samples, name=None, **labels):
    return sum(s.value for s in samples if (name is None or s.name == name)
               and all(s.labels.get(k) == v for k, v in labels.items()))


def seed(engine, sandbox):
    now = utcnow()
    with engine.begin() as conn:
        acc = add_account(conn, username="acme", token=TOKEN, sandbox=sandbox)
        ids = [add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": f"hello {i}"}) for i in range(3)]
        ids.append(add_row(conn, acc, "reply_comment", {"comment_id": "c9", "reply_text": "no #fail:permanent"}))
        ids.append(add_row(conn, acc, "reply_comment", {"comment_id": "c8", "reply_text": "later #fail:5xx"}))
        open_or_update_alert(conn, alert_type="auth_failure", business_account_id=acc, message="m", now=now)
        for agent, age in (("agent-1", 1), ("agent-2", 120)):
            record_beat(conn, agent, now=now - timedelta(seconds=age))
    return ids


def test_metrics_of_a_running_worker_equal_the_database_and_what_it_did(engine, db_url, sandbox, start_worker):
    ids = seed(engine, sandbox)
    w = start_worker(db_url, "--interval-seconds", "1", "--no-watchdog")
    got = wait_for(lambda: (m := w.scrape()) and value(m["agent_dashboard_actions"]) >= 5
                   and value(m["agent_dashboard_worker_ticks"], "agent_dashboard_worker_ticks_total") >= 2 and m,
                   what="5 executed rows and the tick after them", proc=w.proc, log=w.log_path)

    # counters: what the worker did, row by row
    with engine.connect() as conn:
        outcomes = conn.execute(sa.select(pq.c.action_type, pq.c.status, pq.c.error_category)).all()
    actions = {(s.labels["action_type"], s.labels["outcome"], s.labels["error_category"]): s.value
               for s in got["agent_dashboard_actions"] if s.name == "agent_dashboard_actions_total"}
    assert actions == {("send_dm", "sent", "none"): 3, ("reply_comment", "dlq", "permanent"): 1,
                       ("reply_comment", "failed", "transient"): 1}
    assert sorted((a, s, c or "none") for a, s, c in outcomes) == sorted(
        k for k, n in actions.items() for _ in range(int(n)))
    ticks = got["agent_dashboard_worker_ticks"]
    assert value(ticks, "agent_dashboard_worker_ticks_total", outcome="ok") >= 1
    assert value(ticks, "agent_dashboard_worker_ticks_total", outcome="failed") == 0
    graph = got["agent_dashboard_graph_request_duration_seconds"]
    counts = [s for s in graph if s.name.endswith("_count")]
    assert {s.labels["endpoint"] for s in counts} <= TEMPLATES
    assert {s.labels["status"] for s in counts} >= {"200", "400", "500"}
    assert value(counts) == sandbox.stats()["requests"]
    notifications = got["agent_dashboard_notifications"]
    assert value(notifications, "agent_dashboard_notifications_total") == 0

    # gauges: equal to the database once the worker is idle (the gauges are cached for 10 s)
    def gauges_match():
        m = w.scrape()
        now = utcnow()
        with engine.connect() as conn:
            cells = {(s, a): n for s, a, n in conn.execute(
                sa.select(pq.c.status, pq.c.action_type, sa.func.count()).group_by(pq.c.status, pq.c.action_type))}
            health = queue_health(conn, now=now)
            open_alerts = conn.execute(sa.select(system_alerts.c.alert_type, sa.func.count())
                                       .where(system_alerts.c.resolved.is_(False))
                                       .group_by(system_alerts.c.alert_type)).all()
            beats = dict(conn.execute(sa.select(agent_heartbeats.c.agent_id, sa.func.max(agent_heartbeats.c.last_beat_at))
                                      .group_by(agent_heartbeats.c.agent_id)).all())
        want = {(s, a): 0 for s in STATUSES for a in ACTION_TYPES}
        want.update(cells)
        rows = {(s.labels["status"], s.labels["action_type"]): s.value for s in m["agent_dashboard_queue_rows"]}
        alerts = {s.labels["alert_type"]: s.value for s in m["agent_dashboard_alerts_open"] if s.value}
        ages = {s.labels["agent_id"]: s.value for s in m["agent_dashboard_agent_heartbeat_age_seconds"]}
        beat_ages = {a: (now - (t if t.tzinfo else t.replace(tzinfo=now.tzinfo))).total_seconds()
                     for a, t in beats.items()}
        return (rows == want
                and value(m["agent_dashboard_queue_due_rows"]) == health["due_now"]
                and value(m["agent_dashboard_queue_oldest_pending_seconds"]) == (health["oldest_pending_age_s"] or 0)
                and alerts == dict(open_alerts)
                and ages.keys() == beat_ages.keys()
                and all(0 <= beat_ages[a] - ages[a] <= 11 for a in ages)  # computed at a scrape <= 10 s ago
                and {s.labels["account"] for s in m["agent_dashboard_graph_usage_ratio"]} <= {"acme", "(app)"}
                and m)

    got = wait_for(gauges_match, what="gauges equal to the database", proc=w.proc, log=w.log_path)
    assert value(got["agent_dashboard_queue_rows"], status="sent") == 3

    labels = {v for samples in got.values() for s in samples for v in s.labels.values()}
    forbidden = [TOKEN, *map(str, ids), *(i.hex for i in ids)]
    assert not [v for v in labels if any(f in v for f in forbidden)]
    assert TOKEN not in w.output()

    assert w.get("/readyz").status_code == 200
    health = w.get("/healthz")
    assert health.status_code == 200 and health.json()["running"] is True


def test_healthz_turns_503_when_a_tick_is_stuck_and_when_the_loop_stops(engine, db_url, sandbox, start_worker):
    with engine.begin() as conn:
        acc = add_account(conn, username="acme", token=TOKEN, sandbox=sandbox)
    w = start_worker(db_url, "--interval-seconds", "1", "--no-watchdog", GRAPH_READ_TIMEOUT_S="30")
    assert w.get("/healthz").status_code == 200  # from start, before the first tick
    with engine.begin() as conn:  # a Graph call that takes 8 s holds the loop inside one tick
        add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "slow #fail:slow=8"})
    [stuck] = wait_for(lambda: health_is(w, 503), what="/healthz 503 while the tick is stuck", proc=w.proc,
                       log=w.log_path)
    assert "overdue" in stuck.json()["reason"]
    wait_for(lambda: health_is(w, 200), what="/healthz 200 once ticks run again", proc=w.proc, log=w.log_path)

    before = sandbox.stats()["requests"]
    with engine.begin() as conn:  # 15 s in hand: a wide window in which the stopping worker still answers
        add_row(conn, acc, "send_dm", {"recipient_id": "1", "message_text": "slow again #fail:slow=15"})
    wait_for(lambda: sandbox.stats()["requests"] > before, what="the second slow call", proc=w.proc, log=w.log_path)
    w.proc.send_signal(signal.SIGTERM)  # the loop stops: the row in hand finishes, the server still answers
    [stopping] = wait_for(lambda: (r := health_is(w, 503)) and r[0].json()["running"] is False and r,
                          what="/healthz 503 (not running) after SIGTERM", limit_s=12)
    assert stopping.json()["reason"] == "the worker loop is not running"
    assert w.proc.wait(30) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(pq.c.status == "sent")).scalar() == 2


def _blocked_signals(pid, tid) -> int:
    status = open(f"/proc/{pid}/task/{tid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)


def test_stop_signals_reach_the_main_thread_not_a_helper_thread(engine, db_url, sandbox, start_worker):
    # Taken by the metrics, watchdog or notify thread, a SIGTERM waited for the main thread's Graph call
    # to return before the loop saw it (the healthz test above then missed "not running" now and then).
    w = start_worker(db_url, "--interval-seconds", "1")
    pid, stop_bits = w.proc.pid, (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
    tids = wait_for(lambda: (t := [int(x) for x in os.listdir(f"/proc/{pid}/task")]) and len(t) >= 4
                    and t, what="the metrics, watchdog and notify threads", proc=w.proc, log=w.log_path)
    assert _blocked_signals(pid, pid) & stop_bits == 0
    helpers = [t for t in tids if t != pid]
    assert helpers and all(_blocked_signals(pid, t) & stop_bits == stop_bits for t in helpers)


def test_readyz_follows_the_database_and_metrics_still_serve_counters(sandbox, start_worker):
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/gone"
    w = start_worker(url, "--interval-seconds", "0.5", "--no-watchdog")
    ready = w.get("/readyz")
    assert ready.status_code == 503 and "database unavailable" in ready.json()["detail"]
    assert "secret" not in ready.text
    got = wait_for(lambda: (m := w.scrape()) and value(m["agent_dashboard_worker_ticks"],
                                                       "agent_dashboard_worker_ticks_total", outcome="failed") >= 1 and m,
                   what="a failed tick counted", proc=w.proc, log=w.log_path)
    assert "agent_dashboard_queue_rows" not in got  # no database, no database gauges
    assert w.get("/healthz").status_code == 200  # the loop runs (and reports the database in each tick)


def test_log_format_json_is_one_object_per_line_with_row_fields_and_no_token(engine, db_url, sandbox):
    ids = seed(engine, sandbox)
    proc = subprocess.run(worker_command("--once", "--until-empty", "--no-watchdog"), cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=worker_env(db_url, sandbox, LOG_FORMAT="json"))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    rows = [line for line in lines if "row_id" in line]
    assert {line["row_id"] for line in rows} == {str(i) for i in ids}
    assert {(line["action_type"], line["outcome"]) for line in rows} == {
        ("send_dm", "sent"), ("reply_comment", "dlq"), ("reply_comment", "failed")}
    ticks = [line for line in lines if line["message"].startswith("tick ")]
    assert ticks and all(line["outcome"] == "ok" and isinstance(line["duration"], float) for line in ticks)
    assert TOKEN not in proc.stderr and TOKEN not in proc.stdout
