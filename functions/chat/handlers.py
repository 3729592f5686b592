"""The `chat` area's endpoints: OpenAI's model APIs in front of the router.

The request body is decoded once (to learn the model, whether to stream, and to validate
the little we must); unless the gateway has to change it, the original bytes are what
the upstream receives, so every field we do not know passes through untouched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.chat.stored import StoredCall, StoredWrites, wants_storing
from functions.common.http import JSON, json_body
from functions.common.principal import Principal, require_project
from functions.common.runtime import Runtime
from functions.services.identity import Identity
from functions.services.inference.requests import affinity_of, validate, with_upstream_usage
from functions.services.inference.service import Inference, ModelStream, fallback_headers
from functions.services.inference.sse import StreamTally
from functions.services.inference.streaming import SSERelay, StreamCall, StreamOutcome
from functions.services.limits import current_raw_headers


@dataclass(frozen=True, slots=True)
class ChatDeps:
    """What the chat area uses."""

    identity: Identity
    inference: Inference
    runtime: Runtime
    stored: StoredWrites  # stored chat completions' writer (group commit)


async def _proxy(deps: ChatDeps, request: Request, operation: str) -> Response:
    principal = await deps.identity.authenticate(request)
    require_project(principal)
    body = await json_body(request)
    raw = await request.body()  # the bytes json_body decoded (Starlette keeps them)
    stream = validate(operation, body)
    stored = None
    # Under zero data retention `store: true` behaves as `store: false` (as in Responses).
    if (
        operation == "chat.completions"
        and wants_storing(body)
        and not principal.zero_data_retention
    ):
        stored = StoredCall(deps.stored, principal, body)
    keep_usage = True
    if stream:
        raw, keep_usage = with_upstream_usage(body, raw)

    def relay(opened: tuple[ModelStream, list[tuple[bytes, bytes]]]) -> SSERelay:
        call, limits = opened
        if stored is None:
            tally = StreamTally(keep_usage_chunk=keep_usage)
            return SSERelay(
                call.stream, tally, call.entry.write, limits, shutdown=deps.runtime.shutdown
            )
        adding = stored.tally(keep_usage_chunk=keep_usage)
        complete = functools.partial(stored.keep_stream, adding)
        return SSERelay(
            call.stream, adding, call.entry.write, limits, complete, deps.runtime.shutdown
        )

    if stream:
        # The call is made as the response goes out: held while its model wakes, the
        # stream starts at once with keep-alive comments (``StreamCall``).
        keepalive = deps.runtime.settings.jan_stream_keepalive_seconds
        opening = functools.partial(_open_stream, deps, principal, operation, body, raw)
        return StreamCall(opening, relay, keepalive, _discard)
    call = await deps.inference.call(
        principal, operation, body, raw, stream=False, affinity=affinity_of(body)
    )
    assert not isinstance(call, ModelStream)
    # OpenAI's x-ratelimit-* (none when no limit applies), Jan's x-jan-model-fallback.
    limits = current_raw_headers() + fallback_headers()
    answer = call.body
    if stored is not None and call.status == 200:
        answer = await stored.keep_reply(answer)
    response = Response(answer, status_code=call.status, media_type="application/json")
    if limits:
        response.raw_headers.extend(limits)
    return response


async def _open_stream(
    deps: ChatDeps, principal: Principal, operation: str, body: dict[str, Any], raw: bytes
) -> tuple[ModelStream, list[tuple[bytes, bytes]]]:
    """The call that opens a stream, with the response headers its context knows then:
    OpenAI's x-ratelimit-* (none when no limit applies), Jan's x-jan-model-fallback."""
    call = await deps.inference.call(
        principal, operation, body, raw, stream=True, affinity=affinity_of(body)
    )
    assert isinstance(call, ModelStream)
    return call, current_raw_headers() + fallback_headers()


async def _discard(opened: tuple[ModelStream, list[tuple[bytes, bytes]]]) -> None:
    """A stream opened after its client left: closed, its ledger line a 499."""
    call, _ = opened
    with StreamOutcome(call.stream, StreamTally(keep_usage_chunk=True), call.entry.write):
        pass


# --- routes --------------------------------------------------------------------------
async def chat_completions(deps: ChatDeps, request: Request) -> Response:
    """
    summary: "Create a chat completion (OpenAI-compatible; streams with `stream: true`)"
    description: >-
      Jan extensions: `model` may be a model alias (the answer names the model it stands
      for); when every endpoint of the model fails before the first byte, the model
      fallback list applies and the answer carries `x-jan-model-fallback` (the models that
      failed, comma-separated). Both apply to completions and embeddings too.
    tags: [chat]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [model, messages]
            additionalProperties: true
            properties:
              model: {type: string}
              messages:
                type: array
                minItems: 1
                items:
                  type: object
                  required: [role]
                  properties:
                    role: {type: string, enum: [system, developer, user, assistant, tool]}
                    content:
                      nullable: true
                      oneOf:
                        - {type: string}
                        - {type: array, items: {type: object, properties: {type: {type: string}}}}
                    name: {type: string}
                    tool_call_id: {type: string}
                    tool_calls: {type: array, items: {type: object}}
              stream: {type: boolean}
              stream_options: {type: object, properties: {include_usage: {type: boolean}}}
              tools: {type: array, items: {type: object}}
              tool_choice: {}
              response_format: {type: object}
              n: {type: integer}
              stop: {}
              seed: {type: integer}
              max_tokens: {type: integer}
              max_completion_tokens: {type: integer}
              prompt_cache_key: {type: string, description: "Affinity key (prompt cache reuse)."}
              store:
                type: boolean
                description: >-
                  Keep the completion and the request's messages, for
                  `GET /v1/chat/completions/{completion_id}` and its list; the answer's `id`
                  (every chunk's, streamed) is then the stored completion's. Ignored (as
                  `false`) when the project's data retention is `zero_data_retention`.
              metadata:
                type: object
                additionalProperties: {type: string}
                description: Up to 16 pairs kept with a stored completion (filters its list).
    responses:
      200:
        description: A chat.completion object, or `text/event-stream` of chat.completion.chunk.
      400: {description: Invalid request (including a prompt longer than the model's context).}
      401: {description: Missing or invalid credentials.}
      404: {description: "Unknown model, or one this key may not use."}
      429:
        description: >-
          A rate limit is reached (`rate_limit_exceeded`), or a spend limit or token
          budget is used up (`insufficient_quota`); both with `Retry-After`.
      502: {description: The model server failed.}
      503: {description: "No endpoint available, or the model server is busy."}
    """
    return await _proxy(deps, request, "chat.completions")


async def completions(deps: ChatDeps, request: Request) -> Response:
    """
    summary: Create a (legacy) text completion
    tags: [chat]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [model, prompt]
            additionalProperties: true
            properties:
              model: {type: string}
              prompt: {}
              stream: {type: boolean}
              max_tokens: {type: integer}
    responses:
      200: {description: "A text_completion object, or an event stream."}
      400: {description: Invalid request.}
      401: {description: Missing or invalid credentials.}
      404: {description: Unknown model.}
      429:
        description: >-
          A rate limit is reached (`rate_limit_exceeded`), or a spend limit or token
          budget is used up (`insufficient_quota`); both with `Retry-After`.
    """
    return await _proxy(deps, request, "completions")


async def embeddings(deps: ChatDeps, request: Request) -> Response:
    """
    summary: Create embeddings
    tags: [chat]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [model, input]
            additionalProperties: true
            properties:
              model: {type: string}
              input: {}
    responses:
      200: {description: A list of embedding objects.}
      400: {description: Invalid request.}
      401: {description: Missing or invalid credentials.}
      404: {description: Unknown model.}
      429:
        description: >-
          A rate limit is reached (`rate_limit_exceeded`), or a spend limit or token
          budget is used up (`insufficient_quota`); both with `Retry-After`.
    """
    return await _proxy(deps, request, "embeddings")


async def list_models(deps: ChatDeps, request: Request) -> Response:
    """
    summary: List the models this caller may use
    description: >-
      Also lists the caller's model aliases (a Jan extension) whose model it may use: an
      alias's entry has `jan_alias_of`, the model it stands for.
    tags: [chat]
    responses:
      200: {description: "`{object: list, data: [model]}`"}
      401: {description: Missing or invalid credentials.}
    """
    principal = await deps.identity.authenticate(request)
    require_project(principal)
    svc = deps.inference
    models = await svc.models_for(principal)
    return JSON({"object": "list", "data": [route.card(name) for name, route in models]})


async def retrieve_model(deps: ChatDeps, request: Request) -> Response:
    """
    summary: Retrieve a model
    description: "A model alias (Jan extension) answers with `jan_alias_of`, its model."
    tags: [chat]
    parameters:
      - {name: model, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: A model object.}
      401: {description: Missing or invalid credentials.}
      404: {description: "Unknown model, or one this key may not use."}
    """
    principal = await deps.identity.authenticate(request)
    require_project(principal)
    svc = deps.inference
    name = request.path_params["model"]
    route = await svc.route_for(principal, name)
    return JSON(route.card(name))
