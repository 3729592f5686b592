"""A stored foreground response exists from its first event: GET shows it `in_progress`,
then its final state. A streaming client that hangs up stops the run, which is stored as
`cancelled` with what it had produced. Over a real port: ASGITransport buffers streams."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from functions.common.runtime import Runtime
from tests.conversations.tenants import Tenant, make_tenant
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream


async def _poll(http: httpx.AsyncClient, tenant: Tenant, response_id: str, status: str) -> Any:
    for _ in range(100):
        got = (await http.get(f"/v1/responses/{response_id}", headers=tenant.user)).json()
        if got.get("status") == status:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"response {response_id} is {got}, never {status}")


async def test_running_response_is_stored_in_progress_then_final(
    served: str, runtime: Runtime, upstream: ScriptedUpstream
) -> None:
    tenant = await make_tenant(runtime)
    upstream.script.append(Reply(text="slow words come one by one", delay=0.05))
    body = {"model": MODEL, "input": "go", "stream": True, "metadata": {"k": "v"}}
    async with (
        httpx.AsyncClient(base_url=served) as http,
        http.stream("POST", "/v1/responses", json=body, headers=tenant.user) as stream,
    ):
        lines = stream.aiter_lines()
        created = await _first_event(lines, "response.created")
        response_id = created["response"]["id"]
        running = (await http.get(f"/v1/responses/{response_id}", headers=tenant.user)).json()
        assert running["status"] == "in_progress" and running["output"] == []
        assert "usage" not in running and running["metadata"] == {"k": "v"}
        inputs = await http.get(f"/v1/responses/{response_id}/input_items", headers=tenant.user)
        assert [i["type"] for i in inputs.json()["data"]] == ["message"]
        done = await _first_event(lines, "response.completed")
        stored = (await http.get(f"/v1/responses/{response_id}", headers=tenant.user)).json()
    assert stored == done["response"] and stored["status"] == "completed"
    assert stored["output"][0]["content"][0]["text"] == "slow words come one by one"


async def test_client_that_hangs_up_leaves_a_cancelled_response(
    served: str, runtime: Runtime, upstream: ScriptedUpstream
) -> None:
    tenant = await make_tenant(runtime)
    upstream.script.append(Reply(text="never " * 200, delay=0.05))
    async with httpx.AsyncClient(base_url=served) as http:
        conversation = (await http.post("/v1/conversations", json={}, headers=tenant.user)).json()
        body = {"model": MODEL, "input": "talk", "stream": True, "conversation": conversation["id"]}
        async with http.stream("POST", "/v1/responses", json=body, headers=tenant.user) as stream:
            lines = stream.aiter_lines()
            response_id = (await _first_event(lines, "response.created"))["response"]["id"]
            await _first_event(lines, "response.output_text.delta")
        # Leaving the block closed the connection mid-stream.
        stopped = await _poll(http, tenant, response_id, "cancelled")
        items = await http.get(f"/v1/conversations/{conversation['id']}/items", headers=tenant.user)
    [message] = stopped["output"]
    assert message["status"] == "incomplete" and message["content"] == []
    assert stopped["completed_at"] is not None and stopped["error"] is None
    assert stopped["usage"] is not None
    assert items.json()["data"] == []  # a cancelled turn is not part of the conversation
    for _ in range(50):  # the upstream call was let go, not left to finish
        if upstream.streams_closed:
            break
        await asyncio.sleep(0.05)
    assert upstream.streams_closed == 1 and len(upstream.requests) == 1


async def test_store_false_hang_up_stores_nothing(
    served: str, runtime: Runtime, upstream: ScriptedUpstream
) -> None:
    tenant = await make_tenant(runtime)
    upstream.script.append(Reply(text="never " * 200, delay=0.05))
    body = {"model": MODEL, "input": "talk", "stream": True, "store": False}
    async with (
        httpx.AsyncClient(base_url=served) as http,
        http.stream("POST", "/v1/responses", json=body, headers=tenant.user) as stream,
    ):
        await _first_event(stream.aiter_lines(), "response.output_text.delta")
    for _ in range(50):
        if upstream.streams_closed:
            break
        await asyncio.sleep(0.05)
    assert upstream.streams_closed == 1
    assert await runtime.db.writer.fetchval("SELECT count(*) FROM responses") == 0


async def _first_event(lines: Any, kind: str) -> Any:
    async for line in lines:
        if line.startswith("data: "):
            event = orjson.loads(line.removeprefix("data: "))
            if event["type"] == kind:
                return event
    raise AssertionError(f"no {kind} event")
