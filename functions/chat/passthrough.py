"""What model servers speak besides chat: audio, images, moderations, rerank and score,
passed through the router as they come (``Inference.call(relay=True)``) with the same
credentials, model permissions, limits, failover and usage ledger as chat completions.
JSON requests are decoded once to learn the model; multipart uploads (audio, images to
edit) stream to the model server as they arrive (``uploads``); answers — JSON, text,
audio or an event stream — stream back as the model server sends them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from functions.chat.uploads import open_upload
from functions.common.http import json_body
from functions.common.principal import require_project
from functions.services.identity import Identity
from functions.services.inference.requests import affinity_of, validate
from functions.services.inference.service import Inference
from functions.services.inference.streaming import BodyRelay
from functions.services.limits import current_raw_headers

H = TypeVar("H", bound=Callable[..., Awaitable[Response]])


class _Deps(Protocol):
    @property
    def identity(self) -> Identity: ...

    @property
    def inference(self) -> Inference: ...


async def _json(deps: _Deps, request: Request, operation: str) -> Response:
    principal = await deps.identity.authenticate(request)
    require_project(principal)
    body = await json_body(request)
    raw = await request.body()
    validate(operation, body)
    call = await deps.inference.call(
        principal, operation, body, raw, stream=False, affinity=affinity_of(body), relay=True
    )
    return BodyRelay(
        call.body, call.entry.write, current_raw_headers(), deps.inference.runtime.shutdown
    )


async def _upload(deps: _Deps, request: Request, operation: str) -> Response:
    principal = await deps.identity.authenticate(request)
    require_project(principal)
    model, upload = await open_upload(request)
    call = await deps.inference.call(
        principal, operation, {"model": model}, upload, stream=False, affinity=None, relay=True
    )
    return BodyRelay(
        call.body, call.entry.write, current_raw_headers(), deps.inference.runtime.shutdown
    )


# The handlers' OpenAPI docstrings share most of their text, so they are written here.
_ERRORS = """
      400: {description: Invalid request.}
      401: {description: Missing or invalid credentials.}
      404: {description: "Unknown model, or one this key may not use."}
      413: {description: The body is larger than JAN_MAX_BODY_BYTES.}
      429: {description: "A rate limit is reached, or a spend limit or token budget is used up."}
      502: {description: The model server failed.}
      503: {description: "No endpoint available, or the model server is busy."}"""


def _json_request(required: str) -> str:
    return f"""
      content:
        application/json:
          schema:
            type: object
            required: [model{required}]
            additionalProperties: true
            properties: {{model: {{type: string}}}}"""


_UPLOAD = """
      content:
        multipart/form-data:
          schema:
            type: object
            required: [model]
            additionalProperties: true
            properties:
              model: {type: string, description: "Before the file (as the SDKs send it)."}"""


def _describe(summary: str, tag: str, request: str, answer: str) -> Callable[[H], H]:
    def describe(handler: H) -> H:
        handler.__doc__ = (
            f"\n    summary: {json.dumps(summary)}\n    tags: [{tag}]"
            f"\n    requestBody:\n      required: true{request}"
            f"\n    responses:\n      200: {{description: {json.dumps(answer)}}}{_ERRORS}\n"
        )
        return handler

    return describe


@_describe("Generate speech from text", "audio", _json_request(", input"), "The audio, streamed.")
async def speech(deps: _Deps, request: Request) -> Response:
    return await _json(deps, request, "audio.speech")


@_describe(
    "Transcribe audio",
    "audio",
    _UPLOAD,
    "The transcription: JSON, text, or an event stream (stream=true).",
)
async def transcriptions(deps: _Deps, request: Request) -> Response:
    return await _upload(deps, request, "audio.transcriptions")


@_describe("Translate audio into English", "audio", _UPLOAD, "The translation.")
async def translations(deps: _Deps, request: Request) -> Response:
    return await _upload(deps, request, "audio.translations")


@_describe(
    "Create images", "images", _json_request(", prompt"), "The images (an event stream: stream)."
)
async def image_generations(deps: _Deps, request: Request) -> Response:
    return await _json(deps, request, "images.generations")


@_describe("Edit images", "images", _UPLOAD, "The edited images.")
async def image_edits(deps: _Deps, request: Request) -> Response:
    return await _upload(deps, request, "images.edits")


@_describe(
    "Classify text as potentially harmful", "moderations", _json_request(", input"), "Results."
)
async def moderations(deps: _Deps, request: Request) -> Response:
    return await _json(deps, request, "moderations")


@_describe(
    "Rerank documents by relevance to a query (Jan extension: vLLM's Cohere/Jina shape)",
    "rerank",
    _json_request(", query, documents"),
    "Each document's index and relevance_score, best first.",
)
async def rerank(deps: _Deps, request: Request) -> Response:
    return await _json(deps, request, "rerank")


@_describe(
    "Score pairs of texts (Jan extension: vLLM's shape)",
    "rerank",
    _json_request(""),
    "A score per pair.",
)
async def score(deps: _Deps, request: Request) -> Response:
    return await _json(deps, request, "score")
