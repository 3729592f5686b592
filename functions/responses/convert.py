"""Responses items → a chat-completions request, which every upstream speaks."""

from __future__ import annotations

from typing import Any

from functions.responses.calls import CALL_TYPES, model_view
from functions.responses.params import ResponseRequest
from functions.services.conversations.items import item_text
from functions.services.toolbox.server import ServerTool, chat_tool


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for a history of items. Consecutive calls become one assistant message
    (parallel tool calls) followed by the results the server's calls carry; a call re-sent
    by the client after it is already in the history is not repeated."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    seen_calls: set[str] = set()
    results: list[dict[str, Any]] = []  # of the calls in the open assistant message

    def flush() -> None:
        messages.extend(results)
        results.clear()

    for item in items:
        kind = item.get("type")
        if kind in CALL_TYPES:
            view = model_view(item)
            if view is None or view[0] in seen_calls:
                continue
            call_id, call, result = view
            seen_calls.add(call_id)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                flush()
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            if result is not None:
                results.append({"role": "tool", "tool_call_id": call_id, "content": result})
            continue
        flush()
        if kind == "message":
            messages.append(_message(item))
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else item_text({"content": output})
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    flush()
    return messages


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = "system" if item["role"] == "developer" else item["role"]
    parts = item.get("content", [])
    if role == "user" and any(p.get("type") == "input_image" for p in parts):
        content: list[dict[str, Any]] = []
        for part in parts:
            if part.get("type") == "input_image" and part.get("image_url"):
                content.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
            elif "text" in part:
                content.append({"type": "text", "text": part["text"]})
        return {"role": role, "content": content}
    refusal = "".join(p.get("refusal", "") for p in parts if p.get("type") == "refusal")
    return {"role": role, "content": item_text(item) or refusal}


def chat_body(
    request: ResponseRequest,
    messages: list[dict[str, Any]],
    server_tools: dict[str, ServerTool],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("max_output_tokens", "max_tokens"),
        ("user", "user"),
    ):
        value = getattr(request, ours)
        if value is not None:
            body[theirs] = value
    if request.logprobs:  # `include: ["message.output_text.logprobs"]`
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs or 0
    tools = [
        chat_tool(t["name"], t.get("description"), t.get("parameters"))
        for t in request.tools
        if t["type"] == "function"
    ]
    tools += [chat_tool(t.name, t.description, t.parameters) for t in server_tools.values()]
    if tools:
        body["tools"] = tools
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice["name"]}}
            if isinstance(choice, dict)
            else choice
        )
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.text["format"]
    if fmt["type"] == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    return body
