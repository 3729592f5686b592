"""The router against real local HTTP servers: failover before the first byte, ejection
and probing, least-outstanding balancing and affinity, classification of upstream errors."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest

from functions.common import errors
from functions.common.upstream import Upstream
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.health import HealthBook
from functions.services.inference.router import Router
from functions.services.inference.sse import payloads
from functions.services.providers.directory import Provider
from tests.chat.fakes import FakeUpstream

Start = Callable[..., Awaitable[FakeUpstream]]
BODY = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]})


_ROUTES = itertools.count()


def route_to(health: HealthBook, *fakes: FakeUpstream) -> ModelRoute:
    urls = tuple(f.base_url for f in fakes)
    # A provider of its own per route: metrics name endpoints by provider, process-wide.
    provider = Provider(f"prov_t{next(_ROUTES)}", "org_t", None, "test", "vllm", urls, None)
    eps = tuple(health.endpoint(u, label=provider.label(i)) for i, u in enumerate(urls))
    return ModelRoute("m1", provider, eps, provider.headers, "test", 0)


async def test_killed_endpoint_fails_over_then_is_ejected_and_probed_back(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    route = route_to(health, a, b)
    await a.stop()  # killed mid-run: connection refused from now on
    replies = [await router.send(route, "/chat/completions", BODY) for _ in range(8)]
    assert all(r.status == 200 and b"hi from b" in r.body for r in replies)
    ep_a = health.endpoint(a.base_url)
    assert ep_a.ejected and ep_a.failures >= 3
    calls_before = b.calls
    for _ in range(4):  # ejected: no more attempts on a
        await router.send(route, "/chat/completions", BODY)
    assert b.calls == calls_before + 4
    assert ep_a.outstanding == 0 and health.endpoint(b.base_url).outstanding == 0

    async def probe(url: str) -> bool:
        try:
            async with upstream_client.session.get(f"{url}/models") as r:
                return r.status == 200
        except Exception:
            return False

    ep_a.ejected_until = time.time() - 1  # its time is up, but it is still down
    await health.probe_due(probe)
    assert ep_a.ejected and ep_a.ejected_until > time.time()
    await a.start()  # back on the same port
    ep_a.ejected_until = time.time() - 1
    await health.probe_due(probe)
    assert not ep_a.ejected and ep_a.failures == 0


async def test_500ing_endpoint_is_retried_elsewhere(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    a.mode = "fail500"
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    route = route_to(health, a, b)
    for _ in range(6):
        reply = await router.send(route, "/chat/completions", BODY)
        assert b"hi from b" in reply.body
    assert health.endpoint(a.base_url).ejected


async def test_slow_endpoint_times_out_and_the_next_answers(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    a.mode, a.delay = "slow", 3.0
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0, response_timeout=0.3)
    route = route_to(health, a, b)
    # Affinity pins the first choice to whichever endpoint hashes first; find a key for a.
    key = next(
        k
        for k in (f"conv{i}" for i in range(100))
        if router.pick(route, [], k) is route.endpoints[0]
    )
    started = time.perf_counter()
    reply = await router.send(route, "/chat/completions", BODY, affinity=key)
    assert b"hi from b" in reply.body
    assert time.perf_counter() - started < 2.0
    assert a.calls == 1


async def test_everything_down_is_a_502_after_bounded_attempts(
    upstreams: Start, upstream_client: Upstream
) -> None:
    fakes = [await upstreams(n) for n in "abcd"]
    for f in fakes:
        f.mode = "fail500"
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0, max_attempts=3)
    with pytest.raises(errors.UpstreamError):
        await router.send(route_to(health, *fakes), "/chat/completions", BODY)
    assert sum(f.calls for f in fakes) == 3


async def test_busy_upstream_is_retried_but_not_ejected(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a = await upstreams("a")
    a.mode = "busy"
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    route = route_to(health, a)
    for _ in range(4):
        with pytest.raises(errors.ServiceUnavailable) as caught:
            await router.send(route, "/chat/completions", BODY)
    assert caught.value.headers["Retry-After"] == "3"
    assert not health.endpoint(a.base_url).ejected


async def test_caller_errors_pass_through_without_retry(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    a.mode = b.mode = "refuse400"
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    with pytest.raises(errors.InvalidRequest) as caught:
        await router.send(route_to(health, a, b), "/chat/completions", BODY)
    assert "maximum context length" in caught.value.message
    assert a.calls + b.calls == 1


async def test_least_outstanding_spreads_concurrent_requests(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    a.mode = b.mode = "slow"
    a.delay = b.delay = 0.2
    health = HealthBook(None)
    router = Router(health, upstream_client)
    route = route_to(health, a, b)
    await asyncio.gather(*(router.send(route, "/chat/completions", BODY) for _ in range(10)))
    assert a.calls == 5 and b.calls == 5


async def test_affinity_keeps_a_conversation_on_one_endpoint(
    upstreams: Start, upstream_client: Upstream
) -> None:
    fakes = [await upstreams(n) for n in "abc"]
    health = HealthBook(None)
    router = Router(health, upstream_client)
    route = route_to(health, *fakes)
    for _ in range(6):
        await router.send(route, "/chat/completions", BODY, affinity="conv_1")
    assert sorted(f.calls for f in fakes) == [0, 0, 6]


async def test_stream_fails_over_before_its_first_event(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    a.mode = "fail500"
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    route = route_to(health, a, b)
    body = orjson.dumps({"model": "m1", "messages": [], "stream": True})
    key = next(
        k for k in (f"c{i}" for i in range(100)) if router.pick(route, [], k) is route.endpoints[0]
    )
    stream = await router.open_stream(route, "/chat/completions", body, affinity=key)
    assert stream.endpoint.base_url == b.base_url
    events = payloads(stream.first)
    async for block in stream:
        events.extend(payloads(block))
    stream.close(ok=True)
    assert events[-1] == b"[DONE]" and a.calls == 1


async def test_stream_cut_in_the_middle_raises_stream_broken(
    upstreams: Start, upstream_client: Upstream
) -> None:
    from functions.services.inference.router import StreamBroken

    a = await upstreams("a")
    a.mode, a.stream_chunks = "cut", 5
    health = HealthBook(None)
    router = Router(health, upstream_client)
    body = orjson.dumps({"model": "m1", "messages": [], "stream": True})
    stream = await router.open_stream(route_to(health, a), "/chat/completions", body)
    with pytest.raises(StreamBroken) as caught:
        async for _ in stream:
            pass
    stream.close(ok=False)
    assert caught.value.failure.error.status == 502
    assert health.endpoint(a.base_url).outstanding == 0


async def test_stream_that_stalls_midway_hits_the_idle_timeout(
    upstreams: Start, upstream_client: Upstream
) -> None:
    from functions.services.inference.router import StreamBroken

    a = await upstreams("a")
    a.stream_chunks, a.chunk_delay = 3, 5.0  # the first chunk, then silence
    health = HealthBook(None)
    router = Router(health, upstream_client, stream_idle_timeout=0.3)
    body = orjson.dumps({"model": "m1", "messages": [], "stream": True})
    stream = await router.open_stream(route_to(health, a), "/chat/completions", body)
    assert b"a-0" in stream.first
    started = time.perf_counter()
    with pytest.raises(StreamBroken) as caught:
        async for _ in stream:
            pass
    stream.close(ok=False)
    assert 0.25 < time.perf_counter() - started < 2.0
    failure = caught.value.failure
    assert failure.reason == "timeout" and failure.error.status == 504
    ep = health.endpoint(a.base_url)
    assert ep.failures == 1 and ep.outstanding == 0


# --- send and open_stream share one failover loop: the same tries, errors and bookkeeping
@pytest.mark.parametrize("streamed", [False, True])
async def test_send_and_open_stream_fail_over_alike(
    upstreams: Start, upstream_client: Upstream, streamed: bool
) -> None:
    fakes = [await upstreams(n) for n in "abcd"]
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0, max_attempts=3)
    route = route_to(health, *fakes)
    call = router.open_stream if streamed else router.send
    body = orjson.dumps({"model": "m1", "messages": [], "stream": streamed})

    def calls() -> int:
        return sum(f.calls for f in fakes)

    for f in fakes:
        f.mode = "fail500"
    with pytest.raises(errors.UpstreamError):
        await call(route, "/chat/completions", body)
    assert calls() == 3  # bounded, each on another endpoint
    assert sum(ep.failures for ep in route.endpoints) == 3

    for f in fakes:
        f.mode = "refuse400"
    with pytest.raises(errors.InvalidRequest):
        await call(route, "/chat/completions", body)
    assert calls() == 4  # the caller's fault: no retry

    for f in fakes:
        f.mode = "busy"
    with pytest.raises(errors.ServiceUnavailable) as caught:
        await call(route, "/chat/completions", body)
    assert caught.value.headers["Retry-After"] == "3" and calls() == 7
    assert all(ep.outstanding == 0 for ep in route.endpoints)

    for f in fakes:
        f.mode, f.delay = "slow", 5.0
    task = asyncio.ensure_future(call(route, "/chat/completions", body))
    while calls() == 7:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(ep.outstanding == 0 for ep in route.endpoints)  # given back when cancelled


async def test_the_tokenizer_is_at_the_servers_root_and_not_timed(
    upstreams: Start, upstream_client: Upstream
) -> None:
    fake = await upstreams("a")
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    route = route_to(health, fake)
    asked = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "a b"}]})
    reply = await router.send(route, "/tokenize", asked, timed=False)
    assert orjson.loads(reply.body)["count"] == 5 and fake.tokenized  # {base}/../tokenize
    ep = health.endpoint(fake.base_url)
    assert ep.samples == 0 and ep.outstanding == 0  # no time-to-first-byte sample
    await router.send(route, "/chat/completions", BODY)
    assert ep.samples == 1
