"""The `mcp` area: Jan Server's tools over the Model Context Protocol at ``/v1/mcp``, and
the per-project tool settings at ``/v1/mcp/settings``."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from functions.common.runtime import Runtime
from functions.mcp.endpoint import MCPEndpoint
from functions.mcp.server import MCPService
from functions.mcp.tool_settings import get_settings, update_settings
from functions.services.toolbox import store as tool_store


def routes(runtime: Runtime) -> list[BaseRoute]:
    service = MCPService(runtime)
    runtime.on_start(service.start)
    runtime.on_stop(service.stop)
    tool_store.register_sweep(runtime)  # the daily tool-call counters this area fills
    return [
        Route("/v1/mcp", MCPEndpoint(service), methods=["POST"]),
        Route("/v1/mcp/settings", get_settings, methods=["GET"]),
        Route("/v1/mcp/settings", update_settings, methods=["POST"]),
    ]
