"""Periodic housekeeping: sweeps registered by areas run in bounded batches, on one
instance at a time (a PostgreSQL advisory lock per sweep), from a loop the runtime starts
and stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from functions.common import housekeeping
from functions.common.db import Executor
from functions.common.housekeeping import BATCH, MAX_BATCHES, Housekeeping, Sweep
from functions.common.runtime import Runtime
from tests.conftest import component, make_settings


def register(runtime: Runtime, name: str, sweep: Sweep) -> None:
    """Add a sweep to the runtime's housekeeping (made on the first call)."""
    found = [c for c in runtime.components if isinstance(c, Housekeeping)]
    if found:
        keeper = found[0]
    else:
        keeper = Housekeeping(runtime, runtime.settings.jan_housekeeping_interval_seconds)
        runtime.manage(keeper)
    keeper.add(name, sweep)


@pytest.fixture
async def open_runtimes(database_dsn: str) -> AsyncIterator[Callable[..., Runtime]]:
    """Runtimes on the test's database (two of them: two instances), closed at the end."""
    made: list[Runtime] = []

    def make(**overrides: object) -> Runtime:
        runtime = Runtime(make_settings(database_dsn, **overrides))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


async def test_only_one_instance_sweeps_at_a_time(
    open_runtimes: Callable[..., Runtime],
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    sweepers: list[str] = []

    def sweep_as(who: str) -> housekeeping.Sweep:
        async def sweep(ex: Executor, *, limit: int) -> int:
            sweepers.append(who)
            entered.set()
            await release.wait()  # still inside the batch's transaction, holding the lock
            return 3

        return sweep

    first, second = open_runtimes(), open_runtimes()
    register(first, "test.sweep", sweep_as("first"))
    register(second, "test.sweep", sweep_as("second"))
    await first.open()
    await second.open()
    running = asyncio.create_task(component(first, Housekeeping).run_once(first.db))
    await asyncio.wait_for(entered.wait(), 5)
    assert await component(second, Housekeeping).run_once(second.db) == {"test.sweep": None}
    release.set()
    assert await running == {"test.sweep": 3}
    assert sweepers == ["first"]
    # The lock went with the transaction: the other instance sweeps next time.
    assert await component(second, Housekeeping).run_once(second.db) == {"test.sweep": 3}
    assert sweepers == ["first", "second"]


async def test_a_lock_held_elsewhere_skips_only_that_sweep(
    open_runtimes: Callable[..., Runtime],
) -> None:
    async def three(ex: Executor, *, limit: int) -> int:
        return 3

    runtime = open_runtimes()
    register(runtime, "held", three)
    register(runtime, "free", three)
    await runtime.open()
    async with runtime.db.writer.acquire() as other:
        await other.execute(
            "SELECT pg_advisory_lock($1, $2)",
            housekeeping.LOCK_NAMESPACE,
            housekeeping.lock_key("held"),
        )
        done = await component(runtime, Housekeeping).run_once(runtime.db)
        await other.execute("SELECT pg_advisory_unlock_all()")
    assert done == {"held": None, "free": 3}


async def test_a_backlog_drains_in_bounded_batches(open_runtimes: Callable[..., Runtime]) -> None:
    limits: list[int] = []

    async def always_full(ex: Executor, *, limit: int) -> int:
        limits.append(limit)
        return limit

    remaining = [BATCH + 5]

    async def backlog(ex: Executor, *, limit: int) -> int:
        taken = min(limit, remaining[0])
        remaining[0] -= taken
        return taken

    runtime = open_runtimes()
    register(runtime, "full", always_full)
    register(runtime, "backlog", backlog)
    await runtime.open()
    done = await component(runtime, Housekeeping).run_once(runtime.db)
    assert done == {"full": BATCH * MAX_BATCHES, "backlog": BATCH + 5}
    assert limits == [BATCH] * MAX_BATCHES  # the round stops there; the next one goes on


async def test_a_failing_sweep_does_not_stop_the_others(
    open_runtimes: Callable[..., Runtime],
) -> None:
    async def broken(ex: Executor, *, limit: int) -> int:
        raise ValueError("a bug")

    async def fine(ex: Executor, *, limit: int) -> int:
        return await ex.fetchval("SELECT 2")  # type: ignore[no-any-return]

    runtime = open_runtimes()
    register(runtime, "broken", broken)
    register(runtime, "fine", fine)
    await runtime.open()
    assert await component(runtime, Housekeeping).run_once(runtime.db) == {"broken": 0, "fine": 2}


async def test_the_runtime_runs_the_loop_and_stops_it(
    open_runtimes: Callable[..., Runtime],
) -> None:
    calls = 0

    async def count(ex: Executor, *, limit: int) -> int:
        nonlocal calls
        calls += 1
        return 0

    runtime = open_runtimes(jan_housekeeping_interval_seconds=0.05)
    register(runtime, "count", count)
    await runtime.open()
    for _ in range(100):
        if calls >= 2:
            break
        await asyncio.sleep(0.05)
    assert calls >= 2
    await runtime.close()
    stopped_at = calls
    await asyncio.sleep(0.2)
    assert calls == stopped_at


async def test_an_interval_of_zero_sweeps_nothing(open_runtimes: Callable[..., Runtime]) -> None:
    async def never(ex: Executor, *, limit: int) -> int:
        raise AssertionError("swept with an interval of 0")

    runtime = open_runtimes(jan_housekeeping_interval_seconds=0)
    register(runtime, "never", never)
    await runtime.open()
    assert not component(runtime, Housekeeping).running
