"""A fake Instagram Graph API on 127.0.0.1 for the demo and the tests (real HTTP, Graph shapes).

    python -m sandbox.graph_api --port 8766 [--error-rate 0.1] [--seed 7] [--api instagram_login]
                                    [--reels-processing-s 45] [--publish-quota 100] [--timeout-sleep 35]
    INSTAGRAM_GRAPH_URL=http://127.0.0.1:8766/v26.0 python -m worker ...

It models what Meta's developer documentation says Instagram does, not what our worker assumes
(the house rule: a fake follows the real service's documentation). docs/graph-api.md lists, per
behaviour, the page and the sentence it rests on, and what had to be guessed. In short:

* Content publishing (https://developers.facebook.com/docs/instagram-platform/content-publishing,
  .../reference/ig-user/media, .../reference/ig-user/media_publish, .../reference/ig-container):
  POST /{ig-user-id}/media makes a container (IMAGE: image_url; REELS: video_url + media_type=REELS;
  STORIES: image_url or video_url; carousel items: is_carousel_item=true with image_url, or
  video_url + media_type=VIDEO; carousel: media_type=CAROUSEL + children, 2..10 of this user's
  items: "Carousels need at least 2 photos/videos and no more than 10 photos/videos").
  media_type=VIDEO outside a carousel is refused: "Beginning November 9, 2023, the VIDEO value for
  media_type will no longer be supported. Use the REELS media type" (Graph changelog, June 28 2022).
  "Video uploads are asynchronous, so receiving a container ID does not guarantee that the upload
  was successful ... If its value is FINISHED, the video was uploaded successfully": status_code is
  IN_PROGRESS for processing_s[type], then FINISHED (or ERROR, "status ... will be an error
  subcode"); "EXPIRED — The container was not published within 24 hours"; "PUBLISHED — The
  container's media object has been published".
  POST /{ig-user-id}/media_publish creation_id= publishes a FINISHED container only: 9007/2207027
  "The media is not ready for publishing, please wait for a moment"; expired: -2/2207020; unknown:
  24/2207008. Publishing a PUBLISHED container again answers the same media id and makes no post
  (the docs are silent: see docs/graph-api.md).
  Quota: "Instagram accounts are limited to 100 API-published posts within a 24-hour moving period.
  Carousels count as a single post. This limit is enforced on the POST /<IG_ID>/media_publish
  endpoint"; over it: 9/2207042. GET /{ig-user-id}/content_publishing_limit?fields=config,quota_usage
  answers {"data": [{"quota_usage": N, "config": {"quota_total": Q, "quota_duration": 86400}}]}.
* Errors (https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/error-codes):
  every row of "Error Codes Defined" by subcode (ERROR_TABLE), HTTP 400, type OAuthException.
* Rate-limit headers (https://developers.facebook.com/docs/graph-api/overview/rate-limiting/):
  "Instagram Platform requests are subject to Business Use Case (BUC) Rate Limits"; every answer to
  an account's call carries X-Business-Use-Case-Usage {"<ig-user-id>": [{"type": "instagram",
  "call_count", "total_cputime", "total_time", "estimated_time_to_regain_access"}]} and X-App-Usage
  {"call_count", "total_cputime", "total_time"} (percentages).
* Messaging (https://developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-login/messaging-api,
  https://developers.facebook.com/docs/messenger-platform/instagram): api="instagram_login":
  "/<IG_ID>/messages or /me/messages"; api="facebook_login": /{page-id}/messages or /me/messages
  with the Page's token. "Message text must be UTF-8 and be a 1000 bytes or less"; success
  {"recipient_id", "message_id"}. GET /{conversation-id}?fields=participants lists our account and
  the customer, in an order that depends on the conversation id (pick by id, not by position);
  a DM to our own account answers 100/2018001 "No matching user found".
* Comment replies (https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/ig-comment/replies):
  POST /{ig-comment-id}/replies?message= -> {"id"}; GET /{ig-comment-id}/replies lists them
  ({"data": [{"id", "text", "username", "from": {"id", "username"}, "timestamp"}]}) in pages of
  `limit` (25 by default) with "paging": {"cursors": {"before", "after"}, "next"} while more follow.
  "Replies to replies ... are attached to the top-level comment": a reply posted to a reply is
  stored under the top-level comment; GET /{ig-comment-id}?fields=id,parent_id names the parent of
  a reply (IG Comment reference: parent_id, "ID of the parent IG Comment if this comment was
  created on another IG Comment").
* Conversations (https://developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-login/conversations-api,
  https://developers.facebook.com/docs/messenger-platform/instagram/features/conversations):
  GET /me/conversations?platform=instagram&user_id=<IGSID> -> {"data": [{"id", "updated_time"}]};
  GET /{conversation-id}?fields=messages -> {"messages": {"data": [{"id", "created_time"}]}} newest
  first; GET /{message-id}?fields=id,created_time,from,to,message ("you can only get details about
  the 20 most recent messages"). Every DM sent through the sandbox lands in its conversation.
* Reading what a reviewer needs (https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/ig-comment,
  .../reference/ig-media, https://developers.facebook.com/docs/messenger-platform/conversations and
  .../instagram-api-with-instagram-login/conversations-api): GET /{ig-comment-id}?fields=id,text,username,
  timestamp,media -> the comment, "media": {"id"}; GET /{ig-media-id}?fields=id,caption,media_type,media_url,
  permalink,timestamp; GET /me/conversations?platform=instagram&user_id=<IGSID> -> {"data": [{"id",
  "updated_time"}]}; GET /{conversation-id}?fields=messages -> {"messages": {"data": [{"id", "created_time"}]}}
  newest first; GET /{message-id}?fields=id,created_time,from,to,message. "You can only get details about the
  20 most recent messages in the conversation": an older message answers 100/33 (the subcode is a guess).
  Comments, media and messages are planted with add_comment / add_message (or POST /_sandbox/comments,
  /_sandbox/messages); an unknown id answers 100/33 "Unsupported get request", as Graph does.
* Tokens: the access_token parameter or an "Authorization: Bearer <token>" (or "OAuth <token>")
  header, as in the docs' samples ("-H "Authorization: Bearer <ACCESS_TOKEN>""). Tokens starting
  with bad/expired/revoked answer code 190.

Accounts: GraphSandbox.add_account(ig_user_id, access_token, page_id=, username=) registers "our
account". An unregistered token still works: its account is the ig-user-id in the path when there
is one (media, media_publish, messages, content_publishing_limit), the owner of the container for
container calls, else "1784" + 13 digits of sha256(token) (derived_ig_user_id).

Scripted failures, by a marker anywhere in the text of the request (reply message, DM text,
caption or media URL; media_publish and container reads use the container's caption):
    #fail:auth  #fail:rate[=<minutes to regain access>]  #fail:5xx  #fail:permanent  #fail:content
    #fail:unknown  #fail:timeout  #fail:slow=<seconds> (succeeds, late)  #fail:spam (= 4/2207051)
    #fail:sub=<subcode> (that row of the error table, exactly)
    #fail:buc[=<minutes>] (code 80002 and this account's usage at 100 %, the app's unchanged)
    #fail:block (368, temporarily blocked)  #fail:restricted (25/2207050)  #fail:msgrestricted (10/1893063)
    #fail:window (the 24-hour messaging window closed: 400 10/2018278 with Facebook Login,
                  403 10/2534022 with Instagram Login)  #fail:permission (403, code 200)
    #fail:reset (Instagram acts, then the connection drops before any answer)
    #fail:container_error[=<subcode>] (the container is made, then ends in ERROR, not FINISHED)
  optional suffixes: @<op> limits the marker to one op (replies, messages, media, media_publish,
  container_status, publishing_limit, conversation, comment_replies, me); *<n> applies it only to
  the first n requests of that text (then it succeeds).
  #proc=<seconds> in a caption (or proc=<s> in the media URL's query) sets that container's
  processing time. #key:<k> names the counters of a request (else its text).
and by rate: --error-rate p fails a share p of unmarked POST requests, the class drawn from a
seeded, realistic mix (mostly 5xx and rate limits; no auth failures, which would disconnect the
demo accounts for good).

Counters for tests (GET /_sandbox/stats, GraphSandbox.stats()): requests (POST action requests),
reads (GET requests), by_op, attempts[key] (POST requests per key), effects[key][op] (actions
Instagram performed: media = a container made, media_publish = a post made, replies, messages),
failures[kind], containers[id] (state, publishes, publish_requests, ...), published (every post:
media_id, container_id, ig_user_id, key, caption, media_type, time), replies, sent_messages.
An effect is counted when the request arrives, before any slow-marker delay: like Instagram, the
sandbox acts even if the client has stopped waiting. POST /_sandbox/reset clears all of it (the
accounts registry and the clock offset stay).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MARKER = re.compile(r"#fail:(\w+)(?:=([\d.]+))?(?:@(\w+))?(?:\*(\d+))?")
KEY = re.compile(r"#key:([\w.:-]+)")
PROC = re.compile(r"#proc=([\d.]+)")
HASHTAG = re.compile(r"#(?!fail:|key:|proc=)\w+")
VERSION = re.compile(r"^/v\d+(?:\.\d+)?(?=/|$)")
# The demo's random failures. A rate limit there is one account's Business Use Case throttle (80002,
# that account's X-Business-Use-Case-Usage at 100 % for a minute), never the whole app: Meta computes
# X-App-Usage from the app's calls in the last hour, which the sandbox reports as it is (it rises with
# the calls and falls as the hour moves on), so the demo queue keeps moving.
# A content failure there is Instagram refusing the media itself (a row of the error table), not 368,
# which blocks the whole account for a while and would stop a third of the demo for an hour.
DEMO_MIX = {"5xx": 0.45, "buc": 0.25, "permanent": 0.15, "rejected": 0.1, "timeout": 0.05}
REJECTED_SUBCODES = (2207004, 2207009, 2207026)  # image too large, aspect ratio, video format
POST_OPS = ("replies", "messages", "media", "media_publish")

DAY_S = 86400.0
#: containers expire after 24 h ("Containers expire after 24 hours", IG User Media reference)
CONTAINER_TTL_S = DAY_S
#: the Content Publishing guide: "limited to 100 API-published posts within a 24-hour moving period"
DEFAULT_PUBLISH_QUOTA = 100
#: seconds of processing by container kind (see docs/graph-api.md for why)
DEFAULT_PROCESSING_S = {"IMAGE": 0.0, "CAROUSEL": 0.0, "VIDEO": 30.0, "REELS": 30.0, "STORIES": 20.0}
#: "Calls within one hour = 200 * Number of Users" (Rate Limits page): X-App-Usage's default denominator
CALLS_PER_HOUR = 200
#: Instagram BUC: "Calls within 24 hours = 4800 * Number of Impressions" (one impression assumed)
BUC_CALLS_PER_DAY = 4800
MESSAGE_TEXT_MAX_BYTES = 1000
CAPTION_MAX_CHARS = 2200
CAROUSEL_MIN, CAROUSEL_MAX = 2, 10

# (code, subcode) -> message, is_transient; every row of "Error Codes Defined", HTTP 400 each.
# is_transient is not in the table: True where its solution is to repeat the same request.
ERROR_TABLE: dict[int, tuple[int, str, bool]] = {
    2207003: (-2, "It takes too long to download the media.", True),
    2207020: (-2, "The media you are trying to access has expired. Please try to upload again.", False),
    2207001: (-1, "Instagram server error. Try again.", True),
    2207032: (-1, "Create media fail, please try to re-create media", True),
    2207053: (-1, "unknown upload error", False),
    2207057: (1, "Thumbnail offset must be greater than or equal to 0 and less than video duration, i.e. {video-length}",
              False),
    2207051: (4, "We restrict certain activity to protect our community. Tell us if you think we made a mistake.",
              False),
    2207042: (9, "You reached maximum number of posts that is allowed to be published by Content Publishing API.",
              False),
    2207006: (24, "The media with {media-id} cannot be found", False),
    2207008: (24, "The media builder with creation id = {creation-id} does not exist or has been expired.", True),
    2207050: (25, "The Instagram account is restricted.", False),
    2207023: (100, "The media type {media-type} is unknown.", False),
    2207028: (100, "Your post won't work as a carousel. Carousels need at least 2 photos/videos and no more than "
                   "10 photos/videos.", False),
    2207035: (100, "Product tag positions should not be specified for video media.", False),
    2207036: (100, "Product tag positions are required for photo media.", False),
    2207037: (100, "We couldn't add all of your product tags. The product ID may be incorrect, the product may be "
                   "deleted, or you may not have permission to tag the product.", False),
    2207040: (100, "Cannot use more than {max-tag-count} tags per created media.", False),
    2207026: (352, "The video format is not supported. Please check spec for supported {video} format", False),
    2207052: (9004, "The media could not be fetched from this uri: {uri}", False),
    2207027: (9007, "The media is not ready for publishing, please wait for a moment", False),
    2207004: (36000, "The image is too large to download. It should be less than {size}.", False),
    2207005: (36001, "The image format {current-image-format} is not supported. Supported formats are: {format}.",
              False),
    2207009: (36003, "The submitted image with aspect ratio {submitted-ratio} cannot be published. Please submit an "
                     "image with a valid aspect ratio.", False),
    2207010: (36004, "The submitted image's caption was {submitted-caption-length} characters long. The maximum number "
                     "of characters permitted for a caption is {maximum-caption-length}. Please submit media with a "
                     "shorter caption.", False),
}


class GraphAnswer(Exception):
    """An error answer: raised anywhere in a handler, sent by the dispatcher."""

    def __init__(self, status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(error.get("message"))
        self.status, self.error, self.headers = status, error, headers or {}


def _fbtrace() -> str:
    return uuid.uuid4().hex[:11].upper()


def table_error(subcode: int, **values: str) -> GraphAnswer:
    """The documented row of `subcode` (placeholders like {creation-id} filled from values)."""
    if subcode not in ERROR_TABLE:
        return GraphAnswer(400, {"message": f"Scripted error {subcode}", "type": "OAuthException", "code": 100,
                                 "error_subcode": subcode, "is_transient": False})
    code, message, transient = ERROR_TABLE[subcode]
    for k, v in values.items():
        message = message.replace("{" + k.replace("_", "-") + "}", str(v))
    return GraphAnswer(400, {"message": message, "type": "OAuthException", "code": code, "error_subcode": subcode,
                             "is_transient": transient, "error_user_msg": message})


def param_error(message: str, code: int = 100, subcode: int | None = None) -> GraphAnswer:
    return GraphAnswer(400, {"message": f"(#{code}) {message}", "type": "OAuthException", "code": code,
                             "error_subcode": subcode})


def unsupported(method: str, object_id: str) -> GraphAnswer:
    return GraphAnswer(400, {"message": f"Unsupported {method} request. Object with ID '{object_id}' does not exist, "
                                        "cannot be loaded due to missing permissions, or does not support this "
                                        "operation.", "type": "GraphMethodException", "code": 100,
                             "error_subcode": 33})


def graph_error(kind: str, arg: float | None = None) -> GraphAnswer:
    """The answer of one scripted failure class (markers and --error-rate)."""
    if kind == "auth":
        return GraphAnswer(400, {"message": "Error validating access token: Session has expired.",
                                 "type": "OAuthException", "code": 190, "error_subcode": 463})
    if kind == "rate":
        return GraphAnswer(400, {"message": "Application request limit reached", "type": "OAuthException",
                                 "code": 4, "error_subcode": None, "is_transient": True})
    if kind == "5xx":
        return GraphAnswer(500, {"message": "An unexpected error has occurred. Please retry your request later.",
                                 "type": "OAuthException", "code": 2, "error_subcode": None, "is_transient": True})
    if kind == "permanent":
        return unsupported("post", "0")
    if kind == "content":
        return GraphAnswer(400, {"message": "The action attempted has been deemed abusive or is otherwise disallowed",
                                 "type": "OAuthException", "code": 368, "error_subcode": None,
                                 "error_user_title": "Content not allowed"})
    if kind == "spam":
        return table_error(2207051)
    if kind == "buc":
        return GraphAnswer(400, {"message": "(#80002) There have been too many calls to this Instagram account. "
                                            "Wait a bit and try again.", "type": "OAuthException", "code": 80002,
                                 "error_subcode": None, "is_transient": True})
    if kind == "block":  # Graph API "Handling Errors": 368 "Temporarily blocked for policies violations"
        return GraphAnswer(400, {"message": "You're temporarily blocked from performing this action",
                                 "type": "OAuthException", "code": 368, "error_subcode": None,
                                 "error_user_title": "Temporarily Blocked"})
    if kind == "restricted":
        return table_error(2207050)
    if kind == "msgrestricted":  # Messenger Platform error codes: 10 / 1893063
        return GraphAnswer(400, {"message": "(#10) Pages temporarily restricted from messaging", "type":
                                 "OAuthException", "code": 10, "error_subcode": 1893063})
    if kind == "permission":
        return GraphAnswer(403, {"message": "(#200) Requires instagram_manage_messages permission",
                                 "type": "OAuthException", "code": 200, "error_subcode": None})
    if kind == "sub":
        return table_error(int(arg or 0))
    # unknown: a 403 without a Graph error code (as a proxy or gateway in front of Graph answers), which no
    # table classifies; a 403 with code 10 is "API Permission Denied" and is permanent
    return GraphAnswer(403, {"message": "Forbidden", "type": "GatewayError"})


def window_error(api: str) -> GraphAnswer:
    """The Send API's answer outside the 24-hour messaging window: 400 10/2018278 ("Message sent
    outside of allowed window") with Facebook Login; with Instagram Login 403, code 10/2534022."""
    if api == "instagram_login":
        return GraphAnswer(403, {"message": "(#10) This message is sent outside of allowed window.",
                                 "type": "IGApiException", "code": 10, "error_subcode": 2534022})
    return GraphAnswer(400, {"message": "(#10) This message is sent outside of allowed window.",
                             "type": "OAuthException", "code": 10, "error_subcode": 2018278})


