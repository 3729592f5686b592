"""The router: pick an endpoint, call it, fail over before the first byte.

Balancing is least outstanding requests among endpoints in rotation, or, when the
provider gives its endpoints weights (a canary's 5 beside 95), a draw in proportion to
them among those in rotation (weight 0: a standby, used only when no weighted one is
left). Either way with optional affinity: requests with the same key (a conversation, a
user) go to the same endpoint (rendezvous hashing, weighted where weights are set, so it
is stable across instances) unless that endpoint is busier than the least busy by more
than ``AFFINITY_SLACK`` — reusing an engine's prompt cache is worth a little imbalance,
not a queue. When every endpoint is ejected, the one whose
ejection ends first is tried anyway rather than failing without a try.

A failure before the first byte (connection refused, 5xx, timeout to headers, a stream
that ends before its first event) is retried on another endpoint, at most
``max_attempts`` in all, with a short exponential back-off. A success's time to first
byte goes to the health book, which ejects an endpoint far slower than its peers.

A 503 is a predictor that is warming up (scaling from zero, loading its model) or full,
and so is a refused connection to a provider that scales to zero (its revision starting):
when no other endpoint is left, the request is held and the same one asked again with
back-off, within ``warmup_seconds`` (``JAN_UPSTREAM_WARMUP_SECONDS``); it is never ejected
for it. Requests held for one model wait together, one of them asking (``waking``).
What is retried, ejected and shown to the client is decided by ``failures`` alone.

What an upstream sends is bounded: a non-streamed reply by ``max_reply_bytes`` (refused
at once when its Content-Length says more, else read until it passes the limit), an
event of a stream by ``max_event_bytes`` (``sse.EventSplitter``), the keep-alives before
a stream's first event by the same, and an error answer's body is read up to
``ERROR_BODY_BYTES`` for its message. Past a limit the call fails (``failures.TooLarge``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import math
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from functions.common import errors, upstream
from functions.common.logs import request_id_var
from functions.services.inference import failures, metrics
from functions.services.inference.bodies import OpenBody, Upload
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.health import Endpoint, HealthBook
from functions.services.inference.requests import upstream_url
from functions.services.inference.sse import MAX_EVENT_BYTES, EventSplitter, has_data
from functions.services.inference.waking import Waking

log = logging.getLogger(__name__)

AFFINITY_SLACK = 4
MAX_REPLY_BYTES = 32 * 1024 * 1024  # JAN_UPSTREAM_MAX_REPLY_BYTES' default
ERROR_BODY_BYTES = 64 * 1024  # an error answer's message is in its first bytes

T = TypeVar("T")
Body = bytes | Upload  # a request body: the bytes, or an upload streamed as it arrives
# One try on one endpoint: (route, endpoint, url, body, headers) -> the result or a Failure.
Attempt = Callable[
    [ModelRoute, Endpoint, str, Body, dict[str, str]], Awaitable[T | failures.Failure]
]


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete (non-streamed) upstream answer."""

    endpoint: Endpoint
    status: int
    body: bytes


