"""The Graph side of one row: which call an action makes, what Graph's usage headers and publishing quota
allow (per tick), and, before acting again on a row whose first attempt may have reached Instagram, a look
at Instagram for our own reply or message.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from lib.core.settings import Settings
from lib.instagram import publishing
from lib.instagram import usage as graph_usage
from lib.instagram.client import AccountCreds, GraphClient, InvalidPayload, Quota
from lib.instagram.errors import GraphError, account_usage, app_usage, categorize_ig_error
from lib.instagram.payload_rules import payload_problems
from lib.instagram.publishing import Sent, Wait
from lib.queue.rules import CONTENT_ACTIONS, Claimed
from lib.queue.store import store_state

log = logging.getLogger("worker")  # these run in the worker: its log



QUOTA_CACHE_S = 60  # content_publishing_limit is read at most once a minute per account and process


class GraphBudget:
    """What this process learned from Graph during a tick: the usage headers of each answer
    (recorded per account in graph_usage, and whether the account or the whole app must stop),
    and each account's publishing quota (read at most once a minute)."""

    def __init__(self, engine: Engine, client: GraphClient, now_fn: Callable[[], datetime]) -> None:
        self.engine, self.client, self.now_fn = engine, client, now_fn
        self.account: AccountCreds | None = None
        self.app_stopped: str | None = None
        self.account_stopped: dict[Any, str] = {}
        self._latest: dict[str, tuple[Any, Any, datetime]] = {}  # scope -> (account id, Usage, seen)
        self._quotas: dict[Any, tuple[float, Quota]] = {}

    def observe(self, method, template, status, seconds, headers) -> None:
        if not headers:
            return
        now, acct = self.now_fn(), self.account
        app = app_usage(headers)
        usage = account_usage(headers, acct.instagram_business_id) if acct is not None else None
        if app is not None:
            self._latest[graph_usage.APP] = (None, app, now)
        if usage is not None:
            self._latest[graph_usage.scope_of(acct.id)] = (acct.id, usage, now)
        stopped = False
        if app is not None and app.exhausted:
            self.app_stopped = f"app usage at {app.peak:.0f}% (X-App-Usage)"
            stopped = True
        if usage is not None and usage.exhausted and acct is not None:
            self.account_stopped[acct.id] = (f"business use case usage at {usage.peak:.0f}%"
                                             + (f", access back in {usage.regain_access_minutes:g} min"
                                                if usage.regain_access_minutes else ""))
            stopped = True
        if stopped:  # other workers must see a throttle at once
            self.flush()

    def flush(self) -> None:
        """Write the latest usage of each scope seen (once per tick, or at once on a throttle)."""
        if not self._latest:
            return
        latest, self._latest = self._latest, {}
        with self.engine.begin() as conn:
            for account_id, usage, seen in latest.values():
                graph_usage.record_usage(conn, account_id=account_id, usage=usage, now=seen)

    def quota_left(self, account: AccountCreds) -> int | None:
        cached = self._quotas.get(account.id)
        if cached is None or time.monotonic() - cached[0] > QUOTA_CACHE_S:
            try:
                quota = self.client.publishing_limit(account)
            except GraphError as exc:
                if categorize_ig_error(exc).error_category != "permanent":
                    raise
                log.warning("content_publishing_limit unreadable for account %s (%s): publishing without it",
                            account.id, exc)
                return None
            with self.engine.begin() as conn:
                graph_usage.record_quota(conn, account_id=account.id, usage=quota.usage, total=quota.total,
                                         duration_s=quota.duration_s, now=self.now_fn())
            cached = self._quotas[account.id] = (time.monotonic(), quota)
        return cached[1].left

    def quota(self, account: AccountCreds) -> Quota | None:
        cached = self._quotas.get(account.id)
        return cached[1] if cached else None

    def published(self, account: AccountCreds) -> None:
        cached = self._quotas.get(account.id)
        if cached is not None:
            q = cached[1]
            self._quotas[account.id] = (cached[0], Quota(q.usage + 1, q.total, q.duration_s))


