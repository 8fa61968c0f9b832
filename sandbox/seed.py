"""Demo data generator: deterministic, realistic rows for every table, at demo or at scale size.

`seed_demo` fills an empty database with a few thousand rows that exercise every page (every
status x action type, every error category, every event and alert type, 90 days of reports);
`seed_scale` reuses the same row builders for a million-row database (bulk inserts on SQLite,
COPY on PostgreSQL, generated in chunks so memory stays bounded).

Everything comes from `random.Random` seeded per table, and ids are drawn from it too, so the
same seed and `now` give the same database.

    python -m sandbox.seed [--database-url URL] [--if-empty] [--scale] [--now ISO]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lib.core import schema
from lib.core.audit import audit_row
from lib.core.schema import ACTION_TYPES
from lib.core.settings import Settings
from lib.core.timeutil import iso
from lib.instagram.errors import backoff_delay
from lib.queue.rules import SUCCESS_EVENT, idempotency_key

MAX_RETRIES = Settings.max_retries  # the spec's default: seeded DLQ rows used up this many retries

DEMO_AGENTS = ("engagement-monitor", "content-scheduler", "ugc-discovery", "oversight-brain")
ALIVE_DEMO_AGENTS = ("engagement-monitor", "content-scheduler", "oversight-brain")
DOWN_AGENT = "ugc-discovery"
GAP_AGENT = "content-scheduler"
DOWN_FOR = timedelta(minutes=17)  # ugc-discovery's last beat is this long before now
GAP_END_AGO = timedelta(hours=6)  # content-scheduler was silent for GAP_LENGTH before this
GAP_LENGTH = timedelta(minutes=40)
DISCONNECTED_AGO = timedelta(hours=3, minutes=12)  # when lumen.studio's token expired
OPERATOR = "ops@example.com"
AGENT_USER_AGENT = "agent-backend/2.3.1 (node 20; post-fallback)"
OPERATOR_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
TOKEN_EXPIRED = "(#190) Error validating access token: Session has expired"

TABLES = (
    schema.instagram_business_accounts,
    schema.agent_heartbeats,
    schema.post_queue,
    schema.audit_log,
    schema.system_alerts,
    schema.analytics_reports,
    schema.oversight_chat_sessions,
)


# --------------------------------------------------------------------------- small helpers


def _rng(seed: int, part: str) -> random.Random:
    # One stream per table: adding rows to one table does not reshuffle the others.
    return random.Random(f"{seed}:{part}")


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _num_id(rng: random.Random, digits: int = 17, prefix: str = "17") -> str:
    """An Instagram-style numeric id (media, comment, user ids are long digit strings)."""
    rest = digits - len(prefix)
    return prefix + str(rng.randrange(10 ** (rest - 1), 10**rest))


def _snippet(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _allocate(weights: list[float], total: int) -> list[int]:
    """Split `total` over slots in proportion to weights, exactly (largest remainder)."""
    s = sum(weights) or 1.0
    raw = [w * total / s for w in weights]
    counts = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _daytime_weight(t: datetime) -> float:
    """More activity in the (UTC) afternoon and on weekdays, never zero at night."""
    h = t.hour + t.minute / 60
    w = 0.18 + (1.0 if 8 <= h <= 22 else 0.0) * (0.6 + 0.4 * (1 - abs(h - 15) / 7))
    return w * (0.8 if t.weekday() >= 5 else 1.0)


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Profile:
    username: str
    followers: int
    growth: float  # daily follower growth rate
    aov: float  # average order value, USD
    cvr: float  # orders per website click
    weekend: float  # reach factor on Saturdays and Sundays
    captions: tuple[str, ...]


PROFILES = (
    Profile("acme.coffee", 12_400, 0.0021, 18.5, 0.045, 1.18, (
        "Monday fuel: our new Ethiopia Guji single origin is here ☕",
        "Latte art throwdown this Saturday at the Main St shop!",
        "Behind the roast: how we profile a light roast",
        "Cold brew season is back. Swipe for the recipe ➡️",
        "Meet Sam, our head barista, and her go-to order",
        "Oat, almond or whole? Tell us your milk of choice 👇",
        "Pour-over 101: grind size, water temperature, patience",
        "Our Colombia Huila roast is back for the winter",
        "Weekend pastry pairing: cardamom bun and a flat white",
        "Inside the cupping room: how we pick our next origin",
        "Reusable cup day: bring yours, get 20% off",
        "New shop hours from Monday: open at 6:30am",
        "Decaf that tastes like coffee: our Swiss water process",
        "Community board: your favourite spots to read with a coffee",
    )),
    Profile("northwind.outdoors", 48_900, 0.0012, 96.0, 0.028, 1.32, (
        "Summit sunrise on the Ridge Trail. Where are you hiking this weekend?",
        "Gear check: what we pack for a 3-day trek 🎒",
        "Our new waterproof shell, tested in a week of Scottish rain",
        "Leave no trace: 5 habits every hiker should know",
        "Customer spotlight: @trailmixtina on the John Muir Trail",
        "Fall collection drop — layers for the shoulder season 🍂",
        "Trail food ideas that survive a week in a pack",
        "Repair, don't replace: our free gear repair clinic",
        "First snow on the pass. Microspikes on!",
        "Map and compass basics, in under a minute",
        "Meet the team: our head of product testing",
        "Camp kitchen upgrade: the one-pot chili recipe",
        "Wild swimming safety: 4 things to check first",
        "Sunset from the bothy, 900 m up 🌄",
    )),
    Profile("lumen.studio", 5_300, 0.0034, 240.0, 0.012, 0.86, (
        "New pendant light in brushed brass, handmade in our studio ✨",
        "Before and after: a north-facing living room, transformed",
        "Studio notes: why warm 2700K light feels like home",
        "Limited run: 20 ceramic table lamps, each one unique",
        "Design tip: layer three light sources in every room",
        "Workshop open day this Friday — come see the kilns",
        "Glaze tests: twelve shades of midnight blue",
        "How a lampshade is spun, start to finish",
        "Reading nook ideas for the darker evenings",
        "Client home tour: a Victorian terrace in soft light",
        "Dimmer or no dimmer? Our honest take",
        "Behind the wheel: throwing a lamp base",
        "Gift guide: pieces under $150",
        "Restock alert: the linen wall sconce is back",
    )),
    Profile("harbor.bakery", 8_700, 0.0018, 22.0, 0.05, 1.25, (
        "Sourdough out of the oven at 7am sharp 🥖",
        "Croissant lamination, 27 layers of patience",
        "Weekend special: cardamom buns are back",
    )),
    Profile("pixel.threads", 31_200, 0.0016, 45.0, 0.022, 1.1, (
        "Drop 07: the retro arcade tee collection 👾",
        "How we print: water-based inks on organic cotton",
        "Styled by you: tag us to be featured",
    )),
    Profile("verde.kitchen", 19_800, 0.0019, 35.0, 0.03, 1.2, (
        "15-minute green curry for busy weeknights 🌿",
        "Meal prep Sunday: 5 lunches, 1 hour",
        "Farmers market haul and what we cooked with it",
    )),
    Profile("atlas.cycling", 26_400, 0.0014, 120.0, 0.018, 1.4, (
        "Gravel season is here. Route of the week ⬇️",
        "Tubeless setup in 5 steps",
        "Club ride Saturday 8am — all paces welcome 🚴",
    )),
    Profile("nova.skincare", 64_500, 0.0011, 38.0, 0.035, 0.95, (
        "SPF every day, yes even in winter ☀️",
        "Ingredient deep dive: niacinamide",
        "Your 3-step evening routine, simplified",
    )),
    Profile("quill.books", 7_900, 0.0024, 16.0, 0.06, 1.3, (
        "Staff pick of the month 📚",
        "Cosy corner reads for a rainy weekend",
        "Author signing this Thursday, 6pm",
    )),
    Profile("summit.climbing", 14_100, 0.002, 64.0, 0.025, 1.35, (
        "New problems set on the bouldering wall 🧗",
        "Finger strength: a safe hangboard plan",
        "Youth team results from the regional comp",
    )),
)
DISCONNECTED_INDEX = 2  # lumen.studio: token expired, account disconnected by proactive sync


@dataclass(frozen=True)
class DemoAccount:
    id: uuid.UUID
    username: str
    instagram_business_id: str
    is_connected: bool
    profile: Profile


def build_accounts(rng: random.Random, n: int) -> list[DemoAccount]:
    if not 1 <= n <= len(PROFILES):
        raise ValueError(f"accounts must be between 1 and {len(PROFILES)}")
    return [
        DemoAccount(
            id=_uuid(rng),
            username=p.username,
            instagram_business_id=_num_id(rng, 17, "1784"),
            is_connected=i != DISCONNECTED_INDEX,
            profile=p,
        )
        for i, p in enumerate(PROFILES[:n])
    ]


def account_rows(rng: random.Random, accounts: list[DemoAccount], now: datetime, history_days: int) -> list[dict]:
    rows = []
    for acc in accounts:
        created = now - timedelta(days=history_days + rng.randint(20, 200), seconds=rng.randint(0, 86_399))
        rows.append({
            "id": acc.id,
            "username": acc.username,
            "instagram_business_id": acc.instagram_business_id,
            "access_token": f"demo-token-{acc.username.split('.')[0]}-{rng.getrandbits(64):016x}",
            "is_connected": acc.is_connected,
            "created_at": created,
            "updated_at": now - DISCONNECTED_AGO if not acc.is_connected else created + timedelta(days=rng.randint(1, 15)),
        })
    return rows


# --------------------------------------------------------------------------- heartbeats


def heartbeat_rows(rng: random.Random, now: datetime, *, span: timedelta | None = None,
                   per_agent: int | None = None) -> Iterator[dict]:
    """One row per beat, every ~60 s going back from each agent's last beat.

    Stops at `per_agent` beats or when the beats reach `now - span`. Intervals are 57-60 s
    (never over the 60 s liveness threshold, which would count as a gap).
    """
    gap_hi = now - GAP_END_AGO
    gap_lo = gap_hi - GAP_LENGTH
    for agent in DEMO_AGENTS:
        t = now - (DOWN_FOR + timedelta(seconds=rng.uniform(0, 20)) if agent == DOWN_AGENT
                   else timedelta(seconds=rng.uniform(1, 25)))
        n = 0
        while (per_agent is None or n < per_agent) and (span is None or t >= now - span):
            if not (agent == GAP_AGENT and gap_lo < t < gap_hi):
                yield {"id": _uuid(rng), "agent_id": agent, "status": "alive",
                       "last_beat_at": t, "created_at": t, "updated_at": t}
                n += 1
            t -= timedelta(seconds=rng.uniform(57, 60))


# --------------------------------------------------------------------------- post_queue (+ linked audit)

# Instagram errors per category (the categories the worker tells apart): (error_code, message, weight).
IG_ERRORS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "auth_failure": (
        ("190", TOKEN_EXPIRED, 6),
        ("190", "(#190) Error validating access token: The user has not authorized application.", 2),
        ("102", "(#102) Session key invalid or no longer valid", 1),
        ("104", "(#104) An access token is required to request this resource.", 1),
    ),
    "permanent": (
        ("100", "(#100) Invalid parameter", 5),
        ("36003", "(#36003) The aspect ratio is not supported.", 3),
        ("2207026", "(#2207026) The media could not be published because it does not meet Instagram's content guidelines", 2),
        ("10", "(#10) Application does not have permission for this action", 1),
        ("100", "(#100) The comment has been deleted or is no longer available", 2),
        ("551", "(#551) This person isn't available right now.", 1),
    ),
    "rate_limit": (
        ("4", "(#4) Application request limit reached", 5),
        ("17", "(#17) User request limit reached", 2),
        ("32", "(#32) Page request limit reached", 1),
        ("613", "(#613) Calls to this api have exceeded the rate limit.", 2),
        ("429", "Request failed with status code 429", 1),
    ),
    "transient": (
        ("503", "Service temporarily unavailable", 4),
        ("ETIMEDOUT", "ETIMEDOUT", 3),
        ("ECONNABORTED", "ECONNABORTED", 1),
        ("2", "(#2) An unexpected error has occurred. Please retry your request later.", 2),
        ("500", "Request failed with status code 500", 1),
    ),
    "unknown": (
        ("1", "(#1) An unknown error occurred", 3),
        ("-", "Unexpected response from Graph API: missing id in publish response", 1),
    ),
}
RETRYABLE = ("rate_limit", "transient", "unknown")


# Permanent errors that only make sense for some actions (no aspect-ratio error on a DM).
_ERROR_ACTIONS = {
    "(#36003) The aspect ratio is not supported.": ("publish_post", "repost_ugc"),
    "(#2207026) The media could not be published because it does not meet Instagram's content guidelines":
        ("publish_post", "repost_ugc"),
    "(#100) The comment has been deleted or is no longer available": ("reply_comment",),
    "(#551) This person isn't available right now.": ("reply_dm", "send_dm"),
}


def _ig_error(rng: random.Random, category: str, action: str | None = None) -> tuple[str, str]:
    options = [o for o in IG_ERRORS[category] if action is None or action in _ERROR_ACTIONS.get(o[1], (action,))]
    code, msg, _ = rng.choices(options, weights=[o[2] for o in options])[0]
    return code, msg


REPLIES = (
    "Thanks so much! 🙌", "So glad you enjoyed it!", "We restock on Fridays — see you then!",
    "Great question — check the link in our bio for details.", "Sending you a DM now 💌",
    "Love this, thank you for sharing!", "Yes, we ship internationally 🌍", "Happy you liked it!",
)
DMS = (
    "Hi! Your order is on its way — tracking: {n}.", "Thanks for reaching out! Our hours are 8am-6pm.",
    "We'd love to feature your photo. Can we repost it with credit?", "Here's your 10% code: WELCOME10",
    "Sorry about that! We've sent a replacement.", "Thanks for tagging us! 💛",
)


def _payload(rng: random.Random, action: str, acc: DemoAccount, status: str) -> dict[str, Any]:
    """The payload keys each action needs; creation_id is set once the container exists (sent or retried)."""
    has_container = status in ("sent", "processing") or (status in ("failed", "dlq") and rng.random() < 0.5)
    if action == "reply_comment":
        return {"comment_id": _num_id(rng, 17, "179"), "reply_text": rng.choice(REPLIES),
                "post_id": _num_id(rng, 17, "180")}
    if action == "reply_dm":
        return {"conversation_id": "t_" + _num_id(rng, 16, "10"),
                "message_text": rng.choice(DMS).format(n=rng.randint(10**9, 10**10))}
    if action == "send_dm":
        return {"recipient_id": _num_id(rng, 16, "6"),
                "message_text": rng.choice(DMS).format(n=rng.randint(10**9, 10**10))}
    if action == "publish_post":
        media_type = rng.choices(MEDIA_TYPES, weights=MEDIA_WEIGHTS)[0]
        base = f"https://cdn.example.com/{acc.username}/{rng.getrandbits(48):012x}"
        # payloads Instagram can publish (docs/worker.md, media types): a video has video_url, a
        # carousel lists its items in children
        media = ({"video_url": f"{base}.mp4"} if media_type == "VIDEO" else
                 {"children": [{"image_url": f"{base}-{i}.jpg"} for i in range(1, 4)]}
                 if media_type == "CAROUSEL_ALBUM" else {"image_url": f"{base}.jpg"})
        return {**media, "caption": rng.choice(acc.profile.captions), "media_type": media_type,
                "scheduled_post_id": str(_uuid(rng)),
                "creation_id": _num_id(rng, 17, "178") if has_container else None}
    # repost_ugc
    # media_url: the permitted media, which the worker needs to create a container (worker docs)
    return {"permission_id": str(_uuid(rng)),
            "media_url": f"https://cdn.example.com/ugc/{rng.getrandbits(48):012x}.jpg",
            "creation_id": _num_id(rng, 17, "178") if has_container else None}


def _queue_audit_details(row: dict, acc: DemoAccount) -> dict[str, Any]:
    p = row["payload"]
    details: dict[str, Any] = {"business_account_id": str(acc.id), "queue_id": str(row["id"]),
                               "action_type": row["action_type"]}
    if row["action_type"] == "publish_post":
        details.update(caption=p["caption"], media_type=p["media_type"],
                       **{k: p[k] for k in ("image_url", "video_url") if k in p})
    elif row["action_type"] == "reply_comment":
        details.update(comment_id=p["comment_id"], post_id=p["post_id"])
    elif row["action_type"] == "reply_dm":
        details.update(conversation_id=p["conversation_id"])
    elif row["action_type"] == "send_dm":
        details.update(recipient_id=p["recipient_id"])
    else:
        details.update(permission_id=p["permission_id"])
    return details


def _audit(rng: random.Random, *, user_agent: str | None = AGENT_USER_AGENT, ip: str | None = None,
           **kwargs: Any) -> dict:
    row = audit_row(**kwargs)
    row["id"] = _uuid(rng)  # deterministic instead of uuid4
    row["ip_address"] = ip
    row["user_agent"] = user_agent
    return row


def _recent_time(rng: random.Random, now: datetime, days: float) -> datetime:
    """A time in the last `days`, more likely in the daytime (rejection sampling)."""
    while True:
        t = now - timedelta(seconds=rng.uniform(0, days * 86_400))
        if rng.random() < _daytime_weight(t):
            return t


def queue_rows(rng: random.Random, accounts: list[DemoAccount], now: datetime, *,
               counts: dict[str, int], days: float) -> Iterator[tuple[dict, list[dict]]]:
    """post_queue rows with the audit rows they caused: (queue row, [audit rows]).

    The first rows of each status cycle through all action types, so every status x type
    cell exists; DLQ rows start with repeated token-expired errors of the disconnected
    account and then cover every error category.
    """
    disconnected = [a for a in accounts if not a.is_connected]
    disconnected_at = now - DISCONNECTED_AGO
    keys: set[str] = set()
    for status in ("sent", "dlq", "failed", "processing", "pending"):
        n = counts.get(status, 0)
        n_token = max(min(40, n), n // 10) if status == "dlq" and disconnected else 0
        for i in range(n):
            action = ACTION_TYPES[i % len(ACTION_TYPES)] if i < 2 * len(ACTION_TYPES) else \
                rng.choices(ACTION_TYPES, weights=(38, 14, 12, 24, 12))[0]
            acc = disconnected[0] if i < n_token else rng.choice(accounts)
            payload = _payload(rng, action, acc, status)
            key = idempotency_key(acc.id, action, payload)
            while key in keys:  # practically never; keeps the unique index happy at any scale
                payload = _payload(rng, action, acc, status)
                key = idempotency_key(acc.id, action, payload)
            keys.add(key)
            row = {"id": _uuid(rng), "business_account_id": acc.id, "action_type": action, "payload": payload,
                   "idempotency_key": key, "status": status, "retry_count": 0, "error": None,
                   "error_category": None, "instagram_id": None, "next_retry_at": None,
                   "created_at": None, "updated_at": None}
            audits: list[dict] = []
            if status == "sent":
                updated = _recent_time(rng, now, days)
                row["retry_count"] = rng.choices((0, 1, 2, 3), weights=(90, 6, 3, 1))[0]
                row["created_at"] = updated - timedelta(seconds=rng.uniform(3, 300) * (1 + row["retry_count"] * 6))
                row["updated_at"] = updated
                row["instagram_id"] = _num_id(rng, 17, "179" if action != "send_dm" else "aW")
                event, verb, resource = SUCCESS_EVENT[action]
                audits.append(_audit(rng, event_type=event, action=verb, resource_type=resource,
                                     resource_id=row["instagram_id"], now=updated, success=True,
                                     details={**_queue_audit_details(row, acc), "instagram_id": row["instagram_id"]}))
            elif status == "dlq":
                if i < n_token:
                    category, code, msg = "auth_failure", "190", TOKEN_EXPIRED
                    updated = disconnected_at + timedelta(seconds=rng.uniform(0, DISCONNECTED_AGO.total_seconds() - 60))
                else:
                    j = i - n_token
                    category = ("auth_failure", "permanent", "rate_limit", "transient", "unknown")[j % 5] if j < 10 else \
                        rng.choices(("auth_failure", "permanent", "rate_limit", "transient", "unknown"),
                                    weights=(8, 38, 20, 24, 10))[0]
                    code, msg = _ig_error(rng, category, action)
                    updated = _recent_time(rng, now, max(days, 14))
                row["retry_count"] = MAX_RETRIES if category in RETRYABLE else rng.choices((0, 1, 2), weights=(85, 10, 5))[0]
                row["created_at"] = updated - timedelta(minutes=62 if category in RETRYABLE else rng.uniform(0.1, 3),
                                                        seconds=rng.uniform(0, 120))
                row.update(updated_at=updated, error=msg, error_category=category)
                audits.append(_audit(rng, event_type="post_failed_permanent", action="post_queue_dlq",
                                     resource_type="post_queue", resource_id=str(row["id"]), now=updated,
                                     success=False, error_message=msg,
                                     details={**_queue_audit_details(row, acc), "error_category": category,
                                              "error_code": code, "retry_count": row["retry_count"]}))
            elif status == "failed":
                category = rng.choices(RETRYABLE, weights=(45, 45, 10))[0]
                code, msg = _ig_error(rng, category, action)
                rc = rng.randint(1, 4)
                backoff = backoff_delay(rc)
                due = rng.random() < 0.5
                updated = now - (backoff + timedelta(minutes=rng.uniform(1, 30)) if due
                                 else backoff * rng.uniform(0.05, 0.9))
                row.update(retry_count=rc, error=msg, error_category=category, updated_at=updated,
                           next_retry_at=updated + backoff,
                           created_at=updated - sum((backoff_delay(k) for k in range(1, rc)), timedelta())
                           - timedelta(minutes=rng.uniform(0.1, 5)))
            elif status == "processing":
                updated = now - (timedelta(minutes=25) if i == 0 else timedelta(seconds=rng.uniform(5, 150)))
                row.update(updated_at=updated, created_at=updated - timedelta(seconds=rng.uniform(1, 600)))
            else:  # pending; some were dead-lettered and retried by an operator
                requeued = rng.random() < 0.15
                updated = now - timedelta(seconds=rng.uniform(5, 5400))
                created = updated - timedelta(days=rng.uniform(0.2, 6)) if requeued else updated
                row.update(created_at=created, updated_at=updated)
                if requeued:
                    category = rng.choice(("permanent", "rate_limit", "transient", "unknown"))
                    code, msg = _ig_error(rng, category, action)
                    prev_rc = MAX_RETRIES if category in RETRYABLE else 0
                    audits.append(_audit(rng, event_type="queue_item_retried", action="retry",
                                         resource_type="post_queue", resource_id=str(row["id"]), now=updated,
                                         user_id=OPERATOR, success=True, user_agent=OPERATOR_USER_AGENT,
                                         ip=f"10.0.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
                                         details={"business_account_id": str(acc.id), "queue_id": str(row["id"]),
                                                  "action_type": action, "previous_status": "dlq",
                                                  "previous_retry_count": prev_rc, "previous_error": msg,
                                                  "previous_error_category": category}))
            yield row, audits


# --------------------------------------------------------------------------- audit_log (background)

_EVENT_MIX = (
    ("comment_replied", 38), ("dm_sent", 27), ("post_published", 12), ("ugc_reposted", 8),
    ("post_failed_permanent", 5), ("auth_failure", 0.25), ("queue_item_retried", 2), ("alert_resolved", 1.5),
)
_EVENT_TO_ACTION = {"post_published": "publish_post", "comment_replied": "reply_comment",
                    "ugc_reposted": "repost_ugc"}


def audit_background_rows(rng: random.Random, accounts: list[DemoAccount], now: datetime, *,
                          days: int, total: int) -> Iterator[dict]:
    """`total` audit rows over the last `days`, oldest first, more during the day.

    These are the events of queue rows that were pruned since (sent rows are cleaned up),
    so their queue_id points nowhere; the rows linked to live queue rows come from queue_rows.
    """
    slots = [now - timedelta(hours=days * 24 - h) for h in range(days * 24)]
    per_slot = _allocate([_daytime_weight(s) for s in slots], total)
    events, weights = zip(*_EVENT_MIX)
    for start, n in zip(slots, per_slot):
        for offset in sorted(rng.uniform(0, 3600) for _ in range(n)):
            t = start + timedelta(seconds=offset)
            acc = rng.choice(accounts)
            event = rng.choices(events, weights=weights)[0]
            yield _background_event(rng, event, acc, t)


def _background_event(rng: random.Random, event: str, acc: DemoAccount, t: datetime) -> dict:
    base = {"business_account_id": str(acc.id), "queue_id": str(_uuid(rng))}
    if event == "dm_sent":
        action = rng.choice(("reply_dm", "send_dm"))
    else:
        action = _EVENT_TO_ACTION.get(event, rng.choice(ACTION_TYPES))
    if event in ("comment_replied", "dm_sent", "post_published", "ugc_reposted"):
        _, verb, resource = SUCCESS_EVENT[action]
        payload = _payload(rng, action, acc, "sent")
        fake = {"id": base["queue_id"], "action_type": action, "payload": payload}
        details = _queue_audit_details(fake, acc)
        if rng.random() < 0.03:  # the agent backends also log failed calls (their audit rows record failures too)
            category = rng.choice(("permanent", "rate_limit", "transient"))
            code, msg = _ig_error(rng, category, action)
            return _audit(rng, event_type=event, action=verb, resource_type=resource, resource_id=base["queue_id"], now=t,
                          success=False, error_message=msg,
                          details={**details, "error_code": code, "error_category": category})
        media_id = _num_id(rng, 17, "179")
        return _audit(rng, event_type=event, action=verb, resource_type=resource, resource_id=media_id, now=t,
                      success=True, details={**details, "instagram_id": media_id})
    if event == "post_failed_permanent":
        category = rng.choices(("auth_failure", "permanent", "rate_limit", "transient", "unknown"),
                               weights=(8, 38, 20, 24, 10))[0]
        code, msg = _ig_error(rng, category, action)
        return _audit(rng, event_type=event, action="post_queue_dlq", resource_type="post_queue",
                      resource_id=base["queue_id"], now=t, success=False, error_message=msg,
                      details={**base, "action_type": action, "error_category": category, "error_code": code,
                               "retry_count": MAX_RETRIES if category in RETRYABLE else 0})
    if event == "auth_failure":
        code, msg = _ig_error(rng, "auth_failure")
        return _audit(rng, event_type=event, action="disconnect", resource_type="instagram_business_accounts",
                      resource_id=str(acc.id), now=t, success=False, error_message=msg,
                      details={"business_account_id": str(acc.id), "username": acc.username,
                               "source": "proactive_sync", "error_code": code})
    ip = f"10.0.{rng.randint(0, 9)}.{rng.randint(2, 250)}"
    if event == "queue_item_retried":
        category = rng.choice(("permanent", "rate_limit", "transient", "unknown", "auth_failure"))
        code, msg = _ig_error(rng, category, action)
        return _audit(rng, event_type=event, action="retry", resource_type="post_queue",
                      resource_id=base["queue_id"], now=t, user_id=OPERATOR, success=True,
                      user_agent=OPERATOR_USER_AGENT, ip=ip,
                      details={**base, "action_type": action, "previous_status": "dlq",
                               "previous_retry_count": MAX_RETRIES if category in RETRYABLE else 0,
                               "previous_error": msg, "previous_error_category": category})
    alert_id = str(_uuid(rng))
    return _audit(rng, event_type="alert_resolved", action="resolve", resource_type="system_alerts",
                  resource_id=alert_id, now=t, user_id=OPERATOR, success=True,
                  user_agent=OPERATOR_USER_AGENT, ip=ip,
                  details={"business_account_id": str(acc.id), "alert_id": alert_id,
                           "alert_type": rng.choice(("rate_limit", "sync_failure", "content_violation"))})


def disconnect_audit_rows(rng: random.Random, accounts: list[DemoAccount], now: datetime) -> list[dict]:
    """The auth_failure event that disconnected each disconnected account."""
    return [
        _audit(rng, event_type="auth_failure", action="disconnect", resource_type="instagram_business_accounts",
               resource_id=str(a.id), now=now - DISCONNECTED_AGO, success=False, error_message=TOKEN_EXPIRED,
               details={"business_account_id": str(a.id), "username": a.username, "source": "proactive_sync",
                        "error_code": "190"})
        for a in accounts if not a.is_connected
    ]


# --------------------------------------------------------------------------- system_alerts

_ALERT_SOURCES = {"auth_failure": "proactive_sync", "rate_limit": "post_fallback",
                  "content_violation": "publishing", "agent_down": "heartbeat_watchdog",
                  "sync_failure": "proactive_sync"}


def _alert(rng: random.Random, alert_type: str, acc: DemoAccount | None, created: datetime, *,
           resolved_at: datetime | None, count: int, now: datetime, agent_id: str | None = None,
           last_beat_at: datetime | None = None, error: tuple[str, str] | None = None) -> dict:
    ig = acc.instagram_business_id if acc else ""
    last_seen = min(resolved_at or now, created + timedelta(minutes=rng.uniform(5, 45) * (count - 1)))
    details: dict[str, Any] = {"source": _ALERT_SOURCES[alert_type], "occurred_at": iso(created),
                               "count": count, "first_seen": iso(created), "last_seen": iso(last_seen)}
    if alert_type == "agent_down":
        minutes = max(1, round(((last_seen if resolved_at else now) - last_beat_at).total_seconds() / 60))
        details.update(agent_id=agent_id, last_beat_at=iso(last_beat_at), threshold_s=60)
        message = f"Agent {agent_id} is not responding: no heartbeat for {minutes} minutes"
    else:
        category = {"auth_failure": "auth_failure", "rate_limit": "rate_limit", "sync_failure": "transient",
                    "content_violation": "permanent"}[alert_type]
        code, msg = error or _ig_error(rng, category)
        if alert_type == "content_violation" and error is None:
            code, msg = rng.choice([e[:2] for e in IG_ERRORS["permanent"] if e[0] in ("2207026", "36003")])
        endpoint = {"auth_failure": f"/{ig}/media", "rate_limit": rng.choice((f"/{ig}/media_publish", "/me/messages",
                                                                            f"/{_num_id(rng)}/replies")),
                    "content_violation": f"/{ig}/media_publish", "sync_failure": f"/{ig}/insights"}[alert_type]
        details.update(error_code=code, endpoint=endpoint, last_error=msg,
                       retry_count=MAX_RETRIES if alert_type in ("rate_limit", "sync_failure") else 0)
        message = {
            "auth_failure": f"Proactive sync auth failure: {msg}",
            "rate_limit": f"Instagram API rate limit hit for @{acc.username}: {msg}",
            "content_violation": f"Content rejected by Instagram for @{acc.username}: {msg}",
            "sync_failure": f"Data sync from Instagram failed for @{acc.username}: {msg}",
        }[alert_type]
    if resolved_at is not None:
        details["resolved_by"] = "worker" if alert_type == "agent_down" else rng.choice((OPERATOR, "worker"))
    return {"id": _uuid(rng), "alert_type": alert_type, "message": message,
            "business_account_id": acc.id if acc else None, "details": details,
            "resolved": resolved_at is not None, "resolved_at": resolved_at, "created_at": created,
            "updated_at": resolved_at or (last_seen if count > 1 else created)}


def alert_rows(rng: random.Random, accounts: list[DemoAccount], now: datetime, *, days: int,
               total: int) -> list[dict]:
    """The open alerts the demo tells a story with, then resolved history up to `total` rows.

    At most one open alert per (type, account or agent), as the worker keeps it.
    """
    rows: list[dict] = []
    down_last_beat = now - DOWN_FOR
    rows.append(_alert(rng, "agent_down", None, down_last_beat + timedelta(seconds=75), resolved_at=None,
                       count=1, now=now, agent_id=DOWN_AGENT, last_beat_at=down_last_beat))
    gap_start = now - GAP_END_AGO - GAP_LENGTH
    rows.append(_alert(rng, "agent_down", None, gap_start + timedelta(seconds=75), resolved_at=now - GAP_END_AGO,
                       count=1, now=now, agent_id=GAP_AGENT, last_beat_at=gap_start))
    by_name = {a.username: a for a in accounts}
    lumen = next((a for a in accounts if not a.is_connected), accounts[-1])
    rows.append(_alert(rng, "auth_failure", lumen, now - DISCONNECTED_AGO, resolved_at=None, count=40, now=now,
                       error=("190", TOKEN_EXPIRED)))
    first = accounts[0]
    busy = by_name.get("northwind.outdoors", first)
    rows.append(_alert(rng, "rate_limit", busy, now - timedelta(minutes=95), resolved_at=None, count=7, now=now))
    rows.append(_alert(rng, "content_violation", first, now - timedelta(hours=9), resolved_at=None, count=2, now=now))
    rows.append(_alert(rng, "sync_failure", busy, now - timedelta(hours=2, minutes=20), resolved_at=None, count=3,
                       now=now))
    types = ("auth_failure", "rate_limit", "content_violation", "agent_down", "sync_failure")
    for _ in range(max(0, total - len(rows))):
        alert_type = rng.choices(types, weights=(8, 40, 18, 14, 20))[0]
        created = _recent_time(rng, now - timedelta(hours=12), days)
        resolved_at = created + timedelta(minutes=rng.uniform(2, 600))
        count = rng.choices((1, 2, 3, 5, 12), weights=(60, 15, 12, 8, 5))[0]
        if alert_type == "agent_down":
            agent = rng.choice(DEMO_AGENTS)
            rows.append(_alert(rng, alert_type, None, created, resolved_at=resolved_at, count=1, now=now,
                               agent_id=agent, last_beat_at=created - timedelta(seconds=rng.uniform(61, 120))))
        else:
            rows.append(_alert(rng, alert_type, rng.choice(accounts), created, resolved_at=resolved_at,
                               count=count, now=now))
    return rows[:total] if total < len(rows) else rows


def alert_audit_rows(rng: random.Random, alerts: list[dict]) -> list[dict]:
    """alert_resolved audit rows for the alerts an operator resolved (the worker's auto-resolves log none)."""
    out = []
    for a in alerts:
        if a["resolved"] and a["details"].get("resolved_by") == OPERATOR:
            out.append(_audit(rng, event_type="alert_resolved", action="resolve", resource_type="system_alerts",
                              resource_id=str(a["id"]), now=a["resolved_at"], user_id=OPERATOR, success=True,
                              user_agent=OPERATOR_USER_AGENT, ip=f"10.0.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
                              details={"business_account_id": str(a["business_account_id"] or ""),
                                       "alert_id": str(a["id"]), "alert_type": a["alert_type"]}))
    return out


# --------------------------------------------------------------------------- analytics_reports

MEDIA_TYPES = ("IMAGE", "VIDEO", "CAROUSEL_ALBUM")
MEDIA_WEIGHTS = (0.45, 0.3, 0.25)
_MEDIA_LIFT = {"IMAGE": 1.0, "VIDEO": 1.45, "CAROUSEL_ALBUM": 1.2}
_MEDIA_LABEL = {"IMAGE": "Image", "VIDEO": "Video (Reels)", "CAROUSEL_ALBUM": "Carousel"}
TOUCHPOINTS = ("post", "story", "reel", "dm", "bio_link")
COMPARED_METRICS = ("impressions", "reach", "profile_views", "website_clicks", "followers_count", "total_likes",
                    "total_comments", "total_saves", "total_shares", "avg_engagement_rate")
DATA_SOURCES = ["instagram_graph_api:insights", "instagram_graph_api:media", "shopify:orders", "attribution_model:v3"]


@dataclass
class DayStats:
    day: date
    followers_count: int
    follower_growth: int
    impressions: int
    reach: int
    profile_views: int
    website_clicks: int
    total_posts: int  # lifetime, at the end of the day
    posts: list[dict]
    orders: int
    revenue: float
    assisted: int
    scores: list[float]
    touchpoints: Counter = field(default_factory=Counter)


def daily_series(rng: random.Random, acc: DemoAccount, first: date, last: date,
                 published: dict[date, list[tuple[str, str | None]]] | None = None) -> dict[date, DayStats]:
    """Day-by-day metrics: compound follower growth, weekend seasonality, noise, rare viral days and dips.

    `published`: per UTC day the (instagram_id, caption) of the queue's sent publish_post/repost_ugc
    rows of this account; the day's first posts take those media ids (and captions), so the reports
    speak about the media the queue published (the Posts view joins on them)."""
    p = acc.profile
    n = (last - first).days + 1
    followers = p.followers / (1 + p.growth) ** n
    total_posts = 180 + rng.randint(0, 400)
    recent: list[str] = []  # the account's latest captions, newest last
    out: dict[date, DayStats] = {}
    for i in range(n):
        d = first + timedelta(days=i)
        season = p.weekend if d.weekday() >= 5 else (1.05 if d.weekday() in (1, 2) else 1.0)
        viral = rng.uniform(1.8, 3.2) if rng.random() < 0.03 else 1.0
        dip = 0.45 if rng.random() < 0.015 else 1.0  # e.g. a partial insights sync
        reach = max(50, round(followers * 0.3 * season * rng.lognormvariate(0, 0.12) * viral * dip))
        growth = round(followers * p.growth * season * rng.lognormvariate(0, 0.35) * viral ** 1.3)
        if rng.random() < 0.08:
            growth = -rng.randint(1, max(2, growth // 2 + 1))  # unfollow wave after a promo
        followers += growth
        profile_views = round(reach * rng.uniform(0.03, 0.05))
        clicks = round(profile_views * rng.uniform(0.08, 0.16))
        k = 1 + (rng.random() < 0.45) + (rng.random() < 0.15)
        posts = []
        for j in range(k):
            mt = rng.choices(MEDIA_TYPES, weights=MEDIA_WEIGHTS)[0]
            post_reach = max(20, round(reach * rng.uniform(0.35, 0.7)))
            likes = round(post_reach * 0.042 * _MEDIA_LIFT[mt] * rng.lognormvariate(0, 0.25))
            comments = round(likes * rng.uniform(0.02, 0.06))
            saves = round(likes * rng.uniform(0.05, 0.12) * (1.4 if mt == "CAROUSEL_ALBUM" else 1.0))
            shares = round(likes * rng.uniform(0.01, 0.05) * (1.5 if mt == "VIDEO" else 1.0))
            engagement = likes + comments + saves + shares
            posted = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(
                hours=rng.choice((8, 11, 13, 17, 19)), minutes=rng.randint(0, 59))
            caption = rng.choice(p.captions)
            media_id = _num_id(rng, 17, "179")
            queued = (published or {}).get(d) or []
            if j < len(queued):  # the same rng draws either way: the rest of the data set is unchanged
                media_id, caption = queued[j][0], queued[j][1] or _fresh_caption(caption, p.captions, recent)
            else:
                caption = _fresh_caption(caption, p.captions, recent)
            recent.append(caption)
            posts.append({"media_id": media_id, "media_type": mt, "caption": caption, "likes": likes,
                          "comments": comments, "saves": saves, "shares": shares, "reach": post_reach,
                          "engagement": engagement, "engagement_rate": round(engagement / post_reach * 100, 2),
                          "timestamp": iso(posted),
                          "permalink": f"https://www.instagram.com/p/{rng.getrandbits(60):015x}/"})
        total_posts += k
        orders = max(0, round(clicks * p.cvr * rng.lognormvariate(0, 0.3)))
        revenue = round(sum(p.aov * rng.lognormvariate(0, 0.25) for _ in range(orders)), 2)
        tps = Counter(rng.choices(TOUCHPOINTS, weights=(30, 25, 25, 8, 12), k=orders))
        out[d] = DayStats(d, round(followers), growth, round(reach * rng.uniform(1.55, 2.05)), reach,
                          profile_views, clicks, total_posts, posts, orders, revenue,
                          rng.randint(0, max(1, orders // 2)), [round(rng.uniform(0.35, 0.9), 2) for _ in range(orders)],
                          tps)
    return out


def _fresh_caption(drawn: str, pool: tuple[str, ...], recent: list[str]) -> str:
    """`drawn`, unless one of the account's last posts had it: then the caption unused the longest.
    A real account does not post the same caption twice in a week, and a week's best and worst post
    with one caption read as the same post."""
    window = recent[-(len(pool) - 2):] if len(pool) > 2 else []
    if drawn not in window:
        return drawn
    last_use = {c: i for i, c in enumerate(recent)}
    return min(pool, key=lambda c: last_use.get(c, -1))


def _interactions(m: dict) -> int:
    return m["total_likes"] + m["total_comments"] + m["total_saves"] + m["total_shares"]


def instagram_metrics(days: list[DayStats]) -> dict[str, Any]:
    """instagram_metrics for a period of one or more days."""
    posts = [p for d in days for p in d.posts]
    reach = sum(d.reach for d in days)
    if len(days) > 1:
        reach = round(reach * 0.8)  # the same account reached on two days counts once in a period
    return {
        "impressions": sum(d.impressions for d in days),
        "reach": reach,
        "profile_views": sum(d.profile_views for d in days),
        "website_clicks": sum(d.website_clicks for d in days),
        "follower_growth": sum(d.follower_growth for d in days),
        "followers_count": days[-1].followers_count,
        "posts_published": len(posts),
        "total_likes": sum(p["likes"] for p in posts),
        "total_comments": sum(p["comments"] for p in posts),
        "total_saves": sum(p["saves"] for p in posts),
        "total_shares": sum(p["shares"] for p in posts),
        "avg_engagement_rate": round(sum(p["engagement_rate"] for p in posts) / len(posts), 2) if posts else 0.0,
    }


def _post_summary(p: dict) -> dict[str, Any]:
    return {"media_id": p["media_id"], "media_type": p["media_type"], "caption_snippet": _snippet(p["caption"]),
            "likes": p["likes"], "comments": p["comments"], "saves": p["saves"], "shares": p["shares"],
            "reach": p["reach"], "engagement": p["engagement"], "engagement_rate": p["engagement_rate"],
            "permalink": p["permalink"], "timestamp": p["timestamp"]}


def media_metrics(days: list[DayStats]) -> dict[str, Any]:
    """media_metrics for a period."""
    posts = [p for d in days for p in d.posts]
    n = len(posts) or 1
    ranked = sorted(posts, key=lambda p: p["engagement"], reverse=True)
    by_type: dict[str, Any] = {}
    for mt in MEDIA_TYPES:
        mine = [p for p in posts if p["media_type"] == mt]
        if mine:
            by_type[mt] = {"count": len(mine),
                           "avg_likes": round(sum(p["likes"] for p in mine) / len(mine), 1),
                           "avg_comments": round(sum(p["comments"] for p in mine) / len(mine), 1),
                           "avg_reach": round(sum(p["reach"] for p in mine) / len(mine), 1),
                           "avg_engagement_rate": round(sum(p["engagement_rate"] for p in mine) / len(mine), 2)}
    avg_likes = round(sum(p["likes"] for p in posts) / n, 1)
    avg_comments = round(sum(p["comments"] for p in posts) / n, 1)
    return {
        "total_posts": days[-1].total_posts,
        "total_posts_in_period": len(posts),
        "avg_likes": avg_likes,
        "avg_comments": avg_comments,
        "avg_likes_per_post": avg_likes,
        "avg_comments_per_post": avg_comments,
        "avg_reach": round(sum(p["reach"] for p in posts) / n, 1),
        "avg_engagement_rate": round(sum(p["engagement_rate"] for p in posts) / n, 2),
        "top_performing": [{"media_id": p["media_id"], "engagement": p["engagement"],
                            "caption_snippet": _snippet(p["caption"])} for p in ranked[:3]],
        "best_post": _post_summary(ranked[0]) if ranked else {},
        # a period's only post is its best one, not also its worst
        "worst_post": _post_summary(ranked[-1]) if len(ranked) > 1 else {},
        "by_media_type": by_type,
    }


def revenue_metrics(days: list[DayStats]) -> dict[str, Any]:
    """revenue_metrics for a period."""
    orders = sum(d.orders for d in days)
    revenue = round(sum(d.revenue for d in days), 2)
    clicks = sum(d.website_clicks for d in days)
    scores = [s for d in days for s in d.scores]
    tps = sum((d.touchpoints for d in days), Counter())
    return {
        "attributed_revenue": revenue,
        "attribution_count": orders + sum(d.assisted for d in days),
        "avg_order_value": round(revenue / orders, 2) if orders else 0.0,
        "conversion_rate": round(orders / clicks, 4) if clicks else 0.0,
        "attributed_orders": orders,
        "avg_attribution_score": round(sum(scores) / len(scores), 2) if scores else 0.0,
        "top_touchpoint_type": tps.most_common(1)[0][0] if tps else "post",
    }


def historical_comparison(cur: dict, prev: dict, *, period: str, prev_start: date, prev_end: date,
                          label: str) -> dict[str, Any]:
    """historical_comparison: current vs the previous report's instagram_metrics (deltas are current - previous)."""
    changes = {}
    for m in COMPARED_METRICS:
        p, c = prev[m], cur[m]
        pct = round((c - p) / p * 100, 1) if p else 0.0
        changes[m] = {"previous": p, "current": c, "change_pct": pct,
                      "trend": "up" if pct >= 1 else "down" if pct <= -1 else "flat"}
    span = prev_start.isoformat() if prev_start == prev_end else f"{prev_start.isoformat()} to {prev_end.isoformat()}"
    return {
        "period": period,
        "impressions_delta": cur["impressions"] - prev["impressions"],
        "reach_delta": cur["reach"] - prev["reach"],
        "engagement_delta": _interactions(cur) - _interactions(prev),  # likes+comments+saves+shares
        "follower_delta": cur["followers_count"] - prev["followers_count"],
        "previous_period": {"start_date": prev_start.isoformat(), "end_date": prev_end.isoformat()},
        "changes": changes,
        "note": f"Compared with {label} ({span}). engagement_delta counts likes, comments, saves and shares.",
    }


def _updown(pct: float) -> str:
    return f"up {abs(pct):.1f}%" if pct > 0 else f"down {abs(pct):.1f}%" if pct < 0 else "unchanged"


def insights(acc: DemoAccount, ig: dict, media: dict, rev: dict, comp: dict, *, label: str,
             anomaly_pct: float) -> dict[str, list[str]]:
    """The report's findings as readable sentences derived from the numbers of the same report."""
    ch = comp["changes"]
    findings = [f"Reach was {_updown(ch['reach']['change_pct'])} vs {label}, at {ig['reach']:,} accounts.",
                f"Followers {'grew by' if ig['follower_growth'] >= 0 else 'fell by'} {abs(ig['follower_growth']):,} "
                f"to {ig['followers_count']:,}."]
    best = media["best_post"]
    if best:
        findings.append(f"The best post ({_MEDIA_LABEL[best['media_type']]}, “{best['caption_snippet']}”) earned "
                        f"{best['engagement']:,} interactions at a {best['engagement_rate']}% engagement rate.")
    if rev["attributed_orders"]:
        findings.append(f"{rev['attributed_orders']} attributed orders brought ${rev['attributed_revenue']:,.2f} "
                        f"(top touchpoint: {rev['top_touchpoint_type']}).")
    recs = []
    types = media["by_media_type"]
    if len(types) >= 2:
        ranked = sorted(types.items(), key=lambda kv: kv[1]["avg_engagement_rate"], reverse=True)
        (top, t), (low, lo) = ranked[0], ranked[-1]
        recs.append(f"Publish more {_MEDIA_LABEL[top].lower()} content: it averaged {t['avg_engagement_rate']}% "
                    f"engagement vs {lo['avg_engagement_rate']}% for {_MEDIA_LABEL[low].lower()} posts.")
    else:
        recs.append("Mix formats: Reels and carousels usually lift saves and shares over single images.")
    if acc.profile.weekend > 1.05:
        lift = round((acc.profile.weekend - 1) * 100)
        recs.append(f"Schedule key posts for the weekend, when reach runs about {lift}% higher.")
    else:
        recs.append("Post on Tuesday and Wednesday mornings; weekend reach is lower for this audience.")
    if rev["conversion_rate"] < 0.02:
        recs.append("Add product tags and a link sticker to stories: fewer than 2% of website clicks convert.")
    anomalies = []
    for m, name in (("impressions", "Impressions"), ("reach", "Reach"), ("website_clicks", "Website clicks"),
                    ("total_likes", "Likes")):
        c = ch[m]
        if abs(c["change_pct"]) >= anomaly_pct:
            anomalies.append(f"{name} {'jumped' if c['change_pct'] > 0 else 'dropped'} {abs(c['change_pct']):.0f}% vs "
                             f"{label} ({c['previous']:,} → {c['current']:,}).")
    if ig["follower_growth"] < 0:
        anomalies.append(f"Net follower loss of {-ig['follower_growth']:,}: check for an unfollow wave after recent posts.")
    return {"key_findings": findings, "recommendations": recs, "anomalies": anomalies}


def _report_row(rng: random.Random, acc: DemoAccount, report_type: str, report_date: datetime,
                cur_days: list[DayStats], prev_days: list[DayStats]) -> dict:
    daily = report_type == "daily"
    ig = instagram_metrics(cur_days)
    prev = instagram_metrics(prev_days)
    media = media_metrics(cur_days)
    rev = revenue_metrics(cur_days)
    label = "the previous day" if daily else "the previous week"
    comp = historical_comparison(ig, prev, period="vs_last_1d" if daily else "vs_last_7d",
                                 prev_start=prev_days[0].day, prev_end=prev_days[-1].day, label=label)
    processed = report_date + timedelta(seconds=rng.uniform(40, 420))
    return {
        "id": _uuid(rng), "business_account_id": acc.id, "report_type": report_type, "report_date": report_date,
        "start_date": cur_days[0].day.isoformat(), "end_date": cur_days[-1].day.isoformat(),
        "instagram_metrics": ig, "media_metrics": media, "revenue_metrics": rev, "historical_comparison": comp,
        "insights": insights(acc, ig, media, rev, comp, label=label, anomaly_pct=45 if daily else 30),
        "data_sources": DATA_SOURCES, "processed_at": processed,
        "run_id": f"analytics-{report_type}-{cur_days[-1].day:%Y%m%d}-{rng.getrandbits(24):06x}",
        "created_at": processed,
    }


def report_rows(rng: random.Random, accounts: list[DemoAccount], now: datetime, *, days: int,
                weeks: int, published: dict | None = None) -> Iterator[dict]:
    """Per account the `days` latest daily reports (02:00 UTC, covering the day before) and the
    `weeks` latest weekly reports (Monday 08:00 UTC, covering Monday-Sunday before)."""
    today = now.date()
    last_daily = today if now >= datetime(today.year, today.month, today.day, 2, tzinfo=UTC) \
        else today - timedelta(days=1)
    monday = today - timedelta(days=today.weekday())
    if now < datetime(monday.year, monday.month, monday.day, 8, tzinfo=UTC):
        monday -= timedelta(days=7)
    first_needed = min(last_daily - timedelta(days=days + 1), monday - timedelta(days=7 * (weeks + 1)))
    for acc in accounts:
        series = daily_series(rng, acc, first_needed, last_daily - timedelta(days=1),
                              published=(published or {}).get(acc.id))
        for k in range(days - 1, -1, -1):
            rd = last_daily - timedelta(days=k)
            covered = rd - timedelta(days=1)
            yield _report_row(rng, acc, "daily", datetime(rd.year, rd.month, rd.day, 2, tzinfo=UTC),
                              [series[covered]], [series[covered - timedelta(days=1)]])
        for k in range(weeks - 1, -1, -1):
            m = monday - timedelta(days=7 * k)
            cur = [series[m - timedelta(days=7 - i)] for i in range(7)]
            prev = [series[m - timedelta(days=14 - i)] for i in range(7)]
            yield _report_row(rng, acc, "weekly", datetime(m.year, m.month, m.day, 8, tzinfo=UTC), cur, prev)


# --------------------------------------------------------------------------- oversight_chat_sessions

_QA = (
    ("Why are there so many items in the DLQ?",
     "Most of the dead-lettered items are auth failures for @lumen.studio: “(#190) Error validating access token: "
     "Session has expired”. The account was disconnected by proactive sync. Reconnect it, then retry those "
     "items from the Queue Monitor; the remaining items are permanent errors such as unsupported aspect ratios.",
     ["get_dlq_items", "get_system_alerts"]),
    ("Which agents are down right now?",
     "ugc-discovery has not sent a heartbeat for about 17 minutes, so it counts as down and an agent_down alert is "
     "open. engagement-monitor, content-scheduler and oversight-brain are alive.",
     ["get_agent_heartbeats"]),
    ("How did reach develop last week?",
     "Weekly reach rose compared with the week before, driven by two Reels that reached well beyond followers. "
     "Weekend days were the strongest.",
     ["get_analytics_reports"]),
    ("What were our top posts this week?",
     "The top three posts by engagement were a Reel and two carousels; the Reel alone earned more interactions than "
     "all single-image posts combined.",
     ["get_analytics_reports", "get_media_insights"]),
    ("Summarise today's failures.",
     "Today 12 actions failed: 7 rate limits (#4 Application request limit reached) that are being retried with "
     "backoff, 3 timeouts, and 2 permanent errors (#100 Invalid parameter) that went to the DLQ.",
     ["get_post_queue_status", "search_audit_log"]),
    ("Is content-scheduler healthy?",
     "Yes. It had a 40-minute gap about six hours ago (an agent_down alert was raised and auto-resolved) and has "
     "beaten every minute since.",
     ["get_agent_heartbeats", "get_system_alerts"]),
    ("Are we close to the Instagram rate limit?",
     "@northwind.outdoors hit the application request limit 7 times in the last two hours. Spreading DM replies "
     "over the hour would keep it under the limit.",
     ["get_system_alerts", "get_post_queue_status"]),
    ("How much revenue did Instagram drive this month?",
     "Attributed revenue this month is up on last month; stories and Reels are the top touchpoints, and the "
     "conversion rate on website clicks is around 3%.",
     ["get_analytics_reports"]),
)
CHAT_USERS = ("local", "analyst@example.com", OPERATOR, "maria@example.com", "devon@example.com")


def chat_rows(rng: random.Random, accounts: list[DemoAccount], now: datetime, *, n: int, days: int) -> list[dict]:
    """Chat sessions (messages as the chat stores them); the first n-1 belong to "local" in the demo, one to an analyst.

    One session ends with an interrupted answer (incomplete: true), as a dropped stream leaves it.
    """
    rows = []
    for i in range(n):
        user = "local" if (n <= 10 and i < n - 1) or (n > 10 and i % 4 == 0) else \
            ("analyst@example.com" if n <= 10 else rng.choice(CHAT_USERS[1:]))
        started = now - timedelta(hours=1) if i == 0 else _recent_time(rng, now - timedelta(hours=2), days)
        acc = accounts[i % len(accounts)]
        messages = []
        t = started
        picks = rng.sample(_QA, rng.randint(1, 4))
        tools_used: list[str] = []
        latency = None
        for q, a, tools in picks:
            messages.append({"role": "user", "content": q, "timestamp": iso(t)})
            latency = rng.randint(900, 9000)
            t += timedelta(milliseconds=latency)
            messages.append({"role": "assistant", "content": a, "timestamp": iso(t), "tools_used": tools,
                             "latency_ms": latency})
            tools_used = tools
            t += timedelta(seconds=rng.uniform(20, 300))
        if i == 1 or (n > 10 and rng.random() < 0.02):  # a stream that was cut off mid-answer
            last = messages[-1]
            last["content"] = last["content"][: len(last["content"]) // 2].rstrip()
            last["incomplete"] = True
            last.pop("latency_ms", None)
            latency = None
        updated = datetime.fromisoformat(messages[-1]["timestamp"].replace("Z", "+00:00"))
        rows.append({
            "id": _uuid(rng), "business_account_id": acc.id, "dashboard_user_id": user, "messages": messages,
            "session_title": _snippet(picks[0][0], 48), "is_active": i == 0,
            "last_question": messages[-2]["content"], "last_answer": messages[-1]["content"],
            "last_latency_ms": latency, "last_tools_used": tools_used,
            "total_queries": len(picks), "created_at": started, "updated_at": updated,
        })
    return rows


# --------------------------------------------------------------------------- writing


def _csv_value(v: Any) -> Any:
    if v is None:
        return r"\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return v


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Iterable[dict], *, chunk: int = 20_000) -> int:
    """Bulk insert in chunks: COPY ... FROM STDIN (CSV) on PostgreSQL, executemany elsewhere.

    COPY runs on the DBAPI connection under `conn`, so it joins the caller's transaction.
    Every row of one call must have the same keys.
    """
    n = 0
    if conn.dialect.name != "postgresql":
        for batch in _chunks(rows, chunk):
            conn.execute(sa.insert(table), batch)
            n += len(batch)
        return n
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        for batch in _chunks(rows, chunk):
            cols = list(batch[0])
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for row in batch:
                writer.writerow([_csv_value(row[c]) for c in cols])
            buf.seek(0)
            col_list = ", ".join(f'"{c}"' for c in cols)
            cursor.copy_expert(f'COPY "{table.name}" ({col_list}) FROM STDIN WITH (FORMAT csv, NULL \'\\N\')', buf)
            n += len(batch)
    finally:
        cursor.close()
    return n


@dataclass(frozen=True)
class Volumes:
    accounts: int
    heartbeat_span: timedelta | None
    heartbeats_per_agent: int | None
    queue: dict[str, int]
    queue_days: float
    audit_total: int
    audit_days: int
    alerts: int
    alert_days: int
    report_days: int
    report_weeks: int
    chat_sessions: int


DEMO_VOLUMES = Volumes(
    accounts=3, heartbeat_span=timedelta(hours=24), heartbeats_per_agent=None,
    queue={"pending": 45, "processing": 6, "sent": 200, "failed": 30, "dlq": 95}, queue_days=7,
    audit_total=3_500, audit_days=30, alerts=45, alert_days=30, report_days=90, report_weeks=13, chat_sessions=5,
)


def _seed(engine: Engine, *, now: datetime, seed: int, v: Volumes, chunk: int = 20_000) -> dict[str, int]:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    counts: dict[str, int] = {}
    accounts = build_accounts(_rng(seed, "accounts"), v.accounts)
    history = max(v.report_days, v.report_weeks * 7, v.audit_days) + 14
    with engine.begin() as conn:
        counts["instagram_business_accounts"] = insert_rows(
            conn, schema.instagram_business_accounts, account_rows(_rng(seed, "account_rows"), accounts, now, history))
    with engine.begin() as conn:
        counts["agent_heartbeats"] = insert_rows(conn, schema.agent_heartbeats, heartbeat_rows(
            _rng(seed, "heartbeats"), now, span=v.heartbeat_span, per_agent=v.heartbeats_per_agent), chunk=chunk)
    audit_rng = _rng(seed, "audit")
    linked = 0
    with engine.begin() as conn:
        alerts = alert_rows(_rng(seed, "alerts"), accounts, now, days=v.alert_days, total=v.alerts)
        counts["system_alerts"] = insert_rows(conn, schema.system_alerts, alerts, chunk=chunk)
        linked += insert_rows(conn, schema.audit_log, alert_audit_rows(audit_rng, alerts) +
                              disconnect_audit_rows(audit_rng, accounts, now), chunk=chunk)
        del alerts
    published: dict = {}  # account -> UTC day -> [(instagram_id, caption)] of sent publish rows
    with engine.begin() as conn:
        queue_n = 0
        for batch in _chunks(queue_rows(_rng(seed, "queue"), accounts, now, counts=v.queue, days=v.queue_days), chunk):
            for q, _ in batch:
                if q["status"] == "sent" and q["action_type"] in ("publish_post", "repost_ugc") and q["instagram_id"]:
                    published.setdefault(q["business_account_id"], {}).setdefault(
                        q["updated_at"].astimezone(UTC).date(), []).append(
                        (q["instagram_id"], (q["payload"] or {}).get("caption")))
            queue_n += insert_rows(conn, schema.post_queue, (q for q, _ in batch), chunk=chunk)
            linked += insert_rows(conn, schema.audit_log, [a for _, audits in batch for a in audits], chunk=chunk)
        counts["post_queue"] = queue_n
    with engine.begin() as conn:
        background = insert_rows(conn, schema.audit_log, audit_background_rows(
            audit_rng, accounts, now, days=v.audit_days, total=max(0, v.audit_total - linked)), chunk=chunk)
        counts["audit_log"] = linked + background
    with engine.begin() as conn:
        counts["analytics_reports"] = insert_rows(conn, schema.analytics_reports, report_rows(
            _rng(seed, "reports"), accounts, now, days=v.report_days, weeks=v.report_weeks, published=published),
            chunk=min(chunk, 2_000))
    with engine.begin() as conn:
        counts["oversight_chat_sessions"] = insert_rows(conn, schema.oversight_chat_sessions, chat_rows(
            _rng(seed, "chat"), accounts, now, n=v.chat_sessions, days=v.audit_days), chunk=chunk)
    return counts


def seed_demo(engine: Engine, *, now: datetime, seed: int = 42) -> dict[str, int]:
    """Fill an initialised database with the demo data set; returns row counts per table."""
    return _seed(engine, now=now, seed=seed, v=DEMO_VOLUMES)


def seed_scale(engine: Engine, *, now: datetime, seed: int = 42, audit_rows: int = 1_000_000, audit_days: int = 90,
               queue_rows: int = 200_000, dlq_rows: int = 5_000, accounts: int = 10, report_days: int = 730,
               report_weeks: int = 104, heartbeats: int = 100_000, alerts: int = 20_000,
               chat_sessions: int = 2_000, chunk: int = 20_000) -> dict[str, int]:
    """The demo's data at production volume (defaults: the sizes the scale test asks for)."""
    failed = min(2_000, queue_rows // 100)
    processing = min(20, max(1, queue_rows // 1_000))
    pending = min(3_000, queue_rows // 60)
    sent = max(0, queue_rows - dlq_rows - failed - processing - pending)
    v = Volumes(
        accounts=accounts, heartbeat_span=None, heartbeats_per_agent=heartbeats // len(DEMO_AGENTS),
        queue={"pending": pending, "processing": processing, "sent": sent, "failed": failed, "dlq": dlq_rows},
        queue_days=audit_days, audit_total=audit_rows, audit_days=audit_days, alerts=alerts, alert_days=audit_days,
        report_days=report_days, report_weeks=report_weeks, chat_sessions=chat_sessions,
    )
    return _seed(engine, now=now, seed=seed, v=v, chunk=chunk)


def is_empty(engine: Engine) -> bool:
    """True when there are no accounts and no queue rows: the demo seeds only such a database."""
    with engine.connect() as conn:
        for table in (schema.instagram_business_accounts, schema.post_queue):
            if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None:
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    from lib.core.db import init_db, make_engine
    from lib.core.settings import load_settings, mask_url
    from lib.core.timeutil import as_utc, utcnow

    parser = argparse.ArgumentParser(prog="python -m sandbox.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: DATABASE_URL / settings)")
    parser.add_argument("--if-empty", action="store_true", help="do nothing when the database already has data")
    parser.add_argument("--scale", action="store_true", help="production volumes (1M audit rows, 200k queue rows, ...)")
    parser.add_argument("--now", help="ISO-8601 time the data ends at (default: the current time)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    url = args.database_url or load_settings().database_url
    now = as_utc(args.now) if args.now else utcnow()
    engine = make_engine(url)
    try:
        init_db(engine)
        if args.if_empty and not is_empty(engine):
            print(f"{mask_url(url)} already has data; not seeding (--if-empty)")
            return 0
        started = time.perf_counter()
        counts = (seed_scale if args.scale else seed_demo)(engine, now=now, seed=args.seed)
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    print(f"seeded {mask_url(url)} ({'scale' if args.scale else 'demo'}, now={iso(now)}, seed={args.seed})")
    for table, n in counts.items():
        print(f"  {table:<28} {n:>10,}")
    print(f"  {'total':<28} {sum(counts.values()):>10,}")
    print(f"elapsed {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
