"""The shared stores keep the same contract (``functions.services.limits.shared``), the one
``tests/limits/support.MemoryStore`` models: Redis through its Lua scripts (our own
redis-server), PostgreSQL through migration 0012's and 0013's functions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from functions.services.limits.shared import (
    PREFIX,
    Ask,
    PostgresStore,
    RedisStore,
    SharedStore,
    SlotAsk,
    StoreUnavailable,
)
from tests.limits.support import Clock, MemoryStore, redis_server


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


def budget(want: float, minimum: float, adjust: float, used: float, capacity: float = 100) -> Ask:
    return Ask("bud", capacity, 0.0, want, minimum, adjust, used, 60.0)


async def test_budgets_never_refill_and_never_hand_out_what_the_ledger_says_is_used(
    store: SharedStore,
) -> None:
    await budget_contract(store)


async def test_the_tests_model_of_the_store_keeps_the_budget_contract_too() -> None:
    await budget_contract(MemoryStore(Clock()))


async def budget_contract(store: SharedStore) -> None:
    # A fresh counter starts from what the ledger says was used (20 of 100).
    assert await store.lease([budget(30, 1, 0, used=20)]) == [(30, 50)]
    await asyncio.sleep(0.05)
    assert await store.lease([budget(0, 0, 0, used=20)]) == [(0, 50)]  # no refill
    assert await store.lease([budget(80, 1, 0, used=20)]) == [(50, 0)]  # never beyond
    assert await store.lease([budget(1, 1, 0, used=20)]) == [(0, 0)]
    assert await store.lease([budget(0, 0, -10, used=20)]) == [(0, 10)]  # given back
    assert await store.lease([budget(0, 0, 15, used=20)]) == [(0, -5)]  # a debt
    # The ledger knows of more than the counter (lost, or another's): brought down to it.
    assert await store.lease([budget(0, 0, 0, used=110)]) == [(0, -10)]
    # A changed budget applies at once; give-backs never go below the ledger's word.
    assert await store.lease([budget(5, 1, 0, used=110, capacity=200)]) == [(5, 85)]
    assert await store.lease([budget(0, 0, -1000, used=110, capacity=200)]) == [(0, 90)]
    # Rate-limit buckets and budgets in one batch keep their order.
    results = await store.lease([budget(1, 1, 0, 110, 200), Ask("zz", 5, 1, 2, 1, 0)])
    assert results == [(1, 89), (2, 3)]


async def test_a_budget_counter_expires_after_its_period(database_dsn: str) -> None:
    async with redis_server() as server:
        redis = RedisStore(server.url)
        await redis.lease([Ask("b:x:t:2026-12", 100, 0, 10, 1, 0, 0, 30)])
        assert 25_000 < await redis.client.pttl(PREFIX + "b:x:t:2026-12") <= 30_000
        await redis.close()
    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=1)
    try:
        await PostgresStore(lambda: pool).lease([Ask("b:x:t:2026-12", 100, 0, 10, 1, 0, 0, 30)])
        left = await pool.fetchval(
            "SELECT extract(epoch FROM full_at - now()) FROM rate_limit_buckets WHERE key = $1",
            "b:x:t:2026-12",
        )
        assert 25 < left <= 30  # swept a minute after that
    finally:
        await pool.close()
