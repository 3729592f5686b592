"""A tenant's model server cannot stall or bloat the gateway: a stream without event
boundaries, a huge non-streamed reply and a huge ``/models`` answer each fail cleanly
at their cap (JAN_UPSTREAM_MAX_EVENT_BYTES, _REPLY_BYTES, _DISCOVERY_BYTES), in bounded
time, while the process's peak memory stays within a few MB of the cap. The fakes run
in this process, so its peak (VmHWM, reset before each attempt) covers both sides."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference.failures import TooLarge
from functions.services.inference.service import Inference
from functions.services.inference.sse import EventSplitter
from functions.services.providers.directory import AnswerTooLarge, BadAnswer
from tests.chat.fakes import FakeUpstream
from tests.conftest import component, make_settings
from tests.factories import create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
MiB = 1024 * 1024
BIG = 40 * MiB  # what the fakes try to send
SLACK = 8 * MiB  # read buffers, socket buffers, allocator: what a capped read may add
REPLY_CAP = 4 * MiB  # a lower cap than the default, so that BIG is well past it
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def settings(database_dsn: str, builtin: FakeUpstream) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=("127.0.0.1",),
        jan_upstream_max_reply_bytes=REPLY_CAP,
    )


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        found = re.search(rf"^{field}:\s+(\d+) kB$", f.read(), re.MULTILINE)
    assert found is not None
    return int(found.group(1)) * 1024


class Peak:
    """How far the process's resident memory rose above where it was at the start."""

    def __enter__(self) -> Peak:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        self.start = _status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.rise = _status("VmHWM") - self.start


def too_large_failures(fake: FakeUpstream) -> float:
    # The built-in provider's endpoint is labelled "builtin" (never by URL).
    assert fake.base_url
    labels = {"endpoint": "builtin", "fault": "upstream", "reason": "too_large"}
    return REGISTRY.get_sample_value("jan_upstream_failures_total", labels) or 0.0


def assert_bad_gateway(r: httpx.Response, what: str, cap: int) -> None:
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["type"] == "upstream_error" and error["code"] == "upstream_error"
    assert error["message"] == (
        f"The model server's {what} exceeded the gateway's limit of {cap} bytes."
    )


