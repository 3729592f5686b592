"""authenticate(): every credential kind resolves to the right Principal, or is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt

from functions.common.runtime import Runtime
from tests.factories import (
    access_token_for,
    bearer,
    create_member,
    create_project,
    create_project_key,
    create_tenant,
)


async def test_project_admin_and_user_credentials(
    whoami: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    proj = (await whoami.get("/whoami", headers=t.project_headers)).json()
    assert proj["kind"] == "project_key"
    assert (proj["organization_id"], proj["project_id"]) == (t.organization_id, t.project_id)
    assert proj["allowed_models"] is None and proj["api_key_id"].startswith("key_")
    admin = (await whoami.get("/whoami", headers=t.admin_headers)).json()
    assert admin["kind"] == "admin_key" and admin["project_id"] is None
    assert admin["org_role"] == "owner"
    user = (await whoami.get("/whoami", headers=t.user_headers)).json()
    assert user["kind"] == "user" and user["user_id"] == t.owner_user_id
    assert user["project_role"] == "owner" and user["org_role"] == "owner"
    default = (await whoami.get("/whoami", headers=bearer(t.access_token))).json()
    assert default["project_id"] == t.project_id


async def test_key_with_allowed_models_and_expiry(
    whoami: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    limited = await create_project_key(runtime, t, allowed_models=["m1", "m2"])
    r = await whoami.get("/whoami", headers=bearer(limited))
    assert r.json()["allowed_models"] == ["m1", "m2"]
    expired = await create_project_key(
        runtime, t, expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    r = await whoami.get("/whoami", headers=bearer(expired))
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_expired"


async def test_bad_credentials_are_401(whoami: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    assert runtime.settings.jwt_secret is not None
    secret = runtime.settings.jwt_secret.get_secret_value()
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": t.owner_user_id, "typ": "access", "iss": "jan-server", "iat": now}
    claims["exp"] = now + 60
    cases = {
        "none": {},
        "basic": {"Authorization": "Basic abc"},
        "unknown key": bearer("sk-proj-" + "A" * 43),
        "garbage": bearer("not-a-token"),
        "alg none": bearer(jwt.encode(claims, "", algorithm="none")),
        "other secret": bearer(jwt.encode(claims, "another-secret-0123456789abcdef0123")),
        "wrong type": bearer(jwt.encode({**claims, "typ": "refresh"}, secret)),
        "expired": bearer(jwt.encode({**claims, "exp": now - 10}, secret)),
    }
    for name, headers in cases.items():
        r = await whoami.get("/whoami", headers=headers)
        assert r.status_code == 401, name
        assert r.json()["error"]["type"] == "invalid_request_error", name


async def test_user_project_selection(whoami: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await create_tenant(runtime)
    other = await create_tenant(runtime)
    second = await create_project(runtime, t)
    r = await whoami.get("/whoami", headers=bearer(t.access_token, **{"OpenAI-Project": second}))
    assert r.json()["project_id"] == second
    foreign = bearer(t.access_token, **{"OpenAI-Project": other.project_id})
    assert (await whoami.get("/whoami", headers=foreign)).status_code == 404
    foreign_org = bearer(t.access_token, **{"OpenAI-Organization": other.organization_id})
    assert (await whoami.get("/whoami", headers=foreign_org)).status_code == 404
    _, member = await create_member(runtime, t)
    m = (await whoami.get("/whoami", headers=bearer(member))).json()
    assert (m["project_role"], m["org_role"]) == ("member", None)
    blocked = bearer(member, **{"OpenAI-Project": second})
    assert (await whoami.get("/whoami", headers=blocked)).status_code == 404


async def test_admin_api_key_limits_reach_the_principal(
    client: httpx.AsyncClient, whoami: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    expires_at = int(datetime.now(UTC).timestamp()) + 3600
    created = await client.post(
        f"/v1/organization/projects/{t.project_id}/api_keys",
        json={"name": "limited", "allowed_models": ["m2", "m1"], "expires_at": expires_at},
        headers=t.admin_headers,
    )
    p = (await whoami.get("/whoami", headers=bearer(created.json()["value"]))).json()
    assert p["kind"] == "project_key" and p["project_id"] == t.project_id
    assert p["allowed_models"] == ["m1", "m2"] and p["api_key_id"] == created.json()["id"]


async def test_each_key_kind_only_on_its_own_api(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await create_tenant(runtime)
    for path in ("/v1/conversations", "/v1/models"):
        r = await client.get(path, headers=t.admin_headers)
        assert r.status_code == 403 and "Administration API" in r.json()["error"]["message"], path
    assert (await client.get("/v1/conversations", headers=t.project_headers)).status_code == 200
    r = await client.get("/v1/organization/projects", headers=t.project_headers)
    assert r.status_code == 403


def test_bearer_credential_parsing() -> None:
    from starlette.requests import Request

    from functions.services.identity import bearer_credential

    def header(value: str) -> Request:
        return Request({"type": "http", "headers": [(b"authorization", value.encode())]})

    assert bearer_credential(header("Bearer abc")) == "abc"
    assert bearer_credential(header("bearer  abc ")) == "abc"  # scheme is case-insensitive
    for refused in ("Basic abc", "Bearer", "Bearer   ", "abc"):
        assert bearer_credential(header(refused)) is None, refused
    assert bearer_credential(Request({"type": "http", "headers": []})) is None


async def test_user_principal_edge_cases(whoami: httpx.AsyncClient, runtime: Runtime) -> None:
    from functions.services import tenancy
    from functions.services.identity import Identity
    from tests.conftest import component

    t = await create_tenant(runtime)
    other = await create_tenant(runtime)
    async with runtime.db.writer.acquire() as conn:
        unjoined = await tenancy.create_project(conn, organization_id=t.organization_id, name="u")
        await tenancy.set_organization_role(
            conn, organization_id=t.organization_id, user_id=other.owner_user_id, role="reader"
        )
        loner = await tenancy.create_user(conn, email="loner@example.test")
        await tenancy.set_organization_role(
            conn, organization_id=other.organization_id, user_id=loner["id"], role="reader"
        )

    async def whoami_as(token: str, **headers: str) -> httpx.Response:
        return await whoami.get("/whoami", headers=bearer(token, **headers))

    # An organization owner acts as owner in a project of theirs without being its member.
    p = (await whoami_as(t.access_token, **{"OpenAI-Project": unjoined["id"]})).json()
    assert (p["project_id"], p["project_role"]) == (unjoined["id"], "owner")
    # A default project elsewhere does not follow the user into the organization they name.
    p = (await whoami_as(other.access_token, **{"OpenAI-Organization": t.organization_id})).json()
    assert (p["organization_id"], p["project_id"], p["org_role"]) == (
        t.organization_id,
        None,
        "reader",
    )
    # A project and an organization that do not belong together.
    mismatch = {"OpenAI-Project": t.project_id, "OpenAI-Organization": other.organization_id}
    assert (await whoami_as(t.access_token, **mismatch)).status_code == 404
    # No project at all: the one organization the user is in.
    p = (await whoami_as(access_token_for(runtime, loner["id"]))).json()
    assert (p["organization_id"], p["project_id"]) == (other.organization_id, None)
    # An archived default project: organization level only; named, it is refused.
    await runtime.db.writer.execute(
        "UPDATE projects SET status = 'archived' WHERE id = $1", t.project_id
    )
    await component(runtime, Identity).revoke_all()
    p = (await whoami_as(t.access_token)).json()
    assert (p["project_id"], p["org_role"]) == (None, "owner")
    named = await whoami_as(t.access_token, **{"OpenAI-Project": t.project_id})
    assert named.status_code == 403 and named.json()["error"]["code"] == "project_archived"
