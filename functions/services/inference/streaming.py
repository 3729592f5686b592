"""Relaying an upstream stream to the client as server-sent events.

The relay runs in the request's own task; a small watcher task waits for the client's
``http.disconnect`` and cancels it, which closes the upstream response and so stops the
generation there. A stream the upstream has already finished (its ``[DONE]`` came with
the first read) has nothing left to stop and goes out without a watcher, as one body
with its Content-Length. A failure after
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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from functions.common import errors
from functions.services.inference import failures
from functions.services.inference.bodies import OpenBody
from functions.services.inference.requests import usage_of
from functions.services.inference.router import OpenStream, StreamBroken
from functions.services.inference.sse import StreamTally, error_event
from functions.services.inference.waking import HOLDING
from functions.services.limits import current_raw_headers

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's status for "the client went away", kept in the usage ledger

_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)

Finish = Callable[[int, dict[str, Any] | None], None]
T = TypeVar("T")


class StreamOutcome:
    """How one upstream stream ended, and the one place that records it.

    Made once the stream's first event is in; the reader says what happened (``ended``,
    ``broke``; nothing if the client left: 499), then ``finish()`` (or leaving the
    ``with`` block) closes the upstream (its health and metrics hear the outcome) and
    calls ``record(status, usage)``, the usage ledger, exactly once. ``tally`` holds the
    usage; ``tally.error`` (an error event of the upstream's own) makes an otherwise
    complete stream a 502."""

    __slots__ = ("_record", "failure", "status", "stream", "tally")

    def __init__(self, stream: OpenStream, tally: StreamTally, record: Finish) -> None:
        self.stream = stream
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

    def __exit__(self, *exc_info: object) -> None:
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
    ) -> None:
        # Not Response.__init__: there is no body to render; Starlette only calls us.
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

    async def _relay(self, send: Send, first: bytes, *, started: bool = False) -> None:
        """``started``: the response has begun already (a held stream's keep-alives)."""
        tally = self.tally
        with StreamOutcome(self.stream, tally, self.finish) as outcome:
            # A fresh message each time: middleware may add to it (the request ID).
            headers = [*_HEADERS, *self._extra]
            if tally.done and not started:
                # Complete already: a plain body with its length (no chunked framing, one
                # write less for the server).
                headers.append((b"content-length", str(len(first)).encode()))
                if self.complete is not None and not tally.error:
                    await self.complete()
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": first, "more_body": False})
                outcome.ended()
                return
            if not started:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            last = b""
            if tally.done:  # a held stream complete with its first read
                last = first
                outcome.ended()
            else:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                try:
                    async for block in self.stream:
                        data = tally.render(block)
                        if tally.done:
                            last = data
                            break
                        if data:
                            await send(
                                {"type": "http.response.body", "body": data, "more_body": True}
                            )
                    outcome.ended()
                except StreamBroken as broken:
                    outcome.broke(broken.failure)
            if outcome.failure is not None:  # ours to tell (an upstream's error event went)
                last = error_event(outcome.failure.error.body())
            elif self.complete is not None and outcome.status == 200:
                await self.complete()
            await send({"type": "http.response.body", "body": last, "more_body": False})


WAKING_COMMENT = b": waking model\n\n"  # what a held stream sends meanwhile


class Holding(Generic[T]):
    """A streamed call the router holds while its model wakes (``waking``): the task
    that will open the stream, and the rate-limit headers known when it was held."""

    __slots__ = ("headers", "task")

    def __init__(self, task: asyncio.Task[T], headers: list[tuple[bytes, bytes]]) -> None:
        self.task = task
        self.headers = headers


async def open_or_hold(opening: Coroutine[Any, Any, T]) -> T | Holding[T]:
    """Run ``opening`` (a call that opens a stream): its result, or its error, as soon as
    it has either; or, once the router holds it for a waking model, ``Holding`` it (the
    caller answers with ``HeldRelay``, which starts the stream at once)."""
    loop = asyncio.get_running_loop()
    held: asyncio.Future[list[tuple[bytes, bytes]]] = loop.create_future()

    def holding() -> None:  # in the call's context: the admission's headers are known
        if not held.done():
            held.set_result(current_raw_headers())

    token = HOLDING.set(holding)
    try:
        task = loop.create_task(opening)
    finally:
        HOLDING.reset(token)
    try:
        await asyncio.wait((task, held), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    if task.done():
        held.cancel()
        return task.result()
    return Holding(task, held.result())


class HeldRelay(Response, Generic[T]):
    """A stream whose model wakes: the response starts at once and sends an SSE comment
    (``: waking model``) every ``keepalive`` seconds, so that no idle timeout between
    the client and us fires, until the call opens its stream, which ``relay(result)``
    then relays; a call that fails meanwhile ends the stream with an error event (its
    ledger line is written already). The client leaving cancels the call."""

    def __init__(
        self,
        holding: Holding[T],
        relay: Callable[[T], SSERelay],
        keepalive: float,
        discard: Callable[[T], None],
    ) -> None:
        self.status_code = 200
        self.background = None
        self.holding = holding
        self.relay = relay
        self.keepalive = keepalive
        self.discard = discard  # a result no one relays (the client left): closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await until_gone(receive, self._relay(send))

    async def _relay(self, send: Send) -> None:
        task = self.holding.task
        try:
            headers = [*_HEADERS, *self.holding.headers]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            while True:
                await send(
                    {"type": "http.response.body", "body": WAKING_COMMENT, "more_body": True}
                )
                done, _ = await asyncio.wait((task,), timeout=self.keepalive)
                if done:
                    break
        except BaseException:
            task.cancel()
            await asyncio.wait((task,))
            if not task.cancelled() and task.exception() is None:
                self.discard(task.result())
            raise
        try:
            result = task.result()
        except Exception as exc:
            if not isinstance(exc, errors.APIError):
                log.exception("held stream failed")
                exc = errors.internal_error()
            end = error_event(exc.body())
            await send({"type": "http.response.body", "body": end, "more_body": False})
            return
        relay = self.relay(result)
        await relay._relay(send, relay.tally.render(relay.stream.first), started=True)


USAGE_READ_BYTES = 1024 * 1024  # a relayed JSON answer is read for its usage up to this


class BodyRelay(Response):
    """An upstream answer relayed a chunk at a time, whatever its type (audio, a
    transcription, an event stream); ``finish(status, usage)`` once at the end, with the
    usage of a JSON answer of at most ``USAGE_READ_BYTES``. A failure midway ends the
    body there (the ledger says 502): there is no error event to send in audio."""

    def __init__(
        self, body: OpenBody, finish: Finish, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
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
        finally:
            body.close(ok=status == 200)
            usage = usage_of(b"".join(kept)) if kept and status == 200 else None
            self.finish(status, usage)
