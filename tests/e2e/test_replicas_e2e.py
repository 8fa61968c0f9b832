"""Scale-out on one PostgreSQL: two app servers and four workers started at the same
moment on a fresh, uninitialised database, the sandbox Graph API as Instagram. In a real browser, each
app retries a dead-lettered row and resolves an alert; then every queued row was sent exactly once,
each app showed the other's writes after its cache interval (without a reload: the live panels), and
no process logged an error.

The order makes "shows the other's writes" observable: A retries the newest DLQ row, B (already open,
never reloaded) must stop listing it before B retries what is then its newest row, which A must stop
listing in turn. The same for alerts."""
from __future__ import annotations

import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from lib.core.db import make_engine
from lib.core.schema import post_queue, system_alerts
from tests.e2e.conftest import wait_idle
from tests.support.queue_rows import insert_rows, queue_row
from tests.support.servers import ROOT, StreamlitServer
from tests.support.worker import add_account, add_row, sandbox, worker_command, worker_env  # noqa: F401 (sandbox: a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POLL_S = 4  # live refresh of both apps; their loaders keep results 3.3 s (lib.ui.shell.cache_ttl_s)
SEEN_MS = 45_000  # how long a page may take to show a change: one TTL + one refresh, on a loaded machine
HEADER_PX, ROW_PX = 35, 35  # st.dataframe's default header and row heights
PENDING = 12  # rows the agents queued meanwhile: the four workers share them
LOG_PROBLEM = re.compile(r"Traceback|\b(ERROR|CRITICAL|WARNING)\b|Exception")


def _tables_exist(url: str) -> bool:
    eng = make_engine(url)
    try:
        return {"post_queue", "system_alerts", "worker_ticks"} <= set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def _seed(url: str, sandbox) -> dict:
    """What the agents and earlier failures left: 3 DLQ rows, PENDING new rows, 3 open alerts."""
    now = datetime.now(UTC)
    eng = make_engine(url)
    with eng.begin() as conn:
        acc = add_account(conn, username="replica_shop", sandbox=sandbox)
        dlq = [queue_row(account=acc, now=now, age_min=1 + i, action_type="send_dm", error_category="transient",
                         error=f"(#2) Service temporarily unavailable [dlq{i}]",
                         payload={"recipient_id": f"90{i}", "message_text": f"#key:dlq{i} sorry for the wait"})
               for i in range(3)]
        insert_rows(conn, dlq)
        for i in range(PENDING):
            add_row(conn, acc, "send_dm", {"recipient_id": str(100 + i), "message_text": f"#key:new{i} hello"}, now=now)

        def alert(alert_type, minutes, message):
            t = now - timedelta(minutes=minutes)
            return {"id": uuid.uuid4(), "alert_type": alert_type, "message": message, "business_account_id": acc,
                    "details": {"source": "e2e"}, "resolved": False, "created_at": t, "updated_at": t}

        # list order (severity, then newest): sync_failure, content_violation (both ERROR), rate_limit
        alerts = [alert("sync_failure", 1, "sync stalled [alert0]"), alert("content_violation", 2, "caption refused [alert1]"),
                  alert("rate_limit", 3, "rate limit hit [alert2]")]
        conn.execute(sa.insert(system_alerts), alerts)
    eng.dispose()
    return {"dlq": dlq, "alerts": alerts}


def _db(url: str, query):
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(query).all()
    finally:
        eng.dispose()


def _statuses(url: str) -> list[tuple[str, int]]:
    return _db(url, sa.select(post_queue.c.status, sa.func.count()).group_by(post_queue.c.status))


def _grid(page, has_text: str):
    return page.get_by_test_id("stDataFrame").filter(has_text=has_text).first


def _alerts(page):
    return _grid(page, "Severity")  # the alert list (its header), whichever alerts it holds


def _click_first_row(page, grid, x: float) -> None:
    """Click the first data row at x (the grid is a canvas). The box is measured just before the
    click: the live panels above it may have changed height on their last refresh."""
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    at = (box["x"] + x, box["y"] + HEADER_PX + ROW_PX / 2)
    page.mouse.move(*at)
    page.wait_for_timeout(500)  # the canvas draws its row markers and buttons on hover
    box = grid.bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + HEADER_PX + ROW_PX / 2)


