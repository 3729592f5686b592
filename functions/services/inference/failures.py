"""Upstream failures, classified in one place.

Every way a call to a model server can fail ends up here as a ``Failure``: whose fault it
is (the caller's, the upstream's, or ours), whether another endpoint is worth a try
(only ever before the first byte reached the client), whether it counts against the
endpoint's health, and the OpenAI-shaped error the client sees. The router's retry and
ejection logic and the metrics read these fields and nothing else.

    caller    the upstream rejected the request itself (400/404/409/413/422): passed on
              with the upstream's message; no retry; the endpoint is healthy.
    upstream  the model server is down, cut the connection, timed out, or answered 5xx/429:
              retried elsewhere; connection errors, timeouts and 500/502/504 eject.
              429 and 503 mean "busy", not "broken": retried, never ejected. A 503 is
              also "warming" (a predictor scaling from zero or loading its model, or a
              full queue): when no other endpoint is left, the router waits and asks the
              same one again, within ``JAN_UPSTREAM_WARMUP_SECONDS``. For a provider
              that scales to zero (KServe, the built-in model), a refused connection is
              warming too (``cold``): its revision is starting (it still ejects).
    ours      our configuration or code is wrong (the provider refused our credentials,
              a malformed base URL, a bug): no retry, a 502/500 that says so. An endpoint
              whose address the guard refuses (``JAN_PROVIDER_ALLOWED_HOSTS``) or that
              answers with a redirect (never followed) is ours too, but another endpoint
              may serve: retried elsewhere and ejected.

An upstream whose stream sends an event larger than ``JAN_UPSTREAM_MAX_EVENT_BYTES``
(often one that never ends: no blank line) or whose reply is larger than
``JAN_UPSTREAM_MAX_REPLY_BYTES`` is cut there (``TooLarge``): an upstream failure, a 502
that says so, counted against the endpoint in the metrics, but neither retried (another
endpoint would answer the same request the same way) nor ejected: a caller can provoke
a large reply (a big embeddings batch, ``echo`` of a long prompt), and no caller may take
a shared endpoint out of rotation for everyone.
"""

from __future__ import annotations

import asyncio
import enum
import re
from dataclasses import dataclass

import aiohttp
import orjson

from functions.common import errors
from functions.common.netguard import AddressRefused
from functions.common.upstream import retry_after_seconds


class Fault(enum.StrEnum):
    CALLER = "caller"
    UPSTREAM = "upstream"
    OURS = "ours"


@dataclass(frozen=True, slots=True)
class Failure:
    fault: Fault
    reason: str  # short metric label: connect, timeout, status_503, cut, …
    retry: bool
    eject: bool
    error: errors.APIError
    # A 503: the endpoint may answer after a wait (``retry_after`` seconds, when it said).
    warming: bool = False
    retry_after: float | None = None


class ContextTooLong(errors.InvalidRequest):
    """The upstream refused the request as longer than its context window (OpenAI's code
    ``context_length_exceeded``); ``window``: that window in tokens, when it said."""

    code = "context_length_exceeded"

    def __init__(self, message: str, window: int | None) -> None:
        super().__init__(message, param="messages")
        self.window = window


# How engines word a refusal for the context window, and where they put its size:
# vLLM and OpenAI "This model's maximum context length is 8192 tokens. …", SGLang "… longer
# than the model's context length (8192 tokens)", llama.cpp's server "the request exceeds
# the available context size" (its size in the body's ``n_ctx``).
_CONTEXT_REFUSAL = re.compile(
    r"maximum context length|context length \(|exceeds the available context size"
    r"|context window|context_length_exceeded",
    re.IGNORECASE,
)
_CONTEXT_SIZE = re.compile(
    r"maximum context length is (\d+)|context length \((\d+) tokens?\)",
    re.IGNORECASE,
)


def context_refusal(body: bytes, message: str | None) -> ContextTooLong | None:
    """The refusal for the context window a 400 (or 413) answer is, if it is one."""
    if not message or not _CONTEXT_REFUSAL.search(message):
        return None
    window = None
    if found := _CONTEXT_SIZE.search(message):
        window = int(next(g for g in found.groups() if g is not None))
    else:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        inner = data.get("error") if isinstance(data, dict) else None
        size = inner.get("n_ctx") if isinstance(inner, dict) else None
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            window = size
    return ContextTooLong(message, window)


class StreamCut(Exception):
    """The upstream ended a stream without its terminating event."""


