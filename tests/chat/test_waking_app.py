"""Scale to zero through the whole app on a real port: a built-in model (kind ``kserve``)
that answers 503 "not ready" or refuses connections for a while, then serves. Plain and
streamed calls succeed; a held stream starts at once and sends ``: waking model`` comments
until its first data; one that waits past the wake time ends with an error event; the
wake metrics move."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import orjson
import pytest
from prometheus_client import REGISTRY

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference.service import Inference
from tests.chat.fakes import FakeUpstream
from tests.chat.test_waking import until
from tests.conftest import component, make_settings
from tests.factories import create_tenant
from tests.tools.http_server import serve_app

KEEPALIVE = 0.2


def waking_settings(database_dsn: str, builtin: FakeUpstream, wake_seconds: float) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=("127.0.0.1",),
        jan_stream_keepalive_seconds=KEEPALIVE,
        jan_upstream_warmup_seconds=wake_seconds,
    )


@pytest.fixture
def settings(database_dsn: str, builtin: FakeUpstream) -> Settings:
    return waking_settings(database_dsn, builtin, 20)


def chat(**extra: object) -> dict[str, object]:
    return {"model": "m1", "messages": [{"role": "user", "content": "hi"}], **extra}


def served(up: FakeUpstream) -> int:
    """Requests of the test's own the upstream answered (not the health probe's "ping":
    an endpoint that refused connections was ejected, and is probed back)."""
    return sum(b["messages"][0]["content"] == "hi" for b in up.bodies)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": "m1"}) or 0.0


async def test_a_held_stream_sends_comments_until_the_model_serves(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        headers = {"authorization": f"Bearer {tenant.project_key}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            # Known (discovered on a first call), then scaled to zero: 503 "not ready".
            warm = await http.post("/v1/chat/completions", json=chat(), headers=headers)
            assert warm.status_code == 200
            woke = metric("jan_model_wake_seconds_count")
            builtin.cold_until = time.monotonic() + 600
            async with http.stream(
                "POST", "/v1/chat/completions", json=chat(stream=True), headers=headers
            ) as r:
                assert r.status_code == 200  # started while the model sleeps
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = []
                async for line in r.aiter_lines():
                    lines.append(line)
                    if line.startswith(":") and lines.count(line) == 3:  # held a while: wake it
                        assert metric("jan_model_requests_held") == 1
                        builtin.cold_until = 0.0
    events = [line for line in lines if line]
    first_data = next(i for i, line in enumerate(events) if line.startswith("data:"))
    assert first_data >= 3
    assert all(line == ": waking model" for line in events[:first_data])
    assert not any(line.startswith(":") for line in events[first_data:])
    assert "builtin-0" in "".join(events) and events[-1] == "data: [DONE]"
    assert metric("jan_model_requests_held") == 0
    assert metric("jan_model_wake_seconds_count") == woke + 1


async def test_a_client_leaving_a_held_stream_is_no_longer_held(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        headers = {"authorization": f"Bearer {tenant.project_key}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            await http.post("/v1/chat/completions", json=chat(), headers=headers)
            builtin.cold_until = time.monotonic() + 600
            async with http.stream(
                "POST", "/v1/chat/completions", json=chat(stream=True), headers=headers
            ) as r:
                async for line in r.aiter_lines():
                    if line == ": waking model":
                        break  # the client gives up and hangs up
        await until(lambda: metric("jan_model_requests_held") == 0)
        asked = builtin.calls
        await asyncio.sleep(0.5)  # nothing asks for it any more
        assert builtin.calls == asked
        svc = component(runtime, Inference)
        assert not svc.router.waking.wakes


async def test_calls_succeed_while_the_revision_starts_refusing_connections(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=0
        ) as sdk:
            await sdk.chat.completions.create(**chat())  # type: ignore[call-overload]
            for streamed in (False, True):
                await builtin.stop()  # scaled to zero: its port refuses connections

                async def revision_starts() -> None:
                    await asyncio.sleep(1.0)
                    await builtin.start()  # the same port

                starting = asyncio.create_task(revision_starts())
                calls = served(builtin)
                if streamed:
                    stream = await sdk.chat.completions.create(stream=True, **chat())  # type: ignore[call-overload]
                    text = "".join(
                        [c.choices[0].delta.content or "" async for c in stream if c.choices]
                    )
                    assert text.startswith("builtin-0 ")
                else:
                    reply = await sdk.chat.completions.create(**chat())  # type: ignore[call-overload]
                    assert reply.choices[0].message.content == "hi from builtin"
                await starting
                assert served(builtin) == calls + 1  # served once it listened again


async def test_a_held_stream_past_the_wake_time_ends_with_an_error_event(
    database_dsn: str, builtin: FakeUpstream
) -> None:
    runtime = Runtime(waking_settings(database_dsn, builtin, 0.8))
    try:
        async with serve_app(runtime) as base:
            tenant = await create_tenant(runtime)
            async with openai.AsyncOpenAI(
                base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=0
            ) as sdk:
                await sdk.chat.completions.create(**chat())  # type: ignore[call-overload]
                gave_up = metric("jan_model_wake_gave_up_total")
                builtin.cold_until = time.monotonic() + 60
                stream = await sdk.chat.completions.create(stream=True, **chat())  # type: ignore[call-overload]
                with pytest.raises(openai.APIError) as caught:
                    async for _ in stream:
                        pass
                assert "not ready" in str(caught.value)  # the upstream's 503 message
                with pytest.raises(openai.APIStatusError) as plain:  # not streamed: a 503
                    await sdk.chat.completions.create(**chat())  # type: ignore[call-overload]
                assert plain.value.status_code == 503
                assert metric("jan_model_wake_gave_up_total") == gave_up + 2
                assert metric("jan_model_requests_held") == 0
    finally:
        await runtime.close()


async def test_a_model_never_seen_is_discovered_once_its_revision_listens(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    await builtin.stop()  # scaled to zero before anyone asked: refused, not yet discovered

    async def revision_starts() -> None:
        await asyncio.sleep(1.0)
        await builtin.start()

    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        starting = asyncio.create_task(revision_starts())
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=0
        ) as sdk:
            reply = await sdk.chat.completions.create(**chat())  # type: ignore[call-overload]
        await starting
    assert reply.choices[0].message.content == "hi from builtin"
    assert builtin.model_lists == 1 and builtin.calls == 1  # asked once it listened


async def test_a_held_response_stream_sends_comments_then_its_events(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    """The Responses API's streams are held the same way: comments until the model serves,
    then OpenAI's typed events; the official SDK reads through the comments."""
    request = {"model": "m1", "input": "hi", "stream": True}
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        headers = {"authorization": f"Bearer {tenant.project_key}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            warm = await http.post("/v1/chat/completions", json=chat(), headers=headers)
            assert warm.status_code == 200
            builtin.cold_until = time.monotonic() + 600
            async with http.stream("POST", "/v1/responses", json=request, headers=headers) as r:
                assert r.status_code == 200  # started while the model sleeps
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = []
                async for line in r.aiter_lines():
                    lines.append(line)
                    if line.startswith(":") and lines.count(line) == 3:
                        assert metric("jan_model_requests_held") == 1
                        builtin.cold_until = 0.0
        events = [line for line in lines if line]
        first_event = next(i for i, line in enumerate(events) if line.startswith("event:"))
        assert first_event >= 3
        assert all(line == ": waking model" for line in events[:first_event])
        assert not any(line.startswith(":") for line in events[first_event:])
        kinds = [line.removeprefix("event: ") for line in events if line.startswith("event:")]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"

        builtin.cold_until = time.monotonic() + 1.0  # the SDK, held about a second
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=0
        ) as sdk:
            stream = await sdk.responses.create(model="m1", input="hi", stream=True)
            types = [event.type async for event in stream]
        assert types[0] == "response.created" and types[-1] == "response.completed"
    assert metric("jan_model_requests_held") == 0


