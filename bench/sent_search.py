"""What the Queue Monitor's "find a row by what was sent" costs at 5,000,000 queue rows (PostgreSQL).

    .venv/bin/python -m bench.sent_search [--rows 5000000] [--runs 5] [--out bench/results/sent_search.json]

A throwaway PostgreSQL with `--rows` rows in post_queue, each with a payload like the agents send
(comment, recipient or conversation ids and a message text), then lib.queue.reads.search_sent for: a rare
comment id, a word in a tenth of the rows (the cap stops the read), text matching nothing -- with the
pg_trgm index init creates (ix_post_queue_payload_trgm), then without it (a database where the
extension may not be created). `python -m bench --history --growth` measures the same calls on the
history volume. Numbers are printed and written, never asserted."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.core.db import QUEUE_TRIGRAM_INDEX, init_db, make_engine  # noqa: E402
from lib.queue.reads import search_sent  # noqa: E402  (after sys.path.insert: runnable as a script)
from tests.support.pg import ThrowawayPostgres  # noqa: E402

CHUNK = 500_000
_ROWS_SQL = """
INSERT INTO post_queue (id, business_account_id, action_type, payload, idempotency_key, status, retry_count,
                        created_at, updated_at)
SELECT gen_random_uuid(), :acc, (ARRAY['reply_comment','send_dm','reply_dm','publish_post','repost_ugc'])[1 + g % 5],
       CASE g % 5
         WHEN 0 THEN jsonb_build_object('comment_id', '1790' || g, 'post_id', '1780' || (g / 7),
                                        'reply_text', CASE WHEN g % 10 = 0 THEN 'Thanks so much, see you soon!'
                                                           ELSE 'Glad you liked it #' || g END)
         WHEN 1 THEN jsonb_build_object('recipient_id', '2560' || g, 'message_text', 'Your order ' || g || ' shipped')
         WHEN 2 THEN jsonb_build_object('conversation_id', 't_' || g, 'message_text', 'Happy to help with ' || g)
         WHEN 3 THEN jsonb_build_object('image_url', 'https://cdn.example.com/p/' || g || '.jpg',
                                        'caption', 'New in: style ' || g || ' #fall')
         ELSE jsonb_build_object('media_id', '1795' || g, 'caption', 'Repost from @fan' || (g % 997))
       END,
       'bench-' || g, 'sent', 0, now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval
FROM generate_series(:lo, :hi) AS g
"""


def timed(fn, runs: int) -> tuple[float, object]:
    fn()  # warm
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sent_search", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sent_search.json"))
    args = ap.parse_args(argv)
    pg = ThrowawayPostgres()
    pg.start()
    try:
        url = pg.create_database("sent")
        engine = make_engine(url)
        init_db(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP INDEX IF EXISTS {QUEUE_TRIGRAM_INDEX}"))  # built once after the load
            acc = conn.execute(sa.text(
                "INSERT INTO instagram_business_accounts (id, username, instagram_business_id, access_token, is_connected,"
                " created_at, updated_at) VALUES (gen_random_uuid(), 'bench', 'ig-bench', 'x', true, now(), now())"
                " RETURNING id")).scalar()
        t = time.perf_counter()
        for lo in range(1, args.rows + 1, CHUNK):
            with engine.begin() as conn:
                conn.execute(sa.text(_ROWS_SQL), {"acc": acc, "lo": lo, "hi": min(lo + CHUNK - 1, args.rows)})
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        with engine.begin() as conn:  # what init_db creates on a database with pg_trgm
            conn.execute(sa.text(f"CREATE INDEX {QUEUE_TRIGRAM_INDEX} ON post_queue USING gin "
                                 "((CAST(payload AS TEXT)) gin_trgm_ops)"))
        index_s = time.perf_counter() - t
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE post_queue"))
        rare = f"1790{args.rows - 5 - (args.rows - 5) % 5}"  # one comment id
        cases = {"a comment id (1 row)": rare, "a common phrase (a tenth of the rows; cap 200)": "see you soon",
                 "text matching nothing": "zq-no-such-text-xj"}
        result = {"rows": args.rows, "load_s": round(load_s, 1), "index_build_s": round(index_s, 1), "runs": args.runs}
        with engine.connect() as conn:
            size = conn.execute(sa.text(f"SELECT pg_relation_size('{QUEUE_TRIGRAM_INDEX}')")).scalar()
            result["index_mb"] = round(size / 2**20)
        for label, with_index in (("with_trigram_index", True), ("without_index", False)):
            if not with_index:
                with engine.begin() as conn:
                    conn.execute(sa.text(f"DROP INDEX {QUEUE_TRIGRAM_INDEX}"))
            part = {}
            with engine.connect() as conn:
                for name, text in cases.items():
                    s, out = timed(lambda text=text: search_sent(conn, text), args.runs if with_index else 1)
                    part[name] = {"median_ms": round(s * 1000, 1), "rows": len(out.rows), "more": out.more}
                    print(f"{label:20} {name:48} {s * 1000:9.1f} ms  ({len(out.rows)} rows, more={out.more})", flush=True)
            result[label] = part
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        engine.dispose()
    finally:
        pg.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
