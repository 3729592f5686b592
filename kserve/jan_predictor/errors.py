"""Errors: exception classes that carry their HTTP shape, and the one place that renders them.

Every failure reaches the client as OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``. Anything unexpected becomes a generic 500
whose cause is logged here and never sent.
"""

from __future__ import annotations

import logging
import re

import jinja2
import pydantic
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("jan_predictor")


class APIError(Exception):
    """An error with a public message, rendered as OpenAI's error envelope."""

    status_code = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        """The OpenAI error envelope for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(APIError):
    """The caller's request is malformed or asks for something this server cannot do."""

    code = "invalid_request"


class ContextLengthExceeded(APIError):
    """The prompt does not fit the model's context window."""

    code = "context_length_exceeded"


class ModelNotFound(APIError):
    status_code = 404
    code = "model_not_found"


class NotFound(APIError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(APIError):
    status_code = 405
    code = "method_not_allowed"


class RequestTooLarge(APIError):
    status_code = 413
    code = "request_too_large"


class ClientClosedRequest(APIError):
    """The client went away before it was served; the response goes nowhere (nginx's 499)."""

    status_code = 499
    code = "client_closed_request"


class Overloaded(APIError):
    """Every instance is busy and the wait queue is full: the caller should retry later."""

    status_code = 503
    type = "server_error"
    code = "overloaded"


class NotReady(APIError):
    status_code = 503
    type = "server_error"
    code = "model_not_ready"


class InternalError(APIError):
    status_code = 500
    type = "server_error"
    code = "internal_error"


# Parts of pydantic's error locations that name a union member rather than a field.
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "TextPart", "NamedToolChoice"}


def from_validation_error(exc: pydantic.ValidationError) -> InvalidRequest:
    """The first problem pydantic found, worded for an API caller."""
    first = exc.errors(include_url=False)[0]
    parts = [
        str(part)
        for part in first["loc"]
        if not (isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or "-" in part))
    ]
    param = ".".join(parts) or None
    where = f" at '{param}'" if param else ""
    return InvalidRequest(f"Invalid request{where}: {first['msg']}", param=param)


_CONTEXT = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def classify_engine_error(exc: BaseException, *, prompt_param: str = "messages") -> APIError:
    """Map an exception raised by llama-cpp-python while preparing or running a generation.

    The caller's faults (a prompt beyond the context window, a chat the model's template
    rejects) become 400s; anything else is ours: a 500 whose cause is logged, not sent.
    """
    if isinstance(exc, APIError):
        return exc
    text = str(exc)
    found = _CONTEXT.search(text) if isinstance(exc, ValueError) else None
    if found:
        tokens, window = found.groups()
        return ContextLengthExceeded(
            f"This model's maximum context length is {window} tokens, "
            f"but the prompt has {tokens} tokens. Shorten the prompt.",
            param=prompt_param,
        )
    if isinstance(exc, jinja2.TemplateError):
        return InvalidRequest(
            f"The model's chat template rejected these messages: {text}", param="messages"
        )
    logger.error("generation failed", exc_info=exc)
    return InternalError("The model failed to generate a response.")


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown path or method), in OpenAI's envelope."""
    assert isinstance(exc, HTTPException)
    error: APIError
    if exc.status_code == 404:
        error = NotFound(f"Unknown path: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} not allowed on {request.url.path}")
    else:
        error = InvalidRequest(str(exc.detail))
        error.status_code = exc.status_code
    return error_response(error)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError("Internal server error."))
