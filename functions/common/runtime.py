"""The per-process runtime: settings, database pools, the shared HTTP client, and the
start/stop hooks areas register. Built by the app factory, opened once, closed on stop.

func-python calls ``start``/``stop`` without awaiting them and cancels whatever is still
running once the server exits, so work that must survive shutdown (queued usage records)
is flushed by *drain hooks*, which ``stop_sync`` runs to completion on a connection of
their own in a helper thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import httpx

from functions.common import migrate
from functions.common.db import AnyConnection, Database
from functions.common.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

StartHook = Callable[["Runtime"], Awaitable[None]]
StopHook = Callable[[], Awaitable[None]]
DrainHook = Callable[[AnyConnection], Awaitable[None]]
DRAIN_TIMEOUT_SECONDS = 20.0


class NotOpen(RuntimeError):
    """A database-backed request arrived before the runtime could open."""


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db: Database | None = None
        self._http: httpx.AsyncClient | None = None
        self.ready = False
        self.ready_message = "starting"
        self.services: dict[type[Any], Any] = {}
        self._start_hooks: list[StartHook] = []
        self._stop_hooks: list[StopHook] = []
        self._drain_hooks: list[DrainHook] = []
        self._open_lock = asyncio.Lock()
        self._closed = False

    # --- what handlers use -------------------------------------------------------------
    @property
    def db(self) -> Database:
        if self._db is None:
            raise NotOpen("database not connected")
        return self._db

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise NotOpen("runtime not open")
        return self._http

    @property
    def is_open(self) -> bool:
        return self._db is not None and self._http is not None

    def service(self, cls: type[T]) -> T:
        """A process-wide object an area registered at start (typed lookup)."""
        found: T = self.services[cls]
        return found

    # --- what areas register -----------------------------------------------------------
    def on_start(self, hook: StartHook) -> None:
        self._start_hooks.append(hook)

    def on_stop(self, hook: StopHook) -> None:
        self._stop_hooks.append(hook)

    def on_drain(self, hook: DrainHook) -> None:
        self._drain_hooks.append(hook)

    # --- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, migrate (or check migrations), run start hooks. Safe to call twice."""
        async with self._open_lock:
            if self.is_open:
                return
            s = self.settings
            assert s.db_postgresql_write_dsn is not None, "local.prepare() sets the DSN"
            db = await Database.connect(
                s.db_postgresql_write_dsn.get_secret_value(),
                [d.get_secret_value() for d in s.db_postgresql_read_dsns],
                max_size=s.db_pool_max_size,
                recheck_seconds=s.db_reader_recheck_seconds,
            )
            try:
                async with db.writer.acquire() as conn:
                    if s.jan_migrate_on_start:
                        await migrate.apply(conn)
                    state = await migrate.status(conn, migrate.load())
                if not state.current:
                    self.ready_message = (
                        f"{len(state.pending)} migrations pending; run `jan-server migrate apply`"
                    )
                    log.warning("migrations pending", extra={"pending": len(state.pending)})
            except BaseException:
                await db.close()
                raise
            self._db = db
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=5, read=600, write=30, pool=30),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            )
            for hook in self._start_hooks:
                await hook(self)
            if state.current:
                self.ready = True
                self.ready_message = "OK"
            log.info("runtime open", extra={"areas": list(s.areas), "readers": len(db.readers)})

    async def open_with_retry(self, delay: float = 2.0) -> None:
        """Keep trying until the database answers; readiness stays false meanwhile."""
        while not self._closed:
            try:
                await self.open()
                return
            except (
                OSError,
                asyncpg.PostgresError,
                TimeoutError,
                migrate.MigrationError,
            ) as exc:
                self.ready_message = f"database not available: {type(exc).__name__}"
                log.warning("runtime open failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Full async shutdown: drain, stop hooks, close clients and pools."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        if self._db is not None:
            async with self._db.writer.acquire() as conn:
                await self._run_drains(conn)
        await self._close_resources()

    def stop_sync(self) -> None:
        """Shutdown for callers that cannot await (func-python's ``stop``)."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        if self._drain_hooks and self.settings.db_postgresql_write_dsn is not None:
            dsn = self.settings.db_postgresql_write_dsn.get_secret_value()
            thread = threading.Thread(target=asyncio.run, args=(self._drain_on(dsn),))
            thread.start()
            thread.join(DRAIN_TIMEOUT_SECONDS)
            if thread.is_alive():
                log.error("drain did not finish in time")
        with contextlib.suppress(RuntimeError):  # no loop running: nothing async to close
            asyncio.get_running_loop().create_task(self._close_resources())

    async def _drain_on(self, dsn: str) -> None:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.error("drain skipped: database not reachable", extra={"error": type(exc).__name__})
            return
        try:
            await self._run_drains(conn)
        finally:
            await conn.close()

    async def _run_drains(self, conn: AnyConnection) -> None:
        for hook in self._drain_hooks:
            try:
                await hook(conn)
            except Exception:
                log.exception("drain hook failed")

    async def _close_resources(self) -> None:
        steps: list[StopHook] = list(reversed(self._stop_hooks))
        if self._http is not None:
            steps.append(self._http.aclose)
        if self._db is not None:
            steps.append(self._db.close)
        current = asyncio.current_task()
        for step in steps:
            try:
                await step()
            except asyncio.CancelledError:
                # func-python's server exits right after stop() and asyncio.run cancels
                # what is left; we are shutting down anyway, so finish closing.
                if current is not None:
                    current.uncancel()
            except Exception:
                log.exception("stop step failed")
