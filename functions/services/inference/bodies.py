"""Bodies that pass through the router without being held whole: a client's upload on its
way to the model server (``Upload``), and a model server's answer on its way back
(``OpenBody``: audio, or whatever an operation answers), each a chunk at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from functions.services.inference import failures, metrics
from functions.services.inference.health import Endpoint, HealthBook


class Upload:
    """A request body sent upstream as the client sends it: ``head`` (what was read to
    learn the model) then the rest of the client's stream. It can be sent once, so a
    failure once it has started is not retried elsewhere (``started``)."""

    __slots__ = ("_rest", "content_type", "head", "length", "started")

    def __init__(
        self, head: bytes, rest: AsyncIterator[bytes], content_type: str, length: int | None
    ) -> None:
        self.head = head
        self._rest = rest
        self.content_type = content_type
        self.length = length  # the client's Content-Length, if it sent one
        self.started = False

    def headers(self, base: dict[str, str]) -> dict[str, str]:
        headers = {**base, "content-type": self.content_type}
        if self.length is not None:
            headers["content-length"] = str(self.length)
        return headers

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        if self.head:
            yield self.head
        async for chunk in self._rest:
            if chunk:
                yield chunk


class OpenBody:
    """An upstream answer whose status and headers have arrived (a success): iterate for
    its body's chunks; always close."""

    def __init__(
        self,
        health: HealthBook,
        model: str,
        label: str,
        endpoint: Endpoint,
        response: aiohttp.ClientResponse,
    ) -> None:
        self.health = health
        self.model = model
        self.label = label
        self.endpoint = endpoint
        self.status = response.status
        self.content_type = response.headers.get("content-type", "application/octet-stream")
        self.failure: failures.Failure | None = None  # how reading it broke, if it did
        self._response = response
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = failures.from_exception(exc)

    def close(self, *, ok: bool) -> None:
        """Release the upstream (cut it when not read to the end); the endpoint's health
        and the metrics hear the outcome here, once."""
        if self._closed:
            return
        self._closed = True
        self.endpoint.outstanding -= 1
        failure = self.failure
        outcome = metrics.OK if ok else failure.fault if failure else metrics.CANCELLED
        metrics.count_request(self.model, self.label, outcome)
        if ok:
            self.health.succeeded(self.endpoint)
            self._response.release()
            return
        if failure is not None:
            metrics.count_failure(self.label, failure.fault, failure.reason)
            if failure.eject:
                self.health.failed(self.endpoint)
        self._response.close()
