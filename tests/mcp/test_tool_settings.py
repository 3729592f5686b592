"""/v1/mcp/settings: read by the project, changed by owners, applied to tool calls."""

from __future__ import annotations

import httpx

from functions.common.runtime import Runtime
from tests.factories import Tenant, create_member, create_tenant


async def test_owner_changes_settings_and_members_read_them(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant: Tenant = await create_tenant(runtime)
    initial = await client.get("/v1/mcp/settings", headers=tenant.project_headers)
    assert initial.status_code == 200
    assert initial.json() == {
        "object": "project.tool_settings",
        "project_id": tenant.project_id,
        "enabled_tools": ["web_search", "fetch"],
        "daily_call_quota": None,
        "effective_daily_call_quota": 1000,
        "calls_today": 0,
        "tools": ["google_search", "scrape", "fetch_webpage"],
    }
    changed = await client.post(
        "/v1/mcp/settings",
        json={"enabled_tools": ["web_search"], "daily_call_quota": 50},
        headers=tenant.user_headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["enabled_tools"] == ["web_search"] and body["tools"] == ["google_search"]
    assert body["daily_call_quota"] == 50 == body["effective_daily_call_quota"]
    partial = await client.post(
        "/v1/mcp/settings", json={"daily_call_quota": None}, headers=tenant.user_headers
    )
    assert partial.json()["enabled_tools"] == ["web_search"]  # untouched
    assert partial.json()["daily_call_quota"] is None

    _, member_token = await create_member(runtime, tenant, project_role="member")
    member = {"Authorization": f"Bearer {member_token}", "OpenAI-Project": tenant.project_id}
    assert (await client.get("/v1/mcp/settings", headers=member)).status_code == 200
    refused = await client.post("/v1/mcp/settings", json={"enabled_tools": []}, headers=member)
    assert refused.status_code == 403
    by_key = await client.post(
        "/v1/mcp/settings", json={"enabled_tools": []}, headers=tenant.project_headers
    )
    assert by_key.status_code == 403


async def test_invalid_settings_are_400(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    for body, param in (
        ({"enabled_tools": ["shell"]}, "enabled_tools"),
        ({"enabled_tools": "fetch"}, "enabled_tools"),
        ({"daily_call_quota": -1}, "daily_call_quota"),
        ({"daily_call_quota": True}, "daily_call_quota"),
    ):
        r = await client.post("/v1/mcp/settings", json=body, headers=tenant.user_headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    other = await create_tenant(runtime)
    cross = await client.get(
        "/v1/mcp/settings",
        headers={
            "Authorization": f"Bearer {other.access_token}",
            "OpenAI-Project": tenant.project_id,
        },
    )
    assert cross.status_code == 404  # another tenant's project does not exist for them
