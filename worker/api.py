"""`python -m worker.api`: the agents' HTTP API, the backend endpoints of the spec served by this project.

    python -m worker.api                        on API_ADDRESS:API_PORT (127.0.0.1:8600)
    python -m worker.api --port 8600 --address 0.0.0.0

Routes (docs/api.md has the shapes and curl examples; GET /openapi.json describes them):

    GET  /healthz                  no token: the process answers
    POST /agent/heartbeat          agent     one agent_heartbeats row, as the Agent Status page reads it
    GET  /post-queue/status        viewer    counts by action_type x status (lib.queue.reads.status_summary)
    GET  /post-queue/dlq           viewer    dead-lettered rows, payload redacted (lib.queue.reads.dlq_rows)
    POST /post-queue/retry         operator  the page's conditional reset (lib.queue.store.retry), audited as api:<name>
    POST /reply-comment, /reply-dm, /send-dm, /publish-post, /repost-ugc
                                   agent     validate (lib.instagram.payload_rules), then lib.queue.store.enqueue
    GET  /openapi.json, /metrics   no token

Callers and roles come from API_TOKENS (lib.core.api_auth). Starlette and uvicorn because Streamlit
already installs and pins both (nothing new to ship or patch), they are the best-kept ASGI pair in
Python, and the endpoints are a handful of small JSON routes that need no framework on top. The
database work is the same synchronous SQLAlchemy code as the pages', run in Starlette's thread pool.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lib.activity.heartbeats import record_beat
from lib.core.api_auth import (
    AGENT,
    OPERATOR,
    VIEWER,
    Caller,
    RateLimiter,
    TokenConfigError,
    bearer_token,
    identify,
    parse_tokens,
    retry_after_header,
)
from lib.core.db import UNAVAILABLE_ERRORS, error_line, init_db, make_engine
from lib.core.identity import Actor
from lib.core.logs import configure_logging, fields
from lib.core.redact import install_log_redaction
from lib.core.schema import ACTION_TYPES, instagram_business_accounts, post_queue
from lib.core.settings import Settings, SettingsError, load_settings
from lib.core.timeutil import iso, utcnow
from lib.instagram.payload_rules import PAYLOAD_KEYS, REQUIRED_KEYS, payload_problems
from lib.queue.reads import dlq_rows, status_summary
from lib.queue.rules import ERROR_CATEGORIES, idempotency_key
from lib.queue.store import enqueue, retry

log = logging.getLogger("worker.api")

ACTION_ROUTES = {f"/{a.replace('_', '-')}": a for a in ACTION_TYPES}  # /reply-comment -> reply_comment
DLQ_MAX_LIMIT = 500
AGENT_ID_MAX_CHARS = 200


class ApiError(Exception):
    """An answer other than success: {success: false, error[, field]} with this HTTP status."""

    def __init__(self, status: int, error: str, *, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.field, self.headers = status, error, field, headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"success": False, "error": self.error}
        if self.field:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass
class Api:
    settings: Settings
    engine: sa.Engine
    callers: tuple[Caller, ...]
    limiter: RateLimiter
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram
    enqueued: Counter
    clock: Callable[[], datetime] = utcnow


# -- request plumbing -------------------------------------------------------------------------------

def _state(request: Request) -> dict[str, Any]:
    return request.scope.setdefault("api_log", {})


async def read_json(request: Request, cap: int) -> dict[str, Any]:
    """The body as a JSON object: 413 above `cap` bytes (counted as it arrives, whatever
    Content-Length claims), 400 when it is not JSON or not an object."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"the body is larger than {cap:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise ApiError(413, f"the body is larger than {cap:,} bytes")
    try:
        value = json.loads(bytes(body) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({getattr(exc, 'msg', 'not UTF-8')})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


def _uuid(value: Any, field: str) -> uuid.UUID:
    if value in (None, ""):
        raise ApiError(400, f"{field} is required", field=field)
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ApiError(400, f"{field} must be a UUID", field=field) from None


def guarded(api: Api, roles: tuple[str, ...], handler: Callable[[Request, Caller], Awaitable[Response]], route: str):
    """The endpoint for `handler`: the caller by its Bearer token (401), its rate (429), its role
    (403), then the handler; ApiError and a lost database become JSON answers, anything else a
    500 without details (the traceback goes to the log, redacted)."""

    async def endpoint(request: Request) -> Response:
        st = _state(request)
        st["route"] = route
        try:
            caller = identify(api.callers, bearer_token(request.headers.get("authorization")))
            if caller is None:
                # guesses are rate limited per address, so a token cannot be found by brute force
                address = request.client.host if request.client else "unknown"
                wait = api.limiter.take("addr:" + address)
                if wait:
                    raise ApiError(429, "too many requests", headers={"Retry-After": retry_after_header(wait)})
                raise ApiError(401, "missing or unknown token (send Authorization: Bearer <token>)",
                               headers={"WWW-Authenticate": "Bearer"})
            st["caller"] = caller.name
            wait = api.limiter.take("caller:" + caller.name)
            if wait:
                raise ApiError(429, "too many requests", headers={"Retry-After": retry_after_header(wait)})
            if not caller.may(roles):
                raise ApiError(403, f"the {caller.role} role may not call {request.method} {route} "
                                    f"(needs {' or '.join(dict.fromkeys((*roles, OPERATOR)))})")
            return await handler(request, caller)
        except ApiError as exc:
            return exc.response()
        except UNAVAILABLE_ERRORS as exc:
            log.error("database unavailable: %s", error_line(exc))
            return ApiError(503, "database unavailable; try again shortly", headers={"Retry-After": "5"}).response()
        except Exception:  # noqa: BLE001 - no stack trace in any answer
            log.exception("%s %s failed", request.method, route)
            return ApiError(500, "internal error (logged on the server)").response()

    return endpoint


class RequestLog:
    """ASGI middleware: one log line and one counter increment per request (method, path, caller,
    status, duration). The Authorization header is never read here, so no token reaches a line."""

    def __init__(self, app, api: Api) -> None:
        self.app, self.api = app, api

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            took = time.perf_counter() - began
            st = scope.get("api_log", {})
            route, caller = st.get("route", "(unmatched)"), st.get("caller", "-")
            self.api.requests.labels(route=route, method=scope["method"], status=str(status["code"]),
                                     caller=caller).inc()
            self.api.duration.labels(route=route).observe(took)
            log.info("%s %s caller=%s status=%d %.1fms", scope["method"], scope["path"], caller, status["code"],
                     took * 1000, extra=fields(method=scope["method"], path=scope["path"], caller=caller,
                                               status=status["code"], duration=round(took, 4)))


# -- the routes -----------------------------------------------------------------------------------

def make_routes(api: Api) -> list[Route]:
    cap = api.settings.api_max_body_bytes

    async def heartbeat(request: Request, caller: Caller) -> Response:
        body = await read_json(request, cap)
        agent_id = body.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id.strip():
            raise ApiError(400, "agent_id is required (a non-empty string)", field="agent_id")
        if len(agent_id) > AGENT_ID_MAX_CHARS:
            raise ApiError(400, f"agent_id is longer than {AGENT_ID_MAX_CHARS} characters", field="agent_id")
        stamp = body.get("timestamp")
        if stamp is not None:  # the agent's own clock is checked, not trusted: the beat is stored as received
            try:
                datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(400, "timestamp must be an ISO-8601 time", field="timestamp") from None
        now = api.clock()

        def write():
            with api.engine.begin() as conn:
                record_beat(conn, agent_id, now=now)

        await run_in_threadpool(write)
        return JSONResponse({"success": True, "agent_id": agent_id, "received_at": iso(now)})

    async def queue_status(request: Request, caller: Caller) -> Response:
        account = request.query_params.get("business_account_id")
        account_id = _uuid(account, "business_account_id") if account else None

        def read():
            with api.engine.connect() as conn:
                return status_summary(conn, account_id=account_id, now=api.clock())

        out = await run_in_threadpool(read)
        return JSONResponse({k: iso(v) if isinstance(v, datetime) else v for k, v in out.items()})

    async def dlq(request: Request, caller: Caller) -> Response:
        q = request.query_params
        limit = _int_param(q.get("limit"), "limit", 50, 1, DLQ_MAX_LIMIT)
        offset = _int_param(q.get("offset"), "offset", 0, 0, 10_000_000)
        account_id = _uuid(q["business_account_id"], "business_account_id") if q.get("business_account_id") else None
        action_type, category = q.get("action_type") or None, q.get("error_category") or None
        if action_type is not None and action_type not in ACTION_TYPES:
            raise ApiError(400, f"action_type must be one of {', '.join(ACTION_TYPES)}", field="action_type")
        if category is not None and category not in ERROR_CATEGORIES:
            raise ApiError(400, f"error_category must be one of {', '.join(ERROR_CATEGORIES)}", field="error_category")

        def read():
            with api.engine.connect() as conn:
                return dlq_rows(conn, limit=limit, offset=offset, now=api.clock(), account_id=account_id,
                                action_type=action_type, error_category=category)

        return JSONResponse(await run_in_threadpool(read))

    async def retry_row(request: Request, caller: Caller) -> Response:
        body = await read_json(request, cap)
        queue_id = _uuid(body.get("queue_id"), "queue_id")
        actor = Actor(name=f"api:{caller.name}", role="operator", provider="api")

        def write():
            with api.engine.begin() as conn:
                return retry(conn, [queue_id], actor=actor, now=api.clock())[0]

        result = await run_in_threadpool(write)
        out = result.as_response()
        if result.success:
            log.info("retry %s by api:%s", queue_id, caller.name, extra=fields(row_id=str(queue_id), caller=caller.name))
            return JSONResponse(out)
        return JSONResponse({**out, "error": result.message}, status_code=404 if result.action_type is None else 409)

    def action(action_type: str):
        async def enqueue_action(request: Request, caller: Caller) -> Response:
            body = await read_json(request, cap)
            account_id = _uuid(body.get("business_account_id"), "business_account_id")
            payload = {k: v for k, v in body.items() if k != "business_account_id"}
            check_payload(action_type, payload)
            now = api.clock()

            def write():
                with api.engine.begin() as conn:
                    acc = instagram_business_accounts
                    if conn.execute(sa.select(acc.c.id).where(acc.c.id == account_id)).first() is None:
                        raise ApiError(400, "business_account_id names no Instagram business account",
                                       field="business_account_id")
                    row_id = enqueue(conn, business_account_id=account_id, action_type=action_type, payload=payload,
                                     now=now)
                    if row_id is not None:
                        return row_id, "pending", False
                    key = idempotency_key(account_id, action_type, payload)
                    found = conn.execute(sa.select(post_queue.c.id, post_queue.c.status)
                                         .where(post_queue.c.idempotency_key == key)).one()
                    return found.id, found.status, True

            row_id, status, duplicate = await run_in_threadpool(write)
            api.enqueued.labels(action_type=action_type, duplicate=str(duplicate).lower()).inc()
            log.info("%s %s %s by %s", "duplicate of" if duplicate else "enqueued", action_type, row_id, caller.name,
                     extra=fields(row_id=str(row_id), action_type=action_type, caller=caller.name))
            return JSONResponse({"success": True, "queue_id": str(row_id), "status": status, "duplicate": duplicate},
                                status_code=200 if duplicate else 202)

        return enqueue_action

    async def healthz(request: Request) -> Response:
        _state(request)["route"] = "/healthz"
        return JSONResponse({"success": True, "status": "ok"})

    async def openapi(request: Request) -> Response:
        _state(request)["route"] = "/openapi.json"
        return JSONResponse(openapi_document())

    async def metrics(request: Request) -> Response:
        _state(request)["route"] = "/metrics"
        return Response(generate_latest(api.registry), media_type=CONTENT_TYPE_LATEST)

    def route(path, roles, handler, method):
        return Route(path, guarded(api, roles, handler, path), methods=[method])

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        route("/agent/heartbeat", (AGENT,), heartbeat, "POST"),
        route("/post-queue/status", (VIEWER,), queue_status, "GET"),
        route("/post-queue/dlq", (VIEWER,), dlq, "GET"),
        route("/post-queue/retry", (OPERATOR,), retry_row, "POST"),
    ]
    routes += [route(path, (AGENT,), action(a), "POST") for path, a in ACTION_ROUTES.items()]
    return routes


def _int_param(raw: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number", field=name) from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi:,}", field=name)
    return value


def check_payload(action_type: str, payload: dict[str, Any]) -> None:
    """400 naming the field for what the worker would refuse: unknown keys, values of the wrong
    type, missing keys, texts over Instagram's limits (lib.instagram.payload_rules, before anything is stored)."""
    allowed = PAYLOAD_KEYS[action_type]
    unknown = sorted(k for k in payload if k not in allowed)
    if unknown:
        raise ApiError(400, f"{action_type} takes no {', '.join(unknown)} (its keys: business_account_id, "
                            f"{', '.join(allowed)})", field=unknown[0])
    for k, v in payload.items():
        if k == "children":
            if not isinstance(v, list) or not all(isinstance(c, dict) for c in v):
                raise ApiError(400, 'children must be a list of {"image_url": ...} or {"video_url": ...} objects',
                               field="children")
        elif not isinstance(v, str):
            raise ApiError(400, f"{k} must be a string", field=k)
    missing = [k for k in REQUIRED_KEYS[action_type] if payload.get(k) in (None, "")]
    if missing:
        raise ApiError(400, f"{action_type} needs {', '.join(missing)}", field=missing[0])
    problems = payload_problems(action_type, payload)
    if problems:
        raise ApiError(400, "; ".join(problems), field=_field_of(problems[0], allowed))


def _field_of(problem: str, keys: tuple[str, ...]) -> str:
    """The payload key a payload_rules message is about: the first one it names."""
    if problem.startswith(("a carousel", "carousel item")):
        return "children"
    named = [(problem.find(k), k) for k in keys if k in problem]
    return min(named)[1] if named else "payload"


# -- OpenAPI ------------------------------------------------------------------------------------

_ERROR = {"$ref": "#/components/schemas/Error"}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), extra: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = list(required)
    return out


