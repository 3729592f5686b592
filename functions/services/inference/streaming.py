"""Relaying an upstream stream to the client as server-sent events.

The relay runs in the request's own task; a small watcher task waits for the client's
``http.disconnect`` and cancels it, which closes the upstream response and so stops the
generation there. A stream the upstream has already finished (its ``[DONE]`` came with
the first read) has nothing left to stop and goes out without a watcher, as one body
with its Content-Length. A stream the shutdown cuts (``functions.common.shutdown``) ends
with an error event and ``[DONE]`` and is recorded with 503. A failure after
the first byte becomes an error event (``data: {"error": …}``, which the OpenAI SDKs
raise on) and a clean end of the stream. The last bytes travel with ``more_body: False``
rather than in a message of their own.

``StreamOutcome`` is the bookkeeping of any reader of an upstream stream (this relay, and
the in-process ``api.stream_chat_completion``): the status and failure it ended with, the
usage, and at the end the upstream's close and the ledger entry, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from functions.common.shutdown import Shutdown, cut_stream_end
from functions.services.inference import failures
from functions.services.inference.bodies import OpenBody
from functions.services.inference.requests import usage_of
from functions.services.inference.router import OpenStream, StreamBroken
from functions.services.inference.sse import StreamTally, error_event

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's status for "the client went away", kept in the usage ledger
SERVER_CUT = 503  # the server ended the stream (shutdown), kept in the usage ledger

_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)

Finish = Callable[[int, dict[str, Any] | None], None]


class StreamOutcome:
    """How one upstream stream ended, and the one place that records it.

    Made once the stream's first event is in; the reader says what happened (``ended``,
    ``broke``, ``cut``; nothing if the client left: 499, or if the shutdown's cut cancelled
    it: 503), then ``finish()`` (or leaving the ``with`` block) closes the upstream (its
    health and metrics hear the outcome) and calls ``record(status, usage)``, the usage
    ledger, exactly once. ``tally`` holds the
    usage; ``tally.error`` (an error event of the upstream's own) makes an otherwise
    complete stream a 502."""

    __slots__ = ("_record", "failure", "shutdown", "status", "stream", "tally")

    def __init__(
        self,
        stream: OpenStream,
        tally: StreamTally,
        record: Finish,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.stream = stream
        self.shutdown = shutdown  # a reader cancelled by its cut: 503 (see ``cut``)
        self.tally = tally
        self.status = CLIENT_CLOSED
        self.failure: failures.Failure | None = None  # set when the stream broke
        self._record: Finish | None = record

    def ended(self) -> None:
        """The upstream stopped sending: 200 after its ``[DONE]`` (``tally.done``), 502
        after an error event of its own (``tally.error``), and without either a cut
        (``failures``' 502, see ``broke``)."""
        tally = self.tally
        if tally.error:
            self.status = 502
        elif tally.done:
            self.status = 200
        else:
            self.broke(failures.from_exception(failures.StreamCut("no [DONE]")))

    def broke(self, failure: failures.Failure) -> failures.Failure:
        """The stream failed after its first event (reading raised ``StreamBroken``, or the
        reader found an error event): the status is the failure's error's."""
        self.failure = failure
        self.status = failure.error.status
        return failure

    def cut(self) -> None:
        """The server ended the stream (a shutdown's cut): 503, not the client's 499; the
        upstream is closed as if the client had left (its health hears nothing)."""
        self.status = SERVER_CUT

    def finish(self) -> None:
        """Close the upstream and write the ledger entry (again: nothing)."""
        record = self._record
        if record is None:
            return
        self._record = None
        failure = self.failure
        if failure is None and self.tally.error:
            failure = failures.error_event()
        self.stream.close(ok=self.status == 200, failure=failure)
        record(self.status, self.tally.usage)

    def __enter__(self) -> StreamOutcome:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        if kind is asyncio.CancelledError and self.shutdown is not None and self.shutdown.was_cut():
            self.cut()
        self.finish()


async def until_gone(receive: Receive, relay: Awaitable[None]) -> None:
    """Run ``relay`` in this task, cancelled if the client disconnects before it ends
    (which closes the upstream response, and so stops the work there)."""
    task = asyncio.current_task()
    assert task is not None
    relaying = True

    async def cancel_when_gone() -> bool:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not relaying:
            return False
        task.cancel()
        return True

    watcher = asyncio.get_running_loop().create_task(cancel_when_gone())
    try:
        await relay
    except asyncio.CancelledError:
        if not (watcher.done() and not watcher.cancelled() and watcher.result()):
            raise  # cancelled from outside (shutdown), not by the client leaving
        task.uncancel()
    except Exception:
        log.warning("stream relay failed", exc_info=True)
    finally:
        relaying = False
        watcher.cancel()


class SSERelay(Response):
    """An ASGI response streaming ``stream`` to the client; ``finish(status, usage)`` is
    called exactly once at the end (the usage ledger). ``complete``, if any, is awaited
    when the stream has ended well, before its last bytes go out (a stored completion is
    written then, so the caller can read it back once it has the end)."""

    def __init__(
        self,
        stream: OpenStream,
        tally: StreamTally,
        finish: Finish,
        headers: list[tuple[bytes, bytes]] | None = None,
        complete: Callable[[], Awaitable[None]] | None = None,
        shutdown: Shutdown | None = None,
    ) -> None:
        # Not Response.__init__: there is no body to render; Starlette only calls us.
        self.shutdown = shutdown
        self.status_code = 200
        self.background = None
        self.stream = stream
        self.tally = tally
        self.finish = finish
        self._extra = headers or []  # more response headers (the rate limits'), encoded
        self.complete = complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = self.tally.render(self.stream.first)
        if self.tally.done:  # the whole answer is here: nothing to watch or cancel
            await self._relay(send, first)
            return
        await until_gone(receive, self._relay(send, first))

    async def _relay(self, send: Send, first: bytes) -> None:
        tally = self.tally
        with StreamOutcome(self.stream, tally, self.finish, self.shutdown) as outcome:
            # A fresh message each time: middleware may add to it (the request ID).
            headers = [*_HEADERS, *self._extra]
            if tally.done:
                # Complete already: a plain body with its length (no chunked framing, one
                # write less for the server).
                headers.append((b"content-length", str(len(first)).encode()))
                if self.complete is not None and not tally.error:
                    await self.complete()
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": first, "more_body": False})
                outcome.ended()
                return
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            last = b""
            try:
                async for block in self.stream:
                    data = tally.render(block)
                    if tally.done:
                        last = data
                        break
                    if data:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                outcome.ended()
            except StreamBroken as broken:
                outcome.broke(broken.failure)
            except asyncio.CancelledError:
                if self.shutdown is None or not self.shutdown.was_cut():
                    raise  # the client left (499), or not ours to end
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
                outcome.cut()
                end = cut_stream_end()
                await send({"type": "http.response.body", "body": end, "more_body": False})
                return
            if outcome.failure is not None:  # ours to tell (an upstream's error event went)
                last = error_event(outcome.failure.error.body())
            elif self.complete is not None and outcome.status == 200:
                await self.complete()
            await send({"type": "http.response.body", "body": last, "more_body": False})


USAGE_READ_BYTES = 1024 * 1024  # a relayed JSON answer is read for its usage up to this


class BodyRelay(Response):
    """An upstream answer relayed a chunk at a time, whatever its type (audio, a
    transcription, an event stream); ``finish(status, usage)`` once at the end, with the
    usage of a JSON answer of at most ``USAGE_READ_BYTES``. A failure midway ends the
    body there (the ledger says 502): there is no error event to send in audio."""

    def __init__(
        self,
        body: OpenBody,
        finish: Finish,
        headers: list[tuple[bytes, bytes]] | None = None,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.shutdown = shutdown
        self.status_code = body.status
        self.background = None
        self.answer = body
        self.finish = finish
        self._extra = headers or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await until_gone(receive, self._relay(send))

    async def _relay(self, send: Send) -> None:
        body = self.answer
        status = CLIENT_CLOSED
        kept: list[bytes] | None = [] if "json" in body.content_type else None
        size = 0
        try:
            headers = [(b"content-type", body.content_type.encode("latin-1")), *self._extra]
            await send({"type": "http.response.start", "status": body.status, "headers": headers})
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                size += len(chunk)
                if kept is not None:
                    if size > USAGE_READ_BYTES:
                        kept = None  # too long to read for its usage: the reservation stands
                    else:
                        kept.append(chunk)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            status = body.failure.error.status if body.failure else 200
        except asyncio.CancelledError:
            if self.shutdown is not None and self.shutdown.was_cut():
                status = SERVER_CUT  # the middleware ends the body
            raise
        finally:
            body.close(ok=status == 200)
            usage = usage_of(b"".join(kept)) if kept and status == 200 else None
            self.finish(status, usage)
