"""The tool box as server-side tools of the Responses API (its ``ToolExecutor`` seam).

``tools`` entries this executor answers for:

- ``{"type": "web_search"}`` (also ``web_search_preview``): the model gets ``web_search``;
  an OpenAI-style ``user_location`` supplies default ``gl``/``location``;
- ``{"type": "fetch"}``: the model gets ``fetch`` (a page as Markdown);
- ``{"type": "mcp", "server_label": "jan", "allowed_tools": [...]}``: Jan's own MCP tools
  (``google_search``, ``scrape``, ``fetch_webpage``) under their MCP names. Remote MCP
  servers (``server_url``) are not called: that would let a request make this server
  reach any address.

A family the project has disabled is a 400 on the request, not a surprise mid-answer;
quota, timeouts and failures are the tool box's, returned as text the model reads.

Calls appear in a response as OpenAI shows its own server tools: the built-ins as
``web_search_call`` items (``search`` for web_search, ``open_page`` for fetch), Jan's MCP
tools as ``mcp_call`` items with ``server_label`` ``jan``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from functions.common.errors import InvalidRequest
from functions.common.principal import Owner, Principal
from functions.services.toolbox.server import (
    McpCalls,
    ServerTool,
    ToolOutput,
    WebSearchCalls,
)
from functions.services.toolbox.toolbox import FETCH, WEB_SEARCH, ToolBox, ToolSpec

JAN_MCP_LABEL = "jan"
# tools entry type → (the name the model is offered, the tool box's tool, how calls show)
_BUILT_INS: dict[str, tuple[str, str, WebSearchCalls]] = {
    "web_search": ("web_search", "google_search", WebSearchCalls("search")),
    "web_search_preview": ("web_search", "google_search", WebSearchCalls("search")),
    "fetch": ("fetch", "fetch_webpage", WebSearchCalls("open_page")),
}


class JanToolExecutor:
    """The tool box's tools as Responses server tools (built-ins and Jan's MCP server)."""

    def __init__(self, box: ToolBox) -> None:
        self.box = box

    async def resolve(self, spec: dict[str, Any], owner: Owner) -> list[ServerTool] | None:
        kind = spec.get("type")
        if kind in _BUILT_INS:
            offered, name, items = _BUILT_INS[kind]
            tool = self.box.spec(name)
            assert tool is not None
            await self._require_enabled(owner.principal, [tool])
            defaults = _location_defaults(spec) if tool.family == WEB_SEARCH else {}
            return [self._server_tool(owner.principal, tool, offered, defaults, items)]
        if kind == "mcp":
            tools = self._jan_mcp_tools(spec)
            await self._require_enabled(owner.principal, tools)
            mcp = McpCalls(JAN_MCP_LABEL)
            return [self._server_tool(owner.principal, t, t.name, {}, mcp) for t in tools]
        return None

    def _jan_mcp_tools(self, spec: dict[str, Any]) -> list[ToolSpec]:
        if spec.get("server_label") != JAN_MCP_LABEL or spec.get("server_url"):
            raise InvalidRequest(
                f"Only Jan's own MCP tools are available: use server_label "
                f"'{JAN_MCP_LABEL}' without server_url.",
                param="tools",
            )
        allowed = spec.get("allowed_tools")
        if isinstance(allowed, dict):  # OpenAI's filter form: {"tool_names": [...]}
            allowed = allowed.get("tool_names")
        if allowed is None:
            return [s for s in (self.box.spec(n) for n in _ALL_MCP_NAMES) if s is not None]
        if not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed):
            raise InvalidRequest("'allowed_tools' must be a list of tool names.", param="tools")
        tools = []
        for name in allowed:
            found = self.box.spec(name)
            if found is None:
                raise InvalidRequest(f"Jan's MCP server has no tool {name!r}.", param="tools")
            tools.append(found)
        return tools

    async def _require_enabled(self, principal: Principal, tools: list[ToolSpec]) -> None:
        enabled = {s.name for s in await self.box.available(principal)}
        for tool in tools:
            if tool.name not in enabled:
                family = "web_search" if tool.family == WEB_SEARCH else FETCH
                raise InvalidRequest(
                    f"The {family} tool is not enabled for this project.", param="tools"
                )

    def _server_tool(
        self,
        principal: Principal,
        tool: ToolSpec,
        offered: str,
        defaults: dict[str, Any],
        items: WebSearchCalls | McpCalls,
    ) -> ServerTool:
        return ServerTool(
            name=offered,
            description=tool.description,
            parameters=tool.input_schema,
            run=self._runner(principal, tool.name, defaults),
            items=items,
        )

    def _runner(
        self, principal: Principal, name: str, defaults: dict[str, Any]
    ) -> Callable[[str], Awaitable[ToolOutput]]:
        async def run(arguments: str) -> ToolOutput:
            parsed: Any = arguments
            if defaults:
                try:
                    parsed = {**defaults, **orjson.loads(arguments or "{}")}
                except (orjson.JSONDecodeError, TypeError):
                    parsed = arguments  # let the tool box say what is wrong with it
            result = await self.box.call(principal, name, parsed)
            return ToolOutput(result.text, is_error=result.is_error)

        return run


_ALL_MCP_NAMES = ("google_search", "scrape", "fetch_webpage")


def _location_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``user_location`` ({"type": "approximate", country, city, region}) as the
    search's default country and place."""
    where = spec.get("user_location")
    if not isinstance(where, dict):
        return {}
    defaults: dict[str, Any] = {}
    if isinstance(where.get("country"), str):
        defaults["gl"] = where["country"].lower()
    place = [str(where[k]) for k in ("city", "region") if isinstance(where.get(k), str)]
    if place:
        defaults["location"] = ", ".join(place)
    return defaults
