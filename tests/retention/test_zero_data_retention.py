"""Zero data retention: a project (or organization) under it stores no prompt or output.
Responses answer but are not kept (as with `store: false`); conversations, conversation
items, background runs and previous responses are refused naming the policy; the usage
ledger keeps its counts. The change reaches credentials already cached at once."""

from __future__ import annotations

import httpx

from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from tests.conftest import component
from tests.factories import Tenant, create_tenant
from tests.responses.helpers import sse_events
from tests.responses.upstream import MODEL

ORG = "/v1/organization/data_retention"


def project_url(tenant: Tenant) -> str:
    return f"/v1/organization/projects/{tenant.project_id}/data_retention"


async def respond(
    client: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> httpx.Response:
    return await client.post(
        "/v1/responses", json={"model": MODEL, "input": "hi", **body}, headers=headers
    )


async def stored_completions(runtime: Runtime, tenant: Tenant) -> int:
    count: int = await runtime.db.writer.fetchval(
        "SELECT count(*) FROM chat_completions WHERE project_id = $1", tenant.project_id
    )
    return count


async def stored_responses(runtime: Runtime) -> int:
    count: int = await runtime.db.writer.fetchval("SELECT count(*) FROM responses")
    return count


async def test_nothing_is_stored_and_what_needs_storage_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    key = tenant.project_headers
    conversation = await client.post("/v1/conversations", json={}, headers=key)
    assert (await respond(client, key)).json()["store"] is True  # warms the key's cache
    assert await stored_responses(runtime) == 1

    r = await client.post(
        project_url(tenant),
        json={"retention_type": "zero_data_retention"},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 200
    for headers in (key, tenant.user_headers):
        answered = await respond(client, headers)
        assert answered.status_code == 200, answered.text
        body = answered.json()
        assert body["status"] == "completed" and body["store"] is False
        assert body["output"][0]["content"][0]["text"] == "echo: hi"  # the scripted model
        assert (await client.get(f"/v1/responses/{body['id']}", headers=headers)).status_code == 404
        streamed = await respond(client, headers, stream=True)
        assert sse_events(streamed.text)[-1]["type"] == "response.completed"
    assert await stored_responses(runtime) == 1  # only the one from before

    refusals = [
        (await respond(client, key, background=True), "background"),
        (await respond(client, key, conversation=conversation.json()["id"]), "conversation"),
        (await respond(client, key, previous_response_id="resp_x"), "previous_response_id"),
        (await client.post("/v1/conversations", json={}, headers=key), None),
        (
            await client.post(
                f"/v1/conversations/{conversation.json()['id']}/items",
                json={"items": [{"role": "user", "content": "remember me"}]},
                headers=key,
            ),
            "items",
        ),
    ]
    for refused, param in refusals:
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "zero_data_retention" and error["param"] == param
        assert "zero_data_retention" in error["message"]
    # What was stored before stays readable (its retention period governs it).
    conv = await client.get(f"/v1/conversations/{conversation.json()['id']}", headers=key)
    assert conv.status_code == 200
    # The ledger keeps counts: one row per call, none of them content.
    async with runtime.db.writer.acquire() as conn:
        await component(runtime, Inference).usage.flush(conn)
        rows = await conn.fetch(
            "SELECT input_tokens, output_tokens FROM usage_completions WHERE project_id = $1",
            tenant.project_id,
        )
    assert len(rows) == 5 and all(r["input_tokens"] > 0 for r in rows)


async def test_stored_chat_completions_are_not_stored(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """`store: true` on a chat completion behaves as `store: false` under the policy:
    answered, plain or streamed, and nothing is kept (nor listed)."""
    tenant = await create_tenant(runtime)
    key = tenant.project_headers
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "store": True}
    kept = await client.post("/v1/chat/completions", json=body, headers=key)
    assert kept.status_code == 200, kept.text
    assert await stored_completions(runtime, tenant) == 1

    r = await client.post(
        project_url(tenant),
        json={"retention_type": "zero_data_retention"},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 200
    plain = await client.post("/v1/chat/completions", json=body, headers=key)
    assert plain.status_code == 200, plain.text
    assert plain.json()["choices"][0]["message"]["content"] == "echo: hi"
    streamed = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=key)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert await stored_completions(runtime, tenant) == 1  # only the one from before
    assert (
        await client.get(f"/v1/chat/completions/{plain.json()['id']}", headers=key)
    ).status_code == 404
    listed = await client.get("/v1/chat/completions", headers=key)
    assert [c["id"] for c in listed.json()["data"]] == [kept.json()["id"]]


async def test_the_organization_decides_unless_the_project_has_its_own(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    admin = tenant.admin_headers
    await client.post(ORG, json={"retention_type": "enhanced_zero_data_retention"}, headers=admin)
    assert (await respond(client, tenant.project_headers)).json()["store"] is False
    r = await client.post("/v1/conversations", json={}, headers=tenant.user_headers)
    assert r.status_code == 400
    await client.post(project_url(tenant), json={"retention_type": "none"}, headers=admin)
    assert (await respond(client, tenant.project_headers)).json()["store"] is True
    default = {"retention_type": "organization_default"}
    await client.post(project_url(tenant), json=default, headers=admin)
    assert (await respond(client, tenant.project_headers)).json()["store"] is False
    await client.post(ORG, json={"retention_type": "modified_abuse_monitoring"}, headers=admin)
    assert (await respond(client, tenant.project_headers)).json()["store"] is True
    r = await client.post("/v1/conversations", json={}, headers=tenant.user_headers)
    assert r.status_code == 200
