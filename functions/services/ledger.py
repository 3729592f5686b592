"""The usage ledger's write side: an in-memory queue drained in batches.

The request path only appends a tuple to a list (``record``); a background task copies
the batch into ``usage_completions`` with one ``COPY`` when the batch is full or the
queue has been quiet for ``idle_seconds``, and adds it to the hourly and daily rollups in
the same transaction. On stop, the runtime's drain hook writes what is left on a
connection of its own, so a function scaled to zero loses nothing it had accepted. If the
database is down the batch is kept and retried every ``idle_seconds`` or so, and what
arrives meanwhile waits with it, up to ``max_queue`` records (``JAN_USAGE_QUEUE_MAX``,
about 0.5 KB each); past it the oldest are dropped, counted in
``jan_usage_records_dropped_total`` and logged (at most once per ``DROP_LOG_SECONDS``).
``jan_usage_queue_records`` is how many wait now. Once the database answers again the
whole queue is written, in batches of four times ``batch_size``.

A record the table refuses (a value out of a column's range, a byte PostgreSQL's text
cannot hold) must not hold up everyone else's: a batch refused for its data is split in
halves until the bad records stand alone; those are logged (who and what, never values
of the request), counted in ``jan_usage_records_rejected_total`` and set aside
(``rejected``, the last ``REJECTED_KEPT``), and the rest is written. Counts are clamped
to the columns' range before they are queued (``clamp``), so an upstream's absurd usage
is written as the largest count the column holds rather than refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from functions.common.db import AnyConnection
from functions.common.runtime import Component, Runtime

log = logging.getLogger(__name__)

USAGE_DROPPED = Counter(
    "jan_usage_records_dropped_total", "Usage records dropped because the queue overflowed."
)
USAGE_REJECTED = Counter(
    "jan_usage_records_rejected_total",
    "Usage records set aside because the database refused their values.",
)
DROP_LOG_SECONDS = 10.0  # drops are logged at most this often (with their count)
TABLE = "usage_completions"
INT_MAX = 2**31 - 1  # the counts' columns are PostgreSQL integers
REJECTED_KEPT = 100


def clamp(value: Any) -> int:
    """A count as the ledger stores it: a non-negative int up to the column's maximum;
    anything else (a negative number, a float, a string, a bool) counts 0."""
    if type(value) is not int or value < 0:
        return 0
    return value if value <= INT_MAX else INT_MAX


def _refused_for_data(exc: BaseException) -> bool:
    """Whether a failed COPY was refused for the values of its rows (then splitting the
    batch isolates them), not for the connection or the server (then the batch waits).
    asyncpg refuses a value it cannot encode before sending it (OverflowError, TypeError,
    ValueError); PostgreSQL refuses with a data exception (SQLSTATE class 22) or an
    integrity violation (class 23)."""
    return isinstance(
        exc,
        OverflowError
        | TypeError
        | ValueError
        | asyncpg.DataError
        | asyncpg.IntegrityConstraintViolationError,
    )


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
    cost_picodollars: int = 0  # at the model's price when the call was made
    reserved_tokens: int = 0  # what the rate limiter reserved at admission
    # Parts of the cost, for the rollup's line items only (not ledger columns; the
    # uncached input's part is the rest).
    cached_input_cost: int = field(default=0, metadata={"column": False})
    output_cost: int = field(default=0, metadata={"column": False})


COLUMNS = tuple(f.name for f in fields(UsageRecord) if f.metadata.get("column", True))
_as_row = operator.attrgetter(*COLUMNS)  # a record as a COPY row, without a deep copy


# The rollups (``usage_hourly``, ``usage_daily``: per hour, and per day of its hours, UTC),
# upserted with the ledger rows of each batch, in the same transaction: one statement per
# batch, whatever its size; its rows in key order, so instances adding to the same hours
# and days at once lock them in the same order (no deadlock).
_ROLLUP = """
WITH sums (organization_id, hour, project_id, api_key_id, user_id, model, operation,
           requests, input_tokens, input_cached_tokens, output_tokens, reserved_tokens,
           cost_picodollars, input_cost_picodollars, cached_input_cost_picodollars,
           output_cost_picodollars) AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[],
                         $11::bigint[], $12::bigint[], $13::numeric[], $14::numeric[],
                         $15::numeric[], $16::numeric[])
), hourly AS (
    INSERT INTO usage_hourly AS h
        (organization_id, hour, project_id, api_key_id, user_id, model, operation, requests,
        input_tokens, input_cached_tokens, output_tokens, reserved_tokens, cost_picodollars,
        input_cost_picodollars, cached_input_cost_picodollars, output_cost_picodollars)
    SELECT * FROM sums
    ON CONFLICT (organization_id, hour, project_id, api_key_id, user_id, model, operation)
    DO UPDATE SET requests = h.requests + excluded.requests,
        input_tokens = h.input_tokens + excluded.input_tokens,
        input_cached_tokens = h.input_cached_tokens + excluded.input_cached_tokens,
        output_tokens = h.output_tokens + excluded.output_tokens,
        reserved_tokens = h.reserved_tokens + excluded.reserved_tokens,
        cost_picodollars = h.cost_picodollars + excluded.cost_picodollars,
        input_cost_picodollars = h.input_cost_picodollars + excluded.input_cost_picodollars,
        cached_input_cost_picodollars =
            h.cached_input_cost_picodollars + excluded.cached_input_cost_picodollars,
        output_cost_picodollars = h.output_cost_picodollars + excluded.output_cost_picodollars
)
INSERT INTO usage_daily AS d
    (organization_id, day, project_id, api_key_id, user_id, model, operation, requests,
        input_tokens, input_cached_tokens, output_tokens, reserved_tokens, cost_picodollars,
        input_cost_picodollars, cached_input_cost_picodollars, output_cost_picodollars)