def derived_ig_user_id(token: str) -> str:
    """The account of an unregistered token: "1784" + 13 digits of its sha256 (stable across runs)."""
    return "1784" + str(int(hashlib.sha256(token.encode()).hexdigest(), 16))[:13]


def _digits(seed: str, n: int) -> str:
    return str(int(hashlib.sha256(seed.encode()).hexdigest(), 16))[:n]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _key(text: str) -> str:
    m = KEY.search(text or "")
    return m.group(1) if m else (text or "")


def _truthy(v: Any) -> bool:
    return str(v).lower() in ("true", "1", "yes")


def _proc_of(caption: str, url: str) -> float | None:
    m = PROC.search(caption or "")
    if m:
        return float(m.group(1))
    q = dict(parse_qsl(urlsplit(url or "").query))
    try:
        return float(q["proc"]) if "proc" in q else None
    except ValueError:
        return None


class SandboxState:
    def __init__(self, *, clock: Callable[[], float] | None = None, api: str = "facebook_login",
                 processing_s: dict[str, float] | None = None, publish_quota: int = DEFAULT_PUBLISH_QUOTA,
                 error_rate: float = 0.0, seed: int = 0, timeout_sleep_s: float = 35.0,
                 mix: dict[str, float] | None = None) -> None:
        if api not in ("facebook_login", "instagram_login"):
            raise ValueError("api must be 'facebook_login' or 'instagram_login'")
        self.lock = threading.RLock()
        self.clock = clock or time.time
        self.offset_s = 0.0
        self.api = api
        self.processing_s = {**DEFAULT_PROCESSING_S, **{k.upper(): float(v) for k, v in (processing_s or {}).items()}}
        self.publish_quota = int(publish_quota)
        self.rng = random.Random(seed)
        self.error_rate = error_rate
        self.timeout_sleep_s = timeout_sleep_s
        self.mix = dict(mix or DEMO_MIX)
        self.accounts: dict[str, dict[str, Any]] = {}   # ig_user_id -> {token, page_id, username}
        self.by_token: dict[str, str] = {}
        self.by_page: dict[str, str] = {}
        self.reset()

    # -- time and ids -----------------------------------------------------------------------
    def now(self) -> float:
        return float(self.clock()) + self.offset_s

    def new_id(self) -> str:
        with self.lock:
            return "1789" + "".join(str(self.rng.randrange(10)) for _ in range(13))

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.reads = 0
            self.by_op: dict[str, int] = {}
            self.attempts: dict[str, int] = {}
            self.effects: dict[str, dict[str, int]] = {}
            self.containers: dict[str, dict[str, Any]] = {}
            self.marker_hits: dict[tuple[str, str], int] = {}
            self.failures: dict[str, int] = {}
            self.published: list[dict[str, Any]] = []
            self.publish_times: dict[str, list[float]] = {}   # ig_user_id -> publish times (quota window)
            self.quota_total: dict[str, int] = {}
            self.replies: dict[str, list[dict[str, Any]]] = {}
            self.sent_messages: list[dict[str, Any]] = []
            self.calls: dict[str, list[float]] = {}            # ig_user_id -> call times (usage)
            self.usage: dict[str, dict[str, Any]] = {}          # set_usage overrides
            self.app_usage: dict[str, Any] = {}
            self.conversations: dict[str, dict[str, Any]] = {}
            self.forced: dict[str, list] = {}                   # op -> [kind, times left] (fail_next)
            self.reply_parent: dict[str, str] = {}              # reply id -> top-level comment id
            self.comments: dict[str, dict[str, Any]] = {}   # comment id -> {text, username, timestamp, media_id}
            self.media: dict[str, dict[str, Any]] = {}      # media id -> {caption, media_type, media_url, ...}
            # message id -> {conversation_id, text, from_customer, time}: planted ones and every DM sent
            self.messages: dict[str, dict[str, Any]] = {}

    # -- accounts -----------------------------------------------------------------------------
    def add_account(self, ig_user_id: str, access_token: str, *, page_id: str | None = None,
                    username: str | None = None, token_expires_at: float | None = None) -> None:
        ig_user_id = str(ig_user_id)
        with self.lock:
            self.accounts[ig_user_id] = {"access_token": access_token, "page_id": str(page_id) if page_id else None,
                                         "username": username or f"account_{ig_user_id[-4:]}",
                                         "token_expires_at": token_expires_at}
            self.by_token[access_token] = ig_user_id
            if page_id:
                self.by_page[str(page_id)] = ig_user_id

    def username_of(self, ig_user_id: str) -> str:
        acc = self.accounts.get(ig_user_id)
        return acc["username"] if acc else f"account_{ig_user_id[-4:]}"

    # -- containers ---------------------------------------------------------------------------
    def status_code(self, c: dict[str, Any], now: float) -> str:
        if c["published"]:
            return "PUBLISHED"
        if now - c["created_at"] >= CONTAINER_TTL_S:
            return "EXPIRED"
        if c.get("forced_status"):
            return c["forced_status"]
        if now < c["ready_at"]:
            return "IN_PROGRESS"
        if c["error_subcode"]:
            return "ERROR"
        if c["children"]:
            states = [self.status_code(self.containers[ch], now) for ch in c["children"] if ch in self.containers]
            if "ERROR" in states:
                return "ERROR"
            if "IN_PROGRESS" in states:
                return "IN_PROGRESS"
            if "EXPIRED" in states:
                return "EXPIRED"
        return "FINISHED"

    def error_subcode_of(self, c: dict[str, Any], now: float) -> int | None:
        if c["error_subcode"]:
            return c["error_subcode"]
        for ch in c["children"]:
            child = self.containers.get(ch)
            if child and self.status_code(child, now) == "ERROR":
                return self.error_subcode_of(child, now)
        return None

    def status_text(self, c: dict[str, Any], now: float) -> str:
        code = self.status_code(c, now)
        if code == "ERROR":
            return f"Error: Media upload has failed with error code {self.error_subcode_of(c, now) or 2207053}"
        return {"IN_PROGRESS": "In Progress: Media is still being processed.",
                "FINISHED": "Finished: Media has been uploaded and it is ready to be published.",
                "PUBLISHED": "Published: Media has been successfully published.",
                "EXPIRED": "Expired: The container was not published within 24 hours."}[code]

    def new_container(self, ig_user_id: str, *, kind: str, media_type: str, caption: str, key: str, url: str,
                      created_at: float, is_carousel_item: bool = False, children: list[str] | None = None,
                      proc_s: float | None = None, error_subcode: int | None = None) -> str:
        cid = self.new_id()
        processing = self.processing_s.get(kind, 0.0) if proc_s is None else proc_s
        with self.lock:
            self.containers[cid] = {
                "id": cid, "ig_user_id": ig_user_id, "kind": kind, "media_type": media_type, "caption": caption,
                "key": key, "url": url, "is_carousel_item": is_carousel_item, "children": list(children or []),
                "created_at": created_at, "ready_at": created_at + processing, "error_subcode": error_subcode,
                "forced_status": None, "published": None, "publishes": 0, "publish_requests": 0}
        return cid

    # -- quota and usage ----------------------------------------------------------------------
    def quota_usage(self, ig_user_id: str, now: float, since: float | None = None) -> int:
        start = now - DAY_S if since is None else max(since, now - DAY_S)
        return sum(1 for t in self.publish_times.get(ig_user_id, []) if start < t <= now)

    def quota_total_of(self, ig_user_id: str) -> int:
        return self.quota_total.get(ig_user_id, self.publish_quota)

    def record_call(self, ig_user_id: str, now: float) -> None:
        with self.lock:
            calls = self.calls.setdefault(ig_user_id, [])
            calls.append(now)
            if len(calls) > 5000:
                del calls[:1000]

    def _pct(self, n: int, limit: int) -> int:
        # the sandbox never throttles on its own: 100 % appears only when set or in a rate-limit answer
        return min(99, int(math.ceil(100.0 * n / max(1, limit)))) if n else 0

    def usage_entry(self, ig_user_id: str, now: float) -> dict[str, Any]:
        n = sum(1 for t in self.calls.get(ig_user_id, []) if now - DAY_S < t <= now)
        pct = self._pct(n, BUC_CALLS_PER_DAY)
        entry = {"type": "instagram", "call_count": pct, "total_cputime": pct // 4, "total_time": pct // 4,
                 "estimated_time_to_regain_access": 0}
        override = dict(self.usage.get(ig_user_id, {}))
        until = override.pop("_regain_at", None)
        if until is not None:
            override["estimated_time_to_regain_access"] = max(0, int(math.ceil((until - now) / 60.0)))
        entry.update(override)
        return entry

    def app_usage_entry(self, now: float) -> dict[str, Any]:
        n = sum(1 for calls in self.calls.values() for t in calls if now - 3600 < t <= now)
        pct = self._pct(n, CALLS_PER_HOUR * max(1, len(self.accounts) or len(self.calls)))
        entry = {"call_count": pct, "total_cputime": pct // 4, "total_time": pct // 4}
        entry.update(self.app_usage)
        return entry

    def set_usage(self, ig_user_id: str, **fields: Any) -> None:
        fields = dict(fields)
        with self.lock:
            if "estimated_time_to_regain_access" in fields:  # minutes, counted down on the sandbox clock
                fields["_regain_at"] = self.now() + 60.0 * float(fields.pop("estimated_time_to_regain_access"))
            self.usage.setdefault(str(ig_user_id), {}).update(fields)

    # -- stats --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            now = self.now()
            containers = {cid: {"key": c["key"], "published": c["published"], "status_code": self.status_code(c, now),
                                "media_type": c["media_type"], "kind": c["kind"], "ig_user_id": c["ig_user_id"],
                                "caption": c["caption"], "children": c["children"],
                                "is_carousel_item": c["is_carousel_item"], "created_at": c["created_at"],
                                "publishes": c["publishes"], "publish_requests": c["publish_requests"]}
                          for cid, c in self.containers.items()}
            return json.loads(json.dumps({
                "requests": self.requests, "reads": self.reads, "by_op": self.by_op, "attempts": self.attempts,
                "effects": self.effects, "failures": self.failures, "containers": containers,
                "published": self.published, "replies": self.replies, "sent_messages": self.sent_messages,
                "quota": {ig: {"quota_usage": self.quota_usage(ig, now), "quota_total": self.quota_total_of(ig)}
                          for ig in set(self.publish_times) | set(self.quota_total)},
                "now": now, "api": self.api,
            }))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GraphSandbox/2.0"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid the 40 ms delayed-ACK stall
    state: SandboxState  # set on the subclass made per server

    def log_message(self, fmt, *args):  # quiet; the worker logs what matters
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _params(self) -> dict[str, Any]:
        parts = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if raw:
            if "json" in (self.headers.get("Content-Type") or ""):
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                if isinstance(body, dict):
                    params.update(body)
            else:
                params.update(dict(parse_qsl(raw.decode())))
        for k in ("recipient", "message"):  # form posts carry these as JSON strings
            if isinstance(params.get(k), str) and params[k].startswith("{"):
                try:
                    params[k] = json.loads(params[k])
                except ValueError:
                    pass
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith(("bearer ", "oauth ")) and not params.get("access_token"):
            params["access_token"] = auth.split(" ", 1)[1].strip()
        return params

    def _route(self) -> list[str]:
        path = VERSION.sub("", urlsplit(self.path).path)
        return [unquote(p) for p in path.split("/") if p]

    def _usage_headers(self, account: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        st = self.state
        headers: dict[str, str] = {}
        if account:
            with st.lock:
                now = st.now()
                headers["X-Business-Use-Case-Usage"] = json.dumps({account: [st.usage_entry(account, now)]})
                headers["X-App-Usage"] = json.dumps(st.app_usage_entry(now))
        headers.update(extra or {})
        return headers

    # -- verbs ------------------------------------------------------------------------------
    def do_GET(self):
        parts = self._route()
        if parts == ["_sandbox", "stats"]:
            return self._send(200, self.state.snapshot())
        if parts == ["_sandbox", "health"]:
            return self._send(200, {"ok": True})
        self._graph("GET", parts)

    def do_POST(self):
        parts = self._route()
        if parts and parts[0] == "_sandbox":
            return self._sandbox_post(parts[1:])
        self._graph("POST", parts)

    def _sandbox_post(self, parts: list[str]) -> None:
        st, p = self.state, self._params()
        try:
            if parts == ["reset"]:
                st.reset()
            elif parts == ["clock"]:
                with st.lock:
                    st.offset_s += float(p.get("offset_s") or 0)
            elif parts == ["accounts"]:
                st.add_account(str(p["ig_user_id"]), str(p["access_token"]), page_id=p.get("page_id"),
                               username=p.get("username"))
            elif parts == ["quota"]:
                GraphSandbox.set_quota_usage_on(st, str(p["ig_user_id"]), int(p["used"]),
                                                int(p["total"]) if p.get("total") is not None else None)
            elif parts == ["usage"]:
                fields = {k: v for k, v in p.items() if k != "ig_user_id"}
                st.set_usage(str(p["ig_user_id"]), **fields)
            elif parts == ["app_usage"]:
                with st.lock:
                    st.app_usage.update(p)
            elif parts == ["conversations"]:
                with st.lock:
                    st.conversations[str(p["conversation_id"])] = {
                        "ig_user_id": str(p["ig_user_id"]), "customer_id": str(p["customer_id"]),
                        "customer_username": p.get("customer_username") or f"customer_{str(p['customer_id'])[-4:]}"}
            elif parts == ["comments"]:
                GraphSandbox.add_comment_on(st, str(p["comment_id"]), text=str(p.get("text") or ""),
                                            username=p.get("username"), media_id=p.get("media_id"),
                                            caption=p.get("caption"), media_url=p.get("media_url"))
            elif parts == ["messages"]:
                mid = GraphSandbox.add_message_on(st, str(p["conversation_id"]), text=str(p.get("text") or ""),
                                                  from_customer=_truthy(p.get("from_customer", True)),
                                                  created_time=p.get("created_time"))
                return self._send(200, {"id": mid})
            elif parts == ["containers"]:
                kwargs = {k: p[k] for k in ("media_type", "caption", "created_at", "status_code", "children")
                          if k in p}
                cid = GraphSandbox.add_container_on(st, str(p["ig_user_id"]), **kwargs)
                return self._send(200, {"id": cid})
            else:
                return self._send(404, {"error": {"message": f"unknown sandbox endpoint /{'/'.join(parts)}"}})
        except (KeyError, ValueError, TypeError) as exc:
            return self._send(400, {"error": {"message": f"bad sandbox request: {exc}"}})
        self._send(200, {"ok": True, "now": st.now()})

    # -- the Graph API ------------------------------------------------------------------------
    def _graph(self, method: str, parts: list[str]) -> None:
        st = self.state
        params = self._params()
        account: str | None = None
        try:
            op, handler = self._op(method, parts, params)
            token = str(params.get("access_token") or "")
            account = self._account_of(op, parts, params, token)
            text = self._text(op, parts, params)
            key = _key(text)
            with st.lock:
                st.by_op[op] = st.by_op.get(op, 0) + 1
                if method == "POST":
                    st.requests += 1
                    st.attempts[key] = st.attempts.get(key, 0) + 1
                else:
                    st.reads += 1
                if account:
                    st.record_call(account, st.now())
            self._check_token(token)
            self._check_owner(op, parts, token)
            fail, slow = self._scripted_failure(text, key, op, post=(method == "POST"))
            if fail:
                kind, arg = fail
                with st.lock:
                    st.failures[kind] = st.failures.get(kind, 0) + 1
                if kind == "timeout":
                    time.sleep(st.timeout_sleep_s)
                    raise GraphAnswer(504, {"message": "Gateway timeout", "type": "OAuthException", "code": 2,
                                            "error_subcode": None, "is_transient": True})
                if kind == "reset":  # Instagram acts; the answer never arrives
                    handler(parts, params, account=account, text=text, key=key, slow=0.0)
                    self.close_connection = True
                    return
                answer = window_error(st.api) if kind == "window" else graph_error(kind, arg)
                if kind == "buc" and account:
                    with st.lock:
                        entry = st.usage_entry(account, st.now())
                        entry.update({"call_count": 100, "estimated_time_to_regain_access": int(arg or 1)})
                        answer.headers["X-Business-Use-Case-Usage"] = json.dumps({account: [entry]})
                if kind == "rate" and account:
                    with st.lock:
                        entry = st.usage_entry(account, st.now())
                        entry.update({"call_count": 100, "total_cputime": 12, "total_time": 30,
                                      "estimated_time_to_regain_access": int(arg or 0)})
                        answer.headers["X-Business-Use-Case-Usage"] = json.dumps({account: [entry]})
                        answer.headers["X-App-Usage"] = json.dumps(
                            {**st.app_usage_entry(st.now()), "call_count": 100})
                raise answer
            status, body = handler(parts, params, account=account, text=text, key=key, slow=slow)
            self._send(status, body, self._usage_headers(account))
        except GraphAnswer as ans:
            err = dict(ans.error)
            err.setdefault("error_subcode", None)
            err["fbtrace_id"] = _fbtrace()
            self._send(ans.status, {"error": err}, self._usage_headers(account, ans.headers))
        except Exception as exc:  # a bug of the sandbox: say so loudly, never as a Graph error class
            import traceback
            traceback.print_exc()
            self._send(500, {"error": {"message": f"graph sandbox bug: {type(exc).__name__}: {exc}",
                                       "type": "SandboxError", "code": -999, "error_subcode": None}})

    def _op(self, method: str, parts: list[str], params: dict[str, Any]):
        st = self.state
        if method == "POST" and len(parts) == 2 and parts[1] in POST_OPS:
            return parts[1], getattr(self, "_post_" + parts[1])
        if method == "GET":
            if len(parts) == 2 and parts[1] == "content_publishing_limit":
                return "publishing_limit", self._get_publishing_limit
            if len(parts) == 2 and parts[1] == "replies":
                return "comment_replies", self._get_replies
            if len(parts) == 2 and parts[1] == "conversations":
                return "conversations", self._get_conversations
            if parts == ["me"]:
                return "me", self._get_me
            if parts == ["debug_token"]:
                return "debug_token", self._get_debug_token
            if len(parts) == 2 and parts[1] == "conversations":
                return "conversations", self._get_conversations
            if len(parts) == 1:
                with st.lock:
                    is_container = parts[0] in st.containers
                if is_container:
                    return "container_status", self._get_container
                if "participants" in str(params.get("fields", "")):
                    return "conversation", self._get_conversation
                with st.lock:
                    fields = str(params.get("fields", ""))
                    kind = ("conversation_messages" if "messages" in fields and parts[0] in st.conversations
                            else "message" if parts[0] in st.messages
                            else "comment" if parts[0] in st.comments or parts[0] in st.reply_parent
                            or "parent_id" in fields
                            else "ig_media" if parts[0] in st.media else None)
                if kind is not None:
                    return kind, getattr(self, "_get_" + kind)
                raise unsupported("get", parts[0])
        if method == "POST" and len(parts) <= 1:
            raise unsupported("post", parts[0] if parts else "")
        raise GraphAnswer(400, {"message": f"Unknown path components: /{'/'.join(parts[1:] or parts)}",
                                "type": "OAuthException", "code": 2500})

    def _account_of(self, op: str, parts: list[str], params: dict[str, Any], token: str) -> str | None:
        st = self.state
        with st.lock:
            if token in st.by_token:
                return st.by_token[token]
            if op in ("media", "media_publish", "messages", "publishing_limit") and parts[0] != "me":
                return st.by_page.get(parts[0], parts[0])
            if op == "container_status":
                return st.containers[parts[0]]["ig_user_id"]
        return derived_ig_user_id(token) if token else None

    def _check_owner(self, op: str, parts: list[str], token: str) -> None:
        """A registered token may act on its own account's nodes only (when both are known)."""
        st = self.state
        if op == "container_status":
            with st.lock:
                owner, holder = st.by_token.get(token), st.containers[parts[0]]["ig_user_id"]
                if owner and holder in st.accounts and holder != owner:
                    raise unsupported("get", parts[0])
            return
        if op not in ("media", "media_publish", "publishing_limit") or parts[0] == "me":
            return
        with st.lock:
            owner = st.by_token.get(token)
            node = st.by_page.get(parts[0], parts[0])
            if owner and node in st.accounts and node != owner:
                raise unsupported("post" if op != "publishing_limit" else "get", parts[0])

    def _text(self, op: str, parts: list[str], params: dict[str, Any]) -> str:
        st = self.state
        if op == "replies":
            return str(params.get("message") or "")
        if op == "messages":
            msg = params.get("message")
            return str((msg or {}).get("text") or "") if isinstance(msg, dict) else str(msg or "")
        if op == "media":
            caption = str(params.get("caption") or "")
            return caption or unquote(str(params.get("image_url") or params.get("video_url") or ""))
        if op in ("media_publish", "container_status"):
            cid = str(params.get("creation_id") or "") if op == "media_publish" else parts[0]
            with st.lock:
                c = st.containers.get(cid)
            return (c["caption"] or c["url"]) if c else ""
        return ""

    def _check_token(self, token: str) -> None:
        if not token:
            raise GraphAnswer(400, {"message": "An active access token must be used to query information about the "
                                               "current user.", "type": "OAuthException", "code": 2500})
        if token.startswith(("bad", "expired", "revoked")):
            raise graph_error("auth")

    def _scripted_failure(self, text: str, key: str, op: str, *, post: bool):
        st, slow = self.state, 0.0
        with st.lock:
            forced = st.forced.get(op)
            if forced and forced[1] > 0:
                forced[1] -= 1
                return (forced[0], None), slow
        for m in MARKER.finditer(text):
            kind, arg, only_op, times = m.group(1), m.group(2), m.group(3), m.group(4)
            if kind == "container_error" or (only_op and only_op != op):
                continue
            if kind == "slow":
                slow = float(arg or 1)
                continue
            if times is not None:
                with st.lock:
                    hits = st.marker_hits[(key, m.group(0))] = st.marker_hits.get((key, m.group(0)), 0) + 1
                if hits > int(times):
                    continue
            return (kind, float(arg) if arg else None), slow
        if post and st.error_rate and MARKER.search(text) is None:
            with st.lock:
                roll = st.rng.random()
                if roll < st.error_rate:
                    kinds = [k for k in st.mix if k not in ("content", "rejected") or op in ("media", "media_publish")]
                    kind = st.rng.choices(kinds, weights=[st.mix[k] for k in kinds])[0]
                    if kind == "rejected":
                        return ("sub", float(st.rng.choice(REJECTED_SUBCODES))), slow
                    return (kind, 1.0 if kind in ("rate", "buc") else None), slow
        return None, slow

    def _container_error_marker(self, text: str, key: str, url: str) -> int | None:
        st = self.state
        for m in MARKER.finditer(f"{text} {url}"):
            if m.group(1) != "container_error" or (m.group(3) and m.group(3) != "media"):
                continue
            if m.group(4) is not None:
                with st.lock:
                    hits = st.marker_hits[(key, m.group(0))] = st.marker_hits.get((key, m.group(0)), 0) + 1
                if hits > int(m.group(4)):
                    continue
            return int(float(m.group(2))) if m.group(2) else 0
        return None

    def _effect(self, key: str, op: str) -> None:
        st = self.state
        with st.lock:
            st.effects.setdefault(key, {})
            st.effects[key][op] = st.effects[key].get(op, 0) + 1

    # -- comment replies ------------------------------------------------------------------------
    def _post_replies(self, parts, params, *, account, text, key, slow):
        st = self.state
        if not text:
            raise param_error("The parameter message is required")
        reply_id = st.new_id()
        with st.lock:
            now = st.now()
            top = st.reply_parent.get(parts[0], parts[0])  # a reply to a reply goes under the top-level comment
            st.reply_parent[reply_id] = top
            st.replies.setdefault(top, []).append({
                "id": reply_id, "text": text, "username": st.username_of(account),
                "from": {"id": account, "username": st.username_of(account)}, "timestamp": _iso(now),
                "key": key})
        self._effect(key, "replies")
        if slow:
            time.sleep(slow)
        return 200, {"id": reply_id}

    def _get_replies(self, parts, params, **_):
        st = self.state
        fields = [f.strip() for f in str(params.get("fields") or "timestamp,text,id").split(",") if f.strip()]
        with st.lock:
            rows = [dict(r) for r in st.replies.get(parts[0], [])]
        try:
            limit = max(1, min(100, int(params.get("limit") or 25)))
            start = int(params["after"]) if params.get("after") else 0
        except ValueError:
            raise param_error("Invalid cursor or limit") from None
        page = rows[start:start + limit]
        data = [{f: r[f] for f in fields if f in r} | {"id": r["id"]} for r in page]
        body: dict[str, Any] = {"data": data}
        if page:
            body["paging"] = {"cursors": {"before": str(start), "after": str(start + len(page))}}
            if start + len(page) < len(rows):
                body["paging"]["next"] = f"/{parts[0]}/replies?after={start + len(page)}&limit={limit}"
        return 200, body

    # -- conversations ---------------------------------------------------------------------------
    def conversation_id_of(self, account: str, customer: str) -> str:
        st = self.state
        with st.lock:
            for cid, conv in st.conversations.items():
                if conv["ig_user_id"] == account and conv["customer_id"] == customer:
                    return cid
        return "aWdfZAG06MTpJR01lc3NhZA2VUaHJlYWQ6" + _digits(f"conv:{account}:{customer}", 16)

    def _post_messages(self, parts, params, *, account, text, key, slow):
        st = self.state
        node = parts[0]
        with st.lock:
            registered_ig = st.accounts.get(node)
            page_owner = st.by_page.get(node)
            token_owner = st.by_token.get(str(params.get("access_token")))
        if node != "me":
            # the node must be the one the docs name for this login type (only known for registered ids)
            if st.api == "facebook_login" and registered_ig is not None and page_owner is None:
                raise unsupported("post", node)  # an IG user id: Facebook Login sends from the Page
            if st.api == "instagram_login" and page_owner is not None and registered_ig is None:
                raise unsupported("post", node)  # a Page id: Instagram Login sends from the IG user
            owner = page_owner or (node if registered_ig is not None else None)
            if token_owner and owner and token_owner != owner:
                raise unsupported("post", node)  # another account's token
        recipient = params.get("recipient")
        recipient_id = recipient.get("id") if isinstance(recipient, dict) else None
        if not recipient_id:
            raise param_error("The parameter recipient is required")
        with st.lock:
            own_ids = {account, node} | ({st.accounts[account]["page_id"]} if account in st.accounts else set())
        if str(recipient_id) in own_ids:  # our own account is not a customer to message
            raise param_error("No matching user found", subcode=2018001)
        message = params.get("message")
        if not isinstance(message, dict) or not (message.get("text") or message.get("attachment")
                                                  or message.get("attachments")):
            raise param_error("The parameter message is required")
        if len(str(message.get("text") or "").encode("utf-8")) > MESSAGE_TEXT_MAX_BYTES:
            raise param_error(f"Length of param message[text] must be less than or equal to {MESSAGE_TEXT_MAX_BYTES}")
        message_id = "aWdfZAG1faXRlbTo" + st.new_id()
        conversation = self.conversation_id_of(account, str(recipient_id))
        with st.lock:
            st.sent_messages.append({"message_id": message_id, "recipient_id": str(recipient_id),
                                     "sender_id": account, "node": node, "text": text, "key": key,
                                     "time": st.now()})
            st.conversations.setdefault(conversation, {
                "ig_user_id": account, "customer_id": str(recipient_id),
                "customer_username": f"customer_{str(recipient_id)[-4:]}"})
            st.messages[message_id] = {"conversation_id": conversation, "text": str(message.get("text") or ""),
                                       "from_customer": False, "time": st.now()}
        self._effect(key, "messages")
        if slow:
            time.sleep(slow)
        return 200, {"recipient_id": str(recipient_id), "message_id": message_id}

    def _get_conversation(self, parts, params, *, account, **_):
        st = self.state
        conv = parts[0]
        with st.lock:
            planted = st.conversations.get(conv)
        ours = planted["ig_user_id"] if planted else account
        customer = planted["customer_id"] if planted else "9" + _digits("customer:" + conv, 15)
        if not planted and ours:  # the conversation exists from now on: DMs to this customer land in it
            with st.lock:
                st.conversations.setdefault(conv, {"ig_user_id": ours, "customer_id": customer,
                                                   "customer_username": f"customer_{customer[-4:]}"})
        people = [{"username": planted.get("customer_username") if planted else f"customer_{customer[-4:]}",
                   "id": customer},
                  {"username": st.username_of(ours), "id": ours}]
        if int(_digits("order:" + conv, 3)) % 2:  # not always "customer first": pick by id
            people.reverse()
        return 200, {"participants": {"data": people}, "id": conv}

    # -- reads for the reviewer: comments, media, conversations, messages ------------------------------
    @staticmethod
    def _fields(params, default: str) -> list[str]:
        return [f.strip() for f in str(params.get("fields") or default).split(",") if f.strip()]

    def _get_comment(self, parts, params, **_):
        with self.state.lock:
            c = dict(self.state.comments.get(parts[0]) or {})
            parent = self.state.reply_parent.get(parts[0])
        full: dict[str, Any] = {"id": parts[0]}
        if c:
            full.update({"text": c["text"], "username": c["username"], "timestamp": _iso(c["time"]),
                         "from": {"id": c["from_id"], "username": c["username"]}})
        if parent:  # a reply: its top-level comment
            full["parent_id"] = parent
        if c.get("media_id"):
            full["media"] = {"id": c["media_id"]}
        return 200, {f: full[f] for f in self._fields(params, "id,text,timestamp") if f in full} | {"id": parts[0]}

    def _get_ig_media(self, parts, params, **_):
        with self.state.lock:
            m = dict(self.state.media[parts[0]])
        full = {"id": parts[0], "caption": m.get("caption") or "", "media_type": m.get("media_type") or "IMAGE",
                "media_url": m.get("media_url"), "permalink": f"https://www.instagram.com/p/{parts[0][-8:]}/",
                "timestamp": _iso(m["time"])}
        return 200, {f: full[f] for f in self._fields(params, "id") if f in full and full[f] is not None} | {"id": parts[0]}

    def _get_conversations(self, parts, params, *, account, **_):
        st = self.state
        user_id = str(params.get("user_id") or "")
        with st.lock:
            found = [(cid, c) for cid, c in st.conversations.items()
                     if c["ig_user_id"] == account and (not user_id or c["customer_id"] == user_id)]
            data = []
            for cid, _conversation in found:
                times = [m["time"] for m in st.messages.values() if m["conversation_id"] == cid]
                data.append({"id": cid, "updated_time": _iso(max(times)) if times else None})
        return 200, {"data": data}

    def _conversation_message_ids(self, conv: str) -> list[str]:
        msgs = [(m["time"], mid) for mid, m in self.state.messages.items() if m["conversation_id"] == conv]
        return [mid for _, mid in sorted(msgs, reverse=True)]

    def _get_conversation_messages(self, parts, params, **_):
        st = self.state
        with st.lock:
            ids = self._conversation_message_ids(parts[0])
            data = [{"id": mid, "created_time": _iso(st.messages[mid]["time"])} for mid in ids]
        return 200, {"messages": {"data": data}, "id": parts[0]}

    def _get_message(self, parts, params, **_):
        st = self.state
        with st.lock:
            m = dict(st.messages[parts[0]])
            recent = self._conversation_message_ids(m["conversation_id"])[:20]
            conv = st.conversations.get(m["conversation_id"]) or {}
        if parts[0] not in recent:
            raise GraphAnswer(400, {"message": "Unsupported get request. The message is not one of the 20 most "
                                               "recent of its conversation.", "type": "GraphMethodException",
                                    "code": 100, "error_subcode": 33})
        ours = {"id": conv.get("ig_user_id"), "username": st.username_of(conv.get("ig_user_id") or "")}
        customer = {"id": conv.get("customer_id"), "username": conv.get("customer_username")}
        sender, receiver = (customer, ours) if m["from_customer"] else (ours, customer)
        full = {"id": parts[0], "created_time": _iso(m["time"]), "from": sender, "to": {"data": [receiver]},
                "message": m["text"]}
        return 200, {f: full[f] for f in self._fields(params, "id,created_time") if f in full} | {"id": parts[0]}

    def _get_debug_token(self, parts, params, **_):
        """GET /debug_token?input_token=… with an app token (Graph API "Debug Token" reference:
        data.app_id, type, application, expires_at — Unix time, 0 for a token that never expires —,
        is_valid, scopes, user_id)."""
        st = self.state
        if not params.get("input_token"):
            raise param_error("(#100) The parameter input_token is required")
        token = str(params["input_token"])
        with st.lock:
            ig = st.by_token.get(token)
            acct = st.accounts.get(ig) if ig else None
        valid = not token.startswith(("bad", "expired", "revoked"))
        expires = (acct or {}).get("token_expires_at") or 0
        data = {"app_id": "1000000000000001", "type": "PAGE" if st.api == "facebook_login" else "USER",
                "application": "Agent Dashboard (sandbox)", "expires_at": int(expires), "is_valid": valid,
                "scopes": ["instagram_basic", "instagram_content_publish", "instagram_manage_messages"],
                "user_id": ig or derived_ig_user_id(token)}
        if not valid:
            data["error"] = {"code": 190, "message": "Error validating access token: Session has expired."}
        return 200, {"data": data}

    def _get_me(self, parts, params, *, account, **_):
        return 200, {"id": account, "username": self.state.username_of(account)}

    # -- content publishing ------------------------------------------------------------------
    def _post_media(self, parts, params, *, account, text, key, slow):
        st = self.state
        ig_user = account if parts[0] == "me" else st.by_page.get(parts[0], parts[0])
        media_type = str(params.get("media_type") or "").upper()
        image_url, video_url = params.get("image_url"), params.get("video_url")
        caption = str(params.get("caption") or "")
        item = _truthy(params.get("is_carousel_item"))
        url = str(video_url or image_url or "")
        children: list[str] = []
        if len(caption) > CAPTION_MAX_CHARS or len(HASHTAG.findall(caption)) > 30:
            raise table_error(2207010, submitted_caption_length=len(caption), maximum_caption_length=CAPTION_MAX_CHARS)
        if media_type == "CAROUSEL":
            kind = "CAROUSEL"
            children = [c.strip() for c in str(params.get("children") or "").split(",") if c.strip()]
            if isinstance(params.get("children"), list):
                children = [str(c) for c in params["children"]]
            if not (CAROUSEL_MIN <= len(children) <= CAROUSEL_MAX):
                raise table_error(2207028)
            now = st.now()
            with st.lock:
                for ch in children:
                    c = st.containers.get(ch)
                    if c is None or c["ig_user_id"] != ig_user:
                        raise table_error(2207006, media_id=ch)
                    if not c["is_carousel_item"]:
                        raise param_error(f"The media {ch} is not a carousel item (is_carousel_item=true)")
                    if st.status_code(c, now) == "EXPIRED":
                        raise table_error(2207020)
                    if c["published"]:
                        raise table_error(2207006, media_id=ch)
        elif media_type == "REELS":
            kind = "REELS"
            if item:
                raise param_error("Reels cannot appear in carousels")
            if not video_url:
                raise param_error("The parameter video_url is required")
        elif media_type == "STORIES":
            if image_url and video_url:
                raise param_error("Stories support either image_url or video_url, not both")
            if not (image_url or video_url):
                raise param_error("The parameter image_url or video_url is required")
            kind = "STORIES" if video_url else "IMAGE"
        elif media_type == "VIDEO":
            if not item:  # retired for feed videos on November 9, 2023: "Use the REELS media type"
                raise table_error(2207023, media_type="VIDEO")
            if not video_url:
                raise param_error("The parameter video_url is required")
            kind = "VIDEO"
        elif media_type in ("", "IMAGE"):
            if not image_url:
                raise param_error("The parameter image_url is required")
            kind = "IMAGE"
        else:
            raise table_error(2207023, media_type=media_type)
        error_subcode = self._container_error_marker(text, key, url)
        if error_subcode == 0:
            error_subcode = 2207053 if kind in ("VIDEO", "REELS", "STORIES") else 2207052
        cid = st.new_container(ig_user, kind=kind, media_type=media_type or "IMAGE", caption=caption, key=key,
                               url=url, created_at=st.now(), is_carousel_item=item, children=children,
                               proc_s=_proc_of(caption, url), error_subcode=error_subcode)
        self._effect(key, "media")
        if slow:
            time.sleep(slow)
        return 200, {"id": cid}

    def _get_container(self, parts, params, **_):
        st = self.state
        fields = [f.strip() for f in str(params.get("fields") or "id").split(",") if f.strip()]
        with st.lock:
            c = st.containers[parts[0]]
            now = st.now()
            values = {"id": c["id"], "status_code": st.status_code(c, now), "status": st.status_text(c, now)}
        body = {f: values[f] for f in fields if f in values}
        body["id"] = c["id"]
        return 200, body

    def _post_media_publish(self, parts, params, *, account, text, key, slow):
        st = self.state
        ig_user = account if parts[0] == "me" else st.by_page.get(parts[0], parts[0])
        creation_id = str(params.get("creation_id") or "")
        if not creation_id:
            raise param_error("The parameter creation_id is required")
        with st.lock:
            c = st.containers.get(creation_id)
            if c is None or c["ig_user_id"] != ig_user:
                raise table_error(2207008, creation_id=creation_id)
            c["publish_requests"] += 1
            if c["published"]:  # one container, one post: the same media id again, no second post
                return 200, {"id": c["published"]}
            now = st.now()
            status = st.status_code(c, now)
            if status == "EXPIRED":
                raise table_error(2207020)
            if status == "IN_PROGRESS":
                raise table_error(2207027)
            if status == "ERROR":
                raise table_error(st.error_subcode_of(c, now) or 2207053)
            if st.quota_usage(ig_user, now) >= st.quota_total_of(ig_user):
                raise table_error(2207042)
            media_id = st.new_id()
            c["published"] = media_id
            c["publishes"] += 1
            st.publish_times.setdefault(ig_user, []).append(now)
            st.published.append({"media_id": media_id, "container_id": creation_id, "ig_user_id": ig_user,
                                 "key": c["key"], "caption": c["caption"], "media_type": c["media_type"],
                                 "time": now})
        self._effect(key, "media_publish")
        if slow:
            time.sleep(slow)
        return 200, {"id": media_id}

    def _get_publishing_limit(self, parts, params, *, account, **_):
        st = self.state
        ig_user = account if parts[0] == "me" else st.by_page.get(parts[0], parts[0])
        fields = [f.strip() for f in str(params.get("fields") or "quota_usage").split(",") if f.strip()]
        try:
            since = float(params["since"]) if params.get("since") else None
        except ValueError:
            raise param_error("The parameter since must be a Unix timestamp") from None
        with st.lock:
            now = st.now()
            entry: dict[str, Any] = {}
            if "quota_usage" in fields:
                entry["quota_usage"] = st.quota_usage(ig_user, now, since)
            if "config" in fields:
                entry["config"] = {"quota_total": st.quota_total_of(ig_user), "quota_duration": int(DAY_S)}
        return 200, {"data": [entry]}


class GraphSandbox:
    """In-process server for tests: GraphSandbox().start(); .url; .stats(); .stop()."""

    def __init__(self, port: int = 0, *, clock: Callable[[], float] | None = None, api: str = "facebook_login",
                 processing_s: dict[str, float] | None = None, publish_quota: int = DEFAULT_PUBLISH_QUOTA,
                 error_rate: float = 0.0, seed: int = 0, timeout_sleep_s: float = 35.0,
                 mix: dict[str, float] | None = None) -> None:
        self.state = SandboxState(clock=clock, api=api, processing_s=processing_s, publish_quota=publish_quota,
                                  error_rate=error_rate, seed=seed, timeout_sleep_s=timeout_sleep_s, mix=mix)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="graph-sandbox", daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v26.0"

    def start(self) -> GraphSandbox:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- test helpers -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    def reset(self) -> None:
        self.state.reset()

    def now(self) -> float:
        return self.state.now()

    def advance(self, seconds: float) -> None:
        """Shift the sandbox clock (same as POST /_sandbox/clock {"offset_s": seconds})."""
        with self.state.lock:
            self.state.offset_s += float(seconds)

    def add_account(self, ig_user_id: str, access_token: str, *, page_id: str | None = None,
                    username: str | None = None, token_expires_at: float | None = None) -> None:
        """token_expires_at: epoch seconds that debug_token reports (None or 0: never expires)."""
        self.state.add_account(ig_user_id, access_token, page_id=page_id, username=username,
                               token_expires_at=token_expires_at)

    def add_conversation(self, conversation_id: str, ig_user_id: str, customer_id: str, *,
                         customer_username: str | None = None) -> None:
        with self.state.lock:
            self.state.conversations[str(conversation_id)] = {
                "ig_user_id": str(ig_user_id), "customer_id": str(customer_id),
                "customer_username": customer_username or f"customer_{str(customer_id)[-4:]}"}

    def add_comment(self, comment_id: str, *, text: str, username: str | None = None, media_id: str | None = None,
                    caption: str | None = None, media_url: str | None = None) -> None:
        """Plant a comment (and the post it is on) that GET /{comment-id} and GET /{media-id} answer."""
        self.add_comment_on(self.state, comment_id, text=text, username=username, media_id=media_id,
                            caption=caption, media_url=media_url)

    @staticmethod
    def add_comment_on(st: SandboxState, comment_id: str, *, text: str, username: str | None = None,
                       media_id: str | None = None, caption: str | None = None, media_url: str | None = None) -> None:
        with st.lock:
            now = st.now()
            st.comments[str(comment_id)] = {"text": text, "username": username or "customer",
                                            "from_id": "9" + _digits("commenter:" + str(comment_id), 15),
                                            "time": now, "media_id": str(media_id) if media_id else None}
            if media_id:
                st.media[str(media_id)] = {"caption": caption or "", "media_type": "IMAGE", "media_url": media_url,
                                           "time": now - 3600}

    def add_message(self, conversation_id: str, text: str, *, from_customer: bool = True,
                    created_time: float | None = None) -> str:
        """Plant a message in a conversation (add_conversation first); created_time: epoch seconds."""
        return self.add_message_on(self.state, conversation_id, text=text, from_customer=from_customer,
                                   created_time=created_time)

    @staticmethod
    def add_message_on(st: SandboxState, conversation_id: str, *, text: str, from_customer: bool = True,
                       created_time: float | str | None = None) -> str:
        mid = "aWdfZAG1faXRlbTo" + st.new_id()
        with st.lock:
            st.messages[mid] = {"conversation_id": str(conversation_id), "text": text,
                                "from_customer": bool(from_customer),
                                "time": float(created_time) if created_time not in (None, "") else st.now()}
        return mid

    def add_container(self, ig_user_id: str, *, media_type: str = "IMAGE", caption: str = "",
                      created_at: float | None = None, status_code: str | None = None,
                      children: list[str] | None = None) -> str:
        return self.add_container_on(self.state, ig_user_id, media_type=media_type, caption=caption,
                                     created_at=created_at, status_code=status_code, children=children)

    @staticmethod
    def add_container_on(st: SandboxState, ig_user_id: str, *, media_type: str = "IMAGE", caption: str = "",
                         created_at: float | None = None, status_code: str | None = None,
                         children: list[str] | str | None = None) -> str:
        """Plant a container: created_at (epoch s, default now) 25 h ago reads EXPIRED; status_code
        PUBLISHED makes it published (a post exists, counted in the quota window at created_at),
        ERROR/IN_PROGRESS/FINISHED force that state until it expires."""
        media_type = str(media_type or "IMAGE").upper()
        if isinstance(children, str):
            children = [c.strip() for c in children.split(",") if c.strip()]
        kind = {"REELS": "REELS", "VIDEO": "VIDEO", "CAROUSEL": "CAROUSEL", "STORIES": "IMAGE"}.get(media_type, "IMAGE")
        created = st.now() if created_at is None else float(created_at)
        cid = st.new_container(str(ig_user_id), kind=kind, media_type=media_type, caption=caption, key=_key(caption),
                               url="", created_at=created, is_carousel_item=media_type == "VIDEO",
                               children=list(children or []), proc_s=0.0)
        code = (status_code or "").upper() or None
        with st.lock:
            c = st.containers[cid]
            if code == "PUBLISHED":
                media_id = st.new_id()
                c["published"], c["publishes"] = media_id, 1
                st.publish_times.setdefault(str(ig_user_id), []).append(created)
                st.published.append({"media_id": media_id, "container_id": cid, "ig_user_id": str(ig_user_id),
                                     "key": c["key"], "caption": caption, "media_type": media_type, "time": created})
            elif code == "ERROR":
                c["error_subcode"] = 2207053 if kind in ("REELS", "VIDEO") else 2207052
                c["forced_status"] = "ERROR"
            elif code in ("IN_PROGRESS", "FINISHED"):
                c["forced_status"] = code
            elif code == "EXPIRED" and created_at is None:
                c["created_at"] = st.now() - CONTAINER_TTL_S - 3600
        return cid

    def fail_next(self, op: str, kind: str, times: int = 1) -> None:
        """The next `times` requests of one op (e.g. comment_replies, messages) fail with `kind`."""
        with self.state.lock:
            self.state.forced[op] = [kind, int(times)]

    def set_container_status(self, container_id: str, status_code: str, *, error_subcode: int | None = None) -> None:
        """Force a container's state (IN_PROGRESS, FINISHED, ERROR; None to follow the clock again)."""
        with self.state.lock:
            c = self.state.containers[container_id]
            c["forced_status"] = status_code.upper() if status_code else None
            if status_code and status_code.upper() == "ERROR":
                c["error_subcode"] = error_subcode or c["error_subcode"] or 2207053

    def set_quota_usage(self, ig_user_id: str, used: int, total: int | None = None) -> None:
        self.set_quota_usage_on(self.state, ig_user_id, used, total)

    @staticmethod
    def set_quota_usage_on(st: SandboxState, ig_user_id: str, used: int, total: int | None = None) -> None:
        """This account has published `used` posts just now (they leave the 24 h window a day later);
        total sets its quota_total."""
        with st.lock:
            now = st.now()
            st.publish_times[str(ig_user_id)] = [now] * int(used)
            if total is not None:
                st.quota_total[str(ig_user_id)] = int(total)

    def set_usage(self, ig_user_id: str, **fields: Any) -> None:
        """Fields of this account's X-Business-Use-Case-Usage entry (call_count, total_cputime,
        total_time, type, estimated_time_to_regain_access: minutes, counted down on the clock)."""
        self.state.set_usage(ig_user_id, **fields)

    def set_app_usage(self, **fields: Any) -> None:
        with self.state.lock:
            self.state.app_usage.update(fields)

    def container(self, container_id: str) -> dict[str, Any]:
        return self.stats()["containers"][container_id]


def register_accounts(sandbox: GraphSandbox) -> int:
    """The demo: Instagram knows which account a token belongs to, which Page it is linked to and
    its username; the sandbox learns it from our accounts table (ids, tokens, usernames only)."""
    import sqlalchemy as sa

    from lib.core.db import make_engine
    from lib.core.schema import instagram_business_accounts as acc
    from lib.core.settings import load_settings

    engine = make_engine(load_settings().database_url)
    n = 0
    with engine.connect() as conn:
        for a in conn.execute(sa.select(acc.c.instagram_business_id, acc.c.access_token, acc.c.username)):
            if a.instagram_business_id and a.access_token:
                sandbox.add_account(str(a.instagram_business_id), a.access_token, username=a.username)
                n += 1
    engine.dispose()
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sandbox.graph_api", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--error-rate", type=float, default=0.0, help="share of unmarked requests that fail (0..1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-sleep", type=float, default=35.0, help="seconds a #fail:timeout answer takes")
    ap.add_argument("--api", choices=("facebook_login", "instagram_login"), default="facebook_login")
    ap.add_argument("--reels-processing-s", type=float, default=None, help="processing time of REELS/VIDEO containers")
    ap.add_argument("--stories-processing-s", type=float, default=None, help="processing time of video STORIES")
    ap.add_argument("--image-processing-s", type=float, default=None, help="processing time of image containers")
    ap.add_argument("--publish-quota", type=int, default=DEFAULT_PUBLISH_QUOTA, help="posts per account per 24 h")
    ap.add_argument("--register-accounts", action="store_true",
                    help="register the business accounts of DATABASE_URL (as Instagram knows its own accounts)")
    args = ap.parse_args(argv)
    processing: dict[str, float] = {}
    if args.reels_processing_s is not None:
        processing.update(REELS=args.reels_processing_s, VIDEO=args.reels_processing_s)
    if args.stories_processing_s is not None:
        processing["STORIES"] = args.stories_processing_s
    if args.image_processing_s is not None:
        processing["IMAGE"] = args.image_processing_s
    sandbox = GraphSandbox(args.port, api=args.api, processing_s=processing, publish_quota=args.publish_quota,
                           error_rate=args.error_rate, seed=args.seed, timeout_sleep_s=args.timeout_sleep)
    if args.register_accounts:
        register_accounts(sandbox)
    print(f"Graph sandbox on {sandbox.url} (api {args.api}, error rate {args.error_rate}, "
          f"REELS processing {sandbox.state.processing_s['REELS']:g} s)", flush=True)
    try:
        sandbox.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.httpd.server_close()


if __name__ == "__main__":
    main()
