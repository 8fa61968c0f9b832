"""Oversight chat SSE client: requests with stream=True + sseclient-py -> typed events.

Three layers, each testable on its own:

* `parse_event_data` / `iter_chat_events`: pure, bytes in, typed events out (sseclient-py does
  the SSE framing: `: ping` comments are skipped, multi-line `data:` is joined with newlines).
* `open_chat`: sends the spec's request and turns every non-SSE answer into an `OversightError`
  whose message an operator can act on (503 AGENT_DOWN, other HTTP errors, HTML bodies, no
  connection).
* `ChatStream`: consumes an open response, accumulates the answer, coalesces tokens for
  rendering, and records how the stream ended (done, error, dropped, timeout, stopped), so the
  caller can save the answer - complete or not - whatever happened.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import sseclient

# ---------------------------------------------------------------------------------------------
# events


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Done:
    latency_ms: int | None = None
    tools_used: list[str] | None = None


@dataclass(frozen=True)
class ErrorEvent:
    content: str


@dataclass(frozen=True)
class Ignored:
    """An event we could not use (malformed JSON, no known field); kept for counting/logging."""

    raw: str
    reason: str


ChatEvent = Token | Done | ErrorEvent | Ignored


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _tools(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return None


def parse_event_data(data: str, event_name: str = "message") -> list[ChatEvent]:
    """The events in one SSE `data` payload (token, done, error). Unknown fields are ignored.

    `{"token": ...}` -> Token; `{"done": true, "latency_ms": n, "tools_used": [...]}` -> Done;
    `{"type": "error", "content": ...}` (or an SSE `event: error`) -> ErrorEvent. A payload with
    a token and done together yields both, token first.
    """
    try:
        obj = json.loads(data)
    except ValueError:
        if event_name == "error":
            return [ErrorEvent(data)]
        return [Ignored(data, "malformed JSON")]
    if not isinstance(obj, dict):
        return [Ignored(data, "not a JSON object")]
    if obj.get("type") == "error" or event_name == "error":
        content = obj.get("content", obj.get("error", obj.get("message")))
        return [ErrorEvent(str(content) if content is not None else "The oversight backend reported an error.")]
    out: list[ChatEvent] = []
    token = obj.get("token")
    if token is not None:
        out.append(Token(token if isinstance(token, str) else str(token)))
    if obj.get("done") is True:
        out.append(Done(_int_or_none(obj.get("latency_ms")), _tools(obj.get("tools_used"))))
    return out or [Ignored(data, "no token, done or error field")]


def iter_chat_events(chunks: Iterable[bytes]) -> Iterator[ChatEvent]:
    """Typed events from raw SSE bytes as they arrive (any chunking)."""
    for event in sseclient.SSEClient(chunks).events():
        yield from parse_event_data(event.data, event.event)


# ---------------------------------------------------------------------------------------------
# the request


class OversightError(Exception):
    """A failure before the answer started; str(exc) is the message for the operator."""


class AgentDown(OversightError):
    def __init__(self, message: str, last_beat_at: str | None = None):
        super().__init__(message)
        self.last_beat_at = last_beat_at


class BackendHttpError(OversightError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class NotEventStream(OversightError):
    pass


class BackendUnreachable(OversightError):
    pass


@dataclass(frozen=True)
class ChatRequest:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def build_chat_request(
    base_url: str,
    path: str,
    *,
    user_id: str,
    business_account_id: str,
    question: str,
    chat_history: list[dict[str, Any]],
) -> ChatRequest:
    """Headers and body exactly as the oversight backend expects them (docs/oversight.md)."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    headers = {
        "Content-Type": "application/json",
        "X-User-ID": user_id,
        "Accept": "text/event-stream",
        "Accept-Encoding": "identity",  # a compressed event stream would be buffered by the decoder
        "Cache-Control": "no-cache",
    }
    body = {
        "business_account_id": str(business_account_id),
        "user_id": user_id,
        "question": question,
        "chat_history": chat_history,
        "stream": True,
    }
    return ChatRequest(url, headers, body)


def _short_body(resp: requests.Response, limit: int = 200) -> str:
    try:
        text = resp.text
    except Exception:  # noqa: BLE001 - a body we cannot decode is not worth a traceback
        return ""
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _json_body(resp: requests.Response) -> dict[str, Any] | None:
    try:
        obj = resp.json()
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def open_chat(
    request: ChatRequest,
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    http: requests.Session | None = None,
) -> requests.Response:
    """POST the question; return the open event-stream response or raise an OversightError."""
    http = http or requests
    try:
        resp = http.post(
            request.url,
            json=request.body,
            headers=request.headers,
            stream=True,
            timeout=(connect_timeout_s, read_timeout_s),
        )
    except requests.Timeout as exc:
        raise BackendUnreachable(
            f"The oversight backend at {request.url} did not answer within the timeout ({type(exc).__name__})."
        ) from exc
    except requests.RequestException as exc:
        raise BackendUnreachable(
            f"Cannot reach the oversight backend at {request.url}. Check OVERSIGHT_API_URL and that the "
            f"backend is running. ({type(exc).__name__})"
        ) from exc
    if resp.status_code != 200:
        try:
            body = _json_body(resp)
            if resp.status_code == 503 and body and body.get("code") == "AGENT_DOWN":
                raise AgentDown(
                    str(body.get("error") or "Agent is not responding - cannot start oversight chat"),
                    last_beat_at=body.get("last_beat_at"),
                )
            detail = ""
            if body:
                detail = str(body.get("error") or body.get("message") or body.get("detail") or "")
            ctype = resp.headers.get("Content-Type", "")
            if not detail and "html" in ctype.lower():
                detail = "the server answered with an HTML error page"
            elif not detail:
                detail = _short_body(resp) or "no details"
            raise BackendHttpError(
                f"The oversight backend answered HTTP {resp.status_code} {resp.reason or ''}".rstrip()
                + f": {detail}",
                resp.status_code,
            )
        finally:
            resp.close()
    ctype = resp.headers.get("Content-Type", "")
    if not ctype.lower().startswith("text/event-stream"):
        snippet = _short_body(resp, 120)
        resp.close()
        raise NotEventStream(
            f"The oversight backend did not answer with an event stream (Content-Type {ctype or 'missing'!r})"
            + (f": {snippet}" if snippet else ".")
        )
    return resp


