"""Keeps the demo queue moving: enqueues realistic actions for the connected accounts.

    python -m sandbox.demo_enqueuer --interval 20 [--per-tick 3] [--seed 1] [--once]

Writes through lib.queue.store.enqueue into the configured DATABASE_URL (duplicates are no-ops).
The rows only make sense against the sandbox Graph API (their ids are invented).
"""
from __future__ import annotations

import argparse
import logging
import random
import signal
import threading
import uuid
from typing import Any

from lib.core.db import UNAVAILABLE_ERRORS, init_db, make_engine
from lib.core.settings import load_settings
from lib.core.timeutil import utcnow
from lib.queue.accounts import list_accounts
from lib.queue.store import enqueue

log = logging.getLogger("demo_enqueuer")

REPLIES = ["Thank you so much! 💛", "Glad you like it!", "DM us and we'll sort it out.",
           "Yes, it ships worldwide 🌍", "Restock is next Friday!", "You made our day 🙌"]
DMS = ["Hi! Your order is on its way.", "Thanks for reaching out, here is the size guide.",
       "We'd love to feature your photo, may we?", "Your discount code is WELCOME10."]
CAPTIONS = ["New drop this week ✨ #newin", "Behind the scenes at the studio", "Our summer edit is live ☀️",
            "Meet the team! 👋", "Three ways to style it 👇"]
# share of each action type, roughly what the agents produce
MIX = {"reply_comment": 0.4, "send_dm": 0.2, "reply_dm": 0.2, "publish_post": 0.12, "repost_ugc": 0.08}
# publish_post formats: mostly images, some reels and carousels (they wait for processing)
POST_FORMATS = {"IMAGE": 0.6, "REELS": 0.25, "CAROUSEL": 0.15}


def _digits(rng: random.Random, n: int = 15) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _post_payload(rng: random.Random) -> dict[str, Any]:
    """An image post, a reel (the sandbox processes video for tens of seconds before it can be
    published) or a carousel of images and a video (`children`: one {"image_url"} or {"video_url"}
    per item)."""
    n = rng.randrange(1, 500)
    kind = rng.choices(list(POST_FORMATS), weights=list(POST_FORMATS.values()))[0]
    payload: dict[str, Any] = {"caption": rng.choice(CAPTIONS),
                               "scheduled_post_id": str(uuid.UUID(int=rng.getrandbits(128)))}
    if kind == "REELS":
        payload.update(media_type="REELS", video_url=f"https://media.example.com/reels/{n}.mp4")
    elif kind == "CAROUSEL":
        items: list[dict[str, str]] = [{"image_url": f"https://picsum.photos/seed/{n + i}/1080/1080"}
                                       for i in range(rng.randrange(2, 4))]
        if rng.random() < 0.5:
            items.append({"video_url": f"https://media.example.com/clips/{n}.mp4"})
        payload.update(media_type="CAROUSEL", children=items)
    else:
        payload.update(media_type="IMAGE", image_url=f"https://picsum.photos/seed/{n}/1080/1080")
    return payload


def random_action(rng: random.Random) -> tuple[str, dict[str, Any]]:
    action = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if action == "reply_comment":
        return action, {"comment_id": "179" + _digits(rng), "post_id": "180" + _digits(rng),
                        "reply_text": rng.choice(REPLIES)}
    if action == "send_dm":
        return action, {"recipient_id": "9" + _digits(rng), "message_text": rng.choice(DMS)}
    if action == "reply_dm":
        return action, {"conversation_id": "aWdfZAG06" + _digits(rng), "message_text": rng.choice(DMS)}
    if action == "publish_post":
        return action, _post_payload(rng)
    return action, {"permission_id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "image_url": f"https://picsum.photos/seed/ugc{rng.randrange(500)}/1080/1350",
                    "caption": "📸 by our community #ugc"}


def enqueue_some(engine, rng: random.Random, per_tick: int) -> int:
    with engine.begin() as conn:
        connected = [a for a in list_accounts(conn) if a.is_connected]
        n = 0
        for _ in range(per_tick if connected else 0):
            account = rng.choice(connected)
            action, payload = random_action(rng)
            if enqueue(conn, business_account_id=account.id, action_type=action, payload=payload, now=utcnow()):
                n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sandbox.demo_enqueuer")
    ap.add_argument("--interval", type=float, default=20.0, help="seconds between rounds")
    ap.add_argument("--per-tick", type=int, default=3, help="actions per round")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--once", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    engine = make_engine(settings.database_url)
    init_db(engine)
    rng = random.Random(args.seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        try:
            n = enqueue_some(engine, rng, args.per_tick)
            log.info("enqueued %d actions into %s", n, settings.masked_database_url)
        except UNAVAILABLE_ERRORS as exc:
            log.error("database unavailable: %s", str(getattr(exc, "orig", None) or exc).splitlines()[0][:200])
        if args.once:
            break
        stop.wait(args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
