"""What the mcp area uses."""

from __future__ import annotations

from dataclasses import dataclass

from functions.common.runtime import Runtime
from functions.mcp.server import MCPService
from functions.services.audit import Audit
from functions.services.identity import Identity
from functions.services.toolbox.toolbox import ToolBox


@dataclass(frozen=True, slots=True)
class MCPDeps:
    runtime: Runtime
    identity: Identity
    toolbox: ToolBox
    server: MCPService
    audit: Audit
