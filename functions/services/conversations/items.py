"""Items as OpenAI's Conversations and Responses APIs shape them, validated once.

Clients send items loosely (``{"role": "user", "content": "hi"}``); we store and return
them in the full form (``type``, ``id``, ``status``, content parts), so every reader sees
one shape. Anything malformed is a 400 whose ``param`` points at the offending field
(``items[2].content[0].text``).

An ``item_reference`` (``{"type": "item_reference", "id": ...}``) is kept as such here and
replaced by a copy of the caller's stored item before use (``references.resolve``).
Server tool calls a client replays (``web_search_call``, ``mcp_call``, as our responses
return them) are accepted too, so ``input=previous.output + [...]`` works.
"""

from __future__ import annotations

import re
from typing import Any

from functions.common.errors import InvalidRequest
from functions.common.ids import new_id

MAX_ITEMS_PER_ADD = 20
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
TITLE_CHARS = 80
ITEM_PREFIXES = {
    "message": "msg_",
    "function_call": "fc_",
    "function_call_output": "fco_",
    "web_search_call": "ws_",
    "mcp_call": "mcp_",
}
WEB_ACTIONS = ("search", "open_page", "find_in_page")
# The `include` values OpenAI documents (Responses and Conversations).
INCLUDABLE = frozenset(
    {
        "web_search_call.action.sources",
        "web_search_call.results",
        "code_interpreter_call.outputs",
        "computer_call_output.output.image_url",
        "file_search_call.results",
        "message.input_image.image_url",
        "message.output_text.logprobs",
        "reasoning.encrypted_content",
    }
)
LOGPROBS = "message.output_text.logprobs"
# The values we honour: the output text's log probabilities (a response asks the model
# server for them; stored items keep them), and input images' URLs (kept with every input
# item anyway). The others need what a self-hosted model does not have (encrypted
# reasoning, OpenAI's hosted tools' results): asking for one is a 400, not a silent drop.
SUPPORTED_INCLUDES = frozenset({LOGPROBS, "message.input_image.image_url"})
_TEXT_PARTS = ("input_text", "output_text")
_WHITESPACE = re.compile(r"\s+")


def new_item_id(item_type: str) -> str:
    return new_id(ITEM_PREFIXES.get(item_type, "item_"))


