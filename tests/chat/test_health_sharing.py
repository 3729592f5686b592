"""Endpoint health travels between instances through the database, or through Redis when
REDIS_URL is set (the real Redis at 127.0.0.1:6379)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import redis.asyncio as redis
from pydantic import SecretStr

from functions.app import create_app
from functions.common import errors
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.health import DatabaseHealthStore, HealthBook, RedisHealthStore
from functions.services.inference.service import Inference
from tests.chat.fakes import FakeUpstream
from tests.conftest import component

REDIS = "redis://127.0.0.1:6379/0"
BODY = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]})


async def test_an_ejection_reaches_a_fresh_instance(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    store = DatabaseHealthStore(lambda: runtime.db.writer)
    first = HealthBook(store)
    ep = first.endpoint("http://gpu-1/v1")
    for _ in range(3):
        first.failed(ep)
    await first.settle()
    assert ep.ejected

    fresh = HealthBook(store)
    await fresh.pull()
    seen = fresh.endpoint("http://gpu-1/v1")
    assert seen.ejected and seen.ejected_until > time.time()

    async def answers(url: str) -> bool:
        return True

    ep.ejected_until = time.time() - 1
    await first.probe_due(answers)
    await first.settle()
    await fresh.pull()
    assert not seen.ejected


@pytest.fixture
async def redis_key() -> AsyncIterator[str]:
    """A hash of this test's own in the shared Redis, removed afterwards."""
    key = f"jan:test:endpoint-health:{uuid.uuid4().hex}"
    yield key
    conn = redis.from_url(REDIS)
    await conn.delete(key)
    await conn.aclose()


async def started(settings: Settings, key: str) -> Inference:
    """A second (third, …) instance: its own runtime and Inference, sharing via Redis."""
    rt = Runtime(settings)
    create_app(rt, ["chat"])
    svc = component(rt, Inference)
    assert isinstance(svc.health.store, RedisHealthStore)  # chosen because REDIS_URL is set
    svc.health.store.key = key
    await rt.open()
    return svc


async def builtin_route(svc: Inference) -> ModelRoute:
    route = await svc.catalog.resolve_fresh("org_any", None, "m1")
    assert route is not None
    return route


async def test_two_runtimes_share_health_through_redis(
    settings: Settings, builtin: FakeUpstream, redis_key: str
) -> None:
    with_redis = settings.model_copy(update={"redis_url": SecretStr(REDIS)})
    a = await started(with_redis, redis_key)
    b = await started(with_redis, redis_key)
    fresh: Inference | None = None
    try:
        route = await builtin_route(a)
        builtin.mode = "fail500"
        for _ in range(3):  # one endpoint: each call is one failed attempt
            with pytest.raises(errors.UpstreamError):
                await a.router.send(route, "/chat/completions", BODY)
        await a.health.settle()
        ep_a = a.health.endpoint(builtin.base_url)
        assert ep_a.ejected

        await b.health.pull()  # what b's periodic catalog refresh does
        ep_b = b.health.endpoint(builtin.base_url)
        assert ep_b.ejected and ep_b.ejected_until == pytest.approx(ep_a.ejected_until)
        fresh = await started(with_redis, redis_key)  # starts informed, no failure of its own
        assert fresh.health.endpoint(builtin.base_url).ejected

        builtin.mode = "ok"
        ep_a.ejected_until = time.time() - 1  # its time is up: a probes it back
        await a.health.probe_due(a.catalog.probe)
        await a.health.settle()
        assert not ep_a.ejected
        await b.health.pull()
        assert not ep_b.ejected and ep_b.failures == 0
    finally:
        for svc in (a, b, fresh):
            if svc is not None:
                await svc.runtime.close()
