"""The agents' HTTP API over real HTTP (uvicorn on 127.0.0.1) on SQLite, PostgreSQL and the user's schema:
every route, every role, every refusal."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests
import sqlalchemy as sa

from lib.activity.heartbeats import agent_statuses
from lib.core.db import init_db, make_engine
from lib.core.schema import agent_heartbeats, audit_log, post_queue
from lib.core.timeutil import utcnow
from lib.queue.reads import status_summary
from lib.queue.rules import idempotency_key
from lib.queue.store import enqueue
from tests.support.api import TOKENS, ApiProcess, ApiThread, auth
from tests.support.queue_rows import add_account, insert_rows, queue_row
from tests.support.servers import ROOT

# the body of one valid call per action route
ACTIONS = {
    "/reply-comment": ("reply_comment", {"comment_id": "17900001", "reply_text": "Thanks!", "post_id": "18000001"}),
    "/reply-dm": ("reply_dm", {"conversation_id": "aWdfZAG06abc", "message_text": "On its way"}),
    "/send-dm": ("send_dm", {"recipient_id": "9123", "message_text": "Hello"}),
    "/publish-post": ("publish_post", {"image_url": "https://cdn.example.com/a.jpg", "caption": "New #drop",
                                       "media_type": "IMAGE", "scheduled_post_id": "sp-1"}),
    "/repost-ugc": ("repost_ugc", {"permission_id": "perm-1", "image_url": "https://cdn.example.com/u.jpg"}),
}
# route -> (method, the roles that may call it)
ROUTES = {
    "/agent/heartbeat": ("POST", {"agent", "operator"}),
    "/post-queue/status": ("GET", {"viewer", "operator"}),
    "/post-queue/dlq": ("GET", {"viewer", "operator"}),
    "/post-queue/retry": ("POST", {"operator"}),
    **{path: ("POST", {"agent", "operator"}) for path in ACTIONS},
}
CALLER_OF_ROLE = {"agent": "bot", "viewer": "view", "operator": "ops"}


@pytest.fixture
def setup(db_url):
    """(api, engine, account id): an initialised database with one account, the API serving it."""
    eng = make_engine(db_url)
    init_db(eng)
    with eng.begin() as conn:
        acc = add_account(conn, "acme", utcnow())
    api = ApiThread(db_url)
    yield api, eng, acc
    api.stop()
    eng.dispose()


def _refusal(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text
    return body


def test_every_route_refuses_missing_unknown_tokens_and_roles_too_low(setup):
    api, eng, acc = setup
    for path, (method, allowed) in ROUTES.items():
        for headers in ({}, {"Authorization": "Bearer not-a-token-of-anyone"}, {"Authorization": TOKENS["ops"]},
                        {"Authorization": f"Basic {TOKENS['ops']}"}):
            body = _refusal(requests.request(method, api.url + path, headers=headers, json={}), 401)
            assert TOKENS["ops"] not in json.dumps(body)
        for role, caller in CALLER_OF_ROLE.items():
            r = requests.request(method, api.url + path, headers=auth(caller), json={})
            if role in allowed:
                assert r.status_code not in (401, 403), (path, role, r.text)
            else:
                assert role in _refusal(r, 403)["error"], (path, role)
    with eng.connect() as conn:  # nothing refused was written
        assert conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(agent_heartbeats)).scalar() == 0


def test_healthz_openapi_and_metrics_need_no_token(setup):
    api, _, _ = setup
    assert requests.get(api.url + "/healthz").json() == {"success": True, "status": "ok"}
    doc = requests.get(api.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.") and set(ROUTES) | {"/healthz"} <= set(doc["paths"])
    requests.get(api.url + "/post-queue/status", headers=auth("view"))
    metrics = requests.get(api.url + "/metrics").text
    assert 'agent_dashboard_api_requests_total{caller="view",method="GET",route="/post-queue/status",status="200"} 1.0' \
        in metrics
    _refusal(requests.get(api.url + "/no-such-route"), 404)
    _refusal(requests.get(api.url + "/agent/heartbeat", headers=auth("bot")), 405)


def test_heartbeat_is_recorded_as_the_agent_status_page_reads_it(setup):
    api, eng, _ = setup
    r = requests.post(api.url + "/agent/heartbeat", headers=auth("bot"),
                      json={"agent_id": "engagement-agent", "timestamp": "2026-12-06T10:00:00Z"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["agent_id"] == "engagement-agent" and body["received_at"].endswith("Z")
    with eng.connect() as conn:
        [status] = agent_statuses(conn, now=utcnow())
        row = conn.execute(sa.select(agent_heartbeats)).one()
    assert status.agent_id == "engagement-agent" and status.alive
    assert row.status == "alive" and row.last_beat_at is not None
    # a second beat is a second row (one row per beat, as the backend writes them)
    assert requests.post(api.url + "/agent/heartbeat", headers=auth("ops"), json={"agent_id": "engagement-agent"}).ok
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(agent_heartbeats)).scalar() == 2
    for body, field in (({}, "agent_id"), ({"agent_id": ""}, "agent_id"), ({"agent_id": 7}, "agent_id"),
                        ({"agent_id": "x" * 201}, "agent_id"), ({"agent_id": "a", "timestamp": "yesterday"}, "timestamp")):
        assert _refusal(requests.post(api.url + "/agent/heartbeat", headers=auth("bot"), json=body), 400)["field"] == field
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        _refusal(requests.post(api.url + "/agent/heartbeat", headers=auth("bot"), data=raw), 400)


def test_each_action_route_enqueues_one_pending_row_and_a_repeat_is_a_duplicate(setup):
    api, eng, acc = setup
    ids = {}
    for path, (action_type, payload) in ACTIONS.items():
        r = requests.post(api.url + path, headers=auth("bot"), json={"business_account_id": str(acc), **payload})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body == {"success": True, "queue_id": body["queue_id"], "status": "pending", "duplicate": False}
        ids[path] = uuid.UUID(body["queue_id"])
        with eng.connect() as conn:
            row = conn.execute(sa.select(post_queue).where(post_queue.c.id == ids[path])).one()
        assert (row.action_type, row.status, row.retry_count, row.payload) == (action_type, "pending", 0, payload)
        assert row.idempotency_key == idempotency_key(acc, action_type, payload)  # the project's one key
        again = requests.post(api.url + path, headers=auth("ops"), json={**payload, "business_account_id": str(acc)})
        assert again.status_code == 200, again.text
        assert again.json() == {"success": True, "queue_id": str(ids[path]), "status": "pending", "duplicate": True}
    with eng.begin() as conn:  # a script enqueueing the same action through lib.queue.store adds nothing either
        action_type, payload = ACTIONS["/send-dm"]
        assert enqueue(conn, business_account_id=acc, action_type=action_type, payload=payload, now=utcnow()) is None
        assert conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar() == len(ACTIONS)
    # a row enqueued elsewhere first: the API answers with its id and its current status
    with eng.begin() as conn:
        payload = {"recipient_id": "42", "message_text": "from a script"}
        rid = enqueue(conn, business_account_id=acc, action_type="send_dm", payload=payload, now=utcnow())
        conn.execute(sa.update(post_queue).where(post_queue.c.id == rid).values(status="sent"))
    r = requests.post(api.url + "/send-dm", headers=auth("bot"), json={"business_account_id": str(acc), **payload})
    assert r.status_code == 200 and r.json() == {"success": True, "queue_id": str(rid), "status": "sent",
                                                 "duplicate": True}


def test_invalid_action_bodies_answer_400_naming_the_field_and_store_nothing(setup):
    api, eng, acc = setup
    a = str(acc)
    cases = [
        ("/reply-comment", {"comment_id": "1", "reply_text": "x"}, "business_account_id"),
        ("/reply-comment", {"business_account_id": "not-a-uuid", "comment_id": "1", "reply_text": "x"},
         "business_account_id"),
        ("/reply-comment", {"business_account_id": str(uuid.uuid4()), "comment_id": "1", "reply_text": "x"},
         "business_account_id"),
        ("/reply-comment", {"business_account_id": a, "comment_id": "1", "reply_txt": "x"}, "reply_txt"),
        ("/reply-comment", {"business_account_id": a, "comment_id": "1"}, "reply_text"),
        ("/reply-comment", {"business_account_id": a, "comment_id": 1, "reply_text": "x"}, "comment_id"),
        ("/send-dm", {"business_account_id": a, "recipient_id": "9", "message_text": "é" * 501}, "message_text"),
        ("/reply-dm", {"business_account_id": a, "message_text": "hi"}, "conversation_id"),
        ("/publish-post", {"business_account_id": a, "image_url": "https://x/a.jpg", "caption": "c" * 2201}, "caption"),
        ("/publish-post", {"business_account_id": a, "image_url": "ftp://x/a.jpg"}, "image_url"),
        ("/publish-post", {"business_account_id": a, "media_type": "CAROUSEL", "children": [{"image_url": "https://x/1"}]},
         "children"),
        ("/publish-post", {"business_account_id": a, "children": "no"}, "children"),
        ("/repost-ugc", {"business_account_id": a, "permission_id": "p"}, "creation_id"),
        ("/send-dm", {"business_account_id": a, "recipient_id": "9", "message_text": "x", "reply_text": "y"},
         "reply_text"),
    ]
    for path, body, field in cases:
        r = requests.post(api.url + path, headers=auth("bot"), json=body)
        assert _refusal(r, 400).get("field") == field, (path, body, r.text)
    _refusal(requests.post(api.url + "/send-dm", headers=auth("bot"), data=b'{"business_account_id": '), 400)
    _refusal(requests.post(api.url + "/send-dm", headers=auth("bot"), data=b'"a string"'), 400)
    big = {"business_account_id": a, "recipient_id": "9", "message_text": "x" * 70_000}
    assert "larger than" in _refusal(requests.post(api.url + "/send-dm", headers=auth("bot"), json=big), 413)["error"]

    def chunks():  # no Content-Length: the cap is counted as the body arrives
        yield b'{"message_text": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    _refusal(requests.post(api.url + "/send-dm", headers=auth("bot"), data=chunks()), 413)
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar() == 0


def test_status_and_dlq_answer_in_the_spec_shapes(setup):
    api, eng, acc = setup
    now = utcnow()
    with eng.begin() as conn:
        other = add_account(conn, "other", now)
        rows = [queue_row(account=acc, now=now, status="dlq", payload={"comment_id": "c", "reply_text": "t",
                                                                        "access_token": "EAAsecret"}),
                queue_row(account=acc, now=now, status="pending", action_type="send_dm"),
                queue_row(account=other, now=now, status="dlq", action_type="send_dm", error_category="permanent")]
        dlq_a, _, dlq_b = insert_rows(conn, rows)
        expected = status_summary(conn, now=now)
    r = requests.get(api.url + "/post-queue/status", headers=auth("view"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["summary"] == expected["summary"] == {
        "reply_comment::dlq": 1, "send_dm::dlq": 1, "send_dm::pending": 1}
    assert body["total"] == 3 and body["timestamp"].endswith("Z")
    mine = requests.get(api.url + "/post-queue/status", params={"business_account_id": str(other)},
                        headers=auth("ops")).json()
    assert mine["summary"] == {"send_dm::dlq": 1} and mine["total"] == 1
    r = requests.get(api.url + "/post-queue/dlq", params={"limit": 50}, headers=auth("view"))
    body = r.json()
    assert body["success"] is True and body["count"] == 2 and {d["id"] for d in body["dlq"]} == {str(dlq_a), str(dlq_b)}
    item = next(d for d in body["dlq"] if d["id"] == str(dlq_a))
    assert item["error_category"] == "auth_failure" and item["retry_count"] == 5
    assert "EAAsecret" not in r.text  # payload redacted
    assert requests.get(api.url + "/post-queue/dlq?limit=1", headers=auth("view")).json()["count"] == 1
    only = requests.get(api.url + "/post-queue/dlq?error_category=permanent", headers=auth("view")).json()
    assert [d["id"] for d in only["dlq"]] == [str(dlq_b)]
    for query, field in (("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"),
                         ("action_type=like", "action_type"), ("error_category=x", "error_category"),
                         ("business_account_id=zz", "business_account_id")):
        assert _refusal(requests.get(f"{api.url}/post-queue/dlq?{query}", headers=auth("view")), 400)["field"] == field
    assert _refusal(requests.get(api.url + "/post-queue/status?business_account_id=1", headers=auth("view")),
                    400)["field"] == "business_account_id"


def test_retry_is_the_pages_conditional_reset_audited_as_the_caller(setup):
    api, eng, acc = setup
    now = utcnow()
    with eng.begin() as conn:
        dlq_id, sent_id = insert_rows(conn, [queue_row(account=acc, now=now, status="dlq"),
                                             queue_row(account=acc, now=now, status="sent")])
    r = requests.post(api.url + "/post-queue/retry", headers=auth("ops"), json={"queue_id": str(dlq_id)})
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "queue_id": str(dlq_id), "action_type": "reply_comment",
                        "previous_retry_count": 5, "message": r.json()["message"]}
    with eng.connect() as conn:
        row = conn.execute(sa.select(post_queue).where(post_queue.c.id == dlq_id)).one()
        audits = conn.execute(sa.select(audit_log.c.user_id, audit_log.c.event_type, audit_log.c.resource_id)).all()
    assert (row.status, row.retry_count, row.next_retry_at) == ("pending", 0, None)
    assert [tuple(a) for a in audits] == [("api:ops", "queue_item_retried", str(dlq_id))]
    again = requests.post(api.url + "/post-queue/retry", headers=auth("ops"), json={"queue_id": str(dlq_id)})
    assert again.status_code == 409 and again.json()["success"] is False and "pending" in again.json()["error"].lower()
    assert requests.post(api.url + "/post-queue/retry", headers=auth("ops"),
                         json={"queue_id": str(sent_id)}).status_code == 409
    missing = requests.post(api.url + "/post-queue/retry", headers=auth("ops"), json={"queue_id": str(uuid.uuid4())})
    assert missing.status_code == 404 and missing.json()["success"] is False
    for body in ({}, {"queue_id": "nope"}):
        assert _refusal(requests.post(api.url + "/post-queue/retry", headers=auth("ops"), json=body), 400)["field"] == \
            "queue_id"
    with eng.connect() as conn:  # only the one reset was audited
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 1


def test_a_caller_over_its_rate_gets_429_with_retry_after_and_others_are_not_slowed(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    api = ApiThread(sqlite_url, api_rate_limit_per_min=3)
    try:
        codes = [requests.get(api.url + "/post-queue/status", headers=auth("view")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = requests.get(api.url + "/post-queue/status", headers=auth("view"))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and r.json()["success"] is False
        assert requests.get(api.url + "/post-queue/status", headers=auth("ops")).status_code == 200
        # guesses are limited per address
        guesses = [requests.get(api.url + "/post-queue/status", headers={"Authorization": f"Bearer guess{i}"})
                   .status_code for i in range(4)]
        assert guesses == [401, 401, 401, 429]
    finally:
        api.stop()
        eng.dispose()


def test_the_process_logs_each_request_as_json_with_the_caller_and_never_the_token(sqlite_url, tmp_path):
    hashed = hashlib.sha256(b"hashed-operator-token-42").hexdigest()
    env = {"DATABASE_URL": sqlite_url, "LOG_FORMAT": "json",
           "API_TOKENS": f"bot:agent:{TOKENS['bot']}  root:operator:sha256:{hashed}"}
    proc = ApiProcess(env)
    try:
        assert requests.post(proc.url + "/agent/heartbeat", headers=auth("bot"), json={"agent_id": "a1"}).ok
        assert requests.get(proc.url + "/post-queue/status",
                            headers={"Authorization": "Bearer hashed-operator-token-42"}).ok
        assert requests.get(proc.url + "/post-queue/status", headers=auth("view")).status_code == 401
    finally:
        out = proc.stop()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    requests_logged = [(x["method"], x["path"], x["caller"], x["status"]) for x in lines if "status" in x]
    assert requests_logged == [("GET", "/healthz", "-", 200), ("POST", "/agent/heartbeat", "bot", 200),
                               ("GET", "/post-queue/status", "root", 200), ("GET", "/post-queue/status", "-", 401)]
    assert all(isinstance(x["duration"], float) for x in lines if "status" in x)
    assert TOKENS["bot"] not in out and TOKENS["view"] not in out and "hashed-operator-token-42" not in out


def test_bad_api_tokens_stop_the_process_with_a_message_that_names_the_entry_not_its_token(sqlite_url):
    secret = "short"
    r = subprocess.run([sys.executable, "-m", "worker.api", "--port", "1"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": sqlite_url,
                            "API_TOKENS": f"bot:agent:{TOKENS['bot']},weak:agent:{secret}"}, timeout=60)
    assert r.returncode == 2
    assert "API_TOKENS entry 2 (weak)" in r.stderr and "at least 16" in r.stderr
    assert TOKENS["bot"] not in r.stderr and f":{secret}" not in r.stderr


def test_a_lost_database_answers_503_with_retry_after_and_the_api_recovers_when_it_returns(own_pg):
    url = own_pg.create_database("api_outage")
    eng = make_engine(url)
    init_db(eng)
    eng.dispose()
    api = ApiThread(url)
    try:
        beat = {"agent_id": "a1"}
        assert requests.post(api.url + "/agent/heartbeat", headers=auth("bot"), json=beat).status_code == 200
        own_pg.stop()
        r = requests.post(api.url + "/agent/heartbeat", headers=auth("bot"), json=beat)
        assert _refusal(r, 503)["error"] == "database unavailable; try again shortly"
        assert r.headers["Retry-After"] == "5"
        assert requests.get(api.url + "/healthz").status_code == 200  # the process is fine: no restart needed
        own_pg.start()
        deadline = time.monotonic() + 30
        while requests.post(api.url + "/agent/heartbeat", headers=auth("bot"), json=beat).status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover"
    finally:
        api.stop()
