"""The limiter: admission of every model call against its plan's counters, and the
reconciliation of reserved tokens with the real usage when the call ends.

    ticket = await limiter.admit(principal, model, operation, body, size)  # 429/503 raised
    ...                                                # the call
    ticket.settle(used_tokens)                         # once (LedgerEntry.write does it)

Memory mode (one instance): the counters live in this process; a check is a few float
operations per counter. Shared mode (Redis, or PostgreSQL): each instance leases units
from the shared buckets in blocks (``Spec.block``: a tenth of the capacity) and decides
locally while its lease lasts; a background task tops leases up before they run out,
hands back what an idle counter holds, charges debts (tokens used beyond a reservation)
and renews concurrency slots. A call waits for the store only when its lease does not
cover it; when the shared bucket is nearly empty leases shrink to what each call needs.

Slack (what can be accepted beyond a limit L per period P, in any interval T):
requests: L + L·T/P (a bucket's own refill — OpenAI's limits replenish continuously), and
nothing more across any number of instances, since a grant never takes a shared bucket
below zero. Tokens: the same, plus what calls use beyond their reservations
(reservations are input estimate + max tokens, so only when a call names no max tokens
or its prompt tokenises denser than bytes/4); that excess is charged afterwards as a
debt, so the average over time holds. Concurrent requests: exact, except that slots
freed on one instance reach another within ``SHRINK_SECONDS``. While the store is
unreachable: an organization that fails open has each instance enforce every limit on
its own (at most N·L with N instances), one that fails closed gets 503s beyond the leases
already held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter

from functions.common import errors
from functions.common.principal import Principal
from functions.common.runtime import Component, Runtime
from functions.common.settings import Settings
from functions.services.limits import store
from functions.services.limits.rules import (
    CONCURRENT,
    REQUESTS,
    TOKENS,
    LimitSet,
    OrgRules,
    Plan,
    Spec,
    make_plan,
)
from functions.services.limits.shared import (
    Ask,
    PostgresStore,
    RedisStore,
    SharedStore,
    SlotAsk,
    StoreUnavailable,
)
from functions.services.pricing import Price

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "jan_rate_limit_refusals_total",
    "Model calls refused by the rate limiter, by reason (the limit that was reached, or "
    "`unavailable`: shared counters unreachable under a fail-closed policy) and scope.",
    ["reason", "scope"],
)
STORE_FAILURES = Counter(
    "jan_rate_limit_store_failures_total",
    "Exchanges with the shared rate-limit store that failed.",
    ["store"],
)

RENEW_SECONDS = 0.25  # the background exchange's period
IDLE_RETURN_SECONDS = 1.0  # a lease unused this long is handed back
SHRINK_SECONDS = 1.0  # slots unused this long are handed back
FORGET_SECONDS = 300.0  # a counter unused this long is dropped from memory
REFUSE_LOCALLY_SECONDS = 0.25  # after the store said no, refuse without asking it again
DOWN_SECONDS = 1.0  # after a failure, the request path does not try the store this long
SWEEP_SECONDS = 60.0  # shared store cleanup; in memory mode, counters back to full dropped
MAX_PLANS = 100_000

# The admission of the current call (its headers), for handlers whose model call happens
# further down (Responses); each request runs in a context of its own.
ADMITTED: ContextVar[Ticket | None] = ContextVar("jan_rate_limit_admitted", default=None)


def store_mode(settings: Settings) -> str:
    mode = settings.jan_rate_limit_store
    if mode != "auto":
        return mode
    if settings.redis_url is not None:
        return "redis"
    return "memory" if settings.embedded_database else "postgres"


# --- counters held in this process -------------------------------------------------------
class Bucket:
    """A token bucket of this process (memory mode, and the fallback of shared mode)."""

    __slots__ = ("capacity", "level", "rate", "spec", "stamp")

    def __init__(self, spec: Spec, now: float, level: float | None = None) -> None:
        self.spec = spec
        self.capacity = spec.capacity
        self.rate = spec.rate
        self.level = float(spec.capacity) if level is None else level
        self.stamp = now

    def resize(self, spec: Spec) -> None:
        self.spec = spec
        self.capacity, self.rate = spec.capacity, spec.rate
        self.level = min(self.level, float(spec.capacity))

    def take(self, n: int, now: float) -> float:
        """Take ``n`` units: 0.0 when taken, else the seconds until they are there."""
        level = self.level + (now - self.stamp) * self.rate
        if level > self.capacity:
            level = self.capacity
        self.stamp = now
        if level >= n:
            self.level = level - n
            return 0.0
        self.level = level
        return (n - level) / self.rate

    def adjust(self, n: float) -> None:
        """Charge ``n`` more units (negative: give them back)."""
        level = self.level - n
        self.level = level if level < self.capacity else self.capacity

    def remaining(self, now: float) -> float:
        level = self.level + (now - self.stamp) * self.rate
        return level if level < self.capacity else self.capacity


class Slots:
    """Concurrent calls in flight (memory mode)."""

    __slots__ = ("inflight", "spec")

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.inflight = 0

    def release(self) -> None:
        self.inflight -= 1


class Lease:
    """This instance's share of a shared bucket: ``held`` units leased and not used yet
    (negative: used beyond the lease, a debt to charge), and what the shared bucket held
    at the last exchange (``level`` at ``stamp``)."""

    __slots__ = ("fallback", "held", "level", "lock", "spec", "stamp", "used_at")

    def __init__(self, spec: Spec, now: float) -> None:
        self.spec = spec
        self.held = 0.0
        self.level = float(spec.capacity)
        self.stamp = -math.inf  # never exchanged
        self.used_at = now
        self.lock = asyncio.Lock()
        self.fallback: Bucket | None = None

    def shared(self, now: float) -> float:
        """The shared bucket's level now, as last seen (refilled since)."""
        spec = self.spec
        if self.stamp == -math.inf:
            return float(spec.capacity)
        level = self.level + (now - self.stamp) * spec.rate
        return level if level < spec.capacity else float(spec.capacity)

    def remaining(self, now: float) -> float:
        return max(0.0, self.held) + self.shared(now)


