"""The sandbox Graph API over real HTTP, with a fake clock: what it models from Meta's docs
(docs/graph-api.md) and the markers/counters the worker tests rely on."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests

from sandbox.graph_api import ERROR_TABLE, GraphSandbox, derived_ig_user_id
from tests.support.pg import free_port
from tests.support.servers import ROOT

IG, TOKEN, PAGE = "17841400000000001", "tok-acme", "1010101"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sb(clock):
    s = GraphSandbox(clock=clock, timeout_sleep_s=0.5).start()
    s.add_account(IG, TOKEN, page_id=PAGE, username="acme")
    yield s
    s.stop()


def post(sb, path, token=TOKEN, **data):
    return requests.post(f"{sb.url}/{path}", data={**data, "access_token": token}, timeout=5)


def get(sb, path, token=TOKEN, **params):
    return requests.get(f"{sb.url}/{path}", params={**params, "access_token": token}, timeout=5)


def status(sb, cid):
    return get(sb, cid, fields="status_code,status").json()


def err(resp):
    e = resp.json()["error"]
    return resp.status_code, e["code"], e["error_subcode"]


# -- content publishing ----------------------------------------------------------------------

def test_an_image_container_publishes_once_and_reads_published(sb):
    cid = post(sb, f"{IG}/media", image_url="https://x/a.jpg", caption="hello").json()["id"]
    assert status(sb, cid)["status_code"] == "FINISHED"
    first = post(sb, f"{IG}/media_publish", creation_id=cid)
    assert first.status_code == 200
    again = post(sb, f"{IG}/media_publish", creation_id=cid)  # a retry after a lost answer
    assert again.json()["id"] == first.json()["id"]
    assert status(sb, cid) == {"status_code": "PUBLISHED", "status": "Published: Media has been successfully published.",
                               "id": cid}
    st = sb.stats()
    assert st["effects"]["hello"] == {"media": 1, "media_publish": 1}
    assert [p["container_id"] for p in st["published"]] == [cid]
    assert st["containers"][cid]["publishes"] == 1 and st["containers"][cid]["publish_requests"] == 2
    assert st["containers"][cid]["published"] == first.json()["id"]


def test_a_reel_is_in_progress_until_processed_and_cannot_be_published_before(sb, clock):
    cid = post(sb, f"{IG}/media", video_url="https://x/r.mp4", media_type="REELS", caption="reel").json()["id"]
    assert status(sb, cid)["status_code"] == "IN_PROGRESS"
    early = post(sb, f"{IG}/media_publish", creation_id=cid)
    assert err(early) == (400, 9007, 2207027)
    assert early.json()["error"]["message"] == "The media is not ready for publishing, please wait for a moment"
    clock.advance(29)
    assert status(sb, cid)["status_code"] == "IN_PROGRESS"
    clock.advance(1)
    assert status(sb, cid)["status_code"] == "FINISHED"
    assert post(sb, f"{IG}/media_publish", creation_id=cid).status_code == 200
    assert sb.stats()["effects"]["reel"] == {"media": 1, "media_publish": 1}


def test_processing_time_per_type_and_per_container(clock):
    s = GraphSandbox(clock=clock, processing_s={"REELS": 5, "IMAGE": 2}).start()
    try:
        img = post(s, f"{IG}/media", image_url="https://x/a.jpg").json()["id"]
        reel = post(s, f"{IG}/media", video_url="https://x/r.mp4", media_type="REELS").json()["id"]
        slow = post(s, f"{IG}/media", video_url="https://x/r.mp4", media_type="REELS", caption="x #proc=100").json()["id"]
        story = post(s, f"{IG}/media", video_url="https://x/s.mp4?proc=1", media_type="STORIES").json()["id"]
        clock.advance(2)
        assert [status(s, c)["status_code"] for c in (img, reel, slow, story)] == \
            ["FINISHED", "IN_PROGRESS", "IN_PROGRESS", "FINISHED"]
        clock.advance(3)
        assert status(s, reel)["status_code"] == "FINISHED" and status(s, slow)["status_code"] == "IN_PROGRESS"
    finally:
        s.stop()


def test_a_container_expires_24_hours_after_creation(sb, clock):
    cid = post(sb, f"{IG}/media", image_url="https://x/a.jpg").json()["id"]
    clock.advance(24 * 3600)
    assert status(sb, cid)["status_code"] == "EXPIRED"
    assert err(post(sb, f"{IG}/media_publish", creation_id=cid)) == (400, -2, 2207020)
    assert sb.stats()["published"] == []


def test_a_scripted_container_error_ends_in_error_with_its_subcode(sb, clock):
    cid = post(sb, f"{IG}/media", video_url="https://x/r.mp4", media_type="REELS",
               caption="bad #fail:container_error=2207026").json()["id"]
    assert status(sb, cid)["status_code"] == "IN_PROGRESS"
    clock.advance(30)
    body = status(sb, cid)
    assert body["status_code"] == "ERROR" and "2207026" in body["status"]
    assert err(post(sb, f"{IG}/media_publish", creation_id=cid)) == (400, 352, 2207026)
    # *1: the second container of the same text is fine (a client that makes a new one recovers)
    cap = "again #fail:container_error*1"
    first = post(sb, f"{IG}/media", image_url="https://x/a.jpg", caption=cap).json()["id"]
    second = post(sb, f"{IG}/media", image_url="https://x/a.jpg", caption=cap).json()["id"]
    assert status(sb, first)["status_code"] == "ERROR" and status(sb, second)["status_code"] == "FINISHED"


def test_container_validation_follows_the_docs(sb):
    assert err(post(sb, f"{IG}/media", caption="no url")) == (400, 100, None)
    assert err(post(sb, f"{IG}/media", media_type="REELS", image_url="https://x/a.jpg")) == (400, 100, None)
    # "the VIDEO value for media_type will no longer be supported. Use the REELS media type"
    assert err(post(sb, f"{IG}/media", media_type="VIDEO", video_url="https://x/v.mp4")) == (400, 100, 2207023)
    assert err(post(sb, f"{IG}/media", media_type="SLIDESHOW", image_url="https://x/a.jpg")) == (400, 100, 2207023)
    assert err(post(sb, f"{IG}/media", image_url="https://x/a.jpg", caption="x" * 2201)) == (400, 36004, 2207010)
    assert post(sb, f"{IG}/media", media_type="STORIES", image_url="https://x/s.jpg").status_code == 200


def test_a_carousel_publishes_once_when_all_children_are_finished(sb, clock):
    img = post(sb, f"{IG}/media", image_url="https://x/1.jpg", is_carousel_item="true").json()["id"]
    vid = post(sb, f"{IG}/media", video_url="https://x/2.mp4", media_type="VIDEO", is_carousel_item="true").json()["id"]
    parent = post(sb, f"{IG}/media", media_type="CAROUSEL", children=f"{img},{vid}", caption="album").json()["id"]
    assert status(sb, parent)["status_code"] == "IN_PROGRESS"  # its video child is still processing
    assert err(post(sb, f"{IG}/media_publish", creation_id=parent)) == (400, 9007, 2207027)
    clock.advance(30)
    assert status(sb, parent)["status_code"] == "FINISHED"
    assert post(sb, f"{IG}/media_publish", creation_id=parent).status_code == 200
    limit = get(sb, f"{IG}/content_publishing_limit", fields="quota_usage").json()
    assert limit == {"data": [{"quota_usage": 1}]}  # a carousel counts as one post


def test_carousel_children_are_validated(sb):
    items = [post(sb, f"{IG}/media", image_url=f"https://x/{i}.jpg", is_carousel_item="true").json()["id"]
             for i in range(11)]
    assert err(post(sb, f"{IG}/media", media_type="CAROUSEL", children=items[0])) == (400, 100, 2207028)
    assert err(post(sb, f"{IG}/media", media_type="CAROUSEL", children=",".join(items))) == (400, 100, 2207028)
    assert err(post(sb, f"{IG}/media", media_type="CAROUSEL", children=f"{items[0]},999")) == (400, 24, 2207006)
    sb.add_account("17841400000000002", "tok-other")
    theirs = post(sb, "17841400000000002/media", token="tok-other", image_url="https://x/t.jpg",
                  is_carousel_item="true").json()["id"]
    assert err(post(sb, f"{IG}/media", media_type="CAROUSEL", children=f"{items[0]},{theirs}")) == (400, 24, 2207006)
    single = post(sb, f"{IG}/media", image_url="https://x/s.jpg").json()["id"]
    assert err(post(sb, f"{IG}/media", media_type="CAROUSEL", children=f"{items[0]},{single}")) == (400, 100, None)
    assert err(post(sb, f"{IG}/media", media_type="REELS", video_url="https://x/r.mp4",
                    is_carousel_item="true")) == (400, 100, None)  # "Reels cannot appear in carousels"


def test_publishing_an_unknown_or_foreign_container_fails(sb):
    assert err(post(sb, f"{IG}/media_publish", creation_id="123")) == (400, 24, 2207008)
    sb.add_account("17841400000000002", "tok-other")
    theirs = post(sb, "17841400000000002/media", token="tok-other", image_url="https://x/t.jpg").json()["id"]
    assert err(post(sb, f"{IG}/media_publish", creation_id=theirs)) == (400, 24, 2207008)
    assert get(sb, theirs, fields="status_code").json()["error"]["error_subcode"] == 33  # not ours to read
    assert post(sb, "17841400000000002/media_publish", token="tok-other", creation_id=theirs).status_code == 200


def test_planted_containers(sb, clock):
    old = sb.add_container(IG, caption="old", created_at=clock() - 25 * 3600)
    done = sb.add_container(IG, caption="done", status_code="PUBLISHED")
    stuck = sb.add_container(IG, media_type="REELS", status_code="IN_PROGRESS")
    broken = sb.add_container(IG, media_type="REELS", status_code="ERROR")
    assert [status(sb, c)["status_code"] for c in (old, done, stuck, broken)] == \
        ["EXPIRED", "PUBLISHED", "IN_PROGRESS", "ERROR"]
    again = post(sb, f"{IG}/media_publish", creation_id=done)
    assert again.json()["id"] == sb.container(done)["published"]
    assert sb.container(done)["publishes"] == 1 and len(sb.stats()["published"]) == 1
    # over HTTP, for a sandbox in another process
    planted = requests.post(f"http://127.0.0.1:{sb.port}/_sandbox/containers",
                            json={"ig_user_id": IG, "caption": "p", "status_code": "FINISHED"}).json()["id"]
    assert status(sb, planted)["status_code"] == "FINISHED"


def test_publishing_quota_counts_a_moving_24h_window(clock):
    s = GraphSandbox(clock=clock, publish_quota=3).start()
    try:
        def publish(i):
            cid = post(s, f"{IG}/media", image_url=f"https://x/{i}.jpg").json()["id"]
            return post(s, f"{IG}/media_publish", creation_id=cid)

        for i in range(3):
            assert publish(i).status_code == 200
            clock.advance(3600)
        limit = get(s, f"{IG}/content_publishing_limit", fields="config,quota_usage").json()
        assert limit == {"data": [{"quota_usage": 3, "config": {"quota_total": 3, "quota_duration": 86400}}]}
        assert err(publish(3)) == (400, 9, 2207042)
        clock.advance(21 * 3600 + 1)  # the first post leaves the window
        assert get(s, f"{IG}/content_publishing_limit", fields="quota_usage").json()["data"][0]["quota_usage"] == 2
        assert publish(4).status_code == 200
        s.set_quota_usage(IG, 10, total=10)
        assert err(publish(5)) == (400, 9, 2207042)
        assert get(s, f"{IG}/content_publishing_limit", fields="config").json()["data"][0]["config"]["quota_total"] == 10
    finally:
        s.stop()


def test_the_default_quota_is_the_guides_100():
    s = GraphSandbox()
    assert s.state.publish_quota == 100


# -- the error table and the markers ----------------------------------------------------------

@pytest.mark.parametrize("subcode", sorted(ERROR_TABLE))
def test_each_row_of_the_error_table_by_marker(sb, subcode):
    code, message, transient = ERROR_TABLE[subcode]
    resp = post(sb, "1790001/replies", message=f"x #fail:sub={subcode}")
    e = resp.json()["error"]
    assert (resp.status_code, e["code"], e["error_subcode"], e["is_transient"]) == (400, code, subcode, transient)
    assert e["message"] == message and e["type"] == "OAuthException" and e["fbtrace_id"]


def test_the_documented_rows_the_worker_cares_about():
    assert {s: ERROR_TABLE[s][0] for s in (2207003, 2207020, 2207001, 2207032, 2207053, 2207051, 2207042,
                                           2207027)} == {2207003: -2, 2207020: -2, 2207001: -1, 2207032: -1,
                                                         2207053: -1, 2207051: 4, 2207042: 9, 2207027: 9007}


def test_old_markers_keep_working(sb):
    cases = {"auth": (400, 190), "rate": (400, 4), "5xx": (500, 2), "permanent": (400, 100), "content": (400, 368),
             "unknown": (403, None), "spam": (400, 4)}
    for kind, (http, code) in cases.items():
        resp = post(sb, f"{IG}/messages", recipient=json.dumps({"id": "1"}),
                    message=json.dumps({"text": f"{kind} #fail:{kind}"}))
        assert (resp.status_code, resp.json()["error"].get("code")) == (http, code), kind
    assert post(sb, f"{IG}/messages", recipient=json.dumps({"id": "1"}),
                message=json.dumps({"text": "spam #fail:spam"})).json()["error"]["error_subcode"] == 2207051
    started = time.monotonic()
    assert post(sb, "1/replies", message="t #fail:timeout").status_code == 504
    assert time.monotonic() - started >= 0.5
    st = sb.stats()
    assert st["failures"]["timeout"] == 1 and st["effects"] == {}
    assert st["by_op"]["messages"] == 8 and st["requests"] == 9


def test_op_suffix_times_suffix_key_and_slow(sb):
    cap = "launch #key:L1 #fail:5xx@media_publish*1"
    cid = post(sb, f"{IG}/media", image_url="https://x/a.jpg", caption=cap).json()["id"]
    assert post(sb, f"{IG}/media_publish", creation_id=cid).status_code == 500
    assert post(sb, f"{IG}/media_publish", creation_id=cid).status_code == 200
    st = sb.stats()
    assert st["attempts"]["L1"] == 3 and st["effects"]["L1"] == {"media": 1, "media_publish": 1}
    assert get(sb, cid, fields="status_code").json()["status_code"] == "PUBLISHED"
    assert get(sb, "x", fields="status_code").status_code == 400  # unknown object
    cid2 = post(sb, f"{IG}/media", image_url="https://x/b.jpg", caption="s #fail:5xx@container_status").json()["id"]
    assert get(sb, cid2, fields="status_code").status_code == 500
    started = time.monotonic()
    assert post(sb, "1/replies", message="late #fail:slow=0.3").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_error_rate_is_seeded_and_never_fails_auth(clock):
    def run(seed):
        s = GraphSandbox(clock=clock, error_rate=0.5, seed=seed, timeout_sleep_s=0.01).start()
        try:
            return [post(s, "1/replies", message=f"m{i}").status_code for i in range(30)], s.stats()["failures"]
        finally:
            s.stop()

    a, fa = run(7)
    assert (a, fa) == run(7)
    assert 0 < sum(c != 200 for c in a) < 30 and "auth" not in fa


def test_bad_tokens_and_missing_tokens(sb):
    for tok in ("bad-1", "expired-x", "revoked"):
        assert err(post(sb, "1/replies", token=tok, message="x")) == (400, 190, 463)
    resp = requests.post(f"{sb.url}/1/replies", data={"message": "x"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 2500


def test_the_token_may_come_in_a_bearer_header(sb):
    resp = requests.post(f"{sb.url}/1790001/replies", data={"message": "hi"},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert resp.status_code == 200
    bad = requests.post(f"{sb.url}/1790001/replies", data={"message": "hi"},
                        headers={"Authorization": "Bearer bad-token"}, timeout=5)
    assert bad.json()["error"]["code"] == 190
    replies = requests.get(f"{sb.url}/1790001/replies", params={"fields": "id,text,from"},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()["data"]
    assert replies[0]["from"] == {"id": IG, "username": "acme"}


# -- usage headers ----------------------------------------------------------------------------

def test_every_answer_carries_usage_headers_keyed_by_the_account(sb):
    sb.add_account("17841400000000002", "tok-other")
    a = post(sb, "1790001/replies", message="a")
    b = post(sb, "1790001/replies", token="tok-other", message="#fail:permanent")
    buc_a = json.loads(a.headers["X-Business-Use-Case-Usage"])
    buc_b = json.loads(b.headers["X-Business-Use-Case-Usage"])
    assert list(buc_a) == [IG] and list(buc_b) == ["17841400000000002"]
    assert set(buc_a[IG][0]) >= {"type", "call_count", "total_cputime", "total_time",
                                 "estimated_time_to_regain_access"}
    assert set(json.loads(a.headers["X-App-Usage"])) == {"call_count", "total_cputime", "total_time"}
    # an unregistered token: the ig-user-id of the path, else a hash of the token
    c = post(sb, "17841499999999999/media", token="t", image_url="https://x/a.jpg")
    assert list(json.loads(c.headers["X-Business-Use-Case-Usage"])) == ["17841499999999999"]
    d = post(sb, "1790001/replies", token="t", message="x")
    assert list(json.loads(d.headers["X-Business-Use-Case-Usage"])) == [derived_ig_user_id("t")]


def test_usage_knobs_and_the_rate_marker(sb, clock):
    sb.set_usage(IG, call_count=95, estimated_time_to_regain_access=10)
    sb.set_app_usage(call_count=80, total_time=12)
    resp = post(sb, "1/replies", message="x")
    entry = json.loads(resp.headers["X-Business-Use-Case-Usage"])[IG][0]
    assert (entry["call_count"], entry["estimated_time_to_regain_access"]) == (95, 10)
    assert json.loads(resp.headers["X-App-Usage"])["call_count"] == 80
    clock.advance(5 * 60)
    entry = json.loads(post(sb, "1/replies", message="y").headers["X-Business-Use-Case-Usage"])[IG][0]
    assert entry["estimated_time_to_regain_access"] == 5  # minutes left on the sandbox clock
    limited = post(sb, "1/replies", message="z #fail:rate=90")
    assert err(limited) == (400, 4, None)
    entry = json.loads(limited.headers["X-Business-Use-Case-Usage"])[IG][0]
    assert (entry["call_count"], entry["estimated_time_to_regain_access"]) == (100, 90)
    # over HTTP too
    requests.post(f"http://127.0.0.1:{sb.port}/_sandbox/usage", json={"ig_user_id": IG, "total_cputime": 77})
    entry = json.loads(post(sb, "1/replies", message="w").headers["X-Business-Use-Case-Usage"])[IG][0]
    assert entry["total_cputime"] == 77


# -- messaging --------------------------------------------------------------------------------

def _dm(sb, node, text="hi", token=TOKEN, recipient="9001"):
    return post(sb, f"{node}/messages", token=token, recipient=json.dumps({"id": recipient}),
                message=json.dumps({"text": text}))


def test_facebook_login_messages_go_to_the_page_or_me(sb):
    for node in (PAGE, "me"):
        resp = _dm(sb, node)
        assert resp.status_code == 200 and resp.json()["recipient_id"] == "9001" and resp.json()["message_id"]
    assert err(_dm(sb, IG)) == (400, 100, 33)  # the IG user node is Instagram Login's
    assert err(_dm(sb, PAGE, recipient=IG)) == (400, 100, 2018001)  # not to ourselves (picked by position?)
    json_body = requests.post(f"{sb.url}/me/messages", json={"recipient": {"id": "42"}, "message": {"text": "j"}},
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert json_body.json()["recipient_id"] == "42"
    assert [m["sender_id"] for m in sb.stats()["sent_messages"]] == [IG, IG, IG]


def test_instagram_login_messages_go_to_the_ig_user_or_me(clock):
    s = GraphSandbox(clock=clock, api="instagram_login").start()
    try:
        s.add_account(IG, TOKEN, page_id=PAGE)
        assert _dm(s, IG).status_code == 200 and _dm(s, "me").status_code == 200
        assert err(_dm(s, PAGE)) == (400, 100, 33)
        s.add_account("17841400000000002", "tok-other")
        assert err(_dm(s, IG, token="tok-other")) == (400, 100, 33)  # another account's token
    finally:
        s.stop()


def test_message_text_over_1000_bytes_is_refused(sb):
    assert _dm(sb, PAGE, text="é" * 500).status_code == 200  # 1000 bytes
    resp = _dm(sb, PAGE, text="é" * 501)
    assert err(resp) == (400, 100, None) and "1000" in resp.json()["error"]["message"]
    assert err(post(sb, f"{PAGE}/messages", message=json.dumps({"text": "x"}))) == (400, 100, None)


def test_conversation_participants_are_us_and_the_customer_in_either_order(sb):
    firsts = set()
    for i in range(12):
        people = get(sb, f"aWdfconv{i}", fields="participants").json()["participants"]["data"]
        assert len(people) == 2 and IG in {p["id"] for p in people}
        firsts.add(people[0]["id"] == IG)
    assert firsts == {True, False}
    sb.add_conversation("conv-x", IG, "555", customer_username="jo")
    people = get(sb, "conv-x", fields="participants").json()["participants"]["data"]
    assert {p["id"]: p["username"] for p in people} == {IG: "acme", "555": "jo"}
    assert get(sb, "me", fields="id,username").json() == {"id": IG, "username": "acme"}
    requests.post(f"http://127.0.0.1:{sb.port}/_sandbox/conversations", timeout=5,
                  json={"conversation_id": "conv-y", "ig_user_id": IG, "customer_id": "777"})
    assert {p["id"] for p in get(sb, "conv-y", fields="participants").json()["participants"]["data"]} == {IG, "777"}


# -- comment replies --------------------------------------------------------------------------

def test_replies_are_stored_and_listed(sb, clock):
    rid = post(sb, "1790001/replies", message="thanks! #key:r1").json()["id"]
    post(sb, "1790002/replies", message="other")
    data = get(sb, "1790001/replies", fields="id,text,username,from,timestamp").json()["data"]
    assert data == [{"id": rid, "text": "thanks! #key:r1", "username": "acme", "from": {"id": IG, "username": "acme"},
                     "timestamp": "2027-01-15T08:00:00+0000"}]
    assert get(sb, "1790003/replies").json() == {"data": []}
    assert sb.stats()["effects"]["r1"] == {"replies": 1}


# -- clock, reset, CLI -------------------------------------------------------------------------

def test_clock_endpoint_and_reset(sb):
    cid = post(sb, f"{IG}/media", video_url="https://x/r.mp4", media_type="REELS").json()["id"]
    requests.post(f"http://127.0.0.1:{sb.port}/_sandbox/clock", json={"offset_s": 31}, timeout=5)
    assert status(sb, cid)["status_code"] == "FINISHED"
    requests.post(f"http://127.0.0.1:{sb.port}/_sandbox/reset", timeout=5)
    st = requests.get(f"http://127.0.0.1:{sb.port}/_sandbox/stats", timeout=5).json()
    assert (st["requests"], st["containers"], st["published"]) == (0, {}, [])
    assert get(sb, "me").json()["id"] == IG  # the accounts registry survives a reset


def test_the_cli_serves_on_the_given_port():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.graph_api", "--port", str(port), "--error-rate", "0",
                             "--api", "instagram_login", "--reels-processing-s", "45"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line and "instagram_login" in line and "45" in line
        assert requests.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=5).json() == {"ok": True}
        made = requests.post(f"http://127.0.0.1:{port}/v22.0/1784/media", timeout=5,
                             data={"video_url": "https://x/r.mp4", "media_type": "REELS", "access_token": "t"})
        assert made.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_graph_session_reads_the_environment_once(monkeypatch):
    """lib.instagram.client.graph_session: the proxy for the Graph host and a CA bundle from the environment,
    read when the client is made; NO_PROXY honoured; requests does not rescan it per call."""
    from lib.instagram.client import graph_session

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    s = graph_session("https://graph.facebook.com/v25.0")
    assert s.proxies.get("https") == "http://proxy.internal:3128"
    assert s.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert s.trust_env is False
    monkeypatch.setenv("NO_PROXY", "graph.facebook.com")
    assert "https" not in graph_session("https://graph.facebook.com/v25.0").proxies