async def test_a_stream_without_event_boundaries_is_cut_at_the_event_cap(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    cap = runtime.settings.jan_upstream_max_event_bytes
    assert cap == MiB  # the default
    builtin.mode, builtin.big, builtin.flood_after = "flood", BIG, 1
    failures_before = too_large_failures(builtin)
    with Peak() as peak:
        async with asyncio.timeout(30):
            r = await client.post(
                "/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers=tenant.project_headers,
            )
    assert peak.rise < cap + SLACK, peak.rise
    assert builtin.sent < BIG // 2  # the gateway stopped reading; it did not drain it all
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e]
    assert len(events) == 2 and b"builtin-0" in events[0].encode()
    error = orjson.loads(events[1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_error" and "limit of 1048576 bytes" in error["message"]
    assert "[DONE]" not in r.text
    assert too_large_failures(builtin) == failures_before + 1
    svc = component(runtime, Inference)
    assert not svc.health.endpoint(builtin.base_url).ejected
    async with runtime.db.writer.acquire() as conn:
        await svc.usage.flush(conn)
        assert await conn.fetchval("SELECT status FROM usage_completions") == 502

    builtin.mode = "ok"  # the endpoint still serves
    ok = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    assert ok.status_code == 200


async def test_an_endless_first_event_is_a_502_before_the_first_byte(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    builtin.mode, builtin.big, builtin.flood_after = "flood", BIG, 0
    failures_before = too_large_failures(builtin)
    with Peak() as peak:
        async with asyncio.timeout(30):
            r = await client.post(
                "/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers=tenant.project_headers,
            )
    assert peak.rise < MiB + SLACK, peak.rise
    assert_bad_gateway(r, "event", MiB)
    assert builtin.calls == 1  # not retried: another try would get the same
    assert too_large_failures(builtin) == failures_before + 1
    assert not component(runtime, Inference).health.endpoint(builtin.base_url).ejected


@pytest.mark.parametrize("sized", [False, True], ids=["chunked", "content-length"])
async def test_a_huge_reply_is_a_502_at_the_reply_cap(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream, sized: bool
) -> None:
    tenant = await create_tenant(runtime)
    # Discovered when first asked for, while its /models is still a normal answer.
    assert (await client.get("/v1/models", headers=tenant.project_headers)).status_code == 200
    builtin.mode, builtin.big, builtin.sized = "huge", BIG, sized
    failures_before = too_large_failures(builtin)
    with Peak() as peak:
        async with asyncio.timeout(30):
            r = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    assert peak.rise < REPLY_CAP + SLACK, peak.rise
    assert builtin.sent < BIG // 2
    assert_bad_gateway(r, "reply", REPLY_CAP)
    assert builtin.calls == 1
    assert too_large_failures(builtin) == failures_before + 1
    assert not component(runtime, Inference).health.endpoint(builtin.base_url).ejected


@pytest.mark.parametrize("sized", [False, True], ids=["chunked", "content-length"])
async def test_a_huge_models_answer_fails_discovery_at_its_cap(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start, sized: bool
) -> None:
    evil = await upstreams("evil", models=("evil-m",))
    evil.mode, evil.big, evil.sized = "huge", BIG, sized
    cap = runtime.settings.jan_upstream_max_discovery_bytes
    assert cap == 4 * MiB  # the default
    tenant = await create_tenant(runtime)
    providers = component(runtime, Inference).catalog.providers
    with Peak() as peak:
        async with asyncio.timeout(30):
            with pytest.raises(AnswerTooLarge):
                await providers.list_models(evil.base_url, {})
            created = await client.post(
                "/v1/organization/models/providers",
                json={"name": "evil", "kind": "vllm", "base_url": evil.base_url},
                headers=tenant.admin_headers,
            )
    assert peak.rise < cap + SLACK, peak.rise
    assert evil.sent < BIG // 2
    assert created.status_code == 200, created.text
    assert created.json()["endpoints"] == [{"base_url": evil.base_url, "models": []}]

    evil.mode = "ok"  # a sane answer is read as before
    assert await providers.list_models(evil.base_url, {}) == [("evil-m", "evil")]


async def test_a_dripping_models_answer_is_given_up_within_the_discovery_timeout(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    evil = await upstreams("evil")
    evil.mode, evil.big, evil.chunk_delay = "huge", 10 * MiB, 0.05  # a piece every 50 ms
    providers = component(runtime, Inference).catalog.providers
    providers.discovery_timeout = 0.5
    async with asyncio.timeout(10):
        with pytest.raises(BadAnswer, match="took too long"):
            await providers.list_models(evil.base_url, {})


def feed_all(splitter: EventSplitter, pieces: list[bytes]) -> bytes:
    return b"".join(splitter.feed(p) for p in pieces)


def test_framing_is_the_same_wherever_reads_are_cut() -> None:
    stream = (
        b'data: {"a":1}\n\n: keep-alive\n\ndata: {"b":2}\r\n\r\nevent: x\r\ndata: y\r\n\r\n'
        b"data: [DONE]\n\n"
    )
    whole = stream.replace(b"\r\n", b"\n")
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1, 7):
            splitter = EventSplitter()
            assert feed_all(splitter, [stream[:i], stream[i:j], stream[j:]]) == whole, (i, j)
            assert splitter.pending == b""
    one_by_one = EventSplitter()
    assert feed_all(one_by_one, [bytes([b]) for b in stream]) == whole


def test_an_event_past_the_cap_stops_framing() -> None:
    splitter = EventSplitter(max_event=100)
    assert splitter.feed(b"data: " + b"x" * 94) == b""  # exactly the cap: still waiting
    with pytest.raises(TooLarge):
        splitter.feed(b"x")
    in_one_read = EventSplitter(max_event=100)
    with pytest.raises(TooLarge):
        in_one_read.feed(b"data: ok\n\ndata: " + b"x" * 200)
    small_reads = EventSplitter(max_event=1000)
    for _ in range(1000):
        assert small_reads.feed(b"y") == b""
    with pytest.raises(TooLarge):
        small_reads.feed(b"y")
    ended = EventSplitter(max_event=100)
    assert ended.feed(b"data: " + b"x" * 90) == b""
    assert ended.feed(b"\n\n") == b"data: " + b"x" * 90 + b"\n\n"