async def test_a_held_response_stream_past_the_wake_time_ends_with_an_error_event(
    database_dsn: str, builtin: FakeUpstream
) -> None:
    runtime = Runtime(waking_settings(database_dsn, builtin, 0.8))
    try:
        async with serve_app(runtime) as base:
            tenant = await create_tenant(runtime)
            headers = {"authorization": f"Bearer {tenant.project_key}"}
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                await http.post("/v1/chat/completions", json=chat(), headers=headers)
                gave_up = metric("jan_model_wake_gave_up_total")
                builtin.cold_until = time.monotonic() + 60
                r = await http.post(
                    "/v1/responses",
                    json={"model": "m1", "input": "hi", "stream": True},
                    headers=headers,
                )
        assert r.status_code == 200
        events = [line for line in r.text.splitlines() if line]
        assert events[0] == ": waking model"
        assert events[-2] == "event: error"
        error = orjson.loads(events[-1].removeprefix("data: "))
        assert error["type"] == "error" and error["sequence_number"] == 0
        assert error["code"] == "model_not_ready" or "not ready" in error["message"]
        assert metric("jan_model_wake_gave_up_total") == gave_up + 1
        assert metric("jan_model_requests_held") == 0
    finally:
        await runtime.close()


async def test_held_plain_and_background_responses_simply_wait(
    runtime: Runtime, builtin: FakeUpstream
) -> None:
    """Without a stream there is nothing to keep alive: a plain response waits for the
    model and answers; a background one stays queued or in progress, then completes."""
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        headers = {"authorization": f"Bearer {tenant.project_key}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            warm = await http.post("/v1/chat/completions", json=chat(), headers=headers)
            assert warm.status_code == 200
            builtin.cold_until = time.monotonic() + 600
            plain = asyncio.create_task(
                http.post("/v1/responses", json={"model": "m1", "input": "hi"}, headers=headers)
            )
            await until(lambda: metric("jan_model_requests_held") == 1)
            assert not plain.done()
            builtin.cold_until = 0.0
            r = await plain
            assert r.status_code == 200 and r.json()["status"] == "completed"
            assert r.json()["output"]

            builtin.cold_until = time.monotonic() + 600
            queued = await http.post(
                "/v1/responses",
                json={"model": "m1", "input": "hi", "background": True},
                headers=headers,
            )
            assert queued.status_code == 200
            rid = queued.json()["id"]
            await until(lambda: metric("jan_model_requests_held") == 1)  # the worker's call
            held = await http.get(f"/v1/responses/{rid}", headers=headers)
            assert held.json()["status"] == "in_progress"
            builtin.cold_until = 0.0

            for _ in range(600):  # bounded wait for the worker, not a timing assertion
                got = await http.get(f"/v1/responses/{rid}", headers=headers)
                if got.json()["status"] == "completed":
                    break
                await asyncio.sleep(0.05)
            got = (await http.get(f"/v1/responses/{rid}", headers=headers)).json()
            assert got["status"] == "completed" and got["output"]
    assert metric("jan_model_requests_held") == 0
