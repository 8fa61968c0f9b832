"""The media container lifecycle of one publish_post / repost_ugc attempt (no database here).

Meta's Content Publishing guide: create a container (POST /{ig-user-id}/media), wait until its
status_code is FINISHED ("Video uploads are asynchronous ... request the status_code field on
the IG Container"; "Containers expire after 24 hours"), then POST /{ig-user-id}/media_publish.
Quotes and URLs: docs/worker.md and docs/graph-api.md. One attempt here:

* a stored creation_id is always read first (GET /{container}?fields=status_code,status):
  PUBLISHED -> the post is live, never publish again (this settles a publish that timed out);
  FINISHED -> publish; IN_PROGRESS -> wait (Wait), or a failed attempt once the container is
  older than CONTAINER_TIMEOUT_S; ERROR -> read the error subcode in its `status` ("If status_code
  is ERROR, this value will be an error subcode"): a subcode whose documented solution is to try
  again or make a new container (2207053, 2207003, 2207001, ...) drops the container and counts a
  failed attempt (ContainerRetryable); any other -> permanent with Instagram's text;
  EXPIRED -> a new container.
* before creating a container, the account's publishing quota (content_publishing_limit) must
  leave room; otherwise the row waits (Wait, kind "quota") and no container is made.
* a carousel: each item container is created and FINISHED first, then the parent
  (media_type=CAROUSEL, children=...) is created and published.
* media_publish answering 9007/2207027 (not ready) -> wait; a "generate a new container" answer
  drops the container and counts as a failed attempt (the next one makes a new container).

`save(state)` persists the container ids before the next call, so a crash or a timeout never
leads to a second container being published: the next attempt reads what it stored.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from lib.core.timeutil import as_utc
from lib.instagram.client import AccountCreds, GraphClient
from lib.instagram.errors import NEW_CONTAINER, WAIT_CONTAINER, GraphError, categorize_ig_error, container_error_rule
from lib.instagram.payload_rules import InvalidPayload, media_spec

CONTAINER_LIFETIME = timedelta(hours=24)  # IG Container: "EXPIRED — not published within 24 hours"
READY, WORKING, FAILED, EXPIRED, PUBLISHED = "FINISHED", "IN_PROGRESS", "ERROR", "EXPIRED", "PUBLISHED"
# Graph's answer for an id that does not exist (any more): code 100, subcode 33.
_GONE = (100, 33)


@dataclass(frozen=True)
class ContainerState:
    """What the worker stored about this row's containers (table post_queue_state)."""

    creation_id: str | None = None
    created_at: datetime | None = None
    children: tuple[dict[str, Any], ...] = field(default=())  # {"key": url, "id": container id, "created_at": iso}
    uncertain: bool = False  # the last attempt may have reached Instagram without an answer


@dataclass(frozen=True)
class Sent:
    instagram_id: str | None
    note: str | None = None


@dataclass(frozen=True)
class Wait:
    kind: str  # "container" | "quota"
    reason: str
    check_after_s: float


class ContainerFailed(Exception):
    """Instagram could not process the media (status_code ERROR, a subcode with no retry): permanent."""


class ContainerRetryable(Exception):
    """The container cannot be published but a new one may be: a failed attempt (retry schedule);
    the stored container was dropped, so the next attempt makes a new one."""


class ContainerTimedOut(ContainerRetryable):
    """Still IN_PROGRESS long after creation."""


def _container_error(what: str, cid: str, detail: str | None, state: ContainerState,
                     save: Callable[[ContainerState], None]) -> Exception:
    """The exception for a container in ERROR, by the subcode in its status (the error table)."""
    rule = container_error_rule(detail)
    text = f"Instagram could not process {what} {cid}: status {detail or 'ERROR'}"
    if rule is not None and rule.retryable:
        save(replace(state, creation_id=None, created_at=None, children=()))
        return ContainerRetryable(f"{text}; Meta says to try again with a new container, which the next "
                                  "attempt makes")
    return ContainerFailed(text)


def _age(created_at: datetime | None, now: datetime) -> timedelta | None:
    return None if created_at is None else now - as_utc(created_at)


