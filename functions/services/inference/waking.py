"""Waking a model that scaled to zero, from the client's side: held requests, one asker.

A model whose every endpoint answered "warming" (a 503: a KServe predictor loading its
model, queue-proxy while the revision scales from zero, a full queue; or, for a provider
that scales to zero, a refused connection while the revision starts: ``failures.cold``)
is *waking*. The router then holds the request rather than failing it, for up to
``JAN_UPSTREAM_WARMUP_SECONDS`` from its first cold answer, and asks again with back-off
(the upstream's ``Retry-After``, else 0.25 s doubling, at most ``POLL_MAX_SECONDS``).

Requests held for one model wait together (single flight): one ``Wake`` per model and
provider, whose ``turn`` lock is held by the one request that asks the upstream; the
others queue for the turn and, when they get it after the model answered meanwhile,
give it up at once and make their own call. So N requests held while the model sleeps
cost one upstream try per back-off step plus one call each once it serves, not N tries
per step. A request that finds a wake in progress joins it before trying at all. The
asker leaving (its client gone, its own bound reached) hands the turn to the next.

Each held request calls ``HOLDING``'s callback once (the chat area starts an SSE stream
with keep-alive comments then, so a client's idle timeout does not fire).

Metrics: ``jan_model_wake_seconds{model}`` (from a wake's first cold answer to the
model's first success), ``jan_model_requests_held{model}`` (requests held now),
``jan_model_wake_gave_up_total{model}`` (held requests that reached their bound).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar

from functions.services.inference import metrics

POLL_FIRST_SECONDS = 0.25  # the first wait before asking again, without a Retry-After
POLL_MAX_SECONDS = 2.0  # the longest wait before asking a waking model again

# Called (once, in the request's context) when the router starts holding the request.
HOLDING: ContextVar[Callable[[], None] | None] = ContextVar("jan_holding", default=None)


class Wake:
    """One model's wake: the requests held for it, and whose turn it is to ask."""

    __slots__ = ("held", "model", "started", "turn", "woke_at")

    def __init__(self, model: str) -> None:
        self.model = model
        self.turn = asyncio.Lock()  # held by the request that asks the upstream
        self.started = time.monotonic()  # the wake's first cold answer
        self.woke_at = 0.0  # when the model last answered (monotonic; 0: not yet)
        self.held = 0


class Hold:
    """One request held for a waking model, until ``release``."""

    __slots__ = ("_has_turn", "_polls", "_waking", "deadline", "key", "wake")

    def __init__(self, waking: Waking, key: tuple[str, str], wake: Wake, seconds: float) -> None:
        self._waking = waking
        self.key = key
        self.wake = wake
        self.deadline = time.monotonic() + seconds
        self._has_turn = False
        self._polls = 0
        wake.held += 1
        metrics.held(wake.model, 1)
        notify = HOLDING.get()
        if notify is not None:
            notify()

    async def next_try(self, retry_after: float | None) -> bool:
        """Wait until this request may try again: its turn to ask, after a back-off, or
        the model answered meanwhile (at once). False: its bound passed first (gave up)."""
        wake = self.wake
        if not self._has_turn:
            since = time.monotonic()
            try:
                async with asyncio.timeout(max(self.deadline - since, 0.0)):
                    await wake.turn.acquire()
            except TimeoutError:
                return self._gave_up()
            if wake.woke_at >= since:  # it serves now: no need to ask for others
                wake.turn.release()
                return True
            self._has_turn = True
        delay = (
            retry_after
            if retry_after is not None
            else POLL_FIRST_SECONDS * 2 ** min(self._polls, 8)
        )
        delay = min(delay, POLL_MAX_SECONDS, self.deadline - time.monotonic())
        if delay <= 0:
            return self._gave_up()
        self._polls += 1
        await asyncio.sleep(delay)
        return True

    def _gave_up(self) -> bool:
        metrics.count_gave_up(self.wake.model)
        return False

    def answered(self) -> None:
        """The model served this request: every request held for it may go."""
        wake = self.wake
        now = time.monotonic()
        if not wake.woke_at:
            metrics.observe_wake(wake.model, now - wake.started)
        wake.woke_at = now

    def release(self) -> None:
        """The request is no longer held (served, failed otherwise, gave up or left)."""
        if self._has_turn:
            self._has_turn = False
            self.wake.turn.release()
        wake = self.wake
        wake.held -= 1
        metrics.held(wake.model, -1)
        if not wake.held:
            self._waking.wakes.pop(self.key, None)


class Waking:
    """The wakes in progress of one router."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds  # JAN_UPSTREAM_WARMUP_SECONDS
        self.wakes: dict[tuple[str, str], Wake] = {}

    def joining(self, key: tuple[str, str]) -> Hold | None:
        """A hold on the wake in progress for ``key``, if any (before a first try)."""
        wake = self.wakes.get(key)
        if wake is None or wake.woke_at or not wake.turn.locked():
            return None  # (woken: it serves, the held ones are on their way)
        return Hold(self, key, wake, self.seconds)

    def hold(self, key: tuple[str, str], model: str) -> Hold:
        """Hold a request whose every endpoint answered cold."""
        wake = self.wakes.get(key)
        if wake is None:
            wake = self.wakes[key] = Wake(model)
        return Hold(self, key, wake, self.seconds)
