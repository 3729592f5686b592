"""HTTP handlers of the Conversations API (OpenAI's shapes) plus Jan's conversation list."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.common.db import Executor
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body, query_list
from functions.common.ids import new_id
from functions.common.pagination import Page, list_page
from functions.common.principal import Owner, refuse_storing
from functions.common.runtime import Runtime
from functions.services.conversations import references, store
from functions.services.conversations.items import (
    MAX_ITEMS_PER_ADD,
    include_param,
    normalize_items,
    validate_metadata,
)
from functions.services.identity import Identity


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")


@dataclass(frozen=True, slots=True)
class ConversationsDeps:
    """What the conversations area uses."""

    runtime: Runtime
    identity: Identity


async def create_conversation(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: Create a conversation
    tags: [conversations]
    description: Optionally with up to 20 initial items and metadata.
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              items: {type: array, items: {$ref: '#/components/schemas/InputItem'}}
              metadata: {type: object, additionalProperties: {type: string}}
    responses:
      200: {description: The conversation object.}
      400:
        description: >-
          Malformed items or metadata; or the project's data retention is
          zero_data_retention (code `zero_data_retention`: nothing is stored).
    """
    owner = await deps.identity.owner(request)
    refuse_storing(owner.principal, "Conversations")
    body = await json_body(request)
    items = normalize_items(body.get("items") or [], param="items", limit=MAX_ITEMS_PER_ADD)
    metadata = validate_metadata(body.get("metadata"))
    db = deps.runtime.db
    async with db.writer.acquire() as conn, conn.transaction():
        items = await references.resolve(conn, owner=owner, items=items, param="items")
        row = await store.create_conversation(
            conn, owner=owner, conversation_id=new_id("conv_"), metadata=metadata, items=items
        )
    return JSON(store.conversation_object(row))


async def list_conversations(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: List the caller's conversations (Jan extension)
    tags: [conversations]
    description: Newest first by default, each with a title taken from its first user message.
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: A list of conversation objects.}
      400: {description: Bad pagination parameters.}
    """
    owner = await deps.identity.owner(request)
    page = Page.of(request)

    async def read(ex: Executor) -> list[asyncpg.Record]:
        after_seq = None
        if page.after is not None:
            after_seq = await store.conversation_seq(ex, owner=owner, conversation_id=page.after)
            if after_seq is None:  # an empty page would read as "no more"
                raise page.unknown_cursor("conversation")
        return await store.list_conversations(ex, owner=owner, page=page, after_seq=after_seq)

    rows = await deps.runtime.db.read(read)
    return JSON(page.answer(rows, lambda r: store.conversation_object(r, with_title=True)))


async def get_conversation(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: Retrieve a conversation
    tags: [conversations]
    parameters:
      - {name: conversation_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The conversation object.}
      404: {description: No such conversation for this caller.}
    """
    owner = await deps.identity.owner(request)
    conversation_id = request.path_params["conversation_id"]
    row = await store.get_conversation(
        deps.runtime.db.writer, owner=owner, conversation_id=conversation_id
    )
    if row is None:
        raise _not_found(conversation_id)
    return JSON(store.conversation_object(row))


