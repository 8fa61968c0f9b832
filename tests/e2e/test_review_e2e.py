"""/review in a real browser against the sandbox Graph API: approve, edit-and-approve, reject, bulk approve with
a confirmation naming the count; then `python -m worker --once` sends exactly what was approved, once, and a held
DM whose 24-hour window closed is expired, never sent."""
from __future__ import annotations

import re
import subprocess
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, post_queue, review_decisions
from lib.core.timeutil import utcnow
from lib.queue.review_rules import EXPIRE_ERROR
from lib.queue.store import enqueue
from tests.e2e.conftest import click_until, wait_idle
from tests.support.servers import ROOT
from tests.support.worker import add_account, sandbox, worker_command, worker_env  # noqa: F401

pytestmark = pytest.mark.e2e

HEADER_PX, ROW_PX = 35, 35
REVIEW = "reply_comment,send_dm"


@pytest.fixture
def review_db(sqlite_url, sandbox):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    sandbox.add_comment("c-a", text="Love this mug!", username="mugfan", media_id="m-1", caption="Our new mug")
    sandbox.add_conversation("conv-c", "1784000000000042", "9000000000000555", customer_username="parcelwaiter")
    sandbox.add_message("conv-c", "where is my parcel?")
    ids = {}
    with eng.begin() as conn:
        acc = add_account(conn, username="e2e_shop", token="tok-e2e-secret", ig_id="1784000000000042", sandbox=sandbox)

        def add(name, action, payload, age_min):
            ids[name] = enqueue(conn, business_account_id=acc, action_type=action, payload=payload,
                                now=now - timedelta(minutes=age_min))

        add("A", "reply_comment", {"comment_id": "c-a", "reply_text": "#key:a Thank you, approve me"}, 50)
        add("B", "reply_comment", {"comment_id": "c-b", "reply_text": "#key:b draft, edit me"}, 40)
        add("C", "send_dm", {"recipient_id": "9000000000000555", "message_text": "#key:c reject me"}, 30)
        add("D", "reply_comment", {"comment_id": "c-d", "reply_text": "#key:d bulk one"}, 20)
        add("E", "reply_comment", {"comment_id": "c-e", "reply_text": "#key:e bulk two"}, 10)
        add("F", "send_dm", {"recipient_id": "9000000000000777", "message_text": "#key:f too late"}, 25 * 60)
    eng.dispose()
    return sqlite_url, ids


def _open(page, text):
    picker = page.locator(".st-key-rv_open").get_by_role("combobox")
    option = re.compile(re.escape(text))

    def pick():
        if not option.search(picker.input_value() or ""):
            picker.click()
            page.get_by_role("option", name=option).click(timeout=10_000)

    click_until(page, pick, lambda ms: expect(picker).to_have_value(option, timeout=ms))
    wait_idle(page)


def _rows(url):
    eng = make_engine(url)
    with eng.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(post_queue))}
        audits = conn.execute(sa.select(audit_log).where(audit_log.c.event_type.like("review_%"))).all()
        decisions = {d.queue_id: d for d in conn.execute(sa.select(review_decisions))}
    eng.dispose()
    return rows, audits, decisions


