"""OpenAI's project roles on the Administration API: a project's owners manage its users,
service accounts and API keys even as organization readers; its members read it; nobody's
project rights reach another project."""

from __future__ import annotations

import httpx

from functions.common.runtime import Runtime
from tests.factories import bearer, create_member, create_project, create_tenant

P = "/v1/organization/projects"


async def test_project_owner_manages_own_project_only(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    mine = await create_project(runtime, t, name="mine")
    _, token = await create_member(
        runtime, t, org_role="reader", project_role="owner", project_id=mine
    )
    h = bearer(token)
    colleague, _ = await create_member(runtime, t, org_role="reader", project_role=None)
    # Users: add, change role, remove.
    r = await client.post(
        f"{P}/{mine}/users", json={"user_id": colleague, "role": "member"}, headers=h
    )
    assert r.status_code == 200 and r.json()["role"] == "member"
    r = await client.post(f"{P}/{mine}/users/{colleague}", json={"role": "owner"}, headers=h)
    assert r.status_code == 200 and r.json()["role"] == "owner"
    assert (await client.delete(f"{P}/{mine}/users/{colleague}", headers=h)).json()["deleted"]
    # Service accounts and API keys.
    sa = await client.post(f"{P}/{mine}/service_accounts", json={"name": "bot"}, headers=h)
    assert sa.status_code == 200 and sa.json()["api_key"]["value"].startswith("sk-svcacct-")
    key = await client.post(f"{P}/{mine}/api_keys", json={"name": "k"}, headers=h)
    assert key.status_code == 200 and key.json()["owner"]["user"]["role"] == "owner"
    listed = (await client.get(f"{P}/{mine}/api_keys", headers=h)).json()
    assert {k["id"] for k in listed["data"]} >= {key.json()["id"]}
    r = await client.delete(f"{P}/{mine}/api_keys/{key.json()['id']}", headers=h)
    assert r.json()["deleted"] is True
    r = await client.delete(f"{P}/{mine}/service_accounts/{sa.json()['id']}", headers=h)
    assert r.json()["deleted"] is True
    # Not the project itself (organization owners rename and archive), nor the organization.
    for path in (f"{P}/{mine}", f"{P}/{mine}/archive"):
        r = await client.post(path, json={"name": "renamed"}, headers=h)
        assert r.status_code == 403, path
    assert (await client.post(P, json={"name": "new"}, headers=h)).status_code == 403
    # Another project of the organization: readable as a reader, never writable.
    other = f"{P}/{t.project_id}"
    assert (await client.get(f"{other}/api_keys", headers=h)).status_code == 200
    for path, body in [
        (f"{other}/api_keys", {"name": "k"}),
        (f"{other}/service_accounts", {"name": "bot"}),
        (f"{other}/users", {"user_id": colleague, "role": "member"}),
    ]:
        r = await client.post(path, json=body, headers=h)
        assert r.status_code == 403 and "error" in r.json(), path


async def test_project_member_reads_own_project(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    mine = await create_project(runtime, t, name="mine")
    member_id, token = await create_member(runtime, t, project_role="member", project_id=mine)
    h = bearer(token)  # in the project only, not in the organization
    assert (await client.get(f"{P}/{mine}", headers=h)).json()["id"] == mine
    users = (await client.get(f"{P}/{mine}/users", headers=h)).json()
    assert member_id in {u["id"] for u in users["data"]}
    for tail in ("/api_keys", "/service_accounts"):
        assert (await client.get(f"{P}/{mine}{tail}", headers=h)).status_code == 200
    # Lists show their projects only; the organization's other project does not exist.
    listed = (await client.get(P, headers=h)).json()
    assert [p["id"] for p in listed["data"]] == [mine]
    assert (await client.get(f"{P}/{t.project_id}", headers=h)).status_code == 404
    # Reading is all.
    for path, body in [
        (f"{P}/{mine}/api_keys", {"name": "k"}),
        (f"{P}/{mine}/service_accounts", {"name": "bot"}),
        (f"{P}/{mine}/users/{member_id}", {"role": "owner"}),
    ]:
        assert (await client.post(path, json=body, headers=h)).status_code == 403, path
    assert (await client.get("/v1/organization/users", headers=h)).status_code == 403


async def test_project_owner_without_organization_role_and_guests(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    mine = await create_project(runtime, t, name="mine")
    _, token = await create_member(runtime, t, project_role="owner", project_id=mine)
    h = bearer(token)
    r = await client.post(f"{P}/{mine}/api_keys", json={"name": "k"}, headers=h)
    assert r.status_code == 200 and r.json()["value"].startswith("sk-proj-")
    r = await client.post(f"{P}/{t.project_id}/api_keys", json={"name": "k"}, headers=h)
    assert r.status_code == 404
    # Archived by the organization owner: the project owner can still read, not write.
    await client.post(f"{P}/{mine}/archive", headers=t.admin_headers)
    assert (await client.get(f"{P}/{mine}/api_keys", headers=h)).status_code == 200
    r = await client.post(f"{P}/{mine}/api_keys", json={"name": "k"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "project_archived"
    # A guest owns its own project but administers nothing.
    guest = (await client.post("/v1/auth/guest-login")).json()
    gh = bearer(guest["access_token"])
    own = guest["user"]["default_project_id"]
    for method, path in [("GET", f"{P}/{own}"), ("POST", f"{P}/{own}/api_keys"), ("GET", P)]:
        r = await client.request(method, path, json={}, headers=gh)
        assert r.status_code == 403, path