class SharedSlots:
    """This instance's allowance of a shared concurrency counter."""

    __slots__ = ("allowance", "inflight", "lock", "renewed_at", "spec", "used_at")

    def __init__(self, spec: Spec, now: float) -> None:
        self.spec = spec
        self.inflight = 0
        self.allowance = 0
        self.renewed_at = -math.inf
        self.used_at = now
        self.lock = asyncio.Lock()

    def release(self) -> None:
        self.inflight -= 1


# --- the admission of one call -------------------------------------------------------------
class Ticket:
    """A call's admission: what it took from which counter, reconciled once by ``settle``;
    the model's price (the ledger records the call's cost) and the tokens reserved."""

    __slots__ = ("limiter", "price", "reserved", "settled", "taken")

    def __init__(
        self,
        limiter: Limiter,
        taken: list[tuple[Any, int]],
        price: Price | None = None,
        reserved: int = 0,
    ) -> None:
        self.limiter = limiter
        self.taken = taken  # (counter, units taken)
        self.price = price
        self.reserved = reserved
        self.settled = False

    def settle(self, used_tokens: int | None, cost: int = 0) -> None:
        """The call ended: give back the reservation's unused tokens (or charge the
        excess) and free its concurrency slots. ``used_tokens`` None: not known, the
        reservation stands. ``cost``: what the call cost, in picodollars."""
        if self.settled:
            return
        self.settled = True
        debt = False
        for counter, n in self.taken:
            kind = counter.spec.kind
            if kind == CONCURRENT:
                counter.release()
            elif kind == TOKENS and used_tokens is not None and used_tokens != n:
                if isinstance(counter, Lease):
                    counter.held -= used_tokens - n
                    debt = debt or counter.held < 0
                else:
                    counter.adjust(used_tokens - n)
        if debt:
            self.limiter.wake()

    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers: of the requests and of the tokens counters
        that are the nearest to their limit."""
        return {k.decode(): v.decode() for k, v in self.raw_headers()}

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The same, as an ASGI response's header list (what the handlers send)."""
        now = self.limiter.clock()
        requests = tokens = None
        least_requests = least_tokens = math.inf
        for counter, _ in self.taken:
            kind = counter.spec.kind
            if kind == REQUESTS:
                left = counter.remaining(now)
                if left < least_requests:
                    least_requests, requests = left, counter
            elif kind == TOKENS:
                left = counter.remaining(now)
                if left < least_tokens:
                    least_tokens, tokens = left, counter
        out: list[tuple[bytes, bytes]] = []
        if requests is not None:
            _describe(out, _REQUESTS_HEADERS, requests.spec, least_requests)
        if tokens is not None:
            _describe(out, _TOKENS_HEADERS, tokens.spec, least_tokens)
        return out