def test_review_decisions_then_the_worker_sends_exactly_what_was_approved(start_app, review_db, sandbox, page):
    url, ids = review_db
    server = start_app({"DATABASE_URL": url, "REVIEW_ACTIONS": REVIEW, "INSTAGRAM_GRAPH_URL": sandbox.url})
    page.set_viewport_size({"width": 1500, "height": 1600})
    page.goto(server.url + "/review")
    wait_idle(page)
    expect(page.get_by_text("6 row(s) wait for review")).to_be_visible()
    # F (queued 25 h ago) comes first: its window closed; the row picker opens on it
    expect(page.locator(".st-key-rv_open").get_by_role("combobox")).to_have_value(re.compile("window closed"))

    # A: its context (the comment and its post, read from the sandbox), then Approve as it stands
    _open(page, "approve me")
    detail = page.locator(".st-key-rv_detail")
    expect(detail).to_contain_text("Love this mug!")
    expect(detail).to_contain_text("Our new mug")
    assert "tok-e2e-secret" not in page.content()
    detail.get_by_role("button", name="Approve", exact=True).click()
    expect(page.get_by_text("Approved; the worker sends it at its next pass.")).to_be_visible()
    expect(page.get_by_text("5 row(s) wait for review")).to_be_visible()

    # B: no context (the sandbox knows no comment c-b): a clear note; edit the stored text, then Approve
    _open(page, "edit me")
    detail = page.locator(".st-key-rv_detail")
    expect(detail).to_contain_text("could not be read from Instagram")
    box = detail.get_by_label("reply_text", exact=True)
    expect(box).to_have_value("#key:b draft, edit me")
    box.fill("#key:b2 Edited by a person")
    detail.get_by_role("button", name="Approve", exact=True).click()
    expect(page.get_by_text("Approved with your edit; the worker sends it at its next pass.")).to_be_visible()

    # F: too late to approve
    _open(page, "too late")
    page.locator(".st-key-rv_detail").get_by_role("button", name="Approve", exact=True).click()
    expect(page.get_by_role("alert").filter(has_text="messaging window has closed")).to_contain_text("Too late")

    # C: the DM's conversation shows; Reject with a reason
    _open(page, "reject me")
    detail = page.locator(".st-key-rv_detail")
    expect(detail).to_contain_text("where is my parcel?")
    detail.get_by_label("Reason (optional)").fill("tone is off")
    detail.get_by_role("button", name="Reject", exact=True).click()
    expect(page.get_by_text("Rejected: moved to the dead-letter queue, never sent.")).to_be_visible()
    expect(page.get_by_text("3 row(s) wait for review")).to_be_visible()

    # D and E: bulk approve (rows 2 and 3 of the table: F's window closed first, then newest first)
    table = page.get_by_test_id("stDataFrame").first
    table.scroll_into_view_if_needed()
    for n, i in enumerate((1, 2), start=1):
        want = page.get_by_role("button", name=f"Approve selected ({n})")

        def tick(i=i, want=want):  # a redraw can eat a click: look first, so a repeat never undoes one
            if want.count() == 0:
                at = table.bounding_box()
                page.mouse.click(at["x"] + 17, at["y"] + HEADER_PX + ROW_PX * i + ROW_PX / 2)

        click_until(page, tick, lambda ms, want=want: expect(want).to_be_visible(timeout=ms))
    bulk = page.get_by_role("button", name="Approve selected (2)")
    expect(bulk).to_be_enabled()
    bulk.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Approve 2 row(s)?")
    dialog.get_by_role("button", name="Approve 2 rows").click()
    expect(page.get_by_text("Approved 2 of 2 row(s).")).to_be_visible()
    expect(page.get_by_text("1 row(s) wait for review")).to_be_visible()  # F, until the worker expires it
    assert page.locator("[data-testid='stException']").count() == 0
    assert sandbox.stats()["requests"] == 0  # nothing was sent while deciding

    # the worker: twice, so a second pass proves "once"
    for _ in range(2):
        done = subprocess.run(worker_command("--once", "--no-watchdog"), cwd=ROOT, capture_output=True, text=True,
                              env=worker_env(url, sandbox, REVIEW_ACTIONS=REVIEW), timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    stats = sandbox.stats()
    assert stats["attempts"] == {"a": 1, "b2": 1, "d": 1, "e": 1}
    replies = sorted(r["text"] for rs in stats["replies"].values() for r in rs)
    assert replies == ["#key:a Thank you, approve me", "#key:b2 Edited by a person", "#key:d bulk one",
                       "#key:e bulk two"]
    assert stats["sent_messages"] == []  # C rejected, F expired

    rows, audits, decisions = _rows(url)
    assert {k: rows[v].status for k, v in ids.items()} == {"A": "sent", "B": "sent", "C": "dlq", "D": "sent",
                                                            "E": "sent", "F": "dlq"}
    assert rows[ids["C"]].error == "rejected in review: tone is off"
    assert rows[ids["F"]].error == EXPIRE_ERROR
    assert rows[ids["B"]].payload["reply_text"] == "#key:b2 Edited by a person"
    events = sorted((a.event_type, a.resource_id, a.user_id, a.resource_type) for a in audits)
    assert events == sorted([("review_approved", str(ids[k]), "local", "post_queue") for k in "ABDE"]
                            + [("review_rejected", str(ids["C"]), "local", "post_queue"),
                               ("review_expired", str(ids["F"]), "worker", "post_queue")])
    assert decisions[ids["B"]].edited and decisions[ids["B"]].original_text == "#key:b draft, edit me"
    assert {decisions[ids[k]].decision for k in "ADE"} == {"approved"} and decisions[ids["F"]].decision == "expired"


def test_viewers_see_the_queue_but_cannot_decide(start_app, review_db, sandbox, page):
    url, ids = review_db
    server = start_app({"DATABASE_URL": url, "REVIEW_ACTIONS": REVIEW, "INSTAGRAM_GRAPH_URL": sandbox.url,
                        "OPERATOR_EMAILS": "someone-else@example.com"})
    page.goto(server.url + "/review")
    wait_idle(page)
    expect(page.get_by_text("6 row(s) wait for review")).to_be_visible()
    detail = page.locator(".st-key-rv_detail")
    expect(detail.get_by_role("button", name="Approve", exact=True)).to_be_disabled()
    expect(detail.get_by_role("button", name="Reject", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name=re.compile(r"^Approve selected"))).to_be_disabled()
    expect(page.get_by_text("only operators decide")).to_be_visible()
    rows, audits, _ = _rows(url)
    assert audits == [] and {r.status for r in rows.values()} == {"pending"}


def test_a_policy_set_on_the_page_holds_matching_rows_and_removing_it_releases_them(start_app, sqlite_url, page):
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, username="policy_shop")
        match = enqueue(conn, business_account_id=acc, action_type="reply_comment", now=now,
                        payload={"comment_id": "1", "reply_text": "Your REFUND is on its way"})
        enqueue(conn, business_account_id=acc, action_type="reply_comment", now=now,
                payload={"comment_id": "2", "reply_text": "Thanks for the love"})
    server = start_app({"DATABASE_URL": sqlite_url, "INSTAGRAM_GRAPH_URL": "http://127.0.0.1:9/v21.0"})
    page.set_viewport_size({"width": 1500, "height": 1600})
    page.goto(server.url + "/review")
    wait_idle(page)
    expect(page.get_by_text("Nothing waits for review.")).to_be_visible()
    panel = page.get_by_test_id("stExpander").filter(has_text="Review policies")
    click_until(page, lambda: panel.locator("summary").click() if panel.locator("details").get_attribute("open") is None
                else None, lambda ms: expect(panel.get_by_role("button", name="Save policy")).to_be_visible(timeout=ms))
    form = panel.get_by_test_id("stForm")
    form.get_by_text("Review only text that matches words or patterns").click()
    form.get_by_label("Words or patterns (one per line; * matches anything)").fill("refund\ncancel*order")
    form.get_by_role("button", name="Save policy").click()
    expect(page.get_by_text("Policy saved.")).to_be_visible()
    expect(page.get_by_text("1 row(s) wait for review")).to_be_visible()
    expect(page.locator(".st-key-rv_open").get_by_role("combobox")).to_have_value(re.compile("REFUND"))

    panel = page.get_by_test_id("stExpander").filter(has_text="Review policies")
    panel.get_by_role("button", name="Remove policy").click()
    expect(page.get_by_text("Policy removed.")).to_be_visible()
    expect(page.get_by_text("Nothing waits for review.")).to_be_visible()
    eng = make_engine(sqlite_url)
    with eng.connect() as conn:
        events = [(a.event_type, a.user_id) for a in conn.execute(
            sa.select(audit_log).where(audit_log.c.resource_type == "review_policies").order_by(audit_log.c.created_at))]
        assert conn.execute(sa.select(post_queue.c.status).where(post_queue.c.id == match)).scalar() == "pending"
    eng.dispose()
    assert events == [("review_policy_set", "local"), ("review_policy_removed", "local")]
    assert page.locator("[data-testid='stException']").count() == 0


