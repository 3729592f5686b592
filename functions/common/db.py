"""PostgreSQL through asyncpg: one writer pool and zero or more reader pools.

Query functions take the connection or pool first (``Executor``) and use raw,
parameterised SQL. Lag-tolerant reads go through ``Database.read``, which picks a healthy
reader and falls back to the writer when a reader stops answering; that reader is then
probed in the background and taken back once it answers again. Writes and reads that must
see the caller's own writes use ``Database.writer``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
import orjson
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a dead or restarting server looks like from asyncpg's side.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
)

# What escapes a request only when the database cannot be reached at all (refused or reset
# connections, a server shutting down or starting): answered 503 with Retry-After rather
# than 500 (``functions.app``). Narrower than CONNECTION_ERRORS: a timeout or an interface
# error may be a fault of ours.
UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


# A dedicated connection or one borrowed from a pool: both run queries and transactions.
AnyConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class Executor(Protocol):
    """What both an asyncpg Pool and a Connection offer: the query methods we use."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...

    async def executemany(
        self, command: str, args: Any, *, timeout: float | None = None
    ) -> None: ...

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> list[asyncpg.Record]: ...

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> asyncpg.Record | None: ...

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any: ...


async def init_connection(conn: asyncpg.Connection) -> None:
    """What every connection of ours is set up with."""
    # jsonb in and out as Python objects, encoded with orjson.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        command_timeout=30,
        timeout=5,
        # asyncpg prepares every query and caches the statements per connection. Behind
        # PgBouncer in transaction mode that needs PgBouncer 1.21+ with
        # max_prepared_statements set; older PgBouncers need statement_cache_size=0.
    )
    assert pool is not None
    return pool


@dataclass
class Reader:
    name: str
    pool: asyncpg.Pool
    healthy: bool = True


@dataclass(eq=False)
class Database:
    writer: asyncpg.Pool
    readers: list[Reader] = field(default_factory=list)
    recheck_seconds: float = 2.0
    _rotation: Any = None
    _probe_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        write_dsn: str,
        read_dsns: Sequence[str] = (),
        *,
        max_size: int = 10,
        recheck_seconds: float = 2.0,
    ) -> Database:
        writer = await create_pool(write_dsn, min_size=1, max_size=max_size)
        readers = [
            # min_size=0: a replica that is down at start must not stop us starting.
            Reader(f"read{i}", await create_pool(dsn, min_size=0, max_size=max_size))
            for i, dsn in enumerate(read_dsns, start=1)
        ]
        db = cls(writer=writer, readers=readers, recheck_seconds=recheck_seconds)
        db._rotation = itertools.cycle(range(len(readers))) if readers else None
        if readers:
            db._probe_task = asyncio.get_running_loop().create_task(db._probe_forever())
        _gauges.databases.add(db)
        return db

    def healthy_reader(self) -> Reader | None:
        """The next healthy reader in round-robin order, or None."""
        if not self.readers:
            return None
        for _ in range(len(self.readers)):
            reader: Reader = self.readers[next(self._rotation)]
            if reader.healthy:
                return reader
        return None

    async def read(self, query: Callable[[Executor], Awaitable[T]]) -> T:
        """Run a lag-tolerant read on a healthy reader, or on the writer if none answers."""
        reader = self.healthy_reader()
        if reader is not None:
            try:
                return await query(reader.pool)
            except CONNECTION_ERRORS as exc:
                self._take_out(reader, exc)
        return await query(self.writer)

    def _take_out(self, reader: Reader, exc: BaseException) -> None:
        if reader.healthy:
            log.warning(
                "reader taken out of rotation",
                extra={"reader": reader.name, "reason": type(exc).__name__},
            )
        reader.healthy = False

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_seconds)
            for reader in self.readers:
                await self._probe(reader)

    async def _probe(self, reader: Reader) -> None:
        try:
            await reader.pool.fetchval("SELECT 1", timeout=2)
        except CONNECTION_ERRORS as exc:
            self._take_out(reader, exc)
            # Drop connections to the dead server so the next try reconnects cleanly.
            await reader.pool.expire_connections()
            return
        if not reader.healthy:
            log.info("reader back in rotation", extra={"reader": reader.name})
            reader.healthy = True

    async def close(self) -> None:
        _gauges.databases.discard(self)
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        pools = [self.writer, *(r.pool for r in self.readers)]
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


class _PoolGauges:
    """Connection gauges of every open ``Database`` (one per process outside tests), read
    from asyncpg's pools at scrape time: what each pod holds against ``max_connections``."""

    def __init__(self) -> None:
        self.databases: weakref.WeakSet[Database] = weakref.WeakSet()

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        held: dict[tuple[str, str], int] = {}
        most: dict[str, int] = {}
        healthy: dict[str, int] = {}
        for db in list(self.databases):
            pools = [("writer", db.writer), *((r.name, r.pool) for r in db.readers)]
            for name, pool in pools:
                idle = pool.get_idle_size()
                held[name, "busy"] = held.get((name, "busy"), 0) + pool.get_size() - idle
                held[name, "idle"] = held.get((name, "idle"), 0) + idle
                most[name] = most.get(name, 0) + pool.get_max_size()
            for r in db.readers:
                healthy[r.name] = min(healthy.get(r.name, 1), int(r.healthy))
        connections, limit, up = self._families()
        for (name, state), value in held.items():
            connections.add_metric([name, state], value)
        for name, value in most.items():
            limit.add_metric([name], value)
        for name, value in healthy.items():
            up.add_metric([name], value)
        return [connections, limit, up]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "jan_db_pool_connections",
                "Connections this process holds, by pool (writer, read1, …) and state.",
                labels=["pool", "state"],
            ),
            GaugeMetricFamily(
                "jan_db_pool_max_connections",
                "Most connections a pool may open (DB_POOL_MAX_SIZE).",
                labels=["pool"],
            ),
            GaugeMetricFamily(
                "jan_db_reader_healthy",
                "1 while a read replica is in rotation, 0 while reads go to the writer.",
                labels=["pool"],
            ),
        )


_gauges = _PoolGauges()
REGISTRY.register(_gauges)


def is_unique_violation(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.UniqueViolationError)
