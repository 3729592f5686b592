"""Periodic housekeeping: rows that nothing else ever removes, swept in small batches.

The app factory adds the sweeps of the areas it builds (``add(name, sweep)``); this module
imports nothing above ``common``. Every ``JAN_HOUSEKEEPING_INTERVAL_SECONDS`` each sweep runs on one
instance only: every batch is a transaction that first takes the sweep's advisory lock
with ``pg_try_advisory_xact_lock`` (a transaction lock, so it is safe behind PgBouncer in
transaction mode and cannot outlive a crash). An instance that finds the lock taken skips
that sweep this round. A sweep handles at most ``limit`` rows per call and is called
again while its batches come back full, up to ``MAX_BATCHES`` per round, so a backlog
drains over a few rounds in short transactions rather than in one long one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from typing import Protocol

from functions.common.db import CONNECTION_ERRORS, Database, Executor
from functions.common.runtime import Component, Runtime

log = logging.getLogger(__name__)


class Sweep(Protocol):
    """One bounded batch, run inside the batch's transaction: the rows it affected."""

    async def __call__(self, ex: Executor, *, limit: int) -> int: ...


LOCK_NAMESPACE = 0x4A616E  # "Jan": the first key of every housekeeping advisory lock
BATCH = 1000
MAX_BATCHES = 10


def lock_key(name: str) -> int:
    """The second advisory-lock key of a sweep: its name's CRC-32 as a signed int4."""
    crc = zlib.crc32(name.encode())
    return crc - 2**32 if crc >= 2**31 else crc


class Housekeeping(Component):
    def __init__(self, runtime: Runtime, interval_seconds: float) -> None:
        self.runtime = runtime
        self.interval_seconds = interval_seconds
        self.sweeps: dict[str, Sweep] = {}
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, db: Database) -> dict[str, int | None]:
        """Run every sweep once: rows affected, or None where another instance held it."""
        done: dict[str, int | None] = {}
        for name, sweep in self.sweeps.items():
            try:
                done[name] = await self._sweep(db, name, sweep)
            except CONNECTION_ERRORS:
                raise  # the database is away: the whole round waits for the next one
            except Exception:
                log.exception("housekeeping sweep failed", extra={"sweep": name})
                done[name] = 0
        return done

    async def _sweep(self, db: Database, name: str, sweep: Sweep) -> int | None:
        total = 0
        async with db.writer.acquire() as conn:
            for batch in range(MAX_BATCHES):
                async with conn.transaction():
                    locked = await conn.fetchval(
                        "SELECT pg_try_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, lock_key(name)
                    )
                    if not locked:  # another instance is sweeping: it will finish the job
                        return None if batch == 0 else total
                    count = await sweep(conn, limit=BATCH)
                total += count
                if count < BATCH:
                    break
        if total:
            log.info("housekeeping swept", extra={"sweep": name, "rows": total})
        return total

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def add(self, name: str, sweep: Sweep) -> None:
        """Run ``sweep`` every round (once per name: areas serving the same tables may
        both add it)."""
        self.sweeps[name] = sweep

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self.interval_seconds > 0 and self.sweeps:
            self._task = asyncio.get_running_loop().create_task(self._forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _forever(self) -> None:
        # A random first wait spreads instances that start together over the interval.
        await asyncio.sleep(self.interval_seconds * random.uniform(0.2, 1.0))  # noqa: S311
        while True:
            try:
                await self.run_once(self.runtime.db)
            except CONNECTION_ERRORS as exc:
                log.warning(
                    "housekeeping skipped: database unavailable", extra={"error": repr(exc)}
                )
            await asyncio.sleep(self.interval_seconds)
