"""Tool calls as response items: how each kind is shown, streamed, and read back by the model.

- A client's function tool, or a server tool without typed items: a ``function_call`` item
  (the model's call), answered by a ``function_call_output`` item (the client's, or ours).
- ``WebSearchCalls`` tools: one ``web_search_call`` item (``action`` ``{"type": "search",
  "query"}`` or ``{"type": "open_page", "url"}``) streamed as
  ``response.web_search_call.in_progress/searching/completed``. OpenAI keeps search results
  out of the item; Jan adds ``output``, the text the model read, so the next turn (or a
  client replaying the items) shows the model the same history.
- ``McpCalls`` tools: one ``mcp_call`` item (``server_label``, ``name``, ``arguments``,
  then ``output`` or ``error``) streamed as ``response.mcp_call_arguments.delta/done`` and
  ``response.mcp_call.in_progress/completed/failed``.

Whatever the item, the model sees an assistant tool call followed by a tool result
(``model_view``), so a history of typed items is a valid chat-completions history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from functions.common.ids import new_id
from functions.services.conversations.items import new_item_id
from functions.services.toolbox.server import McpCalls, ServerTool, ToolOutput, WebSearchCalls

Event = dict[str, Any]
CALL_TYPES = ("function_call", "web_search_call", "mcp_call")


@dataclass
class Call:
    """A call the model is making (or made) in the current turn."""

    item: dict[str, Any]
    call_id: str
    name: str
    arguments: str = ""


def where(output: list[dict[str, Any]], item: dict[str, Any]) -> dict[str, Any]:
    """The `item_id`/`output_index` pair events carry (found by identity: items are dicts)."""
    index = next(i for i, it in enumerate(output) if it is item)
    return {"item_id": item["id"], "output_index": index}


def new_call_item(tool: ServerTool | None, *, call_id: str, name: str) -> dict[str, Any]:
    shown = tool.items if tool is not None else None
    if isinstance(shown, McpCalls):
        return {
            "id": new_id("mcp_"),
            "type": "mcp_call",
            "status": "in_progress",
            "server_label": shown.server_label,
            "name": name,
            "arguments": "",
            "output": None,
            "error": None,
        }
    if isinstance(shown, WebSearchCalls):
        return {
            "id": new_id("ws_"),
            "type": "web_search_call",
            "status": "in_progress",
            "action": {"type": shown.action},
        }
    return {
        "id": new_item_id("function_call"),
        "type": "function_call",
        "status": "in_progress",
        "call_id": call_id,
        "name": name,
        "arguments": "",
    }


def arguments_delta(output: list[dict[str, Any]], call: Call, delta: str) -> list[Event]:
    kind = call.item["type"]
    if kind == "web_search_call":
        return []  # OpenAI streams no arguments for a search
    event = "response.function_call_arguments.delta"
    if kind == "mcp_call":
        event = "response.mcp_call_arguments.delta"
    return [{**where(output, call.item), "type": event, "delta": delta}]


def close_call(output: list[dict[str, Any]], call: Call) -> list[Event]:
    """The model finished the call: its arguments are complete."""
    item = call.item
    kind = item["type"]
    if kind == "web_search_call":
        item["action"] = _action(item["action"]["type"], call.arguments)
        return []
    item["arguments"] = call.arguments
    if kind == "mcp_call":
        # The item stays in progress until the tool has run.
        return [
            {
                **where(output, item),
                "type": "response.mcp_call_arguments.done",
                "arguments": call.arguments,
            }
        ]
    item.update(name=call.name, status="completed")
    return [
        {
            **where(output, item),
            "type": "response.function_call_arguments.done",
            "name": call.name,
            "arguments": call.arguments,
        },
        _item_done(output, item),
    ]


def _action(kind: str, arguments: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    args = parsed if isinstance(parsed, dict) else {}
    if kind == "open_page":
        url = args.get("url")
        return {"type": "open_page", "url": url if isinstance(url, str) else None}
    query = args.get("q", args.get("query"))
    return {"type": "search", "query": query if isinstance(query, str) else None}


def running(output: list[dict[str, Any]], call: Call) -> list[Event]:
    """Events as a server tool starts."""
    kind = call.item["type"]
    at = where(output, call.item)
    if kind == "web_search_call":
        return [
            {**at, "type": "response.web_search_call.in_progress"},
            {**at, "type": "response.web_search_call.searching"},
        ]
    if kind == "mcp_call":
        return [{**at, "type": "response.mcp_call.in_progress"}]
    return []


def finished(output: list[dict[str, Any]], call: Call, result: ToolOutput) -> list[Event]:
    """Record a server tool's result on its items, and the events that say so."""
    item = call.item
    kind = item["type"]
    status = "failed" if result.is_error else "completed"
    if kind == "function_call":
        answer = {
            "id": new_item_id("function_call_output"),
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": _model_text(result),
            "status": "completed",
        }
        output.append(answer)
        at = len(output) - 1
        return [
            {"type": "response.output_item.added", "output_index": at, "item": dict(answer)},
            _item_done(output, answer),
        ]
    events: list[Event] = []
    if kind == "mcp_call":
        if result.is_error:
            item["error"] = {
                "type": "mcp_tool_execution_error",
                "content": [{"type": "text", "text": result.text}],
            }
        else:
            item["output"] = result.text
        item["status"] = status
        events.append({**where(output, item), "type": f"response.mcp_call.{status}"})
    else:
        item.update(output=_model_text(result), status=status)
        if not result.is_error:  # OpenAI has no failed event for a search
            events.append({**where(output, item), "type": "response.web_search_call.completed"})
    return [*events, _item_done(output, item)]


def _item_done(output: list[dict[str, Any]], item: dict[str, Any]) -> Event:
    return {
        "type": "response.output_item.done",
        "output_index": where(output, item)["output_index"],
        "item": dict(item),
    }


def _model_text(result: ToolOutput) -> str:
    return f"Error: {result.text}" if result.is_error else result.text


def model_view(item: dict[str, Any]) -> tuple[str, dict[str, Any], str | None] | None:
    """A call item as the model sees it: (call ID, chat `tool_calls` entry, the tool result
    this item carries or None); None for an item the model can't be shown (a server call
    with no result: cut off, or replayed by a client without it)."""
    kind = item.get("type")
    if kind == "function_call":
        return item["call_id"], _chat_call(item["call_id"], item["name"], item["arguments"]), None
    if kind == "mcp_call":
        text = item.get("output")
        if not isinstance(text, str):
            text = _error_text(item.get("error"))
        if text is None:
            return None
        return item["id"], _chat_call(item["id"], item["name"], item["arguments"]), text
    if kind == "web_search_call":
        text = item.get("output")
        if not isinstance(text, str):
            return None
        action = item.get("action") or {}
        if action.get("type") == "open_page":
            name, args = "fetch", {"url": action.get("url")}
        else:
            name, args = "web_search", {"q": action.get("query")}
        return item["id"], _chat_call(item["id"], name, orjson.dumps(args).decode()), text
    return None


def _chat_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _error_text(error: Any) -> str | None:
    if isinstance(error, str):
        return f"Error: {error}"
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    if isinstance(message, str):
        return f"Error: {message}"
    content = error.get("content")
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "Error: " + "".join(t for t in texts if isinstance(t, str))
    return "Error: the tool failed."
