"""Graceful shutdown: drain, close, finish, cut.

On SIGTERM (``jan-server serve``: ``functions.entry.serve`` installs the handlers and
gives ``closing`` to the server as the moment to close its listener):

1. **drain** — readiness (``/readyz``, ``/health/readiness``) answers 503 ``draining``
   for ``JAN_SHUTDOWN_DRAIN_SECONDS`` while the listener still accepts and serves, so a
   load balancer, kube-proxy or Knative's queue-proxy stops sending new work first.
   Responses then carry ``Connection: close``, so keep-alive clients move to another
   instance instead of meeting a connection closed under them.
2. **close** — the listener closes; requests and streams in flight go on for
   ``JAN_SHUTDOWN_GRACE_SECONDS``.
3. **cut** — what still runs is cancelled through ``cut()``: a chat stream ends with an
   error event (503, ``service_unavailable``) and ``data: [DONE]`` and is recorded in the
   usage ledger with 503 (the server ended it; 499 means the client left); a request
   that has not answered yet gets the 503 envelope.

A second SIGTERM or SIGINT skips what is left of the drain, then of the grace; a first
SIGINT (Ctrl-C at a terminal) starts at *close*. ``Shutdown`` is the one state of this:
the runtime owns it, readiness reads ``draining``, the request middleware
(``RequestContext``) registers each request's task (``enter``/``leave``), answers a cut
request and ends a cut stream; the readers of model streams, which record usage, and
the inference service ask ``was_cut()`` when they are cancelled (503 in the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import orjson

from functions.common import errors

log = logging.getLogger(__name__)

# After the cut, the seconds left for cut requests to send their last bytes and for the
# runtime to stop, before the server gives up on them.
CUT_SECONDS = 5.0


def shutting_down() -> errors.ServiceUnavailable:
    """The error a request cut at shutdown ends with."""
    return errors.ServiceUnavailable(
        "The server is shutting down and ended this request; retry it.",
        headers={"Retry-After": "1"},
    )


def cut_stream_end() -> bytes:
    """The last bytes of an event stream cut at shutdown: the error in OpenAI's shape (the
    SDKs raise on ``{"error": …}``), then ``[DONE]``."""
    return b"data: " + orjson.dumps(shutting_down().body()) + b"\n\ndata: [DONE]\n\n"


class Shutdown:
    """The process's way down (see the module's docstring)."""

    def __init__(self, drain_seconds: float, grace_seconds: float) -> None:
        self.drain_seconds = drain_seconds
        self.grace_seconds = grace_seconds
        self.draining = False  # readiness answers 503 from the first signal on
        self.cutting = False
        self._tasks: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self._signals = 0
        self._interactive = False
        self._next = asyncio.Event()  # set by each signal; bound to a loop at first wait
        self._grace_task: asyncio.Task[None] | None = None

    # --- the request path ------------------------------------------------------------
    def enter(self) -> asyncio.Task[object] | None:
        """Register the current task as in-flight work that a cut cancels; hand the
        result to ``leave`` when it is done."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._tasks.discard(task)
            self._cut.discard(task)

    def was_cut(self) -> bool:
        """Whether the current task was cancelled by the cut (not by its client leaving)."""
        return asyncio.current_task() in self._cut

    def cut(self) -> None:
        """Cancel every tracked task (each ends itself with an error; see the module)."""
        if self.cutting:
            return
        self.cutting = True
        if self._tasks:
            log.warning("shutdown: cutting in-flight requests", extra={"count": len(self._tasks)})
        for task in list(self._tasks):
            self._cut.add(task)
            task.cancel()

    # --- the server ------------------------------------------------------------------
    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle SIGTERM and SIGINT on ``loop`` (the serving loop)."""
        loop.add_signal_handler(signal.SIGTERM, self.signalled, False)
        loop.add_signal_handler(signal.SIGINT, self.signalled, True)

    def signalled(self, interactive: bool = False) -> None:
        """A stop signal: the first starts the way down, each further one skips a step."""
        self._signals += 1
        if self._signals == 1:
            self._interactive = interactive
            self.draining = True
        self._next.set()

    async def closing(self) -> None:
        """Return when the listener should close (the server's shutdown trigger), then
        start the grace, after which ``cut()`` runs."""
        await self._next.wait()
        self._next.clear()
        if not self._interactive and self.drain_seconds > 0 and self._signals == 1:
            log.info("shutdown: draining", extra={"seconds": self.drain_seconds})
            await self._step(self.drain_seconds)
        log.info("shutdown: listener closed, finishing", extra={"seconds": self.grace_seconds})
        self._grace_task = asyncio.get_running_loop().create_task(self._grace())

    async def _grace(self) -> None:
        await self._step(self.grace_seconds)
        self.cut()

    async def _step(self, seconds: float) -> None:
        """Wait ``seconds``, or less if another signal comes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._next.wait(), seconds)
        self._next.clear()
