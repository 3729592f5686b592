"""Tools in a response: the client's function tools, and tools the server runs itself.

Function tools (``{"type": "function", ...}``) go to the model; when it calls one, the
response ends with a ``function_call`` item and the client answers with a
``function_call_output`` item in its next request.

Server-side tools (built-in ``web_search``/``fetch``, ``{"type": "mcp", ...}``) come from
the ``ToolExecutor``s of the ``ToolRegistry`` the app factory gives the Responses area.
For each ``tools`` entry that is not a function tool, the engine asks the executors in
turn; the first that recognises it returns the ``ServerTool``s it stands for. They are
offered to the model as functions too, but when the model calls one the engine runs it,
records the call and its output as items, and asks the model again, in a bounded loop.

A server tool's ``items`` says how its calls appear in a response, as OpenAI shows its own
server-run tools: ``WebSearchCalls`` → ``web_search_call`` items, ``McpCalls`` →
``mcp_call`` items; ``None`` → a ``function_call`` and a ``function_call_output``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from functions.common.errors import InvalidRequest
from functions.common.principal import Owner


@dataclass(frozen=True)
class ToolOutput:
    """What a tool call produced: the text the model reads, and whether it is an error."""

    text: str
    is_error: bool = False


@dataclass(frozen=True)
class WebSearchCalls:
    """Calls shown as `web_search_call` items doing this action (`search`: the model's `q`
    or `query` argument; `open_page`: its `url`)."""

    action: Literal["search", "open_page"]


@dataclass(frozen=True)
class McpCalls:
    """Calls shown as `mcp_call` items of this MCP server."""

    server_label: str


@dataclass(frozen=True)
class ServerTool:
    name: str
    description: str
    parameters: dict[str, Any]
    # Runs the tool on the model's JSON arguments. Failures the model should see (bad
    # arguments, provider down) are an error output, not raised: the engine turns a raised
    # exception into a generic error output and logs it.
    run: Callable[[str], Awaitable[ToolOutput]]
    items: WebSearchCalls | McpCalls | None = None


class ToolExecutor(Protocol):
    async def resolve(self, spec: dict[str, Any], owner: Owner) -> list[ServerTool] | None:
        """The tools a `tools` entry stands for, or None when it is not this executor's."""
        ...


@dataclass
class ToolRegistry:
    executors: list[ToolExecutor] = field(default_factory=list)


def function_tool(spec: dict[str, Any], param: str) -> dict[str, Any]:
    """A client function tool, validated, in the Responses shape we echo back."""
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{param}.name' must be a non-empty string.", param=f"{param}.name")
    parameters = spec.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest(
            f"'{param}.parameters' must be an object.", param=f"{param}.parameters"
        )
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(
            f"'{param}.description' must be a string.", param=f"{param}.description"
        )
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": parameters,
        "strict": bool(spec.get("strict", False)),
    }


async def resolve_server_tools(
    registry: ToolRegistry, specs: list[dict[str, Any]], owner: Owner
) -> dict[str, ServerTool]:
    """The server-side tools the request's non-function `tools` entries name; 400 for an
    entry no executor knows."""
    found: dict[str, ServerTool] = {}
    for index, spec in enumerate(specs):
        if spec.get("type") == "function":
            continue
        for executor in registry.executors:
            tools = await executor.resolve(spec, owner)
            if tools is not None:
                found.update((t.name, t) for t in tools)
                break
        else:
            raise InvalidRequest(
                f"Tool type {spec.get('type')!r} is not supported.", param=f"tools[{index}].type"
            )
    return found


def chat_tool(name: str, description: str | None, parameters: dict[str, Any] | None) -> Any:
    """A tool in the chat-completions shape the upstream understands."""
    function: dict[str, Any] = {"name": name, "parameters": parameters or {"type": "object"}}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}
