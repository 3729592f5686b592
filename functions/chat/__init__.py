"""The `chat` area: OpenAI's model APIs (chat completions, stored ones included,
completions, embeddings, models; audio, images, moderations, rerank and score passed
through) by the inference service (``functions.services.inference``)."""

from __future__ import annotations

from functions.chat import handlers as h
from functions.chat import passthrough, stored
from functions.chat.handlers import ChatDeps
from functions.chat.stored import StoredWrites
from functions.common.routing import Operation

__all__ = ["ROUTES", "ChatDeps", "StoredWrites"]

ROUTES: list[Operation[ChatDeps]] = [
    Operation("POST", "/v1/chat/completions", h.chat_completions),
    Operation("GET", "/v1/chat/completions", stored.list_chat_completions),
    Operation("GET", "/v1/chat/completions/{completion_id}", stored.get_chat_completion),
    Operation("POST", "/v1/chat/completions/{completion_id}", stored.update_chat_completion),
    Operation("DELETE", "/v1/chat/completions/{completion_id}", stored.delete_chat_completion),
    Operation(
        "GET",
        "/v1/chat/completions/{completion_id}/messages",
        stored.list_chat_completion_messages,
    ),
    Operation("POST", "/v1/completions", h.completions),
    Operation("POST", "/v1/embeddings", h.embeddings),
    Operation("POST", "/v1/audio/speech", passthrough.speech),
    Operation("POST", "/v1/audio/transcriptions", passthrough.transcriptions),
    Operation("POST", "/v1/audio/translations", passthrough.translations),
    Operation("POST", "/v1/images/generations", passthrough.image_generations),
    Operation("POST", "/v1/images/edits", passthrough.image_edits),
    Operation("POST", "/v1/moderations", passthrough.moderations),
    Operation("POST", "/v1/rerank", passthrough.rerank),
    Operation("POST", "/v1/score", passthrough.score),
    Operation("GET", "/v1/models", h.list_models),
    # Names such as ``org/model`` (common with vLLM) contain slashes.
    Operation("GET", "/v1/models/{model}", h.retrieve_model, match="/v1/models/{model:path}"),
]
