"""API key material, the in-process verification cache and batched ``last_used_at``.

A key is ``sk-admin-``, ``sk-proj-`` or ``sk-svcacct-`` followed by 256 random bits
(base64url). Only ``HMAC-SHA256(APIKEY_SECRET, key)`` is stored, with a redacted hint.

Staleness bound: a verified key is cached for ``KEY_CACHE_TTL_SECONDS``. Expiry is checked
against the cached ``expires_at`` on every request, so it is exact. Deletion evicts the
key at once on the instance that deleted it and, with ``REDIS_URL`` set, on every instance
through a pub/sub broadcast; without Redis (or while Redis is unreachable) another instance
may accept a deleted key for at most ``KEY_CACHE_TTL_SECONDS``.

While the database cannot be reached, a key verified at most ``max_stale`` seconds ago
(``JAN_AUTH_MAX_STALE_SECONDS``) is still accepted (``KeyCache.stale``): nothing can be
deleted meanwhile, revocations that arrive still evict, and expiry stays exact. What that
widens is the window of a deletion made on another instance without Redis in the
``KEY_CACHE_TTL_SECONDS`` before the outage: up to ``max_stale`` instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from functions.common.db import Executor
from functions.common.principal import Principal

ADMIN_PREFIX: Final = "sk-admin-"
PROJECT_PREFIX: Final = "sk-proj-"
SERVICE_ACCOUNT_PREFIX: Final = "sk-svcacct-"
KEY_PREFIXES: Final = (ADMIN_PREFIX, PROJECT_PREFIX, SERVICE_ACCOUNT_PREFIX)

KEY_CACHE_TTL_SECONDS: Final = 5.0
NEGATIVE_CACHE_TTL_SECONDS: Final = 1.0
KEY_CACHE_MAX_ENTRIES: Final = 50_000
LAST_USED_FLUSH_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class NewKey:
    plaintext: str
    secret_hash: bytes
    redacted_value: str


def hash_key(secret: bytes, plaintext: str) -> bytes:
    return hmac.new(secret, plaintext.encode(), hashlib.sha256).digest()


def redact(plaintext: str) -> str:
    """What may be shown again later: the prefix and the last four characters."""
    prefix = next((p for p in KEY_PREFIXES if plaintext.startswith(p)), "sk-")
    return f"{prefix}…{plaintext[-4:]}"


def generate(prefix: str, secret: bytes) -> NewKey:
    plaintext = prefix + secrets.token_urlsafe(32)  # 32 bytes = 256 bits
    return NewKey(plaintext, hash_key(secret, plaintext), redact(plaintext))


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A verified key as the hot path needs it: the principal it grants and its expiry."""

    id: str
    principal: Principal
    expires_at: float | None  # epoch seconds
    project_archived: bool


MISSING: Final = object()


class KeyCache:
    """hash → (CachedKey | None, cached_at). None caches an unknown key briefly, so a
    flood of bad keys does not become a flood of queries. A verified key past ``ttl`` is
    kept until ``max_stale``, for ``stale`` (the database is down)."""

    def __init__(
        self,
        ttl: float = KEY_CACHE_TTL_SECONDS,
        negative_ttl: float = NEGATIVE_CACHE_TTL_SECONDS,
        max_entries: int = KEY_CACHE_MAX_ENTRIES,
        max_stale: float = 0.0,
    ) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.max_stale = max_stale
        self._entries: dict[bytes, tuple[CachedKey | None, float]] = {}

    def get(self, secret_hash: bytes, now: float) -> object:
        """The cached ``CachedKey`` or ``None`` (known bad), or ``MISSING`` if absent/stale."""
        entry = self._entries.get(secret_hash)
        if entry is None:
            return MISSING
        value, cached_at = entry
        age = now - cached_at
        if value is None:
            if age > self.negative_ttl:
                del self._entries[secret_hash]
                return MISSING
            return None
        if age > self.ttl:
            if age > self.max_stale:
                del self._entries[secret_hash]
            return MISSING
        return value

    def stale(self, secret_hash: bytes, now: float) -> CachedKey | None:
        """A key verified at most ``max_stale`` seconds ago (for when it cannot be asked)."""
        entry = self._entries.get(secret_hash)
        if entry is None or entry[0] is None or now - entry[1] > self.max_stale:
            return None
        return entry[0]

    def put(self, secret_hash: bytes, value: CachedKey | None, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            # Oldest insertion first (dicts keep order); cheap and good enough for a cache.
            del self._entries[next(iter(self._entries))]
        self._entries[secret_hash] = (value, now)

    def evict(self, hashes: Iterable[bytes]) -> None:
        for h in hashes:
            self._entries.pop(h, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class LastUsed:
    """Key IDs seen since the last flush; written in one statement, never per request."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}

    def touch(self, key_id: str, now: float) -> None:
        self._pending[key_id] = now

    def __len__(self) -> int:
        return len(self._pending)

    async def flush(self, executor: Executor) -> int:
        batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            await executor.execute(
                """
                UPDATE api_keys k SET last_used_at = v.used_at
                FROM unnest($1::text[], $2::timestamptz[]) AS v(id, used_at)
                WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.used_at)
                """,
                list(batch),
                [datetime.fromtimestamp(t, UTC) for t in batch.values()],
            )
        except BaseException:
            # Keep what we could not write; newer touches win.
            self._pending = {**batch, **self._pending}
            raise
        return len(batch)