SELECT organization_id, date_trunc('day', hour, 'UTC'), project_id, api_key_id, user_id,
       model, operation, sum(requests), sum(input_tokens), sum(input_cached_tokens),
       sum(output_tokens), sum(reserved_tokens), sum(cost_picodollars),
       sum(input_cost_picodollars), sum(cached_input_cost_picodollars),
       sum(output_cost_picodollars)
FROM sums GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (organization_id, day, project_id, api_key_id, user_id, model, operation)
DO UPDATE SET requests = d.requests + excluded.requests,
    input_tokens = d.input_tokens + excluded.input_tokens,
    input_cached_tokens = d.input_cached_tokens + excluded.input_cached_tokens,
    output_tokens = d.output_tokens + excluded.output_tokens,
    reserved_tokens = d.reserved_tokens + excluded.reserved_tokens,
    cost_picodollars = d.cost_picodollars + excluded.cost_picodollars,
    input_cost_picodollars = d.input_cost_picodollars + excluded.input_cost_picodollars,
    cached_input_cost_picodollars =
        d.cached_input_cost_picodollars + excluded.cached_input_cost_picodollars,
    output_cost_picodollars = d.output_cost_picodollars + excluded.output_cost_picodollars
"""


def _rollup(records: list[UsageRecord]) -> list[list[Any]]:
    """The batch summed per hour and key, as the 16 arrays of ``_ROLLUP``."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for r in records:
        hour = r.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        key = (r.organization_id, hour, r.project_id or "", r.api_key_id or "",
               r.user_id or "", r.model, r.operation)  # fmt: skip
        row = sums.get(key)
        if row is None:
            row = sums[key] = [0] * 9
        cost = r.cost_picodollars
        row[0] += 1
        row[1] += r.input_tokens
        row[2] += r.input_cached_tokens
        row[3] += r.output_tokens
        row[4] += r.reserved_tokens
        row[5] += cost
        row[6] += cost - r.cached_input_cost - r.output_cost
        row[7] += r.cached_input_cost
        row[8] += r.output_cost
    keys = sorted(sums)
    values = [sums[k] for k in keys]
    return [[k[i] for k in keys] for i in range(7)] + [[v[i] for v in values] for i in range(9)]


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
        self.batch_size = min(batch_size, max_queue)  # so the bound is checked (record)
        self.idle_seconds = idle_seconds
        self.max_queue = max_queue
        self._queue: list[UsageRecord] = []
        self._dropped_unlogged = 0  # dropped since the last log line
        self._drop_logged_at = -DROP_LOG_SECONDS
        self._failing_since: float | None = None  # monotonic: flushes fail since then
        self.rejected: deque[UsageRecord] = deque(maxlen=REJECTED_KEPT)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- the request path -------------------------------------------------------------
    def record(self, rec: UsageRecord) -> None:
        """Queue one record; never waits, never touches the database."""
        queue = self._queue
        queue.append(rec)
        if len(queue) >= self.batch_size:
            if len(queue) > self.max_queue:
                self._bound()
            self._wake.set()

    def _bound(self) -> None:
        """Drop the oldest records past ``max_queue``: counted, and logged now and then."""
        overflow = len(self._queue) - self.max_queue
        if overflow <= 0:
            return
        del self._queue[:overflow]
        USAGE_DROPPED.inc(overflow)
        self._dropped_unlogged += overflow
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_SECONDS:
            log.error(
                "usage records dropped: queue full",
                extra={"dropped": self._dropped_unlogged, "max_queue": self.max_queue},
            )
            self._dropped_unlogged = 0
            self._drop_logged_at = now

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Flush in the background: every ``batch_size`` records, and when idle."""
        _gauges.recorders.add(self)
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
                    written = await self.flush(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                log.warning(
                    "usage flush failed; will retry",
                    extra={"error": type(exc).__name__, "queued": len(self._queue)},
                )
                await asyncio.sleep(self.idle_seconds)
                continue
            if self._failing_since is not None:
                log.info(
                    "usage flushed after failures",
                    extra={
                        "records": written,
                        "failing_seconds": round(time.monotonic() - self._failing_since, 1),
                    },
                )
                self._failing_since = None

    async def flush(self, conn: AnyConnection) -> int:
        """Write everything queued now, setting aside the records the table refuses; on
        any other failure the records not written go back to the queue."""
        total = 0
        while self._queue:
            batch, self._queue = (
                self._queue[: self.batch_size * 4],
                self._queue[self.batch_size * 4 :],
            )
            total += await self._write(conn, batch)
        return total

    async def _write(self, conn: AnyConnection, batch: list[UsageRecord]) -> int:
        """COPY ``batch``; a part refused for its data is split in halves (a bad record
        among n costs about 2·log2(n) more statements), a single refused record is
        rejected. Returns how many were written."""
        written = 0
        parts = [batch]  # a stack: the next part to write is the last
        while parts:
            part = parts.pop()
            try:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        TABLE, records=map(_as_row, part), columns=COLUMNS
                    )
                    await conn.execute(_ROLLUP, *_rollup(part))
            except BaseException as exc:
                if not isinstance(exc, Exception) or not _refused_for_data(exc):
                    parts.append(part)
                    self._queue[:0] = [r for p in reversed(parts) for r in p]
                    self._bound()  # what came back counts against the bound too
                    raise
                if len(part) == 1:
                    self._reject(part[0], exc)
                else:
                    half = len(part) // 2
                    parts += (part[half:], part[:half])
                continue
            written += len(part)
        return written

    def _reject(self, rec: UsageRecord, exc: Exception) -> None:
        USAGE_REJECTED.inc()
        self.rejected.append(rec)
        log.error(
            "usage record rejected",
            extra={
                "organization": rec.organization_id,
                "project": rec.project_id,
                "model": rec.model[:200],
                "operation": rec.operation,
                "error": type(exc).__name__,
                "sqlstate": getattr(exc, "sqlstate", None),
            },
        )

    async def drain(self, conn: AnyConnection) -> None:
        """The runtime's drain hook: write what is left before the process goes.

        It may run on another thread's loop (func-python's synchronous ``stop``), so it
        touches only the queue, never the flushing task."""
        written = await self.flush(conn)
        if written:
            log.info("usage drained", extra={"records": written})

    async def stop(self) -> None:
        _gauges.recorders.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class _QueueGauges:
    """The queue of every started ``UsageRecorder`` (one per process outside tests), read
    at scrape time: nothing on the request path."""

    def __init__(self) -> None:
        self.recorders: weakref.WeakSet[UsageRecorder] = weakref.WeakSet()

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        queued, most = self._families()
        recorders = list(self.recorders)
        queued.add_metric([], sum(r.pending for r in recorders))
        most.add_metric([], sum(r.max_queue for r in recorders))
        return [queued, most]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "jan_usage_queue_records",
                "Usage records waiting in memory to be written to the ledger.",
            ),
            GaugeMetricFamily(
                "jan_usage_queue_max_records",
                "Most usage records held in memory (JAN_USAGE_QUEUE_MAX); older ones are "
                "dropped past it.",
            ),
        )


_gauges = _QueueGauges()
REGISTRY.register(_gauges)


async def stream(
    conn: AnyConnection,
    *,
    since: datetime,
    until: datetime,
    organization_id: str | None,
    prefetch: int = 1000,
) -> AsyncIterator[asyncpg.Record]:
    """The ledger's rows written from ``since`` to ``until`` (of one organization, or
    every one), oldest first, through a server-side cursor (``prefetch`` rows at a time);
    the caller holds ``conn`` in a transaction."""
    sql = (
        "SELECT * FROM usage_completions WHERE created_at >= $1 AND created_at < $2"
        " AND ($3::text IS NULL OR organization_id = $3) ORDER BY created_at, id"
    )
    async for row in conn.cursor(sql, since, until, organization_id, prefetch=prefetch):
        yield row
