"""Benchmark of the Queue Monitor at the issue's volume: 200,000 queue rows, 5,000 of them in the DLQ.

    python -m bench.queue_bench --db sqlite:////tmp/qbench.sqlite     # fill (if empty) and time
    python -m bench.queue_bench --db postgresql://...                 # same on PostgreSQL
    python -m bench.queue_bench --pg                                  # a throwaway PostgreSQL (tests' helper)

Times the page through AppTest (the whole script run on the server, cold and warm cache) and the
lib queries on their own. Prints a small table; nothing is asserted (performance is measured,
never tested).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from lib.core.db import init_db, make_engine
from lib.core.identity import OPERATOR, Actor
from lib.core.schema import ACTION_TYPES, instagram_business_accounts, post_queue
from lib.core.timeutil import utcnow
from lib.queue.reads import count_rows, error_groups, matching_ids, queue_health, queue_rows, status_summary
from lib.queue.rules import MAX_BULK_RETRY, QueueFilter
from lib.queue.store import retry

ERRORS = {
    "auth_failure": ["(#190) Error validating access token: Session has expired on {d}",
                     "(#190) The access token could not be decrypted"],
    "permanent": ["(#100) Invalid parameter: comment {n} does not exist", "(#36003) The aspect ratio is not supported",
                  "(#10) Application does not have permission for this action"],
    "rate_limit": ["(#4) Application request limit reached", "(#32) Page request limit reached"],
    "transient": ["HTTP 502 Bad Gateway from graph.facebook.com", "ETIMEDOUT after 30000 ms"],
    "unknown": ["Unexpected response: {n}"],
}


def fill_queue(engine, *, now, total: int = 200_000, dlq: int = 5_000, failed: int = 2_000, seed: int = 42) -> None:
    """Insert `total` post_queue rows for three accounts; `dlq` dead-lettered, `failed` waiting."""
    rnd = random.Random(seed)
    with engine.begin() as conn:
        accounts = []
        for name in ("bench_shop", "bench_cafe", "bench_studio"):
            acc = uuid.uuid4()
            accounts.append(acc)
            conn.execute(sa.insert(instagram_business_accounts).values(
                id=acc, username=name, instagram_business_id=name, access_token=None, is_connected=True,
                created_at=now, updated_at=now))
    other = total - dlq - failed
    statuses = ["dlq"] * dlq + ["failed"] * failed + rnd.choices(
        ["sent", "pending", "processing"], weights=[95, 4.9, 0.1], k=other)
    rnd.shuffle(statuses)
    batch = []
    for i, status in enumerate(statuses):
        created = now - timedelta(minutes=rnd.uniform(0, 60 * 24 * 30))
        category = rnd.choice(list(ERRORS)) if status in ("dlq", "failed") else None
        error = rnd.choice(ERRORS[category]).format(n=rnd.randint(10**15, 10**16), d="Tuesday, 24-Nov-26") if category else None
        rid = uuid.uuid4()
        batch.append({
            "id": rid, "business_account_id": rnd.choice(accounts), "action_type": rnd.choice(ACTION_TYPES),
            "payload": {"comment_id": str(i), "reply_text": "Thanks!", "post_id": "p"}, "idempotency_key": rid.hex,
            "status": status, "retry_count": 5 if status == "dlq" else rnd.randint(1, 4) if status == "failed" else 0,
            "error": error, "error_category": category,
            "next_retry_at": now + timedelta(minutes=rnd.uniform(-5, 30)) if status == "failed" else None,
            "created_at": created, "updated_at": created + timedelta(minutes=rnd.uniform(0, 60)),
        })
        if len(batch) == 5000:
            with engine.begin() as conn:
                conn.execute(sa.insert(post_queue), batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(sa.insert(post_queue), batch)


def _time(fn, n=5):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def bench(url: str) -> list[tuple[str, float]]:
    engine = make_engine(url)
    init_db(engine)
    now = utcnow()
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(post_queue)).scalar()
    if not n:
        t = time.perf_counter()
        fill_queue(engine, now=now)
        print(f"filled 200,000 rows in {time.perf_counter() - t:.1f} s")
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
    out = []
    with engine.connect() as conn:
        dlq = QueueFilter("dlq")
        out.append(("status_summary", _time(lambda: status_summary(conn, now=now))))
        out.append(("queue_health", _time(lambda: queue_health(conn, now=now))))
        out.append(("dlq count", _time(lambda: count_rows(conn, filt=dlq))))
        out.append(("dlq page 1 (50 rows)", _time(lambda: queue_rows(conn, filt=dlq))))
        out.append(("dlq page 100 (50 rows)", _time(lambda: queue_rows(conn, filt=dlq, offset=99 * 50))))
        out.append(("dlq search 'token'", _time(lambda: queue_rows(conn, filt=QueueFilter("dlq", search="token")))))
        out.append(("dlq error groups", _time(lambda: error_groups(conn, filt=dlq))))
    r = measure_retry_all(engine, now=now)
    out.append((f"retry {r['rows']:,} dlq rows (1 txn)", r["retry_s"]))
    engine.dispose()
    out.extend(page_times(url))
    return out


def measure_retry_all(engine, *, now, limit: int = MAX_BULK_RETRY) -> dict:
    """"Retry all matching" on the DLQ view, as the confirmation dialog does it (matching_ids, then
    retry in one transaction), measured and then rolled back: the data stays as it was."""
    t = time.perf_counter()
    with engine.connect() as conn:
        ids = matching_ids(conn, filt=QueueFilter("dlq"), limit=limit)
    t_ids = time.perf_counter() - t
    t = time.perf_counter()
    with engine.connect() as conn:
        trans = conn.begin()
        results = retry(conn, ids, actor=Actor("bench", OPERATOR), now=now)
        trans.rollback()
    t_retry = time.perf_counter() - t
    return {"rows": len(ids), "ids_s": t_ids, "retry_s": t_retry, "total_s": t_ids + t_retry,
            "retried": sum(1 for r in results if r.success)}


def page_times(url: str) -> list[tuple[str, float]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[2]
    os.environ["DATABASE_URL"] = url
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(root / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(str(root / "pages/queue_monitor.py"))
    t = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t
    assert not at.exception, [e.value for e in at.exception]
    t = time.perf_counter()
    at.run()
    warm = time.perf_counter() - t
    st.cache_data.clear()
    t = time.perf_counter()
    at.run()
    cold2 = time.perf_counter() - t
    return [("page render, cold cache", min(cold, cold2)), ("page render, warm cache", warm)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="sqlite:////tmp/queue-bench.sqlite")
    ap.add_argument("--pg", action="store_true", help="start a throwaway PostgreSQL (needs the tests' helper)")
    args = ap.parse_args()
    server = None
    url = args.db
    if args.pg:
        from tests.support.pg import ThrowawayPostgres

        server = ThrowawayPostgres()
        server.start()
        url = server.create_database("bench")
    try:
        results = bench(url)
    finally:
        if server is not None:
            server.cleanup()
    print(f"database: {url.split('@')[-1]}")
    for name, secs in results:
        print(f"  {name:<28} {secs * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
