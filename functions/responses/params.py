"""`POST /v1/responses` bodies, validated once into a typed request."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from functions.common.errors import InvalidRequest
from functions.common.principal import Principal, refuse_storing
from functions.services.conversations.items import (
    LOGPROBS,
    include_param,
    normalize_items,
    validate_metadata,
)
from functions.services.toolbox.server import function_tool


@dataclass(frozen=True)
class ResponseRequest:
    model: str
    input_items: list[dict[str, Any]]
    instructions: str | None
    previous_response_id: str | None
    conversation_id: str | None
    store: bool
    background: bool
    stream: bool
    temperature: float | None
    top_p: float | None
    max_output_tokens: int | None
    tools: list[dict[str, Any]]  # as echoed: function tools validated, others as given
    tool_choice: Any
    parallel_tool_calls: bool
    text: dict[str, Any]
    metadata: dict[str, str]
    user: str | None
    prompt_cache_key: str | None = None
    truncation: str = "disabled"  # or "auto": drop the oldest items to fit the context
    include: tuple[str, ...] = ()
    top_logprobs: int | None = None

    @property
    def logprobs(self) -> bool:
        """Whether the output text carries the model's log probabilities."""
        return LOGPROBS in self.include

    def echo(self) -> dict[str, Any]:
        """The request settings a response object repeats (stored as `params`)."""
        return {
            "model": self.model,
            "instructions": self.instructions,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "text": self.text,
            "store": self.store,
            "user": self.user,
            "prompt_cache_key": self.prompt_cache_key,
            "truncation": self.truncation,
            "include": list(self.include),
            "top_logprobs": self.top_logprobs,
        }

    @classmethod
    def from_stored(
        cls,
        echoed: dict[str, Any],
        *,
        input_items: list[dict[str, Any]],
        previous_response_id: str | None,
        conversation_id: str | None,
        metadata: dict[str, str],
    ) -> ResponseRequest:
        """A queued background request back from its stored ``echo()`` and row."""
        return cls(
            model=echoed.get("requested_model") or echoed["model"],
            input_items=input_items,
            instructions=echoed["instructions"],
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            store=True,
            background=True,
            stream=False,
            temperature=echoed["temperature"],
            top_p=echoed["top_p"],
            max_output_tokens=echoed["max_output_tokens"],
            tools=echoed["tools"],
            tool_choice=echoed["tool_choice"],
            parallel_tool_calls=echoed["parallel_tool_calls"],
            text=echoed["text"],
            metadata=metadata,
            user=echoed["user"],
            prompt_cache_key=echoed.get("prompt_cache_key"),
            truncation=echoed.get("truncation", "disabled"),
            include=tuple(echoed.get("include", ())),
            top_logprobs=echoed.get("top_logprobs"),
        )


def parse_request(body: dict[str, Any]) -> ResponseRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    previous = _optional_str(body, "previous_response_id")
    conversation = _conversation_id(body.get("conversation"))
    if previous and conversation:
        raise InvalidRequest(
            "Use either 'previous_response_id' or 'conversation', not both.",
            param="previous_response_id",
        )
    store = _bool(body, "store", True)
    background = _bool(body, "background", False)
    stream = _bool(body, "stream", False)
    if background and not store:
        raise InvalidRequest("Background responses must be stored ('store': true).", param="store")
    if background and stream:
        raise InvalidRequest(
            "Streaming a background response is not supported; poll it instead.", param="stream"
        )
    if conversation and not store:
        # Writing to a conversation is storing; `store: false` promises nothing is kept.
        raise InvalidRequest(
            "A response in a conversation is stored; drop 'store': false.", param="store"
        )
    return ResponseRequest(
        model=model,
        input_items=_input(body.get("input")),
        instructions=_optional_str(body, "instructions"),
        previous_response_id=previous,
        conversation_id=conversation,
        store=store,
        background=background,
        stream=stream,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        max_output_tokens=_max_tokens(body.get("max_output_tokens")),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice", "auto")),
        parallel_tool_calls=_bool(body, "parallel_tool_calls", True),
        text=_text(body.get("text")),
        metadata=validate_metadata(body.get("metadata")),
        user=_optional_str(body, "user"),
        prompt_cache_key=_optional_str(body, "prompt_cache_key"),
        truncation=_truncation(body.get("truncation")),
        include=_include(body.get("include")),
        top_logprobs=_top_logprobs(body.get("top_logprobs")),
    )


def under_retention(request: ResponseRequest, principal: Principal) -> ResponseRequest:
    """The request as the caller's data retention allows: under zero data retention it is
    never stored (``store`` false, whatever was asked), and what needs stored state —
    background runs, conversations, previous responses — is refused."""
    if not principal.zero_data_retention:
        return request
    for asked, what, param in (
        (request.background, "Background responses", "background"),
        (request.conversation_id, "Conversations", "conversation"),
        (request.previous_response_id, "'previous_response_id'", "previous_response_id"),
    ):
        if asked:
            refuse_storing(principal, what, param=param)
    return replace(request, store=False)


def _truncation(raw: Any) -> str:
    if raw is None:
        return "disabled"
    if raw not in ("auto", "disabled"):
        raise InvalidRequest("'truncation' must be 'auto' or 'disabled'.", param="truncation")
    return str(raw)


def _include(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise InvalidRequest("'include' must be an array of strings.", param="include")
    return include_param(raw)


def _top_logprobs(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 20:
        raise InvalidRequest(
            "'top_logprobs' must be an integer between 0 and 20.", param="top_logprobs"
        )
    return raw


def _input(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if raw is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    return normalize_items(raw, param="input")


def _conversation_id(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, dict):
        raw = raw.get("id")
    if not isinstance(raw, str) or not raw:
        raise InvalidRequest(
            "'conversation' must be a conversation ID or {\"id\": ...}.", param="conversation"
        )
    return raw


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    tools = []
    for i, spec in enumerate(raw):
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise InvalidRequest(
                f"'tools[{i}]' must be an object with a 'type'.", param=f"tools[{i}]"
            )
        tools.append(function_tool(spec, f"tools[{i}]") if spec["type"] == "function" else spec)
    return tools


def _tool_choice(raw: Any) -> Any:
    if raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return {"type": "function", "name": raw["name"]}
    raise InvalidRequest(
        "'tool_choice' must be 'auto', 'none', 'required' or a function.", param="tool_choice"
    )


def _text(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {"format": {"type": "text"}}
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise InvalidRequest(
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'.",
            param="text.format",
        )
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest("'text.format.schema' must be an object.", param="text.format.schema")
    return {"format": fmt}


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{key}' must be a string.", param=key)
    return value or None


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{key}' must be a boolean.", param=key)
    return value


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"'{key}' must be a number between {low} and {high}.", param=key)
    return float(value)


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(
            "'max_output_tokens' must be a positive integer.", param="max_output_tokens"
        )
    return value
