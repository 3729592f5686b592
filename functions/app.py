"""The app factory: builds, once, the services the chosen areas use, hands each area its
own, and lists every component's lifecycle with the runtime in one place.

    runtime = Runtime(settings)
    app = create_app(runtime)          # the areas of settings.jan_function
    await runtime.open()               # database, migrations, then every component's start

What each area gets is a small typed object (``ChatDeps``, ``AdminDeps``, …) of the
services it uses; an area that is not served builds nothing: a process serving only
``admin`` has no inference router, catalog loop or upstream session, ``conversations``
neither a router nor a tool box.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from functions.common import errors, tracing
from functions.common.db import UNREACHABLE
from functions.common.middleware import RequestContext
from functions.common.routing import bind, unbound
from functions.common.runtime import Component, Runtime
from functions.common.settings import AREAS
from functions.ops.docs import ApiDocs

if TYPE_CHECKING:
    from functions.common.housekeeping import Housekeeping
    from functions.common.outbound import Outbound
    from functions.common.upstream import Upstream
    from functions.services.audit import Audit
    from functions.services.bootstrap import Bootstrap
    from functions.services.identity import Identity
    from functions.services.inference.service import Inference
    from functions.services.ledger import UsageRecorder
    from functions.services.limits import Limiter
    from functions.services.limits.definitions import RateLimitDefinitions
    from functions.services.providers.directory import Providers
    from functions.services.retention import Retention
    from functions.services.spend_alerts import SpendAlerts
    from functions.services.toolbox.toolbox import ToolBox

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The shared services of one process, each built the first time an area asks for it
    while the app is created (never on the request path), in dependency order; that
    order is the order ``components`` start in (and the reverse, they stop in). Each
    service's module is imported only when it is built: a process does not load what its
    areas do not use (a cold start pays for every import)."""

    runtime: Runtime
    areas: frozenset[str] = frozenset()
    components: list[Component] = field(default_factory=list)

    @property
    def serves_models(self) -> bool:
        return bool(self.areas & {"chat", "responses"})

    def _own(self, component: Component) -> None:
        self.components.append(component)

    @cached_property
    def housekeeping(self) -> Housekeeping:
        from functions.common.housekeeping import Housekeeping

        keeper = Housekeeping(self.runtime, self.runtime.settings.jan_housekeeping_interval_seconds)
        self._own(keeper)
        return keeper

    @cached_property
    def audit(self) -> Audit:
        from functions.services.audit import Audit

        return Audit(self.runtime.settings)

    @cached_property
    def retention(self) -> Retention:
        """Its sweeps run in every area that stores what they delete (any instance will
        do: each sweep runs on one at a time)."""
        from functions.services.retention import Retention

        keeper = Retention(self.runtime.settings)
        keeper.register(self.housekeeping)
        return keeper

    @cached_property
    def identity(self) -> Identity:
        from functions.services.identity import Identity

        identity = Identity(self.runtime)
        self._own(identity)
        return identity

    @cached_property
    def bootstrap(self) -> Bootstrap:
        from functions.services.bootstrap import Bootstrap

        first_start = Bootstrap(self.runtime)
        self._own(first_start)
        return first_start

    @cached_property
    def outbound(self) -> Outbound:
        from functions.common.outbound import Outbound

        client = Outbound()
        self._own(client)
        return client

    @cached_property
    def upstream(self) -> Upstream:
        from functions.common.upstream import ProviderGuard, Upstream

        upstream = Upstream(ProviderGuard.from_settings(self.runtime.settings))
        self._own(upstream)
        return upstream

    @cached_property
    def providers(self) -> Providers:
        from functions.common.crypto import SecretBox
        from functions.common.upstream import ProviderGuard, Upstream
        from functions.services.providers.directory import (
            ProviderLimits,
            ProviderOptions,
            Providers,
        )

        settings = self.runtime.settings
        secret = settings.model_provider_secret
        if self.serves_models:
            upstream = self.upstream
        else:  # admin alone: a guarded client, opened only when a provider is polled
            upstream = Upstream(ProviderGuard.from_settings(settings), lazy=True)
            self._own(upstream)
        return Providers(
            self.runtime,
            upstream,
            box=SecretBox(secret.get_secret_value()) if secret is not None else None,
            guard=upstream.guard,
            builtin_url=settings.jan_inference_model_url,
            limits=ProviderLimits.from_settings(settings),
            max_discovery_bytes=settings.jan_upstream_max_discovery_bytes,
            warmup_seconds=settings.jan_upstream_warmup_seconds,
            builtin_options=ProviderOptions.from_json(settings.jan_inference_model_options),
        )

    @cached_property
    def usage(self) -> UsageRecorder:
        from functions.services.ledger import UsageRecorder

        recorder = UsageRecorder(self.runtime, max_queue=self.runtime.settings.jan_usage_queue_max)
        self._own(recorder)
        return recorder

    @cached_property
    def limit_definitions(self) -> RateLimitDefinitions:
        from functions.services.limits.definitions import RateLimitDefinitions

        return RateLimitDefinitions(self.runtime, self.providers)

    @cached_property
    def limits(self) -> Limiter:
        from functions.services.limits import Limiter

        limiter = Limiter(self.runtime)
        self.limit_definitions.subscribe(limiter.forget)  # a change here applies at once
        self.limit_definitions.counters = limiter  # budgets' state, for their admin side
        self._own(limiter)
        return limiter

    @cached_property
    def inference(self) -> Inference:
        from functions.services.inference.service import Inference

        inference = Inference(self.runtime, self.upstream, self.providers, self.usage, self.limits)
        self.limit_definitions.catalog = inference.catalog
        self._own(inference)
        return inference

    @cached_property
    def spend_alerts(self) -> SpendAlerts:
        """Built where models are served: spend happens there, and those areas stay warm
        (an admin process scales to zero)."""
        from functions.common.upstream import ProviderGuard
        from functions.services.spend_alerts import SpendAlerts

        settings = self.runtime.settings
        alerts = SpendAlerts(
            self.runtime,
            self.providers.box,
            ProviderGuard.from_settings(settings),
            interval_seconds=settings.jan_spend_alert_interval_seconds,
        )
        self._own(alerts)
        return alerts

    @cached_property
    def toolbox(self) -> ToolBox:
        from functions.services.toolbox.toolbox import ToolBox

        box = ToolBox(self.runtime, self.outbound)
        self._own(box)
        box.register_sweeps(self.housekeeping)
        return box


