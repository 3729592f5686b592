"""The `mcp` area: Jan Server's tools over the Model Context Protocol at ``/v1/mcp``, and
the per-project tool settings at ``/v1/mcp/settings``."""

from __future__ import annotations

from functions.common.routing import Operation, RawOperation
from functions.common.runtime import Runtime
from functions.mcp.deps import MCPDeps
from functions.mcp.endpoint import mcp_endpoint
from functions.mcp.server import MCPService
from functions.mcp.tool_settings import get_settings, update_settings
from functions.services.audit import Audit
from functions.services.identity import Identity
from functions.services.toolbox.toolbox import ToolBox

__all__ = ["ROUTES", "MCPDeps", "build"]

ROUTES: list[Operation[MCPDeps] | RawOperation[MCPDeps]] = [
    RawOperation("POST", "/v1/mcp", mcp_endpoint),
    Operation("GET", "/v1/mcp/settings", get_settings),
    Operation("POST", "/v1/mcp/settings", update_settings),
]


def build(runtime: Runtime, identity: Identity, toolbox: ToolBox, audit: Audit) -> MCPDeps:
    return MCPDeps(runtime, identity, toolbox, MCPService(toolbox), audit)
