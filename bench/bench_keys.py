"""Cost of verifying a credential on the hot path, with the in-process cache warm.

    .venv/bin/python bench/bench_keys.py [iterations]

Reports microseconds per cached API-key verification (HMAC-SHA256 + dict lookup + expiry
check + last-used touch) and per cached JWT user verification (two dict lookups: the token,
HS256-checked on its first use, then the principal).
No database is touched: the caches are warmed directly, which is what a cached request sees.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from pydantic import SecretStr

from functions.common import tokens
from functions.common.principal import Principal
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services import keys
from functions.services.identity import identity_of


async def main(iterations: int) -> None:
    values: dict[str, Any] = {
        "db_postgresql_write_dsn": SecretStr("postgresql://unused/unused"),
        "jwt_secret": SecretStr("bench-jwt-secret-0123456789abcdef0123456789"),
        "apikey_secret": SecretStr("bench-apikey-secret-0123456789abcdef"),
        "model_provider_secret": SecretStr("bench-provider-secret-0123456789abcdef"),
    }
    settings = Settings(**values)
    identity = identity_of(Runtime(settings))
    material = keys.generate(keys.PROJECT_PREFIX, identity.apikey_secret)
    principal = Principal(kind="project_key", organization_id="org_x", project_id="proj_x")
    far = time.time() + 10**9
    cached = keys.CachedKey("key_x", principal, expires_at=None, project_archived=False)
    identity.keys.ttl = identity.keys.negative_ttl = 10**9
    identity.keys.put(material.secret_hash, cached, far)
    access = tokens.issue_access_token(identity.jwt_secret, user_id="user_x")
    identity.users[("user_x", None, None)] = (principal, far)

    async def key() -> Principal:
        return await identity.verify_key(material.plaintext)

    async def user() -> Principal:
        return await identity.verify_user_token(access, project_id=None, organization_id=None)

    for label, call in (("api key", key), ("jwt", user)):
        for _ in range(1000):  # warm-up
            await call()
        started = time.process_time()
        for _ in range(iterations):
            await call()
        per_call = (time.process_time() - started) / iterations * 1e6
        print(f"cached {label} verification: {per_call:.2f} µs CPU per call ({iterations} calls)")
    await identity.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
