"""One upstream HTTP client per process, for model servers (and other OpenAI-compatible
upstreams).

Why aiohttp on the hot path: bench/upstream_clients.py sends the same POST to a local mock
at 32 concurrent requests and measures process CPU per request. On this 2-core machine:

    httpx, default transport (httpcore)   1.86 ms
    httpx over aiohttp (httpx-aiohttp)    0.19 ms
    aiohttp directly                      0.062 ms

The proxy path therefore talks to ``session`` (an ``aiohttp.ClientSession``) directly.
Cold paths (model discovery, health probes) keep httpx's API through ``client``, an
``httpx.AsyncClient`` whose transport is the same aiohttp session: one connection pool,
one place for limits.

Timeouts are per call: ``connect`` bounds pool wait plus connecting; ``idle`` bounds each
read from the socket (aiohttp's ``sock_read``), which is the per-chunk idle timeout for
streams and the time-to-headers for everything.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from functions.common.runtime import Runtime

MAX_CONNECTIONS = 1000
MAX_CONNECTIONS_PER_HOST = 512
KEEPALIVE_SECONDS = 60.0


def timeout(*, connect: float, idle: float | None) -> aiohttp.ClientTimeout:
    """A per-call timeout: ``connect`` to get a connection, ``idle`` between socket reads."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_read=idle)


class Upstream:
    """The process-wide upstream client. Open inside the serving event loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._client: httpx.AsyncClient | None = None

    def open(self) -> None:
        """Create the session (needs a running event loop; nothing to await)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS,
            limit_per_host=MAX_CONNECTIONS_PER_HOST,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout(connect=5.0, idle=600.0),
            # Bodies pass through byte for byte: no cookie jar, no automatic decompression.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(client=self._session),
            timeout=httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("upstream client not open")
        return self._session

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("upstream client not open")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()  # closes the shared aiohttp session too
        self._session = self._client = None


def ensure(runtime: Runtime) -> Upstream:
    """The runtime's Upstream, opened and registered to close on stop (idempotent).

    Call from inside the running loop (a start hook or a handler); nothing here awaits, so
    two callers cannot race.
    """
    existing = runtime.services.get(Upstream)
    if existing is not None:
        assert isinstance(existing, Upstream)
        return existing
    upstream = Upstream()
    upstream.open()
    runtime.services[Upstream] = upstream
    runtime.on_stop(upstream.close)
    return upstream