def test_rows_that_arrive_while_the_page_is_open_are_announced_without_redrawing_the_list(start_app, sqlite_url, page):
    eng = make_engine(sqlite_url)
    init_db(eng)
    with eng.begin() as conn:
        acc = add_account(conn, username="live_shop")
        enqueue(conn, business_account_id=acc, action_type="send_dm", now=utcnow(),
                payload={"recipient_id": "1", "message_text": "first"})
    server = start_app({"DATABASE_URL": sqlite_url, "REVIEW_ACTIONS": "send_dm", "POLL_INTERVAL_S": "2",
                        "INSTAGRAM_GRAPH_URL": "http://127.0.0.1:9/v21.0"})
    page.goto(server.url + "/review")
    wait_idle(page)
    expect(page.get_by_text("1 row(s) wait for review")).to_be_visible()
    with eng.begin() as conn:
        enqueue(conn, business_account_id=acc, action_type="send_dm", now=utcnow(),
                payload={"recipient_id": "2", "message_text": "second"})
    eng.dispose()
    expect(page.get_by_text("2 row(s) wait for review now; this list shows 1.")).to_be_visible()
    page.get_by_role("button", name="Refresh").click()
    expect(page.get_by_text("2 row(s) wait for review", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile("wait for review now"))).to_have_count(0)
