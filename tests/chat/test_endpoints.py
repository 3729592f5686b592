"""The chat area's endpoints through the whole app: authentication, model visibility,
pass-through of the request, streaming with usage, errors, and the usage ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import orjson

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference.service import Inference
from tests.chat.fakes import FakeUpstream
from tests.conftest import component
from tests.factories import Tenant, bearer, create_project_key, create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hello"}]}


def sse_payloads(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


async def usage_rows(runtime: Runtime) -> list[dict[str, object]]:
    svc = component(runtime, Inference)
    async with runtime.db.writer.acquire() as conn:
        await svc.usage.flush(conn)
        rows = await conn.fetch("SELECT * FROM usage_completions ORDER BY id")
    return [dict(r) for r in rows]


async def test_models_are_listed_and_retrieved(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    r = await client.get("/v1/models", headers=tenant.project_headers)
    assert r.status_code == 200
    assert r.json()["object"] == "list"
    assert [m["id"] for m in r.json()["data"]] == ["m1", "m2"]
    one = await client.get("/v1/models/m2", headers=tenant.user_headers)
    assert one.status_code == 200 and one.json()["object"] == "model"
    missing = await client.get("/v1/models/nope", headers=tenant.project_headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


async def test_credentials_are_required(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 401
    bad = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-proj-nope"))
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "invalid_request_error"
    admin = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.admin_headers)
    assert admin.status_code == 403


async def test_allowed_models_limit_listing_and_calls(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    key = await create_project_key(runtime, tenant, allowed_models=["m2"])
    listed = await client.get("/v1/models", headers=bearer(key))
    assert [m["id"] for m in listed.json()["data"]] == ["m2"]
    denied = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert denied.status_code == 404


async def test_chat_completion_passes_the_body_through_and_records_usage(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    body = {
        **CHAT,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "n": 1,
        "stop": ["\n"],
        "seed": 7,
        "max_completion_tokens": 20,
        "some_engine_flag": {"x": 1},
    }
    r = await client.post("/v1/chat/completions", json=body, headers=tenant.project_headers)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hi from builtin"
    assert builtin.bodies[-1] == body
    assert builtin.headers[-1].get("x-request-id") == r.headers["x-request-id"]
    [row] = await usage_rows(runtime)
    assert row["organization_id"] == tenant.organization_id
    assert row["project_id"] == tenant.project_id
    assert row["api_key_id"] is not None and row["model"] == "m1"
    assert (row["input_tokens"], row["output_tokens"], row["status"]) == (7, 5, 200)
    assert row["operation"] == "chat.completions" and row["streamed"] is False
    assert row["endpoint"] == builtin.base_url and row["provider_id"] == "builtin"


async def test_stream_gets_usage_only_when_asked(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    plain = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=tenant.project_headers
    )
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/event-stream")
    events = sse_payloads(plain.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in orjson.loads(e) for e in events[:-1])
    # …but the gateway asked upstream for usage, and recorded it.
    assert builtin.bodies[-1]["stream_options"] == {"include_usage": True}
    asked = await client.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        headers=tenant.user_headers,
    )
    chunks = [orjson.loads(e) for e in sse_payloads(asked.text)[:-1]]
    assert chunks[-1]["usage"]["total_tokens"] == 12 and chunks[-1]["choices"] == []
    rows = await usage_rows(runtime)
    assert [(r["streamed"], r["output_tokens"], r["status"]) for r in rows] == [
        (True, 5, 200),
        (True, 5, 200),
    ]
    assert rows[0]["ttft_ms"] is not None and rows[1]["user_id"] == tenant.owner_user_id


async def test_stream_cut_midway_ends_with_an_error_event(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    builtin.mode, builtin.stream_chunks = "cut", 5
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=tenant.project_headers
    )
    assert r.status_code == 200
    events = sse_payloads(r.text)
    assert len(events) == 3  # two content chunks, then the error
    assert orjson.loads(events[-1])["error"]["type"] == "upstream_error"
    [row] = await usage_rows(runtime)
    assert row["status"] == 502


async def test_stream_ended_without_done_counts_against_the_endpoint_on_both_paths(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    import pytest

    from functions.common.errors import UpstreamError
    from functions.common.principal import Principal
    from functions.services.inference import api

    tenant = await create_tenant(runtime)
    builtin.mode, builtin.stream_chunks = "nodone", 5
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=tenant.project_headers
    )
    assert orjson.loads(sse_payloads(r.text)[-1])["error"]["type"] == "upstream_error"
    endpoint = component(runtime, Inference).health.endpoint(builtin.base_url)
    assert endpoint.failures == 1
    who = Principal("user", tenant.organization_id, tenant.project_id, user_id="user_x")
    with pytest.raises(UpstreamError, match="ended the stream early"):
        async for _ in api.stream_chat_completion(component(runtime, Inference), who, CHAT):
            pass
    assert endpoint.failures == 2  # the in-process API classifies it the same way
    assert [row["status"] for row in await usage_rows(runtime)] == [502, 502]


async def test_in_process_stream_refused_upstream_is_in_the_ledger(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    import pytest

    from functions.common.errors import APIError
    from functions.common.principal import Principal
    from functions.services.inference import api

    tenant = await create_tenant(runtime)
    builtin.mode = "refuse400"
    who = Principal("user", tenant.organization_id, tenant.project_id, user_id="user_x")
    with pytest.raises(APIError) as refused:
        async for _ in api.stream_chat_completion(component(runtime, Inference), who, CHAT):
            pass
    assert refused.value.status == 400
    [row] = await usage_rows(runtime)  # like the HTTP endpoint's failed requests
    assert (row["status"], row["streamed"], row["endpoint"]) == (400, True, None)


async def test_upstream_refusal_is_the_callers_400(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    builtin.mode = "refuse400"
    r = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    assert r.status_code == 400
    assert "maximum context length" in r.json()["error"]["message"]


async def test_upstream_envelope_param_and_code_are_relayed(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    """A model server's 400 in OpenAI's envelope keeps its message, param and code."""
    tenant = await create_tenant(runtime)
    builtin.mode = "refuse_envelope"
    body = {"model": "m1", "input": "x", "dimensions": 1536}
    r = await client.post("/v1/embeddings", json=body, headers=tenant.project_headers)
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "'dimensions' must be between 1 and 256.",
        "type": "invalid_request_error",
        "param": "dimensions",
        "code": "invalid_value",
    }
    # Only short identifier strings pass: free text, numbers and objects are not relayed.
    for param, code in (
        ("the value you sent, sk-secret, is wrong", 400),
        ({"nested": "x"}, "x" * 65),
        (None, None),
    ):
        builtin.refusal = {"message": "refused", "param": param, "code": code}
        r = await client.post("/v1/embeddings", json=body, headers=tenant.project_headers)
        assert r.status_code == 400
        error = r.json()["error"]
        assert (error["message"], error["param"], error["code"]) == (
            "refused",
            None,
            "invalid_request",
        )


async def test_bad_bodies_are_400s(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    h = tenant.project_headers
    for content in (b"", b"not json", b"[1]", b'{"model": "m1"}', b'{"messages": [{}]}'):
        r = await client.post("/v1/chat/completions", content=content, headers=h)
        assert r.status_code == 400, (content, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": "yes"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


async def test_completions_and_embeddings(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    h = tenant.project_headers
    c = await client.post("/v1/completions", json={"model": "m1", "prompt": "x"}, headers=h)
    assert c.status_code == 200
    e = await client.post("/v1/embeddings", json={"model": "m1", "input": "x"}, headers=h)
    assert e.status_code == 200 and e.json()["data"][0]["embedding"] == [0.5, 0.25]
    rows = await usage_rows(runtime)
    assert [(r["operation"], r["input_tokens"]) for r in rows] == [
        ("completions", 7),
        ("embeddings", 4),
    ]


async def test_client_disconnect_cancels_the_upstream(
    runtime: Runtime, client: httpx.AsyncClient, builtin: FakeUpstream
) -> None:
    from functions.services.inference.sse import StreamTally
    from functions.services.inference.streaming import SSERelay

    builtin.stream_chunks, builtin.chunk_delay = 50, 0.05
    svc = component(runtime, Inference)
    route = await svc.catalog.resolve_fresh("org_x", None, "m1")
    assert route is not None
    body = orjson.dumps({**CHAT, "stream": True})
    opened = await svc.router.open_stream(route, "/chat/completions", body)
    finished: list[int] = []
    relay = SSERelay(opened, StreamTally(keep_usage_chunk=False), lambda s, t: finished.append(s))
    sent: list[dict[str, object]] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, object]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if len(sent) == 3:
            gone.set()  # the client leaves after its first chunks

    await asyncio.wait_for(relay({"type": "http"}, receive, send), 5)  # type: ignore[arg-type]
    assert finished == [499]
    for _ in range(50):
        if builtin.disconnects:
            break
        await asyncio.sleep(0.05)
    assert builtin.disconnects == 1
    assert opened.endpoint.outstanding == 0


async def test_tenant_providers_shadow_the_builtin_and_stay_private(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    own = await upstreams("own", models=("m1", "private"))
    tenant: Tenant = await create_tenant(runtime)
    other = await create_tenant(runtime)
    created = await client.post(
        "/v1/organization/models/providers",
        json={"name": "ours", "kind": "vllm", "base_url": own.base_url, "api_key": "sk-up"},
        headers=tenant.admin_headers,
    )
    assert created.status_code == 200, created.text
    assert created.json()["models"] == ["m1", "private"]
    r = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    assert r.json()["choices"][0]["message"]["content"] == "hi from own"
    assert own.headers[-1]["authorization"] == "Bearer sk-up"
    theirs = await client.post("/v1/chat/completions", json=CHAT, headers=other.project_headers)
    assert theirs.json()["choices"][0]["message"]["content"] == "hi from builtin"
    hidden = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "private"}, headers=other.project_headers
    )
    assert hidden.status_code == 404


async def test_internal_api_for_other_areas(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    from functions.common.principal import Principal
    from functions.services.inference import api

    tenant = await create_tenant(runtime)
    who = Principal("user", tenant.organization_id, tenant.project_id, user_id="user_x")
    svc = component(runtime, Inference)
    assert [m["id"] for m in await api.list_models(svc, who)] == ["m1", "m2"]
    done = await api.chat_completion(svc, who, {**CHAT, "stream": True}, affinity="conv_1")
    assert done["choices"][0]["message"]["content"] == "hi from builtin"
    chunks = [c async for c in api.stream_chat_completion(svc, who, CHAT)]
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks[:-1]).startswith("builtin-0")
    rows = await usage_rows(runtime)
    assert [(r["streamed"], r["status"], r["user_id"]) for r in rows] == [
        (False, 200, "user_x"),
        (True, 200, "user_x"),
    ]


async def test_stream_stalled_midway_times_out_with_an_error_event(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    from functions.services.inference.router import Router

    tenant = await create_tenant(runtime)
    svc = component(runtime, Inference)
    svc.router = Router(svc.health, svc.client, stream_idle_timeout=0.3)
    builtin.stream_chunks, builtin.chunk_delay = 3, 5.0
    r = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=tenant.project_headers
    )
    assert r.status_code == 200
    events = sse_payloads(r.text)
    assert orjson.loads(events[0])["choices"][0]["delta"]["content"] == "builtin-0 "
    assert orjson.loads(events[1])["error"]["code"] == "upstream_timeout"
    assert len(events) == 2  # a clean end after the error: no [DONE] of ours
    [row] = await usage_rows(runtime)
    assert row["status"] == 504


async def test_each_stream_has_its_own_headers(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    for _ in range(3):  # the middleware adds the request ID to every response start
        r = await client.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=tenant.project_headers
        )
        assert len(r.headers.get_list("x-request-id")) == 1


async def test_serving_raises_the_young_generation_threshold(settings: Settings) -> None:
    import gc

    from functions.services.inference.service import GC_THRESHOLDS

    before = gc.get_threshold()
    assert before[0] < GC_THRESHOLDS[0]
    rt = Runtime(settings)
    create_app(rt, ["chat"])
    await rt.open()
    assert gc.get_threshold() == GC_THRESHOLDS
    await rt.close()
    assert gc.get_threshold() == before  # given back when the service stops