def _minutes(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    minutes = int(delta.total_seconds() // 60)
    return f", {minutes} min" if minutes else ", under a minute"


def publish(client: GraphClient, action_type: str, payload: dict[str, Any], account: AccountCreds,
            state: ContainerState, *, now: datetime, timeout_s: float, interval_s: float,
            save: Callable[[ContainerState], None], quota_left: Callable[[], int | None]) -> Sent | Wait:
    p = payload or {}
    cid = str(p["creation_id"]) if p.get("creation_id") else None
    if cid:
        created = state.created_at if state.creation_id == cid else None
        code, detail = _status(client, cid, account)
        if code == PUBLISHED:
            return Sent(None, f"container {cid} was already published (an earlier attempt's answer was lost)")
        if code == READY:
            return _publish(client, cid, account, state, save, interval_s, now, created)
        if code == WORKING:
            return _still_working(cid, "media", created, now, timeout_s, interval_s, state, save)
        if code == FAILED:
            raise _container_error("container", cid, detail, state, save)
        # EXPIRED, gone, or a status we do not know: this container will never be published.
        state = replace(state, creation_id=None, created_at=None)
        save(state)
        if not any(p.get(k) for k in ("image_url", "video_url", "media_url", "children")):
            raise InvalidPayload(f"container {cid} is {code or 'gone'} and the payload holds no media URL to make "
                                 "a new one (image_url / video_url / media_url)")
    elif action_type == "repost_ugc" and not any(p.get(k) for k in ("image_url", "video_url", "media_url", "children")):
        raise InvalidPayload("repost_ugc needs creation_id or the UGC's media URL (media_url / image_url / "
                             "video_url) in the payload: Instagram has no repost call, a repost is a new post")
    spec = media_spec(action_type, p)
    left = quota_left()
    if left is not None and left <= 0:
        return Wait("quota", "the account's content publishing limit for the last 24 h is used up", interval_s)
    if spec.children:
        children, waiting = _carousel_items(client, spec, account, state, now, timeout_s, save)
        state = replace(state, children=children)
        if waiting is not None:
            return Wait("container", f"Instagram is processing {waiting} of {len(children)} carousel items",
                        interval_s)
        fields = {**spec.fields, "children": ",".join(c["id"] for c in children)}
    else:
        fields = spec.fields
    cid = client.create_container(fields, account)
    state = replace(state, creation_id=cid, created_at=now)
    save(state)
    code, detail = _status(client, cid, account)
    if code == READY:
        return _publish(client, cid, account, state, save, interval_s, now, now)
    if code == FAILED:
        raise _container_error("container", cid, detail, state, save)
    return Wait("container", f"Instagram is processing the {spec.kind} container", interval_s)


def _status(client: GraphClient, cid: str, account: AccountCreds) -> tuple[str, str | None]:
    try:
        return client.container_status(cid, account)
    except GraphError as exc:
        if (exc.code, exc.subcode) == _GONE:
            return "GONE", None
        raise


def _publish(client, cid, account, state, save, interval_s, now, created) -> Sent | Wait:
    try:
        return Sent(client.publish(cid, account))
    except GraphError as exc:
        action = categorize_ig_error(exc).action
        if action == WAIT_CONTAINER:  # 9007/2207027: not ready after all
            return Wait("container", f"Instagram says the media is not ready for publishing{_minutes(_age(created, now))}",
                        interval_s)
        if action == NEW_CONTAINER:
            save(replace(state, creation_id=None, created_at=None, children=()))
        raise


def _still_working(cid, what, created, now, timeout_s, interval_s, state, save) -> Wait:
    age = _age(created, now)
    if age is not None and age.total_seconds() > timeout_s:
        save(replace(state, creation_id=None, created_at=None, children=()))
        raise ContainerTimedOut(f"container {cid} still IN_PROGRESS {int(age.total_seconds() // 60)} min after "
                                f"it was created (limit {int(timeout_s // 60)} min); a new one is made next time")
    return Wait("container", f"Instagram is processing the {what} container{_minutes(age)}", interval_s)


def _carousel_items(client, spec, account, state, now, timeout_s, save):
    """Item containers of a carousel, created once and kept across attempts. -> (items, how many
    are still processing or None when all are FINISHED)."""
    known = {c.get("key"): c for c in state.children if isinstance(c, dict)}
    items: list[dict[str, Any]] = []
    for key, fields in spec.children:
        item = known.get(key)
        if item and _age(datetime.fromisoformat(item["created_at"]), now) >= CONTAINER_LIFETIME:
            item = None
        if item is None:
            item = {"key": key, "id": client.create_container(fields, account), "created_at": now.isoformat()}
            items.append(item)
            save(replace(state, children=tuple(items)))  # before the next call: a crash keeps what exists
        else:
            items.append(item)
    working = 0
    for i, item in enumerate(items):
        code, detail = _status(client, item["id"], account)
        if code == FAILED:
            raise _container_error(f"carousel item {i + 1}", item["id"], detail, state, save)
        if code == WORKING:
            age = _age(datetime.fromisoformat(item["created_at"]), now)
            if age.total_seconds() > timeout_s:
                save(replace(state, children=()))
                raise ContainerTimedOut(f"carousel item {i + 1} still IN_PROGRESS {int(age.total_seconds() // 60)} "
                                        f"min after it was created; new items are made next time")
            working += 1
        elif code != READY:  # expired or gone: make it again next attempt
            save(replace(state, children=tuple(c for c in items if c is not item)))
            raise ContainerTimedOut(f"carousel item {i + 1} is {code or 'unknown'}; it is made again next time")
    save(replace(state, children=tuple(items)))
    return tuple(items), (working or None)