class StreamBroken(Exception):
    """The stream failed after its first byte; ``failure`` says how."""

    def __init__(self, failure: failures.Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class OpenStream:
    """An upstream stream whose first event has arrived: ``first`` is the block of complete
    events read so far; iterate for further blocks (see ``sse``); always close."""

    def __init__(
        self,
        health: HealthBook,
        route: ModelRoute,
        endpoint: Endpoint,
        response: aiohttp.ClientResponse,
        splitter: EventSplitter,
        first: bytes,
    ) -> None:
        self.health = health
        self.model = route.model
        self.label = route.labels[endpoint]
        self.endpoint = endpoint
        self.first = first
        self.failure: failures.Failure | None = None  # how it broke, once it has
        self._response = response
        self._splitter = splitter
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Further blocks of complete events; raises StreamBroken on a mid-stream failure."""
        content = self._response.content
        try:
            while True:
                data = await content.readany()
                if not data:
                    return
                block = self._splitter.feed(data)
                if block:
                    yield block
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = failures.from_exception(exc)
            raise StreamBroken(self.failure) from exc

    def close(self, *, ok: bool, failure: failures.Failure | None = None) -> None:
        """Release the upstream: a stream not read to the end is cut, which stops the
        upstream's generation. ``failure`` says why a stream that is not ``ok`` ended when
        reading did not fail (no ``[DONE]``, an error event); none known: the client left.
        The endpoint's health and the metrics hear the outcome here, once."""
        if self._closed:
            return
        self._closed = True
        self.endpoint.outstanding -= 1
        failure = failure or self.failure
        outcome = metrics.OK if ok else failure.fault if failure else metrics.CANCELLED
        metrics.count_request(self.model, self.label, outcome)
        if failure is not None and not ok:
            metrics.count_failure(self.label, failure.fault, failure.reason)
        if ok:
            self.health.succeeded(self.endpoint)
            self._response.release()
            return
        if failure is not None and failure.eject:
            self.health.failed(self.endpoint)
        self._response.close()


class Router:
    def __init__(
        self,
        health: HealthBook,
        client: upstream.Upstream,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.05,
        connect_timeout: float = 5.0,
        response_timeout: float = 600.0,
        stream_idle_timeout: float = 60.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        warmup_seconds: float = 0.0,
    ) -> None:
        self.health = health
        self.warmup_seconds = warmup_seconds
        self.waking = Waking(warmup_seconds)
        self.client = client
        self.max_attempts = max_attempts
        self.max_event_bytes = max_event_bytes
        self.max_reply_bytes = max_reply_bytes
        self.backoff_seconds = backoff_seconds
        self._reply_timeout = upstream.timeout(connect=connect_timeout, idle=response_timeout)
        self._stream_timeout = upstream.timeout(connect=connect_timeout, idle=stream_idle_timeout)
        self._turn = itertools.count()
        self._random = random.Random()  # noqa: S311 - weighted endpoints' draws, no secret

    # --- choosing ---------------------------------------------------------------------
    def pick(
        self, route: ModelRoute, tried: list[Endpoint], affinity: str | None
    ) -> Endpoint | None:
        eps = route.endpoints
        if len(eps) == 1 and not tried:  # the common single-endpoint case, no allocation
            return eps[0]
        pool = [ep for ep in eps if ep not in tried]
        if not pool:
            return None
        live = [ep for ep in pool if not ep.ejected]
        if not live:
            return min(pool, key=lambda ep: ep.ejected_until)
        if route.weights:
            weighted = [ep for ep in live if route.weights[ep]]
            if weighted:  # else only standbys (weight 0) are left: least outstanding
                return self._pick_weighted(route.weights, weighted, affinity)
        least = min(ep.outstanding for ep in live)
        if affinity is not None:
            key = affinity.encode()
            best = max(live, key=lambda ep: zlib.crc32(key + ep.base_url.encode()))
            if best.outstanding <= least + AFFINITY_SLACK:
                return best
        idle = [ep for ep in live if ep.outstanding == least]
        return idle[next(self._turn) % len(idle)] if len(idle) > 1 else idle[0]

    def _pick_weighted(
        self, weights: dict[Endpoint, int], live: list[Endpoint], affinity: str | None
    ) -> Endpoint:
        """An endpoint drawn in proportion to its weight; with an affinity key, the one
        weighted rendezvous hashing gives it (stable across instances, and each endpoint
        the keys in proportion to its weight), unless it is busier than the least busy
        by more than ``AFFINITY_SLACK``."""
        if len(live) == 1:
            return live[0]
        if affinity is not None:
            key = affinity.encode()

            def score(ep: Endpoint) -> float:
                # A hash uniform per (key, endpoint): crc32's, linear, ties the endpoints'
                # draws together and skews the shares.
                digest = hashlib.blake2b(key + ep.base_url.encode(), digest_size=8).digest()
                unit = (int.from_bytes(digest) + 1) / (2**64 + 1)
                return -weights[ep] / math.log(unit)

            best = max(live, key=score)
            if best.outstanding <= min(ep.outstanding for ep in live) + AFFINITY_SLACK:
                return best
        total = sum(weights[ep] for ep in live)
        point = self._random.random() * total
        for ep in live:
            point -= weights[ep]
            if point < 0:
                return ep
        return live[-1]

    def _headers(self, route: ModelRoute, affinity: str | None) -> dict[str, str]:
        """The route's headers, the request's ID, and the affinity key as ``x-session-id``
        (for the KV-cache-aware routers behind an endpoint: llm-d, vLLM's router)."""
        request_id = request_id_var.get()
        if request_id is None and affinity is None:
            return route.headers
        headers = dict(route.headers)
        if request_id is not None:
            headers["x-request-id"] = request_id
        if affinity is not None:
            headers["x-session-id"] = affinity
        return headers

    # --- calling ----------------------------------------------------------------------
    async def send(
        self,
        route: ModelRoute,
        path: str,
        body: bytes,
        *,
        affinity: str | None = None,
        timed: bool = True,
    ) -> Reply:
        """A non-streamed call with failover; raises the classified APIError. ``timed``
        false: the answer's time says nothing of the model's speed (a tokenizer's), so
        it stays out of the slow-endpoint detection's samples."""
        attempt = (
            self._reply_attempt if timed else functools.partial(self._reply_attempt, timed=False)
        )
        return await self._with_failover(attempt, route, path, body, affinity)

    async def open_stream(
        self, route: ModelRoute, path: str, body: bytes, *, affinity: str | None = None
    ) -> OpenStream:
        """Start a stream with failover until its first event arrives."""
        return await self._with_failover(self._stream_attempt, route, path, body, affinity)

    async def open_body(
        self, route: ModelRoute, path: str, body: Body, *, affinity: str | None = None
    ) -> OpenBody:
        """A call whose answer is relayed as it comes (audio, or any content type), with
        failover until a successful status arrives. An ``Upload`` is sent as the client
        sends it; once it has started, a failure is not retried."""
        return await self._with_failover(self._body_attempt, route, path, body, affinity)

    async def _with_failover(
        self,
        attempt: Attempt[T],
        route: ModelRoute,
        path: str,
        body: Body,
        affinity: str | None,
    ) -> T:
        """The failover loop of every call: pick an endpoint not tried yet, back off, make
        one ``attempt`` on it, and on a retryable failure go on, at most ``max_attempts``
        in all; then raise the last failure's error.

        An endpoint that answered cold (``Failure.warming``: a 503, scaling from zero,
        loading its model, or full; a refused connection to a provider that scales to
        zero) is set aside rather than counted: once no other endpoint is left, the
        request is held (``waking``: with every request held for the model, one of them
        asking at a time) and the cold ones are asked again after a back-off, until
        ``warmup_seconds`` after the request was first held.

        The endpoint counts one more outstanding request during the attempt. An attempt
        returns its result (which then owns that count: a reply gives it back at once, a
        stream when it closes) or a ``Failure``; an exception it raises is classified by
        ``failures``. Either way a failed attempt has released its upstream response."""
        tried: list[Endpoint] = []
        warming: list[Endpoint] = []  # tried, answered cold: asked again after a wait
        last: failures.Failure | None = None
        headers = self._headers(route, affinity)
        failed = 0  # attempts made so far, less those given back by warming endpoints
        backoff = False
        key = (route.provider.id, route.model)
        # A wake of this model in progress: wait with the requests held for it.
        hold = self.waking.joining(key) if self.waking.wakes else None
        try:
            if hold is not None and not await hold.next_try(None):
                raise errors.ServiceUnavailable(
                    f"The model {route.model!r} is starting (scaled to zero) and was not "
                    "ready in time; retry shortly.",
                    code="model_not_ready",
                    headers={"Retry-After": "2"},
                )
            while True:
                ep = self.pick(route, tried, affinity) if failed < self.max_attempts else None
                if ep is None:
                    if not warming or last is None or not self.waking.seconds:
                        break
                    if hold is None:
                        hold = self.waking.hold(key, route.model)
                    if not await hold.next_try(last.retry_after):
                        break
                    tried = [e for e in tried if e not in warming]
                    failed -= len(warming)
                    warming.clear()
                    backoff = False
                    continue
                if backoff:
                    await asyncio.sleep(self.backoff_seconds * 2 ** (failed - 1))
                ep.outstanding += 1
                ep.used_at = time.time()
                try:
                    result = await attempt(
                        route, ep, upstream_url(ep.base_url, path), body, headers
                    )
                except Exception as exc:
                    result = failures.from_exception(exc)
                except BaseException:  # cancelled: the caller is gone, nothing to classify
                    ep.outstanding -= 1
                    raise
                if not isinstance(result, failures.Failure):
                    if hold is not None:
                        hold.answered()
                    return result
                ep.outstanding -= 1
                last = failures.cold(result, route.provider.scales_to_zero)
                self._note(route, ep, last)
                if not last.retry or (isinstance(body, Upload) and body.started):
                    break  # (an upload cannot be sent twice)
                tried.append(ep)
                failed += 1
                backoff = not last.warming
                if last.warming:
                    warming.append(ep)
        finally:
            if hold is not None:
                hold.release()
        raise self._final(route, last)

    async def _reply_attempt(
        self,
        route: ModelRoute,
        ep: Endpoint,
        url: str,
        body: Body,
        headers: dict[str, str],
        *,
        timed: bool = True,
    ) -> Reply | failures.Failure:
        assert isinstance(body, bytes)
        sent_at = time.perf_counter()
        async with self.client.session.post(
            url,
            data=body,
            headers=headers,
            timeout=self._reply_timeout,
            allow_redirects=False,  # a redirect could point past the address guard
        ) as resp:
            status = resp.status
            if status >= 300:
                data = await read_head(resp, ERROR_BODY_BYTES)
                return failures.from_status(status, data, resp.headers.get("retry-after"))
            first_byte = time.perf_counter() - sent_at
            data = await read_all(resp, self.max_reply_bytes)
        ep.outstanding -= 1
        self.health.succeeded(ep)
        if timed:
            self.health.answered(ep, first_byte, route.endpoints)
        metrics.count_request(route.model, route.labels[ep], metrics.OK)
        return Reply(ep, status, data)

    async def _stream_attempt(
        self, route: ModelRoute, ep: Endpoint, url: str, body: Body, headers: dict[str, str]
    ) -> OpenStream | failures.Failure:
        assert isinstance(body, bytes)
        sent_at = time.perf_counter()
        resp = await self.client.session.post(
            url,
            data=body,
            headers=headers,
            timeout=self._stream_timeout,
            allow_redirects=False,
        )
        try:
            if resp.status < 300:
                limit = self.max_event_bytes
                splitter = EventSplitter(limit)
                blocks: list[bytes] = []  # keep-alives (comments alone) before the first event
                size = 0
                while True:
                    chunk = await resp.content.readany()
                    if not chunk:
                        raise failures.StreamCut("stream ended before its first event")
                    block = splitter.feed(chunk)
                    if not block:
                        continue
                    if has_data(block):  # comments alone do not count
                        first_byte = time.perf_counter() - sent_at
                        metrics.observe_ttft(route.model, first_byte)
                        self.health.answered(ep, first_byte, route.endpoints)
                        first = b"".join((*blocks, block)) if blocks else block
                        return OpenStream(self.health, route, ep, resp, splitter, first)
                    size += len(block)
                    if size > limit:
                        raise failures.TooLarge("stream's keep-alives", limit)
                    blocks.append(block)
            data = await read_head(resp, ERROR_BODY_BYTES)
            failure = failures.from_status(resp.status, data, resp.headers.get("retry-after"))
        except BaseException:
            resp.close()
            raise
        resp.close()
        return failure

    async def _body_attempt(
        self, route: ModelRoute, ep: Endpoint, url: str, body: Body, headers: dict[str, str]
    ) -> OpenBody | failures.Failure:
        sent_at = time.perf_counter()
        resp = await self.client.session.post(
            url,
            data=body if isinstance(body, bytes) else body.chunks(),
            headers=headers if isinstance(body, bytes) else body.headers(headers),
            timeout=self._stream_timeout,
            allow_redirects=False,
        )
        try:
            if resp.status < 300:
                first_byte = time.perf_counter() - sent_at
                metrics.observe_ttft(route.model, first_byte)
                self.health.answered(ep, first_byte, route.endpoints)
                return OpenBody(self.health, route.model, route.labels[ep], ep, resp)
            data = await read_head(resp, ERROR_BODY_BYTES)
            failure = failures.from_status(resp.status, data, resp.headers.get("retry-after"))
        except BaseException:
            resp.close()
            raise
        resp.close()
        return failure

    def _note(self, route: ModelRoute, ep: Endpoint, failure: failures.Failure) -> None:
        label = route.labels[ep]
        metrics.count_request(route.model, label, failure.fault)
        metrics.count_failure(label, failure.fault, failure.reason)
        if failure.eject:
            self.health.failed(ep)
        elif failure.fault is failures.Fault.CALLER:
            self.health.succeeded(ep)  # it answered sensibly: that is health
        log.info(
            "upstream call failed",
            extra={"endpoint": label, "fault": failure.fault, "reason": failure.reason},
        )

    def _final(self, route: ModelRoute, last: failures.Failure | None) -> errors.APIError:
        if last is not None:
            return last.error
        return errors.ServiceUnavailable(
            f"No endpoint is available for model {route.model!r}; retry shortly.",
            headers={"Retry-After": "2"},
        )


async def read_all(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """A reply's whole body; ``TooLarge`` (the connection closed, nothing more read) past
    ``limit`` bytes. A Content-Length within the limit bounds the read by itself."""
    length = resp.content_length
    if length is not None and length <= limit:
        return await resp.read()
    if length is not None:
        resp.close()
        raise failures.TooLarge("reply", limit)
    parts: list[bytes] = []
    size = 0
    while chunk := await resp.content.readany():
        size += len(chunk)
        if size > limit:
            resp.close()
            raise failures.TooLarge("reply", limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_head(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body (an error answer, read for its message); the rest
    is not read (the connection is closed then)."""
    parts: list[bytes] = []
    size = 0
    while size < limit and (chunk := await resp.content.readany()):
        parts.append(chunk)
        size += len(chunk)
    if size >= limit:
        resp.close()
    return b"".join(parts)[:limit]
