"""``StreamOutcome``: how a stream ended (status, failure, usage), recorded once: the
upstream closed with that outcome and the ledger written."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from functions.common.shutdown import Shutdown
from functions.services.inference import failures
from functions.services.inference.router import OpenStream
from functions.services.inference.sse import StreamTally
from functions.services.inference.streaming import CLIENT_CLOSED, SERVER_CUT, StreamOutcome

USAGE = {"prompt_tokens": 3, "completion_tokens": 2}


class Upstream:
    """What StreamOutcome uses of an OpenStream: close(ok, failure)."""

    def __init__(self) -> None:
        self.closed: list[tuple[bool, failures.Failure | None]] = []

    def close(self, *, ok: bool, failure: failures.Failure | None = None) -> None:
        self.closed.append((ok, failure))


def outcome() -> tuple[StreamOutcome, Upstream, list[tuple[int, dict[str, Any] | None]]]:
    upstream = Upstream()
    records: list[tuple[int, dict[str, Any] | None]] = []
    tally = StreamTally(keep_usage_chunk=False)
    tally.usage = USAGE
    made = StreamOutcome(
        cast(OpenStream, upstream), tally, lambda status, usage: records.append((status, usage))
    )
    return made, upstream, records


def test_a_stream_the_client_left_is_a_499_and_cancelled() -> None:
    made, upstream, records = outcome()
    made.finish()
    assert upstream.closed == [(False, None)]
    assert records == [(CLIENT_CLOSED, USAGE)]


def test_done_is_a_200_and_is_recorded_once() -> None:
    made, upstream, records = outcome()
    with made:
        made.tally.done = True
        made.ended()
    made.finish()  # again: nothing
    assert upstream.closed == [(True, None)] and records == [(200, USAGE)]


def test_an_error_event_of_the_upstream_is_a_502() -> None:
    made, upstream, records = outcome()
    made.tally.error = made.tally.done = True
    made.ended()
    made.finish()
    ((ok, failure),) = upstream.closed
    assert not ok and failure is not None and failure.reason == "error_event"
    assert made.failure is None  # the upstream told the client itself
    assert records == [(502, USAGE)]


def test_an_end_without_done_is_a_cut() -> None:
    made, upstream, records = outcome()
    made.ended()
    made.finish()
    assert made.failure is not None and made.failure.reason == "cut"
    assert upstream.closed == [(False, made.failure)] and records == [(502, USAGE)]


def test_a_broken_stream_takes_its_failures_status_and_an_exception_still_records() -> None:
    made, upstream, records = outcome()
    timeout = failures.from_exception(TimeoutError())
    assert made.broke(timeout) is timeout

    def read() -> None:
        with made:
            raise RuntimeError("the reader failed")

    with pytest.raises(RuntimeError):
        read()
    assert upstream.closed == [(False, timeout)] and records == [(504, USAGE)]


async def test_a_reader_the_shutdown_cuts_is_a_503_not_the_clients_499() -> None:
    shutdown = Shutdown(drain_seconds=0, grace_seconds=0)
    recorded: list[int] = []

    async def read(cut: bool) -> None:
        made, upstream, records = outcome()
        made.shutdown = shutdown
        task = shutdown.enter()
        try:
            with made:
                if cut:
                    shutdown.cut()  # cancels this task, as it does every request in flight
                else:
                    asyncio.current_task().cancel()  # type: ignore[union-attr]  # the client left
                await asyncio.sleep(3600)
        finally:
            shutdown.leave(task)
            assert upstream.closed == [(False, None)]  # the endpoint is not blamed
            recorded.extend(status for status, _ in records)

    for cut in (False, True):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.create_task(read(cut))
    assert recorded == [CLIENT_CLOSED, SERVER_CUT]
