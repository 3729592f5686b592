"""Background responses: claimed from the database, run here, survivable elsewhere.

``POST /v1/responses`` with ``background: true`` only stores the response as `queued`.
Every instance runs a small loop that claims queued work (``FOR UPDATE SKIP LOCKED``) fairly
across projects (the project running least goes first, so one tenant's backlog does not
hold up another's), as soon as a slot is free, and holds each claim by a lease it renews
while the run lasts. How much a project and a user may have queued or running is limited
when it is created (``service.enqueue_background``). If the instance scales down,
its drain hook hands the leases back; if it dies, the leases expire. Either way another
instance (or this one after a restart) claims the response again, and one abandoned too
often is marked failed. A cancel (status set to `cancelled`) is noticed at the next
renewal, which stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from functions.common.db import CONNECTION_ERRORS, AnyConnection
from functions.common.errors import APIError
from functions.common.principal import Owner
from functions.common.runtime import Component, Runtime
from functions.responses import store
from functions.responses.engine import Run, run_events
from functions.responses.model import ChatModel
from functions.responses.objects import response_error
from functions.responses.params import ResponseRequest
from functions.responses.service import (
    AFFINITY_PARAM,
    append_to_conversation,
    load_history,
    stored_principal,
)
from functions.services.toolbox.server import ToolRegistry, resolve_server_tools

log = logging.getLogger(__name__)


class BackgroundWorker(Component):
    def __init__(
        self,
        runtime: Runtime,
        model: ChatModel,
        tools: ToolRegistry,
        *,
        concurrency: int = 4,
        lease_seconds: float = 30.0,
        poll_seconds: float = 2.0,
    ) -> None:
        self.worker_id = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.running: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._runtime = runtime
        self.model = model
        self.tools = tools

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._wakeup = asyncio.Event()  # bound to the serving loop
        self._loop_task = asyncio.get_running_loop().create_task(self._claim_forever())

    async def drain(self, conn: AnyConnection) -> None:
        released = await store.release_leases(conn, worker_id=self.worker_id)
        if released:
            log.info("background responses handed back", extra={"count": released})

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()

    def wake(self) -> None:
        """New work was queued here: claim it now rather than at the next poll."""
        self._wakeup.set()

    # --- claiming ------------------------------------------------------------------------
    async def _claim_forever(self) -> None:
        while True:
            try:
                await self.claim_available()
            except CONNECTION_ERRORS as exc:
                log.warning("claiming background responses failed", extra={"error": repr(exc)})
            except Exception:
                log.exception("claiming background responses failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wakeup.wait()
            self._wakeup.clear()

    async def claim_available(self) -> None:
        runtime = self._runtime
        writer = runtime.db.writer
        await store.fail_exhausted(writer)
        free = self.concurrency - len(self.running)
        if free <= 0:
            return
        rows = await store.claim_fairly(
            writer, worker_id=self.worker_id, lease_seconds=self.lease_seconds, limit=free
        )
        for row in rows:
            response_id: str = row["id"]
            task = asyncio.get_running_loop().create_task(self._run(runtime, row))
            self.running[response_id] = task
            task.add_done_callback(self._forget(response_id))

    def _forget(self, response_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self.running.pop(response_id, None)
            self._wakeup.set()  # a slot is free: claim the next turn now, not at the poll

        return forget

    # --- running -------------------------------------------------------------------------
    async def _run(self, runtime: Runtime, row: asyncpg.Record) -> None:
        response_id: str = row["id"]
        work = asyncio.current_task()
        assert work is not None
        heartbeat = asyncio.get_running_loop().create_task(self._renew(runtime, response_id, work))
        try:
            run = await self._rebuild(runtime, row)
            events = run_events(run, self.model, _Recorder(runtime, self.worker_id))
            async with contextlib.aclosing(events):
                async for _ in events:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Before the first event (e.g. the model is gone): fail it, if still ours.
            await self._fail(runtime, row, exc)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _renew(self, runtime: Runtime, response_id: str, work: asyncio.Task[None]) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                ours = await store.renew_lease(
                    runtime.db.writer,
                    response_id=response_id,
                    worker_id=self.worker_id,
                    lease_seconds=self.lease_seconds,
                )
            except CONNECTION_ERRORS:
                continue  # the lease outlives a short outage; try again next beat
            if not ours:  # cancelled, or another instance took it over
                work.cancel()
                return

    async def _rebuild(self, runtime: Runtime, row: asyncpg.Record) -> Run:
        params = row["params"]
        owner = Owner.of(stored_principal(params))
        inputs = await store.input_items_of(runtime.db.writer, owner=owner, response_id=row["id"])
        request = ResponseRequest.from_stored(
            params,
            input_items=inputs,
            previous_response_id=row["previous_response_id"],
            conversation_id=row["conversation_id"],
            metadata=row["metadata"],
        )
        async with runtime.db.writer.acquire() as conn:
            history, _ = await load_history(conn, owner=owner, request=request)
        return Run(
            response_id=row["id"],
            owner=owner,
            request=request,
            history=history,
            server_tools=await resolve_server_tools(self.tools, request.tools, owner),
            created_at=row["created_at"].timestamp(),
            affinity=params.get(AFFINITY_PARAM) or row["id"],
        )

    async def _fail(self, runtime: Runtime, row: asyncpg.Record, exc: Exception) -> None:
        if isinstance(exc, APIError):
            error = response_error(exc)
        else:
            log.error("background response failed", exc_info=exc)
            error = {"code": "server_error", "message": "The response could not be completed."}
        failed = {
            "id": row["id"],
            "status": "failed",
            "output": [],
            "usage": None,
            "error": error,
            "incomplete_details": None,
            "completed_at": None,
        }
        with contextlib.suppress(*CONNECTION_ERRORS):
            await store.finish_response(
                runtime.db.writer, response=failed, worker_id=self.worker_id
            )


class _Recorder:
    """A background run was stored when queued and marked running when claimed; its
    result is written only while this worker still holds the lease. A run stopped here
    (cancelled by the caller, or this instance shutting down) writes nothing: the cancel
    is already stored, and a shutdown leaves the response to be claimed again."""

    def __init__(self, runtime: Runtime, worker_id: str) -> None:
        self.runtime = runtime
        self.worker_id = worker_id

    async def started(self, run: Run) -> None:
        return None

    async def finished(self, run: Run, final: dict[str, Any]) -> None:
        if final["status"] == "cancelled":
            return
        async with self.runtime.db.writer.acquire() as conn, conn.transaction():
            if await store.finish_response(conn, response=final, worker_id=self.worker_id):
                await append_to_conversation(conn, run)
