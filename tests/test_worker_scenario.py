"""Scenario: 50 publish rows through the worker against the documented sandbox with fast time
(one clock for worker and sandbox), on SQLite and PostgreSQL. Images, reels that take 20-90 s
to process, a story, a carousel with a video item, two rows whose stored containers expired,
an account at its publishing limit, one spam-restricted account.

What must hold: no row Instagram would accept ends in the DLQ (the spam-restricted account's rows
are held, not dead-lettered); no container is published twice
and no post is made twice; every row ends sent, or waits with a stated reason."""
from __future__ import annotations

import random

import sqlalchemy as sa

from lib.core.schema import post_queue as pq
from lib.core.schema import post_queue_state as pqs
from tests.support.worker import add_row, client_for, worker_settings
from tests.test_worker_publishing import Clock, account, clock, sb  # noqa: F401 - fixtures
from worker.tick import run_tick


def test_fifty_publish_rows_end_sent_or_waiting_never_twice(engine, db_url, sb, clock):
    rng = random.Random(12)
    with engine.begin() as conn:
        main, main_ig = account(conn, sb, username="main")
        full, full_ig = account(conn, sb, username="full")
        spammy, _ = account(conn, sb, username="spammy")
        keys: dict[str, str] = {}  # row id -> caption key
        def add(acc, payload):
            rid = add_row(conn, acc, "publish_post", payload, now=clock.now())
            keys[str(rid)] = payload.get("caption", "")
            return rid
        for i in range(30):
            add(main, {"image_url": f"https://x/img{i}.jpg", "caption": f"#key:img{i} image {i}"})
        for i in range(12):
            add(main, {"media_type": "REELS", "video_url": f"https://x/reel{i}.mp4",
                       "caption": f"#key:reel{i} reel #proc={rng.randint(20, 90)}"})
        add(main, {"media_type": "STORIES", "video_url": "https://x/story.mp4"})
        add(main, {"media_type": "CAROUSEL", "caption": "#key:carousel three",
                   "children": [{"image_url": "https://x/c1.jpg"}, {"image_url": "https://x/c2.jpg"},
                                {"video_url": "https://x/c3.mp4?proc=40"}]})
        for i in range(2):  # containers made yesterday and never published: expired
            old = sb.add_container(main_ig, caption=f"#key:expired{i} old", created_at=clock.epoch() - 25 * 3600)
            add(main, {"image_url": f"https://x/old{i}.jpg", "caption": f"#key:expired{i} old", "creation_id": old})
        spam = add(spammy, {"image_url": "https://x/spam.jpg", "caption": "#key:spam buy now #fail:spam@media_publish"})
        waiting_quota = [add(full, {"image_url": f"https://x/f{i}.jpg", "caption": f"#key:full{i} full"})
                         for i in range(3)]
    sb.set_quota_usage(full_ig, 100)
    assert len(keys) == 50

    settings = worker_settings(db_url, sb)
    client = client_for(settings)
    for _ in range(20):  # ten minutes of fake time, a tick every 30 s
        run_tick(engine, settings, client, now_fn=clock.now)
        clock.advance(30)

    with engine.connect() as conn:
        rows = {str(r.id): r for r in conn.execute(sa.select(pq))}
        states = {str(s.queue_id): s for s in conn.execute(sa.select(pqs))}
    by_status: dict[str, list[str]] = {}
    for rid, r in rows.items():
        by_status.setdefault(r.status, []).append(rid)
    assert "dlq" not in by_status  # the spam restriction holds its account instead of dead-lettering
    assert sorted(by_status.get("pending", [])) == sorted(map(str, waiting_quota + [spam]))
    assert rows[str(spam)].error.startswith("held: ") and rows[str(spam)].retry_count == 0
    for rid in map(str, waiting_quota):  # each waits with its reason, and says until when
        r = rows[rid]
        assert r.error.startswith("waiting: ") and "publishing limit" in r.error and r.next_retry_at is not None
        assert states[rid].wait_kind == "quota"
    assert len(by_status["sent"]) == 46 and "failed" not in by_status

    stats = sb.stats()
    assert all(c["publishes"] <= 1 for c in stats["containers"].values())  # no container published twice
    published = [p["container_id"] for p in stats["published"]]
    assert len(published) == len(set(published)) == 46  # one post per sent row, none twice
    assert sorted(rows[rid].instagram_id for rid in by_status["sent"]) == sorted(p["media_id"] for p in stats["published"])
    per_key: dict[str, int] = {}
    for p in stats["published"]:
        per_key[p["key"]] = per_key.get(p["key"], 0) + 1
    assert max(per_key.values()) == 1
    assert not any(c["ig_user_id"] == full_ig for c in stats["containers"].values())  # no container at the limit
