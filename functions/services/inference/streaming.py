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
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from functions.common import errors
from functions.common.shutdown import Shutdown
from functions.services.inference import failures
from functions.services.inference.bodies import OpenBody
from functions.services.inference.requests import usage_of
from functions.services.inference.router import OpenStream, StreamBroken
from functions.services.inference.sse import StreamTally, error_event
from functions.services.inference.waking import HOLDING
from functions.services.limits import current_raw_headers

log = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's status for "the client went away", kept in the usage ledger
SERVER_CUT = 503  # the server ended the stream (shutdown), kept in the usage ledger

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

    async def resume(self, receive: Receive, send: Send) -> None:
        """The relay of a stream whose response has started already (``StreamCall``'s
        keep-alives)."""
        first = self.tally.render(self.stream.first)
        await until_gone(receive, self._relay(send, first, started=True))

    async def _relay(self, send: Send, first: bytes, *, started: bool = False) -> None:
        """``started``: the response has begun already (a held stream's keep-alives)."""
        tally = self.tally
        with StreamOutcome(self.stream, tally, self.finish, self.shutdown) as outcome:
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
                # A shutdown's cut: the outcome records 503 as it leaves (``__exit__``), and
                # the request's middleware ends the stream (an error event and [DONE]).
            if outcome.failure is not None:  # ours to tell (an upstream's error event went)
                last = error_event(outcome.failure.error.body())
            elif self.complete is not None and outcome.status == 200:
                await self.complete()
            await send({"type": "http.response.body", "body": last, "more_body": False})


WAKING_COMMENT = b": waking model\n\n"  # what a held stream sends meanwhile


class _Keepalive:
    """The response of a stream held while its model wakes: started at once, then an SSE
    comment every ``every`` seconds (one task), and the client's leaving watched (another
    task, which cancels the request's task). Both only while the call is held."""

    def __init__(
        self, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]], every: float
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.send = send
        self.started = False  # the response's start has gone out
        self.left = False  # the client went away (and the request's task was cancelled)
        self._done = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._sending = loop.create_task(self._comments(send, headers, every))
        self._watching = loop.create_task(self._watch(receive))

    async def _comments(self, send: Send, headers: list[tuple[bytes, bytes]], every: float) -> None:
        start = [*_HEADERS, *headers]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        self.started = True
        while not self._done.is_set():
            await send({"type": "http.response.body", "body": WAKING_COMMENT, "more_body": True})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._done.wait()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.left = True
        self.task.cancel()

    async def stop(self) -> None:
        """No more comments (the one being sent goes out whole), no more watching."""
        self._done.set()
        self._watching.cancel()
        await asyncio.gather(self._sending, self._watching, return_exceptions=True)

    def abort(self) -> None:
        """The same at once (the client is gone); takes back its cancellation."""
        self._done.set()
        self._sending.cancel()
        self._watching.cancel()
        self.task.uncancel()


class Resumable(Protocol):
    """A stream's response that can also go on after its start went out (``resume``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def resume(self, receive: Receive, send: Send) -> None: ...


def chat_error_end(error: errors.APIError) -> bytes:
    """How a chat completion's stream ends on an error: OpenAI's error event."""
    return error_event(error.body())


class StreamCall(Response, Generic[T]):
    """A streamed call, made when the response is sent: ``opening()`` (in the request's
    own task: nothing more on the usual path), then ``relay(result)``, a ``Resumable``
    (a chat completion's ``SSERelay``, a response's event stream). An error before
    anything went out is raised, and the app answers it as any error.

    When the router holds the call while its model wakes (``waking.HOLDING``), the
    response starts at once (200, ``text/event-stream``, the rate limit headers known by
    then) and sends ``: waking model`` every ``keepalive`` seconds, so no idle timeout
    between the client and us fires, until the stream opens and is relayed; an error
    meanwhile ends the stream with an error event (its ledger line is written already);
    the client leaving cancels the call (``discard`` closes a stream that opened as it
    left). ``error_end``: the bytes that end a started stream on an error (the
    operation's own error event)."""

    def __init__(
        self,
        opening: Callable[[], Awaitable[T]],
        relay: Callable[[T], Resumable],
        keepalive: float,
        discard: Callable[[T], Awaitable[None]],
        error_end: Callable[[errors.APIError], bytes] = chat_error_end,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.opening = opening
        self.relay = relay
        self.keepalive = keepalive
        self.discard = discard
        self.error_end = error_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: _Keepalive | None = None

        def holding() -> None:  # in this task: the admission's headers are known
            nonlocal held
            if held is None:
                held = _Keepalive(receive, send, current_raw_headers(), self.keepalive)

        token = HOLDING.set(holding)
        try:
            result = await self.opening()
        except BaseException as exc:
            if held is None:
                raise
            await self._failed(held, exc)
            return
        finally:
            HOLDING.reset(token)
        if held is None:
            await self.relay(result)(scope, receive, send)
            return
        relay: Resumable | None = None
        try:
            await held.stop()
            relay = self.relay(result)
            if not held.started:  # it opened before the response started
                await relay(scope, receive, send)
                return
            await relay.resume(receive, send)
        except asyncio.CancelledError:
            if not held.left:
                raise
            held.abort()
            if relay is None:
                with anyio.CancelScope(shield=True):
                    await self.discard(result)

    async def _failed(self, held: _Keepalive, exc: BaseException) -> None:
        """The held call failed, or was cancelled (the client left, or shutdown)."""
        try:
            await held.stop()
        except asyncio.CancelledError:
            if not held.left:
                raise
            held.abort()
            return
        if isinstance(exc, asyncio.CancelledError):
            if not held.left:
                raise exc
            held.abort()
            return
        if not held.started:
            raise exc  # nothing went out: answered as any error
        if isinstance(exc, errors.APIError):
            err = exc
        else:
            log.error("held stream failed", exc_info=exc)
            err = errors.internal_error()
        end = self.error_end(err)
        await held.send({"type": "http.response.body", "body": end, "more_body": False})


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
