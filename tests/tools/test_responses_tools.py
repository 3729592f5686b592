"""Server-side tools in POST /v1/responses: a scripted model asks for web_search, the server
runs it against a local Serper, feeds the result back, and the model answers with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, get_args

import httpx
import openai
import orjson
import pytest
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionWebSearch,
    ResponseStreamEvent,
)
from openai.types.responses.response_function_web_search import ActionSearch
from openai.types.responses.response_output_item import McpCall
from pydantic import BaseModel

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.toolbox import store
from tests.conftest import make_settings
from tests.factories import Tenant, create_tenant
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream
from tests.tools.fakes import SERPER_KEY, FakeSerper
from tests.tools.http_server import serve_app

# The SDK's event classes by their `type` (its union is discriminated by the SDK itself).
SDK_EVENTS: dict[str, type[BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(ResponseStreamEvent)[0])
}
ANSWER = "Jan Server is a self-hosted OpenAI-compatible platform (https://jan.ai/server)."


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def fake_serper(serper: tuple[FakeSerper, str]) -> FakeSerper:
    return serper[0]


@pytest.fixture
def settings(
    database_dsn: str, upstream: ScriptedUpstream, serper: tuple[FakeSerper, str]
) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=upstream.url,
        serper_url=serper[1],
        serper_api_key=SERPER_KEY,
    )


@pytest.fixture
async def tenant(client: httpx.AsyncClient, runtime: Runtime) -> Tenant:
    return await create_tenant(runtime)


def parse_events(events: list[dict[str, Any]]) -> None:
    """Every event, and every response in one, is what the official SDK expects."""
    for event in events:
        SDK_EVENTS[event["type"]].model_validate(event)


def _sse(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


async def test_model_searches_then_answers_and_the_loop_is_stored(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, fake_serper: FakeSerper
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
    parse_events(events)
    done = [e["item"]["type"] for e in events if e["type"] == "response.output_item.done"]
    assert done == ["web_search_call", "message"]
    search = [e["type"] for e in events if e.get("output_index") == 0]
    assert search == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    final = events[-1]
    assert final["type"] == "response.completed"

    # The search ran with the model's query and the request's location default.
    assert fake_serper.requests[-1][1] == {"q": "jan server", "gl": "de"}
    # The model was offered the tool, then shown its call and the results before it answered.
    assert upstream.requests[0]["tools"][0]["function"]["name"] == "web_search"
    response = final["response"]
    call, message = response["output"]
    asked, tool_message = upstream.requests[1]["messages"][-2:]
    assert asked["tool_calls"] == [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": "web_search", "arguments": '{"q":"jan server"}'},
        }
    ]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == call["id"]
    assert "1. Jan Server (Jan 2, 2026)\n   https://jan.ai/server" in tool_message["content"]

    assert call["type"] == "web_search_call" and call["status"] == "completed"
    assert call["action"] == {"type": "search", "query": "jan server"}
    assert call["output"] == tool_message["content"]
    assert message["content"][0]["text"] == ANSWER
    assert Response.model_validate(response).output_text == ANSWER

    stored = (await client.get(f"/v1/responses/{response['id']}", headers=headers)).json()
    assert stored["output"] == response["output"]
    items = (
        await client.get(f"/v1/conversations/{conversation['id']}/items?order=asc", headers=headers)
    ).json()["data"]
    assert [i["type"] for i in items] == ["message", "web_search_call", "message"]
    assert items[0]["role"] == "user" and items[2]["role"] == "assistant"
    assert items[1] == call

    # The next turn shows the model the same search, from the stored conversation.
    upstream.script.append(Reply(text="Anything else?"))
    body = {"model": MODEL, "input": "Thanks", "conversation": conversation["id"]}
    await client.post("/v1/responses", json=body, headers=headers)
    assert upstream.requests[-1]["messages"][1:3] == [asked, tool_message]


async def test_jan_mcp_calls_are_mcp_call_items(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, fake_serper: FakeSerper
) -> None:
    upstream.script.append(Reply(tool_calls=[("google_search", '{"q": "jan"}')]))
    upstream.script.append(Reply(text="Found it."))
    fake_serper.fail_with = None
    tools = [{"type": "mcp", "server_label": "jan", "allowed_tools": ["google_search"]}]
    body = {"model": MODEL, "input": "Find jan", "tools": tools, "stream": True}
    r = await client.post("/v1/responses", json=body, headers=tenant.user_headers)
    events = _sse(r.text)
    parse_events(events)
    assert [e["type"] for e in events if e.get("output_index") == 0] == [
        "response.output_item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    call, message = events[-1]["response"]["output"]
    assert (call["type"], call["server_label"]) == ("mcp_call", "jan")
    assert call["name"] == "google_search" and message["type"] == "message"
    assert call["arguments"] == '{"q": "jan"}' and call["status"] == "completed"
    assert "https://jan.ai/server" in call["output"] and call["error"] is None
    assert upstream.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": call["output"],
    }

    fake_serper.fail_with = 503
    upstream.script.append(Reply(tool_calls=[("google_search", '{"q": "jan"}')]))
    upstream.script.append(Reply(text="Search is down."))
    r = await client.post("/v1/responses", json=body, headers=tenant.user_headers)
    events = _sse(r.text)
    parse_events(events)
    assert "response.mcp_call.failed" in [e["type"] for e in events]
    failed = events[-1]["response"]["output"][0]
    assert failed["status"] == "failed" and failed["output"] is None
    assert failed["error"] == {
        "type": "mcp_tool_execution_error",
        "content": [{"type": "text", "text": "The search provider failed (HTTP 503)."}],
    }
    assert upstream.requests[-1]["messages"][-1]["content"] == (
        "Error: The search provider failed (HTTP 503)."
    )


async def test_openai_sdk_streams_and_parses_typed_tool_items(
    runtime: Runtime, upstream: ScriptedUpstream, fake_serper: FakeSerper
) -> None:
    upstream.script.extend(
        [
            Reply(tool_calls=[("web_search", '{"q": "jan server"}')]),
            Reply(tool_calls=[("google_search", '{"q": "jan"}')]),
            Reply(text=ANSWER),
        ]
    )
    tools: Any = [
        {"type": "web_search"},
        {"type": "mcp", "server_label": "jan", "allowed_tools": ["google_search"]},
    ]
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=0
        ) as sdk:
            stream = await sdk.responses.create(
                model=MODEL, input="What is Jan?", tools=tools, stream=True
            )
            events = [event async for event in stream]
            final = events[-1]
            assert isinstance(final, ResponseCompletedEvent)
            stored = await sdk.responses.retrieve(final.response.id)
    kinds = [e.type for e in events]
    for kind in (
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ):
        assert kind in kinds
    search, mcp, _ = final.response.output
    assert isinstance(search, ResponseFunctionWebSearch) and search.status == "completed"
    assert isinstance(search.action, ActionSearch) and search.action.query == "jan server"
    assert isinstance(mcp, McpCall) and (mcp.server_label, mcp.name) == ("jan", "google_search")
    assert mcp.output is not None and "https://jan.ai/server" in mcp.output
    assert final.response.output_text == ANSWER
    assert stored.output == final.response.output
    assert len(fake_serper.requests) == 2


async def test_search_failure_reaches_the_model_not_the_client(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, fake_serper: FakeSerper
) -> None:
    fake_serper.fail_with = 502
    upstream.script.append(Reply(tool_calls=[("web_search", '{"q": "x"}')]))
    upstream.script.append(Reply(text="Search is down, sorry."))
    body = {"model": MODEL, "input": "x?", "tools": [{"type": "web_search"}]}
    r = await client.post("/v1/responses", json=body, headers=tenant.user_headers)
    assert r.status_code == 200 and r.json()["status"] == "completed"
    search = r.json()["output"][0]
    assert search["type"] == "web_search_call" and search["status"] == "failed"
    assert search["output"] == "Error: The search provider failed (HTTP 502)."
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
