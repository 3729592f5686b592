"""Limits hold across instances: three real ``jan-server serve chat`` processes share one
database and (for the Redis variant) our own redis-server; traffic spread over them
against 60 requests a minute, then 600 tokens a minute, is accepted up to the limit plus
the bound ``functions.services.limits.limiter`` documents (the buckets' own refill while
the test runs), and no further; against a token budget (600 tokens a day), up to the
budget exactly. Without Redis the instances share PostgreSQL. With Redis stopped
mid-test, an organization that fails open keeps being served (each instance on its own)
and one that fails closed gets 503s, until Redis is back — rate limits and budgets
alike."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from functions.common.runtime import Runtime
from functions.services.limits import store as limits_store
from tests.chat.fakes import FakeUpstream
from tests.conftest import make_settings
from tests.e2e import ROOT
from tests.factories import Tenant, bearer, create_tenant
from tests.limits.support import RedisServer, redis_server
from tests.pg import free_port

INSTANCES = 3
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
USAGE = 12  # tokens the fake upstream reports for every answer


@dataclass
class Gateway:
    base_url: str
    process: asyncio.subprocess.Process
    log: Path


@contextlib.asynccontextmanager
async def gateways(
    dsn: str, upstream: str, tmp: Path, redis_url: str | None
) -> AsyncIterator[list[Gateway]]:
    """``INSTANCES`` chat processes over one database (and one Redis when given)."""
    settings = make_settings(dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAN_", "REDIS_", "DB_"))}
    env.update(
        {
            "DB_POSTGRESQL_WRITE_DSN": dsn,
            "JWT_SECRET": settings.jwt_secret.get_secret_value(),  # type: ignore[union-attr]
            "APIKEY_SECRET": settings.apikey_secret.get_secret_value(),  # type: ignore[union-attr]
            "MODEL_PROVIDER_SECRET": settings.model_provider_secret.get_secret_value(),  # type: ignore[union-attr]
            "JAN_INFERENCE_MODEL_URL": upstream,
            "JAN_LOG_LEVEL": "WARNING",
            "JAN_RATE_LIMIT_REFRESH_SECONDS": "0.5",
            "JAN_SHUTDOWN_DRAIN_SECONDS": "0",  # nothing to drain for: stop at once
        }
    )
    if redis_url is not None:
        env["REDIS_URL"] = redis_url  # JAN_RATE_LIMIT_STORE auto: redis; else postgres
    started: list[Gateway] = []
    try:
        for n in range(INSTANCES):
            port = free_port()
            log = tmp / f"gateway{n}.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "functions", "serve", "chat",
                    "--listen", f"127.0.0.1:{port}",
                    env=env, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
            started.append(Gateway(f"http://127.0.0.1:{port}", process, log))
        async with httpx.AsyncClient(timeout=2) as client:
            for gateway in started:
                await _ready(client, gateway)
        yield started
    finally:
        for gateway in started:
            if gateway.process.returncode is None:
                gateway.process.terminate()
        for gateway in started:
            try:
                await asyncio.wait_for(gateway.process.wait(), 10)
            except TimeoutError:
                gateway.process.kill()
                await gateway.process.wait()


async def _ready(client: httpx.AsyncClient, gateway: Gateway) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gateway.process.returncode is not None:
            pytest.fail(f"gateway exited: {gateway.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(f"{gateway.base_url}/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    pytest.fail(f"gateway not ready: {gateway.log.read_text()[-3000:]}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = await FakeUpstream("builtin", models=("m1", "m2")).start()
    yield upstream
    await upstream.stop()


async def tenant_with(dsn: str, model: str, **limits: int) -> Tenant:
    runtime = Runtime(make_settings(dsn, jan_migrate_on_start=False))
    await runtime.open()
    try:
        tenant = await create_tenant(runtime)
        await limits_store.set_model_limits(
            runtime.db.writer,
            organization_id=tenant.organization_id,
            project_id=tenant.project_id,
            model=model,
            changes=dict(limits),
        )
    finally:
        await runtime.close()
    return tenant


async def tenant_with_budget(dsn: str, tokens_per_day: int) -> Tenant:
    runtime = Runtime(make_settings(dsn, jan_migrate_on_start=False))
    await runtime.open()
    try:
        tenant = await create_tenant(runtime)
        await limits_store.set_budget(
            runtime.db.writer,
            organization_id=tenant.organization_id,
            column="project_id",
            subject_id=tenant.project_id,
            kind="tokens",
            period="day",
            amount=tokens_per_day,
        )
    finally:
        await runtime.close()
    return tenant


async def spread(
    instances: list[Gateway], key: str, body: dict[str, object], count: int
) -> tuple[list[int], float]:
    """``count`` calls, round-robin over the instances, six at a time: their statuses and
    the seconds from the first sent to the last answered."""
    limit = asyncio.Semaphore(6)
    started = time.monotonic()

    async def one(client: httpx.AsyncClient, n: int) -> int:
        async with limit:
            url = instances[n % len(instances)].base_url + "/v1/chat/completions"
            return (await client.post(url, json=body, headers=bearer(key))).status_code

    async with httpx.AsyncClient(timeout=10) as client:
        statuses = await asyncio.gather(*(one(client, n) for n in range(count)))
    return list(statuses), time.monotonic() - started


@pytest.mark.parametrize("shared", ["redis", "postgres"])
async def test_three_instances_hold_one_limit(
    shared: str, database_dsn: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        redis_url = None
        if shared == "redis":
            redis_url = (await stack.enter_async_context(redis_server())).url
        instances = await stack.enter_async_context(
            gateways(database_dsn, fake.base_url, tmp_path, redis_url)
        )
        # 60 requests a minute: one comes back every second.
        tenant = await tenant_with(database_dsn, "m1", max_requests_per_1_minute=60)
        statuses, elapsed = await spread(instances, tenant.project_key, CHAT, 150)
        accepted = statuses.count(200)
        assert set(statuses) == {200, 429}
        assert accepted <= 60 + math.ceil(elapsed) + 1, (accepted, elapsed)
        assert accepted >= 40, (accepted, elapsed)  # leases held elsewhere are not lost for long
        assert fake.calls == accepted

        # A token budget: 600 a minute (10 a second), each answer using 12 tokens; the
        # reservations (input + max_tokens) are reconciled with that usage.
        tenant = await tenant_with(database_dsn, "m2", max_tokens_per_1_minute=600)
        before = fake.calls
        statuses, elapsed = await spread(
            instances, tenant.project_key, {**CHAT, "model": "m2"}, 150
        )
        accepted = statuses.count(200)
        assert accepted * USAGE <= 600 + 10 * math.ceil(elapsed) + USAGE, (accepted, elapsed)
        assert accepted * USAGE >= 300, (accepted, elapsed)
        assert fake.calls - before == accepted


@pytest.mark.parametrize("shared", ["redis", "postgres"])
async def test_three_instances_hold_one_token_budget(
    shared: str, database_dsn: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        redis_url = None
        if shared == "redis":
            redis_url = (await stack.enter_async_context(redis_server())).url
        instances = await stack.enter_async_context(
            gateways(database_dsn, fake.base_url, tmp_path, redis_url)
        )
        # 600 tokens today; each answer uses 12, reserved as bytes/4 + max_tokens and
        # settled at 12. A budget never refills: no slack from elapsed time.
        tenant = await tenant_with_budget(database_dsn, 600)
        statuses, _ = await spread(instances, tenant.project_key, CHAT, 150)
        accepted = statuses.count(200)
        assert set(statuses) == {200, 429}
        assert accepted * USAGE <= 600, accepted
        # Refused with the budget's room smaller than one reservation on every instance.
        assert accepted * USAGE >= 600 - INSTANCES * 40, accepted
        assert fake.calls == accepted
        async with httpx.AsyncClient() as client:
            r = await client.post(
                instances[0].base_url + "/v1/chat/completions",
                json=CHAT,
                headers=bearer(tenant.project_key),
            )
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"


async def test_redis_stopped_mid_test_each_organization_as_it_chose(
    database_dsn: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    redis = RedisServer()
    await asyncio.to_thread(redis.start)
    try:
        async with gateways(database_dsn, fake.base_url, tmp_path, redis.url) as instances:
            opened = await tenant_with(database_dsn, "m1", max_requests_per_1_minute=1000)
            closed = await tenant_with(database_dsn, "m1", max_requests_per_1_minute=1000)
            # Budgets alone (no rate limit): 240 tokens today, 20 answers' worth.
            opened_budget = await tenant_with_budget(database_dsn, 240)
            closed_budget = await tenant_with_budget(database_dsn, 240)
            conn = await asyncpg.connect(database_dsn)
            try:
                for tenant in (closed, closed_budget):
                    await limits_store.set_failure_mode(
                        conn, organization_id=tenant.organization_id, mode="closed"
                    )
            finally:
                await conn.close()
            statuses, _ = await spread(instances, opened.project_key, CHAT, 6)
            assert statuses == [200] * 6  # served through Redis
            statuses, _ = await spread(instances, opened_budget.project_key, CHAT, 6)
            assert statuses == [200] * 6  # 72 of 240 tokens
            await asyncio.sleep(0.6)  # every instance has reloaded the policies (0.5 s)

            redis.stop()
            statuses, _ = await spread(instances, opened.project_key, CHAT, 30)
            assert statuses == [200] * 30  # fails open: each instance enforces on its own
            statuses, _ = await spread(instances, closed.project_key, CHAT, 6)
            assert statuses == [503] * 6  # fails closed
            # A budget fails open: each instance enforces it alone, from where it last saw
            # it (at most 3 times the 168 tokens left: 14 answers each); fails closed: 503s.
            statuses, _ = await spread(instances, opened_budget.project_key, CHAT, 60)
            assert set(statuses) == {200, 429}
            assert statuses.count(200) <= 3 * 14
            statuses, _ = await spread(instances, closed_budget.project_key, CHAT, 6)
            assert statuses == [503] * 6
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    instances[0].base_url + "/v1/chat/completions",
                    json=CHAT,
                    headers=bearer(closed.project_key),
                )
            assert r.json()["error"]["code"] == "rate_limit_unavailable"
            assert r.headers["retry-after"] == "1"

            await asyncio.to_thread(redis.start)  # back: the closed organization is served
            deadline = time.monotonic() + 15
            while True:
                statuses, _ = await spread(instances, closed.project_key, CHAT, 3)
                if statuses == [200] * 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert statuses == [200] * 3
    finally:
        redis.stop()
