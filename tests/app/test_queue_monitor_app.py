"""Queue Monitor through AppTest: counts, DLQ filters and grouping, retry one/selected/all, empty states."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.schema import audit_log, post_queue
from lib.core.timeutil import utcnow
from lib.ui.queue_monitor import Keys
from tests.support.queue_rows import add_account, insert_rows, queue_row

PAGE = "pages/queue_monitor.py"


@pytest.fixture
def queue_db(sqlite_url):
    """alpha: 4 token-expired DLQ rows, 2 pending; beta: 2 permanent publish_post DLQ rows, 1 failed, 3 sent."""
    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        a, b = add_account(conn, "alpha", now), add_account(conn, "beta", now)
        rows = (
            [queue_row(account=a, now=now, age_min=i, error=f"(#190) Error validating access token: session {i} expired")
             for i in range(4)]
            + [queue_row(account=b, now=now, age_min=50 + i, action_type="publish_post", error_category="permanent",
                         error="(#36003) The aspect ratio is not supported") for i in range(2)]
            + [queue_row(account=a, now=now, status="pending", retry_count=0, age_min=30 + i) for i in range(2)]
            + [queue_row(account=b, now=now, status="failed", retry_count=2, next_retry_in_min=8)]
            + [queue_row(account=b, now=now, status="sent", retry_count=0, action_type="send_dm") for _ in range(3)]
        )
        insert_rows(conn, rows)
    eng.dispose()
    return sqlite_url, rows


def metrics(at):
    return {m.label: m.value for m in at.metric}


def captions(at):
    return " ".join(c.value for c in at.caption)


def table(at):
    """The DLQ/failed table: the dataframe that has an Error column."""
    return next(df.value for df in at.dataframe if "retry_count" in df.value.columns)


def db_status(url):
    eng = make_engine(url)
    with eng.connect() as conn:
        out = {r.id: (r.status, r.retry_count) for r in conn.execute(sa.select(post_queue.c.id, post_queue.c.status,
                                                                                 post_queue.c.retry_count))}
        audits = conn.execute(sa.select(audit_log.c.resource_id, audit_log.c.user_id, audit_log.c.event_type)).all()
    eng.dispose()
    return out, audits


def test_counts_matrix_and_metrics(run_page, queue_db):
    url, _ = queue_db
    at = run_page(url, PAGE)
    m = metrics(at)
    assert (m["Total"], m["Pending"], m["DLQ"], m["Failed"], m["Due"]) == ("12", "2", "6", "1", "2")
    counts = at.dataframe[0].value.set_index("action_type")
    assert counts.loc["reply_comment", "dlq"] == 4 and counts.loc["publish_post", "dlq"] == 2
    assert counts.loc["send_dm", "sent"] == 3 and counts.loc["total", "total"] == 12
    assert len(at.get("plotly_chart")) == 0  # the chart tab is lazy: closed, not drawn
    assert "Rows 1–6 of 6" in captions(at)
    at.session_state[Keys.COUNTS_TAB] = "Chart"  # opened, as a click does
    at.run()
    assert len(at.get("plotly_chart")) == 1


def test_dlq_filters_and_grouping(run_page, queue_db):
    url, rows = queue_db
    at = run_page(url, PAGE)
    groups = next(df.value for df in at.dataframe if "error" in df.value.columns and "rows" in df.value.columns)
    assert groups.iloc[0].tolist() == [4, "auth_failure", "(#190) Error validating access token: session # expired"]
    assert groups.iloc[1].tolist()[:2] == [2, "permanent"]

    at.selectbox(key=Keys.ACTION).set_value("publish_post").run()
    assert set(table(at)["action_type"]) == {"publish_post"} and len(table(at)) == 2
    at.selectbox(key=Keys.ACTION).set_value("__all__").run()

    at.text_input(key=Keys.SEARCH).input("TOKEN").run()
    assert len(table(at)) == 4
    at.text_input(key=Keys.SEARCH).input("no such error anywhere").run()
    assert "No rows match these filters" in at.info[0].value
    at.text_input(key=Keys.SEARCH).input("").run()

    group_keys = at.selectbox(key=Keys.GROUP).options
    assert group_keys[1].startswith("4 × auth_failure")
    at.selectbox(key=Keys.GROUP).set_value("permanent|(#36003) The aspect ratio is not supported").run()
    assert list(table(at)["error_category"]) == ["permanent", "permanent"]

    at.segmented_control(key=Keys.VIEW).set_value("failed").run()
    at.selectbox(key=Keys.GROUP).set_value("__all__").run()
    failed = table(at)
    assert len(failed) == 1 and failed.iloc[0]["next_retry"].startswith("in ")


def test_account_scope_from_the_sidebar(run_page, queue_db):
    url, rows = queue_db
    at = run_page(url, PAGE)
    picker = at.selectbox(key="account")
    beta = next(o for o in picker.options if o != "all" and "beta" in str(picker.format_func(o)))
    at.selectbox(key="account").set_value(beta).run()
    assert metrics(at)["DLQ"] == "2"
    assert set(table(at)["account"]) == {"beta"}


def test_retry_one_from_the_row_detail(run_page, queue_db):
    url, rows = queue_db
    at = run_page(url, PAGE)
    newest = rows[0]
    assert table(at).iloc[0]["id"] == str(newest["id"])
    at.session_state[Keys.SELECTED] = [str(newest["id"])]
    at.run()
    assert '"comment_id"' in at.json[0].value  # the payload, as JSON
    assert any("(#190) Error validating access token: session 0 expired" in c.value for c in at.code)
    at.button(key="qm_retry_one").click().run()
    assert not at.exception
    assert at.success[0].value.startswith("Retry: 1 row moved back to pending")
    status, audits = db_status(url)
    assert status[newest["id"]] == ("pending", 0)
    assert audits == [(str(newest["id"]), "local", "queue_item_retried")]
    assert str(newest["id"]) not in set(table(at)["id"])  # the table refreshed at once
    assert metrics(at)["DLQ"] == "5"


def test_retry_selected_through_session_state(run_page, queue_db):
    url, rows = queue_db
    at = run_page(url, PAGE)
    ids = [str(rows[1]["id"]), str(rows[4]["id"])]
    at.session_state[Keys.SELECTED] = ids
    at.run()
    assert at.button(key="qm_retry_selected").label == "Retry 2 selected"
    at.button(key="qm_retry_selected").click().run()
    assert at.success[0].value.startswith("Retry selected (2): 2 rows moved back to pending")
    status, audits = db_status(url)
    assert {status[uuid.UUID(i)] for i in ids} == {("pending", 0)}
    assert len(audits) == 2
    assert len(table(at)) == 4 and not set(ids) & set(table(at)["id"])
    assert at.session_state[Keys.SELECTED] == []


def test_retry_all_matching_asks_first(run_page, queue_db):
    url, rows = queue_db
    at = run_page(url, PAGE)
    at.selectbox(key=Keys.CATEGORY).set_value("auth_failure").run()
    at.button(key="qm_retry_all").click().run()
    assert at.session_state[Keys.CONFIRM]["count"] == 4
    status, _ = db_status(url)
    assert sum(s == "dlq" for s, _ in status.values()) == 6  # nothing happens before the confirmation
    assert "Move **4** row(s)" in " ".join(md.value for md in at.markdown)
    at.button(key="qm_confirm_ok").click().run()
    assert at.success[0].value.startswith("Retry all matching (4): 4 rows moved back to pending")
    status, _ = db_status(url)
    assert sum(s == "dlq" for s, _ in status.values()) == 2
    assert Keys.CONFIRM not in at.session_state


def test_viewer_sees_disabled_actions(run_page, queue_db):
    url, _ = queue_db
    at = run_page(url, PAGE, env={"OPERATOR_EMAILS": "someone-else@example.com"})
    assert at.button(key="qm_retry_all").disabled
    at.session_state[Keys.SELECTED] = [str(table(at).iloc[0]["id"])]
    at.run()
    assert at.button(key="qm_retry_one").disabled and at.button(key="qm_retry_selected").disabled


def test_empty_states(run_page, sqlite_url):
    init_db(make_engine(sqlite_url))
    at = run_page(sqlite_url, PAGE)
    assert "The queue is empty" in at.info[0].value
    assert "The dead-letter queue is empty" in at.success[0].value
    assert not at.error


def test_worker_last_tick_and_missed_schedule(run_page, sqlite_url):
    from datetime import timedelta

    from lib.core.schema import worker_ticks

    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        conn.execute(sa.insert(worker_ticks).values(id=uuid.uuid4(), host="h", pid=1, started_at=now - timedelta(minutes=31.5),
                                                    finished_at=now - timedelta(minutes=31.5), claimed=3, sent=2, failed=1,
                                                    dlq=0, rescued=0))
    at = run_page(sqlite_url, PAGE)
    assert any("missed its schedule" in w.value and "last tick 31 min ago" in w.value for w in at.warning)
    with eng.begin() as conn:
        conn.execute(sa.insert(worker_ticks).values(id=uuid.uuid4(), host="h", pid=1, started_at=now - timedelta(minutes=1.5),
                                                    finished_at=now - timedelta(minutes=1.5), claimed=0, sent=0, failed=0,
                                                    dlq=0, rescued=0, error="database is locked"))
    eng.dispose()
    at = run_page(sqlite_url, PAGE)
    assert not any("missed its schedule" in w.value for w in at.warning)
    assert "Worker: last tick 1 min ago" in captions(at)
    assert any("database is locked" in c.value for c in at.code)


# -- queue control ------------------------------------------------------------------------

def _control_db(tmp_path):
    import uuid as _uuid

    from lib.core.db import init_db, make_engine
    from lib.core.schema import instagram_business_accounts, post_queue
    from lib.core.timeutil import utcnow
    from lib.queue.store import enqueue

    url = f"sqlite:///{tmp_path}/qc.sqlite"
    eng = make_engine(url)
    init_db(eng)
    acc = _uuid.UUID("aaaaaaaa-0000-0000-0000-00000000000a")
    with eng.begin() as conn:
        conn.execute(sa.insert(instagram_business_accounts).values(id=acc, username="acme", is_connected=True))
        ids = [enqueue(conn, business_account_id=acc, action_type="publish_post",
                       payload={"image_url": f"https://x/{i}.jpg", "caption": f"c{i}"}, now=utcnow()) for i in range(3)]
        conn.execute(sa.update(post_queue).values(status="dlq", retry_count=5, error="HTTP 400 bad", updated_at=utcnow()))
    return url, eng, acc, ids


def test_discard_all_matching_asks_with_the_count_then_keeps_the_rows_in_audit_log(run_page, tmp_path):
    from lib.core.schema import audit_log, post_queue

    url, eng, _, ids = _control_db(tmp_path)
    at = run_page(url, PAGE)
    at.button(key="qm_discard_all").click().run()
    assert any("Delete **3** row(s)" in m.value for m in at.markdown)
    at.button(key="qm_confirm_ok").click().run()
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)
                            .where(audit_log.c.event_type == "queue_item_discarded")).scalar() == 3
    assert any("3 rows discarded" in s.value for s in at.success)


def test_pause_an_action_type_shows_who_and_resume_ends_it(run_page, tmp_path):
    from lib.core.schema import queue_pauses

    url, eng, _, _ = _control_db(tmp_path)
    at = run_page(url, PAGE)
    at.selectbox(key="qm_pause_action").set_value("send_dm")
    at.text_input(key="qm_pause_reason").input("maintenance")
    at.button(key="qm_pause").click().run()
    assert any("Paused: send\\_dm of every account, by local" in w.value and "maintenance" in w.value
               for w in at.warning), [w.value for w in at.warning]
    with eng.connect() as conn:
        (pid,) = conn.execute(sa.select(queue_pauses.c.id)).scalars().all()
    at.button(key=f"qm_resume_{pid}").click().run()
    with eng.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(queue_pauses)).scalar() == 0


def test_viewers_cannot_discard_or_pause(run_page, tmp_path):
    url, _, _, _ = _control_db(tmp_path)
    at = run_page(url, PAGE, env={"OPERATOR_EMAILS": "other@example.com"})
    assert at.button(key="qm_discard_all").disabled and at.button(key="qm_pause").disabled


def test_edit_and_retry_form_validates_then_saves(run_page, tmp_path):
    from lib.core.schema import post_queue

    url, eng, _, ids = _control_db(tmp_path)
    at = run_page(url, PAGE)
    at.session_state[Keys.SELECTED] = [str(ids[0])]
    at.run()
    caption = [t for t in at.text_area if t.label == "caption"][0]
    caption.input("x" * 2201)
    [b for b in at.button if b.label == "Save and retry"][0].click().run()
    assert any("Not saved" in e.value and "2,200" in e.value for e in at.error), [e.value for e in at.error]
    with eng.connect() as conn:
        assert conn.execute(sa.select(post_queue.c.status).where(post_queue.c.id == ids[0])).scalar() == "dlq"
    caption = [t for t in at.text_area if t.label == "caption"][0]
    caption.input("fixed caption")
    [b for b in at.button if b.label == "Save and retry"][0].click().run()
    with eng.connect() as conn:
        r = conn.execute(sa.select(post_queue).where(post_queue.c.id == ids[0])).one()
    assert (r.status, r.retry_count, r.payload["caption"]) == ("pending", 0, "fixed caption")
    assert any("Saved and moved back to pending" in s.value for s in at.success)


def test_rows_waiting_on_instagram_are_listed_with_reason_and_next_check(run_page, sqlite_url):
    """A row whose container Instagram is still processing waits (pending, next_retry_at
    set): the page lists it apart from failures, with the reason, how long and when it is checked."""
    from lib.core.schema import post_queue_state

    eng = make_engine(sqlite_url)
    init_db(eng)
    now = utcnow()
    with eng.begin() as conn:
        acc = add_account(conn, "alpha", now)
        row = queue_row(account=acc, now=now, status="pending", retry_count=0, action_type="publish_post",
                        next_retry_in_min=1, payload={"media_type": "REELS", "video_url": "https://x/r.mp4"})
        insert_rows(conn, [row])
        conn.execute(sa.insert(post_queue_state).values(
            queue_id=row["id"], creation_id="1789", wait_kind="container",
            wait_reason="Instagram is processing the REELS container", waiting_since=now - timedelta(minutes=10)))
    eng.dispose()
    at = run_page(sqlite_url, PAGE)
    assert any(m.value.startswith("**Waiting on Instagram** · 1 row (") for m in at.markdown)
    waiting = next(df.value for df in at.dataframe if "waiting for" in df.value.columns)
    assert waiting.iloc[0][["action", "waiting for", "reason", "id"]].tolist() == [
        "publish_post", "container processing", "Instagram is processing the REELS container", str(row["id"])]
    assert waiting.iloc[0]["since"] in ("9 min", "10 min")  # the page's clock is floored to its refresh step
    assert waiting.iloc[0]["next check"].startswith("in ")
