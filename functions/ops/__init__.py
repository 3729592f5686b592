"""Routes every area answers: health, readiness, version, metrics, API docs."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import platform
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from functions import __version__
from functions.common import errors
from functions.common.http import JSON
from functions.common.routing import Operation, bind
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.ops.docs import ApiDocs, openapi_json, swagger_assets, swagger_index

# Under the probe's own timeout (Kubernetes' default is 1 s).
READY_DB_TIMEOUT_SECONDS = 0.8


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
    summary: Readiness (database answers, migrations current, not shutting down)
    description: >-
      503 until the process has opened its database with current migrations, and while it
      drains before shutting down (`draining`). Once open, a database that stops answering
      is reported as `degraded` (still 200): the process goes on serving what needs no
      database and callers whose credentials it verified recently, and taking every
      instance out of rotation at once would stop that too.
    tags: [ops]
    responses:
      200: {description: "Ready to serve (`ok`), or serving without its database (`degraded`)."}
      503: {description: Not ready; the body says why.}
    """
    runtime = deps.runtime
    ok, message = runtime.ready, runtime.ready_message
    status = "ok" if ok else "unavailable"
    if runtime.shutdown.draining:
        ok, status, message = False, "unavailable", "draining"
    elif ok and runtime.settings.uses_database:
        try:
            async with asyncio.timeout(READY_DB_TIMEOUT_SECONDS):  # connecting included
                await runtime.db.writer.fetchval("SELECT 1")
        except Exception as exc:
            status, message = "degraded", f"database not answering: {type(exc).__name__}"
    return JSON({"status": status, "message": message}, status_code=200 if ok else 503)


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
    summary: Prometheus metrics (for the operator's scraper)
    description: >-
      Requires `Authorization: Bearer <JAN_METRICS_TOKEN>`. Without a token configured it
      answers only in local embedded mode (`make run`), and only to loopback clients.
    tags: [ops]
    responses:
      200: {description: Prometheus text format.}
      401: {description: "JAN_METRICS_TOKEN is set and the request does not carry it."}
      403: {description: "No JAN_METRICS_TOKEN is set (and this is not a local, loopback call)."}
    """
    _admit_scraper(deps.runtime.settings, request)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _admit_scraper(settings: Settings, request: Request) -> None:
    """The metrics name every tenant's models and providers: only the operator's scraper
    reads them, proving itself with JAN_METRICS_TOKEN; with none set, only a loopback
    client of a local embedded install (`make run`) does."""
    token = settings.jan_metrics_token.get_secret_value() if settings.jan_metrics_token else ""
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return
        raise errors.Unauthorized(
            "Metrics require the bearer token configured as JAN_METRICS_TOKEN.",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if settings.jan_embedded and _loopback(request):
        return
    raise errors.Forbidden(
        "Metrics are not served without JAN_METRICS_TOKEN (set it, and have the scraper send "
        "it as a bearer token).",
        code="metrics_disabled",
    )


def _loopback(request: Request) -> bool:
    client = request.client
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client.host.split("%")[0]).is_loopback
    except ValueError:
        return False


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
NO_DATABASE_PREFIXES = ("/api/swagger/", "/console")  # static files


def needs_database(path: str) -> bool:
    """Whether a request must wait for the runtime (pools) to open before it is served."""
    return path not in NO_DATABASE_PATHS and not path.startswith(NO_DATABASE_PREFIXES)
