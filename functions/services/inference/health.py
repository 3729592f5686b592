"""Endpoint health: passive ejection, probing before return, shared between instances.

Each upstream base URL has one ``Endpoint`` per process holding its outstanding requests
(for least-outstanding balancing) and its health. After ``EJECT_AFTER`` consecutive
failures (as classified by ``failures``) it is ejected for a while, doubling on each
repeat up to a ceiling; once that time passes the prober makes it prove it serves (its
``/models`` and a one-token completion, ``Catalog.probe``) and only a success returns it
to rotation; a failed probe keeps it out for the next, doubled, time. An endpoint ejected again
within ``TRIAL_SECONDS`` of its return keeps the doubled back-off.

An endpoint that answers but far slower than its peers is ejected the same way (latency
outlier ejection): each keeps its last ``WINDOW`` times to first byte in a fixed ring, and
when one of them is at least ``slow_min_seconds``, its p90 over the ring is compared with
the p90 of the model's other endpoints in rotation, pooled; above ``slow_factor`` times
that and ``slow_min_seconds`` more, it is ejected with reason ``slow``. Like is compared
with like: a model's latencies are spread (long prompts, long non-streamed answers), so
an endpoint's tail against its peers' median would eject healthy endpoints. Both sides need
``slow_samples`` samples; a model with no other endpoint in rotation never ejects for
slowness (there is nowhere else to go). Fast requests pay one ring write and a compare.

Ejections and returns (not every request) are written to a shared store, the database or
Redis, and read back periodically, so a fresh instance, or one that scaled from zero,
starts with what the others learned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from functions.common.db import Executor
from functions.services.inference import metrics

log = logging.getLogger(__name__)

EJECT_AFTER = 3
EJECT_BASE_SECONDS = 2.0
EJECT_MAX_SECONDS = 60.0
TRIAL_SECONDS = 60.0  # ejected again within this time of a return: the back-off grows
WINDOW = 32  # times to first byte kept per endpoint
SLOW_FACTOR = 3.0  # JAN_UPSTREAM_SLOW_FACTOR's default
SLOW_MIN_SECONDS = 1.0  # JAN_UPSTREAM_SLOW_MIN_SECONDS' default
SLOW_SAMPLES = 8


@dataclass(slots=True, eq=False)
class Endpoint:
    base_url: str
    # How metrics and logs name it (``prov_…/0``, ``builtin``), never by URL: the label
    # of the first provider that routes to it; empty until one does.
    label: str = ""
    outstanding: int = 0
    failures: int = 0
    ejected_until: float = 0.0  # wall-clock seconds; 0 = in rotation
    ejections: int = 0  # consecutive ejections, for the doubling back-off
    changed_at: float = 0.0  # wall clock of the last state change we know of
    # Wall clock of this process's last call to it: discovery polls an endpoint that
    # scales to zero only while it is in use (``Catalog.discover_stale``).
    used_at: float = 0.0
    returned_at: float = 0.0  # wall clock of its last return to rotation
    # The last ``WINDOW`` times to first byte (a ring; ``samples`` counts every one).
    ttfb: list[float] = field(default_factory=lambda: [0.0] * WINDOW)
    samples: int = 0

    def window(self) -> list[float]:
        return self.ttfb[: min(self.samples, WINDOW)]

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0.0


def p90(samples: list[float]) -> float:
    samples.sort()
    return samples[int(0.9 * (len(samples) - 1))]


@dataclass(frozen=True, slots=True)
class SharedState:
    base_url: str
    failures: int
    ejected_until: float
    changed_at: float


class HealthStore(Protocol):
    async def load(self) -> list[SharedState]: ...

    async def save(self, state: SharedState) -> None: ...


class DatabaseHealthStore:
    def __init__(self, executor: Callable[[], Executor]) -> None:
        self._executor = executor

    async def load(self) -> list[SharedState]:
        rows = await self._executor().fetch(
            "SELECT base_url, consecutive_failures, ejected_until, updated_at"
            " FROM inference_endpoint_health"
        )
        return [
            SharedState(
                r["base_url"],
                r["consecutive_failures"],
                r["ejected_until"].timestamp() if r["ejected_until"] else 0.0,
                r["updated_at"].timestamp(),
            )
            for r in rows
        ]

    async def save(self, state: SharedState) -> None:
        until = datetime.fromtimestamp(state.ejected_until, UTC) if state.ejected_until else None
        changed = datetime.fromtimestamp(state.changed_at, UTC)
        await self._executor().execute(
            "INSERT INTO inference_endpoint_health"
            " (base_url, consecutive_failures, ejected_until, updated_at)"
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (base_url) DO UPDATE SET consecutive_failures = $2,"
            " ejected_until = $3, updated_at = $4",
            state.base_url,
            state.failures,
            until,
            changed,
        )


class RedisHealthStore:
    """The same in one Redis hash (used when REDIS_URL is set)."""

    KEY = "jan:inference:endpoint-health"

    def __init__(self, url: str, *, key: str = KEY) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self.key = key  # one hash per deployment (tests use their own)

    async def load(self) -> list[SharedState]:
        raw: dict[Any, Any] = await self._redis.hgetall(self.key)
        out = []
        for value in raw.values():
            d = orjson.loads(value)
            out.append(SharedState(d["u"], d["f"], d["e"], d["c"]))
        return out

    async def save(self, state: SharedState) -> None:
        value = orjson.dumps(
            {
                "u": state.base_url,
                "f": state.failures,
                "e": state.ejected_until,
                "c": state.changed_at,
            }
        )
        await self._redis.hset(self.key, state.base_url, value)

    async def close(self) -> None:
        await self._redis.aclose()


Probe = Callable[[str], Awaitable[bool]]


class HealthBook:
    """Every endpoint this process knows, its health, and the background prober."""

    def __init__(
        self,
        store: HealthStore | None,
        *,
        eject_after: int = EJECT_AFTER,
        slow_factor: float = SLOW_FACTOR,
        slow_min_seconds: float = SLOW_MIN_SECONDS,
        slow_samples: int = SLOW_SAMPLES,
    ) -> None:
        self.store = store
        self.eject_after = eject_after
        self.slow_factor = slow_factor  # 0: no latency outlier ejection
        self.slow_min_seconds = slow_min_seconds
        self.slow_samples = slow_samples
        self._endpoints: dict[str, Endpoint] = {}
        self._pending: set[asyncio.Task[None]] = set()
        metrics.track(self)

    def endpoint(self, base_url: str, *, label: str = "") -> Endpoint:
        ep = self._endpoints.get(base_url)
        if ep is None:
            ep = self._endpoints[base_url] = Endpoint(base_url, label)
        elif label and not ep.label:
            ep.label = label
        return ep

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def used_at(self, base_url: str) -> float:
        """When this process last called the endpoint (0: never)."""
        ep = self._endpoints.get(base_url)
        return ep.used_at if ep is not None else 0.0

    # --- what the router reports ------------------------------------------------------
    def succeeded(self, ep: Endpoint) -> None:
        if ep.failures:
            ep.failures = 0

    def failed(self, ep: Endpoint) -> None:
        ep.failures += 1
        if ep.failures >= self.eject_after and not ep.ejected:
            self._eject(ep, "failures")

    def answered(self, ep: Endpoint, seconds: float, peers: tuple[Endpoint, ...]) -> None:
        """A successful call's time to first byte; ``peers``: the model's endpoints."""
        ep.ttfb[ep.samples % WINDOW] = seconds
        ep.samples += 1
        if (
            seconds >= self.slow_min_seconds
            and self.slow_factor > 0
            and ep.samples >= self.slow_samples
            and len(peers) > 1
            and not ep.ejected
        ):
            self._check_slow(ep, peers)

    def _check_slow(self, ep: Endpoint, peers: tuple[Endpoint, ...]) -> None:
        others = [
            s
            for p in peers
            if p is not ep and not p.ejected and p.samples >= self.slow_samples
            for s in p.window()
        ]
        if not others:  # nowhere else to go
            return
        peers_p90 = p90(others)
        mine = p90(ep.window())
        if mine > max(self.slow_factor * peers_p90, peers_p90 + self.slow_min_seconds):
            self._eject(ep, "slow", p90=round(mine, 3), peers_p90=round(peers_p90, 3))

    # --- ejection and return ----------------------------------------------------------
    def _eject(self, ep: Endpoint, reason: str, **detail: float) -> None:
        now = time.time()
        if ep.returned_at and now - ep.returned_at > TRIAL_SECONDS:
            ep.ejections = 0  # it served a good while since its last return
        seconds = min(EJECT_BASE_SECONDS * 2**ep.ejections, EJECT_MAX_SECONDS)
        ep.ejections += 1
        ep.ejected_until = now + seconds
        ep.samples = 0  # back in rotation, it is judged on fresh times
        metrics.count_ejection(ep.label, reason)
        log.warning(
            "endpoint ejected",
            extra={
                "endpoint": ep.label,
                "reason": reason,
                "failures": ep.failures,
                "seconds": seconds,
                **detail,
            },
        )
        self._share(ep)

    def _reinstate(self, ep: Endpoint) -> None:
        ep.failures = 0
        ep.ejected_until = 0.0
        ep.returned_at = time.time()
        log.info("endpoint back in rotation", extra={"endpoint": ep.label})
        self._share(ep)

    async def probe_due(self, probe: Probe) -> None:
        """Probe each ejected endpoint whose time is up; return it only if it answers."""
        now = time.time()
        due = [ep for ep in self._endpoints.values() if ep.ejected and ep.ejected_until <= now]
        results = await asyncio.gather(*(probe(ep.base_url) for ep in due))
        for ep, ok in zip(due, results, strict=True):
            if ok:
                self._reinstate(ep)
            else:
                self._eject(ep, "probe")

    # --- sharing ----------------------------------------------------------------------
    def _share(self, ep: Endpoint) -> None:
        ep.changed_at = time.time()
        if self.store is None:
            return
        state = SharedState(ep.base_url, ep.failures, ep.ejected_until, ep.changed_at)
        task = asyncio.get_running_loop().create_task(self._save(state))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _save(self, state: SharedState) -> None:
        assert self.store is not None
        try:
            await self.store.save(state)
        except Exception as exc:  # sharing is best effort; local health still works
            log.warning("could not share endpoint health", extra={"error": type(exc).__name__})

    async def pull(self) -> None:
        """Adopt what other instances wrote, where it is newer than what we know."""
        if self.store is None:
            return
        try:
            states = await self.store.load()
        except Exception as exc:
            log.warning("could not load endpoint health", extra={"error": type(exc).__name__})
            return
        for state in states:
            ep = self.endpoint(state.base_url)
            if state.changed_at > ep.changed_at:
                ep.failures = state.failures
                ep.ejected_until = state.ejected_until
                ep.changed_at = state.changed_at

    async def settle(self) -> None:
        """Wait for pending shares (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