def _retry_newest(page, url: str, rows_shown: int, row_id) -> None:
    """Click the first row's Retry button; that row (the newest DLQ row on this page) is row_id."""
    expect(page.get_by_text(f"Rows 1–{rows_shown} of {rows_shown}, newest attempt first")).to_be_visible(timeout=SEEN_MS)
    _click_first_row(page, _grid(page, "Retries"), 60)  # the Retry button column, right of the checkboxes
    expect(page.get_by_text("Retry: 1 row moved back to pending")).to_be_visible(timeout=SEEN_MS)
    status = dict(_db(url, sa.select(post_queue.c.id, post_queue.c.status).where(post_queue.c.status == "dlq")))
    assert row_id not in status and len(status) == rows_shown - 1, status  # that row, and only it


def _resolve_first(page, shots: Path) -> None:
    """Tick the first alert's checkbox (clicked again if the click was lost in a refresh), resolve it."""
    button = page.locator(".st-key-alerts-resolve-selected").get_by_role("button")
    for _ in range(6):
        if "Resolve selected (1)" in button.inner_text():
            break
        wait_idle(page, timeout=60_000)  # between two refreshes: nothing moves under the mouse
        _click_first_row(page, _alerts(page), 16)  # the row-marker checkbox
        try:
            expect(button).to_contain_text("Resolve selected (1)", timeout=20_000)
        except AssertionError:
            continue
    if "Resolve selected (1)" not in button.inner_text():
        page.screenshot(path=str(shots / "resolve-not-selected.png"), full_page=True)
    expect(button).to_contain_text("Resolve selected (1)", timeout=SEEN_MS)
    button.click()
    expect(page.get_by_text("Resolved 1 alert.")).to_be_visible(timeout=SEEN_MS)


