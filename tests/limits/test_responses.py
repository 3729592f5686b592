"""The Responses API is limited like any model call, round by round: foreground (plain and
streamed), background, and every round of the server-side tool loop go through the same
admission."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from functions.common.settings import Settings
from tests.conftest import make_settings
from tests.factories import Tenant
from tests.limits.support import set_project_limits
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream
from tests.tools.fakes import SERPER_KEY, FakeSerper, serper

__all__ = ["serper"]


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def settings(
    database_dsn: str, upstream: ScriptedUpstream, serper: tuple[FakeSerper, str]
) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=upstream.url,
        serper_url=serper[1],
        serper_api_key=SERPER_KEY,
        jan_rate_limit_store="memory",
    )


async def limit(client: httpx.AsyncClient, tenant: Tenant, **limits: Any) -> None:
    await set_project_limits(client, tenant.admin_headers, tenant.project_id, MODEL, **limits)


async def test_foreground_responses_carry_the_headers_and_are_refused_with_429(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    await limit(client, tenant, max_requests_per_1_minute=2, max_tokens_per_1_minute=10_000)
    headers = tenant.project_headers
    r = await client.post("/v1/responses", json={"model": MODEL, "input": "hi"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining-requests"] == "1"
    assert r.headers["x-ratelimit-limit-tokens"] == "10000"
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "stream": True, "max_output_tokens": 50},
        headers=headers,
    )
    assert r.status_code == 200 and "response.completed" in r.text
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 10_000 - 50  # reserved, in flight
    r = await client.post("/v1/responses", json={"model": MODEL, "input": "hi"}, headers=headers)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded" and "retry-after" in r.headers
    assert len(upstream.requests) == 2


async def test_every_round_of_the_tool_loop_is_admitted(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    await limit(client, tenant, max_requests_per_1_minute=3)
    body = {"model": MODEL, "input": "What is Jan?", "tools": [{"type": "web_search"}]}
    upstream.script.append(Reply(tool_calls=[("web_search", '{"q": "jan"}')]))
    upstream.script.append(Reply(text="An AI gateway."))
    r = await client.post("/v1/responses", json=body, headers=tenant.project_headers)
    assert r.status_code == 200, r.text
    assert [item["type"] for item in r.json()["output"]] == ["web_search_call", "message"]
    assert r.headers["x-ratelimit-remaining-requests"] == "1"  # two rounds, two requests
    # One request left: the second round of the next run is refused, which fails the run.
    upstream.script.append(Reply(tool_calls=[("web_search", '{"q": "jan"}')]))
    r = await client.post("/v1/responses", json=body, headers=tenant.project_headers)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 3  # the refused round never reached the model


async def test_background_runs_are_admitted_when_they_run(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    await limit(client, tenant, max_requests_per_1_day=1)
    headers = tenant.project_headers
    body = {"model": MODEL, "input": "hi", "background": True}
    first = (await client.post("/v1/responses", json=body, headers=headers)).json()
    second = (await client.post("/v1/responses", json=body, headers=headers)).json()
    done: dict[str, dict[str, Any]] = {}
    for _ in range(500):
        for made in (first, second):
            got = (await client.get(f"/v1/responses/{made['id']}", headers=headers)).json()
            if got["status"] not in ("queued", "in_progress"):
                done[made["id"]] = got
        if len(done) == 2:
            break
        await asyncio.sleep(0.02)
    statuses = sorted(got["status"] for got in done.values())
    assert statuses == ["completed", "failed"]
    failed = next(got for got in done.values() if got["status"] == "failed")
    assert failed["error"]["code"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 1


async def test_budgets_hold_on_every_round_foreground_or_background(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    # 15 tokens today; every round of the scripted model uses 15.
    r = await client.post(
        f"/v1/organization/projects/{tenant.project_id}/token_budgets",
        json={"tokens_per_day": 15},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 200
    body = {"model": MODEL, "input": "What is Jan?", "tools": [{"type": "web_search"}]}
    upstream.script.append(Reply(tool_calls=[("web_search", '{"q": "jan"}')]))
    r = await client.post("/v1/responses", json=body, headers=tenant.project_headers)
    assert r.status_code == 429, r.text  # the second round found the budget spent
    assert r.json()["error"]["code"] == "insufficient_quota"
    assert len(upstream.requests) == 1
    made = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "background": True},
        headers=tenant.project_headers,
    )
    for _ in range(500):
        got = (
            await client.get(f"/v1/responses/{made.json()['id']}", headers=tenant.project_headers)
        ).json()
        if got["status"] not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.02)
    # OpenAI's response error codes have no insufficient_quota: the nearest, and the message.
    assert got["status"] == "failed" and got["error"]["code"] == "rate_limit_exceeded"
    assert "quota" in got["error"]["message"]
    assert len(upstream.requests) == 1
