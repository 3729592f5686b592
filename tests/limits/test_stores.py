"""The shared stores keep the same contract (``functions.services.limits.shared``), the one
``tests/limits/support.MemoryStore`` models: Redis through its Lua scripts (our own
redis-server), PostgreSQL through migration 0009's functions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from functions.services.limits.shared import (
    Ask,
    PostgresStore,
    RedisStore,
    SharedStore,
    SlotAsk,
    StoreUnavailable,
)
from tests.limits.support import redis_server


@pytest.fixture(params=["redis", "postgres"])
async def store(request: pytest.FixtureRequest, database_dsn: str) -> AsyncIterator[SharedStore]:
    if request.param == "redis":
        async with redis_server() as server:
            made = RedisStore(server.url)
            yield made
            await made.close()
    else:
        pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
        try:
            yield PostgresStore(lambda: pool)
        finally:
            await pool.close()


async def test_grants_never_take_a_bucket_below_zero(store: SharedStore) -> None:
    # A fresh bucket is full; min(want, whole units) is granted when at least `minimum` are.
    [(granted, level)] = await store.lease([Ask("b1", 10, 0.001, 4, 1, 0)])
    assert (granted, round(level)) == (4, 6)
    [(granted, level)] = await store.lease([Ask("b1", 10, 0.001, 100, 1, 0)])
    assert (granted, round(level)) == (6, 0)
    [(granted, _)] = await store.lease([Ask("b1", 10, 0.001, 1, 1, 0)])
    assert granted == 0
    # Units given back (negative adjust) are there again, never above the capacity.
    [(granted, level)] = await store.lease([Ask("b1", 10, 0.001, 0, 0, -50)])
    assert granted == 0 and level == pytest.approx(10)
    # A debt (positive adjust) can take it below zero; nothing is granted until refilled.
    [(granted, level)] = await store.lease([Ask("b1", 10, 0.001, 5, 5, 13)])
    assert granted == 0 and level == pytest.approx(-3, abs=0.01)


async def test_buckets_refill_at_their_rate_and_batches_keep_their_order(
    store: SharedStore,
) -> None:
    await store.lease([Ask("r1", 100, 1000.0, 100, 1, 0)])  # emptied; 1000 units/s
    started = time.monotonic()
    await asyncio.sleep(0.02)
    results = await store.lease(
        [Ask("r2", 5, 1, 2, 1, 0), Ask("r1", 100, 1000.0, 0, 0, 0), Ask("a0", 3, 1, 3, 3, 0)]
    )
    elapsed = time.monotonic() - started
    assert results[0][0] == 2 and results[2][0] == 3 and results[2][1] == pytest.approx(0, abs=0.01)
    assert 20 <= results[1][1] <= min(100, elapsed * 1000 + 1)


async def test_concurrency_slots_are_shared_between_instances(store: SharedStore) -> None:
    [(a, held)] = await store.slots("i1", [SlotAsk("c1", 3, 2, 0)])
    assert (a, held) == (2, 2)
    [(b, held)] = await store.slots("i2", [SlotAsk("c1", 3, 2, 0)])
    assert (b, held) == (1, 3)  # only what the others leave
    [(b, held)] = await store.slots("i2", [SlotAsk("c1", 3, 2, 2)])
    assert (b, held) == (2, 4)  # never below the calls it has running (its floor)
    [(a, held)] = await store.slots("i1", [SlotAsk("c1", 3, 0, 0)])
    assert (a, held) == (0, 2)  # handed back
    [(b, held)] = await store.slots("i2", [SlotAsk("c1", 3, 3, 0)])
    assert (b, held) == (3, 3)


async def test_an_unreachable_store_says_so() -> None:
    async with redis_server() as server:
        made = RedisStore(server.url)
        await made.lease([Ask("x", 1, 1, 1, 1, 0)])
        server.stop()
        with pytest.raises(StoreUnavailable):
            await made.lease([Ask("x", 1, 1, 1, 1, 0)])
        with pytest.raises(StoreUnavailable):
            await made.slots("i", [SlotAsk("y", 1, 1, 0)])
        await made.close()
    pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0)
    pg = PostgresStore(lambda: pool)
    with pytest.raises(StoreUnavailable):
        await pg.lease([Ask("x", 1, 1, 1, 1, 0)])
    await pool.close()
