"""The `response` object as OpenAI shapes it, built from a stored row or a running one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from functions.common.errors import APIError

_DEFAULT_PARAMS: dict[str, Any] = {
    "model": None,
    "instructions": None,
    "temperature": None,
    "top_p": None,
    "max_output_tokens": None,
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "text": {"format": {"type": "text"}},
    "store": True,
    "user": None,
    "prompt_cache_key": None,
    "truncation": "disabled",
    "top_logprobs": None,
}


def _epoch(value: datetime | float | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)


def response_object(row: Any) -> dict[str, Any]:
    """`row` has the columns of the `responses` table (a Record, or a dict while running)."""
    params = {**_DEFAULT_PARAMS, **row["params"]}
    conversation_id = row["conversation_id"]
    response = {
        "id": row["id"],
        "object": "response",
        "created_at": _epoch(row["created_at"]),
        "status": row["status"],
        "background": row["background"],
        "completed_at": _epoch(row["completed_at"]),
        "error": row["error"],
        "incomplete_details": row["incomplete_details"],
        "instructions": params["instructions"],
        "max_output_tokens": params["max_output_tokens"],
        "model": params["model"],
        "output": row["output"],
        "parallel_tool_calls": params["parallel_tool_calls"],
        "previous_response_id": row["previous_response_id"],
        "conversation": {"id": conversation_id} if conversation_id else None,
        "reasoning": {"effort": None, "summary": None},
        "store": params["store"],
        "temperature": params["temperature"],
        "text": params["text"],
        "tool_choice": params["tool_choice"],
        "tools": params["tools"],
        "top_p": params["top_p"],
        "top_logprobs": params["top_logprobs"],
        "truncation": params["truncation"],
        "usage": row["usage"],
        "user": params["user"],
        "prompt_cache_key": params["prompt_cache_key"],
        "metadata": row["metadata"],
    }
    # OpenAI's document has neither of the first two as nullable: absent until known
    # (usage) or given (user); a prompt cache key likewise, when none was given.
    for key in ("usage", "user", "prompt_cache_key"):
        if response[key] is None:
            del response[key]
    return response


def usage_object(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


# The codes OpenAI's document allows in a response's ``error`` (``ResponseErrorCode``).
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


def response_error(exc: APIError) -> dict[str, Any]:
    """A failed response's ``error``: the failure's code where OpenAI's document has it,
    else the nearest of its codes (the message keeps the details)."""
    code = exc.code or exc.type
    if code not in _ERROR_CODES:
        if exc.status == 429:
            code = "rate_limit_exceeded"
        elif 400 <= exc.status < 500:
            code = "invalid_prompt"
        else:
            code = "server_error"
    return {"code": code, "message": exc.message}
