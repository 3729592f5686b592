"""Routes every area answers: health, readiness, version, metrics, API docs."""

from __future__ import annotations

import platform

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from functions import __version__
from functions.common.http import JSON, runtime_of
from functions.ops.docs import docs_routes


async def healthcheck(request: Request) -> Response:
    """
    summary: Liveness
    tags: [ops]
    responses:
      200: {description: The process is alive.}
    """
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    """
    summary: Readiness (database answers, migrations current)
    tags: [ops]
    responses:
      200: {description: Ready to serve.}
      503: {description: Not ready; the body says why.}
    """
    runtime = runtime_of(request)
    ok, message = runtime.ready, runtime.ready_message
    if ok:
        try:
            await runtime.db.writer.fetchval("SELECT 1", timeout=2)
        except Exception as exc:
            ok, message = False, f"database not answering: {type(exc).__name__}"
    return JSON(
        {"status": "ok" if ok else "unavailable", "message": message},
        status_code=200 if ok else 503,
    )


async def version(request: Request) -> Response:
    """
    summary: Version of this server
    tags: [ops]
    responses:
      200: {description: "version, commit and Python version"}
    """
    settings = runtime_of(request).settings
    return JSON(
        {
            "version": __version__,
            "commit": settings.jan_commit,
            "python_version": platform.python_version(),
            "function": settings.jan_function,
        }
    )


async def metrics(request: Request) -> Response:
    """
    summary: Prometheus metrics
    tags: [ops]
    responses:
      200: {description: Prometheus text format.}
    """
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def routes() -> list[BaseRoute]:
    return [
        Route("/healthcheck", healthcheck, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/version", version, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *docs_routes(),
    ]


NO_DATABASE_PATHS = frozenset(
    {"/healthcheck", "/readyz", "/v1/version", "/metrics", "/openapi.json"}
)
NO_DATABASE_PREFIXES = ("/api/swagger/",)


def needs_database(path: str) -> bool:
    """Whether a request must wait for the runtime (pools) to open before it is served."""
    return path not in NO_DATABASE_PATHS and not path.startswith(NO_DATABASE_PREFIXES)
