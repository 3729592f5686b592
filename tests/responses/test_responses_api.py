"""The Responses API over ASGI, real PostgreSQL, and a scripted upstream on a real port."""

from __future__ import annotations

import httpx

from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from tests.conftest import component
from tests.conversations.tenants import Tenant
from tests.responses.helpers import create, sse_events
from tests.responses.upstream import MODEL, Reply, ScriptedUpstream


async def test_text_response_is_stored_and_retrievable(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.script.append(Reply(text="Hello from the model"))
    resp = await create(
        client,
        tenant.user,
        input="Say hello",
        instructions="Be brief.",
        temperature=0.5,
        max_output_tokens=50,
        metadata={"run": "1"},
    )
    assert resp["object"] == "response" and resp["id"].startswith("resp_")
    assert resp["status"] == "completed" and resp["model"] == MODEL
    [message] = resp["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [
        {"type": "output_text", "text": "Hello from the model", "annotations": [], "logprobs": []}
    ]
    assert resp["usage"]["input_tokens"] == 10 and resp["usage"]["output_tokens"] == 4
    assert resp["usage"]["total_tokens"] == 14 and resp["metadata"] == {"run": "1"}
    sent = upstream.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["temperature"] == 0.5 and sent["max_tokens"] == 50

    got = (await client.get(f"/v1/responses/{resp['id']}", headers=tenant.user)).json()
    assert got == resp
    inputs = (
        await client.get(f"/v1/responses/{resp['id']}/input_items", headers=tenant.user)
    ).json()
    assert inputs["object"] == "list" and len(inputs["data"]) == 1
    assert inputs["data"][0]["content"] == [{"type": "input_text", "text": "Say hello"}]

    deleted = await client.delete(f"/v1/responses/{resp['id']}", headers=tenant.user)
    assert deleted.json() == {"id": resp["id"], "object": "response.deleted", "deleted": True}
    assert (await client.get(f"/v1/responses/{resp['id']}", headers=tenant.user)).status_code == 404


async def test_input_items_page_by_cursor(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    said = [{"role": "user", "content": word} for word in ("one", "two", "three")]
    resp = await create(client, tenant.user, input=said)
    url = f"/v1/responses/{resp['id']}/input_items"
    first = (await client.get(url, params={"limit": 2, "order": "asc"}, headers=tenant.user)).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = (
        await client.get(
            url, params={"order": "asc", "after": first["last_id"]}, headers=tenant.user
        )
    ).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["three"]
    assert rest["has_more"] is False
    unknown = await client.get(url, params={"after": "msg_nope"}, headers=tenant.user)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "after"


async def test_stream_emits_typed_events_in_order(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.script.append(Reply(text="one two three"))
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "count", "stream": True},
        headers=tenant.user,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "one two three" == events[7]["text"]
    assert events[0]["response"]["status"] == "in_progress"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["id"] == events[2]["item"]["id"]
    stored = (await client.get(f"/v1/responses/{final['id']}", headers=tenant.user)).json()
    assert stored["output"] == final["output"]


async def test_previous_response_id_chains_history(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    first = await create(client, tenant.user, input="My name is Ada.", instructions="Old rules.")
    second = await create(
        client, tenant.user, input="What is my name?", previous_response_id=first["id"]
    )
    third = await create(client, tenant.user, input="And again?", previous_response_id=second["id"])
    assert third["previous_response_id"] == second["id"]
    # Instructions are not carried over; every earlier input and output is.
    assert upstream.requests[-1]["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "echo: My name is Ada."},
        {"role": "user", "content": "What is my name?"},
        {"role": "assistant", "content": "echo: What is my name?"},
        {"role": "user", "content": "And again?"},
    ]


async def test_conversation_history_is_used_and_extended(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    conv = (
        await client.post(
            "/v1/conversations",
            json={"items": [{"role": "system", "content": "You are terse."}]},
            headers=tenant.user,
        )
    ).json()
    await client.post(
        f"/v1/conversations/{conv['id']}/items",
        json={"items": [{"role": "user", "content": "Remember 7."}]},
        headers=tenant.user,
    )
    one = await create(client, tenant.user, input="Noted?", conversation=conv["id"])
    assert one["conversation"] == {"id": conv["id"]}
    await create(client, tenant.user, input="Which number?", conversation={"id": conv["id"]})
    assert upstream.requests[-1]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Remember 7."},
        {"role": "user", "content": "Noted?"},
        {"role": "assistant", "content": "echo: Noted?"},
        {"role": "user", "content": "Which number?"},
    ]
    items = (
        await client.get(
            f"/v1/conversations/{conv['id']}/items", params={"order": "asc"}, headers=tenant.user
        )
    ).json()["data"]
    assert len(items) == 6 and items[3]["id"] == one["output"][0]["id"]
    listed = (await client.get("/v1/conversations", headers=tenant.user)).json()
    assert listed["data"][0]["title"] == "Remember 7."


async def test_function_tool_round_trip(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    upstream.script.append(
        Reply(text="Let me check.", tool_calls=[("get_weather", '{"city": "Oslo"}')])
    )
    asked = await create(client, tenant.user, input="Weather in Oslo?", tools=[tool])
    assert [o["type"] for o in asked["output"]] == ["message", "function_call"]
    call = asked["output"][1]
    assert call["name"] == "get_weather" and call["arguments"] == '{"city": "Oslo"}'
    assert call["call_id"] == "call_0" and call["status"] == "completed"
    assert asked["tools"][0]["name"] == "get_weather"
    sent = upstream.requests[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "auto"

    upstream.script.append(Reply(text="It is sunny in Oslo."))
    answered = await create(
        client,
        tenant.user,
        previous_response_id=asked["id"],
        tools=[tool],
        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}],
    )
    assert answered["output"][0]["content"][0]["text"] == "It is sunny in Oslo."
    messages = upstream.requests[-1]["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "Let me check.",
    }
    assert messages[2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}


async def test_streamed_tool_call_events(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    upstream.script.append(Reply(tool_calls=[("lookup", '{"q": "x"}')]))
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    r = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "find x", "tools": [tool], "stream": True},
        headers=tenant.user,
    )
    kinds = [e["type"] for e in sse_events(r.text)]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


async def test_usage_is_recorded_like_chat_completions(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    await create(client, tenant.user, input="count me")
    svc = component(runtime, Inference)
    async with runtime.db.writer.acquire() as conn:
        await svc.usage.flush(conn)
        row = await conn.fetchrow("SELECT * FROM usage_completions")
    assert row is not None
    assert (row["organization_id"], row["project_id"], row["user_id"]) == (
        tenant.organization_id,
        tenant.project_id,
        tenant.user_id,
    )
    assert row["model"] == MODEL and row["streamed"] and row["status"] == 200
    assert (row["input_tokens"], row["output_tokens"]) == (10, 3)
