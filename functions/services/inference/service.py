"""The per-process inference service: catalog, health, router, usage recorder.

Made and started on first use by whichever area needs it (``chat``, or ``responses``
through ``functions.services.inference.api``), inside the serving event loop; its background work
stops with the runtime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, overload
from urllib.parse import quote

import orjson

from functions.common import errors
from functions.common.principal import Principal
from functions.common.runtime import Component, Runtime
from functions.common.upstream import Upstream
from functions.services.inference import failures, metrics
from functions.services.inference.bodies import OpenBody
from functions.services.inference.catalog import Catalog, ModelRoute
from functions.services.inference.health import (
    DatabaseHealthStore,
    HealthBook,
    HealthStore,
    RedisHealthStore,
)
from functions.services.inference.requests import (
    ENGINE_FIELD_OPERATIONS,
    PATHS,
    TOKENIZE_PATH,
    session_key,
    usage_of,
)
from functions.services.inference.router import Body, OpenStream, Reply, Router
from functions.services.inference.streaming import SERVER_CUT
from functions.services.ledger import INT_MAX, UsageRecord, UsageRecorder, clamp
from functions.services.limits import Limiter, Ticket
from functions.services.providers.directory import DISCOVERY_ERRORS, Providers

log = logging.getLogger(__name__)
# The cyclic collector's first-generation threshold for a process serving model traffic.
# Every request in flight keeps a few hundred container objects alive (scope, tasks,
# futures, aiohttp's request and response); with Python's default of 700 the collector
# runs every request or two, finds them all still alive, promotes them, and so keeps
# triggering full collections of the whole heap. Measured through bench/gateway.py's setup
# (hypercorn, 2 cores): CPU per request 0.36 -> 0.32 ms at 32 connections (p99 77 -> 25 ms)
# and 0.48 -> 0.35 ms at 128. Garbage without cycles is still freed at once by reference
# counting; cycles wait for a larger young generation (a few MB at most).
GC_THRESHOLDS = (50_000, 50, 100)
# Model fallbacks: what sends a request on to the next model (every endpoint failed before
# the first byte), how many models after the first at most, and no model started later
# than this after the first call began.
FALLBACK_STATUSES = frozenset({502, 503, 504})
MAX_FALLBACKS = 3
FALLBACK_SECONDS = 60.0
# How long a context window discovered from an endpoint's /models is taken as known.
WINDOW_SECONDS = 300.0
# The models a request fell back from, in order (``x-jan-model-fallback``).
FELL_BACK: ContextVar[tuple[str, ...]] = ContextVar("jan_model_fell_back", default=())


class Unserved(Exception):
    """Every endpoint of a model failed before the first byte (``error``: what to answer
    when no fallback serves either)."""

    def __init__(self, error: errors.APIError) -> None:
        super().__init__(str(error))
        self.error = error


def fallback_headers() -> list[tuple[bytes, bytes]]:
    """``x-jan-model-fallback``: the models that failed before the one that served,
    comma-separated and percent-encoded past ASCII's printable characters (absent when
    the first served)."""
    failed = FELL_BACK.get()
    if not failed:
        return []
    value = ",".join(quote(name, safe="/:@+=~!$&'()*;") for name in failed)
    return [(b"x-jan-model-fallback", value.encode())]


class Inference(Component):
    def __init__(
        self,
        runtime: Runtime,
        upstream: Upstream,
        providers: Providers,
        usage: UsageRecorder,
        limits: Limiter | None = None,
        **router_options: Any,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.client = upstream
        store: HealthStore
        if settings.redis_url is not None:
            store = RedisHealthStore(settings.redis_url.get_secret_value())
        else:
            store = DatabaseHealthStore(lambda: runtime.db.writer)
        self.health = HealthBook(
            store,
            slow_factor=settings.jan_upstream_slow_factor,
            slow_min_seconds=settings.jan_upstream_slow_min_seconds,
        )
        self.catalog = Catalog(health=self.health, providers=providers)
        providers.subscribe(self.catalog.refresh)
        router_options.setdefault("stream_idle_timeout", settings.jan_stream_idle_timeout_seconds)
        router_options.setdefault("max_event_bytes", settings.jan_upstream_max_event_bytes)
        router_options.setdefault("max_reply_bytes", settings.jan_upstream_max_reply_bytes)
        router_options.setdefault("warmup_seconds", settings.jan_upstream_warmup_seconds)
        self.router = Router(self.health, upstream, **router_options)
        self.usage = usage
        self.limits = limits
        self.providers = providers
        # Context windows read from endpoints' /models: (provider, model) -> (when, tokens).
        self._windows: dict[tuple[str, str], tuple[float, int | None]] = {}
        self._upkeep: asyncio.Task[None] | None = None
        self._gc_before: tuple[int, int, int] | None = None

    async def start(self) -> None:
        # The built-in model is discovered when first asked for, not here: a start that
        # polled it would wake a predictor scaled to zero (``Catalog``).
        await self.catalog.refresh()
        if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
            self._gc_before = gc.get_threshold()
            gc.set_threshold(*GC_THRESHOLDS)
        self._upkeep = asyncio.get_running_loop().create_task(self.catalog.run())

    async def stop(self) -> None:
        if self._gc_before is not None:  # a process that goes on (tests) gets its own back
            gc.set_threshold(*self._gc_before)
            self._gc_before = None
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)
        await self.health.settle()
        metrics.untrack(self.health)
        if isinstance(self.health.store, RedisHealthStore):
            await self.health.store.close()

    # --- what the endpoints use -------------------------------------------------------
    async def model_named(self, principal: Principal, name: str) -> str:
        """The model ``name`` stands for: an alias's target, or ``name`` itself."""
        return await self.catalog.target_fresh(
            principal.organization_id, principal.project_id, name
        )

    async def route_for(self, principal: Principal, model: Any) -> ModelRoute:
        """The route for a model the principal may use; 400/404 in OpenAI's words. An
        alias is resolved first: permissions, limits and routing see the model it names."""
        if not isinstance(model, str) or not model:
            raise errors.InvalidRequest("You must provide a model parameter.", param="model")
        org, project = principal.organization_id, principal.project_id
        target = await self.catalog.target_fresh(org, project, model)
        route = None
        if principal.may_use_model(target):
            route = await self.catalog.resolve_fresh(org, project, target)
        if route is None:
            raise errors.NotFound(
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return route

    async def models_for(self, principal: Principal) -> list[tuple[str, ModelRoute]]:
        """What ``/v1/models`` lists, sorted by name: each model the principal may use and
        each alias whose model it may use (an alias in place of a model of its name)."""
        org, project = principal.organization_id, principal.project_id
        await self.catalog.discover_on_demand(org, project, missing_only=True)
        routes = self.catalog.visible(org, project)
        named = {name: route for name, route in routes.items() if principal.may_use_model(name)}
        for alias, target in self.catalog.aliases(org, project).items():
            route = routes.get(target)
            if route is not None and principal.may_use_model(target):
                named[alias] = route
            else:
                named.pop(alias, None)  # the alias shadows a model of its name
        return sorted(named.items())

    async def tokenize(self, principal: Principal, body: dict[str, Any]) -> TokenCount | None:
        """How many tokens a chat request's prompt is, from the model's own tokenizer:
        ``body`` (``model``, ``messages``, ``tools``) goes to the model server's
        ``/tokenize`` in vLLM's shape, with failover. None when no endpoint answers with
        a count (a server without a tokenizer, a hosted API): the caller estimates. The
        count's ``context_window`` is the tokenizer's, else ``context_window(route)``. The
        model must be one the principal may use (404 otherwise); a count is no model call,
        so it takes nothing from rate limits and leaves no line in the usage ledger."""
        route = await self.route_for(principal, body.get("model"))
        request = {**body, "model": route.model, "add_generation_prompt": True}
        try:
            raw = orjson.dumps(request)
            reply = await self.router.send(route, TOKENIZE_PATH, raw, timed=False)
        except errors.APIError as exc:
            log.info("no tokenizer", extra={"model": route.model, "status": exc.status})
            return None
        count = TokenCount.of(reply.body)
        if count is None or count.context_window is not None:
            return count
        # A tokenizer that does not state the window (llama.cpp's server): the window the
        # provider declares or its /models states, as context-window fallbacks use it.
        return dataclasses.replace(count, context_window=await self.context_window(route))

    @overload
    async def call(
        self,
        principal: Principal,
        operation: str,
        body: dict[str, Any],
        raw: Body,
        *,
        stream: bool,
        affinity: str | None,
        relay: Literal[False] = False,
    ) -> Reply | ModelStream: ...

    @overload
    async def call(
        self,
        principal: Principal,
        operation: str,
        body: dict[str, Any],
        raw: Body,
        *,
        stream: bool,
        affinity: str | None,
        relay: Literal[True],
    ) -> ModelBody: ...

    async def call(
        self,
        principal: Principal,
        operation: str,
        body: dict[str, Any],
        raw: Body,
        *,
        stream: bool,
        affinity: str | None,
        relay: bool = False,
    ) -> Reply | ModelStream | ModelBody:
        """The one way to call a model, for the HTTP endpoints and Responses alike:
        admission (the model must be one the caller may use, and the call must fit its
        rate limits: 429 otherwise), routing with failover, model fallbacks, and the usage
        ledger. ``raw`` is what the upstream receives (the client's own bytes when the
        gateway changed nothing). Non-streamed: the upstream's answer, recorded. Streamed:
        the open stream, whose ``entry`` the consumer writes when it ends (which also
        settles the tokens reserved at admission). ``relay``: the upstream's answer as it
        comes, whatever its type (audio; ``raw`` may be an ``Upload``, whose size is not a
        token estimate, and which goes as it is: an alias's upload names the alias). The
        admission's ``x-ratelimit-*`` headers are
        ``functions.services.limits.current_headers()``; the fallback's
        ``x-jan-model-fallback`` is ``fallback_headers()``.

        Fallbacks: when every endpoint of the model fails before the first byte (a 502,
        503 or 504 from the router), the models of the fallback list of the name the
        caller used (else of its model) are tried in turn — those the caller may use, at
        most ``MAX_FALLBACKS``, none started after ``FALLBACK_SECONDS`` — each admitted,
        charged and recorded in the ledger as the model it is. When the upstream refuses
        the request as too long for its context window (``failures.ContextTooLong``),
        only the models of the list whose window is larger (``context_window``) are
        tried; when the refused window is not known, the refusal is the answer."""
        name = body.get("model")
        route = await self.route_for(principal, name)
        FELL_BACK.set(())
        if affinity is not None:
            affinity = session_key(affinity)
        started = time.monotonic()
        window: int | None = None  # set: only models with a larger window may serve
        try:
            return await self._call(principal, operation, body, raw, route, stream, affinity, relay)
        except Unserved as exc:
            last: errors.APIError = exc.error
            reason = metrics.UNAVAILABLE  # why the next model is tried
        except failures.ContextTooLong as exc:
            if not self._fallbacks(principal, name, route):
                raise
            window = exc.window or await self.context_window(route)
            if window is None:
                raise
            last = exc
            reason = metrics.CONTEXT_WINDOW
        org, project = principal.organization_id, principal.project_id
        chain = self._fallbacks(principal, name, route)
        failed = [route.model]
        for candidate in chain:
            if len(failed) > MAX_FALLBACKS or time.monotonic() - started > FALLBACK_SECONDS:
                break
            target = await self.catalog.target_fresh(org, project, candidate)
            if target in failed or not principal.may_use_model(target):
                continue
            fallback = await self.catalog.resolve_fresh(org, project, target)
            if fallback is None:
                continue
            larger = None
            if window is not None:
                larger = await self.context_window(fallback)
                if larger is None or larger <= window:
                    continue
            try:
                result = await self._call(
                    principal, operation, body, raw, fallback, stream, affinity, relay
                )
            except Unserved as exc:
                metrics.count_fallback(failed[-1], target, reason, "failed")
                failed.append(target)
                last = exc.error
                reason = metrics.UNAVAILABLE
                continue
            except failures.ContextTooLong as exc:
                metrics.count_fallback(failed[-1], target, reason, "failed")
                failed.append(target)
                window = exc.window or larger or await self.context_window(fallback)
                if window is None:
                    raise
                last = exc
                reason = metrics.CONTEXT_WINDOW
                continue
            except errors.APIError:
                metrics.count_fallback(failed[-1], target, reason, "failed")
                raise
            metrics.count_fallback(failed[-1], target, reason, metrics.OK)
            FELL_BACK.set(tuple(failed))
            return result
        raise last.with_traceback(None)

    def _fallbacks(self, principal: Principal, name: Any, route: ModelRoute) -> tuple[str, ...]:
        """The fallback list of the name the caller used, else of its model."""
        org, project = principal.organization_id, principal.project_id
        assert isinstance(name, str)
        return self.catalog.fallbacks(org, project, name) or self.catalog.fallbacks(
            org, project, route.model
        )

    async def context_window(self, route: ModelRoute) -> int | None:
        """A model's context window in tokens: as its provider declares it
        (``options.context_window(s)``), else as its endpoint's ``/models`` states it
        (vLLM's ``max_model_len``; read when first needed, kept ``WINDOW_SECONDS``);
        None when neither says."""
        declared = route.provider.options.window(route.model)
        if declared is not None or not route.endpoints:
            return declared
        key = (route.provider.id, route.model)
        known = self._windows.get(key)
        if known is not None and time.monotonic() - known[0] < WINDOW_SECONDS:
            return known[1]
        try:
            windows = await self.providers.model_windows(route.endpoints[0].base_url, route.headers)
        except DISCOVERY_ERRORS:
            windows = {}
        if len(self._windows) >= 10_000:  # bounded: one entry per model ever asked about
            self._windows.clear()
        self._windows[key] = (time.monotonic(), windows.get(route.model))
        return windows.get(route.model)

    async def _call(
        self,
        principal: Principal,
        operation: str,
        body: dict[str, Any],
        raw: Body,
        route: ModelRoute,
        stream: bool,
        affinity: str | None,
        relay: bool,
    ) -> Reply | ModelStream | ModelBody:
        """One model's call: admission, routing with failover, the ledger."""
        changes = engine_fields(route, principal, operation, body, affinity)
        if route.model != body["model"]:  # an alias or a fallback: the upstream gets its model
            changes["model"] = route.model
        if changes:
            body = {**body, **changes}
            if isinstance(raw, bytes):  # the bytes as sent (a stream's may ask for usage)
                raw = orjson.dumps({**orjson.loads(raw), **changes})
        ticket = None
        if self.limits is not None:
            size = len(raw) if isinstance(raw, bytes) else 0
            ticket = await self.limits.admit(principal, route.model, operation, body, size)
        entry = LedgerEntry(self, principal, route, operation, stream or relay, ticket)
        path = PATHS[operation]
        try:
            if relay:
                answer = await self.router.open_body(route, path, raw, affinity=affinity)
            elif stream:
                assert isinstance(raw, bytes)
                opened = await self.router.open_stream(route, path, raw, affinity=affinity)
            else:
                assert isinstance(raw, bytes)
                reply = await self.router.send(route, path, raw, affinity=affinity)
        except errors.APIError as exc:
            entry.write(exc.status)
            if ticket is not None:
                exc.headers = {**exc.headers, **ticket.headers()}
            if exc.status in FALLBACK_STATUSES:
                raise Unserved(exc) from None
            raise
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self.runtime.shutdown.was_cut():
                entry.write(SERVER_CUT)  # the shutdown ended it: ours, not the client's 499
            elif ticket is not None:  # cancelled before an answer: no ledger line, no leak
                ticket.settle(0)
            raise
        if relay:
            entry.first_event(answer.endpoint.base_url)
            return ModelBody(answer, entry)
        if stream:
            entry.first_event(opened.endpoint.base_url)
            return ModelStream(opened, entry)
        entry.endpoint = reply.endpoint.base_url
        entry.write(reply.status, usage_of(reply.body))
        return reply


def engine_fields(
    route: ModelRoute,
    principal: Principal,
    operation: str,
    body: dict[str, Any],
    affinity: str | None,
) -> dict[str, Any]:
    """The body fields the gateway sets for the engines of ``route``, as their provider
    declares they take them (``ProviderOptions``): the project's ``priority`` (0 when it
    has none; the caller's own is replaced), and the affinity key as ``prompt_cache_key``
    unless the caller sent one. Only what differs from ``body``."""
    options = route.provider.options
    if operation not in ENGINE_FIELD_OPERATIONS or not (
        options.priority or options.prompt_cache_key
    ):
        return {}
    fields: dict[str, Any] = {}
    if options.priority:
        priority = principal.priority or 0
        if body.get("priority") != priority:
            fields["priority"] = priority
    if options.prompt_cache_key and affinity is not None and "prompt_cache_key" not in body:
        fields["prompt_cache_key"] = affinity
    return fields


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A model server's count of a prompt's tokens, and its context window where it says
    (vLLM's ``max_model_len``)."""

    tokens: int
    context_window: int | None

    @classmethod
    def of(cls, body: bytes) -> TokenCount | None:
        """vLLM's answer (``count``, ``max_model_len``), or llama.cpp's (``tokens``)."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        count, tokens = _count(data.get("count")), data.get("tokens")
        if count is None and isinstance(tokens, list):
            count = len(tokens)
        if count is None:
            return None
        return cls(count, _count(data.get("max_model_len")) or None)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class ModelBody:
    """A model's answer relayed as it comes (its status and headers are in), with its
    ledger entry (written by whoever relays it, at the end)."""

    body: OpenBody
    entry: LedgerEntry


@dataclass(frozen=True, slots=True)
class ModelStream:
    """A model's stream whose first event has arrived, with its ledger entry (written by
    whoever consumes the stream, through ``StreamOutcome``)."""

    stream: OpenStream
    entry: LedgerEntry


class LedgerEntry:
    """One model request's line in the usage ledger: started when the request goes out,
    written once at its end (``write``), whatever the outcome."""

    __slots__ = (
        "_svc", "created", "endpoint", "operation", "principal", "route", "started",
        "streamed", "ticket", "ttft_ms",
    )  # fmt: skip

    def __init__(
        self,
        svc: Inference,
        principal: Principal,
        route: ModelRoute,
        operation: str,
        streamed: bool,
        ticket: Ticket | None = None,
    ) -> None:
        self._svc = svc
        self.principal = principal
        self.route = route
        self.operation = operation
        self.streamed = streamed
        self.created = time.time()
        self.started = time.perf_counter()
        self.endpoint: str | None = None  # the endpoint that answered, once one has
        self.ttft_ms: int | None = None
        self.ticket = ticket  # the rate limiter's admission, settled by ``write``

    def first_event(self, endpoint: str) -> None:
        """A stream's first event arrived from ``endpoint``."""
        self.endpoint = endpoint
        self.ttft_ms = int((time.perf_counter() - self.started) * 1000)

    def write(self, status: int, usage: dict[str, Any] | None = None) -> None:
        """Queue the record (never touches the database; see ``UsageRecorder``), and
        settle the rate limiter's reservation with the real usage: unknown usage keeps the
        reservation, unless no endpoint ever answered (nothing was generated). The
        upstream's counts are its own word: anything but a count becomes 0, and a count is
        clamped to what the ledger's columns hold."""
        prompt = completion = cached = 0
        model = self.route.model
        if usage:
            prompt = clamp(usage.get("prompt_tokens"))
            completion = clamp(usage.get("completion_tokens"))
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                cached = min(clamp(details.get("cached_tokens")), prompt)
            metrics.count_tokens(model, prompt, completion)
        ticket = self.ticket
        cost = reserved = cached_cost = output_cost = 0
        if ticket is not None:
            self.ticket = None
            reserved = ticket.reserved
            if ticket.price is not None:
                input_cost, cached_cost, output_cost = ticket.price.costs(
                    prompt, cached, completion
                )
                cost = input_cost + cached_cost + output_cost
            if usage:
                ticket.settle(prompt + completion, cost)
            else:
                ticket.settle(0 if self.endpoint is None else None, cost)
        principal = self.principal
        self._svc.usage.record(
            UsageRecord(
                created_at=datetime.fromtimestamp(self.created, UTC),
                organization_id=principal.organization_id,
                project_id=principal.project_id,
                api_key_id=principal.api_key_id,
                user_id=principal.user_id,
                model=model,
                provider_id=self.route.provider.id,
                endpoint=self.endpoint,
                operation=self.operation,
                streamed=self.streamed,
                input_tokens=prompt,
                output_tokens=completion,
                input_cached_tokens=cached,
                latency_ms=min(int((time.perf_counter() - self.started) * 1000), INT_MAX),
                ttft_ms=self.ttft_ms,
                status=status,
                cost_picodollars=cost,
                reserved_tokens=reserved,
                cached_input_cost=cached_cost,
                output_cost=output_cost,
            )
        )
