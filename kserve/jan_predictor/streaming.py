"""Server-sent events, and noticing a client that hangs up."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStreamResponse(StreamingResponse):
    """Server-sent events whose iterator is always closed, and which flags a disconnect."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_disconnect: Callable[[], None]) -> None:
        super().__init__(
            events,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = events
        self._on_disconnect = on_disconnect

    async def listen_for_disconnect(self, receive: Receive) -> None:
        await super().listen_for_disconnect(receive)
        self._on_disconnect()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except BaseException:
            self._on_disconnect()
            raise
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(self._events, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


@contextmanager
def watch_disconnect(request: Request, cancel: threading.Event) -> Iterator[None]:
    """Until the response starts, nobody reads the request's receive channel: watch it, so that
    a client that hangs up (while queued or generating) sets ``cancel``."""
    watcher = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    watcher.add_done_callback(partial(_cancel_on_disconnect, cancel))
    try:
        yield
    finally:
        watcher.cancel()


def _cancel_on_disconnect(cancel: threading.Event, watcher: asyncio.Future[None]) -> None:
    if not watcher.cancelled():
        cancel.set()


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