def test_two_apps_and_four_workers_started_together_on_a_fresh_database(pg_server, sandbox, browser, tmp_path):
    url = pg_server.create_database("rep_" + uuid.uuid4().hex[:12])  # empty: nobody ran init
    env = {"DATABASE_URL": url, "INSTAGRAM_GRAPH_URL": sandbox.url, "POLL_INTERVAL_S": str(POLL_S)}
    logs = [open(tmp_path / f"worker-{i}.log", "w+") for i in range(4)]
    workers, apps = [], []
    try:
        # all six at once: the workers' Popen returns at once, the apps start in two threads meanwhile
        with ThreadPoolExecutor(2) as pool:
            starting = [pool.submit(StreamlitServer, env) for _ in range(2)]
            # a small batch, so the new rows take several claims and the four workers share them
            workers = [subprocess.Popen(worker_command("--interval-seconds", "1", "--batch-size", "3"), cwd=ROOT,
                                        env=worker_env(url, sandbox, **env), stdout=log, stderr=subprocess.STDOUT)
                       for log in logs]
        apps = [f.result() for f in starting if f.exception() is None]
        for f in starting:
            if f.exception() is not None:
                raise f.exception()
        a, b = apps
        ctx_a, ctx_b = (browser.new_context(viewport={"width": 1500, "height": 1400}) for _ in apps)
        page_a, page_b = ctx_a.new_page(), ctx_b.new_page()
        # both apps' first sessions (each runs the app's init) start together
        page_a.goto(a.url + "/queue_monitor", wait_until="commit")
        page_b.goto(b.url + "/queue_monitor", wait_until="commit")
        for p in (page_a, page_b):
            wait_idle(p, timeout=60_000)
            expect(p.get_by_text("The dead-letter queue is empty")).to_be_visible(timeout=SEEN_MS)
        assert _tables_exist(url)
        seeded = _seed(url, sandbox)
        dlq = [r["id"] for r in seeded["dlq"]]
        # the four workers share the new rows (and leave the dead-lettered ones alone)
        _wait_until(lambda: _statuses(url), [("dlq", 3), ("sent", PENDING)], workers)

        # A retries the newest DLQ row (dlq0); B, never reloaded, stops listing it after its cache interval
        _retry_newest(page_a, url, 3, dlq[0])
        b_table = _grid(page_b, "Retries")
        expect(page_b.get_by_text("Rows 1–2 of 2, newest attempt first")).to_be_visible(timeout=SEEN_MS)
        expect(b_table).not_to_contain_text("[dlq0]", timeout=SEEN_MS)
        expect(b_table).to_contain_text("[dlq1]", timeout=SEEN_MS)
        # B retries its newest, dlq1; A stops listing it
        _retry_newest(page_b, url, 2, dlq[1])
        expect(page_a.get_by_text("Rows 1–1 of 1, newest attempt first")).to_be_visible(timeout=SEEN_MS)
        expect(_grid(page_a, "Retries")).not_to_contain_text("[dlq1]", timeout=SEEN_MS)
        expect(_grid(page_a, "Retries")).to_contain_text("[dlq2]", timeout=SEEN_MS)

        # alerts: A resolves the first (alert0); B shows it gone, resolves alert1; A shows that gone
        for p, app in ((page_a, a), (page_b, b)):
            p.goto(app.url + "/system_alerts")
            wait_idle(p, timeout=60_000)
        expect(_alerts(page_b)).to_contain_text("[alert0]", timeout=SEEN_MS)
        _resolve_first(page_a, tmp_path)
        expect(_alerts(page_a)).not_to_contain_text("[alert0]", timeout=SEEN_MS)
        expect(_alerts(page_b)).not_to_contain_text("[alert0]", timeout=SEEN_MS)
        expect(_alerts(page_b)).to_contain_text("[alert1]", timeout=SEEN_MS)
        _resolve_first(page_b, tmp_path)
        expect(_alerts(page_a)).not_to_contain_text("[alert1]", timeout=SEEN_MS)
        expect(_alerts(page_a)).to_contain_text("[alert2]", timeout=SEEN_MS)
        for p in (page_a, page_b):
            assert p.get_by_test_id("stException").count() == 0

        # the workers send both retried rows and every new row: each exactly once
        keys = {"dlq0", "dlq1", *(f"new{i}" for i in range(PENDING))}
        _wait_until(lambda: _statuses(url), [("dlq", 1), ("sent", PENDING + 2)], workers)
        stats = sandbox.stats()
        assert stats["attempts"] == {k: 1 for k in keys}
        assert stats["effects"] == {k: {"messages": 1} for k in keys}
        assert sorted(m["key"] for m in stats["sent_messages"]) == sorted(keys)
        assert dict(_db(url, sa.select(post_queue.c.id, post_queue.c.status).where(post_queue.c.id.in_(dlq)))) == {
            dlq[0]: "sent", dlq[1]: "sent", dlq[2]: "dlq"}
        resolved = dict(_db(url, sa.select(system_alerts.c.message, system_alerts.c.resolved)))
        assert resolved == {"sync stalled [alert0]": True, "caption refused [alert1]": True, "rate limit hit [alert2]": False}
        assert all(p.poll() is None for p in workers)  # still running their schedule
        # every worker ticked, none had a failed tick, and more than one of them sent rows
        per_pid = dict(_db(url, sa.text("SELECT pid, coalesce(sum(sent), 0) FROM worker_ticks GROUP BY pid")))
        assert set(per_pid) == {p.pid for p in workers}, per_pid
        assert sum(per_pid.values()) == PENDING + 2 and sum(1 for n in per_pid.values() if n) >= 2, per_pid
        assert _db(url, sa.text("SELECT count(*) FROM worker_ticks WHERE error IS NOT NULL")) == [(0,)]
        ctx_a.close()
        ctx_b.close()
    finally:
        for p in workers:
            p.terminate()
        for p in workers:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        outputs = {f"app {s.url}": _whole_log(s) for s in apps}
        for s in apps:
            s.stop()
    outputs |= {f"worker {i}": (log.seek(0), log.read())[1] for i, log in enumerate(logs)}
    for log in logs:
        log.close()
    assert all("worker start" in outputs[f"worker {i}"] for i in range(4))  # the logs scanned below are theirs
    assert all("Uvicorn server started" in out for name, out in outputs.items() if name.startswith("app"))
    for name, out in outputs.items():
        bad = [line for line in out.splitlines() if LOG_PROBLEM.search(line)]
        assert bad == [], (name, bad[:20])
    assert [p.returncode for p in workers] == [0, 0, 0, 0]  # SIGTERM: a clean stop


def _whole_log(server: StreamlitServer) -> str:
    server.log.flush()
    return Path(server.log.name).read_text(encoding="utf-8", errors="replace")


def _wait_until(read, want, workers, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    got = None
    while time.monotonic() < deadline:
        got = sorted(read())
        if got == sorted(want):
            return
        assert all(p.poll() is None for p in workers), "a worker exited"
        time.sleep(0.2)
    raise AssertionError(f"queue never reached {want}: {got}")
