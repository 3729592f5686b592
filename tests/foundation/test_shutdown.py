"""The steps of the graceful shutdown (``functions.common.shutdown``), driven by the
signals a process gets (the handlers ``install`` registers call ``signalled``), and the
listening sockets two processes can share. The whole way down, through real processes
under load, is ``tests/chat/test_graceful_shutdown.py``."""

from __future__ import annotations

import asyncio
import socket

from functions.common.shutdown import Shutdown
from functions.entry import listening_sockets
from tests.pg import free_port

FOREVER = 3600.0  # a drain or grace that only a signal ends in a test
WAIT = 10.0  # a guard against a hang, not a measurement


async def _in_flight(shutdown: Shutdown, cut: list[bool]) -> None:
    """A request: registered with the shutdown, running until it is cancelled."""
    task = shutdown.enter()
    try:
        await asyncio.sleep(FOREVER)
    except asyncio.CancelledError:
        cut.append(shutdown.was_cut())
        raise
    finally:
        shutdown.leave(task)


async def test_each_further_signal_skips_a_step_and_the_cut_cancels_tracked_work() -> None:
    shutdown = Shutdown(drain_seconds=FOREVER, grace_seconds=FOREVER)
    cut: list[bool] = []
    request = asyncio.create_task(_in_flight(shutdown, cut))
    untracked = asyncio.create_task(asyncio.sleep(FOREVER))
    closing = asyncio.create_task(shutdown.closing())
    await asyncio.sleep(0)
    assert not shutdown.draining and not closing.done()

    shutdown.signalled()  # SIGTERM: readiness says draining; the listener stays open
    assert shutdown.draining
    await asyncio.sleep(0.05)
    assert not closing.done()
    shutdown.signalled()  # again: the drain ends, the listener closes, the grace begins
    await asyncio.wait_for(closing, WAIT)
    assert not request.done() and not shutdown.cutting

    shutdown.signalled()  # once more: the grace ends, what is tracked is cut
    await asyncio.wait_for(asyncio.gather(request, return_exceptions=True), WAIT)
    assert request.cancelled() and cut == [True]
    assert shutdown.cutting and not untracked.done()
    untracked.cancel()


async def test_a_client_leaving_is_not_a_cut() -> None:
    shutdown = Shutdown(drain_seconds=FOREVER, grace_seconds=FOREVER)
    cut: list[bool] = []
    request = asyncio.create_task(_in_flight(shutdown, cut))
    await asyncio.sleep(0)
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    assert cut == [False]


async def test_ctrl_c_closes_at_once_without_draining() -> None:
    shutdown = Shutdown(drain_seconds=FOREVER, grace_seconds=FOREVER)
    closing = asyncio.create_task(shutdown.closing())
    shutdown.signalled(interactive=True)  # SIGINT
    await asyncio.wait_for(closing, WAIT)
    assert not shutdown.cutting


def test_two_processes_can_listen_on_one_port() -> None:
    port = free_port()
    first = listening_sockets(f"127.0.0.1:{port}")
    second = listening_sockets(f"127.0.0.1:{port}")  # as a second process would
    try:
        for sock in (*first, *second):
            assert sock.getsockname() == ("127.0.0.1", port)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            # Named TCP, so that asyncio turns Nagle off on its connections (else a small
            # response waits 40 ms for the client's delayed ACK).
            assert sock.proto == socket.IPPROTO_TCP
    finally:
        for sock in (*first, *second):
            sock.close()