def area_routes(services: Services, area: str) -> list[BaseRoute]:
    """Build what ``area`` uses and bind its route table to it."""
    s = services
    settings = s.runtime.settings
    if area == "auth":
        from functions import auth

        s.bootstrap  # noqa: B018  (the default organization exists before sign-ins)
        s.retention  # noqa: B018  (audit events)
        auth_deps = auth.build(s.runtime, s.identity, s.outbound, s.housekeeping, s.audit)
        s.components.append(auth_deps.limiter)
        return bind(auth.ROUTES, auth_deps)
    if area == "admin":
        from functions import admin

        s.bootstrap  # noqa: B018
        s.retention  # noqa: B018  (audit events)
        deps = admin.AdminDeps(s.runtime, s.identity, s.providers, s.limit_definitions, s.audit)
        return bind(admin.ROUTES, deps)
    if area == "chat":
        from functions import chat

        s.retention  # noqa: B018  (the usage ledger)
        s.spend_alerts  # noqa: B018  (checked where spend happens)
        stored = chat.StoredWrites(s.runtime)
        return bind(chat.ROUTES, chat.ChatDeps(s.identity, s.inference, s.runtime, stored))
    if area == "conversations":
        from functions import conversations

        s.retention  # noqa: B018  (conversation items)
        return bind(conversations.ROUTES, conversations.ConversationsDeps(s.runtime, s.identity))
    if area == "responses":
        from functions import responses

        s.spend_alerts  # noqa: B018
        responses_deps = responses.build(s.runtime, s.identity, s.inference, s.toolbox)
        s.components.append(responses_deps.worker)
        responses.register_sweeps(s.housekeeping, settings)
        s.retention  # noqa: B018  (responses, conversation items, the usage ledger)
        return bind(responses.ROUTES, responses_deps)
    if area == "mcp":
        from functions import mcp

        mcp_deps = mcp.build(s.runtime, s.identity, s.toolbox, s.audit)
        s.components.append(mcp_deps.server)
        return bind(mcp.ROUTES, mcp_deps)
    if area == "console":
        from functions import console

        return console.routes(console.ConsoleDeps())  # static files: no service
    raise ValueError(f"unknown area {area!r}")