def normalize_items(raw: Any, *, param: str, limit: int | None = None) -> list[dict[str, Any]]:
    """A list of client items in stored form, each with a fresh ID."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"'{param}' must be an array of items.", param=param)
    if limit is not None and len(raw) > limit:
        raise InvalidRequest(f"'{param}' may hold at most {limit} items.", param=param)
    return [normalize_item(item, param=f"{param}[{i}]") for i, item in enumerate(raw)]


def normalize_item(raw: Any, *, param: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    item_type = raw.get("type", "message" if "role" in raw else None)
    if item_type is None and "id" in raw:
        item_type = "item_reference"  # OpenAI's reference may leave out its type
    if item_type == "item_reference":
        return {"type": "item_reference", "id": _string(raw, "id", param)}
    if item_type in ("web_search_call", "mcp_call"):
        return _server_call(raw, item_type, param)
    if item_type == "message":
        return _message(raw, param)
    if item_type == "function_call":
        return {
            "type": "function_call",
            "id": new_item_id("function_call"),
            "call_id": _string(raw, "call_id", param),
            "name": _string(raw, "name", param),
            "arguments": _string(raw, "arguments", param, empty_ok=True),
            "status": "completed",
        }
    if item_type == "function_call_output":
        output = raw.get("output")
        if isinstance(output, list):
            output = _parts(output, f"{param}.output", default_text="input_text")
        elif not isinstance(output, str):
            raise InvalidRequest(
                f"'{param}.output' must be a string or an array of content parts.",
                param=f"{param}.output",
            )
        return {
            "type": "function_call_output",
            "id": new_item_id("function_call_output"),
            "call_id": _string(raw, "call_id", param),
            "output": output,
            "status": "completed",
        }
    if item_type is None:
        raise InvalidRequest(f"'{param}' needs a 'type' (or a 'role').", param=f"{param}.type")
    raise InvalidRequest(f"Item type {item_type!r} is not supported.", param=f"{param}.type")


def _server_call(raw: dict[str, Any], item_type: str, param: str) -> dict[str, Any]:
    """A replayed server tool call; `output` (the result the model read) is kept if given."""
    status = raw.get("status", "completed")
    if not isinstance(status, str):
        raise InvalidRequest(f"'{param}.status' must be a string.", param=f"{param}.status")
    output = raw.get("output")
    if output is not None and not isinstance(output, str):
        raise InvalidRequest(f"'{param}.output' must be a string.", param=f"{param}.output")
    item: dict[str, Any] = {"type": item_type, "id": new_item_id(item_type), "status": status}
    if item_type == "web_search_call":
        action = raw.get("action")
        if not isinstance(action, dict) or action.get("type") not in WEB_ACTIONS:
            raise InvalidRequest(
                f"'{param}.action.type' must be one of {', '.join(WEB_ACTIONS)}.",
                param=f"{param}.action",
            )
        item["action"] = action
        if output is not None:
            item["output"] = output
        return item
    error = raw.get("error")
    if error is not None and not isinstance(error, str | dict):
        raise InvalidRequest(f"'{param}.error' must be an object.", param=f"{param}.error")
    item.update(
        server_label=_string(raw, "server_label", param),
        name=_string(raw, "name", param),
        arguments=_string(raw, "arguments", param, empty_ok=True),
        output=output,
        error=error,
    )
    return item


def _message(raw: dict[str, Any], param: str) -> dict[str, Any]:
    role = raw.get("role")
    if role not in MESSAGE_ROLES:
        raise InvalidRequest(
            f"'{param}.role' must be one of {', '.join(MESSAGE_ROLES)}.", param=f"{param}.role"
        )
    text_type = "output_text" if role == "assistant" else "input_text"
    content = raw.get("content")
    if isinstance(content, str):
        parts = [_text_part(text_type, content)]
    elif isinstance(content, list):
        parts = _parts(content, f"{param}.content", default_text=text_type)
    else:
        raise InvalidRequest(
            f"'{param}.content' must be a string or an array of content parts.",
            param=f"{param}.content",
        )
    return {
        "type": "message",
        "id": new_item_id("message"),
        "status": "completed",
        "role": role,
        "content": parts,
    }


def _parts(raw: list[Any], param: str, *, default_text: str) -> list[dict[str, Any]]:
    parts = []
    for i, part in enumerate(raw):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        kind = part.get("type", default_text)
        if kind in _TEXT_PARTS:
            parts.append(_text_part(kind, _string(part, "text", where, empty_ok=True)))
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": _string(part, "refusal", where)})
        elif kind == "input_image":
            if not isinstance(part.get("image_url"), str) and not isinstance(
                part.get("file_id"), str
            ):
                raise InvalidRequest(
                    f"'{where}' needs an 'image_url' or a 'file_id'.", param=f"{where}.image_url"
                )
            parts.append(
                {
                    "type": "input_image",
                    "image_url": part.get("image_url"),
                    "file_id": part.get("file_id"),
                    "detail": part.get("detail", "auto"),
                }
            )
        else:
            raise InvalidRequest(f"Content part type {kind!r} is not supported.", param=where)
    return parts


def _text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": kind, "text": text}


def _string(raw: dict[str, Any], key: str, param: str, *, empty_ok: bool = False) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or (not value and not empty_ok):
        raise InvalidRequest(f"'{param}.{key}' must be a non-empty string.", param=f"{param}.{key}")
    return value


def item_text(item: dict[str, Any]) -> str:
    """The plain text of a message item (its text parts joined)."""
    return "".join(
        part.get("text", "") for part in item.get("content", ()) if part.get("type") in _TEXT_PARTS
    )


def title_from(items: list[dict[str, Any]]) -> str | None:
    """A conversation title: the first user message's text, on one line, shortened."""
    for item in items:
        if item.get("type") == "message" and item.get("role") == "user":
            text = _WHITESPACE.sub(" ", item_text(item)).strip()
            if text:
                return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"
    return None


def validate_metadata(raw: Any, *, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 string pairs, keys ≤ 64 and values ≤ 512 chars."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    if len(raw) > 16:
        raise InvalidRequest(f"'{param}' may hold at most 16 keys.", param=param)
    for key, value in raw.items():
        if len(key) > 64:
            raise InvalidRequest(f"'{param}' keys are at most 64 characters.", param=param)
        if not isinstance(value, str) or len(value) > 512:
            raise InvalidRequest(
                f"'{param}.{key}' must be a string of at most 512 characters.",
                param=f"{param}.{key}",
            )
    return dict(raw)


def include_param(values: list[str], *, param: str = "include") -> tuple[str, ...]:
    """The ``include`` values asked for (in a body or a query), each one we honour: a value
    OpenAI documents that we cannot honour is a 400 naming it, as is an unknown one."""
    for value in values:
        if value not in INCLUDABLE:
            raise InvalidRequest(f"Unknown '{param}' value {value!r}.", param=param)
        if value not in SUPPORTED_INCLUDES:
            raise InvalidRequest(
                f"'{param}' value {value!r} is not supported by this server; it supports "
                + ", ".join(repr(v) for v in sorted(SUPPORTED_INCLUDES))
                + ".",
                param=param,
            )
    return tuple(dict.fromkeys(values))
