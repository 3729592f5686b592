"""Routes every area answers: health, readiness, version, metrics, API docs."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from functions import __version__
from functions.common.http import JSON
from functions.common.routing import Operation, bind
from functions.common.runtime import Runtime
from functions.ops.docs import ApiDocs, openapi_json, swagger_assets, swagger_index


@dataclass(frozen=True, slots=True)
class OpsDeps:
    runtime: Runtime
    docs: ApiDocs


async def healthcheck(deps: OpsDeps, request: Request) -> Response:
    """
    summary: Liveness
    tags: [ops]
    responses:
      200: {description: The process is alive.}
    """
    return JSON({"status": "ok"})


async def readyz(deps: OpsDeps, request: Request) -> Response:
    """
    summary: Readiness (database answers, migrations current)
    tags: [ops]
    responses:
      200: {description: Ready to serve.}
      503: {description: Not ready; the body says why.}
    """
    runtime = deps.runtime
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


async def version(deps: OpsDeps, request: Request) -> Response:
    """
    summary: Version of this server
    tags: [ops]
    responses:
      200: {description: "version, commit and Python version"}
    """
    settings = deps.runtime.settings
    return JSON(
        {
            "version": __version__,
            "commit": settings.jan_commit,
            "python_version": platform.python_version(),
            "function": settings.jan_function,
        }
    )


async def metrics(deps: OpsDeps, request: Request) -> Response:
    """
    summary: Prometheus metrics
    tags: [ops]
    responses:
      200: {description: Prometheus text format.}
    """
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


ROUTES: list[Operation[OpsDeps]] = [
    Operation("GET", "/healthcheck", healthcheck),
    Operation("GET", "/readyz", readyz),
    Operation("GET", "/v1/version", version),
    Operation("GET", "/metrics", metrics),
    Operation("GET", "/openapi.json", openapi_json),
    Operation("GET", "/api/swagger/index.html", swagger_index),
]


def routes(deps: OpsDeps) -> list[BaseRoute]:
    return [*bind(ROUTES, deps), swagger_assets()]


NO_DATABASE_PATHS = frozenset(
    {"/healthcheck", "/readyz", "/v1/version", "/metrics", "/openapi.json"}
)
NO_DATABASE_PREFIXES = ("/api/swagger/",)


def needs_database(path: str) -> bool:
    """Whether a request must wait for the runtime (pools) to open before it is served."""
    return path not in NO_DATABASE_PATHS and not path.startswith(NO_DATABASE_PREFIXES)
