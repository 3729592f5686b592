"""Who may set which daily tool-call quota, and that the quota they get is the one enforced.

The server here: 10 calls a day by default, at most 100 for any project, 3 for a guest's.
Guests own their personal project, so project-owner rights alone must not lift the quota.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import mcp_types as types
import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.toolbox import store
from functions.services.toolbox.toolbox import ToolBox
from tests.conftest import component, make_settings
from tests.factories import bearer, create_member, create_tenant
from tests.mcp.test_mcp_endpoint import connect
from tests.tools.fakes import SERPER_KEY, FakeSerper

DEFAULT, SERVER_MAX, GUEST = 10, 100, 3


@pytest.fixture
def settings(database_dsn: str, serper: tuple[FakeSerper, str]) -> Settings:
    return make_settings(
        database_dsn,
        serper_url=serper[1],
        serper_api_key=SERPER_KEY,
        jan_tool_timeout_seconds=2.0,
        jan_tool_calls_per_day=DEFAULT,
        jan_tool_calls_per_day_max=SERVER_MAX,
        jan_guest_tool_calls_per_day=GUEST,
    )


async def _set(client: httpx.AsyncClient, headers: dict[str, str], quota: Any) -> httpx.Response:
    return await client.post("/v1/mcp/settings", json={"daily_call_quota": quota}, headers=headers)


def _refused(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == "daily_call_quota" and error["type"] == "invalid_request_error"


async def _guest(client: httpx.AsyncClient) -> dict[str, str]:
    session = (await client.post("/v1/auth/guest-login")).json()
    assert session["user"]["is_guest"] is True
    return bearer(session["access_token"])


async def test_guest_cannot_lift_its_quota(client: httpx.AsyncClient) -> None:
    guest = await _guest(client)
    initial = (await client.get("/v1/mcp/settings", headers=guest)).json()
    assert initial["daily_call_quota"] is None and initial["effective_daily_call_quota"] == GUEST
    _refused(await _set(client, guest, 0), 400)  # unlimited: not on this server at all
    _refused(await _set(client, guest, 10_000_000), 400)
    _refused(await _set(client, guest, SERVER_MAX), 403)  # allowed for others, not guests
    _refused(await _set(client, guest, GUEST + 1), 403)
    after = (await client.get("/v1/mcp/settings", headers=guest)).json()
    assert after["daily_call_quota"] is None and after["effective_daily_call_quota"] == GUEST
    lowered = await _set(client, guest, GUEST - 1)  # lowering is fine
    assert lowered.status_code == 200, lowered.text
    assert lowered.json()["effective_daily_call_quota"] == GUEST - 1


async def test_project_owners_only_lower_below_the_org_owners_ceiling(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    org_owner = tenant.user_headers
    _, token = await create_member(runtime, tenant, project_role="owner")
    project_owner = bearer(token, **{"OpenAI-Project": tenant.project_id})

    # No organization owner's ceiling yet: the operator's is the limit for project owners.
    _refused(await _set(client, project_owner, SERVER_MAX + 1), 400)
    _refused(await _set(client, project_owner, 0), 400)
    # The organization owner raises the project up to the operator's ceiling, no further.
    _refused(await _set(client, org_owner, SERVER_MAX + 1), 400)
    _refused(await _set(client, org_owner, 0), 400)  # the operator does not allow unlimited
    raised = await _set(client, org_owner, 60)
    assert raised.status_code == 200 and raised.json()["effective_daily_call_quota"] == 60
    # That is now the ceiling for the project's owners: lower, back up to it, not above.
    lowered = await _set(client, project_owner, 20)
    assert lowered.status_code == 200 and lowered.json()["effective_daily_call_quota"] == 20
    _refused(await _set(client, project_owner, 61), 403)
    assert (await _set(client, project_owner, 60)).status_code == 200
    # null: back to what the organization owner set, not the server default.
    reset = await _set(client, project_owner, None)
    assert reset.status_code == 200
    assert reset.json()["daily_call_quota"] is None
    assert reset.json()["effective_daily_call_quota"] == 60
    # The organization owner lowers the ceiling; the project owner cannot undo it.
    assert (await _set(client, org_owner, 5)).status_code == 200
    _refused(await _set(client, project_owner, 6), 403)
    assert (await _set(client, org_owner, SERVER_MAX)).status_code == 200


async def test_unlimited_only_by_org_owners_where_the_operator_allows(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    box = component(runtime, ToolBox)
    box.limits = dataclasses.replace(box.limits, max_daily_calls=0)  # operator: no ceiling
    tenant = await create_tenant(runtime)
    _, token = await create_member(runtime, tenant, project_role="owner")
    project_owner = bearer(token, **{"OpenAI-Project": tenant.project_id})
    guest = await _guest(client)
    _refused(await _set(client, project_owner, 0), 403)
    _refused(await _set(client, guest, 0), 403)
    _refused(await _set(client, guest, 10_000_000), 403)
    unlimited = await _set(client, tenant.user_headers, 0)
    assert unlimited.status_code == 200 and unlimited.json()["effective_daily_call_quota"] == 0
    # The project owner may still set a (finite) quota, and null returns to unlimited.
    assert (await _set(client, project_owner, 10_000_000)).status_code == 200
    back = await _set(client, project_owner, None)
    assert back.json()["effective_daily_call_quota"] == 0


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def test_the_guest_quota_is_what_calls_get(app_url: str, runtime: Runtime) -> None:
    async with httpx.AsyncClient(base_url=app_url) as http:
        session = (await http.post("/v1/auth/guest-login")).json()
    guest = bearer(session["access_token"])
    project_id = session["user"]["default_project_id"]
    organization_id = await runtime.db.writer.fetchval(
        "SELECT organization_id FROM projects WHERE id = $1", project_id
    )
    # A value stored before this fix (any project owner could set 0) is held to the cap.
    await store.put_settings(
        runtime.db.writer,
        organization_id=organization_id,
        project_id=project_id,
        settings=store.ProjectToolSettings(enabled_tools=None, daily_call_quota=0),
    )
    async with connect(f"{app_url}/v1/mcp", guest, "legacy") as client:
        for _ in range(GUEST):
            done = await client.call_tool("google_search", {"q": "jan"})
            assert not done.is_error, _text(done)
        refused = await client.call_tool("google_search", {"q": "jan"})
        assert refused.is_error and f"used its {GUEST} tool calls" in _text(refused)
    async with httpx.AsyncClient(base_url=app_url) as http:
        shown = (await http.get("/v1/mcp/settings", headers=guest)).json()
    assert shown["effective_daily_call_quota"] == GUEST and shown["calls_today"] == GUEST
