"""The `conversations` area: OpenAI's Conversations API over PostgreSQL, plus Jan's
listing of a caller's conversations (`GET /v1/conversations`)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from functions.common.runtime import Runtime
from functions.conversations import handlers as h


def routes(runtime: Runtime) -> list[BaseRoute]:
    return [
        Route("/v1/conversations", h.create_conversation, methods=["POST"]),
        Route("/v1/conversations", h.list_conversations, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", h.get_conversation, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", h.update_conversation, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", h.delete_conversation, methods=["DELETE"]),
        Route("/v1/conversations/{conversation_id}/items", h.create_items, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}/items", h.list_items, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}/items/{item_id}", h.get_item, methods=["GET"]),
        Route(
            "/v1/conversations/{conversation_id}/items/{item_id}",
            h.delete_item,
            methods=["DELETE"],
        ),
    ]
