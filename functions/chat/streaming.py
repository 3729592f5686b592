"""Relaying an upstream stream to the client as server-sent events.

The relay runs as its own task next to a watcher of the client's connection: when the
client goes away the relay is cancelled, which closes the upstream response and so stops
the generation there. A failure after the first byte becomes an error event
(``data: {"error": …}``, which the OpenAI SDKs raise on) and a clean end of the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from functions.chat import failures
from functions.chat.router import OpenStream, StreamBroken
from functions.chat.sse import StreamTally, error_event

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's status for "the client went away", kept in the usage ledger

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

Finish = Callable[[int, StreamTally], None]


class SSERelay(Response):
    """An ASGI response streaming ``stream`` to the client; ``finish(status, tally)`` is
    called exactly once at the end (usage recording)."""

    def __init__(self, stream: OpenStream, tally: StreamTally, finish: Finish) -> None:
        # Not Response.__init__: there is no body to render; Starlette only calls us.
        self.status_code = 200
        self.background = None
        self.stream = stream
        self.tally = tally
        self.finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.ensure_future(self._relay(send))
        watcher = asyncio.ensure_future(_client_gone(receive))
        try:
            await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            relay.cancel()  # no-op when it finished; stops it when the client left
            await asyncio.gather(relay, watcher, return_exceptions=True)
        if relay.done() and not relay.cancelled() and relay.exception() is not None:
            log.warning("stream relay failed", exc_info=relay.exception())

    async def _relay(self, send: Send) -> None:
        status = CLIENT_CLOSED
        failure: failures.Failure | None = None
        tally = self.tally
        try:
            first = tally.render(self.stream.first)
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            try:
                if not tally.done:
                    async for payloads in self.stream:
                        data = tally.render(payloads)
                        if data:
                            await send(
                                {"type": "http.response.body", "body": data, "more_body": True}
                            )
                        if tally.done:
                            break
                if not tally.done and not tally.error:
                    failure = failures.from_exception(failures.StreamCut("no [DONE]"))
                    self.stream.router.health.failed(self.stream.endpoint)
                    raise StreamBroken(failure)
                if tally.error:
                    failure = failures.error_event()
                status = 502 if tally.error else 200
            except StreamBroken as broken:
                failure = broken.failure
                status = failure.error.status
                await send(
                    {
                        "type": "http.response.body",
                        "body": error_event(broken.failure.error.body()),
                        "more_body": True,
                    }
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.stream.close(ok=status == 200, failure=failure)
            self.finish(status, tally)


def _chunk(data: bytes) -> dict[str, object]:
    return {"type": "http.response.body", "body": data, "more_body": True}


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
