"""Instagram Graph API client for the five post_queue action types.

One attempt per call (DESIGN decision 10): a plain requests.Session, no retrying adapter,
connect and read timeouts on every request. Failures raise lib.ig_errors.GraphError (Graph
answered with an error, or the network failed) or InvalidPayload (the row cannot be executed
as written). The access token travels in the form body (POST) or query (GET) and never
appears in an error message we build: messages name the Graph path, never the URL.

Mapping of payloads (spec 1.2) to Graph calls:
  reply_comment  POST /{comment_id}/replies          message=reply_text              -> id
  send_dm        POST /{ig_user_id}/messages         recipient={"id": recipient_id}, message={"text": message_text}
  reply_dm       as send_dm; the recipient is payload.recipient_id when present, else the
                 participant of GET /{conversation_id}?fields=participants that is not our
                 own account (the Send API addresses people, not conversations)
  publish_post   POST /{ig_user_id}/media (image_url or video_url, caption, media_type) -> creation_id,
                 then POST /{ig_user_id}/media_publish creation_id=...               -> media id
                 A payload that already has creation_id skips step one.
  repost_ugc     publish payload.creation_id; without one, create a container from the
                 permission's media (payload image_url / media_url / video_url, caption) first.
instagram_id on success: the reply id, the DM's message_id, the published media id.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

from lib.ig_errors import GraphError

VIDEO_TYPES = {"VIDEO", "REELS"}


class InvalidPayload(Exception):
    """The row lacks what the action needs; no Graph call can fix that (permanent)."""


@dataclass(frozen=True)
class AccountCreds:
    id: Any
    instagram_business_id: str | None
    access_token: str | None = field(repr=False)  # never in reprs or logs


@dataclass(frozen=True)
class ActionResult:
    instagram_id: str
    creation_id: str | None = None


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret and text else text


class GraphClient:
    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.session = session or requests.Session()

    # -- transport -------------------------------------------------------------------------
    def _call(self, method: str, path: str, token: str, data: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/{path.lstrip('/')}"
        fields = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in data.items() if v is not None}
        fields["access_token"] = token
        try:
            if method == "GET":
                resp = self.session.get(url, params=fields, timeout=self.timeout)
            else:
                resp = self.session.post(url, data=fields, timeout=self.timeout)
        except requests.RequestException as exc:
            # str(exc) can contain the URL (and a GET's query): name the path instead.
            raise GraphError(f"{type(exc).__name__} on {method} /{path.lstrip('/')}", exc=exc) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400 or not isinstance(body, dict) or "error" in body:
            err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
            text = redact(str(err.get("message") or resp.reason or "error"), token)
            code = err.get("code")
            sub = err.get("error_subcode")
            label = f"HTTP {resp.status_code}" + (f" code {code}" if code is not None else "") + (
                f"/{sub}" if sub is not None else "")
            raise GraphError(f"{label} on {method} /{path.lstrip('/')}: {text}"[:1000],
                             status=resp.status_code, body=body, headers=dict(resp.headers))
        return body

    @staticmethod
    def _id(body: dict[str, Any], key: str, path: str) -> str:
        value = body.get(key)
        if not value:
            raise GraphError(f"no {key!r} in the answer of /{path}", status=200, body=body)
        return str(value)

    # -- actions ---------------------------------------------------------------------------
    def execute(self, action_type: str, payload: dict[str, Any], account: AccountCreds, *,
                on_container: Callable[[str], None] | None = None) -> ActionResult:
        """Run one queue row. on_container(creation_id) is called between the two publish steps
        so the caller can store the container before publishing it (a retry then reuses it)."""
        if not account.access_token or not account.instagram_business_id:
            raise InvalidPayload("business account has no access_token or instagram_business_id")
        p = payload or {}
        if action_type == "reply_comment":
            comment_id, text = _need(p, "comment_id", "reply_text")
            path = f"{comment_id}/replies"
            return ActionResult(self._id(self._call("POST", path, account.access_token, {"message": text}), "id", path))
        if action_type in ("send_dm", "reply_dm"):
            (text,) = _need(p, "message_text")
            recipient = p.get("recipient_id")
            if not recipient and action_type == "reply_dm":
                recipient = self._conversation_peer(_need(p, "conversation_id")[0], account)
            if not recipient:
                raise InvalidPayload(f"{action_type} needs recipient_id")
            path = f"{account.instagram_business_id}/messages"
            body = self._call("POST", path, account.access_token,
                              {"recipient": {"id": str(recipient)}, "message": {"text": text}})
            return ActionResult(self._id(body, "message_id", path))
        if action_type in ("publish_post", "repost_ugc"):
            creation_id = p.get("creation_id")
            if not creation_id:
                creation_id = self._create_container(p, account, action_type)
                if on_container is not None:
                    on_container(creation_id)
            path = f"{account.instagram_business_id}/media_publish"
            body = self._call("POST", path, account.access_token, {"creation_id": str(creation_id)})
            return ActionResult(self._id(body, "id", path), creation_id=str(creation_id))
        raise InvalidPayload(f"unknown action_type {action_type!r}")

    def _conversation_peer(self, conversation_id: str, account: AccountCreds) -> str:
        path = str(conversation_id)
        body = self._call("GET", path, account.access_token, {"fields": "participants"})
        people = (body.get("participants") or {}).get("data") or []
        for person in people:
            if str(person.get("id")) != str(account.instagram_business_id):
                return str(person.get("id"))
        raise InvalidPayload(f"conversation {conversation_id} has no participant besides our account")

    def _create_container(self, p: dict[str, Any], account: AccountCreds, action_type: str) -> str:
        media_type = str(p.get("media_type") or "IMAGE").upper()
        media_url = p.get("video_url") or p.get("image_url") or p.get("media_url")
        if not media_url:
            need = "image_url" if action_type == "publish_post" else "creation_id or the permission's media_url"
            raise InvalidPayload(f"{action_type} needs {need}")
        fields: dict[str, Any] = {"caption": p.get("caption")}
        if media_type in VIDEO_TYPES:
            fields["video_url"] = media_url
            fields["media_type"] = "REELS" if media_type == "VIDEO" else media_type  # VIDEO is retired
        else:
            fields["image_url"] = media_url
            if media_type not in ("IMAGE", "CAROUSEL_ALBUM"):
                fields["media_type"] = media_type  # e.g. STORIES
        path = f"{account.instagram_business_id}/media"
        return self._id(self._call("POST", path, account.access_token, fields), "id", path)


def _need(payload: dict[str, Any], *keys: str) -> list[Any]:
    missing = [k for k in keys if payload.get(k) in (None, "")]
    if missing:
        raise InvalidPayload(f"payload lacks {', '.join(missing)}")
    return [payload[k] for k in keys]
