"""The `conversations` area: OpenAI's Conversations API over PostgreSQL, plus Jan's
listing of a caller's conversations (`GET /v1/conversations`). The storage is the shared
``functions.services.conversations`` (the Responses API writes to it too)."""

from __future__ import annotations

from functions.common.routing import Operation
from functions.conversations import handlers as h
from functions.conversations.handlers import ConversationsDeps

__all__ = ["ROUTES", "ConversationsDeps"]

_ONE = "/v1/conversations/{conversation_id}"
ROUTES: list[Operation[ConversationsDeps]] = [
    Operation("POST", "/v1/conversations", h.create_conversation),
    Operation("GET", "/v1/conversations", h.list_conversations),
    Operation("GET", _ONE, h.get_conversation),
    Operation("POST", _ONE, h.update_conversation),
    Operation("DELETE", _ONE, h.delete_conversation),
    Operation("POST", _ONE + "/items", h.create_items),
    Operation("GET", _ONE + "/items", h.list_items),
    Operation("GET", _ONE + "/items/{item_id}", h.get_item),
    Operation("DELETE", _ONE + "/items/{item_id}", h.delete_item),
]
