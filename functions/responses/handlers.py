"""HTTP handlers of the Responses API."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from functions.common import errors
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body, query_list
from functions.common.pagination import Page
from functions.common.principal import Principal
from functions.common.runtime import Runtime
from functions.responses import store
from functions.responses.calls import Event
from functions.responses.context import count_prompt, fit_items, request_body
from functions.responses.engine import run_events
from functions.responses.model import ChatModel
from functions.responses.objects import response_object
from functions.responses.params import parse_request, under_retention
from functions.responses.service import ForegroundRecorder, enqueue_background, prepare_run
from functions.responses.worker import BackgroundWorker
from functions.services.conversations.items import include_param
from functions.services.identity import Identity
from functions.services.inference.streaming import StreamCall, until_gone
from functions.services.limits import current_headers
from functions.services.toolbox.server import ToolRegistry


@dataclass(frozen=True, slots=True)
class ResponsesDeps:
    """What the responses area uses."""

    runtime: Runtime
    identity: Identity
    model: ChatModel
    tools: ToolRegistry
    worker: BackgroundWorker


async def _model_for(deps: ResponsesDeps, principal: Principal, name: str) -> str:
    """The model a request names, an alias resolved first (permissions, the run and the
    response see its model); 404 where the caller may not use it."""
    model = await deps.model.model_named(principal, name)
    if not principal.may_use_model(model):
        raise NotFound(
            f"The model `{name}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return model


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


async def create_response(deps: ResponsesDeps, request: Request) -> Response:
    """
    summary: Create a model response
    tags: [responses]
    description: >
      Input as a string or items; history from `previous_response_id` or `conversation`;
      function tools; `stream` for OpenAI's typed SSE events; `background` to run it
      detached (poll with GET, stop with cancel). Under zero data retention (the
      project's or organization's `/data_retention`) a response is never stored, as with
      `store: false`, and `background`, `conversation` and `previous_response_id` are
      refused (400, code `zero_data_retention`). Model calls keep a prompt-cache
      affinity key (one endpoint, forwarded as `x-session-id`): `prompt_cache_key`, else
      that of the `previous_response_id` chain's first response, else the conversation,
      else `user`. `model` in the answer names the model that served (a fallback's).
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [model, input]
            properties:
              model: {type: string}
              input:
                oneOf:
                  - {type: string}
                  - {type: array, items: {$ref: '#/components/schemas/InputItem'}}
              instructions: {type: string}
              previous_response_id: {type: string}
              conversation: {oneOf: [{type: string}, {type: object}]}
              store: {type: boolean, default: true}
              background: {type: boolean, default: false}
              stream: {type: boolean, default: false}
              temperature: {type: number}
              top_p: {type: number}
              max_output_tokens: {type: integer}
              tools: {type: array, items: {type: object}}
              metadata: {type: object, additionalProperties: {type: string}}
              prompt_cache_key: {type: string}
              user: {type: string}
              truncation:
                type: string
                enum: [auto, disabled]
                default: disabled
                description: >
                  `auto`: drop items from the beginning of the history until the prompt,
                  with room for `max_output_tokens`, fits the context window the model
                  server reports (vLLM's `/tokenize` answers `max_model_len`; else the
                  provider's declared window or its `/models`'); where none is known,
                  nothing is dropped.
              include:
                type: array
                description: >
                  `message.output_text.logprobs` (the model server's token log
                  probabilities, with `top_logprobs` alternatives) and
                  `message.input_image.image_url` (always kept). The other values
                  OpenAI documents are answered with a 400 naming `include`.
                items: {type: string}
              top_logprobs: {type: integer, minimum: 0, maximum: 20}
    responses:
      200: {description: "The response object, or an event stream when `stream` is true."}
      400: {description: "Invalid request, or storage refused under zero data retention."}
      404: {description: "Unknown model, conversation or previous response."}
      429:
        description: >
          `background`: the project or the caller already has as many background
          responses queued or running as allowed (Retry-After says when to try again).
          A rate limit is reached before the first round (`rate_limit_exceeded`), or a
          spend limit or token budget is used up (`insufficient_quota`), with
          `Retry-After`; a later round refused fails the response with that error.
    """
    owner = await deps.identity.owner(request)
    body = await json_body(request)
    params = under_retention(parse_request(body), owner.principal)
    params = replace(params, model=await _model_for(deps, owner.principal, params.model))
    runtime = deps.runtime
    run = await prepare_run(runtime, deps.tools, owner=owner, request=params)
    if params.background:
        await enqueue_background(runtime, run)
        deps.worker.wake()
        return JSON(run.snapshot())

    events = run_events(run, deps.model, ForegroundRecorder(runtime))
    if params.stream:
        # The first event opens the model call, made as the response goes out: an upstream
        # that refuses us is still a plain HTTP error; held while its model wakes, the
        # stream starts at once with keep-alive comments (``StreamCall``).
        return StreamCall(
            functools.partial(anext, events),
            # The x-ratelimit-* headers of the first round (the only one before they go).
            lambda first: EventStream(_sse(first, events), current_headers()),
            runtime.settings.jan_stream_keepalive_seconds,
            lambda _first: events.aclose(),
            _error_end,
        )
    first = await anext(events)  # an upstream that refuses us is still a plain HTTP error
    last = first
    async with contextlib.aclosing(events):
        async for event in events:
            last = event
    final = last["response"]
    if final["status"] == "failed":
        raise run.failure or errors.internal_error()
    return JSON(final, headers=current_headers())  # of the last round


# The fields of a count request (OpenAI's ``TokenCountsBody``); others are not part of it.
_COUNTED = (
    "model", "input", "previous_response_id", "conversation", "instructions", "tools",
    "tool_choice", "parallel_tool_calls", "text", "truncation",
)  # fmt: skip
# What stands for the model when none is named (the count is then an estimate).
_ANY_MODEL = "-"


async def count_input_tokens(deps: ResponsesDeps, request: Request) -> Response:
    """
    summary: Get input token counts
    tags: [responses]
    description: >
      How many input tokens a `POST /v1/responses` with these fields would use: the
      same prompt the response would send (instructions, input items, the history of
      `previous_response_id` or `conversation`, function and server tools, and with
      `truncation: auto` the items that fit the context window), counted by the model
      server's own tokenizer where it has one (vLLM's `/tokenize`; Jan's predictor
      has it). Where none answers, or no `model` is named, the count is an estimate
      (one token per four bytes of the prompt) and the answer says so with
      `jan_estimated: true` (a Jan extension). A count is not a model call: it uses no
      rate limit and is not in the usage ledger.
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              model: {type: string, nullable: true}
              input:
                nullable: true
                oneOf:
                  - {type: string}
                  - {type: array, items: {$ref: '#/components/schemas/InputItem'}}
              instructions: {type: string, nullable: true}
              previous_response_id: {type: string, nullable: true}
              conversation: {oneOf: [{type: string}, {type: object}], nullable: true}
              tools: {type: array, items: {type: object}, nullable: true}
              tool_choice: {nullable: true}
              parallel_tool_calls: {type: boolean, nullable: true}
              text: {type: object, nullable: true}
              truncation: {type: string, enum: [auto, disabled], nullable: true}
    responses:
      200:
        description: The count.
        content:
          application/json:
            schema:
              type: object
              required: [object, input_tokens]
              properties:
                object: {type: string, enum: [response.input_tokens]}
                input_tokens: {type: integer}
                jan_estimated:
                  type: boolean
                  description: >
                    Jan extension, present (true) only when no tokenizer counted: an
                    estimate of one token per four bytes.
      400: {description: "Invalid fields, or history refused under zero data retention."}
      404: {description: "Unknown model, conversation or previous response."}
    """
    owner = await deps.identity.owner(request)
    body = await json_body(request)
    name = body.get("model")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidRequest("'model' must be a model's name.", param="model")
    fields = {k: body[k] for k in _COUNTED if body.get(k) is not None}
    fields.update(model=name or _ANY_MODEL, input=fields.get("input", []))
    params = under_retention(parse_request(fields), owner.principal)
    principal = owner.principal
    if name:
        params = replace(params, model=await _model_for(deps, principal, name))
    run = await prepare_run(deps.runtime, deps.tools, owner=owner, request=params)
    items = [*run.history, *run.request.input_items]
    if name:
        items = await fit_items(deps.model, principal, run.request, items, run.server_tools)
    prompt = request_body(run.request, items, run.server_tools)
    count = await count_prompt(deps.model, principal if name else None, prompt)
    answer: dict[str, Any] = {"object": "response.input_tokens", "input_tokens": count.tokens}
    if count.estimated:
        answer["jan_estimated"] = True
    return JSON(answer)


class EventStream(StreamingResponse):
    """Server-sent events that stop the run however the stream ends: Starlette cancels a
    stream whose client went away, but leaves a generator waiting at a send unclosed."""

    def __init__(
        self, frames: AsyncGenerator[bytes, None], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            frames,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
        )
        self.frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.frames.aclose()

    async def resume(self, receive: Receive, send: Send) -> None:
        """The events of a stream whose response has started already (``StreamCall``'s
        keep-alives while the model woke)."""

        async def relay() -> None:
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await until_gone(receive, relay())
        finally:
            with anyio.CancelScope(shield=True):
                await self.frames.aclose()


def _error_end(error: errors.APIError) -> bytes:
    """How a response's stream ends on an error before its first event: OpenAI's `error`
    event."""
    detail = error.body()["error"]
    return _frame(
        {
            "type": "error",
            "code": detail.get("code"),
            "message": detail.get("message"),
            "param": detail.get("param"),
            "sequence_number": 0,
        }
    )


async def _sse(first: Event, rest: AsyncGenerator[Event, None]) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(rest):  # closing the frames closes the run
        yield _frame(first)
        async for event in rest:
            yield _frame(event)


def _frame(event: Event) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def get_response(deps: ResponsesDeps, request: Request) -> Response:
    """
    summary: Retrieve a response
    tags: [responses]
    parameters:
      - {name: response_id, in: path, required: true, schema: {type: string}}
      - name: include
        in: query
        description: "As for `POST /v1/responses`: the values it cannot honour are a 400."
        schema: {type: array, items: {type: string}}
    responses:
      200: {description: The response object.}
      404: {description: No such response for this caller.}
    """
    owner = await deps.identity.owner(request)
    include_param(query_list(request, "include"))
    response_id = request.path_params["response_id"]
    row = await store.get_response(deps.runtime.db.writer, owner=owner, response_id=response_id)
    if row is None:
        raise _not_found(response_id)
    return JSON(response_object(row))


async def delete_response(deps: ResponsesDeps, request: Request) -> Response:
    """
    summary: Delete a response
    tags: [responses]
    parameters:
      - {name: response_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "`response.deleted`"}
      404: {description: No such response for this caller.}
    """
    owner = await deps.identity.owner(request)
    response_id = request.path_params["response_id"]
    if not await store.delete_response(
        deps.runtime.db.writer, owner=owner, response_id=response_id
    ):
        raise _not_found(response_id)
    return JSON({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(deps: ResponsesDeps, request: Request) -> Response:
    """
    summary: List a response's input items
    tags: [responses]
    parameters:
      - {name: response_id, in: path, required: true, schema: {type: string}}
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
      404: {description: No such response for this caller.}
    """
    owner = await deps.identity.owner(request)
    include_param(query_list(request, "include"))
    response_id = request.path_params["response_id"]
    page = Page.of(request)
    async with deps.runtime.db.writer.acquire() as conn:
        if await store.get_response(conn, owner=owner, response_id=response_id) is None:
            raise _not_found(response_id)
        after_seq = None
        if page.after is not None:
            after_seq = await store.input_item_seq(
                conn, owner=owner, response_id=response_id, item_id=page.after
            )
            if after_seq is None:  # an empty page would read as "no more"
                raise page.unknown_cursor("input item", within="this response")
        items = await store.list_input_items(
            conn, owner=owner, response_id=response_id, page=page, after_seq=after_seq
        )
    return JSON(page.answer(items, lambda item: item))


async def cancel_response(deps: ResponsesDeps, request: Request) -> Response:
    """
    summary: Cancel a background response
    tags: [responses]
    parameters:
      - {name: response_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The cancelled response object.}
      400: {description: "Not a background response, or already finished."}
      404: {description: No such response for this caller.}
    """
    owner = await deps.identity.owner(request)
    response_id = request.path_params["response_id"]
    async with deps.runtime.db.writer.acquire() as conn:
        row = await store.cancel_response(conn, owner=owner, response_id=response_id)
        if row is None:
            row = await store.get_response(conn, owner=owner, response_id=response_id)
    if row is None:
        raise _not_found(response_id)
    if not row["background"]:
        raise InvalidRequest(
            "Only responses created with background=true can be cancelled.",
            param="response_id",
        )
    if row["status"] not in ("cancelled",):
        raise InvalidRequest(
            f"Cannot cancel a response that is already {row['status']}.", param="response_id"
        )
    return JSON(response_object(row))
