"""The router's Prometheus metrics move: attempts by outcome, failures by reason, time to
first token, tokens, and the endpoint gauges read from the health book."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from functions.common import errors
from functions.common.runtime import Runtime
from functions.common.upstream import Upstream
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.health import HealthBook
from functions.services.inference.router import Router
from tests.chat.fakes import FakeUpstream
from tests.chat.test_router import BODY, route_to
from tests.conftest import METRICS_AUTH
from tests.factories import create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
STREAM = orjson.dumps({"model": "m1", "messages": [], "stream": True})


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def label(route: ModelRoute, fake: FakeUpstream) -> str:
    """How metrics name a fake's endpoint: its provider and place, never its URL."""
    return route.provider.label(route.provider.base_urls.index(fake.base_url))


def attempts(route: ModelRoute, fake: FakeUpstream, outcome: str) -> float:
    return sample(
        "jan_upstream_requests_total", model="m1", endpoint=label(route, fake), outcome=outcome
    )


async def test_attempts_failures_and_gauges(upstreams: Start, upstream_client: Upstream) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    a.mode = "fail500"
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    route = route_to(health, a, b)
    for _ in range(8):  # a is first choice every other time until ejected
        await router.send(route, "/chat/completions", BODY)
    assert attempts(route, b, "ok") == 8
    assert attempts(route, a, "upstream") == 3  # then ejected: no more attempts on it
    reason = {"endpoint": label(route, a), "fault": "upstream", "reason": "status_500"}
    assert sample("jan_upstream_failures_total", **reason) == 3
    assert sample("jan_upstream_endpoint_healthy", endpoint=label(route, a)) == 0
    assert sample("jan_upstream_endpoint_healthy", endpoint=label(route, b)) == 1

    b.mode = "refuse400"
    with pytest.raises(errors.InvalidRequest):
        await router.send(route, "/chat/completions", BODY)
    assert attempts(route, b, "caller") == 1

    b.mode, b.chunk_delay = "ok", 0.2
    stream = await router.open_stream(route, "/chat/completions", STREAM)
    assert sample("jan_upstream_outstanding_requests", endpoint=label(route, b)) == 1
    stream.close(ok=False)  # the client left
    assert sample("jan_upstream_outstanding_requests", endpoint=label(route, b)) == 0
    assert attempts(route, b, "cancelled") == 1


async def test_streams_count_time_to_first_token_and_mid_stream_faults(
    upstreams: Start, upstream_client: Upstream
) -> None:
    from functions.services.inference.router import StreamBroken

    a = await upstreams("a")
    health = HealthBook(None)
    router = Router(health, upstream_client)
    route = route_to(health, a)
    ttft_before = sample("jan_upstream_time_to_first_token_seconds_count", model="m1")
    stream = await router.open_stream(route, "/chat/completions", STREAM)
    async for _ in stream:
        pass
    stream.close(ok=True)
    assert attempts(route, a, "ok") == 1
    assert sample("jan_upstream_time_to_first_token_seconds_count", model="m1") == ttft_before + 1

    a.mode, a.stream_chunks = "cut", 5
    stream = await router.open_stream(route, "/chat/completions", STREAM)
    with pytest.raises(StreamBroken):
        async for _ in stream:
            pass
    stream.close(ok=False)
    assert attempts(route, a, "upstream") == 1  # the stream's own failure, not "cancelled"
    assert attempts(route, a, "cancelled") == 0


async def test_tokens_are_counted_per_model(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    chat = {"model": "m2", "messages": [{"role": "user", "content": "hi"}]}
    prompt = sample("jan_upstream_tokens_total", model="m2", kind="prompt")
    completion = sample("jan_upstream_tokens_total", model="m2", kind="completion")
    r = await client.post("/v1/chat/completions", json=chat, headers=tenant.project_headers)
    assert r.status_code == 200
    s = await client.post(
        "/v1/chat/completions", json={**chat, "stream": True}, headers=tenant.project_headers
    )
    assert s.status_code == 200
    assert sample("jan_upstream_tokens_total", model="m2", kind="prompt") == prompt + 14
    assert sample("jan_upstream_tokens_total", model="m2", kind="completion") == completion + 10
    scraped = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert "jan_upstream_requests_total{" in scraped
    assert 'jan_upstream_endpoint_healthy{endpoint="builtin"} 1.0' in scraped
