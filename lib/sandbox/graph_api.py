"""A fake Instagram Graph API on 127.0.0.1 for the demo and the tests (real HTTP, Graph shapes).

    python -m lib.sandbox.graph_api --port 8766 [--error-rate 0.1] [--seed 7]
    INSTAGRAM_GRAPH_URL=http://127.0.0.1:8766/v21.0 python -m worker ...

Endpoints (any /vNN.N prefix): POST /{comment_id}/replies, POST /{ig_user_id}/messages,
GET /{conversation_id}?fields=participants, POST /{ig_user_id}/media, POST /{ig_user_id}/media_publish.
Successes look like Graph's ({"id": "1789..."}, {"recipient_id", "message_id"}); errors are
{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"[, "is_transient"]}} with
Graph's HTTP status.

Scripted failures, by a marker anywhere in the text of the request (reply message, DM text,
caption; media_publish uses its container's caption):
    #fail:auth  #fail:rate[=<minutes to regain access>]  #fail:5xx  #fail:permanent
    #fail:content  #fail:unknown  #fail:timeout  #fail:slow=<seconds> (succeeds, late)
  optional suffixes: @<op> limits the marker to one op (replies, messages, media, media_publish);
  *<n> fails only the first n attempts of that text (then it succeeds).
and by rate: --error-rate p fails a share p of unmarked requests, the class drawn from a
seeded, realistic mix (mostly 5xx and rate limits; no auth failures, which would disconnect
the demo accounts for good).

Counters for tests: every request is counted by its text (or by `#key:<k>` when present):
`attempts[key]` and `effects[key][op]` (actions Instagram performed). Read them with
GET /_sandbox/stats or GraphSandbox.stats(); reset with POST /_sandbox/reset.
An effect is counted when the request arrives, before any slow-marker delay: like Instagram,
the sandbox acts even if the client has stopped waiting.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MARKER = re.compile(r"#fail:(\w+)(?:=([\d.]+))?(?:@(\w+))?(?:\*(\d+))?")
KEY = re.compile(r"#key:([\w.:-]+)")
VERSION = re.compile(r"^/v\d+(?:\.\d+)?(?=/)")
DEMO_MIX = {"5xx": 0.45, "rate": 0.25, "permanent": 0.15, "content": 0.1, "timeout": 0.05}


def _fbtrace() -> str:
    return uuid.uuid4().hex[:11].upper()


def graph_error(kind: str, arg: float | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, body, headers) of a Graph error of one class."""
    headers: dict[str, str] = {}
    if kind == "auth":
        status, err = 400, {"message": "Error validating access token: Session has expired.",
                            "type": "OAuthException", "code": 190, "error_subcode": 463}
    elif kind == "rate":
        status, err = 400, {"message": "Application request limit reached", "type": "OAuthException",
                            "code": 4, "is_transient": True}
        usage = {"type": "instagram", "call_count": 100, "total_cputime": 12, "total_time": 30,
                 "estimated_time_to_regain_access": int(arg or 0)}
        headers["X-Business-Use-Case-Usage"] = json.dumps({"17841400000000000": [usage]})
        headers["X-App-Usage"] = json.dumps({"call_count": 100, "total_cputime": 12, "total_time": 30})
    elif kind == "5xx":
        status, err = 500, {"message": "An unexpected error has occurred. Please retry your request later.",
                            "type": "OAuthException", "code": 2, "is_transient": True}
    elif kind == "permanent":
        status, err = 400, {"message": "Unsupported post request. Object does not exist, cannot be loaded due "
                                       "to missing permissions, or does not support this operation.",
                            "type": "GraphMethodException", "code": 100, "error_subcode": 33}
    elif kind == "content":
        status, err = 400, {"message": "The action attempted has been deemed abusive or is otherwise disallowed",
                            "type": "OAuthException", "code": 368, "error_subcode": 2207051,
                            "error_user_title": "Content not allowed"}
    else:  # unknown: a 403 the spec's table does not classify
        status, err = 403, {"message": "(#10) Application does not have permission for this action",
                            "type": "OAuthException", "code": 10}
    err.setdefault("error_subcode", None)
    err["fbtrace_id"] = _fbtrace()
    return status, {"error": err}, headers


