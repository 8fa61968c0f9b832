"""What a post_queue payload must hold before anything is sent to Instagram (pure, no I/O).

One home for the rules that the worker applies before its first Graph call and that an edit
form can show as messages: the keys each action requires and Instagram's documented
limits. A payload that breaks one is a permanent failure: no call could fix it, and the worker
never sends a different post than the one asked for.

Limits (Meta's docs, quoted in docs/worker.md):
* caption: at most 2,200 characters, 30 hashtags and 20 @ tags (IG User Media, "caption");
* DM text: UTF-8, at most 1,000 bytes (Instagram messaging, "Send a message");
* carousel: 2 to 10 images and/or videos (Content Publishing, "Carousel posts");
* media URLs must be public http(s) URLs Instagram can fetch (IG User Media, image_url/video_url).

repost_ugc: Instagram has no repost endpoint; a repost is a new container made from the UGC's
media URL that the agent obtained with the owner's permission: `media_url` (or image_url /
video_url), optional `media_type`, `caption`, and `permission_id` (kept in the audit row). A row
holding only a `creation_id` is published from that container while it lives; once it expired
nothing can rebuild it and the row fails permanently with a message that says so.

Media types: IMAGE (image_url), REELS (video_url; VIDEO is sent as REELS, as Meta retired
feed VIDEO), STORIES (image_url or video_url), CAROUSEL / CAROUSEL_ALBUM from `children`: a list
of {"image_url": ...} or {"video_url": ...} objects, the caption on the carousel itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CAPTION_MAX_CHARS = 2200
CAPTION_MAX_HASHTAGS = 30
CAPTION_MAX_MENTIONS = 20
DM_MAX_BYTES = 1000
CAROUSEL_MIN_ITEMS, CAROUSEL_MAX_ITEMS = 2, 10

# The payload keys that an action cannot run without (reply_dm may name recipient_id
# instead of asking the conversation; publish/repost are checked by media_spec).
REQUIRED_KEYS = {
    "reply_comment": ("comment_id", "reply_text"),
    "reply_dm": ("message_text",),
    "send_dm": ("recipient_id", "message_text"),
    "publish_post": (),
    "repost_ugc": (),
}
# Every payload key an action understands: the required ones, plus what the worker reads (reply_dm's
# recipient_id, video_url and children for reels and carousels, repost_ugc's media). A key outside
# these is a typo or a wrong action type; whoever takes payloads from outside refuses it.
PAYLOAD_KEYS = {
    "reply_comment": ("comment_id", "reply_text", "post_id"),
    "reply_dm": ("conversation_id", "recipient_id", "message_text"),
    "send_dm": ("recipient_id", "message_text"),
    "publish_post": ("image_url", "video_url", "caption", "media_type", "children", "scheduled_post_id",
                     "creation_id"),
    "repost_ugc": ("permission_id", "creation_id", "image_url", "video_url", "media_url", "caption", "media_type",
                   "children"),
}
TEXT_FIELDS = {  # the payload's text fields per action type (what an edit form offers)
    "reply_comment": ("reply_text",),
    "reply_dm": ("message_text",),
    "send_dm": ("message_text",),
    "publish_post": ("caption", "image_url", "video_url"),
    "repost_ugc": ("caption", "image_url", "video_url"),
}
MEDIA_TYPES = ("IMAGE", "REELS", "VIDEO", "STORIES", "CAROUSEL", "CAROUSEL_ALBUM")

# Optional container fields Meta documents for POST /{ig-user-id}/media, by the kind that takes
# them (IG User Media reference). Present in a payload they are validated and passed on; one the
# kind does not take is refused, never dropped silently.
OPTIONAL_FIELDS = {
    "IMAGE": ("user_tags", "collaborators", "location_id", "alt_text"),
    "REELS": ("user_tags", "collaborators", "location_id", "share_to_feed", "cover_url", "thumb_offset",
              "audio_name"),
    "STORIES": ("user_tags",),
    "CAROUSEL": ("collaborators", "location_id"),
}
ALL_OPTIONAL_FIELDS = tuple(sorted({f for fs in OPTIONAL_FIELDS.values() for f in fs}))
COLLABORATORS_MAX = 3  # "up to 3 Instagram usernames"

_HASHTAG = re.compile(r"(?<![\w&])#\w+")
_MENTION = re.compile(r"(?<![\w@])@[\w.]+")


class InvalidPayload(ValueError):
    """The row lacks what the action needs, or asks for what Instagram refuses (permanent)."""


@dataclass(frozen=True)
class MediaSpec:
    """The container(s) one publish needs: `fields` for a single container, or `children`
    (key, fields) for a carousel whose parent takes `fields` (caption)."""

    kind: str  # IMAGE | REELS | STORIES | CAROUSEL
    fields: dict[str, Any]
    children: tuple[tuple[str, dict[str, Any]], ...] = field(default=())


def is_http_url(value: Any) -> bool:
    try:
        parts = urlsplit(str(value))
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def caption_problems(caption: Any) -> list[str]:
    if caption in (None, ""):
        return []
    text = str(caption)
    out = []
    if len(text) > CAPTION_MAX_CHARS:
        out.append(f"caption has {len(text):,} characters; Instagram allows {CAPTION_MAX_CHARS:,}")
    if len(_HASHTAG.findall(text)) > CAPTION_MAX_HASHTAGS:
        out.append(f"caption has {len(_HASHTAG.findall(text))} hashtags; Instagram allows {CAPTION_MAX_HASHTAGS}")
    if len(_MENTION.findall(text)) > CAPTION_MAX_MENTIONS:
        out.append(f"caption has {len(_MENTION.findall(text))} @ tags; Instagram allows {CAPTION_MAX_MENTIONS}")
    return out


def dm_problems(text: Any) -> list[str]:
    size = len(str(text or "").encode("utf-8"))
    if size > DM_MAX_BYTES:
        return [f"message_text is {size:,} bytes in UTF-8; Instagram allows {DM_MAX_BYTES:,}"]
    return []


def _url(p: dict[str, Any], *keys: str) -> tuple[str | None, str | None]:
    """(key, url) of the first key present."""
    for k in keys:
        if p.get(k) not in (None, ""):
            return k, str(p[k])
    return None, None


def media_spec(action_type: str, payload: dict[str, Any]) -> MediaSpec:
    """The containers to create for a publish_post / repost_ugc row, or InvalidPayload."""
    p = payload or {}
    problems = caption_problems(p.get("caption"))
    media_type = str(p.get("media_type") or "").strip().upper()
    children = p.get("children")
    if not media_type:
        media_type = "CAROUSEL" if children else ("REELS" if p.get("video_url") else "IMAGE")
    if media_type not in MEDIA_TYPES:
        raise InvalidPayload(f"media_type {p.get('media_type')!r} is not one Instagram publishes "
                             f"(IMAGE, REELS, VIDEO, STORIES, CAROUSEL)")
    caption = {"caption": p["caption"]} if p.get("caption") not in (None, "") else {}
    image_keys = ("image_url", "media_url") if action_type == "repost_ugc" else ("image_url",)
    video_keys = ("video_url", "media_url") if action_type == "repost_ugc" else ("video_url",)
    if media_type in ("CAROUSEL", "CAROUSEL_ALBUM"):
        items = _carousel_items(children, problems)
        extra = optional_fields("CAROUSEL", p, problems)
        if problems:
            raise InvalidPayload("; ".join(problems))
        return MediaSpec("CAROUSEL", {"media_type": "CAROUSEL", **caption, **extra}, items)
    if media_type == "IMAGE":
        key, url = _url(p, *image_keys)
        fields = {"image_url": url}
    elif media_type in ("REELS", "VIDEO"):
        key, url = _url(p, *video_keys)
        fields = {"media_type": "REELS", "video_url": url}
    else:  # STORIES: an image or a video
        key, url = _url(p, "video_url", "image_url", *(("media_url",) if action_type == "repost_ugc" else ()))
        fields = {"media_type": "STORIES", ("video_url" if key == "video_url" else "image_url"): url}
        caption = {}  # stories have no caption
    if url is None:
        need = {"IMAGE": "image_url", "REELS": "video_url", "VIDEO": "video_url",
                "STORIES": "image_url or video_url"}[media_type]
        if action_type == "repost_ugc":
            need = f"creation_id or the permission's media ({need} / media_url)"
        problems.append(f"{action_type} {media_type} needs {need}")
    elif not is_http_url(url):
        problems.append(f"{key} must be an http(s) URL Instagram can fetch")
    if problems:
        raise InvalidPayload("; ".join(problems))
    kind = "REELS" if media_type == "VIDEO" else media_type
    extra = optional_fields(kind, p, problems)
    if problems:
        raise InvalidPayload("; ".join(problems))
    return MediaSpec(kind, {**fields, **caption, **extra})


def optional_fields(kind: str, p: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The documented optional fields present in the payload, checked and in Graph's form."""
    out: dict[str, Any] = {}
    for name in ALL_OPTIONAL_FIELDS:
        value = p.get(name)
        if value in (None, "", []):
            continue
        if name not in OPTIONAL_FIELDS.get(kind, ()):
            problems.append(f"{name} is not taken by a {kind} post (Instagram would ignore or refuse it)")
            continue
        if name == "user_tags":
            tags = value if isinstance(value, list) else None
            ok = tags is not None and all(isinstance(t, dict) and t.get("username") for t in tags) and all(
                all(isinstance(t.get(c, 0), (int, float)) and 0 <= t.get(c, 0) <= 1 for c in ("x", "y"))
                for t in tags)
            if not ok:
                problems.append("user_tags must be a list of {\"username\", \"x\", \"y\"} with x and y from 0 to 1")
                continue
        elif name == "collaborators":
            if not (isinstance(value, list) and all(isinstance(u, str) and u for u in value)
                    and len(value) <= COLLABORATORS_MAX):
                problems.append(f"collaborators must be a list of up to {COLLABORATORS_MAX} Instagram usernames")
                continue
        elif name == "location_id":
            if not str(value).isdigit():
                problems.append("location_id must be a Facebook Page id (digits)")
                continue
            value = str(value)
        elif name == "share_to_feed":
            if not isinstance(value, bool):
                problems.append("share_to_feed must be true or false")
                continue
            value = "true" if value else "false"
        elif name == "cover_url":
            if not is_http_url(value):
                problems.append("cover_url must be an http(s) URL Instagram can fetch")
                continue
        elif name == "thumb_offset":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append("thumb_offset must be a whole number of milliseconds, 0 or more")
                continue
        elif not isinstance(value, str):  # audio_name, alt_text
            problems.append(f"{name} must be text")
            continue
        out[name] = value
    return out


