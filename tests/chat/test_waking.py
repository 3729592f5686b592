"""Waking a model that scaled to zero, from the client's side (``waking``): requests held
while the only endpoint answers 503 or refuses connections (its revision starting) are
asked again with back-off, wait together with one asker (no thundering herd), and the
wake is measured. The model servers are real local HTTP servers (``FakeUpstream``) that
count every request they answer; a stopped one refuses connections on its port."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest
from prometheus_client import REGISTRY

from functions.common import errors
from functions.common.upstream import Upstream
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.health import HealthBook
from functions.services.inference.router import Router
from functions.services.providers.directory import Provider
from tests.chat.fakes import FakeUpstream

Start = Callable[..., Awaitable[FakeUpstream]]
_IDS = itertools.count()
N = 20


def kserve_route(health: HealthBook, *fakes: FakeUpstream) -> ModelRoute:
    """A route to a KServe provider (one that scales to zero) of a model of its own, so
    the process-wide metrics of one test are its own."""
    n = next(_IDS)
    urls = tuple(f.base_url for f in fakes)
    provider = Provider(f"prov_w{n}", "org_t", None, "test", "kserve", urls, None)
    eps = tuple(health.endpoint(u, label=provider.label(i)) for i, u in enumerate(urls))
    return ModelRoute(f"waking-{n}", provider, eps, provider.headers, "test", 0)


def body(route: ModelRoute) -> bytes:
    return orjson.dumps({"model": route.model, "messages": [{"role": "user", "content": "hi"}]})


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(check: Callable[[], bool]) -> None:
    """Wait for a state the test drives towards (bounded, never a timing assertion)."""
    for _ in range(3000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("state not reached")


async def test_concurrent_requests_for_a_waking_model_wait_together(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=30)
    route = kserve_route(health, a)
    a.cold_until = time.monotonic() + 600  # 503 "not ready", Retry-After 0.2, until woken
    held = {"model": route.model}
    started = time.monotonic()
    calls = [
        asyncio.create_task(router.send(route, "/chat/completions", body(route))) for _ in range(N)
    ]
    await until(lambda: metric("jan_model_requests_held", **held) == N)  # all held at once
    a.cold_until = 0.0  # the model is up
    replies = await asyncio.gather(*calls)
    elapsed = time.monotonic() - started
    assert all(r.status == 200 and b"hi from a" in r.body for r in replies)
    # One first try each, one asker at most every 0.2 s (its Retry-After) while cold, one
    # call each once it serves. A herd would cost N tries every 0.2 s.
    asks = elapsed / 0.2 + 2
    assert N * 2 <= a.calls <= N * 2 + asks
    assert metric("jan_model_requests_held", **held) == 0
    assert metric("jan_model_wake_seconds_count", **held) == 1  # one wake, measured once
    assert metric("jan_model_wake_gave_up_total", **held) == 0
    ep = health.endpoint(a.base_url)
    assert not ep.ejected and ep.failures == 0 and ep.outstanding == 0
    assert not router.waking.wakes  # nothing kept once no one is held

    # Awake: a later request is not held and makes one call.
    before = a.calls
    await router.send(route, "/chat/completions", body(route))
    assert a.calls == before + 1


async def test_a_request_arriving_during_a_wake_joins_it_without_trying(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=30)
    route = kserve_route(health, a)
    a.cold_until = time.monotonic() + 600
    first = asyncio.create_task(router.send(route, "/chat/completions", body(route)))
    await until(lambda: metric("jan_model_requests_held", model=route.model) == 1)
    asked, started = a.calls, time.monotonic()
    later = [
        asyncio.create_task(router.send(route, "/chat/completions", body(route))) for _ in range(5)
    ]
    await until(lambda: metric("jan_model_requests_held", model=route.model) == 6)
    a.cold_until = 0.0
    assert all(r.status == 200 for r in await asyncio.gather(first, *later))
    elapsed = time.monotonic() - started
    # The late ones never tried while it was cold: only the asker did, then one call each.
    assert a.calls <= asked + elapsed / 0.2 + 2 + 5


async def test_refused_connections_while_the_revision_starts_are_waited_for(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=30)
    route = kserve_route(health, a)
    label = route.labels[route.endpoints[0]]
    await a.stop()  # scaled to zero: the port refuses connections

    async def revision_starts() -> None:
        await asyncio.sleep(1.5)
        await a.start()  # the same port again

    starting = asyncio.create_task(revision_starts())
    started = time.monotonic()
    refused = {"endpoint": label, "fault": "upstream", "reason": "connect"}
    replies = await asyncio.gather(
        *(router.send(route, "/chat/completions", body(route)) for _ in range(N))
    )
    elapsed = time.monotonic() - started
    await starting
    assert all(r.status == 200 and b"hi from a" in r.body for r in replies)
    assert a.calls == N  # it served each once
    # One refused first try each, then one asker with back-off (0.25 s doubling, at most
    # 2 s apart): a herd would be N refused tries per step.
    assert N < metric("jan_upstream_failures_total", **refused) <= N + 5 + elapsed / 2
    ep = health.endpoint(a.base_url)
    assert ep.failures == 0 and ep.outstanding == 0  # (refusing ejects it, as before,
    assert metric("jan_model_wake_seconds_count", model=route.model) == 1  # until probed)


async def test_a_refusing_endpoint_beside_one_that_serves_holds_nothing(
    upstreams: Start, upstream_client: Upstream
) -> None:
    down, up = await upstreams("down"), await upstreams("up")
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=30, backoff_seconds=0)
    route = kserve_route(health, down, up)
    await down.stop()
    for _ in range(10):
        reply = await router.send(route, "/chat/completions", body(route))
        assert b"hi from up" in reply.body
    assert health.endpoint(down.base_url).ejected  # out of rotation: no longer tried
    assert metric("jan_model_requests_held", model=route.model) == 0
    assert metric("jan_model_wake_seconds_count", model=route.model) == 0


async def test_a_refused_connection_is_a_failure_where_the_provider_never_sleeps(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=30, backoff_seconds=0)
    route = kserve_route(health, a)
    vllm = ModelRoute(
        route.model,
        Provider(route.provider.id, "org_t", None, "test", "vllm", route.provider.base_urls, None),
        route.endpoints,
        route.headers,
        "test",
        0,
    )
    await a.stop()
    with pytest.raises(errors.UpstreamError):  # at once: a 502, no wait
        await router.send(vllm, "/chat/completions", body(vllm))
    assert metric("jan_model_requests_held", model=vllm.model) == 0


async def test_held_requests_give_up_at_the_wake_time(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    a.cold_until = time.monotonic() + 60
    health = HealthBook(None)
    router = Router(health, upstream_client, warmup_seconds=0.6)
    route = kserve_route(health, a)
    started = time.monotonic()
    outcomes = await asyncio.gather(
        *(router.send(route, "/chat/completions", body(route)) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(o, errors.ServiceUnavailable) for o in outcomes)
    assert metric("jan_model_wake_gave_up_total", model=route.model) == 5
    assert metric("jan_model_requests_held", model=route.model) == 0
    assert metric("jan_model_wake_seconds_count", model=route.model) == 0  # it never woke
    # One first try each; the asker's tries 0.2 s apart, and each that takes the turn
    # over may make one more before its own bound.
    assert a.calls <= 5 + (time.monotonic() - started) / 0.2 + 1 + 5
    assert not router.waking.wakes and not health.endpoint(a.base_url).ejected
