"""One upstream HTTP client per process, for model servers (and other OpenAI-compatible
upstreams).

Why aiohttp on the hot path: bench/upstream_clients.py sends the same POST to a local mock
at 32 concurrent requests and measures process CPU per request. On this 2-core machine:

    httpx, default transport (httpcore)   1.86 ms
    httpx over aiohttp (httpx-aiohttp)    0.19 ms
    aiohttp directly                      0.062 ms

The proxy path therefore talks to ``session`` (an ``aiohttp.ClientSession``) directly, and
so do the cold paths (model discovery, health probes): one connection pool, one place for
limits, and a process serving models loads no second HTTP client (cold starts).

Timeouts are per call: ``connect`` bounds pool wait plus connecting; ``idle`` bounds each
read from the socket (aiohttp's ``sock_read``), which is the per-chunk idle timeout for
streams and the time-to-headers for everything.

Model providers are created by organization and project owners, so where this client may
connect is guarded (``ProviderGuard``): the connector's resolver refuses a name that
resolves to a non-public address unless ``JAN_PROVIDER_ALLOWED_HOSTS`` allows it. That
check runs when a connection is made (and aiohttp caches answers for a minute), never per
request, and the connection goes to the address that was checked, so a name cannot
rebind between check and use. aiohttp never asks the resolver about an IP literal: the
catalog drops such endpoints itself (``ProviderGuard.refusal``). The built-in provider's
host (``JAN_INFERENCE_MODEL_URL``, set by the operator) is exempt.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from functions.common.netguard import (
    AddressError,
    AddressPolicy,
    AddressRefused,
    IPAddress,
    Unresolvable,
    ip_literal,
    parse_address,
    vetted_address,
)
from functions.common.runtime import Component
from functions.common.settings import Settings

MAX_CONNECTIONS = 1000
MAX_CONNECTIONS_PER_HOST = 512
KEEPALIVE_SECONDS = 60.0


def timeout(*, connect: float, idle: float | None) -> aiohttp.ClientTimeout:
    """A per-call timeout: ``connect`` to get a connection, ``idle`` between socket reads."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_read=idle)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` given in seconds (model servers do not send the HTTP-date form)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


CHECK_SECONDS = 5.0


class ProviderGuard:
    """Where model providers may point: public addresses, and what the operator allows."""

    def __init__(self, policy: AddressPolicy, exempt_hosts: Iterable[str] = ()) -> None:
        self.policy = policy
        self.exempt_hosts = frozenset(h.rstrip(".").lower() for h in exempt_hosts)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderGuard:
        builtin = urlsplit(settings.jan_inference_model_url or "").hostname
        return cls(
            AddressPolicy.from_entries(settings.jan_provider_allowed_hosts),
            [builtin] if builtin else [],
        )

    def trusts(self, host: str) -> bool:
        """Connections to this host need no address check (allow-listed, or built-in)."""
        return self.policy.names(host) or host.rstrip(".").lower() in self.exempt_hosts

    def refusal(self, url: str) -> str | None:
        """Why a tenant's endpoint is refused without a DNS lookup, or None. Covers what the
        resolver never sees (IP literals) and the built-in's exemption, which is the
        operator's alone; a name is checked by the resolver when connected to."""
        host = urlsplit(url).hostname
        if host is None:
            return "the URL has no host"
        literal = ip_literal(host)
        if literal is not None:
            permitted = self.policy.permits(host, literal)
            return None if permitted else AddressRefused(host, literal).message
        if host.rstrip(".").lower() in self.exempt_hosts and not self.policy.names(host):
            return f"{host} is the built-in model server, configured by the operator"
        return None

    async def check(self, url: str) -> None:
        """Resolve a tenant's endpoint now (creating or changing a provider); raise
        AddressError with the reason when it may not be used."""
        await self.vet(url)

    async def vet(self, url: str) -> IPAddress | None:
        """The address to connect to for a tenant's URL, resolved now (``None``: the
        allow-list names the host, connect by name); raise AddressError when it may not
        be used. For clients without the guarded resolver (webhooks)."""
        reason = self.refusal(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if reason is not None:
            raise AddressError(host, reason)
        if self.policy.names(host):
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                return await vetted_address(host, port, self.policy)
        except TimeoutError:
            raise Unresolvable(host) from None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing addresses the guard does not permit."""

    def __init__(self, guard: ProviderGuard) -> None:
        self._guard = guard
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not self._guard.trusts(host):
            for result in found:
                address = parse_address(result["host"])
                if not self._guard.policy.permits(host, address):
                    raise AddressRefused(host, address)
        return found

    async def close(self) -> None:
        await self._inner.close()


class Upstream(Component):
    """The process-wide upstream client. Open inside the serving event loop.

    ``lazy``: open on first use instead of at start (a process that serves no models
    needs it only when an administrator adds a provider, to poll its ``/models``)."""

    def __init__(self, guard: ProviderGuard | None = None, *, lazy: bool = False) -> None:
        self.guard = guard
        self.lazy = lazy
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None

    async def start(self) -> None:
        if not self.lazy:
            self.open()

    @property
    def is_open(self) -> bool:
        return self._session is not None

    async def stop(self) -> None:
        await self.close()

    def open(self) -> None:
        """Create the session (needs a running event loop; nothing to await)."""
        if self._session is not None:
            return
        if self.guard is not None:
            self._resolver = GuardedResolver(self.guard)
        connector = aiohttp.TCPConnector(
            limit=MAX_CONNECTIONS,
            limit_per_host=MAX_CONNECTIONS_PER_HOST,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ttl_dns_cache=60,
            resolver=self._resolver,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout(connect=5.0, idle=600.0),
            # Bodies pass through byte for byte: no cookie jar, no automatic decompression.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None and self.lazy:
            self.open()
        if self._session is None:
            raise RuntimeError("upstream client not open")
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._resolver is not None:
            await self._resolver.close()  # a resolver given to the connector is ours to close
        self._session = None
        self._resolver = None