def raw_chunks(resp: requests.Response) -> Iterator[bytes]:
    """Bytes as they arrive: per HTTP chunk when chunked, else whatever one read returns."""
    if resp.raw.chunked:
        yield from resp.iter_content(chunk_size=None)
        return
    while True:
        data = resp.raw.read1(8192)
        if not data:
            return
        yield data


# ---------------------------------------------------------------------------------------------
# consuming the stream

OUTCOME_MESSAGES = {
    "done": "",
    "error": "The oversight backend reported an error",
    "dropped": "The connection to the oversight backend was lost before the answer was complete",
    "timeout": "The answer exceeded the maximum stream duration and was cut off",
    "stopped": "Stopped before the answer was complete",
    "too_long": "The answer exceeded the maximum length and was cut off",
}
MAX_ANSWER_CHARS = 200_000  # longest answer kept; the rest is not read (marked incomplete)


class StreamTimeout(Exception):
    pass


@dataclass
class ChatStream:
    """One answer being received. Iterate `chunks()` (e.g. in st.write_stream), then read the result.

    `text` always holds everything received so far, also text not yet yielded for rendering.
    """

    chunks_source: Iterable[bytes]
    max_duration_s: float
    started: float = field(default_factory=time.monotonic)  # when the request was sent
    render_interval_s: float = 0.05  # coalesce tokens: at most one render per interval
    clock: Callable[[], float] = time.monotonic
    on_close: Callable[[], None] | None = None
    text: str = ""
    outcome: str = "streaming"  # done | error | dropped | timeout | stopped | too_long
    error: str | None = None
    latency_ms: int | None = None
    tools_used: list[str] | None = None
    first_token_s: float | None = None  # seconds from `started` to the first token
    ignored: int = 0
    tokens: int = 0
    max_chars: int = MAX_ANSWER_CHARS

    @classmethod
    def from_response(cls, resp: requests.Response, **kwargs: Any) -> ChatStream:
        return cls(raw_chunks(resp), on_close=resp.close, **kwargs)

    @property
    def finished(self) -> bool:
        return self.outcome != "streaming"

    @property
    def incomplete(self) -> bool:
        return self.outcome != "done"

    @property
    def message(self) -> str:
        base = OUTCOME_MESSAGES.get(self.outcome, "")
        if self.outcome == "error" and self.error:
            return f"{base}: {self.error}"
        if self.outcome == "timeout":
            return f"{base} ({self.max_duration_s:g} s)"
        return base

    def _timed(self) -> Iterator[bytes]:
        for chunk in self.chunks_source:
            if self.clock() - self.started > self.max_duration_s:
                raise StreamTimeout()
            yield chunk

    def chunks(self) -> Iterator[str]:
        """Answer text as it arrives, coalesced; sets outcome/latency/tools when the stream ends."""
        pending: list[str] = []
        last_yield = float("-inf")
        try:
            try:
                for event in iter_chat_events(self._timed()):
                    if isinstance(event, Token):
                        if not event.text:
                            continue
                        now = self.clock()
                        if self.first_token_s is None:
                            self.first_token_s = now - self.started
                        self.tokens += 1
                        piece = event.text
                        room = self.max_chars - len(self.text)
                        cut = len(piece) > room
                        if cut:
                            piece = piece[:max(room, 0)]
                        self.text += piece
                        pending.append(piece)
                        if cut:  # bounded memory and storage for any backend: keep what fits, stop reading
                            self.outcome = "too_long"
                            break
                        if now - last_yield >= self.render_interval_s:
                            out = "".join(pending)
                            pending.clear()
                            last_yield = now
                            yield out
                    elif isinstance(event, Done):
                        self.outcome = "done"
                        self.latency_ms = event.latency_ms
                        if self.latency_ms is None:
                            self.latency_ms = int((self.clock() - self.started) * 1000)
                        self.tools_used = event.tools_used
                        break
                    elif isinstance(event, ErrorEvent):
                        self.outcome = "error"
                        self.error = event.content
                        break
                    else:
                        self.ignored += 1
                else:
                    self.outcome = "dropped"  # the server closed the stream without `done`
            except StreamTimeout:
                self.outcome = "timeout"
            except (requests.RequestException, OSError, ValueError) as exc:
                # ChunkedEncodingError/ProtocolError (peer vanished), ReadTimeout (silence), ...
                self.outcome = "dropped"
                self.error = type(exc).__name__
            if pending:
                yield "".join(pending)
        except GeneratorExit:  # the consumer stopped iterating (Stop button, rerun, closed tab)
            if not self.finished:
                self.outcome = "stopped"
            raise
        finally:
            self.close()

    def close(self) -> None:
        if not self.finished:
            self.outcome = "stopped"
        if self.on_close is not None:
            try:
                self.on_close()
            except Exception:  # noqa: BLE001 - closing a broken socket may fail; nothing to do
                pass
            self.on_close = None

    def drain(self) -> str:
        """Consume the whole stream without rendering (tests, benchmarks); returns the text."""
        for _ in self.chunks():
            pass
        return self.text
