"""The Knative function entry: what `func-python` serves.

``new()`` returns an object with ``handle(scope, receive, send)``, ``start``, ``stop``,
``alive`` and ``ready``, delegating to the Starlette app of the area(s) named by
``JAN_FUNCTION``. func-python consumes the ASGI lifespan itself and calls ``start`` and
``stop`` synchronously from inside the running loop; it answers ``/health/liveness`` and
``/health/readiness`` from ``alive()``/``ready()``, which therefore read in-memory state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections.abc import Iterator, MutableMapping
from typing import Any

import func_python.http
import func_python.sock
import hypercorn.asyncio
import hypercorn.config
from starlette.types import Receive, Scope, Send

from functions.app import create_app
from functions.common import errors, local, logs
from functions.common.middleware import RequestContext
from functions.common.runtime import Runtime
from functions.common.settings import Settings, load_settings
from functions.common.shutdown import CUT_SECONDS, Shutdown
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
        if self.runtime.shutdown.draining:
            return False, "draining"
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


def listening_sockets(listen: str) -> list[socket.socket]:
    """Bound sockets for a ``LISTEN_ADDRESS`` list, as func-python binds them (IPv6 ones
    IPv6-only; an unspecified IPv6 address brings the IPv4 one) plus ``SO_REUSEPORT``: a
    second ``jan-server serve`` on the same port shares it, so one process can replace
    another with no refused connection (the old one drains, then closes; see
    ``functions.common.shutdown``)."""
    addresses = [a.strip() for a in listen.split(",") if a.strip()]
    func_python.sock.fixup_ipv4_unspecified(addresses)
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            host, _, port = address.rpartition(":")
            if "[" in host:
                if not socket.has_dualstack_ipv6():
                    log.warning("IPv6 not available: not listening", extra={"address": address})
                    continue
                sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on the
            # connections of a socket that says so, and without it every small response
            # waits for the client's delayed ACK (40 ms).
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host.strip("[]"), int(port)))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"nothing to listen on in {listen!r}")
    return sockets


def serve(function: Function, listen: str, server: str = "hypercorn") -> None:
    """Serve ``function`` on ``listen`` with the graceful shutdown of
    ``functions.common.shutdown`` in place of the server's own (hypercorn's closes the
    listener at the signal and cancels what still runs 3 s later): on hypercorn through
    func-python's ASGI application (its ``/health/*`` routes, as Knative Functions run
    it), or on uvicorn. The lifespan is the function's own either way: an awaited close on
    the serving loop, not func-python's synchronous ``stop``."""
    sockets = listening_sockets(listen)
    shutdown = function.runtime.shutdown
    run = _on_uvicorn if server == "uvicorn" else _on_hypercorn
    asyncio.run(run(function, sockets, shutdown))


async def _on_hypercorn(
    function: Function, sockets: list[socket.socket], shutdown: Shutdown
) -> None:
    config = hypercorn.config.Config()
    config.bind = [f"fd://{sock.detach()}" for sock in sockets]
    config.graceful_timeout = shutdown.grace_seconds + CUT_SECONDS
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    shutdown.install(asyncio.get_running_loop())
    served = func_python.http.ASGIApplication(function)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await function.handle(scope, receive, send)
        else:
            await served(scope, receive, send)

    await hypercorn.asyncio.serve(
        app,  # type: ignore[arg-type]  # Starlette's ASGI types, not hypercorn's
        config,
        shutdown_trigger=shutdown.closing,
    )


async def _on_uvicorn(function: Function, sockets: list[socket.socket], shutdown: Shutdown) -> None:
    import uvicorn  # only here: every cold start would pay for its import

    class Uvicorn(uvicorn.Server):
        """uvicorn, with the signals left to ``Shutdown`` (it would take them over, then
        raise them again on its way out)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        function.handle,
        interface="asgi3",  # a bound method looks like an ASGI2 app to uvicorn's sniffing
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(shutdown.grace_seconds + CUT_SECONDS),
    )
    server = Uvicorn(config)
    loop = asyncio.get_running_loop()
    shutdown.install(loop)
    serving = loop.create_task(server.serve(sockets))
    closing = loop.create_task(shutdown.closing())
    await asyncio.wait((serving, closing), return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True  # it closes the listeners, then waits for what runs
    closing.cancel()
    await serving


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
