"""Stored chat completions: ``store: true`` on a chat completion keeps it (and the request's
messages) for the caller, under an ID of ours that the answer carries.

Only a call that asks to be stored pays for it: its answer is re-encoded with our ID (a
stream: each chunk, as it passes, while the chunks are added up into the completion) and
written before its last bytes go out, so it can be read back as soon as the caller has it.
A call that does not ask goes through the proxy untouched. Rows are written with group
commit (``StoredWrites``). Storing is best effort: a write that fails is logged and the
caller still gets its answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from functions.chat import store
from functions.chat.completion_tally import CompletionTally
from functions.common import errors
from functions.common.db import Executor
from functions.common.http import JSON, json_body
from functions.common.ids import new_id
from functions.common.pagination import Page
from functions.common.principal import Owner, Principal
from functions.common.runtime import Runtime
from functions.services.conversations.items import validate_metadata
from functions.services.identity import Identity

log = logging.getLogger(__name__)


def wants_storing(body: dict[str, Any]) -> bool:
    """Whether a chat completion request asks to be stored (``store`` must be a boolean)."""
    value = body.get("store")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise errors.InvalidRequest("'store' must be a boolean.", param="store")
    return value


class StoredWrites:
    """Writes stored completions with group commit: the rows of the calls that finish
    while a write is in flight go together in the next one (one transaction, one round
    trip), so under load the gateway and PostgreSQL pay one write for many calls. Each
    call still waits for its own row, so it can be read back as soon as the caller has its
    answer. Built once with the chat area; the write runs in a task of its own, started
    when a row arrives and no write is in flight."""

    BATCH = 64  # rows per write at most

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def insert(self, row: tuple[Any, ...]) -> None:
        """Write one row made by ``store.row``; returns once it is committed."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((row, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_queued())
        await done

    async def _write_queued(self) -> None:
        batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.BATCH], self._queue[self.BATCH :]
                try:
                    await store.insert_many(self.runtime.db.writer, [r for r, _ in batch])
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0][1], exc)
                    else:
                        # One refused row (its user deleted meanwhile) must not lose the
                        # others: each on its own.
                        for one, done in batch:
                            try:
                                await store.insert_many(self.runtime.db.writer, [one])
                            except Exception as single:
                                _settle(done, single)
                            else:
                                _settle(done, None)
                    batch = []
                    continue
                for _, done in batch:
                    _settle(done, None)
                batch = []
        except BaseException:  # cancelled (the loop is closing): nobody waits forever
            for _, done in batch + self._queue:
                _settle(done, RuntimeError("the stored completions' writer stopped"))
            self._queue = []
            raise
        finally:
            self._writing = None


def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)


class StoredCall:
    """One chat completion to store: who made it, with what, and under which ID."""

    def __init__(self, writes: StoredWrites, principal: Principal, body: dict[str, Any]) -> None:
        self.writes = writes
        self.owner = Owner.of(principal)
        self.metadata = validate_metadata(body.get("metadata"))
        self.messages = body["messages"]
        self.id = new_id("chatcmpl-")

    async def keep_reply(self, body: bytes) -> bytes:
        """Store a non-streamed answer; the answer to send (with our ID)."""
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body  # not a completion: nothing to store
        if not isinstance(completion, dict):
            return body
        completion["id"] = self.id
        await self.save(completion)
        return orjson.dumps(completion)

    def tally(self, *, keep_usage_chunk: bool) -> CompletionTally:
        return CompletionTally(self.id, keep_usage_chunk=keep_usage_chunk)

    async def keep_stream(self, tally: CompletionTally) -> None:
        """Store what a stream that ended well added up to."""
        await self.save(tally.completion())

    async def save(self, completion: dict[str, Any]) -> None:
        """Write the completion (shielded: a client leaving now does not stop it)."""
        completion["metadata"] = self.metadata
        try:
            await asyncio.shield(self._write(completion))
        except Exception:
            log.warning("could not store a chat completion", exc_info=True)

    async def _write(self, completion: dict[str, Any]) -> None:
        await self.writes.insert(
            store.row(
                owner=self.owner,
                completion=completion,
                messages=self.messages,
                metadata=self.metadata,
            )
        )


# --- the stored completions' endpoints --------------------------------------------------
class _Deps(Protocol):
    @property
    def identity(self) -> Identity: ...

    @property
    def runtime(self) -> Runtime: ...


def _not_found(completion_id: str) -> errors.NotFound:
    return errors.NotFound(
        f"No stored chat completion found with id '{completion_id}'.", param="completion_id"
    )


def _render(row: asyncpg.Record) -> dict[str, Any]:
    completion: dict[str, Any] = row["completion"]
    return {**completion, "metadata": row["metadata"]}


async def _load(deps: _Deps, request: Request) -> tuple[Owner, asyncpg.Record]:
    owner = await deps.identity.owner(request)
    completion_id = request.path_params["completion_id"]
    row = await store.get(deps.runtime.db.writer, owner=owner, completion_id=completion_id)
    if row is None:
        raise _not_found(completion_id)
    return owner, row


