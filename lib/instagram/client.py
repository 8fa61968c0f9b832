"""Instagram Graph API client: one method per Graph call the worker makes (docs/worker.md).

One attempt per call: a plain requests.Session, no retrying adapter,
connect and read timeouts on every request. Failures raise lib.instagram.errors.GraphError (Graph
answered with an error, or the network failed). The access token travels in the
`Authorization: Bearer` header, never in a URL or a body, so no log line (urllib3's at DEBUG
included) and no error message can carry it; messages name the Graph path, never the URL.

Calls (INSTAGRAM_API picks the host, lib.core.settings.GRAPH_HOSTS; ids from instagram_business_accounts):
  reply_comment     POST /{ig-comment-id}/replies message=...                 -> reply id
  comment_replies   GET  /{ig-comment-id}/replies?fields=id,text,username,from  (every page: paging.next)
  comment_parent    GET  /{ig-comment-id}?fields=parent_id  (a reply's replies sit under its top-level comment)
  recent_messages   GET  /{conversation-id}?fields=messages, then GET /{message-id}?fields=id,message,from,created_time
  conversation_with GET  /me/conversations?platform=instagram&user_id=<IGSID>  (send_dm: the conversation)
  send_message      POST /me/messages (facebook_login: the Page of the token) or
                    POST /{ig-user-id}/messages (instagram_login)
                    recipient={"id": IGSID} message={"text": ...}              -> message_id
  conversation_peer GET  /{conversation-id}?fields=participants -> the participant that is not us
  create_container  POST /{ig-user-id}/media (image_url | video_url + media_type, caption, ...)
  container_status  GET  /{ig-container-id}?fields=status_code,status
  publish           POST /{ig-user-id}/media_publish creation_id=...           -> media id
  publishing_limit  GET  /{ig-user-id}/content_publishing_limit?fields=config,quota_usage
Reads for the review page (the context of a held row): comment, media, conversation_with
(GET /me/conversations?platform=instagram&user_id=), recent_messages (GET /{conversation-id}?fields=messages,
then GET /{message-id}?fields=id,created_time,from,to,message).
The container lifecycle around these calls (wait, expire, quota) is lib/instagram/publishing.py.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from lib.core.redact import redact
from lib.instagram.errors import GraphError
from lib.instagram.payload_rules import InvalidPayload, dm_problems

__all__ = ["AccountCreds", "GraphClient", "GraphError", "InvalidPayload", "Quota"]


@dataclass(frozen=True)
class AccountCreds:
    id: Any
    instagram_business_id: str | None
    access_token: str | None = field(repr=False)  # never in reprs or logs
    username: str | None = None


@dataclass(frozen=True)
class Quota:
    """content_publishing_limit: posts published through the API in the moving window."""

    usage: int
    total: int | None
    duration_s: int | None

    @property
    def left(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.usage)


# Observers see every call as (method, endpoint template, HTTP status or None, seconds, headers):
# usage headers per account, and later request metrics. Templates never carry ids or tokens.
Observer = Callable[[str, str, "int | None", float, dict], None]


def graph_session(base_url: str) -> requests.Session:
    """A Session that reads the environment once, here, instead of on every request: with requests'
    default trust_env it scans os.environ twice per call for proxies and looks for a ~/.netrc, a
    tenth of the worker's own time per row at benchmark rates. Kept: HTTPS_PROXY / NO_PROXY for the
    Graph host and a CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE). Dropped: .netrc credentials
    (the token travels in its header, never from a file)."""
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(base_url))  # honours NO_PROXY
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session


class GraphClient:
    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float,
                 api: str = "facebook_login", session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.api = api
        self.session = session or graph_session(self.base_url)
        self.observers: list[Observer] = []

    # -- transport -------------------------------------------------------------------------
    def _call(self, method: str, path: str, token: str | None, data: dict[str, Any] | None = None, *,
              template: str) -> dict[str, Any]:
        if not token:
            raise InvalidPayload("business account has no access_token")
        url = f"{self.base_url}/{path.lstrip('/')}"
        fields = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                  for k, v in (data or {}).items() if v is not None}
        headers = {"Authorization": f"Bearer {token}"}
        began = time.monotonic()
        try:
            if method == "GET":
                resp = self.session.get(url, params=fields, headers=headers, timeout=self.timeout)
            else:
                resp = self.session.post(url, data=fields, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            self._observe(method, template, None, began, {})
            # str(exc) can contain the URL: name the path instead.
            raise GraphError(f"{type(exc).__name__} on {method} /{path.lstrip('/')}", exc=exc) from None
        resp_headers = dict(resp.headers)
        self._observe(method, template, resp.status_code, began, resp_headers)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400 or not isinstance(body, dict) or "error" in body:
            err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
            text = redact(str(err.get("message") or resp.reason or "error"), secrets=(token,))
            code = err.get("code")
            sub = err.get("error_subcode")
            label = f"HTTP {resp.status_code}" + (f" code {code}" if code is not None else "") + (
                f"/{sub}" if sub is not None else "")
            raise GraphError(f"{label} on {method} /{path.lstrip('/')}: {text}"[:1000],
                             status=resp.status_code, body=body, headers=resp_headers)
        return body

    def _observe(self, method, template, status, began, headers) -> None:
        for observer in self.observers:
            observer(method, template, status, time.monotonic() - began, headers)

    @staticmethod
    def _id(body: dict[str, Any], key: str, path: str) -> str:
        value = body.get(key)
        if not value:
            raise GraphError(f"no {key!r} in the answer of /{path}", status=200, body=body)
        return str(value)

    @staticmethod
    def _ig_user(account: AccountCreds) -> str:
        if not account.instagram_business_id:
            raise InvalidPayload("business account has no instagram_business_id")
        return str(account.instagram_business_id)

    # -- comments --------------------------------------------------------------------------
    def reply_comment(self, comment_id: str, text: str, account: AccountCreds) -> str:
        path = f"{comment_id}/replies"
        body = self._call("POST", path, account.access_token, {"message": text}, template="/{ig-comment-id}/replies")
        return self._id(body, "id", path)

    def comment_replies(self, comment_id: str, account: AccountCreds, *, max_pages: int = 50) -> list[dict[str, Any]]:
        """Every reply of a comment, following the cursor pages (paging.cursors.after) to the end."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"fields": "id,text,username,from,timestamp", "limit": 100}
        for _ in range(max_pages):
            body = self._call("GET", f"{comment_id}/replies", account.access_token, params,
                              template="/{ig-comment-id}/replies")
            out += [r for r in (body.get("data") or []) if isinstance(r, dict)]
            paging = body.get("paging") if isinstance(body.get("paging"), dict) else {}
            after = (paging.get("cursors") or {}).get("after") if isinstance(paging.get("cursors"), dict) else None
            if not paging.get("next") or not after:
                return out
            params = {**params, "after": after}
        raise GraphError(f"/{comment_id}/replies has more than {max_pages} pages; not read to the end")

    def comment_parent(self, comment_id: str, account: AccountCreds) -> str | None:
        """The top-level comment of a reply (IG Comment `parent_id`), None for a top-level comment."""
        body = self._call("GET", str(comment_id), account.access_token, {"fields": "id,parent_id"},
                          template="/{ig-comment-id}")
        return str(body["parent_id"]) if body.get("parent_id") else None

    def conversation_with(self, user_id: str, account: AccountCreds) -> str | None:
        """The conversation id with one Instagram user (Conversations API: user_id=<IGSID>)."""
        node = f"{self._ig_user(account)}/conversations" if self.api == "instagram_login" else "me/conversations"
        body = self._call("GET", node, account.access_token, {"platform": "instagram", "user_id": str(user_id)},
                          template="/me/conversations")
        data = [c for c in (body.get("data") or []) if isinstance(c, dict) and c.get("id")]
        return str(data[0]["id"]) if data else None

    def recent_messages(self, conversation_id: str, account: AccountCreds, *, limit: int = 20) -> list[dict[str, Any]]:
        """The conversation's newest `limit` messages, newest first: {id, created_time, from, to, message}.
        Graph lists the message ids; each message's details are one more read, and only the 20 most
        recent messages have details at all (Conversations API)."""
        body = self._call("GET", str(conversation_id), account.access_token, {"fields": "messages"},
                          template="/{conversation-id}")
        ids = [m.get("id") for m in ((body.get("messages") or {}).get("data") or []) if isinstance(m, dict)]
        out = []
        for mid in [i for i in ids if i][:max(0, min(limit, 20))]:
            out.append(self._call("GET", str(mid), account.access_token,
                                  {"fields": "id,created_time,from,to,message"}, template="/{message-id}"))
        return out

    # -- messages --------------------------------------------------------------------------
    def send_message(self, recipient_id: str, text: str, account: AccountCreds) -> str:
        problems = dm_problems(text)
        if problems:
            raise InvalidPayload(problems[0])
        if self.api == "instagram_login":
            path, template = f"{self._ig_user(account)}/messages", "/{ig-user-id}/messages"
        else:  # Messenger Platform: Instagram messages go out through the Page the token belongs to
            path, template = "me/messages", "/me/messages"
        body = self._call("POST", path, account.access_token,
                          {"recipient": {"id": str(recipient_id)}, "message": {"text": text}}, template=template)
        return self._id(body, "message_id", path)

    def conversation_peer(self, conversation_id: str, account: AccountCreds) -> str:
        """The conversation's participant that is not our account (by id or by username).
        Refuses to guess when it cannot tell which one is us: a DM never goes to the wrong person."""
        body = self._call("GET", str(conversation_id), account.access_token, {"fields": "participants"},
                          template="/{conversation-id}")
        people = [p for p in ((body.get("participants") or {}).get("data") or []) if isinstance(p, dict)]
        ours = {str(account.instagram_business_id or ""), str(account.username or "").lower()} - {""}

        def is_us(person: dict) -> bool:
            return str(person.get("id")) in ours or str(person.get("username") or "").lower() in ours

        others = [p for p in people if not is_us(p)]
        if len(others) == 1 and len(people) - len(others) >= 1:
            return str(others[0].get("id"))
        raise InvalidPayload(f"conversation {conversation_id}: cannot tell the customer from our account among "
                             f"{len(people)} participants")

    # -- reads for a reviewer (lib/queue/review.py) -----------------------------------------------------
    def comment(self, comment_id: str, account: AccountCreds) -> dict[str, Any]:
        """The comment an agent answers: {id, text, username, timestamp, media: {id}}."""
        return self._call("GET", str(comment_id), account.access_token,
                          {"fields": "id,text,username,timestamp,media"}, template="/{ig-comment-id}")

    def media(self, media_id: str, account: AccountCreds) -> dict[str, Any]:
        return self._call("GET", str(media_id), account.access_token,
                          {"fields": "id,caption,media_type,media_url,permalink,timestamp"}, template="/{ig-media-id}")

    # -- content publishing ----------------------------------------------------------------
    def create_container(self, fields: dict[str, Any], account: AccountCreds) -> str:
        path = f"{self._ig_user(account)}/media"
        return self._id(self._call("POST", path, account.access_token, fields, template="/{ig-user-id}/media"),
                        "id", path)

    def container_status(self, creation_id: str, account: AccountCreds) -> tuple[str, str | None]:
        """(status_code, status) of a container: IN_PROGRESS, FINISHED, ERROR, EXPIRED or PUBLISHED."""
        body = self._call("GET", str(creation_id), account.access_token, {"fields": "status_code,status"},
                          template="/{ig-container-id}")
        return str(body.get("status_code") or "").upper(), (None if body.get("status") is None else str(body["status"]))

    def publish(self, creation_id: str, account: AccountCreds) -> str:
        path = f"{self._ig_user(account)}/media_publish"
        body = self._call("POST", path, account.access_token, {"creation_id": str(creation_id)},
                          template="/{ig-user-id}/media_publish")
        return self._id(body, "id", path)

    def debug_token(self, account: AccountCreds, app_token: str) -> dict[str, Any]:
        """GET /debug_token?input_token=<the account's token> with the app's token: `expires_at`
        (Unix time; 0 = never), `is_valid`. The account's token is a query parameter here (Graph
        offers no other way); urllib3's URL logging is switched off in the worker for that reason."""
        if not account.access_token:
            raise InvalidPayload("business account has no access_token")
        body = self._call("GET", "debug_token", app_token, {"input_token": account.access_token},
                          template="/debug_token")
        return body.get("data") if isinstance(body.get("data"), dict) else {}

    def publishing_limit(self, account: AccountCreds) -> Quota:
        body = self._call("GET", f"{self._ig_user(account)}/content_publishing_limit", account.access_token,
                          {"fields": "config,quota_usage"}, template="/{ig-user-id}/content_publishing_limit")
        entry = (body.get("data") or [{}])[0] if isinstance(body.get("data"), list) else {}
        config = entry.get("config") or {}

        def num(v):
            try:
                return int(v)
            except (TypeError, ValueError):
                return None

        return Quota(num(entry.get("quota_usage")) or 0, num(config.get("quota_total")),
                     num(config.get("quota_duration")))
