"""Router resilience under faults, against real local model servers (``FakeUpstream``):
an endpoint far slower than its peers is ejected (latency outliers), a lone slow one is
not, and an ejected endpoint returns only once it serves a real request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from prometheus_client import REGISTRY

from functions.common.runtime import Runtime
from functions.common.upstream import Upstream
from functions.services.inference.health import HealthBook
from functions.services.inference.router import Router
from functions.services.inference.service import Inference
from tests.chat.fakes import FakeUpstream
from tests.chat.test_router import BODY, route_to
from tests.conftest import component

Start = Callable[..., Awaitable[FakeUpstream]]
SLOW = 1.0  # seconds the slow endpoint takes to answer


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def test_an_endpoint_far_slower_than_its_peer_is_ejected(
    upstreams: Start, upstream_client: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    health = HealthBook(None, slow_min_seconds=0.3)
    router = Router(health, upstream_client)
    route = route_to(health, a, b)
    ep_a = health.endpoint(a.base_url)
    timings: list[tuple[float, float]] = []  # (started, seconds) of every request
    stop = time.monotonic() + 60

    async def client() -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            reply = await router.send(route, "/chat/completions", BODY)
            assert reply.status == 200
            timings.append((started, time.monotonic() - started))

    clients = [asyncio.ensure_future(client()) for _ in range(8)]
    await asyncio.sleep(1.0)  # both fast: nothing happens
    assert not ep_a.ejected and ep_a.samples >= 8
    baseline = p99([s for _, s in timings])
    caplog.set_level(logging.WARNING, "functions.services.inference.health")
    a.mode, a.delay = "slow", SLOW
    slow_since = time.monotonic()
    while not ep_a.ejected and time.monotonic() < slow_since + 30:
        await asyncio.sleep(0.05)
    ejected_at = time.monotonic()
    assert ep_a.ejected, "the slow endpoint was never ejected"
    await asyncio.sleep(2.0)  # the healthy endpoint alone serves what starts now
    stop = 0.0
    await asyncio.gather(*clients)
    after = [s for started, s in timings if started > ejected_at]
    print(
        f"baseline p99 {baseline * 1000:.1f} ms; detected after "
        f"{ejected_at - slow_since:.2f} s; p99 after {p99(after) * 1000:.1f} ms ({len(after)})"
    )
    assert len(after) > 50
    assert p99(after) < max(3 * baseline, 0.1) < SLOW / 3
    label = route.labels[ep_a]
    assert REGISTRY.get_sample_value(
        "jan_upstream_ejections_total", {"endpoint": label, "reason": "slow"}
    )
    (record,) = [r for r in caplog.records if r.getMessage() == "endpoint ejected"]
    assert record.reason == "slow" and record.endpoint == label
    assert not health.endpoint(b.base_url).ejected


async def test_a_lone_slow_endpoint_is_not_ejected(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    health = HealthBook(None, slow_min_seconds=0.1, slow_samples=4)
    router = Router(health, upstream_client)
    a.mode, a.delay = "slow", 0.2
    lone = route_to(health, a)
    for _ in range(4):
        await router.send(lone, "/chat/completions", BODY)
    assert not health.endpoint(a.base_url).ejected  # nowhere else to go
    # Its peer is as slow: not an outlier either.
    b.mode, b.delay = "slow", 0.2
    both = route_to(health, a, b)
    await asyncio.gather(*(router.send(both, "/chat/completions", BODY) for _ in range(8)))
    assert not any(ep.ejected for ep in both.endpoints)


async def test_an_endpoint_that_lists_models_but_fails_completions_stays_out(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    svc = component(runtime, Inference)
    ep = svc.health.endpoint(builtin.base_url)
    builtin.mode = "broken"  # /models answers; every completion is a 500
    for _ in range(svc.health.eject_after):
        svc.health.failed(ep)
    assert ep.ejected
    backoff = []
    for _ in range(3):
        ep.ejected_until = time.time() - 1  # its time is up
        calls, lists = builtin.calls, builtin.model_lists
        await svc.health.probe_due(svc.catalog.probe)
        assert ep.ejected  # the trial completion failed: kept out
        assert builtin.calls > calls and builtin.model_lists > lists
        backoff.append(ep.ejected_until - time.time())
    assert backoff[0] < backoff[1] < backoff[2]  # growing: 4, 8, 16 s
    builtin.mode = "ok"
    ep.ejected_until = time.time() - 1
    await svc.health.probe_due(svc.catalog.probe)
    assert not ep.ejected
    assert builtin.bodies[-1]["max_tokens"] == 1  # a minimal request
