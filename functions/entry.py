"""The Knative function entry: what `func-python` serves.

``new()`` returns an object with ``handle(scope, receive, send)``, ``start``, ``stop``,
``alive`` and ``ready``, delegating to the Starlette app of the area(s) named by
``JAN_FUNCTION``. func-python consumes the ASGI lifespan itself and calls ``start`` and
``stop`` synchronously from inside the running loop; it answers ``/health/liveness`` and
``/health/readiness`` from ``alive()``/``ready()``, which therefore read in-memory state.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import MutableMapping
from typing import Any

from starlette.types import Receive, Scope, Send

from functions.app import create_app
from functions.common import errors, local, logs
from functions.common.middleware import RequestContext
from functions.common.runtime import Runtime
from functions.common.settings import Settings, load_settings
from functions.ops import needs_database

log = logging.getLogger(__name__)
OPEN_WAIT_SECONDS = 10.0
FUNC_LISTEN_ADDRESS = "[::]:8080,0.0.0.0:8080"  # func-python's default


class Function:
    def __init__(self, settings: Settings) -> None:
        self.runtime = Runtime(settings)
        self.app = create_app(self.runtime)
        self._opening: asyncio.Task[None] | None = None

    # --- the func-python interface ---------------------------------------------------
    def start(self, cfg: dict[str, str]) -> None:
        """Begin opening pools in the background; readiness turns true when done."""
        self._ensure_opening()

    def stop(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        self.runtime.stop_sync()

    def alive(self) -> tuple[bool, str]:
        return True, "OK"

    def ready(self) -> tuple[bool, str]:
        return self.runtime.ready, self.runtime.ready_message

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # only when served by something other than func-python
            await self._lifespan(receive, send)
            return
        if (
            scope["type"] == "http"
            and not self.runtime.is_open
            and needs_database(scope["path"])
            and not await self._wait_open()
        ):
            settings = self.runtime.settings
            await RequestContext(
                _unavailable,
                max_body_bytes=settings.jan_max_body_bytes,
                body_timeout_seconds=settings.jan_body_timeout_seconds,
            )(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception:
            # Already answered (RequestContext sends the 500); never let func-python turn
            # it into a plain-text response carrying the exception text.
            log.debug("exception after response", exc_info=True)

    # --- helpers ---------------------------------------------------------------------
    def _ensure_opening(self) -> asyncio.Task[None]:
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self.runtime.open_with_retry())
        return self._opening

    async def _wait_open(self) -> bool:
        task = self._ensure_opening()
        try:
            await asyncio.wait_for(asyncio.shield(task), OPEN_WAIT_SECONDS)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # this request was cancelled (the client left), not the opening
            return False  # stop() cancelled the opening
        return self.runtime.is_open

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._ensure_opening()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._opening is not None and not self._opening.done():
                    self._opening.cancel()
                await self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    raise errors.ServiceUnavailable(
        "The server is starting or its database is not available; retry shortly.",
        headers={"Retry-After": "2"},
    )


def listen_on_knative_port(environ: MutableMapping[str, str]) -> None:
    """Under Knative (``K_SERVICE`` set) listen where it sends traffic: its ``PORT`` (the
    container's port), on the hosts ``LISTEN_ADDRESS`` names. func-python binds
    ``LISTEN_ADDRESS`` alone, and func's buildpack sets it to ``[::]:8080`` in the image."""
    port = environ.get("PORT")
    if not environ.get("K_SERVICE") or not port:
        return
    hosts = [
        a.strip().rpartition(":")[0]
        for a in environ.get("LISTEN_ADDRESS", FUNC_LISTEN_ADDRESS).split(",")
        if a.strip()
    ]
    environ["LISTEN_ADDRESS"] = ",".join(f"{host}:{port}" for host in hosts)


def new(settings: Settings | None = None, **overrides: Any) -> Function:
    """Build the function from the environment (the constructor func-python calls, before
    it binds ``LISTEN_ADDRESS``)."""
    settings = settings or load_settings(overrides)
    logs.setup(settings.jan_log_level)
    settings = local.prepare(settings)
    listen_on_knative_port(os.environ)
    log.info("settings", extra={"settings": settings.masked()})
    return Function(settings)