def perform(client: GraphClient, settings: Settings, budget: GraphBudget, engine: Engine, row: Claimed,
             now_fn) -> Sent | Wait:
    """One attempt of one row against Instagram (the Graph calls per action type: docs/worker.md)."""
    if row.account is None:
        raise InvalidPayload(f"business account {row.business_account_id} not found")
    acct, p = row.account, row.payload
    if row.action_type in CONTENT_ACTIONS:
        return publishing.publish(client, row.action_type, p, acct, row.state, now=now_fn(),
                                  timeout_s=settings.container_timeout_s,
                                  interval_s=settings.container_check_interval_s,
                                  save=lambda st: store_state(engine, row, st, now=now_fn()),
                                  quota_left=lambda: budget.quota_left(acct))
    problems = payload_problems(row.action_type, p)
    if problems:
        raise InvalidPayload("; ".join(problems))
    if row.action_type == "reply_comment":
        if row.state.uncertain:  # an earlier attempt may have posted it: look before replying again
            found = look_first(row, lambda: _our_reply(client, acct, str(p["comment_id"]), str(p["reply_text"])))
            if found is not None:
                return found
        return Sent(client.reply_comment(p["comment_id"], p["reply_text"], acct))
    if row.action_type in ("send_dm", "reply_dm"):
        recipient = p.get("recipient_id")
        if not recipient:
            recipient = client.conversation_peer(p["conversation_id"], acct)
        if row.state.uncertain:  # read the conversation back before sending again
            found = look_first(row, lambda: _our_message(client, acct, p.get("conversation_id"), str(recipient),
                                                          str(p["message_text"])))
            if found is not None:
                return found
        return Sent(client.send_message(str(recipient), p["message_text"], acct))
    raise InvalidPayload(f"unknown action_type {row.action_type!r}")


class LookFirstFailed(GraphError):
    """The read that would tell whether an uncertain attempt reached Instagram failed: the row is
    not sent again now (a failed attempt that keeps the uncertainty), never posted blind."""


def look_first(row: Claimed, read: Callable[[], Sent | None]) -> Sent | None:
    """Run the look-first read of an uncertain row. Found -> Sent (no second call); not there ->
    None and the row is settled (safe to send); the read failed -> LookFirstFailed."""
    try:
        found = read()
    except GraphError as exc:
        raise LookFirstFailed(f"could not check whether an earlier attempt already reached Instagram ({exc}); "
                              "not sending again until it can be checked", status=exc.status, body=exc.body,
                              headers=exc.headers, exc=exc.exc) from None
    row.settled = True
    return found


def _is_ours(acct: AccountCreds, author: dict[str, Any], username: Any = None) -> bool:
    return (str(author.get("id")) in {str(acct.instagram_business_id), str(acct.id)}
            or bool(acct.username and str(username or author.get("username") or "").lower() == acct.username.lower()))


def _our_reply(client: GraphClient, acct: AccountCreds, comment_id: str, text: str) -> Sent | None:
    """Our reply with this text under the comment, if an earlier attempt posted it. A reply to a reply
    is attached to the top-level comment (IG Comment Replies), so a reply's replies are read under
    its parent_id; every page of replies is read."""
    parent = client.comment_parent(comment_id, acct) or comment_id
    for reply in client.comment_replies(parent, acct):
        author = reply.get("from") if isinstance(reply.get("from"), dict) else {}
        if _is_ours(acct, author, reply.get("username")) and str(reply.get("text") or "") == text:
            return Sent(str(reply.get("id")), "the reply was already there (an earlier attempt's answer was lost)")
    return None


def _our_message(client: GraphClient, acct: AccountCreds, conversation_id: Any, recipient: str,
                 text: str) -> Sent | None:
    """Our message with this text among the conversation's newest messages, if an earlier attempt
    sent it (Conversations API; send_dm finds the conversation by the recipient's id)."""
    conv = str(conversation_id) if conversation_id else client.conversation_with(recipient, acct)
    if conv is None:
        return None  # no conversation with this person yet: nothing was sent
    for message in client.recent_messages(conv, acct):
        author = message.get("from") if isinstance(message.get("from"), dict) else {}
        if _is_ours(acct, author) and str(message.get("message") or "") == text:
            return Sent(str(message.get("id")), "the message was already in the conversation (an earlier "
                                                "attempt's answer was lost)")
    return None
