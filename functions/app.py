"""The app factory: one Starlette app serving the chosen areas plus the ops routes."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from functions import ops
from functions.common import errors, tracing
from functions.common.middleware import RequestContext
from functions.common.runtime import Runtime
from functions.common.settings import AREAS

log = logging.getLogger(__name__)


def area_routes(runtime: Runtime, area: str) -> list[BaseRoute]:
    """An area package exposes ``routes(runtime)``; it may register start/stop hooks."""
    if area not in AREAS:
        raise ValueError(f"unknown area {area!r}")
    module = importlib.import_module(f"functions.{area}")
    routes: list[BaseRoute] = module.routes(runtime)
    return routes


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


def _unexpected(request: Request, exc: Exception) -> Response:
    # The cause is logged by RequestContext when Starlette re-raises; never sent.
    return errors.error_response(errors.GENERIC_500)


def create_app(runtime: Runtime, areas: Sequence[str] | None = None) -> ASGIApp:
    areas = runtime.settings.areas if areas is None else areas
    routes: list[BaseRoute] = []
    for area in areas:
        routes.extend(area_routes(runtime, area))
    routes.extend(ops.routes())
    app = Starlette(
        routes=routes,
        exception_handlers={
            errors.APIError: errors.render,
            HTTPException: _http_exception,
            asyncpg.UntranslatableCharacterError: _unstorable_text,
            asyncpg.CharacterNotInRepertoireError: _unstorable_text,
            Exception: _unexpected,
        },
    )
    app.state.runtime = runtime
    wrapped: ASGIApp = RequestContext(app, max_body_bytes=runtime.settings.jan_max_body_bytes)
    return tracing.instrument(wrapped, runtime.settings)


def starlette_app(app: ASGIApp) -> Starlette:
    """The Starlette app inside the middleware (for tests and the OpenAPI check)."""
    inner = app
    while not isinstance(inner, Starlette):
        inner = inner.app  # type: ignore[attr-defined]
    return inner
