"""API keys: storage, the verification cache and its bounds, Redis revocation broadcast,
and batched last_used_at."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from functions.app import create_app
from functions.common import tokens
from functions.common.errors import APIError
from functions.common.principal import Principal
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services import keys
from functions.services.identity import Identity
from tests.conftest import component
from tests.factories import create_project_key, create_tenant

REDIS = "redis://127.0.0.1:6379/0"


class _NoDatabase:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"database used: {name}")


async def _open(settings: Settings) -> Runtime:
    runtime = Runtime(settings)
    create_app(runtime)
    await runtime.open()
    return runtime


@pytest.fixture
async def opened(runtime: Runtime) -> Runtime:
    create_app(runtime)
    await runtime.open()
    return runtime


async def test_only_the_hmac_is_stored(opened: Runtime) -> None:
    t = await create_tenant(opened)
    row = await opened.db.writer.fetchrow(
        "SELECT * FROM api_keys WHERE kind = 'project' AND organization_id = $1", t.organization_id
    )
    assert row is not None
    secret = component(opened, Identity).apikey_secret
    assert row["secret_hash"] == keys.hash_key(secret, t.project_key)
    assert t.project_key not in str(dict(row)) and row["redacted_value"].endswith(
        t.project_key[-4:]
    )
    body = t.project_key.removeprefix(keys.PROJECT_PREFIX)
    assert len(body) == 43  # 32 random bytes, base64url


async def test_cached_verification_needs_no_database(opened: Runtime) -> None:
    t = await create_tenant(opened)
    identity = component(opened, Identity)
    first = await identity.verify_key(t.project_key)
    real = opened.db.writer
    opened.db.writer = _NoDatabase()  # type: ignore[assignment]
    try:
        assert await identity.verify_key(t.project_key) == first
    finally:
        opened.db.writer = real


async def test_expiry_is_exact_and_deletion_bounded_by_ttl(opened: Runtime) -> None:
    t = await create_tenant(opened)
    identity = component(opened, Identity)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    expiring = await create_project_key(opened, t, expires_at=soon)
    await identity.verify_key(expiring)  # cached while valid
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    with pytest.raises(APIError) as info:
        await identity.verify_key(expiring)
    assert info.value.status == 401 and info.value.code == "api_key_expired"
    # Deleted behind this instance's back (as another instance would): refused after the TTL.
    identity.keys.ttl = 0.2
    await identity.verify_key(t.project_key)
    await opened.db.writer.execute("DELETE FROM api_keys WHERE kind = 'project'")
    await asyncio.sleep(0.25)
    with pytest.raises(APIError):
        await identity.verify_key(t.project_key)


async def test_revocation_is_broadcast_through_redis(settings: Settings) -> None:
    with_redis = settings.model_copy(update={"redis_url": SecretStr(REDIS)})
    a, b = await _open(with_redis), await _open(with_redis)
    try:
        t = await create_tenant(a)
        ia, ib = component(a, Identity), component(b, Identity)
        await ib.verify_key(t.project_key)  # b caches it, with a long TTL
        ib.keys.ttl = 3600
        assert ib.bus is not None
        await asyncio.wait_for(ib.bus.subscribed.wait(), 5)
        secret_hash = await a.db.writer.fetchval(
            "DELETE FROM api_keys WHERE kind = 'project' RETURNING secret_hash"
        )
        await ia.revoke_keys([secret_hash])
        for _ in range(100):
            if secret_hash not in ib.keys._entries:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(APIError):
            await ib.verify_key(t.project_key)
    finally:
        await a.close()
        await b.close()


async def test_last_used_is_batched_and_drained(opened: Runtime) -> None:
    t = await create_tenant(opened)
    identity = component(opened, Identity)
    for _ in range(50):
        await identity.verify_key(t.project_key)
    assert len(identity.last_used) == 1  # one pending entry, however many requests
    used = await opened.db.writer.fetchval(
        "SELECT last_used_at FROM api_keys WHERE kind = 'project'"
    )
    assert used is None  # nothing written on the request path
    await opened.close()  # the drain hook flushes on stop
    import asyncpg

    assert opened.settings.db_postgresql_write_dsn is not None
    conn = await asyncpg.connect(opened.settings.db_postgresql_write_dsn.get_secret_value())
    try:
        used = await conn.fetchval("SELECT last_used_at FROM api_keys WHERE kind = 'project'")
    finally:
        await conn.close()
    assert used is not None


def test_cache_is_bounded() -> None:
    cache = keys.KeyCache(max_entries=3)
    for n in range(5):
        cache.put(bytes([n]), None, 0.0)
    assert len(cache) == 3 and cache.get(bytes([0]), 0.0) is keys.MISSING


def test_a_verified_key_is_kept_for_outages_until_its_max_staleness() -> None:
    cache = keys.KeyCache(ttl=5, negative_ttl=1, max_stale=600)
    principal = Principal(kind="project_key", organization_id="org_a", project_id="proj_a")
    good = keys.CachedKey(id="key_a", principal=principal, expires_at=None, project_archived=False)
    cache.put(b"good", good, 0.0)
    cache.put(b"bad", None, 0.0)
    assert cache.get(b"good", 5.0) is good
    # Past the TTL it is asked again, but what was verified stays for an outage …
    assert cache.get(b"good", 6.0) is keys.MISSING and cache.stale(b"good", 6.0) is good
    assert cache.stale(b"good", 600.0) is good and cache.stale(b"good", 601.0) is None
    # … and is gone past the max staleness; an unknown key never serves as a stale answer.
    assert cache.get(b"good", 601.0) is keys.MISSING and len(cache) == 1
    assert cache.get(b"bad", 2.0) is keys.MISSING and cache.stale(b"bad", 0.5) is None
    assert len(cache) == 0
    cache.put(b"good", good, 0.0)
    cache.evict([b"good"])  # a revocation
    assert cache.stale(b"good", 6.0) is None


async def test_verified_access_tokens_still_expire_exactly(opened: Runtime) -> None:
    t = await create_tenant(opened)
    identity = component(opened, Identity)
    issued = int(time.time()) - 10
    token = tokens.issue_access_token(
        identity.jwt_secret, user_id=t.owner_user_id, ttl=12, now=issued
    )
    verify = functools.partial(
        identity.verify_user_token, token, project_id=None, organization_id=None
    )
    assert (await verify()).user_id == t.owner_user_id  # verified once, then looked up
    assert token in identity.verified_tokens
    await asyncio.sleep(issued + 12 - time.time() + 0.05)
    with pytest.raises(APIError) as info:
        await verify()
    assert info.value.status == 401 and info.value.code == "token_expired"
