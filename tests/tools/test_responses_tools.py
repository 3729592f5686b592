"""Server-side tools in POST /v1/responses: a scripted model asks for web_search, the server
runs it against a local Serper, feeds the result back, and the model answers with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.tools import store
from tests.conftest import make_settings
from tests.factories import Tenant, create_tenant
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream
from tests.tools.fakes import SERPER_KEY, FakeSerper
from tests.tools.http_server import serve

ANSWER = "Jan Server is a self-hosted OpenAI-compatible platform (https://jan.ai/server)."


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def serper_at() -> AsyncIterator[tuple[FakeSerper, str]]:
    fake = FakeSerper()
    async with serve(fake.app) as base:
        yield fake, base


@pytest.fixture
def serper(serper_at: tuple[FakeSerper, str]) -> FakeSerper:
    return serper_at[0]


@pytest.fixture
def settings(
    database_dsn: str, upstream: ScriptedUpstream, serper_at: tuple[FakeSerper, str]
) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=upstream.url,
        serper_url=serper_at[1],
        serper_api_key=SERPER_KEY,
    )


@pytest.fixture
async def tenant(client: httpx.AsyncClient, runtime: Runtime) -> Tenant:
    return await create_tenant(runtime)


def _sse(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


async def test_model_searches_then_answers_and_the_loop_is_stored(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, serper: FakeSerper
) -> None:
    headers = tenant.user_headers
    conversation = (await client.post("/v1/conversations", json={}, headers=headers)).json()
    upstream.script.append(Reply(tool_calls=[("web_search", '{"q": "jan server"}')]))
    upstream.script.append(Reply(text=ANSWER))
    r = await client.post(
        "/v1/responses",
        json={
            "model": MODEL,
            "input": "What is Jan Server?",
            "tools": [
                {"type": "web_search", "user_location": {"type": "approximate", "country": "DE"}}
            ],
            "conversation": conversation["id"],
            "stream": True,
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    events = _sse(r.text)
    done = [e["item"]["type"] for e in events if e["type"] == "response.output_item.done"]
    assert done == ["function_call", "function_call_output", "message"]
    final = events[-1]
    assert final["type"] == "response.completed"

    # The search ran with the model's query and the request's location default.
    assert serper.requests[-1][1] == {"q": "jan server", "gl": "de"}
    # The model was offered the tool, then shown the results before it answered.
    assert upstream.requests[0]["tools"][0]["function"]["name"] == "web_search"
    tool_message = upstream.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_0"
    assert "1. Jan Server (Jan 2, 2026)\n   https://jan.ai/server" in tool_message["content"]

    response = final["response"]
    call, output, message = response["output"]
    assert call["name"] == "web_search" and call["arguments"] == '{"q": "jan server"}'
    assert output["call_id"] == call["call_id"] and "https://jan.ai/server" in output["output"]
    assert message["content"][0]["text"] == ANSWER

    stored = (await client.get(f"/v1/responses/{response['id']}", headers=headers)).json()
    assert [o["type"] for o in stored["output"]] == [
        "function_call",
        "function_call_output",
        "message",
    ]
    items = (
        await client.get(f"/v1/conversations/{conversation['id']}/items?order=asc", headers=headers)
    ).json()["data"]
    assert [i["type"] for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert items[0]["role"] == "user" and items[3]["role"] == "assistant"
    assert items[2]["output"] == output["output"]


async def test_search_failure_reaches_the_model_not_the_client(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, serper: FakeSerper
) -> None:
    serper.fail_with = 502
    upstream.script.append(Reply(tool_calls=[("web_search", '{"q": "x"}')]))
    upstream.script.append(Reply(text="Search is down, sorry."))
    body = {"model": MODEL, "input": "x?", "tools": [{"type": "web_search"}]}
    r = await client.post("/v1/responses", json=body, headers=tenant.user_headers)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    assert r.json()["output"][1]["output"] == "Error: The search provider failed (HTTP 502)."
    assert upstream.requests[1]["messages"][-1]["content"].startswith("Error: ")


async def test_fetch_and_jan_mcp_tools_are_offered(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    tools = [
        {"type": "fetch"},
        {"type": "mcp", "server_label": "jan", "allowed_tools": ["google_search"]},
    ]
    body = {"model": MODEL, "input": "hi", "tools": tools}
    r = await client.post("/v1/responses", json=body, headers=tenant.user_headers)
    assert r.status_code == 200, r.text
    offered = [t["function"]["name"] for t in upstream.requests[-1]["tools"]]
    assert offered == ["fetch", "google_search"]


async def test_unavailable_tools_are_refused_up_front(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    remote = {"type": "mcp", "server_label": "x", "server_url": "http://10.0.0.1/mcp"}
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "tools": [remote]},
        headers=tenant.user_headers,
    )
    assert r.status_code == 400 and "Jan's own MCP tools" in r.json()["error"]["message"]
    await store.put_settings(
        runtime.db.writer,
        organization_id=tenant.organization_id,
        project_id=tenant.project_id,
        settings=store.ProjectToolSettings(
            enabled_tools=frozenset({"fetch"}), daily_call_quota=None
        ),
    )
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "hi", "tools": [{"type": "web_search"}]},
        headers=tenant.user_headers,
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "The web_search tool is not enabled for this project."
