"""The `chat` area's endpoints: OpenAI's model APIs in front of the router.

The request body is decoded once (to learn the model, whether to stream, and to validate
the little we must); unless the gateway has to change it, the original bytes are what
the upstream receives, so every field we do not know passes through untouched.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from functions.common import errors
from functions.common.http import JSON, json_body, runtime_of
from functions.common.principal import Principal
from functions.services.identity import authenticate, require_project
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.service import Inference, inference
from functions.services.inference.sse import StreamTally
from functions.services.inference.streaming import SSERelay

PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
_REQUIRED = {"chat.completions": "messages", "completions": "prompt", "embeddings": "input"}


def validate(operation: str, body: dict[str, Any]) -> bool:
    """The checks the gateway itself needs; returns whether the caller asked to stream."""
    field = _REQUIRED[operation]
    value = body.get(field)
    if value is None:
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


async def _proxy(request: Request, operation: str) -> Response:
    principal = await authenticate(request)
    require_project(principal)
    svc = await inference(runtime_of(request))
    body = await json_body(request)
    raw = await request.body()  # the bytes json_body decoded (Starlette keeps them)
    stream = validate(operation, body)
    route = await svc.route_for(principal, body.get("model"))
    return await forward(
        svc, principal, route, operation, raw, body, stream=stream, affinity=affinity_of(body)
    )


async def forward(
    svc: Inference,
    principal: Principal,
    route: ModelRoute,
    operation: str,
    raw: bytes,
    body: dict[str, Any],
    *,
    stream: bool,
    affinity: str | None,
) -> Response | SSERelay:
    entry = svc.ledger(principal, route, operation, streamed=stream)
    path = PATHS[operation]
    if stream:
        upstream_body, keep_usage = with_upstream_usage(body, raw)
        try:
            opened = await svc.router.open_stream(route, path, upstream_body, affinity=affinity)
        except errors.APIError as exc:
            entry.write(exc.status)
            raise
        entry.first_event(opened.endpoint.base_url)
        return SSERelay(opened, StreamTally(keep_usage_chunk=keep_usage), entry.write)
    try:
        reply = await svc.router.send(route, path, raw, affinity=affinity)
    except errors.APIError as exc:
        entry.write(exc.status)
        raise
    entry.endpoint = reply.endpoint.base_url
    entry.write(reply.status, usage_of(reply.body))
    return Response(reply.body, status_code=reply.status, media_type="application/json")


def usage_of(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


# --- routes --------------------------------------------------------------------------
async def chat_completions(request: Request) -> Response:
    """
    summary: "Create a chat completion (OpenAI-compatible; streams with `stream: true`)"
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
    responses:
      200:
        description: A chat.completion object, or `text/event-stream` of chat.completion.chunk.
      400: {description: Invalid request (including a prompt longer than the model's context).}
      401: {description: Missing or invalid credentials.}
      404: {description: "Unknown model, or one this key may not use."}
      502: {description: The model server failed.}
      503: {description: "No endpoint available, or the model server is busy."}
    """
    return await _proxy(request, "chat.completions")


async def completions(request: Request) -> Response:
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
    """
    return await _proxy(request, "completions")


async def embeddings(request: Request) -> Response:
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
    """
    return await _proxy(request, "embeddings")


async def list_models(request: Request) -> Response:
    """
    summary: List the models this caller may use
    tags: [chat]
    responses:
      200: {description: "`{object: list, data: [model]}`"}
      401: {description: Missing or invalid credentials.}
    """
    principal = await authenticate(request)
    require_project(principal)
    svc = await inference(runtime_of(request))
    return JSON({"object": "list", "data": [r.card() for r in svc.models_for(principal)]})


async def retrieve_model(request: Request) -> Response:
    """
    summary: Retrieve a model
    tags: [chat]
    parameters:
      - {name: model, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: A model object.}
      401: {description: Missing or invalid credentials.}
      404: {description: "Unknown model, or one this key may not use."}
    """
    principal = await authenticate(request)
    require_project(principal)
    svc = await inference(runtime_of(request))
    route = await svc.route_for(principal, request.path_params["model"])
    return JSON(route.card())