async def update_conversation(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: Update a conversation's metadata
    tags: [conversations]
    parameters:
      - {name: conversation_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [metadata]
            properties:
              metadata: {type: object, additionalProperties: {type: string}}
    responses:
      200: {description: The updated conversation object.}
      400: {description: Malformed metadata.}
      404: {description: No such conversation for this caller.}
    """
    owner = await deps.identity.owner(request)
    conversation_id = request.path_params["conversation_id"]
    body = await json_body(request)
    if "metadata" not in body:
        raise InvalidRequest("Missing required parameter: 'metadata'.", param="metadata")
    metadata = validate_metadata(body["metadata"])
    row = await store.update_metadata(
        deps.runtime.db.writer,
        owner=owner,
        conversation_id=conversation_id,
        metadata=metadata,
    )
    if row is None:
        raise _not_found(conversation_id)
    return JSON(store.conversation_object(row))


async def delete_conversation(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: Delete a conversation and its items
    tags: [conversations]
    parameters:
      - {name: conversation_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "`conversation.deleted`"}
      404: {description: No such conversation for this caller.}
    """
    owner = await deps.identity.owner(request)
    conversation_id = request.path_params["conversation_id"]
    deleted = await store.delete_conversation(
        deps.runtime.db.writer, owner=owner, conversation_id=conversation_id
    )
    if not deleted:
        raise _not_found(conversation_id)
    return JSON({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


async def _owned_conversation(
    request: Request, owner: Owner, conn: Executor, *, lock: bool
) -> asyncpg.Record:
    conversation_id: str = request.path_params["conversation_id"]
    row = await store.get_conversation(
        conn, owner=owner, conversation_id=conversation_id, lock=lock
    )
    if row is None:
        raise _not_found(conversation_id)
    return row


async def create_items(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: Add items to a conversation
    tags: [conversations]
    parameters:
      - {name: conversation_id, in: path, required: true, schema: {type: string}}
      - name: include
        in: query
        description: "As for `POST /v1/responses`: the values it cannot honour are a 400."
        schema: {type: array, items: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [items]
            properties:
              items: {type: array, maxItems: 20, items: {$ref: '#/components/schemas/InputItem'}}
    responses:
      200: {description: A list of the added items.}
      400:
        description: >-
          Malformed items; or the project's data retention is zero_data_retention (code
          `zero_data_retention`: nothing is stored).
      404: {description: No such conversation for this caller.}
    """
    owner = await deps.identity.owner(request)
    refuse_storing(owner.principal, "Conversation items", param="items")
    include_param(query_list(request, "include"))
    body = await json_body(request)
    if "items" not in body:
        raise InvalidRequest("Missing required parameter: 'items'.", param="items")
    items = normalize_items(body["items"], param="items", limit=MAX_ITEMS_PER_ADD)
    async with deps.runtime.db.writer.acquire() as conn, conn.transaction():
        conversation = await _owned_conversation(request, owner, conn, lock=True)
        items = await references.resolve(conn, owner=owner, items=items, param="items")
        await store.insert_items(conn, owner=owner, conversation_id=conversation["id"], items=items)
    return JSON(list_page(items, has_more=False))


async def list_items(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: List a conversation's items
    tags: [conversations]
    parameters:
      - {name: conversation_id, in: path, required: true, schema: {type: string}}
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
      - name: include
        in: query
        description: "As for `POST /v1/responses`: the values it cannot honour are a 400."
        schema: {type: array, items: {type: string}}
    responses:
      200: {description: A list of items.}
      400: {description: Bad pagination parameters.}
      404: {description: No such conversation for this caller.}
    """
    owner = await deps.identity.owner(request)
    include_param(query_list(request, "include"))
    page = Page.of(request)
    async with deps.runtime.db.writer.acquire() as conn:
        conversation_id = (await _owned_conversation(request, owner, conn, lock=False))["id"]
        after_seq = None
        if page.after is not None:
            after_seq = await store.item_seq(
                conn, owner=owner, conversation_id=conversation_id, item_id=page.after
            )
            if after_seq is None:  # an empty page would read as "no more"
                raise page.unknown_cursor("item", within="this conversation")
        items = await store.list_items(
            conn, owner=owner, conversation_id=conversation_id, page=page, after_seq=after_seq
        )
    return JSON(page.answer(items, lambda item: item))


async def get_item(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: Retrieve one item of a conversation
    tags: [conversations]
    parameters:
      - {name: conversation_id, in: path, required: true, schema: {type: string}}
      - {name: item_id, in: path, required: true, schema: {type: string}}
      - name: include
        in: query
        description: "As for `POST /v1/responses`: the values it cannot honour are a 400."
        schema: {type: array, items: {type: string}}
    responses:
      200: {description: The item.}
      404: {description: No such conversation or item for this caller.}
    """
    owner = await deps.identity.owner(request)
    include_param(query_list(request, "include"))
    item_id = request.path_params["item_id"]
    async with deps.runtime.db.writer.acquire() as conn:
        conversation_id = (await _owned_conversation(request, owner, conn, lock=False))["id"]
        item = await store.get_item(
            conn, owner=owner, conversation_id=conversation_id, item_id=item_id
        )
    if item is None:
        raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")
    return JSON(item)


async def delete_item(deps: ConversationsDeps, request: Request) -> Response:
    """
    summary: Delete one item of a conversation
    tags: [conversations]
    parameters:
      - {name: conversation_id, in: path, required: true, schema: {type: string}}
      - {name: item_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The conversation the item was removed from.}
      404: {description: No such conversation or item for this caller.}
    """
    owner = await deps.identity.owner(request)
    item_id = request.path_params["item_id"]
    async with deps.runtime.db.writer.acquire() as conn, conn.transaction():
        conversation = await _owned_conversation(request, owner, conn, lock=True)
        deleted = await store.delete_item(
            conn, owner=owner, conversation_id=conversation["id"], item_id=item_id
        )
    if not deleted:
        raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")
    return JSON(store.conversation_object(conversation))
