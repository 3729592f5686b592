"""Read replicas against a real streaming replica (pg_basebackup of a real primary)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from functions.common.db import Database, Executor
from tests.pg import ReplicaSet


@pytest.fixture(scope="module")
def replica_set() -> Iterator[ReplicaSet]:
    rs = ReplicaSet()
    try:
        rs.start()
        yield rs
    finally:
        rs.close()


async def _in_recovery(conn: Executor) -> bool:
    return bool(await conn.fetchval("SELECT pg_is_in_recovery()"))


async def _wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_reads_use_the_replica_and_survive_its_loss(replica_set: ReplicaSet) -> None:
    db = await Database.connect(
        replica_set.primary.dsn, [replica_set.replica.dsn], recheck_seconds=0.2
    )
    try:
        await db.writer.execute("CREATE TABLE IF NOT EXISTS notes (body text)")
        await db.writer.execute("INSERT INTO notes VALUES ('written on the primary')")

        async def replicated() -> bool:
            async def count(c: Executor) -> int:
                return int(await c.fetchval("SELECT count(*) FROM notes"))

            try:
                return await count(db.readers[0].pool) == 1
            except Exception:
                return False

        await _wait_for(replicated)
        # Lag-tolerant reads go to the healthy replica, writes to the primary.
        assert await db.read(_in_recovery) is True
        assert await _in_recovery(db.writer) is False

        # Stop the replica mid-test: reads fall back to the writer without failing.
        replica_set.replica.stop("immediate")
        results = [await db.read(_in_recovery) for _ in range(5)]
        assert results == [False] * 5
        assert db.readers[0].healthy is False

        # Bring it back: the background probe returns it to rotation.
        replica_set.replica.start()

        async def back() -> bool:
            return db.readers[0].healthy

        await _wait_for(back)
        assert await db.read(_in_recovery) is True
    finally:
        await db.close()


async def test_a_replica_down_at_start_does_not_stop_startup(replica_set: ReplicaSet) -> None:
    from tests.pg import free_port

    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    db = await Database.connect(replica_set.primary.dsn, [dead], recheck_seconds=0.2)
    try:
        assert await db.read(_in_recovery) is False  # answered by the writer
        assert db.readers[0].healthy is False
    finally:
        await db.close()
