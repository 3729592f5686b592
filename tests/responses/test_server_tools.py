"""The server-side tool loop, through the ToolExecutor seam: the model asks, the server
runs the tool, feeds the output back, and the model answers — all stored and streamed."""

from __future__ import annotations

from typing import Any

import httpx

from functions.common.principal import Owner
from functions.common.runtime import Runtime
from functions.responses.worker import BackgroundWorker
from functions.services.toolbox.server import ServerTool, ToolOutput
from tests.conftest import component
from tests.conversations.tenants import Tenant
from tests.responses.helpers import create, sse_events
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream


class ClockExecutor:
    """Answers `{"type": "clock"}` with a `clock` tool; `broken` raises."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def resolve(self, spec: dict[str, Any], owner: Owner) -> list[ServerTool] | None:
        if spec.get("type") != "clock":
            return None

        async def clock(arguments: str) -> ToolOutput:
            self.calls.append(arguments)
            return ToolOutput("12:00")

        async def broken(arguments: str) -> ToolOutput:
            raise RuntimeError("tool exploded")

        return [
            ServerTool("clock", "The time", {"type": "object"}, clock),
            ServerTool("broken", "Fails", {"type": "object"}, broken),
        ]


async def test_server_tool_loop_is_run_stored_and_streamed(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, runtime: Runtime
) -> None:
    executor = ClockExecutor()
    component(runtime, BackgroundWorker).tools.executors.append(executor)
    conv = (await client.post("/v1/conversations", json={}, headers=tenant.user)).json()
    upstream.script.extend(
        [Reply(tool_calls=[("clock", '{"tz": "UTC"}')]), Reply(text="It is 12:00.")]
    )
    resp = await create(
        client, tenant.user, input="Time?", tools=[{"type": "clock"}], conversation=conv["id"]
    )
    assert [o["type"] for o in resp["output"]] == [
        "function_call",
        "function_call_output",
        "message",
    ]
    assert resp["output"][1]["output"] == "12:00" and executor.calls == ['{"tz": "UTC"}']
    assert resp["output"][1]["call_id"] == resp["output"][0]["call_id"]
    assert resp["usage"]["input_tokens"] == 20  # both model turns counted
    offered = [t["function"]["name"] for t in upstream.requests[0]["tools"]]
    assert offered == ["clock", "broken"]
    assert upstream.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": resp["output"][0]["call_id"],
        "content": "12:00",
    }
    items = (
        await client.get(
            f"/v1/conversations/{conv['id']}/items", params={"order": "asc"}, headers=tenant.user
        )
    ).json()["data"]
    assert [i["type"] for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]

    upstream.script.extend([Reply(tool_calls=[("broken", "{}")]), Reply(text="Sorry.")])
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "Break", "tools": [{"type": "clock"}], "stream": True},
        headers=tenant.user,
    )
    events = sse_events(r.text)
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["function_call", "function_call_output", "message"]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["output"][1]["output"] == "Error: the tool 'broken' failed."


async def test_client_calls_stop_the_loop_after_server_calls(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream, runtime: Runtime
) -> None:
    component(runtime, BackgroundWorker).tools.executors.append(ClockExecutor())
    mine = {"type": "function", "name": "ask_user", "parameters": {"type": "object"}}
    upstream.script.append(Reply(tool_calls=[("clock", "{}"), ("ask_user", "{}")]))
    resp = await create(client, tenant.user, input="x", tools=[{"type": "clock"}, mine])
    assert [o["type"] for o in resp["output"]] == [
        "function_call",
        "function_call",
        "function_call_output",
    ]
    assert len(upstream.requests) == 1  # the client answers ask_user before the model goes on


async def test_replayed_server_calls_show_the_model_calls_and_results(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    searched = {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "jan"},
        "output": "1. Jan",
    }
    unseen = {**searched, "id": "ws_2", "output": None}  # as OpenAI returns one: no results
    failed = {
        "type": "mcp_call",
        "id": "mcp_1",
        "server_label": "jan",
        "name": "scrape",
        "arguments": '{"url": "https://jan.ai"}',
        "output": None,
        "error": {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": "x"}]},
    }
    await create(
        client,
        tenant.user,
        store=False,
        input=[searched, unseen, failed, {"role": "user", "content": "go on"}],
    )
    [call_message, search_result, scrape_result, user] = upstream.requests[-1]["messages"]
    calls = call_message["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["web_search", "scrape"]
    assert calls[0]["function"]["arguments"] == '{"q":"jan"}'
    assert search_result == {"role": "tool", "tool_call_id": calls[0]["id"], "content": "1. Jan"}
    assert scrape_result == {"role": "tool", "tool_call_id": calls[1]["id"], "content": "Error: x"}
    assert user == {"role": "user", "content": "go on"}
