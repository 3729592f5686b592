"""The `chat` area: OpenAI's model APIs (chat completions, completions, embeddings,
models) through the inference service (``functions.services.inference``)."""

from __future__ import annotations

from functions.chat import handlers as h
from functions.chat.handlers import ChatDeps
from functions.common.routing import Operation

__all__ = ["ROUTES", "ChatDeps"]

ROUTES: list[Operation[ChatDeps]] = [
    Operation("POST", "/v1/chat/completions", h.chat_completions),
    Operation("POST", "/v1/completions", h.completions),
    Operation("POST", "/v1/embeddings", h.embeddings),
    Operation("GET", "/v1/models", h.list_models),
    # Names such as ``org/model`` (common with vLLM) contain slashes.
    Operation("GET", "/v1/models/{model}", h.retrieve_model, match="/v1/models/{model:path}"),
]