def _metadata_filter(request: Request) -> dict[str, str]:
    """``metadata[key]=value`` query parameters (all must match)."""
    pairs = {
        key[9:-1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    return validate_metadata(pairs)


async def list_chat_completions(deps: _Deps, request: Request) -> Response:
    """
    summary: List stored chat completions
    tags: [chat]
    description: >-
      The caller's chat completions made with `store: true` (a project key sees its
      project's, a user their own), oldest first unless `order=desc`.
    parameters:
      - {name: model, in: query, schema: {type: string}}
      - name: metadata
        in: query
        style: deepObject
        description: "`metadata[key]=value`: only completions whose metadata has these pairs."
        schema: {type: object, additionalProperties: {type: string}}
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc], default: asc}}
    responses:
      200: {description: "A list of chat.completion objects."}
      400: {description: Bad filter or pagination parameters.}
    """
    owner = await deps.identity.owner(request)
    page = Page.of(request, default_order="asc")
    metadata = _metadata_filter(request)
    model = request.query_params.get("model") or None

    async def read(ex: Executor) -> list[asyncpg.Record]:
        after_seq = None
        if page.after is not None:
            after_seq = await store.seq_of(ex, owner=owner, completion_id=page.after)
            if after_seq is None:
                raise page.unknown_cursor("chat completion")
        return await store.listing(
            ex, owner=owner, page=page, after_seq=after_seq, model=model, metadata=metadata
        )

    return JSON(page.answer(await deps.runtime.db.read(read), _render))


async def get_chat_completion(deps: _Deps, request: Request) -> Response:
    """
    summary: Retrieve a stored chat completion
    tags: [chat]
    responses:
      200: {description: The chat.completion object (with its metadata).}
      404: {description: No such stored completion for this caller.}
    """
    _, row = await _load(deps, request)
    return JSON(_render(row))


async def update_chat_completion(deps: _Deps, request: Request) -> Response:
    """
    summary: Set a stored chat completion's metadata
    tags: [chat]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [metadata]
            properties:
              metadata: {type: object, nullable: true, additionalProperties: {type: string}}
    responses:
      200: {description: The chat.completion object.}
      400: {description: Bad metadata.}
      404: {description: No such stored completion for this caller.}
    """
    owner = await deps.identity.owner(request)
    body = await json_body(request)
    if "metadata" not in body:
        raise errors.InvalidRequest("Missing required parameter: 'metadata'.", param="metadata")
    metadata = validate_metadata(body["metadata"])
    completion_id = request.path_params["completion_id"]
    row = await store.update_metadata(
        deps.runtime.db.writer, owner=owner, completion_id=completion_id, metadata=metadata
    )
    if row is None:
        raise _not_found(completion_id)
    return JSON(_render(row))


async def delete_chat_completion(deps: _Deps, request: Request) -> Response:
    """
    summary: Delete a stored chat completion
    tags: [chat]
    responses:
      200: {description: "`{object: chat.completion.deleted, id, deleted: true}`"}
      404: {description: No such stored completion for this caller.}
    """
    owner = await deps.identity.owner(request)
    completion_id = request.path_params["completion_id"]
    if not await store.delete(deps.runtime.db.writer, owner=owner, completion_id=completion_id):
        raise _not_found(completion_id)
    return JSON({"object": "chat.completion.deleted", "id": completion_id, "deleted": True})


def _message(completion_id: str, index: int, message: Any) -> dict[str, Any]:
    """A request message as OpenAI lists it: text ``content``, and its parts, if it had
    parts, in ``content_parts``."""
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    parts = None
    if isinstance(content, list):
        parts = content
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        content = "".join(t for t in texts if isinstance(t, str)) or None
    out = {
        "id": f"{completion_id}-{index}",
        "role": message.get("role"),
        "content": content,
        "refusal": message.get("refusal"),
        "content_parts": parts,
    }
    out.update({k: message[k] for k in ("name", "tool_calls", "tool_call_id") if k in message})
    return out


async def list_chat_completion_messages(deps: _Deps, request: Request) -> Response:
    """
    summary: List the messages of a stored chat completion
    tags: [chat]
    description: "The request's messages, in order (`order=desc`: last first)."
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc], default: asc}}
    responses:
      200: {description: "A list of messages, each with its `id`."}
      400: {description: Bad pagination parameters.}
      404: {description: No such stored completion for this caller.}
    """
    _, row = await _load(deps, request)
    page = Page.of(request, default_order="asc")
    completion_id = row["id"]
    messages = [_message(completion_id, i, m) for i, m in enumerate(row["messages"])]
    if page.order == "desc":
        messages.reverse()
    if page.after is not None:
        ids = [m["id"] for m in messages]
        if page.after not in ids:
            raise page.unknown_cursor("message", within="this chat completion")
        messages = messages[ids.index(page.after) + 1 :]
    return JSON(page.answer(messages[: page.fetch], lambda m: m))