def _json(schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the routes (served at /openapi.json)."""
    s, i, b = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
    errors = {str(c): {"description": d, **_json(_ERROR)} for c, d in (
        ("400", "invalid request; `field` names the field"), ("401", "missing or unknown token"),
        ("403", "the caller's role may not call this route"), ("413", "body larger than API_MAX_BODY_BYTES"),
        ("429", "rate limit; see Retry-After"), ("503", "database unavailable"))}
    enqueued = _obj({"success": b, "queue_id": {"type": "string", "format": "uuid"}, "status": s, "duplicate": b})
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "The process answers (no token)", "security": [],
                             "responses": {"200": {"description": "ok", **_json(_obj({"success": b, "status": s}))}}}},
        "/agent/heartbeat": {"post": {
            "summary": "Record an agent heartbeat (role agent)",
            "requestBody": {"required": True, **_json(_obj({"agent_id": s, "timestamp": {**s, "format": "date-time"}},
                                                           ("agent_id",)))},
            "responses": {"200": {"description": "recorded", **_json(_obj({"success": b, "agent_id": s,
                                                                          "received_at": s}))}, **errors}}},
        "/post-queue/status": {"get": {
            "summary": "Counts by action_type::status (role viewer)",
            "parameters": [{"name": "business_account_id", "in": "query", "schema": {**s, "format": "uuid"}}],
            "responses": {"200": {"description": "summary", **_json(_obj({
                "success": b, "summary": {"type": "object", "additionalProperties": i}, "total": i,
                "timestamp": s, "sent_24h": i, "sent_7d": i}))}, **errors}}},
        "/post-queue/dlq": {"get": {
            "summary": "Dead-lettered rows, newest first, payload redacted (role viewer)",
            "parameters": [{"name": "limit", "in": "query", "schema": {**i, "default": 50, "maximum": DLQ_MAX_LIMIT}},
                           {"name": "offset", "in": "query", "schema": {**i, "default": 0}},
                           {"name": "business_account_id", "in": "query", "schema": {**s, "format": "uuid"}},
                           {"name": "action_type", "in": "query", "schema": {"enum": list(ACTION_TYPES)}},
                           {"name": "error_category", "in": "query", "schema": {"enum": list(ERROR_CATEGORIES)}}],
            "responses": {"200": {"description": "rows", **_json(_obj({
                "success": b, "dlq": {"type": "array", "items": {"type": "object"}}, "count": i,
                "timestamp": s}))}, **errors}}},
        "/post-queue/retry": {"post": {
            "summary": "Reset a failed or dlq row to pending, audited as api:<caller> (role operator)",
            "requestBody": {"required": True, **_json(_obj({"queue_id": {**s, "format": "uuid"}}, ("queue_id",)))},
            "responses": {
                "200": {"description": "reset", **_json({"$ref": "#/components/schemas/RetryResult"})},
                "404": {"description": "no such row", **_json({"$ref": "#/components/schemas/RetryResult"})},
                "409": {"description": "not retryable now (pending, processing, sent)",
                        **_json({"$ref": "#/components/schemas/RetryResult"})}, **errors}}},
    }
    for path, action_type in ACTION_ROUTES.items():
        props: dict[str, Any] = {"business_account_id": {**s, "format": "uuid"}}
        for k in PAYLOAD_KEYS[action_type]:
            props[k] = ({"type": "array", "items": {"type": "object"}} if k == "children" else s)
        paths[path] = {"post": {
            "summary": f"Enqueue one {action_type} row (role agent)",
            "requestBody": {"required": True, **_json(_obj(props, ("business_account_id",
                                                                   *REQUIRED_KEYS[action_type]), extra=False))},
            "responses": {"202": {"description": "a new pending row", **_json(enqueued)},
                          "200": {"description": "the same action was queued before: its row", **_json(enqueued)},
                          **errors}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agent Dashboard agents' API", "version": "1",
                 "description": "The backend endpoints the agents and scripts call. Every route but /healthz, "
                                "/openapi.json and /metrics needs Authorization: Bearer <token> (API_TOKENS)."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _obj({"success": {"const": False}, "error": s, "field": s}, ("success", "error")),
                "RetryResult": _obj({"success": b, "queue_id": s, "action_type": {"type": ["string", "null"]},
                                     "previous_retry_count": {"type": ["integer", "null"]}, "message": s,
                                     "error": s}),
            }},
        "security": [{"bearer": []}],
        "paths": paths,
    }


# -- the app and the process ----------------------------------------------------------------------

def create_app(settings: Settings, *, engine: sa.Engine | None = None,
               clock: Callable[[], datetime] = utcnow) -> Starlette:
    """The API as an ASGI app; TokenConfigError when API_TOKENS cannot be used."""
    registry = CollectorRegistry()
    api = Api(
        settings=settings, engine=engine or make_engine(settings.database_url),
        callers=parse_tokens(settings.api_tokens), limiter=RateLimiter(settings.api_rate_limit_per_min),
        registry=registry,
        requests=Counter("agent_dashboard_api_requests", "API requests by route template, method, status and caller "
                         "name.", ["route", "method", "status", "caller"], registry=registry),
        duration=Histogram("agent_dashboard_api_request_duration_seconds", "API request duration by route template.",
                           ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry),
        enqueued=Counter("agent_dashboard_api_enqueued", "Actions enqueued through the API by action type and "
                         "whether the same action was queued before.", ["action_type", "duplicate"], registry=registry),
        clock=clock,
    )

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return ApiError(exc.status_code, "no such route" if exc.status_code == 404 else
                        "method not allowed" if exc.status_code == 405 else "bad request").response()

    async def crashed(request: Request, exc: Exception) -> Response:
        return ApiError(500, "internal error (logged on the server)").response()

    app = Starlette(routes=make_routes(api), exception_handlers={HTTPException: not_found, Exception: crashed})
    app.add_middleware(RequestLog, api=api)
    app.state.api = api
    return app


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m worker.api", description="the agents' HTTP API")
    ap.add_argument("--port", type=int, help="port (default: API_PORT, 8600)")
    ap.add_argument("--address", help="address to bind (default: API_ADDRESS, 127.0.0.1)")
    ap.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    ap.add_argument("--log-format", default=os.environ.get("LOG_FORMAT") or "text", choices=("text", "json"),
                    help="text lines or one JSON object per line (default: LOG_FORMAT, text)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    import uvicorn  # lazy: the server only when run as a command; the tests import the app without it

    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format, sys.stderr)
    install_log_redaction()
    try:
        settings = load_settings()
        settings = replace(settings, api_port=args.port or settings.api_port,
                           api_address=args.address or settings.api_address)
        app = create_app(settings)
    except (SettingsError, TokenConfigError) as exc:
        log.error("bad settings: %s", exc)
        return 2
    api: Api = app.state.api
    try:
        init_db(api.engine)  # safe beside the worker and the app initialising at once
    except Exception as exc:  # noqa: BLE001 - a database not up yet: routes answer 503 until it is
        log.warning("database init skipped: %s", error_line(exc))
    if not api.callers:
        log.warning("API_TOKENS is empty: every route but /healthz, /openapi.json and /metrics answers 401")
    log.info("api start: http://%s:%d, database %s, %d callers (%s), %d requests/min each",
             settings.api_address, settings.api_port, settings.masked_database_url, len(api.callers),
             ", ".join(f"{c.name}:{c.role}" for c in api.callers) or "none", settings.api_rate_limit_per_min)
    # uvicorn's own access log is off (ours names the caller); log_config=None keeps our handlers
    uvicorn.run(app, host=settings.api_address, port=settings.api_port, access_log=False, log_config=None,
                server_header=False, date_header=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
