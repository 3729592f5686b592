"""Model fallbacks (Jan extension, `/v1/organization/model_fallbacks` and per project): when
every endpoint of a model fails before the first byte the request goes to the next model of
its list — answer, `x-jan-model-fallback`, ledger and metrics naming the model that served —
while a request the upstream refuses, a model the caller may not use, and the bounds stop
it. Local upstreams stand in for the model servers; the official SDK is the client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client import REGISTRY

from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from tests.chat.fakes import FakeUpstream
from tests.conftest import component
from tests.factories import Tenant, bearer, create_member, create_tenant
from tests.tools.http_server import serve_app

Start = Callable[..., Awaitable[FakeUpstream]]
ORG = "/v1/organization/model_fallbacks"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def fallbacks_counted(
    model: str, fallback: str, outcome: str, reason: str = "unavailable"
) -> float:
    labels = {"model": model, "fallback": fallback, "reason": reason, "outcome": outcome}
    value = REGISTRY.get_sample_value("jan_model_fallbacks_total", labels)
    return value or 0.0


async def backup_provider(
    client: httpx.AsyncClient, t: Tenant, upstreams: Start, *models: str
) -> FakeUpstream:
    # Both providers discovered first (a failing fake fails its /models too).
    assert (await client.get("/v1/models", headers=t.project_headers)).status_code == 200
    up = await upstreams("backup", models=models)
    body = {"name": "backup", "kind": "vllm", "base_url": up.base_url}
    r = await client.post("/v1/organization/models/providers", json=body, headers=t.admin_headers)
    assert r.status_code == 200, r.text
    return up


async def set_fallbacks(
    client: httpx.AsyncClient, t: Tenant, model: str, fallbacks: list[str], path: str = ORG
) -> dict[str, Any]:
    r = await client.post(
        path, json={"model": model, "fallbacks": fallbacks}, headers=t.admin_headers
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def chat(client: httpx.AsyncClient, t: Tenant, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **extra}
    return await client.post("/v1/chat/completions", json=body, headers=t.project_headers)


async def ledger(runtime: Runtime) -> list[tuple[str, int]]:
    svc = component(runtime, Inference)
    async with runtime.db.writer.acquire() as conn:
        await svc.usage.flush(conn)
        rows = await conn.fetch("SELECT model, status FROM usage_completions ORDER BY id")
    return [(r["model"], r["status"]) for r in rows]


async def test_admin_api_shape_roles_and_errors(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    made = await set_fallbacks(client, t, "m1", ["m2", "b1"])
    assert made["object"] == "organization.model_fallbacks"
    assert (made["id"], made["model"], made["fallbacks"]) == ("m1", "m1", ["m2", "b1"])
    await set_fallbacks(client, t, "m1", ["m2"])  # replaced
    listed = (await client.get(ORG, headers=t.admin_headers)).json()["data"]
    assert [(f["model"], f["fallbacks"]) for f in listed] == [("m1", ["m2"])]
    proj = f"/v1/organization/projects/{t.project_id}/model_fallbacks"
    _, owner = await create_member(runtime, t, project_role="owner")
    _, member = await create_member(runtime, t)
    body = {"model": "m2", "fallbacks": ["m1"]}
    assert (await client.post(proj, json=body, headers=bearer(owner))).status_code == 200
    assert (await client.post(proj, json=body, headers=bearer(member))).status_code == 403
    assert (await client.post(ORG, json=body, headers=bearer(owner))).status_code == 403
    for bad, param in [
        ({"model": "m1"}, "fallbacks"),
        ({"model": "m1", "fallbacks": []}, "fallbacks"),
        ({"model": "m1", "fallbacks": ["a", "b", "c", "d"]}, "fallbacks"),
        ({"model": "m1", "fallbacks": ["a", "a"]}, "fallbacks"),
        ({"model": "m1", "fallbacks": ["m1"]}, "fallbacks"),
        ({"model": "m1", "fallbacks": [""]}, "fallbacks"),
        ({"model": "m1", "fallbacks": ["a\nb"]}, "fallbacks"),
        ({"model": "m1", "fallbacks": "m2"}, "fallbacks"),
        ({"fallbacks": ["m2"]}, "model"),
        ({"model": "m1", "fallbacks": ["m2"], "x": 1}, "x"),
    ]:
        r = await client.post(ORG, json=bad, headers=t.admin_headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (bad, r.text)
    gone = await client.delete(f"{ORG}/m1", headers=t.admin_headers)
    assert gone.json() == {
        "object": "organization.model_fallbacks.deleted",
        "id": "m1",
        "deleted": True,
    }
    assert (await client.delete(f"{ORG}/m1", headers=t.admin_headers)).status_code == 404
    other = await create_tenant(runtime)
    assert (await client.get(ORG, headers=other.admin_headers)).json()["data"] == []
    assert (await client.get(proj, headers=other.admin_headers)).status_code == 404


async def test_a_failing_model_falls_back_to_the_next_that_serves(
    runtime: Runtime, builtin: FakeUpstream, upstreams: Start
) -> None:
    async with serve_app(runtime) as base:
        t = await create_tenant(runtime)
        async with httpx.AsyncClient(base_url=base) as client:
            backup = await backup_provider(client, t, upstreams, "b1")
            # Unknown names are skipped; the list of the name used applies.
            await set_fallbacks(client, t, "m1", ["no-such", "b1"])
            before = fallbacks_counted("m1", "b1", "ok")
            builtin.mode = "fail500"
            async with openai.AsyncOpenAI(
                base_url=f"{base}/v1", api_key=t.project_key, max_retries=0
            ) as sdk:
                raw = await sdk.chat.completions.with_raw_response.create(
                    model="m1", messages=MESSAGES
                )
                assert raw.headers["x-jan-model-fallback"] == "m1"
                assert raw.parse().model == "b1"
                stream = await sdk.chat.completions.with_raw_response.create(
                    model="m1", messages=MESSAGES, stream=True
                )
                assert stream.headers["x-jan-model-fallback"] == "m1"
                chunks = [c async for c in stream.parse()]
                assert {c.model for c in chunks if c.choices} == {"b1"}
                response = await sdk.responses.create(model="m1", input="hello")
                assert response.output_text and response.model == "b1"  # the one that served
                stored = await sdk.responses.retrieve(response.id)
                assert stored.model == "b1"
            assert [b["model"] for b in backup.bodies] == ["b1", "b1", "b1"]
            assert fallbacks_counted("m1", "b1", "ok") == before + 3  # reason: unavailable
            assert fallbacks_counted("m1", "b1", "ok", "context_window") == 0
            # The upstream refusing the request itself is no reason to fall back.
            builtin.mode = "refuse400"
            r = await chat(client, t, "m1")
            assert r.status_code == 400 and "x-jan-model-fallback" not in r.headers
            # A model that serves answers itself, without the header.
            builtin.mode = "ok"
            r = await chat(client, t, "m1")
            assert r.json()["model"] == "m1" and "x-jan-model-fallback" not in r.headers
            assert backup.calls == 3
        # Each model's try is its own ledger line: the failed one and the one that served.
        rows = await ledger(runtime)
        assert rows == [("m1", 502), ("b1", 200)] * 3 + [("m1", 400), ("m1", 200)]


async def test_fallbacks_are_bounded_and_respect_permissions(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream, upstreams: Start
) -> None:
    t = await create_tenant(runtime)
    backup = await backup_provider(client, t, upstreams, "b1", "b2", "b3")
    builtin.mode = backup.mode = "fail500"
    await set_fallbacks(client, t, "m1", ["b1", "b2", "b3"])
    tries = [("m1", "b1"), ("b1", "b2"), ("b2", "b3")]
    before = [fallbacks_counted(model, fallback, "failed") for model, fallback in tries]
    r = await chat(client, t, "m1")
    assert r.status_code == 502 and r.json()["error"]["type"]
    assert [b["model"] for b in backup.bodies] == ["b1", "b2", "b3"]  # 3 at most, in order
    # Each try counted against the model before it, all for the same reason.
    after = [fallbacks_counted(model, fallback, "failed") for model, fallback in tries]
    assert after == [count + 1 for count in before]
    # An alias's list applies to it, and its fallbacks may be aliases too.
    backup.mode = "ok"
    for alias, model in (("default", "m1"), ("spare", "b2")):
        r = await client.post(
            "/v1/organization/model_aliases",
            json={"alias": alias, "model": model},
            headers=t.admin_headers,
        )
        assert r.status_code == 200
    await set_fallbacks(client, t, "default", ["spare"])
    r = await chat(client, t, "default")
    assert r.json()["model"] == "b2" and r.headers["x-jan-model-fallback"] == "m1"
    # A fallback the project may not use is never tried.
    r = await client.post(
        f"/v1/organization/projects/{t.project_id}/model_permissions",
        json={"mode": "deny_list", "model_ids": ["b2"]},
        headers=t.admin_headers,
    )
    assert r.status_code == 200
    calls = backup.calls
    r = await chat(client, t, "default")
    assert r.status_code == 502 and backup.calls == calls
    # A project's list replaces the organization's for that name.
    await set_fallbacks(
        client, t, "default", ["b3"], f"/v1/organization/projects/{t.project_id}/model_fallbacks"
    )
    r = await chat(client, t, "default", stream=True)
    assert r.status_code == 200 and r.headers["x-jan-model-fallback"] == "m1"
    assert backup.bodies[-1]["model"] == "b3"