class SandboxState:
    def __init__(self, *, error_rate: float = 0.0, seed: int = 0, timeout_sleep_s: float = 35.0,
                 mix: dict[str, float] | None = None) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.error_rate = error_rate
        self.timeout_sleep_s = timeout_sleep_s
        self.mix = dict(mix or DEMO_MIX)
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.requests = 0
            self.by_op: dict[str, int] = {}
            self.attempts: dict[str, int] = {}
            self.effects: dict[str, dict[str, int]] = {}
            self.containers: dict[str, dict[str, Any]] = {}
            self.marker_hits: dict[tuple[str, str], int] = {}
            self.failures: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps({
                "requests": self.requests, "by_op": self.by_op, "attempts": self.attempts,
                "effects": self.effects, "failures": self.failures,
                "containers": {k: {"key": v["key"], "published": v["published"]} for k, v in self.containers.items()},
            }))

    def new_id(self) -> str:
        with self.lock:
            return "1789" + "".join(str(self.rng.randrange(10)) for _ in range(13))


def _key(text: str) -> str:
    m = KEY.search(text or "")
    return m.group(1) if m else (text or "")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GraphSandbox/1.0"
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
                params.update(json.loads(raw))
            else:
                params.update(dict(parse_qsl(raw.decode())))
        for k in ("recipient", "message"):  # form posts carry these as JSON strings
            if isinstance(params.get(k), str) and params[k].startswith("{"):
                params[k] = json.loads(params[k])
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith(("bearer ", "oauth ")) and "access_token" not in params:
            params["access_token"] = auth.split(" ", 1)[1]
        return params

    def _route(self) -> list[str]:
        path = VERSION.sub("", urlsplit(self.path).path)
        return [p for p in path.split("/") if p]

    # -- verbs ------------------------------------------------------------------------------
    def do_GET(self):
        parts, st = self._route(), self.state
        if parts == ["_sandbox", "stats"]:
            return self._send(200, st.snapshot())
        if parts == ["_sandbox", "health"]:
            return self._send(200, {"ok": True})
        params = self._params()
        if len(parts) == 1 and "participants" in str(params.get("fields", "")):
            if not self._token_ok(params):
                return
            peer = "9" + str(abs(hash(parts[0])) % 10**15).zfill(15)
            # the sandbox does not know which account asks: it lists the customer first
            return self._send(200, {"participants": {"data": [
                {"username": "customer", "id": peer},
                {"username": "our_account", "id": "17841400000000000"}]}, "id": parts[0]})
        self._send(400, {"error": {"message": "Unsupported get request.", "type": "GraphMethodException",
                                   "code": 100, "error_subcode": 33, "fbtrace_id": _fbtrace()}})

    def do_POST(self):
        parts, st = self._route(), self.state
        if parts == ["_sandbox", "reset"]:
            st.reset()
            return self._send(200, {"ok": True})
        params = self._params()
        op = parts[1] if len(parts) == 2 else ""
        if op not in ("replies", "messages", "media", "media_publish"):
            return self._send(400, {"error": {"message": f"Unknown path components: /{'/'.join(parts)}",
                                              "type": "OAuthException", "code": 2500, "fbtrace_id": _fbtrace()}})
        container = None
        if op == "replies":
            text = str(params.get("message") or "")
        elif op == "messages":
            text = str((params.get("message") or {}).get("text") or "")
        elif op == "media":
            text = str(params.get("caption") or "")
        else:
            with st.lock:
                container = st.containers.get(str(params.get("creation_id")))
            text = container["caption"] if container else ""
        key = _key(text)
        with st.lock:
            st.requests += 1
            st.by_op[op] = st.by_op.get(op, 0) + 1
            st.attempts[key] = st.attempts.get(key, 0) + 1
        if not self._token_ok(params):
            return
        fail, slow = self._scripted_failure(text, key, op)
        if fail:
            with st.lock:
                st.failures[fail[0]] = st.failures.get(fail[0], 0) + 1
            if fail[0] == "timeout":
                time.sleep(st.timeout_sleep_s)
                return self._send(504, {"error": {"message": "Gateway timeout", "type": "OAuthException",
                                                  "code": 2, "is_transient": True, "fbtrace_id": _fbtrace()}})
            status, body, headers = graph_error(*fail)
            return self._send(status, body, headers)
        # the action happens now, whether or not the client is still there to hear about it
        if op == "media_publish" and container is None:
            return self._send(400, {"error": {"message": "Media ID is not available", "type": "OAuthException",
                                              "code": 9007, "error_subcode": 2207027, "fbtrace_id": _fbtrace()}})
        new_id = st.new_id()
        with st.lock:
            if op == "media_publish" and container["published"]:
                new_id = container["published"]  # one container, one post, however often it is published
            else:
                st.effects.setdefault(key, {})
                st.effects[key][op] = st.effects[key].get(op, 0) + 1
            if op == "media":
                st.containers[new_id] = {"caption": text, "key": key, "published": None}
            elif op == "media_publish":
                container["published"] = new_id
        if slow:
            time.sleep(slow)
        if op == "messages":
            recipient = (params.get("recipient") or {}).get("id")
            return self._send(200, {"recipient_id": recipient, "message_id": "aWdfZAG1faXRlbTo" + new_id})
        return self._send(200, {"id": new_id})

    # -- rules ------------------------------------------------------------------------------
    def _token_ok(self, params: dict[str, Any]) -> bool:
        token = str(params.get("access_token") or "")
        if not token:
            self._send(400, {"error": {"message": "An active access token must be used to query information "
                                                  "about the current user.", "type": "OAuthException",
                                       "code": 2500, "fbtrace_id": _fbtrace()}})
            return False
        if token.startswith(("bad", "expired", "revoked")):
            status, body, headers = graph_error("auth")
            self._send(status, body, headers)
            return False
        return True

    def _scripted_failure(self, text: str, key: str, op: str) -> tuple[tuple[str, float | None] | None, float]:
        st, slow = self.state, 0.0
        for m in MARKER.finditer(text):
            kind, arg, only_op, times = m.group(1), m.group(2), m.group(3), m.group(4)
            if only_op and only_op != op:
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
        if st.error_rate and MARKER.search(text) is None:
            with st.lock:
                roll = st.rng.random()
                if roll < st.error_rate:
                    kinds = [k for k in st.mix if k != "content" or op in ("media", "media_publish")]
                    kind = st.rng.choices(kinds, weights=[st.mix[k] for k in kinds])[0]
                    return (kind, 1.0 if kind == "rate" else None), slow
        return None, slow


class GraphSandbox:
    """In-process server for tests: GraphSandbox().start(); .url; .stats(); .stop()."""

    def __init__(self, port: int = 0, **state_kwargs: Any) -> None:
        self.state = SandboxState(**state_kwargs)
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
        return f"http://127.0.0.1:{self.port}/v21.0"

    def start(self) -> "GraphSandbox":
        self.thread.start()
        return self

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lib.sandbox.graph_api", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--error-rate", type=float, default=0.0, help="share of unmarked requests that fail (0..1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-sleep", type=float, default=35.0, help="seconds a #fail:timeout answer takes")
    args = ap.parse_args(argv)
    sandbox = GraphSandbox(args.port, error_rate=args.error_rate, seed=args.seed, timeout_sleep_s=args.timeout_sleep)
    print(f"Graph sandbox on {sandbox.url} (error rate {args.error_rate})", flush=True)
    try:
        sandbox.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.httpd.server_close()


if __name__ == "__main__":
    main()
