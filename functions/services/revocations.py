"""Revocation broadcast over Redis pub/sub, so every instance drops a deleted key at once.

Messages are ``*`` (drop every cached credential: memberships or projects changed) or a
comma-separated list of hex key hashes. The listener reconnects with backoff and clears
the caches after any gap, since messages sent meanwhile were lost; the cache TTL bounds
staleness whenever Redis is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

CHANNEL: Final = "jan:auth:revocations"
EVERYTHING: Final = b"*"


class RevocationBus:
    def __init__(self, url: str, on_message: Callable[[bytes], None]) -> None:
        # Imported here: a process without Redis never loads the client (cold starts).
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._client: Any = aioredis.from_url(url, socket_connect_timeout=2)
        self._on_message = on_message
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen_forever())

    async def publish(self, message: bytes) -> None:
        try:
            await self._client.publish(CHANNEL, message)
        except self._errors as exc:
            # Others fall back to the cache TTL; the caller's own cache is already evicted.
            log.warning("revocation broadcast failed", extra={"error": type(exc).__name__})

    async def _listen_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except self._errors as exc:
                self.subscribed.clear()
                log.warning("revocation listener lost Redis", extra={"error": type(exc).__name__})
            self._on_message(EVERYTHING)  # we may have missed messages
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _listen(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            self._on_message(EVERYTHING)
            self.subscribed.set()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self._on_message(bytes(message["data"]))
        finally:
            with contextlib.suppress(*self._errors):
                await pubsub.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(*self._errors):
            await self._client.aclose()