_REQUESTS_HEADERS = (
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
)
_TOKENS_HEADERS = (
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
)


def _describe(
    out: list[tuple[bytes, bytes]], names: tuple[bytes, bytes, bytes], spec: Spec, left: float
) -> None:
    out.append((names[0], spec.limit_header))
    out.append((names[1], b"%d" % (left if left > 0 else 0)))
    empty = spec.capacity - left
    out.append((names[2], b"0ms" if empty <= 0 else duration(empty / spec.rate).encode()))


def duration(seconds: float) -> str:
    """As OpenAI writes its reset times (Go's duration format): ``20ms``, ``1s``,
    ``6m0s``, ``1h2m3.5s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    seconds = math.ceil(seconds * 1000) / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def reservation(operation: str, body: dict[str, Any], size: int, default_output: int) -> int:
    """Tokens to reserve for a call: the input estimated as bytes/4, plus the output it
    may produce (its max tokens, else the default; times ``n`` choices)."""
    if operation == "embeddings":
        return size // 4
    out = body.get("max_completion_tokens")
    if not isinstance(out, int) or isinstance(out, bool) or out <= 0:
        out = body.get("max_tokens")
        if not isinstance(out, int) or isinstance(out, bool) or out <= 0:
            out = default_output
    choices = body.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and 1 < choices <= 128:
        out *= choices
    return size // 4 + out


# --- the limiter ---------------------------------------------------------------------------
class Limiter(Component):
    def __init__(
        self,
        runtime: Runtime,
        *,
        shared: SharedStore | None = None,
        mode: str | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.mode = mode or store_mode(settings)
        if shared is None and self.mode == "redis":
            if settings.redis_url is None:
                raise ValueError("JAN_RATE_LIMIT_STORE=redis needs REDIS_URL")
            shared = RedisStore(settings.redis_url.get_secret_value())
        elif shared is None and self.mode == "postgres":
            shared = PostgresStore(lambda: runtime.db.writer)
        self.shared = shared
        self.instance = secrets.token_hex(8)
        self.clock = time.monotonic  # tests move time with a clock of their own
        self.failure_mode = settings.jan_rate_limit_failure_mode
        self.default_output = settings.jan_rate_limit_default_output_tokens
        self.refresh_seconds = settings.jan_rate_limit_refresh_seconds
        rpm, tpd = settings.jan_guest_requests_per_minute, settings.jan_guest_tokens_per_day
        self.guest = (
            LimitSet(max_requests_per_1_minute=rpm or None, max_tokens_per_1_day=tpd or None)
            if rpm or tpd
            else None
        )
        self.rules: dict[str, OrgRules] = {}
        self._loading: dict[str, asyncio.Task[OrgRules]] = {}
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self.counters: dict[str, Any] = {}
        self.down_until = 0.0
        self._next_prune = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # --- lifecycle ------------------------------------------------------------------------
    async def stop(self) -> None:
        self._stopped = True
        for task in [self._task, *self._loading.values()]:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = None
        if self.shared is not None:
            with contextlib.suppress(Exception):
                await self._give_back_all()
            await self.shared.close()

    def wake(self) -> None:
        """Run the background exchange now (shared mode)."""
        if self.shared is None or self._stopped:
            return
        if self._task is None or self._task.done():
            # Started on first use: a process whose organizations set no limits runs nothing.
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())
        self._wake.set()

    def forget(self, organization_id: str | None = None) -> None:
        """Definitions changed (in this process): load them again on the next call."""
        if organization_id is None:
            self.rules.clear()
        else:
            self.rules.pop(organization_id, None)

    # --- definitions ---------------------------------------------------------------------
    async def _rules(self, organization_id: str, stale: OrgRules | None) -> OrgRules:
        loading = self._loading.get(organization_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._load(organization_id))
            self._loading[organization_id] = loading
            loading.add_done_callback(lambda task: self._loaded(organization_id, task))
        if stale is not None:
            return stale  # the reload runs in the background meanwhile
        try:
            return await asyncio.shield(loading)
        except Exception:
            raise errors.ServiceUnavailable(
                "Rate limits could not be checked; retry shortly.", headers={"Retry-After": "1"}
            ) from None

    def _loaded(self, organization_id: str, task: asyncio.Task[OrgRules]) -> None:
        self._loading.pop(organization_id, None)
        if not task.cancelled() and task.exception() is not None:  # retrieved: logged once
            log.warning(
                "rate limits could not be reloaded",
                extra={"error": type(task.exception()).__name__},
            )

    async def _load(self, organization_id: str) -> OrgRules:
        # The writer: an owner who just changed a limit sees it applied at once.
        rules = await store.load_rules(self.runtime.db.writer, organization_id=organization_id)
        rules.loaded_at = self.clock()
        self.rules[organization_id] = rules
        if len(self._plans) > MAX_PLANS:
            self._plans.clear()
        return rules

    def plan(self, principal: Principal, model: str, rules: OrgRules) -> Plan:
        key = (
            principal.organization_id,
            principal.project_id,
            model,
            principal.api_key_id,
            principal.user_id,
            principal.is_guest,
        )
        plan = self._plans.get(key)
        if plan is None or plan.rules is not rules:
            plan = make_plan(
                rules, principal, model, guest=self.guest, failure_mode=self.failure_mode
            )
            self._plans[key] = plan
        return plan

    # --- admission ------------------------------------------------------------------------
    async def admit(
        self, principal: Principal, model: str, operation: str, body: dict[str, Any], size: int
    ) -> Ticket | None:
        """Admit a call of ``operation`` to ``model`` whose request is ``size`` bytes, or
        raise 429 (a limit is reached) / 503 (fail closed). None: no limit applies."""
        rules = self.rules.get(principal.organization_id)
        if rules is None or self.clock() - rules.loaded_at > self.refresh_seconds:
            rules = await self._rules(principal.organization_id, rules)
        plan = self.plan(principal, model, rules)
        if not plan.specs:
            ADMITTED.set(None)
            if plan.price is None:
                return None
            reserve = reservation(operation, body, size, self.default_output)
            return Ticket(self, [], plan.price, reserve)
        reserve = (
            reservation(operation, body, size, self.default_output)
            if plan.tokens or plan.price is not None
            else 0
        )
        if self.shared is None:
            ticket = self._admit_here(plan, reserve)
        else:
            ticket = await self._admit_shared(plan, reserve)
        ticket.price, ticket.reserved = plan.price, reserve
        ADMITTED.set(ticket)
        return ticket

    def _admit_here(self, plan: Plan, reserve: int) -> Ticket:
        now = self.clock()
        if now >= self._next_prune:
            self._prune(now)
        counters = self.counters
        taken: list[tuple[Any, int]] = []
        for spec in plan.specs:
            counter = counters.get(spec.key)
            if spec.kind == CONCURRENT:
                if counter is None:
                    counter = counters[spec.key] = Slots(spec)
                elif counter.spec is not spec:
                    counter.spec = spec
                if counter.inflight >= spec.capacity:
                    self._undo(taken)
                    raise self._refused(spec, 1, 1.0)
                counter.inflight += 1
                taken.append((counter, 1))
                continue
            if counter is None:
                counter = counters[spec.key] = Bucket(spec, now)
            elif counter.spec is not spec:
                counter.resize(spec)
            n = 1 if spec.kind == REQUESTS else min(reserve, spec.capacity)
            wait = counter.take(n, now)
            if wait:
                self._undo(taken)
                raise self._refused(spec, n, wait)
            taken.append((counter, n))
        return Ticket(self, taken)

    def _prune(self, now: float) -> None:
        """Memory mode, once a minute: drop counters that are as good as new (a bucket
        refilled to full, no call in flight), so idle keys and guests cost no memory."""
        self._next_prune = now + SWEEP_SECONDS
        for key, counter in list(self.counters.items()):
            if isinstance(counter, Slots):
                if counter.inflight == 0:
                    del self.counters[key]
            elif counter.remaining(now) >= counter.capacity:
                del self.counters[key]

    def _undo(self, taken: list[tuple[Any, int]]) -> None:
        for counter, n in taken:
            if counter.spec.kind == CONCURRENT:
                counter.release()
            elif isinstance(counter, Lease):
                counter.held += n
            else:
                counter.adjust(-n)

    async def _admit_shared(self, plan: Plan, reserve: int) -> Ticket:
        now = self.clock()
        counters = self.counters
        taken: list[tuple[Any, int]] = []
        try:
            for spec in plan.specs:
                counter = counters.get(spec.key)
                if spec.kind == CONCURRENT:
                    if counter is None:
                        counter = counters[spec.key] = SharedSlots(spec, now)
                    elif counter.spec is not spec:
                        counter.spec = spec
                    counter.used_at = now
                    if counter.inflight < counter.allowance:
                        counter.inflight += 1
                    else:
                        await self._slot_slowly(counter, plan)
                    taken.append((counter, 1))
                    continue
                if counter is None:
                    counter = counters[spec.key] = Lease(spec, now)
                    self.wake()  # the background exchange runs while there are leases
                elif counter.spec is not spec:
                    counter.spec = spec
                n = 1 if spec.kind == REQUESTS else min(reserve, spec.capacity)
                counter.used_at = now
                if counter.held >= n:
                    counter.held -= n
                    if counter.held * 2 < spec.block:
                        self.wake()  # top it up before it runs out
                else:
                    await self._lease_slowly(counter, n, plan)
                taken.append((counter, n))
        except BaseException:
            self._undo(taken)
            raise
        return Ticket(self, taken)

    async def _lease_slowly(self, lease: Lease, n: int, plan: Plan) -> None:
        """Take ``n`` units when the lease does not cover them: from the store (topping the
        lease up), or as the failure policy says when it cannot answer."""
        spec = lease.spec
        async with lease.lock:
            now = self.clock()
            if lease.held >= n:
                lease.held -= n
                return
            if now < self.down_until:
                self._fall_back(lease, n, plan, now)
                return
            if now - lease.stamp < REFUSE_LOCALLY_SECONDS and lease.shared(now) + lease.held < n:
                # The store said no a moment ago and cannot have refilled enough since.
                raise self._refused(spec, n, (n - lease.held - lease.shared(now)) / spec.rate)
            debt = max(0.0, -lease.held)
            lease.held += debt
            need = n - lease.held
            block = spec.block
            extra = block if lease.shared(now) >= 3 * block else 0
            ask = Ask(spec.key, spec.capacity, spec.rate, need + extra, need, debt)
            try:
                [(granted, level)] = await self.shared.lease([ask])  # type: ignore[union-attr]
            except StoreUnavailable:
                lease.held -= debt
                self._failed(now)
                self._fall_back(lease, n, plan, now)
                return
            now = self.clock()
            lease.held += granted
            lease.level, lease.stamp = level, now
            lease.fallback = None
            if lease.held >= n:
                lease.held -= n
                return
            raise self._refused(spec, n, (n - lease.held - level) / spec.rate)

    async def _slot_slowly(self, slots: SharedSlots, plan: Plan) -> None:
        spec = slots.spec
        async with slots.lock:
            now = self.clock()
            if slots.inflight < slots.allowance:
                slots.inflight += 1
                return
            if now >= self.down_until:
                ask = SlotAsk(spec.key, spec.capacity, slots.inflight + 1, slots.inflight)
                try:
                    [(allowance, _)] = await self.shared.slots(  # type: ignore[union-attr]
                        self.instance, [ask]
                    )
                except StoreUnavailable:
                    self._failed(now)
                else:
                    slots.allowance, slots.renewed_at = allowance, self.clock()
                    if slots.inflight < allowance:
                        slots.inflight += 1
                        return
                    raise self._refused(spec, 1, 1.0)
            # The store cannot answer.
            if plan.failure_mode == "closed":
                raise self._unavailable(spec)
            if slots.inflight >= spec.capacity:
                raise self._refused(spec, 1, 1.0)
            slots.inflight += 1

    def _fall_back(self, lease: Lease, n: int, plan: Plan, now: float) -> None:
        """The store cannot answer: refuse (fail closed), or decide here alone (fail open)
        with a bucket of this process that starts where the shared one was last seen;
        what it admits is a debt charged once the store answers again."""
        spec = lease.spec
        if plan.failure_mode == "closed":
            raise self._unavailable(spec)
        if lease.fallback is None:
            lease.fallback = Bucket(spec, now, level=lease.remaining(now))
        wait = lease.fallback.take(n, now)
        if wait:
            raise self._refused(spec, n, wait)
        lease.held -= n

    def _failed(self, now: float) -> None:
        assert self.shared is not None
        STORE_FAILURES.labels(self.shared.name).inc()
        if now >= self.down_until:
            log.warning("rate-limit store unreachable", extra={"store": self.shared.name})
        self.down_until = now + DOWN_SECONDS

    # --- refusals ---------------------------------------------------------------------------
    def _refused(self, spec: Spec, n: int, wait: float) -> errors.RateLimited:
        REFUSALS.labels(spec.reason, spec.scope).inc()
        wait = max(wait, 0.001)
        headers = {
            "Retry-After": str(math.ceil(wait)),
            "retry-after-ms": str(math.ceil(wait * 1000)),
        }
        if spec.kind != CONCURRENT:
            name = "requests" if spec.kind == REQUESTS else "tokens"
            headers[f"x-ratelimit-limit-{name}"] = str(spec.capacity)
            headers[f"x-ratelimit-remaining-{name}"] = "0"
            headers[f"x-ratelimit-reset-{name}"] = duration(wait)
        return errors.RateLimited(
            f"Rate limit reached for {spec.subject} on {spec.label}: Limit {spec.capacity}, "
            f"Requested {n}. Please try again in {duration(wait)}.",
            headers=headers,
        )

    def _unavailable(self, spec: Spec) -> errors.ServiceUnavailable:
        REFUSALS.labels("unavailable", spec.scope).inc()
        return errors.ServiceUnavailable(
            "Rate limits cannot be checked right now and this organization refuses calls "
            "it cannot check; retry shortly.",
            code="rate_limit_unavailable",
            headers={"Retry-After": "1"},
        )

    # --- background exchange (shared mode) ----------------------------------------------
    async def _renew_forever(self) -> None:
        next_sweep = self.clock() + SWEEP_SECONDS
        while not self._stopped:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that arrives as the wait ends (stop() would then wait forever).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENEW_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.renew()
                if self.clock() >= next_sweep:
                    next_sweep = self.clock() + SWEEP_SECONDS
                    assert self.shared is not None
                    await self.shared.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rate-limit renewal failed")
            await asyncio.sleep(0)  # a wake during renew() runs again, but not in a tight loop

    async def renew(self) -> None:
        """One round of the background exchange: top up leases running low, hand back idle
        ones, charge debts, renew or shrink slots, forget long-unused counters."""
        shared = self.shared
        assert shared is not None
        now = self.clock()
        leases: list[tuple[Lease, float, float]] = []  # (lease, units sent back, debt)
        asks: list[Ask] = []
        slots: list[SharedSlots] = []
        slot_asks: list[SlotAsk] = []
        for key, counter in list(self.counters.items()):
            spec = counter.spec
            if isinstance(counter, Lease):
                if counter.lock.locked():
                    continue  # a call is exchanging it now
                idle = now - counter.used_at
                if idle > FORGET_SECONDS and counter.held == 0:
                    del self.counters[key]
                    continue
                block = spec.block
                debt = max(0.0, -counter.held)
                back = 0.0
                want = 0.0
                if idle > IDLE_RETURN_SECONDS:
                    back = max(0.0, math.floor(counter.held))
                elif counter.held < block / 2 and counter.shared(now) >= 3 * block:
                    want = block - max(0.0, counter.held)
                if not (debt or back or want):
                    continue
                counter.held += debt - back
                leases.append((counter, back, debt))
                asks.append(Ask(key, spec.capacity, spec.rate, want, 1, debt - back))
            elif isinstance(counter, SharedSlots):
                if counter.lock.locked():
                    continue
                idle = now - counter.used_at
                if idle > FORGET_SECONDS and counter.allowance == 0 and counter.inflight == 0:
                    del self.counters[key]
                    continue
                shrink = counter.allowance > counter.inflight and idle > SHRINK_SECONDS
                due = counter.allowance > 0 and now - counter.renewed_at > SLOT_RENEW_SECONDS
                if shrink or due:
                    slots.append(counter)
                    want = counter.inflight if shrink else counter.allowance
                    slot_asks.append(SlotAsk(key, spec.capacity, want, counter.inflight))
        if asks:
            try:
                results = await shared.lease(asks)
            except StoreUnavailable:
                for lease, back, debt in leases:
                    lease.held -= debt - back
                self._failed(now)
                return
            now = self.clock()
            self.down_until = 0.0
            for (lease, _, _), (granted, level) in zip(leases, results, strict=True):
                lease.held += granted
                lease.level, lease.stamp = level, now
                lease.fallback = None
        elif now >= self.down_until and self.down_until:
            await self._probe()
        if slot_asks:
            try:
                answers = await shared.slots(self.instance, slot_asks)
            except StoreUnavailable:
                self._failed(now)
                return
            now = self.clock()
            for counter, (allowance, _) in zip(slots, answers, strict=True):
                counter.allowance, counter.renewed_at = allowance, now

    async def _probe(self) -> None:
        """While the store is down and nothing else asks it: is it back?"""
        assert self.shared is not None
        try:
            await self.shared.lease([Ask("probe", 1, 1, 0, 0, 0)])
        except StoreUnavailable:
            self._failed(self.clock())
            return
        self.down_until = 0.0

    async def _give_back_all(self) -> None:
        """On stop: hand back what this instance holds, so others may use it at once."""
        assert self.shared is not None
        asks = [
            Ask(key, c.spec.capacity, c.spec.rate, 0, 0, -math.floor(c.held))
            for key, c in self.counters.items()
            if isinstance(c, Lease) and c.held >= 1
        ]
        slot_asks = [
            SlotAsk(key, c.spec.capacity, 0, 0)
            for key, c in self.counters.items()
            if isinstance(c, SharedSlots) and c.allowance
        ]
        if asks:
            await asyncio.wait_for(self.shared.lease(asks), 2.0)
        if slot_asks:
            await asyncio.wait_for(self.shared.slots(self.instance, slot_asks), 2.0)


SLOT_RENEW_SECONDS = 3.0  # slots are renewed this often (they expire after SLOT_TTL_SECONDS)
