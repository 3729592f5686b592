"""Prompt-cache affinity that follows the conversation, and per-project priority.

Responses route like chat completions: a `previous_response_id` chain keeps the affinity
key of its first response (stored with it), `prompt_cache_key` and `user` count; the key
goes to the engine as `x-session-id`, and as the body's `prompt_cache_key` to a provider
that declares it takes one. A project's priority (Jan extension) goes as vLLM's `priority`
to providers that declare it. Local upstreams record what they receive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.inference import failures
from functions.services.inference.requests import session_key
from functions.services.providers.directory import ProviderOptions
from tests.chat.fakes import FakeUpstream
from tests.chat.test_model_fallbacks import fallbacks_counted
from tests.conftest import make_settings
from tests.factories import Tenant, bearer, create_member, create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
PROVIDERS = "/v1/organization/models/providers"
REASONS = ("context_window", "unavailable")  # jan_model_fallbacks_total's reasons


@pytest.fixture
def settings(database_dsn: str, builtin: FakeUpstream) -> Settings:
    # The built-in provider declares priority (JAN_INFERENCE_MODEL_OPTIONS), as a vLLM
    # started with --scheduling-policy priority would.
    return make_settings(
        database_dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=("127.0.0.1",),
        jan_inference_model_options={"priority": True, "context_windows": {"m2": 64}},
    )


async def pool(
    client: httpx.AsyncClient,
    t: Tenant,
    upstreams: Start,
    model: str,
    size: int,
    options: dict[str, Any] | None = None,
) -> list[FakeUpstream]:
    """A provider of ``size`` endpoints serving ``model``."""
    ups = [await upstreams(f"{model}-{n}", models=(model,)) for n in range(size)]
    body: dict[str, Any] = {
        "name": model,
        "kind": "vllm",
        "base_urls": [u.base_url for u in ups],
    }
    if options is not None:
        body["options"] = options
    r = await client.post(PROVIDERS, json=body, headers=t.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["options"] == (options or {})
    return ups


async def respond(client: httpx.AsyncClient, t: Tenant, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/responses", json=body, headers=t.project_headers)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def finished(client: httpx.AsyncClient, t: Tenant, response_id: str) -> dict[str, Any]:
    """A background response, once it is no longer queued or running."""
    for _ in range(200):
        got: dict[str, Any] = (
            await client.get(f"/v1/responses/{response_id}", headers=t.project_headers)
        ).json()
        if got["status"] not in ("queued", "in_progress"):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("the background response did not finish")


def received(ups: list[FakeUpstream]) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
    """Every request the pool got: (which endpoint, headers, body)."""
    out = []
    for n, up in enumerate(ups):
        out += [(n, h, b) for h, b in zip(up.headers, up.bodies, strict=True)]
    return out


async def test_a_response_chain_keeps_the_key_of_its_first_response(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    t = await create_tenant(runtime)
    ups = await pool(client, t, upstreams, "p1", 3, {"prompt_cache_key": True})
    first = await respond(client, t, model="p1", input="turn 0")
    previous = first["id"]
    for turn in range(1, 6):
        previous = (await respond(client, t, model="p1", input=f"turn {turn}",
                                  previous_response_id=previous))["id"]  # fmt: skip
    # A background turn (run by whichever instance claims it) keeps the key too.
    queued = await respond(client, t, model="p1", input="turn 6", background=True,
                           previous_response_id=previous)  # fmt: skip
    assert (await finished(client, t, queued["id"]))["status"] == "completed"
    got = received(ups)
    assert len(got) == 7
    # One endpoint served the whole chain; each call carried the first response's ID.
    assert len({n for n, _, _ in got}) == 1
    assert {h["x-session-id"] for _, h, _ in got} == {first["id"]}
    assert {b["prompt_cache_key"] for _, _, b in got} == {first["id"]}
    # The key is stored with each response, so any instance continues the chain alike.
    async with runtime.db.writer.acquire() as conn:
        keys = await conn.fetch(
            "SELECT params->>'affinity_key' AS key FROM responses WHERE organization_id = $1",
            t.organization_id,
        )
    assert [r["key"] for r in keys] == [first["id"]] * 7
    # A chain whose first response named a prompt_cache_key keeps that one.
    for up in ups:
        up.headers.clear()
        up.bodies.clear()
    keyed = await respond(client, t, model="p1", input="a", prompt_cache_key="tenant-cache-7")
    assert keyed["prompt_cache_key"] == "tenant-cache-7"
    await respond(client, t, model="p1", input="b", previous_response_id=keyed["id"])
    got = received(ups)
    assert [h["x-session-id"] for _, h, _ in got] == ["tenant-cache-7"] * 2
    assert [b["prompt_cache_key"] for _, _, b in got] == ["tenant-cache-7"] * 2
    # `user` counts as in chat completions.
    for up in ups:
        up.headers.clear()
        up.bodies.clear()
    await respond(client, t, model="p1", input="c", user="user-42")
    [(_, headers, body)] = received(ups)
    assert headers["x-session-id"] == "user-42" and body["prompt_cache_key"] == "user-42"
    assert body["user"] == "user-42"


async def test_chat_forwards_the_key_and_only_declared_providers_get_it_in_the_body(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    t = await create_tenant(runtime)
    taking = await pool(client, t, upstreams, "p1", 1, {"prompt_cache_key": True})
    plain = await pool(client, t, upstreams, "p2", 1)
    messages = [{"role": "user", "content": "hi"}]
    for model in ("p1", "p2"):
        for extra in ({"user": "u1"}, {"prompt_cache_key": "k1", "user": "u1"}, {}):
            body = {"model": model, "messages": messages, **extra}
            r = await client.post("/v1/chat/completions", json=body, headers=t.project_headers)
            assert r.status_code == 200, r.text
    # prompt_cache_key first, then user; none: no header.
    for up in (taking[0], plain[0]):
        assert [h.get("x-session-id") for h in up.headers] == ["u1", "k1", None]
    assert [b.get("prompt_cache_key") for b in taking[0].bodies] == ["u1", "k1", None]
    assert [b.get("prompt_cache_key") for b in plain[0].bodies] == [None, "k1", None]
    # A key a header cannot carry as it is goes as a digest.
    long = "x" * 500
    streamed = {"model": "p1", "messages": messages, "user": long, "stream": True}
    r = await client.post("/v1/chat/completions", json=streamed, headers=t.project_headers)
    assert r.status_code == 200
    session = taking[0].headers[-1]["x-session-id"]
    assert session.startswith("sha256:") and taking[0].bodies[-1]["prompt_cache_key"] == session
    # The stream still asks the upstream for usage (the bytes were changed, not rebuilt).
    assert taking[0].bodies[-1]["stream_options"] == {"include_usage": True}


async def test_project_priority_is_forwarded_to_providers_that_declare_it(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    t = await create_tenant(runtime)
    url = f"/v1/organization/projects/{t.project_id}/priority"
    got = await client.get(url, headers=t.admin_headers)
    assert got.json() == {"object": "project.priority", "project_id": t.project_id,
                          "priority": None}  # fmt: skip
    taking = await pool(client, t, upstreams, "p1", 1, {"priority": True})
    plain = await pool(client, t, upstreams, "p2", 1)
    messages = [{"role": "user", "content": "hi"}]

    async def chat(model: str, **extra: Any) -> None:
        body = {"model": model, "messages": messages, **extra}
        r = await client.post("/v1/chat/completions", json=body, headers=t.project_headers)
        assert r.status_code == 200, r.text

    await chat("p1")  # no priority of its own: vLLM's default
    r = await client.post(url, json={"priority": -5}, headers=t.admin_headers)
    assert r.status_code == 200 and r.json()["priority"] == -5
    await chat("p1")
    await chat("p1", priority=-100)  # the caller cannot outrank its project's setting
    await chat("p1", stream=True)
    await respond(client, t, model="p1", input="hello")
    await chat("p2", priority=3)  # a provider that did not declare it: untouched
    await chat("p2")
    assert [b["priority"] for b in taking[0].bodies] == [0, -5, -5, -5, -5]
    assert [b.get("priority") for b in plain[0].bodies] == [3, None]
    assert (await client.get(url, headers=t.admin_headers)).json()["priority"] == -5
    r = await client.post(url, json={"priority": None}, headers=t.admin_headers)
    assert r.status_code == 200 and r.json()["priority"] is None
    await chat("p1")
    assert taking[0].bodies[-1]["priority"] == 0
    # Organization owners only; members read; a stranger's project does not exist.
    _, owner = await create_member(runtime, t, project_role="owner")
    assert (await client.post(url, json={"priority": 1}, headers=bearer(owner))).status_code == 403
    assert (await client.get(url, headers=bearer(owner))).status_code == 200
    other = await create_tenant(runtime)
    assert (await client.get(url, headers=other.admin_headers)).status_code == 404
    for bad, param in [
        ({}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 10**9}, "priority"),
        ({"priority": 1, "x": 2}, "x"),
    ]:
        r = await client.post(url, json=bad, headers=t.admin_headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (bad, r.text)


async def test_provider_options_are_validated(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    t = await create_tenant(runtime)
    up = await upstreams("v", models=("p1",))
    base = {"name": "v", "kind": "vllm", "base_url": up.base_url}
    for options, param in [
        ("yes", "options"),
        ({"priority": 1}, "options.priority"),
        ({"prompt_cache_key": "on"}, "options.prompt_cache_key"),
        ({"context_window": 0}, "options.context_window"),
        ({"context_windows": {"p1": "big"}}, "options.context_windows.p1"),
        ({"context_windows": []}, "options.context_windows"),
        ({"fast": True}, "options.fast"),
    ]:
        r = await client.post(PROVIDERS, json={**base, "options": options},
                              headers=t.admin_headers)  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (options, r.text)
    options = {"priority": True, "context_window": 4096, "context_windows": {"p1": 8192}}
    made = await client.post(PROVIDERS, json={**base, "options": options}, headers=t.admin_headers)
    assert made.status_code == 200 and made.json()["options"] == options
    changed = await client.post(
        f"{PROVIDERS}/{made.json()['id']}",
        json={"options": {"prompt_cache_key": True}},
        headers=t.admin_headers,
    )
    assert changed.status_code == 200 and changed.json()["options"] == {"prompt_cache_key": True}


async def test_a_request_too_long_for_the_window_goes_to_a_model_with_a_larger_one(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream, upstreams: Start
) -> None:
    t = await create_tenant(runtime)
    assert (await client.get("/v1/models", headers=t.project_headers)).status_code == 200
    big = await upstreams("big", models=("small", "unknown", "large"))
    big.windows = {"large": 32768}  # discovered from /models (vLLM's max_model_len)
    body = {
        "name": "big",
        "kind": "vllm",
        "base_url": big.base_url,
        "options": {"context_windows": {"small": 4}},  # declared
    }
    r = await client.post(PROVIDERS, json=body, headers=t.admin_headers)
    assert r.status_code == 200, r.text
    r = await client.post(
        "/v1/organization/model_fallbacks",
        json={"model": "m1", "fallbacks": ["small", "unknown", "large"]},
        headers=t.admin_headers,
    )
    assert r.status_code == 200, r.text
    messages = [{"role": "user", "content": "a long prompt"}]
    before = {reason: fallbacks_counted("m1", "large", "ok", reason) for reason in REASONS}
    # vLLM's refusal ("maximum context length is 8 tokens"): a smaller window and one not
    # known are passed over; the larger one serves.
    builtin.mode = "refuse400"
    for stream in (False, True):
        chat = {"model": "m1", "messages": messages, "stream": stream}
        r = await client.post("/v1/chat/completions", json=chat, headers=t.project_headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-jan-model-fallback"] == "m1"
    answer = await respond(client, t, model="m1", input="a long prompt")
    assert answer["model"] == "large"  # the model that served, not the one asked for
    stored = await client.get(f"/v1/responses/{answer['id']}", headers=t.project_headers)
    assert stored.json()["model"] == "large"
    queued = await respond(client, t, model="m1", input="a long prompt", background=True)
    assert queued["model"] == "m1"  # not run yet
    done = await finished(client, t, queued["id"])
    assert done["status"] == "completed" and done["model"] == "large"
    # llama.cpp's refusal (its window in the body's n_ctx) likewise.
    builtin.mode = "too_long"
    r = await client.post(
        "/v1/chat/completions", json={"model": "m1", "messages": messages},
        headers=t.project_headers,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["model"] == "large"
    assert [b["model"] for b in big.bodies] == ["large"] * 5
    # Counted as context-window fallbacks (the passed-over models were never tried).
    after = {reason: fallbacks_counted("m1", "large", "ok", reason) for reason in REASONS}
    assert after == {
        "context_window": before["context_window"] + 5,
        "unavailable": before["unavailable"],
    }
    assert fallbacks_counted("m1", "small", "failed", "context_window") == 0
    # No model of the list has a larger window: the refusal is the answer, in OpenAI's terms.
    r = await client.post(
        "/v1/organization/model_fallbacks",
        json={"model": "m1", "fallbacks": ["small", "unknown"]},
        headers=t.admin_headers,
    )
    assert r.status_code == 200
    r = await client.post(
        "/v1/chat/completions", json={"model": "m1", "messages": messages},
        headers=t.project_headers,
    )  # fmt: skip
    assert r.status_code == 400 and "x-jan-model-fallback" not in r.headers
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert len(big.bodies) == 5
    # A chain with both reasons: m1 too small, then a larger model that is down, then one
    # that serves — each try counted for why the model before it failed.
    down = await upstreams("down", models=("wide",))
    body = {
        "name": "down",
        "kind": "vllm",
        "base_url": down.base_url,
        "options": {"context_windows": {"wide": 65536}},
    }
    r = await client.post(PROVIDERS, json=body, headers=t.admin_headers)
    assert r.status_code == 200, r.text
    assert (await client.get("/v1/models", headers=t.project_headers)).status_code == 200
    r = await client.post(
        "/v1/organization/model_fallbacks",
        json={"model": "m1", "fallbacks": ["wide", "large"]},
        headers=t.admin_headers,
    )
    assert r.status_code == 200
    down.mode = "fail500"
    tries = [("m1", "wide", "failed", "context_window"), ("wide", "large", "ok", "unavailable")]
    before_chain = [fallbacks_counted(*labels) for labels in tries]
    r = await client.post(
        "/v1/chat/completions", json={"model": "m1", "messages": messages},
        headers=t.project_headers,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["model"] == "large"
    assert r.headers["x-jan-model-fallback"] == "m1,wide"
    assert [fallbacks_counted(*labels) for labels in tries] == [n + 1 for n in before_chain]


async def test_the_builtin_provider_takes_its_options_from_the_settings(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    t = await create_tenant(runtime)
    body = {"model": "m2", "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/v1/chat/completions", json=body, headers=t.project_headers)
    assert r.status_code == 200 and builtin.bodies[-1]["priority"] == 0
    url = f"/v1/organization/projects/{t.project_id}/priority"
    assert (await client.post(url, json={"priority": 7}, headers=t.admin_headers)).is_success
    r = await client.post("/v1/chat/completions", json=body, headers=t.project_headers)
    assert r.status_code == 200 and builtin.bodies[-1]["priority"] == 7
    assert "prompt_cache_key" not in builtin.bodies[-1]  # not declared


def test_how_refusals_for_the_context_window_are_read() -> None:
    def read(status: int, body: bytes) -> tuple[str, int | None]:
        error = failures.from_status(status, body).error
        return error.code or "", getattr(error, "window", None)

    vllm = b'{"object":"error","message":"This model\'s maximum context length is 4096 tokens.'
    vllm += b' However, you requested 5000 tokens.","type":"BadRequestError","code":400}'
    assert read(400, vllm) == ("context_length_exceeded", 4096)
    sglang = b'{"error":{"message":"The input (9000 tokens) is longer than the model\'s'
    sglang += b' context length (8192 tokens)."}}'
    assert read(400, sglang) == ("context_length_exceeded", 8192)
    llama = b'{"error":{"code":400,"message":"the request exceeds the available context size,'
    llama += b' try increasing it","type":"exceed_context_size_error","n_ctx":2048}}'
    assert read(400, llama) == ("context_length_exceeded", 2048)
    unsized = b'{"error":{"message":"prompt exceeds the context window"}}'
    assert read(400, unsized) == ("context_length_exceeded", None)
    assert read(400, b'{"error":{"message":"temperature must be <= 2"}}') == (
        "invalid_request",
        None,
    )
    assert read(422, vllm)[0] == "invalid_request"  # only 400 and 413 are read so


def test_session_keys_and_lenient_options() -> None:
    assert session_key("conv_123") == "conv_123"
    for awkward in ("with space", "é", "x" * 129, "a\nb"):
        key = session_key(awkward)
        assert key.startswith("sha256:") and len(key) == 39 and key == session_key(awkward)
    options = ProviderOptions.from_json(
        {"priority": "yes", "context_window": "big", "context_windows": {"a": 10, "b": True}}
    )
    assert options == ProviderOptions(context_windows=(("a", 10),))
    assert options.window("a") == 10 and options.window("b") is None
