"""The Conversations API over ASGI against real PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from functions.common.settings import Settings
from tests.conversations.tenants import Tenant


async def _create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> Any:
    r = await client.post("/v1/conversations", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_create_get_update_delete(client: httpx.AsyncClient, tenant: Tenant) -> None:
    conv = await _create(
        client,
        tenant.user,
        metadata={"topic": "demo"},
        items=[{"role": "user", "content": "Hello there"}],
    )
    assert conv["object"] == "conversation" and conv["id"].startswith("conv_")
    assert conv["metadata"] == {"topic": "demo"} and isinstance(conv["created_at"], int)

    got = await client.get(f"/v1/conversations/{conv['id']}", headers=tenant.user)
    assert got.json() == conv

    updated = await client.post(
        f"/v1/conversations/{conv['id']}", json={"metadata": {"topic": "x"}}, headers=tenant.user
    )
    assert updated.status_code == 200 and updated.json()["metadata"] == {"topic": "x"}

    deleted = await client.delete(f"/v1/conversations/{conv['id']}", headers=tenant.user)
    assert deleted.json() == {"id": conv["id"], "object": "conversation.deleted", "deleted": True}
    again = await client.get(f"/v1/conversations/{conv['id']}", headers=tenant.user)
    assert again.status_code == 404 and again.json()["error"]["type"] == "invalid_request_error"


async def test_deleting_a_conversation_deletes_its_items(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> None:
    conv = await _create(client, tenant.user, items=[{"role": "user", "content": "a"}] * 3)
    await client.delete(f"/v1/conversations/{conv['id']}", headers=tenant.user)
    assert settings.db_postgresql_write_dsn is not None
    conn = await asyncpg.connect(settings.db_postgresql_write_dsn.get_secret_value())
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM conversation_items WHERE conversation_id = $1", conv["id"]
        )
    finally:
        await conn.close()
    assert left == 0


async def test_items_are_normalised_and_paginated(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    conv = await _create(client, tenant.user)
    url = f"/v1/conversations/{conv['id']}/items"
    batch = [
        {"role": "user", "content": "q1"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "a1"}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        {"role": "user", "content": [{"type": "input_text", "text": "q2"}]},
    ]
    added = (await client.post(url, json={"items": batch}, headers=tenant.user)).json()
    assert added["object"] == "list" and len(added["data"]) == 5 and added["has_more"] is False
    first = added["data"][0]
    assert first["type"] == "message" and first["status"] == "completed"
    assert first["content"] == [{"type": "input_text", "text": "q1"}]
    assert added["data"][1]["content"][0] == {
        "type": "output_text",
        "text": "a1",
        "annotations": [],
        "logprobs": [],
    }
    assert added["data"][2]["id"].startswith("fc_") and added["data"][3]["output"] == "42"
    ids = [i["id"] for i in added["data"]]

    # Default order is newest first, as OpenAI's.
    page = (await client.get(url, params={"limit": 2}, headers=tenant.user)).json()
    assert [i["id"] for i in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    nxt = (
        await client.get(url, params={"limit": 2, "after": page["last_id"]}, headers=tenant.user)
    ).json()
    assert [i["id"] for i in nxt["data"]] == ids[::-1][2:4]

    asc = (await client.get(url, params={"order": "asc", "limit": 100}, headers=tenant.user)).json()
    assert [i["id"] for i in asc["data"]] == ids and asc["has_more"] is False
    assert asc["first_id"] == ids[0] and asc["last_id"] == ids[-1]

    one = await client.get(f"{url}/{ids[2]}", headers=tenant.user)
    assert one.json()["name"] == "lookup"
    gone = await client.delete(f"{url}/{ids[2]}", headers=tenant.user)
    assert gone.json()["object"] == "conversation" and gone.json()["id"] == conv["id"]
    assert (await client.get(f"{url}/{ids[2]}", headers=tenant.user)).status_code == 404
    assert (await client.delete(f"{url}/{ids[2]}", headers=tenant.user)).status_code == 404


async def test_malformed_items_are_400_with_param(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    conv = await _create(client, tenant.user)
    url = f"/v1/conversations/{conv['id']}/items"
    cases: list[tuple[Any, str]] = [
        ({"items": "nope"}, "items"),
        ({"items": [{"role": "wizard", "content": "x"}]}, "items[0].role"),
        ({"items": [{"role": "user", "content": 5}]}, "items[0].content"),
        (
            {"items": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "items[0].content[0].text",
        ),
        (
            {"items": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "items[0].call_id",
        ),
        ({"items": [{"type": "teleport"}]}, "items[0].type"),
        ({"items": [{"role": "user", "content": "x"}] * 21}, "items"),
        ({}, "items"),
    ]
    for body, param in cases:
        r = await client.post(url, json=body, headers=tenant.user)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, r.json()
    bad_meta = await client.post(
        "/v1/conversations", json={"metadata": {"k": 1}}, headers=tenant.user
    )
    assert bad_meta.status_code == 400 and bad_meta.json()["error"]["param"] == "metadata.k"
    bad_after = await client.get(url, params={"after": "msg_nope"}, headers=tenant.user)
    assert bad_after.status_code == 400 and bad_after.json()["error"]["param"] == "after"
    bad_include = await client.get(url, params={"include": "x.y"}, headers=tenant.user)
    assert bad_include.status_code == 400 and bad_include.json()["error"]["param"] == "include"
    # OpenAI's, but nothing a self-hosted model has: refused, not silently dropped.
    unhonoured = {"include": "reasoning.encrypted_content"}
    refused = await client.get(url, params=unhonoured, headers=tenant.user)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "include"
    assert "reasoning.encrypted_content" in refused.json()["error"]["message"]
    honoured = {"include": "message.output_text.logprobs"}
    assert (await client.get(url, params=honoured, headers=tenant.user)).status_code == 200


async def test_listing_is_newest_first_with_titles(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = await _create(
        client, tenant.user, items=[{"role": "user", "content": "  Plan a\n trip "}]
    )
    untitled = await _create(client, tenant.user)
    third = await _create(client, tenant.user, items=[{"role": "system", "content": "s"}])
    await client.post(
        f"/v1/conversations/{third['id']}/items",
        json={"items": [{"role": "user", "content": "x" * 200}]},
        headers=tenant.user,
    )
    page = (await client.get("/v1/conversations", params={"limit": 2}, headers=tenant.user)).json()
    assert [c["id"] for c in page["data"]] == [third["id"], untitled["id"]]
    assert page["has_more"] is True
    assert page["data"][0]["title"] == "x" * 79 + "…" and page["data"][1]["title"] is None
    rest = (
        await client.get(
            "/v1/conversations", params={"after": page["last_id"]}, headers=tenant.user
        )
    ).json()
    assert [c["id"] for c in rest["data"]] == [first["id"]] and rest["has_more"] is False
    assert rest["data"][0]["title"] == "Plan a trip"
    gone = await client.get("/v1/conversations", params={"after": "conv_nope"}, headers=tenant.user)
    assert gone.status_code == 400 and gone.json()["error"]["param"] == "after"


async def test_nothing_crosses_users_or_tenants(
    client: httpx.AsyncClient, tenant: Tenant, stranger: Tenant
) -> None:
    conv = await _create(client, tenant.user, items=[{"role": "user", "content": "secret"}])
    item_id = (
        await client.get(f"/v1/conversations/{conv['id']}/items", headers=tenant.user)
    ).json()["first_id"]
    base = f"/v1/conversations/{conv['id']}"
    for headers in (tenant.other_user, stranger.user, stranger.key):
        for method, path, body in (
            ("GET", base, None),
            ("POST", base, {"metadata": {}}),
            ("GET", f"{base}/items", None),
            ("POST", f"{base}/items", {"items": [{"role": "user", "content": "x"}]}),
            ("GET", f"{base}/items/{item_id}", None),
            ("DELETE", f"{base}/items/{item_id}", None),
            ("DELETE", base, None),
        ):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status_code == 404, (method, path, r.text)
        listed = (await client.get("/v1/conversations", headers=headers)).json()
        assert listed["data"] == []
    # A project key sees its project's conversations, including users' ones.
    assert (await client.get(base, headers=tenant.key)).status_code == 200
    listed = (await client.get("/v1/conversations", headers=tenant.key)).json()
    assert [c["id"] for c in listed["data"]] == [conv["id"]]
    # Nothing was changed by the refused calls.
    items = (await client.get(f"{base}/items", headers=tenant.user)).json()
    assert [i["id"] for i in items["data"]] == [item_id]


async def test_credentials_are_required(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/conversations")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
