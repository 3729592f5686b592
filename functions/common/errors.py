"""Errors in OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.

Handlers raise ``APIError`` subclasses; one handler renders them. Anything else becomes a
generic 500 whose cause is logged, never sent.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class APIError(Exception):
    status = 500
    type = "server_error"
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

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(APIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(APIError):
    status = 403
    type = "invalid_request_error"
    code = "insufficient_permissions"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(APIError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class Conflict(APIError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(APIError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceeded(APIError):
    """A spend limit or token budget is used up (OpenAI's answer when a quota is)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class ServerError(APIError):
    status = 500
    type = "server_error"
    code = "internal_error"


class UpstreamError(APIError):
    """The model server failed us (bad gateway)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class ServiceUnavailable(APIError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


def database_unavailable() -> ServiceUnavailable:
    """The 503 of a request that needs the database while it cannot be reached."""
    return ServiceUnavailable(
        "The database is not reachable; retry shortly.",
        code="database_unavailable",
        headers={"Retry-After": "2"},
    )


class UpstreamTimeout(APIError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
    502: UpstreamError,
    503: ServiceUnavailable,
    504: UpstreamTimeout,
}


def for_status(status: int, message: str) -> APIError:
    """An APIError of the class that matches an HTTP status."""
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else InvalidRequest)
    err = cls(message)
    err.status = status
    return err


def error_response(err: APIError) -> Response:
    return Response(
        orjson.dumps(err.body()),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )


def render(request: Request, exc: Exception) -> Response:
    """The exception handler for APIError (Starlette calls it with the request)."""
    assert isinstance(exc, APIError)
    return error_response(exc)


INTERNAL_ERROR_MESSAGE = "The server had an error while processing your request."


def internal_error() -> ServerError:
    """The generic 500 for anything unexpected (its cause is logged, never sent).

    A fresh instance every time: one shared exception instance, raised again and again,
    would add each raise's frames to its ``__traceback__`` and keep them all alive."""
    return ServerError(INTERNAL_ERROR_MESSAGE)
