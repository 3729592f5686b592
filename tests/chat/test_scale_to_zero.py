"""Scale to zero: discovery leaves an idle predictor asleep, and a cold one's 503s ("not
ready": loading its model, or queue-proxy while it scales from zero) are waited for within
JAN_UPSTREAM_WARMUP_SECONDS rather than failing the call or ejecting the endpoint. The
model servers are real local HTTP servers (``FakeUpstream``) that count every ``/models``
poll and answer 503 until a given time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import openai
import orjson
import pytest

from functions.common import errors
from functions.common.runtime import Runtime
from functions.common.upstream import Upstream
from functions.services.inference.catalog import Catalog
from functions.services.inference.health import HealthBook
from functions.services.inference.router import Router
from functions.services.inference.service import Inference
from tests.chat.fakes import FakeUpstream
from tests.chat.test_router import route_to
from tests.conftest import component
from tests.factories import create_tenant
from tests.tools.http_server import serve_app

Start = Callable[..., Awaitable[FakeUpstream]]
PROVIDERS = "/v1/organization/models/providers"
BODY = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]})


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def test_an_idle_kserve_provider_is_not_polled_while_no_one_asks(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    isvc = await upstreams("isvc", models=("isvc-m",))
    vllm = await upstreams("vllm", models=("vllm-m",))
    tenant = await create_tenant(runtime)
    for kind, up in (("kserve", isvc), ("vllm", vllm)):
        body = {"name": kind, "kind": kind, "base_url": up.base_url}
        created = await client.post(PROVIDERS, json=body, headers=tenant.admin_headers)
        assert created.status_code == 200, created.text
    assert isvc.model_lists == vllm.model_lists == 1  # a new provider is discovered once
    svc = component(runtime, Inference)
    # A catalog of its own whose every answer is stale at once (the service's catalog keeps
    # its minute), sharing the service's endpoints, so it sees which ones are in use.
    catalog = Catalog(health=svc.health, providers=svc.catalog.providers, discover_seconds=0)
    await catalog.refresh()
    for _ in range(3):
        await catalog.discover_stale()
    assert vllm.model_lists == 4  # polled on every round
    assert isvc.model_lists == 1  # idle: left asleep

    # Someone uses it: while it is awake the next round refreshes its list, once.
    r = await client.post(
        "/v1/chat/completions", json=chat("isvc-m"), headers=tenant.project_headers
    )
    assert r.status_code == 200, r.text
    for _ in range(3):
        await catalog.discover_stale()
    assert isvc.model_lists == 2
    assert vllm.model_lists == 7


async def test_the_builtin_model_is_discovered_when_first_asked_for(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    await asyncio.sleep(1.2)  # the catalog's upkeep has run its first round meanwhile
    assert builtin.model_lists == 0  # started, reloaded, upkept: never woken
    listed = await client.get("/v1/models", headers=tenant.project_headers)
    assert [m["id"] for m in listed.json()["data"]] == ["m1", "m2"]
    assert builtin.model_lists == 1  # asked for: discovered then
    r = await client.post("/v1/chat/completions", json=chat("m2"), headers=tenant.project_headers)
    assert r.status_code == 200 and builtin.model_lists == 1  # known: no further poll
    unknown = await client.post(
        "/v1/chat/completions", json=chat("nope"), headers=tenant.project_headers
    )
    assert unknown.status_code == 404
    assert builtin.model_lists == 1  # its answer is fresh: an unknown name wakes nothing


async def test_a_cold_builtin_model_is_waited_for_on_the_first_call(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    builtin.cold_until = time.monotonic() + 1.5  # not ready: 503 to /models and completions
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=0
        ) as sdk:
            started = time.monotonic()
            reply = await sdk.chat.completions.create(**chat("m1"))  # type: ignore[call-overload]
            waited = time.monotonic() - started
            assert reply.choices[0].message.content == "hi from builtin"
            assert 0.8 < waited < 10
            assert builtin.model_lists > 1  # discovery asked again until it answered
            builtin.cold_until = time.monotonic() + 1.0  # scaled to zero again meanwhile
            calls = builtin.calls
            stream = await sdk.chat.completions.create(stream=True, **chat("m1"))  # type: ignore[call-overload]
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text.startswith("builtin-0 ") and builtin.calls > calls + 1
    ep = component(runtime, Inference).health.endpoint(builtin.base_url)
    assert not ep.ejected and ep.failures == 0


async def test_a_warming_endpoint_is_asked_again_until_it_serves(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=10)
    route = route_to(health, a)
    a.cold_until = time.monotonic() + 1.0
    reply = await router.send(route, "/chat/completions", BODY)
    assert reply.status == 200 and a.calls > 2  # asked every Retry-After (0.2 s)
    a.cold_until = time.monotonic() + 1.0
    stream = await router.open_stream(
        route, "/chat/completions", BODY.replace(b"}]", b'}],"stream":true', 1)
    )
    assert b"a-0" in stream.first
    stream.close(ok=True)
    ep = health.endpoint(a.base_url)
    assert not ep.ejected and ep.failures == 0 and ep.outstanding == 0


async def test_waiting_for_a_warming_endpoint_ends_at_the_bound(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    a.cold_until = time.monotonic() + 60
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=0.6)
    started = time.monotonic()
    with pytest.raises(errors.ServiceUnavailable) as caught:
        await router.send(route_to(health, a), "/chat/completions", BODY)
    assert 0.6 <= time.monotonic() - started < 2
    assert caught.value.headers["Retry-After"] == "0.2" and a.calls >= 3
    assert not health.endpoint(a.base_url).ejected  # warming is not broken


async def test_a_warm_endpoint_is_taken_rather_than_waiting(
    upstreams: Start, upstream_client: Upstream
) -> None:
    cold, warm = await upstreams("cold"), await upstreams("warm")
    cold.cold_until = time.monotonic() + 60
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=10)
    route = route_to(health, cold, warm)
    started = time.monotonic()
    for _ in range(4):
        reply = await router.send(route, "/chat/completions", BODY)
        assert b"hi from warm" in reply.body
    assert time.monotonic() - started < 1
    assert not health.endpoint(cold.base_url).ejected