class TooLarge(Exception):
    """An upstream's event or reply grew past the gateway's limit; reading stopped."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} over {limit} bytes")
        self.what = what
        self.limit = limit


def _unreachable(reason: str) -> Failure:
    return Failure(
        Fault.UPSTREAM,
        reason,
        retry=True,
        eject=True,
        error=errors.UpstreamError("The model server could not be reached or failed."),
    )


def _misdirected(reason: str) -> Failure:
    return Failure(
        Fault.OURS,
        reason,
        retry=True,
        eject=True,
        error=errors.UpstreamError(
            "The model provider's endpoint may not be used: it points at a private address "
            "or redirects elsewhere."
        ),
    )


def from_exception(exc: BaseException) -> Failure:
    """Classify an exception raised while calling (or reading from) an upstream."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return Failure(
            Fault.UPSTREAM,
            "timeout",
            retry=True,
            eject=True,
            error=errors.UpstreamTimeout("The model server did not answer in time."),
        )
    if isinstance(exc, TooLarge):
        return Failure(
            Fault.UPSTREAM,
            "too_large",
            retry=False,
            eject=False,
            error=errors.UpstreamError(
                f"The model server's {exc.what} exceeded the gateway's limit of {exc.limit} bytes."
            ),
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return Failure(
            Fault.OURS,
            "bad_url",
            retry=False,
            eject=False,
            error=errors.UpstreamError("The model provider's base URL is invalid."),
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, AddressRefused):
            return _misdirected("address_refused")
        return _unreachable("connect")
    if isinstance(exc, StreamCut | aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return _unreachable("cut")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return _unreachable("io")
    return Failure(Fault.OURS, "bug", retry=False, eject=False, error=errors.internal_error())


def cold(failure: Failure, scales_to_zero: bool) -> Failure:
    """``failure`` as seen for a provider that may scale to zero: a refused connection is
    its revision starting (warming: the request is held while the model has no other
    endpoint; a 503 once the wake time is spent). It still counts towards ejection, as
    before: among endpoints that serve, one that refuses is taken out of rotation (a model
    whose every endpoint is ejected still has the first to return tried: holding goes on)."""
    if not scales_to_zero or failure.reason != "connect":
        return failure
    err = errors.ServiceUnavailable(
        "The model is starting (scaled to zero) and was not ready in time; retry shortly.",
        code="model_not_ready",
        headers={"Retry-After": "2"},
    )
    return Failure(Fault.UPSTREAM, "connect", retry=True, eject=True, error=err, warming=True)


def upstream_message(body: bytes) -> str | None:
    """The human message inside an upstream error body, in the shapes servers use."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    inner = data.get("error")
    if isinstance(inner, dict):
        data = inner
    elif isinstance(inner, str):
        return inner
    for key in ("message", "detail"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return None


# An upstream envelope's ``param`` and ``code`` are relayed only as short identifiers (a
# parameter path such as ``messages[0].content``, a code such as ``invalid_value``): never
# free text, so nothing but the documented fields' usual values can pass through.
_RELAYED_FIELD = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")


def upstream_fields(body: bytes) -> tuple[str | None, str | None]:
    """``param`` and ``code`` of an upstream's OpenAI error envelope (``{"error": {…}}``),
    each only when it is a short identifier string (see ``_RELAYED_FIELD``)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    inner = data.get("error") if isinstance(data, dict) else None
    if not isinstance(inner, dict):
        return None, None
    found: list[str | None] = []
    for key in ("param", "code"):
        value = inner.get(key)
        ok = isinstance(value, str) and _RELAYED_FIELD.fullmatch(value) is not None
        found.append(value if ok else None)
    return found[0], found[1]


def from_status(status: int, body: bytes, retry_after: str | None = None) -> Failure:
    """Classify an upstream HTTP error response (status >= 400) or redirect (3xx)."""
    if status < 400:
        return _misdirected(f"status_{status}")
    message = upstream_message(body)
    if status in (401, 403):
        return Failure(
            Fault.OURS,
            f"status_{status}",
            retry=False,
            eject=False,
            error=errors.UpstreamError("The model provider rejected the configured credentials."),
        )
    if status == 429 or status == 503:
        err = errors.for_status(status, message or "The model server is busy; retry shortly.")
        err.headers = {"Retry-After": retry_after or "1"}
        if status == 429:
            return Failure(Fault.UPSTREAM, "status_429", retry=True, eject=False, error=err)
        err.code = "model_overloaded"
        return Failure(
            Fault.UPSTREAM,
            "status_503",
            retry=True,
            eject=False,
            error=err,
            warming=True,
            retry_after=retry_after_seconds(retry_after),
        )
    if status >= 500:
        failure = _unreachable(f"status_{status}")
        return failure
    # Any other 4xx: the request itself was refused; tell the caller what the server said.
    client_status = 400 if status in (405, 422) else status
    if status in (400, 413) and (too_long := context_refusal(body, message)) is not None:
        return Failure(Fault.CALLER, f"status_{status}", retry=False, eject=False, error=too_long)
    err = errors.for_status(
        client_status, message or f"The model server refused the request ({status})."
    )
    if client_status == 404:
        err.code = "model_not_found"
    elif client_status == 400:
        err.code = "invalid_request"
    # The server's own param and code, when its envelope has them (OpenAI's SDKs and
    # callers branch on them, e.g. param "dimensions").
    param, code = upstream_fields(body)
    err.param = param
    if code is not None:
        err.code = code
    return Failure(Fault.CALLER, f"status_{status}", retry=False, eject=False, error=err)


def error_event() -> Failure:
    """The upstream put an error event into a stream it had started."""
    return Failure(
        Fault.UPSTREAM,
        "error_event",
        retry=False,
        eject=False,
        error=errors.UpstreamError("The model server failed during the stream."),
    )
