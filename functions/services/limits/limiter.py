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

Budgets (spend limits, token budgets) are counters that never refill, one per calendar
period (UTC), leased like the others. A call reserves its tokens and, against a spend
limit, their price (input estimate at the input price, max output at the output price);
it settles with the tokens it used and what it cost. Grants never exceed what is left, so
a period's total stays within the budget plus what calls use beyond their reservations
(charged as a debt: the next calls are refused). The usage ledger is the ground truth:
a counter this process does not hold yet starts from what ``usage_hourly`` says its
scope used in the period, and every ``JAN_BUDGET_RECONCILE_SECONDS`` each instance
brings its counters (in shared mode, the store's too) down to capacity - used. A lost
counter (a Redis key evicted, Redis flushed, a row deleted, an instance restarted in
memory mode) is rebuilt from the ledger; what it can hand out twice is what was in
flight, leased (a tenth of the budget per instance) or used but not yet in the ledger
when it was lost — at most the usage of one reconcile interval plus the ledger's flush
delay — and one interval plus that delay later the counter is exact again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import asyncpg
from prometheus_client import Counter

from functions.common import errors
from functions.common.db import CONNECTION_ERRORS
from functions.common.principal import Principal
from functions.common.runtime import Component, Runtime
from functions.common.settings import Settings
from functions.services.limits import store
from functions.services.limits.rules import (
    CONCURRENT,
    REQUESTS,
    SPEND,
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
from functions.services.pricing import Price, spend_units

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "jan_rate_limit_refusals_total",
    "Model calls refused by the rate limiter, by reason (the limit that was reached, "
    "`spend_limit` or `token_budget` for a budget, or `unavailable`: shared counters "
    "unreachable under a fail-closed policy) and scope.",
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
LEDGER_TIMEOUT_SECONDS = 2.0  # reading what budgets used from the ledger
BUDGET_KEEP_SECONDS = 3600.0  # a budget's shared counter outlives its period this long
MAX_PLANS = 100_000
LEDGER_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
    TimeoutError,
    RuntimeError,  # the runtime is not open (yet, or any more)
)

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
        if spec.budget is not None:  # what was used stays used: the room changes with it
            self.level += spec.capacity - self.capacity
        self.spec = spec
        self.capacity, self.rate = spec.capacity, spec.rate
        self.level = min(self.level, float(spec.capacity))

    def take(self, n: int, now: float) -> float:
        """Take ``n`` units: 0.0 when taken, else the seconds until they are there
        (infinite for a budget, which does not refill)."""
        level = self.level + (now - self.stamp) * self.rate
        if level > self.capacity:
            level = self.capacity
        self.stamp = now
        if level >= n:
            self.level = level - n
            return 0.0
        self.level = level
        return (n - level) / self.rate if self.rate else math.inf

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

    __slots__ = ("fallback", "held", "level", "lock", "spec", "stamp", "used", "used_at")

    def __init__(self, spec: Spec, now: float) -> None:
        self.spec = spec
        self.held = 0.0
        self.level = float(spec.capacity)
        self.stamp = -math.inf  # never exchanged
        self.used_at = now
        self.lock = asyncio.Lock()
        self.fallback: Bucket | None = None
        self.used = 0.0  # a budget's: what the ledger says was used (sent with each ask)

    def respec(self, spec: Spec) -> None:
        if spec.budget is not None:  # a changed budget: the room left changes with it
            self.level += spec.capacity - self.spec.capacity
        self.spec = spec

    def shared(self, now: float) -> float:
        """The shared bucket's level now, as last seen (refilled since)."""
        spec = self.spec
        if self.stamp == -math.inf:
            return self.level  # the capacity, or a budget's room as the ledger says
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
        """The call ended: give back the reservation's unused tokens and spend (or charge
        the excess) and free its concurrency slots. ``used_tokens`` None: not known, the
        reservations stand. ``cost``: what the call cost, in picodollars."""
        if self.settled:
            return
        self.settled = True
        debt = False
        for counter, n in self.taken:
            kind = counter.spec.kind
            if kind == CONCURRENT:
                counter.release()
            elif kind != REQUESTS and used_tokens is not None:
                used = spend_units(cost) if kind == SPEND else used_tokens
                if used == n:
                    continue
                if isinstance(counter, Lease):
                    counter.held -= used - n
                    debt = debt or counter.held < 0
                else:
                    counter.adjust(used - n)
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
    return sum(reservation_parts(operation, body, size, default_output))


def reservation_parts(
    operation: str, body: dict[str, Any], size: int, default_output: int
) -> tuple[int, int]:
    """The reservation's input and output tokens (a spend reservation prices each)."""
    if operation == "embeddings":
        return size // 4, 0
    out = body.get("max_completion_tokens")
    if not isinstance(out, int) or isinstance(out, bool) or out <= 0:
        out = body.get("max_tokens")
        if not isinstance(out, int) or isinstance(out, bool) or out <= 0:
            out = default_output
    choices = body.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and 1 < choices <= 128:
        out *= choices
    return size // 4, out


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
        self.wall = time.time  # the budgets' calendar (Unix time)
        self.reconcile_seconds = settings.jan_budget_reconcile_seconds
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
        self._reconciling: asyncio.Task[None] | None = None
        self._seeding: dict[str, asyncio.Future[float | None]] = {}  # budget key → used
        self._stopped = False

    # --- lifecycle ------------------------------------------------------------------------
    async def stop(self) -> None:
        self._stopped = True
        for task in [self._task, self._reconciling, *self._loading.values()]:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._reconciling = None
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
        if (
            plan is None
            or plan.rules is not rules
            or (plan.expires != math.inf and self.wall() >= plan.expires)  # a new period
        ):
            plan = make_plan(
                rules,
                principal,
                model,
                guest=self.guest,
                failure_mode=self.failure_mode,
                now=self.wall(),
            )
            self._plans[key] = plan
        return plan

    # --- admission ------------------------------------------------------------------------
    async def admit(
        self, principal: Principal, model: str, operation: str, body: dict[str, Any], size: int
    ) -> Ticket | None:
        """Admit a call of ``operation`` to ``model`` whose request is ``size`` bytes, or
        raise 429 (a limit is reached or a budget spent) / 503 (fail closed). None: no
        limit applies."""
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
        reserve = spend = 0
        if plan.tokens or plan.price is not None:
            tokens_in, tokens_out = reservation_parts(operation, body, size, self.default_output)
            reserve = tokens_in + tokens_out
            if plan.spend:
                assert plan.price is not None
                spend = spend_units(plan.price.cost(tokens_in, 0, tokens_out))
        if plan.budgets:
            counters = self.counters
            for spec in plan.budgets:
                if spec.key not in counters:
                    await self._seed(plan)
                    break
        if self.shared is None:
            ticket = self._admit_here(plan, reserve, spend)
        else:
            ticket = await self._admit_shared(plan, reserve, spend)
        ticket.price, ticket.reserved = plan.price, reserve
        ADMITTED.set(ticket)
        return ticket

    def _admit_here(self, plan: Plan, reserve: int, spend: int) -> Ticket:
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
            kind = spec.kind
            n = 1 if kind == REQUESTS else min(spend if kind == SPEND else reserve, spec.capacity)
            wait = counter.take(n, now)
            if wait:
                self._undo(taken)
                raise self._refused(spec, n, wait)
            taken.append((counter, n))
        return Ticket(self, taken)

    def _prune(self, now: float) -> None:
        """Memory mode, once a minute: drop counters that are as good as new (a bucket
        refilled to full, no call in flight; a budget unused), so idle keys and guests
        cost no memory, and budgets of periods that ended."""
        self._next_prune = now + SWEEP_SECONDS
        wall = self.wall()
        for key, counter in list(self.counters.items()):
            if isinstance(counter, Slots):
                if counter.inflight == 0:
                    del self.counters[key]
            else:
                budget = counter.spec.budget
                ended = budget is not None and budget.period.ends_at <= wall
                if ended or counter.remaining(now) >= counter.capacity:
                    del self.counters[key]

    def _undo(self, taken: list[tuple[Any, int]]) -> None:
        for counter, n in taken:
            if counter.spec.kind == CONCURRENT:
                counter.release()
            elif isinstance(counter, Lease):
                counter.held += n
            else:
                counter.adjust(-n)

    async def _admit_shared(self, plan: Plan, reserve: int, spend: int) -> Ticket:
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
                    counter.respec(spec)
                kind = spec.kind
                n = (
                    1
                    if kind == REQUESTS
                    else min(spend if kind == SPEND else reserve, spec.capacity)
                )
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
                raise self._refused(spec, n, _seconds(spec, n - lease.held - lease.shared(now)))
            debt = max(0.0, -lease.held)
            lease.held += debt
            need = n - lease.held
            block = spec.block
            extra = block if lease.shared(now) >= 3 * block else 0
            ask = self._ask(lease, need + extra, need, debt)
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
            raise self._refused(spec, n, _seconds(spec, n - lease.held - level))

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

    def _ask(self, lease: Lease, want: float, minimum: float, adjust: float) -> Ask:
        """An exchange of ``lease`` with the shared store (a budget's carries what the
        ledger says was used, and how long its counter must live)."""
        spec = lease.spec
        budget = spec.budget
        if budget is None:
            return Ask(spec.key, spec.capacity, spec.rate, want, minimum, adjust)
        expires = budget.period.ends_at - self.wall() + BUDGET_KEEP_SECONDS
        return Ask(spec.key, spec.capacity, 0.0, want, minimum, adjust, lease.used, expires)

    # --- budgets: the usage ledger's word ----------------------------------------------------
    async def _seed(self, plan: Plan) -> None:
        """The budget counters of ``plan`` this process does not hold yet start from what
        the ledger says their scope used in the period, so a restarted instance hands out
        nothing twice. One read per counter, however many calls wait for it. When the
        ledger cannot be read, an organization that fails closed gets 503s; one that
        fails open starts the counter full, brought down by the next reconciliation."""
        waits: list[tuple[Spec, asyncio.Future[float | None]]] = []
        missing: list[tuple[Spec, asyncio.Future[float | None]]] = []
        for spec in plan.budgets:
            if spec.key in self.counters:
                continue
            future = self._seeding.get(spec.key)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._seeding[spec.key] = future
                missing.append((spec, future))
            waits.append((spec, future))
        if missing:
            used: Sequence[float | None] = [None] * len(missing)
            try:
                used = await self._ledger([spec for spec, _ in missing])
            except LEDGER_ERRORS as exc:
                log.warning("budget usage unreadable", extra={"error": type(exc).__name__})
            finally:  # also when cancelled: nobody waits for ever
                for (spec, future), found in zip(missing, used, strict=True):
                    self._seeding.pop(spec.key, None)
                    future.set_result(found)
        for spec, future in waits:
            found = await asyncio.shield(future)
            if found is None and plan.failure_mode == "closed":
                raise self._unavailable(spec)
            if spec.key not in self.counters:
                self._hold(spec, found or 0.0)
        if not self._stopped and (self._reconciling is None or self._reconciling.done()):
            self._reconciling = asyncio.get_running_loop().create_task(self._reconcile_forever())

    def _hold(self, spec: Spec, used: float) -> None:
        now = self.clock()
        room = spec.capacity - used
        if self.shared is None:
            self.counters[spec.key] = Bucket(spec, now, level=room)
            return
        lease = Lease(spec, now)
        lease.used, lease.level = used, room
        self.counters[spec.key] = lease
        self.wake()

    async def _ledger(self, specs: Sequence[Spec]) -> list[float]:
        """What each budget's scope used in its period, per the ledger (its own units)."""
        scopes = [spec.budget for spec in specs if spec.budget is not None]
        async with asyncio.timeout(LEDGER_TIMEOUT_SECONDS):
            found = await store.budget_usage(self.runtime.db.writer, scopes)
        return [
            float(spend_units(cost) if spec.kind == SPEND else tokens)
            for spec, (tokens, cost) in zip(specs, found, strict=True)
        ]

    async def _reconcile_forever(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.reconcile_seconds)
            try:
                if not await self.reconcile():
                    return  # no budget held: the next one starts this again
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("budget reconciliation failed")

    async def reconcile(self) -> bool:
        """Bring every budget counter of a current period down to what the ledger says its
        scope used (room ≤ capacity - used), here and, in shared mode, in the store (a
        lost or flushed counter is rebuilt from it). Returns whether any was held."""
        wall = self.wall()
        held = [
            counter
            for counter in self.counters.values()
            if (budget := counter.spec.budget) is not None and budget.period.ends_at > wall
        ]
        if not held:
            return False
        try:
            used = await self._ledger([counter.spec for counter in held])
        except LEDGER_ERRORS as exc:
            log.warning("budget usage unreadable", extra={"error": type(exc).__name__})
            return True
        leases: list[Lease] = []
        for counter, found in zip(held, used, strict=True):
            room = counter.spec.capacity - found
            if isinstance(counter, Bucket):
                counter.level = min(counter.level, room)
                continue
            counter.used, counter.level = found, min(counter.level, room)
            if counter.fallback is not None:
                counter.fallback.level = min(counter.fallback.level, room)
            leases.append(counter)
        if leases and self.shared is not None:
            now = self.clock()
            try:
                results = await self.shared.lease([self._ask(c, 0, 0, 0) for c in leases])
            except StoreUnavailable:
                self._failed(now)
                return True
            now = self.clock()
            for lease, (_, level) in zip(leases, results, strict=True):
                lease.level, lease.stamp = level, now
        return True

    def budget_remaining(self, key: str) -> float | None:
        """What this process knows is left of a budget counter; None: it holds none."""
        counter = self.counters.get(key)
        if counter is None:
            return None
        left: float = counter.remaining(self.clock())
        return left

    # --- refusals ---------------------------------------------------------------------------
    def _refused(self, spec: Spec, n: int, wait: float) -> errors.APIError:
        if spec.budget is not None:
            return self._spent(spec, n)
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

    def _spent(self, spec: Spec, n: int) -> errors.QuotaExceeded:
        """A budget is spent: OpenAI's ``insufficient_quota``, until the period ends."""
        REFUSALS.labels(spec.reason, spec.scope).inc()
        assert spec.budget is not None
        ends = spec.budget.period.end
        wait = max(1, math.ceil(spec.budget.period.ends_at - self.wall()))
        asked = "" if spec.kind == SPEND else f" Requested {n} tokens."
        return errors.QuotaExceeded(
            f"You exceeded your current quota: {spec.label} of {spec.subject} is reached.{asked}"
            f" It resets at {ends:%Y-%m-%d %H:%M} UTC (in {duration(wait)}).",
            headers={"Retry-After": str(wait), "x-should-retry": "false"},
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
                asks.append(self._ask(counter, want, 1, debt - back))
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
            self._ask(c, 0, 0, -math.floor(c.held))
            for c in self.counters.values()
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


def _seconds(spec: Spec, missing: float) -> float:
    """How long a bucket takes to refill ``missing`` units (a budget never does: its
    refusal says when its period ends instead)."""
    return missing / spec.rate if spec.rate else math.inf


SLOT_RENEW_SECONDS = 3.0  # slots are renewed this often (they expire after SLOT_TTL_SECONDS)
