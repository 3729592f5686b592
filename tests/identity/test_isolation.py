"""Tenant isolation, table-driven: every tenant-owned endpoint, walked with credentials
that must not reach the victim's data, is refused and changes nothing.

To cover a new endpoint, append an ``Endpoint`` to ``ENDPOINTS`` (path placeholders are
filled from the victim's IDs) and, if it needs a resource of its own, append a coroutine to
``VICTIM_RESOURCES`` that creates it for the victim and adds its ID to the dict; add the
tables it writes to ``SNAPSHOT_TABLES``. Set ``area="model"`` for model APIs (chat,
conversations, responses …), which only project credentials may use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import jwt

from functions.common.runtime import Runtime
from tests.factories import (
    Tenant,
    bearer,
    create_member,
    create_project,
    create_project_key,
    create_tenant,
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body: dict[str, Any] | None = None
    write: bool = False
    area: Literal["admin", "model"] = "admin"
    # Whether the path names one of the victim's resources (then outsiders get 404).
    owned: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


P = "/v1/organization/projects/{project_id}"
ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/v1/organization/admin_api_keys/{admin_key_id}"),
    Endpoint("DELETE", "/v1/organization/admin_api_keys/{admin_key_id}", write=True),
    Endpoint("GET", "/v1/organization/users/{member_id}"),
    Endpoint("POST", "/v1/organization/users/{member_id}", {"role": "owner"}, write=True),
    Endpoint("DELETE", "/v1/organization/users/{member_id}", write=True),
    Endpoint("GET", "/v1/organization/invites/{invite_id}"),
    Endpoint("DELETE", "/v1/organization/invites/{invite_id}", write=True),
    Endpoint("GET", P),
    Endpoint("POST", P, {"name": "pwned"}, write=True),
    Endpoint("POST", P + "/archive", write=True),
    Endpoint("GET", P + "/users"),
    Endpoint("POST", P + "/users", {"user_id": "{member_id}", "role": "owner"}, write=True),
    Endpoint("GET", P + "/users/{member_id}"),
    Endpoint("POST", P + "/users/{member_id}", {"role": "owner"}, write=True),
    Endpoint("DELETE", P + "/users/{member_id}", write=True),
    Endpoint("GET", P + "/service_accounts"),
    Endpoint("POST", P + "/service_accounts", {"name": "bot"}, write=True),
    Endpoint("GET", P + "/service_accounts/{service_account_id}"),
    Endpoint("DELETE", P + "/service_accounts/{service_account_id}", write=True),
    Endpoint("GET", P + "/api_keys"),
    Endpoint("POST", P + "/api_keys", {"name": "k"}, write=True),
    Endpoint("GET", P + "/api_keys/{project_key_id}"),
    Endpoint("DELETE", P + "/api_keys/{project_key_id}", write=True),
    # Organization-wide lists and creates: outsiders see or change only their own tenant.
    Endpoint("GET", "/v1/organization/projects", owned=False),
    Endpoint("POST", "/v1/organization/projects", {"name": "x"}, write=True, owned=False),
    Endpoint(
        "POST",
        "/v1/organization/invites",
        {"email": "z@z.test", "role": "owner"},
        write=True,
        owned=False,
    ),
    Endpoint("POST", "/v1/organization/admin_api_keys", {"name": "x"}, write=True, owned=False),
]

SNAPSHOT_TABLES: list[str] = [
    "organizations",
    "users",
    "organization_members",
    "projects",
    "project_members",
    "service_accounts",
    "api_keys",
    "invites",
    "refresh_tokens",
]

Victim = dict[str, str]
VICTIM_RESOURCES: list[Callable[[httpx.AsyncClient, Runtime, Tenant, Victim], Awaitable[None]]] = []


async def _identity_resources(
    client: httpx.AsyncClient, runtime: Runtime, t: Tenant, v: Victim
) -> None:
    h = t.admin_headers
    base = f"/v1/organization/projects/{t.project_id}"
    v["admin_key_id"] = (await client.get("/v1/organization/admin_api_keys", headers=h)).json()[
        "data"
    ][0]["id"]
    v["project_key_id"] = (await client.get(base + "/api_keys", headers=h)).json()["data"][0]["id"]
    member_id, _ = await create_member(runtime, t, org_role="reader")
    v["member_id"] = member_id
    invite = await client.post(
        "/v1/organization/invites", json={"email": "i@victim.test", "role": "reader"}, headers=h
    )
    v["invite_id"] = invite.json()["id"]
    sa = await client.post(base + "/service_accounts", json={"name": "bot"}, headers=h)
    v["service_account_id"] = sa.json()["id"]


VICTIM_RESOURCES.append(_identity_resources)

C = "/v1/conversations/{conversation_id}"
R = "/v1/responses/{response_id}"
ENDPOINTS += [
    Endpoint("GET", C, area="model"),
    Endpoint("POST", C, {"metadata": {"x": "y"}}, write=True, area="model"),
    Endpoint("DELETE", C, write=True, area="model"),
    Endpoint("GET", C + "/items", area="model"),
    Endpoint(
        "POST",
        C + "/items",
        {"items": [{"role": "user", "content": "x"}]},
        write=True,
        area="model",
    ),
    Endpoint("GET", C + "/items/{conversation_item_id}", area="model"),
    Endpoint("DELETE", C + "/items/{conversation_item_id}", write=True, area="model"),
    Endpoint("GET", R, area="model"),
    Endpoint("DELETE", R, write=True, area="model"),
    Endpoint("GET", R + "/input_items", area="model"),
    Endpoint("POST", R + "/cancel", write=True, area="model"),
    Endpoint(
        "POST",
        "/v1/responses",
        {"model": "m", "input": "x", "conversation": "{conversation_id}"},
        write=True,
        area="model",
    ),
    Endpoint(
        "POST",
        "/v1/responses",
        {"model": "m", "input": "x", "previous_response_id": "{response_id}"},
        write=True,
        area="model",
    ),
]
SNAPSHOT_TABLES += ["conversations", "conversation_items", "responses", "response_input_items"]


async def _stateful_resources(
    client: httpx.AsyncClient, runtime: Runtime, t: Tenant, v: Victim
) -> None:
    conv = await client.post(
        "/v1/conversations",
        json={"items": [{"role": "user", "content": "secret"}]},
        headers=t.user_headers,
    )
    v["conversation_id"] = conv.json()["id"]
    items = await client.get(
        f"/v1/conversations/{v['conversation_id']}/items", headers=t.user_headers
    )
    v["conversation_item_id"] = items.json()["first_id"]
    # A stored response, written directly: making one through the API needs a model.
    v["response_id"] = "resp_victim"
    await runtime.db.writer.execute(
        """
        INSERT INTO responses (id, organization_id, project_id, user_id, status, params)
        VALUES ($1, $2, $3, $4, 'completed', '{"model": "m"}')
        """,
        v["response_id"],
        t.organization_id,
        t.project_id,
        t.owner_user_id,
    )


VICTIM_RESOURCES.append(_stateful_resources)


def _fill(value: Any, v: Victim) -> Any:
    if isinstance(value, str):
        return value.format(**v)
    if isinstance(value, dict):
        return {k: _fill(x, v) for k, x in value.items()}
    return value


async def _snapshot(runtime: Runtime) -> dict[str, str]:
    out = {}
    for table in SNAPSHOT_TABLES:
        out[table] = await runtime.db.writer.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {table} t"  # noqa: S608
        )
    return out


async def _credentials(
    client: httpx.AsyncClient, runtime: Runtime, victim: Tenant
) -> dict[str, tuple[dict[str, str], str]]:
    """name → (headers, kind); ``_expected`` maps a kind to the statuses allowed."""
    other = await create_tenant(runtime)
    assert runtime.settings.jwt_secret is not None
    secret = runtime.settings.jwt_secret.get_secret_value()
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": victim.owner_user_id, "typ": "access", "iss": "jan-server", "iat": now}
    claims["exp"] = now + 600
    expired = await create_project_key(
        runtime, victim, expires_at=datetime.now(UTC) + timedelta(milliseconds=200)
    )
    deleted_key = await create_project_key(runtime, victim)
    await runtime.db.writer.execute(
        "DELETE FROM api_keys WHERE redacted_value = $1", "sk-proj-…" + deleted_key[-4:]
    )
    guest = (await client.post("/v1/auth/guest-login")).json()
    _, reader = await create_member(runtime, victim, org_role="reader", project_role=None)
    second = await create_tenant(runtime)
    _, project_only = await create_member(runtime, second, project_role="member")
    # Owners of another project of the victim's organization: their project rights end there.
    elsewhere = await create_project(runtime, victim, name="elsewhere")
    _, owner_elsewhere = await create_member(
        runtime, victim, project_role="owner", project_id=elsewhere
    )
    _, reader_owner_elsewhere = await create_member(
        runtime, victim, org_role="reader", project_role="owner", project_id=elsewhere
    )
    return {
        "no credentials": ({}, "bad"),
        "expired key": (bearer(expired), "bad"),
        "deleted key": (bearer(deleted_key), "bad"),
        "refresh token as access token": (bearer(guest["refresh_token"]), "bad"),
        "jwt alg none": (bearer(jwt.encode(claims, "", algorithm="none")), "bad"),
        "jwt other secret": (bearer(jwt.encode(claims, "x" * 40, algorithm="HS256")), "bad"),
        "jwt wrong type": (bearer(jwt.encode({**claims, "typ": "refresh"}, secret)), "bad"),
        "other org admin key": (other.admin_headers, "outsider"),
        "other org owner": (bearer(other.access_token), "outsider"),
        "other org project key": (other.project_headers, "project key"),
        "own project key": (victim.project_headers, "own project key"),
        "guest": (bearer(guest["access_token"]), "guest"),
        "member of another organization's project only": (bearer(project_only), "project user"),
        "owner of another project only": (bearer(owner_elsewhere), "project user"),
        "reader": (bearer(reader), "reader"),
        "reader owning another project": (bearer(reader_owner_elsewhere), "reader"),
    }


def _expected(kind: str, endpoint: Endpoint) -> set[int] | None:
    """Acceptable statuses, or None when this caller may legitimately make the call."""
    if kind == "bad":
        return {401}
    if endpoint.area == "model":
        if kind == "own project key":
            return None
        # Admin keys and project-less users are refused (403); others' resources are 404.
        return {403, 404} if endpoint.owned or kind == "reader" else None
    if kind == "outsider":
        return {404} if endpoint.owned else None
    if kind == "reader":
        return {403} if endpoint.write else None
    if kind == "project user":
        # In no project of the victim's and not in its organization: the victim's projects
        # do not exist for them, the organization's resources are refused, and lists show
        # only their own projects.
        if "{project_id}" in endpoint.path:
            return {404}
        return {403} if endpoint.write or endpoint.owned else None
    return {403}  # project credentials and guests: not administrators


async def test_every_endpoint_refuses_foreign_and_bad_credentials(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    import asyncio

    victim = await create_tenant(runtime)
    ids: Victim = {"project_id": victim.project_id}
    for make in VICTIM_RESOURCES:
        await make(client, runtime, victim, ids)
    creds = await _credentials(client, runtime, victim)
    await asyncio.sleep(0.25)  # the short-lived key has expired now
    before = await _snapshot(runtime)
    failures = []
    checked = 0
    for name, (headers, kind) in creds.items():
        for endpoint in ENDPOINTS:
            expected = _expected(kind, endpoint)
            if expected is None:
                continue
            path = _fill(endpoint.path, ids)
            r = await client.request(
                endpoint.method, path, json=_fill(endpoint.body, ids), headers=headers
            )
            checked += 1
            if r.status_code not in expected or "error" not in r.json():
                failures.append(f"{name}: {endpoint.method} {path} -> {r.status_code}")
    assert not failures, "\n".join(failures)
    assert checked > 250
    after = await _snapshot(runtime)
    assert [t for t in SNAPSHOT_TABLES if before[t] != after[t]] == []