def described_routes() -> list[BaseRoute]:
    """Every area's routes as descriptions (no service built): the OpenAPI document's
    input, whichever areas this process serves."""
    from functions import admin, auth, chat, console, conversations, mcp, ops, responses

    tables = (
        auth.ROUTES,
        admin.ROUTES,
        chat.ROUTES,
        conversations.ROUTES,
        responses.ROUTES,
        mcp.ROUTES,
        console.ROUTES,
        ops.ROUTES,
    )
    return [route for table in tables for route in unbound(table)]


def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: errors.APIError = errors.NotFound(f"No route {request.url.path}.")
        err.code = "unknown_url"
    elif exc.status_code == 405:
        err = errors.MethodNotAllowed(f"Method {request.method} not allowed on {request.url.path}.")
        err.headers = dict(exc.headers or {})
    else:
        err = errors.for_status(exc.status_code, str(exc.detail))
    return errors.error_response(err)


def _unstorable_text(request: Request, exc: Exception) -> Response:
    # PostgreSQL cannot store U+0000 in text or jsonb (nor bytes invalid in UTF-8); such a
    # string can arrive in any body field, query or path parameter, so it is answered here
    # once rather than checked field by field.
    log.info("unstorable character in the request", extra={"path": request.url.path})
    return errors.error_response(
        errors.InvalidRequest(
            "The request contains a character that cannot be stored (such as U+0000).",
            code="invalid_character",
        )
    )


def _database_unreachable(request: Request, exc: Exception) -> Response:
    # A request that needed the database while it is down (a stopped or restarting
    # server): a 503 the client may retry, not a 500. Credentials this instance verified
    # recently do not get here (``Identity`` serves them from its cache meanwhile).
    log.warning(
        "database unreachable", extra={"path": request.url.path, "error": type(exc).__name__}
    )
    return errors.error_response(errors.database_unavailable())


def _unexpected(request: Request, exc: Exception) -> Response:
    # The cause is logged by RequestContext when Starlette re-raises; never sent.
    return errors.error_response(errors.internal_error())


def create_app(runtime: Runtime, areas: Sequence[str] | None = None) -> ASGIApp:
    """The app serving ``areas`` (default: the settings' ``JAN_FUNCTION``), with every
    component it built handed to ``runtime`` to start, drain and stop."""
    from functions import ops

    areas = runtime.settings.areas if areas is None else areas
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise ValueError(f"unknown area {unknown[0]!r}")
    services = Services(runtime, frozenset(areas))
    routes: list[BaseRoute] = []
    for area in areas:
        routes.extend(area_routes(services, area))
    routes.extend(ops.routes(ops.OpsDeps(runtime, ApiDocs(described_routes))))
    runtime.manage(*services.components)
    app = Starlette(
        routes=routes,
        exception_handlers={
            errors.APIError: errors.render,
            HTTPException: _http_exception,
            asyncpg.UntranslatableCharacterError: _unstorable_text,
            asyncpg.CharacterNotInRepertoireError: _unstorable_text,
            **{cls: _database_unreachable for cls in UNREACHABLE},
            Exception: _unexpected,
        },
    )
    app.state.services = services
    wrapped: ASGIApp = RequestContext(
        app,
        max_body_bytes=runtime.settings.jan_max_body_bytes,
        body_timeout_seconds=runtime.settings.jan_body_timeout_seconds,
        shutdown=runtime.shutdown,
    )
    return tracing.instrument(wrapped, runtime.settings)


def starlette_app(app: ASGIApp) -> Starlette:
    """The Starlette app inside the middleware (for tests and the OpenAPI check)."""
    inner = app
    while not isinstance(inner, Starlette):
        inner = inner.app  # type: ignore[attr-defined]
    return inner


def services_of(app: ASGIApp) -> Services:
    """What ``create_app`` built (for tests and benchmarks)."""
    services: Services = starlette_app(app).state.services
    return services
