"""Per-client-address sliding-window limit on the login endpoints.

In memory by default (per instance); with ``REDIS_URL`` set, one sorted set per address in
Redis so the limit holds across instances. If Redis stops answering, the in-memory window
takes over rather than letting logins fail.

The client is the one ``functions.common.clients`` finds behind ``JAN_TRUSTED_PROXIES``;
IPv6 clients are counted per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request

from functions.common.clients import IPNetwork, client_ip, trusted_networks
from functions.common.errors import RateLimited
from functions.common.runtime import Component

log = logging.getLogger(__name__)

LOGIN_LIMIT = 20
LOGIN_WINDOW_SECONDS = 60.0
_MAX_ADDRESSES = 100_000


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> str:
    """The address to count a request against: the client's (``common.clients``), an
    IPv6 client's /64."""
    address = client_ip(peer, forwarded_for, trusted)
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginRateLimiter(Component):
    def __init__(
        self,
        *,
        limit: int = LOGIN_LIMIT,
        window: float = LOGIN_WINDOW_SECONDS,
        redis_url: str | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.limit = limit
        self.window = window
        self.trusted_proxies = trusted_networks(trusted_proxies)
        self._hits: dict[str, deque[float]] = {}
        self._redis: Any = None
        if redis_url is not None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(redis_url, socket_connect_timeout=2)

    async def check(self, request: Request) -> None:
        """Count this attempt; 429 with Retry-After once the address is over the limit."""
        address = client_address(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            self.trusted_proxies,
        )
        now = time.time()
        count = None
        if self._redis is not None:
            try:
                count = await self._count_in_redis(address, now)
            except (RedisError, OSError) as exc:
                log.warning("rate limit falls back to memory", extra={"error": type(exc).__name__})
        if count is None:
            count = self._count_in_memory(address, now)
        if count > self.limit:
            raise RateLimited(
                "Too many sign-in attempts from this address; try again shortly.",
                headers={"Retry-After": str(int(self.window))},
            )

    def _count_in_memory(self, address: str, now: float) -> int:
        hits = self._hits.get(address)
        if hits is None:
            if len(self._hits) >= _MAX_ADDRESSES:
                self._hits.clear()  # bounded memory under address-spraying
            hits = self._hits[address] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        hits.append(now)
        return len(hits)

    async def _count_in_redis(self, address: str, now: float) -> int:
        key = f"jan:login:{address}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, 0, now - self.window)
            pipe.zadd(key, {f"{now}:{secrets.token_hex(4)}": now})
            pipe.zcard(key)
            pipe.expire(key, int(self.window) + 1)
            results = await pipe.execute()
        return int(results[2])

    async def stop(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
