"""The usage ledger's write side: an in-memory queue drained in batches.

The request path only appends a tuple to a list (``record``); a background task copies
the batch into ``usage_completions`` with one ``COPY`` when the batch is full or the
queue has been quiet for ``idle_seconds``. On stop, the runtime's drain hook writes what
is left on a connection of its own, so a function scaled to zero loses nothing it had
accepted. If the database is down the batch is kept (up to ``max_queue`` records, then
the oldest are dropped and counted) and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
from dataclasses import dataclass, fields
from datetime import datetime

from prometheus_client import Counter

from functions.common.db import AnyConnection
from functions.common.runtime import Component, Runtime

log = logging.getLogger(__name__)

USAGE_DROPPED = Counter(
    "jan_usage_records_dropped_total", "Usage records dropped because the queue overflowed."
)
TABLE = "usage_completions"


@dataclass(slots=True)
class UsageRecord:
    created_at: datetime
    organization_id: str
    project_id: str | None
    api_key_id: str | None
    user_id: str | None
    model: str
    provider_id: str | None
    endpoint: str | None
    operation: str  # chat.completions | completions | embeddings
    streamed: bool
    input_tokens: int
    output_tokens: int
    input_cached_tokens: int
    latency_ms: int
    ttft_ms: int | None
    status: int


COLUMNS = tuple(f.name for f in fields(UsageRecord))
_as_row = operator.attrgetter(*COLUMNS)  # a record as a COPY row, without a deep copy


class UsageRecorder(Component):
    def __init__(
        self,
        runtime: Runtime,
        *,
        batch_size: int = 500,
        idle_seconds: float = 1.0,
        max_queue: int = 100_000,
    ) -> None:
        self._runtime = runtime
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.max_queue = max_queue
        self._queue: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- the request path -------------------------------------------------------------
    def record(self, rec: UsageRecord) -> None:
        """Queue one record; never waits, never touches the database."""
        queue = self._queue
        queue.append(rec)
        if len(queue) >= self.batch_size:
            if len(queue) > self.max_queue:
                overflow = len(queue) - self.max_queue
                del queue[:overflow]
                USAGE_DROPPED.inc(overflow)
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Flush in the background: every ``batch_size`` records, and when idle."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_seconds)
            self._wake.clear()
            if not self._queue:
                continue
            try:
                async with self._runtime.db.writer.acquire() as conn:
                    await self.flush(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("usage flush failed; will retry", extra={"error": type(exc).__name__})
                await asyncio.sleep(self.idle_seconds)

    async def flush(self, conn: AnyConnection) -> int:
        """Write everything queued now; on failure the records go back to the queue."""
        total = 0
        while self._queue:
            batch, self._queue = (
                self._queue[: self.batch_size * 4],
                self._queue[self.batch_size * 4 :],
            )
            try:
                await conn.copy_records_to_table(
                    TABLE, records=map(_as_row, batch), columns=COLUMNS
                )
            except BaseException:
                self._queue[:0] = batch
                raise
            total += len(batch)
        return total

    async def drain(self, conn: AnyConnection) -> None:
        """The runtime's drain hook: write what is left before the process goes.

        It may run on another thread's loop (func-python's synchronous ``stop``), so it
        touches only the queue, never the flushing task."""
        written = await self.flush(conn)
        if written:
            log.info("usage drained", extra={"records": written})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