def _carousel_items(children: Any, problems: list[str]) -> tuple[tuple[str, dict[str, Any]], ...]:
    if not isinstance(children, list) or not (CAROUSEL_MIN_ITEMS <= len(children) <= CAROUSEL_MAX_ITEMS):
        n = len(children) if isinstance(children, list) else 0
        problems.append(f"a carousel needs `children`: a list of {CAROUSEL_MIN_ITEMS} to {CAROUSEL_MAX_ITEMS} "
                        f"items {{\"image_url\": ...}} or {{\"video_url\": ...}} (got {n})")
        return ()
    items = []
    for i, child in enumerate(children, 1):
        key, url = _url(child, "image_url", "video_url") if isinstance(child, dict) else (None, None)
        if url is None:
            problems.append(f"carousel item {i} needs image_url or video_url")
        elif not is_http_url(url):
            problems.append(f"carousel item {i}: {key} must be an http(s) URL")
        elif key == "image_url":
            items.append((url, {"image_url": url, "is_carousel_item": "true"}))
        else:
            items.append((url, {"media_type": "VIDEO", "video_url": url, "is_carousel_item": "true"}))
    return tuple(items)


def payload_problems(action_type: str, payload: dict[str, Any]) -> list[str]:
    """Every reason this payload cannot be executed as written ([] when it can)."""
    p = payload or {}
    missing = [k for k in REQUIRED_KEYS.get(action_type, ()) if p.get(k) in (None, "")]
    out = [f"payload lacks {', '.join(missing)}"] if missing else []
    if action_type == "reply_dm" and p.get("conversation_id") in (None, "") and p.get("recipient_id") in (None, ""):
        out.append("reply_dm needs conversation_id (or recipient_id)")
    if action_type in ("send_dm", "reply_dm"):
        out += dm_problems(p.get("message_text"))
    if action_type in ("publish_post", "repost_ugc"):
        if p.get("creation_id") and not any(p.get(k) for k in ("image_url", "video_url", "media_url", "children")):
            # only a container id: it is read first; if it expired nothing can rebuild it
            out += caption_problems(p.get("caption"))
            out += [f"{k} must be an http(s) URL Instagram can fetch" for k in ("image_url", "video_url", "media_url")
                    if p.get(k) not in (None, "") and not is_http_url(p[k])]
        else:
            try:
                media_spec(action_type, p)
            except InvalidPayload as exc:
                out.append(str(exc))
    if action_type not in REQUIRED_KEYS:
        out.append(f"unknown action_type {action_type!r}")
    return out
