"""Plain ASGI middleware around every area (request context, limits, metrics, errors).

Plain ASGI rather than BaseHTTPMiddleware so context variables (the request ID) reach the
handler and streaming responses pass through untouched.

Request bodies. A body over the size limit (413) or not sent within the body timeout (408)
is answered in the envelope with ``Connection: close``. Whenever the app answers before the
whole body arrived (those errors, or a handler that refuses a request without reading it),
the end of the response waits while the rest of the body is read and dropped — up to the
body deadline and twice the limit in all — so that the client, still sending, gets the
answer rather than a reset connection, and the server's parser is not left blocked: under
hypercorn (func-python's server) an app that returns while the body's bounded queue is full
deadlocks the connection, which then never closes (CLOSE-WAIT) and keeps its buffers. Past
those bounds a background reader takes what the server still delivers until it reports the
disconnect, and the server closes the connection.

Shutdown (``functions.common.shutdown``). Each request's task is registered with the
shutdown while it runs; while the process drains, responses say ``Connection: close``; a
request the shutdown cuts gets the 503 envelope, or, if its event stream has started, an
error event and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.common.errors import APIError, PayloadTooLarge, RequestTimeout, internal_error
from functions.common.logs import request_id_var
from functions.common.metrics import HTTP_LATENCY, HTTP_REQUESTS, LabelCache
from functions.common.shutdown import Shutdown, cut_stream_end, shutting_down

log = logging.getLogger("jan.http")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# The method is a metric label: any other token a client sends counts as OTHER, so made-up
# methods cannot grow the number of series (and of cached children below) without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_counted = LabelCache(HTTP_REQUESTS)
_timed = LabelCache(HTTP_LATENCY)
_CLOSE = (b"connection", b"close")
# After the answer, what the server still delivers of an abandoned body is taken for at most
# this long (it reports the disconnect as soon as the response has ended).
SINK_SECONDS = 10.0
_sinks: set[asyncio.Task[None]] = set()


class RequestContext:
    """Request ID (accepted or generated, echoed), body-size limit and body deadline, access
    log and metrics, and the last line of defence: an exception that escapes the app is
    logged and, if no response has started, answered with a generic 500 envelope."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_seconds: float = 30.0,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or "req_" + os.urandom(16).hex()
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = ended = False
        response_headers: list[tuple[bytes, bytes]] = []
        shutdown = self.shutdown
        rid_header = (b"x-request-id", request_id.encode())
        declared, has_body = _body_framing(scope)
        body: _Body | None = None
        if has_body:
            body = _Body(receive, self.max_body_bytes, self.body_timeout_seconds)
            receive = body.receive

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started, ended, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = response_headers = [*message.get("headers", ()), rid_header]
                if (
                    (body is not None and body.refused is not None)
                    or (shutdown is not None and shutdown.draining)  # clients move on
                ) and _http1(scope):
                    headers.append(_CLOSE)
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
                if body is not None and not body.complete:
                    # Ended below, once the rest of the body has been read (module docstring).
                    message = {**message, "more_body": True}
                    body.end_held = True
            await send(message)

        task = shutdown.enter() if shutdown is not None else None
        try:
            try:
                if body is not None and declared is not None and declared > self.max_body_bytes:
                    raise body.refuse(_too_large)
                await self.app(scope, receive, send_wrapper)
            except APIError as exc:  # raised outside the router (e.g. the size check above)
                if not response_started:
                    await _send_error(send_wrapper, exc)
            except Exception:
                log.exception("unhandled error", extra={"path": scope.get("path")})
                if not response_started:
                    await _send_error(send_wrapper, internal_error())
            except asyncio.CancelledError:
                if shutdown is None or not shutdown.was_cut():
                    raise  # the client left, or the server is going without a cut
                assert task is not None
                task.uncancel()
                if not response_started:  # answered: 503, with its Retry-After
                    await _send_error(send_wrapper, shutting_down())
                elif not ended:  # a stream ends with an error event and [DONE]
                    streaming = any(
                        k == b"content-type" and v.startswith(b"text/event-stream")
                        for k, v in response_headers
                    )
                    end = cut_stream_end() if streaming else b""
                    await send_wrapper({"type": "http.response.body", "body": end})
            if body is not None and (body.end_held or not body.complete):
                await body.finish(send, budget=2 * self.max_body_bytes)
        finally:
            if shutdown is not None:
                shutdown.leave(task)
            if body is not None:
                body.done()
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


