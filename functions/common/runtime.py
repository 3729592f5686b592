"""The per-process runtime: settings, the database pools, and the lifecycle of the
components the app factory built (``manage``). Opened once, closed on stop.

A component declares its own work at ``start`` (inside the serving loop, once the database
is open), ``drain`` (write what must not be lost, on a connection the runtime gives it) and
``stop``; the runtime runs them in the order the factory listed them, stops in reverse.

func-python calls ``start``/``stop`` without awaiting them and cancels whatever is still
running once the server exits, so work that must survive shutdown (queued usage records)
is flushed by *drain hooks*, which ``stop_sync`` runs to completion on a connection of
their own in a helper thread. ``jan-server serve`` awaits ``close`` instead, which stops
the components first (a flush in progress hands its records back) and drains after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

import asyncpg

from functions.common import migrate
from functions.common.db import AnyConnection, Database
from functions.common.settings import Settings
from functions.common.shutdown import Shutdown

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_SECONDS = 20.0


class NotOpen(RuntimeError):
    """A database-backed request arrived before the runtime could open."""


class Component:
    """A long-lived part of the process. Override what applies; each runs once."""

    async def start(self) -> None:
        """Begin background work (the database is open; called inside the serving loop)."""

    async def drain(self, conn: AnyConnection) -> None:
        """Write what must survive shutdown. May run on another thread's loop (see
        ``Runtime.stop_sync``): touch only plain state and ``conn``, no tasks."""

    async def stop(self) -> None:
        """Cancel background work and close clients."""


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.shutdown = Shutdown(
            settings.jan_shutdown_drain_seconds, settings.jan_shutdown_grace_seconds
        )
        self._db: Database | None = None
        self.ready = False
        self.ready_message = "starting"
        self.components: list[Component] = []
        self._started: list[Component] = []
        self._open_lock = asyncio.Lock()
        self._closed = False
        self._without_database = False  # open, serving areas that need none

    @property
    def db(self) -> Database:
        if self._db is None:
            raise NotOpen("database not connected")
        return self._db

    @property
    def is_open(self) -> bool:
        return self._db is not None or self._without_database

    def manage(self, *components: Component) -> None:
        """Run these components' start, drain and stop with the runtime (in this order)."""
        self.components.extend(components)

    # --- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, migrate (or check migrations), start the components. Safe to call twice."""
        async with self._open_lock:
            if self.is_open:
                return
            s = self.settings
            if not s.uses_database:  # no pool to open, no migration to wait for
                self._without_database = True
                for component in self.components:
                    await component.start()
                    self._started.append(component)
                self.ready, self.ready_message = True, "OK"
                return
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
            for component in self.components:
                await component.start()
                self._started.append(component)
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
        """Full async shutdown: stop the components (their background work ends and hands
        back what it held, such as a batch of usage records it was writing), drain what
        they left, close the pools."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        started = self._started
        await self._close_resources(keep_database=True)
        if self._db is not None:
            async with self._db.writer.acquire() as conn:
                await self._run_drains(conn, started)
        await self._close_resources()

    def stop_sync(self) -> None:
        """Shutdown for callers that cannot await (func-python's ``stop``)."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        if self._started and self.settings.db_postgresql_write_dsn is not None:
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

    async def _run_drains(
        self, conn: AnyConnection, components: list[Component] | None = None
    ) -> None:
        for component in self._started if components is None else components:
            try:
                await component.drain(conn)
            except Exception:
                log.exception("drain failed", extra={"component": type(component).__name__})

    async def _close_resources(self, *, keep_database: bool = False) -> None:
        steps: list[Callable[[], Awaitable[None]]] = [c.stop for c in reversed(self._started)]
        self._started = []
        if self._db is not None and not keep_database:
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
