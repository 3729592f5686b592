"""What the gateway reads from a model request: the operation's upstream path, the few
checks it needs, the affinity key, and the usage an answer reports.

The request body is decoded once (to learn the model, whether to stream, and to validate
the little we must); unless the gateway has to change it, the original bytes are what
the upstream receives, so every field we do not know passes through untouched.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from functions.common import errors

PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    # Passed through as they come (``Inference.call(relay=True)``).
    "audio.speech": "/audio/speech",
    "audio.transcriptions": "/audio/transcriptions",
    "audio.translations": "/audio/translations",
    "images.generations": "/images/generations",
    "images.edits": "/images/edits",
    "moderations": "/moderations",
    "rerank": "/rerank",
    "score": "/score",
}
# vLLM's tokenizer (llama.cpp's and our predictor's take its shape too): served at the
# model server's root, not under its OpenAI base URL (``upstream_url``).
TOKENIZE_PATH = "/tokenize"


def upstream_url(base_url: str, path: str) -> str:
    """Where a call to ``path`` goes on an endpoint: under its base URL, except the
    tokenizer, at the base URL less its trailing ``/v1`` (``http://vllm:8000/v1`` →
    ``http://vllm:8000/tokenize``; the predictor's ``…/openai/v1`` → ``…/openai/tokenize``)."""
    if path == TOKENIZE_PATH:
        base_url = base_url.rstrip("/").removesuffix("/v1")
    return base_url + path


_REQUIRED = {
    "chat.completions": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "audio.speech": "input",
    "images.generations": "prompt",
    "moderations": "input",
    "rerank": "query",
}


def validate(operation: str, body: dict[str, Any]) -> bool:
    """The checks the gateway itself needs; returns whether the caller asked to stream."""
    field = _REQUIRED.get(operation)
    value = body.get(field) if field is not None else None
    if field is not None and value is None:
        raise errors.InvalidRequest(f"Missing required parameter: '{field}'.", param=field)
    if operation == "chat.completions" and (not isinstance(value, list) or not value):
        raise errors.InvalidRequest(
            "'messages' must be a non-empty array of messages.", param="messages"
        )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise errors.InvalidRequest("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise errors.InvalidRequest("'stream_options' must be an object.", param="stream_options")
    if operation == "embeddings" and stream:
        raise errors.InvalidRequest("Embeddings cannot be streamed.", param="stream")
    return stream is True


_ASK_USAGE = b',"stream_options":{"include_usage":true}}'


def with_upstream_usage(body: dict[str, Any], raw: bytes) -> tuple[bytes, bool]:
    """For a stream: the body to send upstream so it reports usage, and whether the
    client itself asked for the usage chunk."""
    if "stream_options" not in body and body:
        # The usual case: add the field to the client's own bytes rather than re-encode
        # the whole conversation. ``raw`` decoded to a non-empty object, so it ends in "}".
        return raw.rstrip()[:-1] + _ASK_USAGE, False
    options = body.get("stream_options") or {}
    if options.get("include_usage") is True:
        return raw, True
    body["stream_options"] = {**options, "include_usage": True}
    return orjson.dumps(body), False


def affinity_of(body: dict[str, Any]) -> str | None:
    """Which requests should land on the same endpoint (the engine's prompt cache)."""
    key = body.get("prompt_cache_key") or body.get("user")
    return key if isinstance(key, str) and key else None


_SESSION_KEY = re.compile(r"[!-~]{1,128}")  # visible ASCII: fits a header as it is
# The operations whose JSON bodies may carry the fields a provider declares it takes
# (``ProviderOptions``: ``priority``, ``prompt_cache_key``).
ENGINE_FIELD_OPERATIONS = frozenset({"chat.completions", "completions", "embeddings"})


def session_key(key: str) -> str:
    """An affinity key as the router hashes it and engines get it (``x-session-id``, the
    body's ``prompt_cache_key``): the key itself when it is short visible ASCII, else a
    digest of it (a header cannot carry every string, nor should it carry a long one)."""
    if _SESSION_KEY.fullmatch(key):
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def usage_of(body: bytes) -> dict[str, Any] | None:
    """An answer's usage in chat completions' terms (``prompt_tokens``,
    ``completion_tokens``): images and transcriptions count ``input_tokens`` and
    ``output_tokens``, rerank and score a ``total_tokens`` alone."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" not in usage and ("input_tokens" in usage or "total_tokens" in usage):
        return {
            "prompt_tokens": usage.get("input_tokens", usage.get("total_tokens")),
            "completion_tokens": usage.get("output_tokens", 0),
        }
    return usage