class _Body:
    """The request body as the app receives it: counted against the size limit, bounded in
    time, and, when the app is done without it, read to its end and dropped (``finish``)."""

    __slots__ = (
        "_receive",
        "complete",
        "deadline",
        "end_held",
        "expired",
        "limit",
        "receiving",
        "refused",
        "seen",
        "timeout",
        "waiter",
        "watchdog",
    )

    def __init__(self, receive: Receive, limit: int, timeout: float) -> None:
        self._receive = receive
        self.limit = limit
        self.timeout = timeout
        # The whole body by then, on the event loop's clock (asyncio's is time.monotonic).
        self.deadline = time.monotonic() + timeout
        self.watchdog: _Watchdog | None = None  # from the first receive()
        self.seen = 0
        self.complete = False  # the server delivered the end of the body (or a disconnect)
        self.refused: Callable[[_Body], APIError] | None = None  # 413 or 408: close after
        self.end_held = False  # the response's last message waits for finish()
        self.waiter: asyncio.Task[Any] | None = None  # the task of the last receive()
        self.receiving = False  # that task is waiting in receive() now
        self.expired = False  # the deadline passed before the body was complete

    def refuse(self, error: Callable[[_Body], APIError]) -> APIError:
        self.refused = error
        return error(self)

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()
        if self.refused is not None:
            raise self.refused(self)
        waiter = asyncio.current_task()
        assert waiter is not None
        watchdog = self.watchdog
        if watchdog is None:  # the first receive: watched until complete or done()
            watchdog = self.watchdog = _Watchdog.watch(waiter.get_loop(), self)
        elif self.expired:  # the deadline passed while the app was not receiving
            raise self.refuse(_timed_out)
        self.waiter = waiter
        self.receiving = True
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if self.expired and waiter.uncancel() == 0:
                raise self.refuse(_timed_out) from None
            raise
        finally:
            self.receiving = False
        if message["type"] != "http.request":
            self.complete = True  # a disconnect: no more body will come
            watchdog.waiting.discard(self)
            return message
        self.seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            self.complete = True
            watchdog.waiting.discard(self)
        if self.seen > self.limit:  # chunked uploads have no Content-Length to check first
            raise self.refuse(_too_large)
        return message

    def expire(self) -> None:
        """The deadline passed with the body incomplete: a receive waiting now ends in 408
        (its task is cancelled), and so does the next one."""
        self.expired = True
        if self.receiving and self.waiter is not None:
            self.waiter.cancel()

    def done(self) -> None:
        """The request is over: no longer watched."""
        if self.watchdog is not None:
            self.watchdog.waiting.discard(self)

    async def finish(self, send: Send, *, budget: int) -> None:
        """Read and drop the rest of the body (until its end, the deadline, or ``budget``
        bytes in all), then end the response if its end was held."""
        try:
            while not self.complete and self.seen <= budget:
                try:
                    async with asyncio.timeout_at(self.deadline):
                        message = await self._receive()
                except TimeoutError:
                    break
                if message["type"] != "http.request":
                    self.complete = True
                    break
                self.seen += len(message.get("body", b""))
                self.complete = not message.get("more_body", False)
            if not self.complete:
                # Before the response ends: hypercorn hands the app its disconnect then,
                # into the body's queue, and would wait for room in it forever.
                task = asyncio.get_running_loop().create_task(_sink(self._receive))
                _sinks.add(task)
                task.add_done_callback(_sinks.discard)
            if self.end_held:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            log.debug("request body not finished", exc_info=True)


class _Watchdog:
    """Ends body receives that outlive their deadline (408). One task per event loop wakes at
    the soonest deadline among the receives waiting (at least once a second) instead of a
    timer per receive: nearly every receive returns at once, and a timer would cost more
    than the rest of this middleware. The task ends after a while without bodies."""

    IDLE_ROUNDS = 10
    _current: _Watchdog | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: set[_Body] = set()
        self.task: asyncio.Task[None] | None = None
        self.used = False

    @classmethod
    def watch(cls, loop: asyncio.AbstractEventLoop, body: _Body) -> _Watchdog:
        """The loop's watchdog, now watching ``body``."""
        watchdog = cls._current
        if watchdog is None or watchdog.loop is not loop:
            watchdog = cls._current = cls(loop)
        watchdog.waiting.add(body)
        watchdog.used = True
        if watchdog.task is None:
            watchdog.task = loop.create_task(watchdog._run())
        return watchdog

    async def _run(self) -> None:
        idle = 0
        try:
            while True:
                now = self.loop.time()
                soonest = now + 1.0
                for body in tuple(self.waiting):
                    if body.deadline <= now:
                        self.waiting.discard(body)
                        body.expire()
                    else:
                        soonest = min(soonest, body.deadline)
                await asyncio.sleep(soonest - now)
                # Decided after the sleep, with no await before the task ends: a body
                # watched meanwhile keeps the task (``watch`` starts one only when none is).
                if self.used or self.waiting:
                    idle, self.used = 0, False
                elif (idle := idle + 1) >= self.IDLE_ROUNDS:
                    return
        finally:
            self.task = None


async def _sink(receive: Receive) -> None:
    try:
        async with asyncio.timeout(SINK_SECONDS):
            while (await receive())["type"] == "http.request":
                pass
    except Exception:
        log.debug("abandoned request body", exc_info=True)


def _observe(route: str, method: str, status: int, elapsed: float) -> None:
    _counted[route, method, status].inc()
    _timed[route, method].observe(elapsed)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


def _body_framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length, and whether the request has a body at all."""
    declared: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
        elif name == b"transfer-encoding":
            chunked = True
    if declared is not None:
        return declared, declared > 0
    # HTTP/1 has a body only when framed; HTTP/2 and 3 may send one without a length.
    return None, chunked or not _http1(scope)


def _http1(scope: Scope) -> bool:
    return str(scope.get("http_version", "1.1")).startswith("1")


def _too_large(body: _Body) -> APIError:
    return PayloadTooLarge(f"Request body is larger than the limit of {body.limit} bytes.")


def _timed_out(body: _Body) -> APIError:
    return RequestTimeout(
        f"The request body was not received within {body.timeout:g} seconds.",
    )


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
