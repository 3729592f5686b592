"""The Administration API: OpenAI's shapes, roles, pagination, archived projects."""

from __future__ import annotations

import httpx

from functions.common.runtime import Runtime
from tests.factories import bearer, create_member, create_tenant


async def test_admin_keys_lifecycle(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    r = await client.post(
        "/v1/organization/admin_api_keys", json={"name": "ops"}, headers=t.admin_headers
    )
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["object"] == "organization.admin_api_key"
    assert created["value"].startswith("sk-admin-") and created["id"].startswith("key_")
    assert created["redacted_value"].endswith(created["value"][-4:])
    listed = (await client.get("/v1/organization/admin_api_keys", headers=t.admin_headers)).json()
    assert listed["object"] == "list" and len(listed["data"]) == 2
    assert all("value" not in k for k in listed["data"])
    one = await client.get(
        f"/v1/organization/admin_api_keys/{created['id']}", headers=t.admin_headers
    )
    assert one.json()["name"] == "ops"
    new_key = bearer(created["value"])
    assert (await client.get("/v1/organization/projects", headers=new_key)).status_code == 200
    gone = await client.delete(
        f"/v1/organization/admin_api_keys/{created['id']}", headers=t.admin_headers
    )
    assert gone.json() == {
        "object": "organization.admin_api_key.deleted",
        "id": created["id"],
        "deleted": True,
    }
    assert (await client.get("/v1/organization/projects", headers=new_key)).status_code == 401


async def test_projects_pagination_and_archive(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    h = t.admin_headers
    ids = []
    for n in range(3):
        r = await client.post("/v1/organization/projects", json={"name": f"p{n}"}, headers=h)
        assert r.json()["object"] == "organization.project" and r.json()["status"] == "active"
        ids.append(r.json()["id"])
    page1 = (await client.get("/v1/organization/projects?limit=2", headers=h)).json()
    assert page1["has_more"] is True and len(page1["data"]) == 2
    assert page1["first_id"] == t.project_id and page1["last_id"] == ids[0]
    page2 = (
        await client.get(f"/v1/organization/projects?limit=2&after={page1['last_id']}", headers=h)
    ).json()
    assert [p["id"] for p in page2["data"]] == ids[1:] and page2["has_more"] is False
    r = await client.post(f"/v1/organization/projects/{ids[0]}", json={"name": "x"}, headers=h)
    assert r.json()["name"] == "x"
    r = await client.post(f"/v1/organization/projects/{ids[0]}/archive", headers=h)
    assert r.json()["status"] == "archived" and r.json()["archived_at"] is not None
    for method, path, body in [
        ("POST", f"/v1/organization/projects/{ids[0]}", {"name": "y"}),
        ("POST", f"/v1/organization/projects/{ids[0]}/api_keys", {"name": "k"}),
        ("POST", f"/v1/organization/projects/{ids[0]}/service_accounts", {"name": "bot"}),
    ]:
        r = await client.request(method, path, json=body, headers=h)
        assert r.status_code == 400 and r.json()["error"]["code"] == "project_archived", path
    active = (await client.get("/v1/organization/projects", headers=h)).json()
    assert ids[0] not in [p["id"] for p in active["data"]]
    everything = await client.get("/v1/organization/projects?include_archived=true", headers=h)
    assert ids[0] in [p["id"] for p in everything.json()["data"]]
    bad = await client.get("/v1/organization/projects?limit=0", headers=h)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_project_keys_allowed_models_expiry_and_deletion(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    base = f"/v1/organization/projects/{t.project_id}/api_keys"
    r = await client.post(
        base,
        json={"name": "limited", "allowed_models": ["b", "a"], "expires_at": 4102444800},
        headers=t.admin_headers,
    )
    key = r.json()
    assert key["object"] == "organization.project.api_key" and key["value"].startswith("sk-proj-")
    assert key["allowed_models"] == ["a", "b"] and key["expires_at"] == 4102444800
    bodies: list[dict[str, object]] = [{"expires_at": 1}, {"allowed_models": "a"}]
    for body in [*bodies, {"allowed_models": []}]:
        assert (await client.post(base, json=body, headers=t.admin_headers)).status_code == 400
    listed = (await client.get(base, headers=t.admin_headers)).json()
    assert {k["id"] for k in listed["data"]} >= {key["id"]}
    assert listed["data"][0]["owner"]["type"] == "user"
    r = await client.delete(f"{base}/{key['id']}", headers=t.admin_headers)
    assert r.json()["deleted"] is True
    assert (await client.get(f"{base}/{key['id']}", headers=t.admin_headers)).status_code == 404


async def test_service_accounts(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    base = f"/v1/organization/projects/{t.project_id}/service_accounts"
    r = await client.post(base, json={"name": "bot"}, headers=t.admin_headers)
    account = r.json()
    assert account["object"] == "organization.project.service_account"
    assert account["id"].startswith("svcacct_")
    value = account["api_key"]["value"]
    assert value.startswith("sk-svcacct-")
    keys = (
        await client.get(
            f"/v1/organization/projects/{t.project_id}/api_keys", headers=t.admin_headers
        )
    ).json()
    owners = [k["owner"]["type"] for k in keys["data"]]
    assert "service_account" in owners
    # A service account key is a project credential: refused on the Administration API.
    r = await client.get("/v1/organization/projects", headers=bearer(value))
    assert r.status_code == 403
    await client.delete(f"{base}/{account['id']}", headers=t.admin_headers)
    assert (await client.get(f"{base}/{account['id']}", headers=t.admin_headers)).status_code == 404
    r = await client.get("/v1/organization/projects", headers=bearer(value))
    assert r.status_code == 401


async def test_users_roles_and_project_members(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    reader_id, reader = await create_member(runtime, t, org_role="reader", project_role=None)
    rh = bearer(reader)
    users = (await client.get("/v1/organization/users", headers=rh)).json()
    assert {u["id"] for u in users["data"]} == {t.owner_user_id, reader_id}
    assert users["data"][0]["object"] == "organization.user"
    r = await client.post("/v1/organization/projects", json={"name": "no"}, headers=rh)
    assert r.status_code == 403
    r = await client.post(
        f"/v1/organization/users/{t.owner_user_id}",
        json={"role": "reader"},
        headers=t.admin_headers,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "last_owner"
    r = await client.post(
        f"/v1/organization/users/{reader_id}", json={"role": "owner"}, headers=t.admin_headers
    )
    assert r.json()["role"] == "owner"
    pbase = f"/v1/organization/projects/{t.project_id}/users"
    r = await client.post(
        pbase, json={"user_id": reader_id, "role": "member"}, headers=t.admin_headers
    )
    assert r.json()["object"] == "organization.project.user" and r.json()["role"] == "member"
    r = await client.post(f"{pbase}/{reader_id}", json={"role": "owner"}, headers=t.admin_headers)
    assert r.json()["role"] == "owner"
    outsider = await create_tenant(runtime)
    r = await client.post(
        pbase, json={"user_id": outsider.owner_user_id, "role": "member"}, headers=t.admin_headers
    )
    assert r.status_code == 400
    assert (await client.delete(f"{pbase}/{reader_id}", headers=t.admin_headers)).json()["deleted"]
    r = await client.delete(f"/v1/organization/users/{reader_id}", headers=t.admin_headers)
    assert r.json()["deleted"] is True
    assert (await client.get("/v1/organization/users", headers=rh)).status_code == 403


async def test_invites_and_verification(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    invitee = await create_tenant(runtime)  # an existing user elsewhere, with an e-mail
    r = await client.post(
        "/v1/organization/invites",
        json={
            "email": invitee.owner_email,
            "role": "reader",
            "projects": [{"id": t.project_id, "role": "member"}],
        },
        headers=t.admin_headers,
    )
    invite = r.json()
    assert invite["object"] == "organization.invite" and invite["id"].startswith("invite-")
    assert invite["status"] == "pending" and invite["code"]
    dup = await client.post(
        "/v1/organization/invites",
        json={"email": invitee.owner_email, "role": "reader"},
        headers=t.admin_headers,
    )
    assert dup.status_code == 409
    listed = (await client.get("/v1/organization/invites", headers=t.admin_headers)).json()
    assert [i["id"] for i in listed["data"]] == [invite["id"]] and "code" not in listed["data"][0]
    wrong_user = await client.post(
        "/v1/organization/invites/verification",
        json={"code": invite["code"]},
        headers=bearer(t.access_token),
    )
    assert wrong_user.status_code == 403
    ok = await client.post(
        "/v1/organization/invites/verification",
        json={"code": invite["code"]},
        headers=bearer(invitee.access_token),
    )
    assert ok.status_code == 200 and ok.json()["status"] == "accepted"
    again = await client.post(
        "/v1/organization/invites/verification",
        json={"code": invite["code"]},
        headers=bearer(invitee.access_token),
    )
    assert again.status_code == 404
    as_member = bearer(invitee.access_token, **{"OpenAI-Organization": t.organization_id})
    users = (await client.get("/v1/organization/users", headers=as_member)).json()
    assert invitee.owner_user_id in {u["id"] for u in users["data"]}
    in_project = bearer(invitee.access_token, **{"OpenAI-Project": t.project_id})
    me = (await client.get("/v1/auth/me", headers=in_project)).json()
    assert {"id": t.organization_id, "role": "reader"} in me["organizations"]
    r = await client.delete(f"/v1/organization/invites/{invite['id']}", headers=t.admin_headers)
    assert r.status_code == 400


async def test_bad_bodies_are_400_not_500(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    h = t.admin_headers
    for path, content in [
        ("/v1/organization/projects", b"{"),
        ("/v1/organization/projects", b"[]"),
        ("/v1/organization/projects", b'{"name": 5}'),
        ("/v1/organization/admin_api_keys", b"{}"),
        ("/v1/organization/invites", b'{"email": "nope", "role": "reader"}'),
        ("/v1/organization/invites", b'{"email": "a@b.c", "role": "god"}'),
        ("/v1/organization/invites", b'{"email": "a@b.c", "role": "reader", "projects": [1]}'),
    ]:
        r = await client.post(path, content=content, headers=h)
        assert r.status_code == 400, (path, content, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"


async def test_removed_users_keys_stop_at_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    project = f"/v1/organization/projects/{t.project_id}"
    for removal in (f"{project}/users/{{}}", "/v1/organization/users/{}"):
        user_id, token = await create_member(runtime, t, org_role="reader", project_role="owner")
        made = await client.post(f"{project}/api_keys", json={"name": "k"}, headers=bearer(token))
        key = bearer(made.json()["value"])
        assert (await client.get("/v1/conversations", headers=key)).status_code == 200  # cached
        r = await client.delete(removal.format(user_id), headers=t.admin_headers)
        assert r.json()["deleted"] is True
        assert (await client.get("/v1/conversations", headers=key)).status_code == 401, removal
