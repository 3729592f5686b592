"""`item_reference` input items: a copy of the caller's stored item (a response's input or
output item, a conversation's item) stands in for the reference; anyone else's item is
as unknown as a made-up ID."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conversations.tenants import Tenant
from tests.responses.helpers import create
from tests.responses.upstream import MODEL, ScriptedUpstream


def ref(item_id: str) -> dict[str, str]:
    return {"type": "item_reference", "id": item_id}


async def _input_items(client: httpx.AsyncClient, headers: dict[str, str], response_id: str) -> Any:
    r = await client.get(
        f"/v1/responses/{response_id}/input_items", params={"order": "asc"}, headers=headers
    )
    return r.json()["data"]


async def test_references_to_response_and_conversation_items(
    client: httpx.AsyncClient, tenant: Tenant, upstream: ScriptedUpstream
) -> None:
    first = await create(client, tenant.user, input="My name is Ada.")
    [said] = await _input_items(client, tenant.user, first["id"])
    answer = first["output"][0]
    conv = (
        await client.post(
            "/v1/conversations",
            json={"items": [{"role": "system", "content": "Be terse."}]},
            headers=tenant.user,
        )
    ).json()
    listed = await client.get(f"/v1/conversations/{conv['id']}/items", headers=tenant.user)
    [rule] = listed.json()["data"]

    second = await create(
        client,
        tenant.user,
        input=[
            ref(rule["id"]),
            ref(said["id"]),
            {"id": answer["id"]},  # OpenAI lets a reference leave out its type
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert upstream.requests[-1]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "echo: My name is Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    copies = await _input_items(client, tenant.user, second["id"])
    assert [c["content"] for c in copies[:3]] == [
        rule["content"],
        said["content"],
        answer["content"],
    ]
    assert {c["id"] for c in copies}.isdisjoint({rule["id"], said["id"], answer["id"]})

    # A conversation takes references too, even to items already in it.
    added = await client.post(
        f"/v1/conversations/{conv['id']}/items",
        json={"items": [ref(answer["id"]), ref(rule["id"])]},
        headers=tenant.user,
    )
    assert added.status_code == 200, added.text
    assert [i["content"] for i in added.json()["data"]] == [answer["content"], rule["content"]]
    # The project key sees every item of its project.
    by_key = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": [ref(said["id"])]},
        headers=tenant.key,
    )
    assert by_key.status_code == 200, by_key.text


async def test_references_reveal_nothing_of_others(
    client: httpx.AsyncClient, tenant: Tenant, stranger: Tenant, upstream: ScriptedUpstream
) -> None:
    theirs = await create(client, tenant.other_user, input="secret")
    [their_input] = await _input_items(client, tenant.other_user, theirs["id"])
    far = await create(client, stranger.user, input="far away")
    conv = (await client.post("/v1/conversations", json={}, headers=tenant.user)).json()
    sent = len(upstream.requests)
    for item_id in (theirs["output"][0]["id"], their_input["id"], far["output"][0]["id"], "msg_x"):
        r = await client.post(
            "/v1/responses",
            json={"model": MODEL, "input": [{"role": "user", "content": "hi"}, ref(item_id)]},
            headers=tenant.user,
        )
        assert r.status_code == 404, r.text
        assert r.json()["error"]["message"] == f"Item with id '{item_id}' not found."
        assert r.json()["error"]["param"] == "input[1].id"
        added = await client.post(
            f"/v1/conversations/{conv['id']}/items",
            json={"items": [ref(item_id)]},
            headers=tenant.user,
        )
        assert added.status_code == 404 and added.json()["error"]["param"] == "items[0].id"
    assert len(upstream.requests) == sent
    bad = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": [{"type": "item_reference", "id": 7}]},
        headers=tenant.user,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].id"
