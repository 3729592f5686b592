"""Where instances share their counters: Redis (a Lua script per exchange) or PostgreSQL
(the ``rate_limit_lease`` / ``rate_limit_slots_lease`` functions of migration 0012,
``budget_lease`` of 0013).

Both keep the same three kinds of state, and change it only atomically:

- a token bucket per counter (its level and when it was read; refilled continuously at
  the counter's rate up to its capacity, by the store's own clock): ``lease`` refills it,
  charges ``adjust`` (a debt: units used beyond what was leased; negative: units given
  back), then grants ``min(want, whole units left)`` if at least ``minimum`` are left,
  else nothing — a bucket never goes below zero through a grant;
- concurrent-request slots per counter: what each instance holds, until it renews them or
  they expire (``SLOT_TTL_SECONDS``: a crashed instance's slots come back by then);
  ``slots`` sets this instance's allowance to ``min(want, limit - what the live others
  hold)``, never below ``floor`` (the calls it has running);
- a budget per counter (an ``Ask`` with ``expires``): what was taken in its period, which
  never refills and is never less than ``used`` (what the usage ledger says was used: a
  lost or fresh counter starts from the ledger); a grant never takes more than
  ``capacity`` (so a changed budget applies at once), and the counter expires
  ``expires`` seconds after its last exchange (the end of its period).

A store that cannot answer raises ``StoreUnavailable``; the limiter applies the
organization's failure policy.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from functions.common.db import CONNECTION_ERRORS

log = logging.getLogger(__name__)

SLOT_TTL_SECONDS = 10.0
PREFIX = "jan:rl:"
TIMEOUT_SECONDS = 0.5  # a store slower than this counts as unavailable


class StoreUnavailable(Exception):
    """The shared store did not answer (in time)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One bucket exchange (a budget's when ``expires`` is set)."""

    key: str
    capacity: float
    rate: float
    want: float
    minimum: float
    adjust: float
    used: float = 0.0  # budgets: what the ledger says was used (a floor of what was taken)
    expires: float = 0.0  # budgets: seconds the counter must live (past its period's end)


@dataclass(frozen=True, slots=True)
class SlotAsk:
    key: str
    limit: int
    want: int
    floor: int


class SharedStore(Protocol):
    name: str

    async def lease(self, asks: Sequence[Ask]) -> list[tuple[float, float]]:
        """(granted, level left) per ask, in order."""
        ...

    async def slots(self, instance: str, asks: Sequence[SlotAsk]) -> list[tuple[int, int]]:
        """(this instance's allowance, held by all) per ask, in order."""
        ...

    async def sweep(self) -> None:
        """Remove state nobody needs any more (where the store does not expire it)."""
        ...

    async def close(self) -> None: ...


# --- Redis ---------------------------------------------------------------------------------
_LEASE_LUA = """
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local minimum = tonumber(ARGV[4])
local adjust = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'l', 't')
local level = cap
if v[1] then
  level = tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate
  if level > cap then level = cap end
end
level = level - adjust
if level > cap then level = cap end
local granted = 0
if want > 0 then
  local whole = math.floor(level)
  if whole >= minimum then
    granted = math.min(want, whole)
    level = level - granted
  end
end
if level >= cap then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'l', string.format('%.17g', level), 't', string.format('%.6f', now))
  local ttl = 86400000
  if rate > 0 then ttl = math.ceil((cap - level) / rate * 1000) + 1000 end
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {string.format('%.17g', granted), string.format('%.17g', level)}
"""

_BUDGET_LUA = """
local cap = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local minimum = tonumber(ARGV[3])
local adjust = tonumber(ARGV[4])
local used = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local taken = tonumber(redis.call('GET', KEYS[1]) or '0')
taken = math.max(0, taken + adjust, used)
local granted = 0
if want > 0 then
  local whole = math.floor(cap - taken)
  if whole >= minimum then
    granted = math.min(want, whole)
    taken = taken + granted
  end
end
redis.call('SET', KEYS[1], string.format('%.17g', taken), 'PX', ttl)
return {string.format('%.17g', granted), string.format('%.17g', cap - taken)}
"""

_SLOTS_LUA = """
local instance = ARGV[1]
local limit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #all, 2 do
  local sep = string.find(all[i + 1], ':', 1, true)
  local held = tonumber(string.sub(all[i + 1], 1, sep - 1))
  local expires = tonumber(string.sub(all[i + 1], sep + 1))
  if expires < now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= instance then
    others = others + held
  end
end
local granted = math.min(want, limit - others)
if granted < floor then granted = floor end
if granted > 0 then
  redis.call('HSET', KEYS[1], instance, granted .. ':' .. (now + ttl))
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
else
  redis.call('HDEL', KEYS[1], instance)
end
return {granted, others + granted}
"""


class RedisStore:
    name = "redis"

    def __init__(self, url: str) -> None:
        # Imported here: a process without Redis never loads the client (cold starts).
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self.client: Any = aioredis.from_url(
            url, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
        )
        self._lease = self.client.register_script(_LEASE_LUA)
        self._budget = self.client.register_script(_BUDGET_LUA)
        self._slots = self.client.register_script(_SLOTS_LUA)

    def _exchange(self, a: Ask, client: Any = None) -> Any:
        if a.expires:
            ttl = max(1000, math.ceil(a.expires * 1000))
            args = [a.capacity, a.want, a.minimum, a.adjust, a.used, ttl]
            return self._budget(keys=[PREFIX + a.key], args=args, client=client)
        args = [a.capacity, a.rate, a.want, a.minimum, a.adjust]
        return self._lease(keys=[PREFIX + a.key], args=args, client=client)

    async def lease(self, asks: Sequence[Ask]) -> list[tuple[float, float]]:
        try:
            if len(asks) == 1:
                results = [await self._exchange(asks[0])]
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    for a in asks:
                        await self._exchange(a, pipe)
                    results = await pipe.execute()
        except self._errors as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return [(float(granted), float(level)) for granted, level in results]

    async def slots(self, instance: str, asks: Sequence[SlotAsk]) -> list[tuple[int, int]]:
        ttl = int(SLOT_TTL_SECONDS * 1000)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for a in asks:
                    await self._slots(
                        keys=[PREFIX + a.key],
                        args=[instance, a.limit, a.want, a.floor, ttl],
                        client=pipe,
                    )
                results = await pipe.execute()
        except self._errors as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return [(int(granted), int(held)) for granted, held in results]

    async def sweep(self) -> None:
        """Nothing to do: every key expires on its own."""

    async def close(self) -> None:
        with contextlib.suppress(*self._errors):
            await self.client.aclose()


# --- PostgreSQL ----------------------------------------------------------------------------
_LEASE_SQL = """
SELECT r.granted, r.level
FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::float8[], $6::float8[])
     WITH ORDINALITY AS a(key, capacity, rate, want, minimum, adjust, i)
CROSS JOIN LATERAL rate_limit_lease(a.key, a.capacity, a.rate, a.want, a.minimum, a.adjust) r
ORDER BY a.i
"""
_BUDGET_SQL = """
SELECT r.granted, r.level
FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
            $7::float8[])
     WITH ORDINALITY AS a(key, capacity, want, minimum, adjust, used, expires, i)
CROSS JOIN LATERAL budget_lease(a.key, a.capacity, a.want, a.minimum, a.adjust, a.used,
                                a.expires) r
ORDER BY a.i
"""
_SLOTS_SQL = """
SELECT r.allowance, r.held
FROM unnest($2::text[], $3::int[], $4::int[], $5::int[])
     WITH ORDINALITY AS a(key, lim, want, floor, i)
CROSS JOIN LATERAL rate_limit_slots_lease(a.key, $1, a.lim, a.want, a.floor, $6) r
ORDER BY a.i
"""
_SWEEP_SQL = """
DELETE FROM rate_limit_buckets WHERE key IN (
    SELECT key FROM rate_limit_buckets WHERE full_at < now() - interval '1 minute'
    ORDER BY full_at LIMIT 1000 FOR UPDATE SKIP LOCKED);
DELETE FROM rate_limit_slots WHERE (key, instance) IN (
    SELECT key, instance FROM rate_limit_slots WHERE expires_at < now()
    LIMIT 1000 FOR UPDATE SKIP LOCKED);
"""


class PostgresStore:
    """Shared counters in the primary database, for several instances without Redis.

    A batch is one statement; its rows are locked in key order (asks are sorted), so two
    instances' batches cannot deadlock."""

    name = "postgres"

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool
        self._errors: tuple[type[BaseException], ...] = (
            *CONNECTION_ERRORS,
            asyncpg.PostgresError,
            TimeoutError,
            RuntimeError,  # the runtime is not open (yet, or any more)
        )

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            pool = self._pool()
            async with pool.acquire(timeout=TIMEOUT_SECONDS) as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args, timeout=TIMEOUT_SECONDS)
                return rows
        except self._errors as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def lease(self, asks: Sequence[Ask]) -> list[tuple[float, float]]:
        """Rate-limit buckets in one statement, budgets in another (each locking its rows
        in key order)."""
        out: list[tuple[float, float]] = [(0.0, 0.0)] * len(asks)
        for budgets in (False, True):
            order = sorted(
                (i for i, a in enumerate(asks) if bool(a.expires) is budgets),
                key=lambda i: asks[i].key,
            )
            if not order:
                continue
            sent = [asks[i] for i in order]
            if budgets:
                rows = await self._fetch(
                    _BUDGET_SQL,
                    [a.key for a in sent],
                    [a.capacity for a in sent],
                    [a.want for a in sent],
                    [a.minimum for a in sent],
                    [a.adjust for a in sent],
                    [a.used for a in sent],
                    [max(1.0, a.expires) for a in sent],
                )
            else:
                rows = await self._fetch(
                    _LEASE_SQL,
                    [a.key for a in sent],
                    [a.capacity for a in sent],
                    [a.rate for a in sent],
                    [a.want for a in sent],
                    [a.minimum for a in sent],
                    [a.adjust for a in sent],
                )
            for i, row in zip(order, rows, strict=True):
                out[i] = (row["granted"], row["level"])
        return out

    async def slots(self, instance: str, asks: Sequence[SlotAsk]) -> list[tuple[int, int]]:
        order = sorted(range(len(asks)), key=lambda i: asks[i].key)
        sent = [asks[i] for i in order]
        rows = await self._fetch(
            _SLOTS_SQL,
            instance,
            [a.key for a in sent],
            [a.limit for a in sent],
            [a.want for a in sent],
            [a.floor for a in sent],
            SLOT_TTL_SECONDS,
        )
        out: list[tuple[int, int]] = [(0, 0)] * len(asks)
        for i, row in zip(order, rows, strict=True):
            out[i] = (row["allowance"], row["held"])
        return out

    async def sweep(self) -> None:
        try:
            pool = self._pool()
            async with pool.acquire(timeout=TIMEOUT_SECONDS) as conn:
                await conn.execute(_SWEEP_SQL)
        except self._errors as exc:
            log.info("rate-limit sweep skipped", extra={"error": type(exc).__name__})

    async def close(self) -> None:
        """The pool is the runtime's."""
