"""Plain ASGI middleware around every area (request context, limits, metrics, errors).

Plain ASGI rather than BaseHTTPMiddleware so context variables (the request ID) reach the
handler and streaming responses pass through untouched.
"""

from __future__ import annotations

import logging
import os
import re
import time

import orjson
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.common.errors import APIError, PayloadTooLarge, internal_error
from functions.common.logs import request_id_var
from functions.common.metrics import HTTP_LATENCY, HTTP_REQUESTS, LabelCache

log = logging.getLogger("jan.http")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# The method is a metric label: any other token a client sends counts as OTHER, so made-up
# methods cannot grow the number of series (and of cached children below) without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_counted = LabelCache(HTTP_REQUESTS)
_timed = LabelCache(HTTP_LATENCY)


class RequestContext:
    """Request ID (accepted or generated, echoed), body-size limit, access log and metrics,
    and the last line of defence: an exception that escapes the app is logged and, if no
    response has started, answered with a generic 500 envelope."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or "req_" + os.urandom(16).hex()
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        rid_header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            if declared is None:  # a declared length is enforced by the server's parser
                receive = _limited(receive, self.max_body_bytes)
            await self.app(scope, receive, send_wrapper)
        except APIError as exc:  # raised outside the router (e.g. the size check above)
            if not response_started:
                await _send_error(send_wrapper, exc)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not response_started:
                await _send_error(send_wrapper, internal_error())
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            _observe(route, method if method in _METHODS else "OTHER", status, elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],  # never the query string: it may carry codes
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


def _observe(route: str, method: str, status: int, elapsed: float) -> None:
    _counted[route, method, status].inc()
    _timed[route, method].observe(elapsed)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")


def _limited(receive: Receive, limit: int) -> Receive:
    """Count body bytes as they arrive (chunked uploads have no Content-Length)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return wrapped


def _route_template(scope: Scope) -> str:
    """The matched route's path template, so metrics don't explode on IDs."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(app, "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", "unmatched"))
    return "unmatched"


async def _send_error(send: Send, exc: APIError) -> None:
    body = orjson.dumps(exc.body())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
