"""The rate-limit Administration API: OpenAI's project rate limits (read by the official
SDK's admin client too), Jan's organization defaults that projects (new ones included)
inherit, validation, roles, the failure policy, and an admin-only process."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.chat.fakes import FakeUpstream
from tests.factories import Tenant, bearer, create_member, create_project_key, create_tenant
from tests.limits.support import set_project_limits
from tests.tools.http_server import serve_app

ZERO = {
    "max_requests_per_1_minute": 0,
    "max_tokens_per_1_minute": 0,
    "max_requests_per_1_day": 0,
    "max_tokens_per_1_day": 0,
    "max_concurrent_requests": 0,
}
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def limits_url(project_id: str) -> str:
    return f"/v1/organization/projects/{project_id}/rate_limits"


async def test_one_project_rate_limit_per_model_in_openais_shape(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    listed = await client.get(limits_url(tenant.project_id), headers=tenant.admin_headers)
    assert listed.status_code == 200
    assert listed.json() == {
        "object": "list",
        "data": [
            {"object": "project.rate_limit", "id": "rl-m1", "model": "m1", **ZERO},
            {"object": "project.rate_limit", "id": "rl-m2", "model": "m2", **ZERO},
        ],
        "first_id": "rl-m1",
        "last_id": "rl-m2",
        "has_more": False,
    }
    changed = await client.post(
        limits_url(tenant.project_id) + "/rl-m2",
        json={"max_requests_per_1_minute": 500, "max_tokens_per_1_minute": 150_000},
        headers=tenant.admin_headers,
    )
    assert changed.status_code == 200
    assert changed.json() == {
        "object": "project.rate_limit",
        "id": "rl-m2",
        "model": "m2",
        **ZERO,
        "max_requests_per_1_minute": 500,
        "max_tokens_per_1_minute": 150_000,
    }
    # Pages: limit, after, before.
    first = (
        await client.get(limits_url(tenant.project_id) + "?limit=1", headers=tenant.admin_headers)
    ).json()
    assert [r["id"] for r in first["data"]] == ["rl-m1"] and first["has_more"] is True
    rest = await client.get(
        limits_url(tenant.project_id) + "?limit=1&after=rl-m1", headers=tenant.admin_headers
    )
    assert rest.json()["data"][0]["max_requests_per_1_minute"] == 500
    assert rest.json()["has_more"] is False
    before = await client.get(
        limits_url(tenant.project_id) + "?before=rl-m2", headers=tenant.admin_headers
    )
    assert [r["id"] for r in before.json()["data"]] == ["rl-m1"]


async def test_the_list_follows_the_projects_model_permissions(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """One rate limit per model the project can use: a denied model is not listed."""
    url = f"/v1/organization/projects/{tenant.project_id}/model_permissions"
    denied = await client.post(
        url, json={"mode": "deny_list", "model_ids": ["m2"]}, headers=tenant.admin_headers
    )
    assert denied.status_code == 200
    listed = await client.get(limits_url(tenant.project_id), headers=tenant.admin_headers)
    assert [r["model"] for r in listed.json()["data"]] == ["m1"]
    await client.post(
        url, json={"mode": "allow_list", "model_ids": ["m2"]}, headers=tenant.admin_headers
    )
    listed = await client.get(limits_url(tenant.project_id), headers=tenant.admin_headers)
    assert [r["model"] for r in listed.json()["data"]] == ["m2"]
    await client.delete(url, headers=tenant.admin_headers)
    listed = await client.get(limits_url(tenant.project_id), headers=tenant.admin_headers)
    assert [r["model"] for r in listed.json()["data"]] == ["m1", "m2"]


async def test_the_openai_sdk_admin_client_lists_and_updates(
    runtime: Runtime, fake: FakeUpstream
) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key="unused", admin_api_key=tenant.admin_key, max_retries=0
        ) as sdk:
            limits = sdk.admin.organization.projects.rate_limits
            models = [rl.model async for rl in limits.list_rate_limits(tenant.project_id, limit=1)]
            assert models == ["m1", "m2"]  # two pages of one, followed by the SDK
            updated = await limits.update_rate_limit(
                "rl-m1", project_id=tenant.project_id, max_requests_per_1_day=1
            )
            assert updated.object == "project.rate_limit" and updated.max_requests_per_1_day == 1
            async with openai.AsyncOpenAI(
                base_url=f"{base}/v1", api_key=tenant.project_key, max_retries=0
            ) as with_key:
                chat = with_key.chat.completions
                await chat.create(model="m1", messages=[{"role": "user", "content": "hi"}])
                with pytest.raises(openai.RateLimitError) as refused:
                    await chat.create(model="m1", messages=[{"role": "user", "content": "hi"}])
            assert refused.value.code == "rate_limit_exceeded"
            with pytest.raises(openai.BadRequestError) as bad:
                await limits.update_rate_limit(
                    "rl-m1", project_id=tenant.project_id, max_images_per_1_minute=10
                )
            assert "does not apply" in bad.value.message


async def test_projects_inherit_the_organizations_defaults_field_by_field(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    admin = tenant.admin_headers
    r = await client.post(
        "/v1/organization/rate_limits/rl-m1",
        json={"max_requests_per_1_minute": 1, "max_tokens_per_1_minute": 9000},
        headers=admin,
    )
    assert r.status_code == 200
    assert r.json() == {
        "object": "organization.rate_limit",
        "id": "rl-m1",
        "model": "m1",
        **ZERO,
        "max_requests_per_1_minute": 1,
        "max_tokens_per_1_minute": 9000,
    }
    defaults = (await client.get("/v1/organization/rate_limits", headers=admin)).json()
    assert [(d["id"], d["max_requests_per_1_minute"]) for d in defaults["data"]] == [
        ("rl-m1", 1),
        ("rl-m2", 0),
    ]
    # A project created now starts with them, and they hold for its calls.
    created = await client.post("/v1/organization/projects", json={"name": "new"}, headers=admin)
    project_id = created.json()["id"]
    mine = (await client.get(limits_url(project_id), headers=admin)).json()["data"][0]
    assert (mine["max_requests_per_1_minute"], mine["max_tokens_per_1_minute"]) == (1, 9000)
    key = bearer(await create_project_key(runtime, tenant, project_id=project_id))
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=key)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=key)).status_code == 429
    # A project's own value overrides one field; null follows the default again.
    own = await set_project_limits(client, admin, project_id, "m1", max_requests_per_1_minute=0)
    assert (own["max_requests_per_1_minute"], own["max_tokens_per_1_minute"]) == (0, 9000)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=key)).status_code == 200
    back = await set_project_limits(client, admin, project_id, "m1", max_requests_per_1_minute=None)
    assert back["max_requests_per_1_minute"] == 1
    # The default changes: projects that follow it follow.
    await client.post(
        "/v1/organization/rate_limits/rl-m1", json={"max_requests_per_1_minute": 7}, headers=admin
    )
    again = (await client.get(limits_url(project_id), headers=admin)).json()["data"][0]
    assert again["max_requests_per_1_minute"] == 7
    # A default can be set before any provider serves the model (any canonical ID).
    ahead = await client.post(
        "/v1/organization/rate_limits/rl-meta-llama~2fLlama-3",
        json={"max_concurrent_requests": 4},
        headers=admin,
    )
    assert ahead.status_code == 200 and ahead.json()["model"] == "meta-llama/Llama-3"


async def test_bad_changes_are_refused_with_openai_errors(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    url = limits_url(tenant.project_id) + "/rl-m1"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"max_requests_per_1_minute": -1}, "max_requests_per_1_minute"),
        ({"max_requests_per_1_minute": "10"}, "max_requests_per_1_minute"),
        ({"max_tokens_per_1_minute": True}, "max_tokens_per_1_minute"),
        ({"max_tokens_per_1_minute": 1.5}, "max_tokens_per_1_minute"),
        ({"max_concurrent_requests": 10**7}, "max_concurrent_requests"),
        ({"max_images_per_1_minute": 1}, "max_images_per_1_minute"),
        ({"max_audio_megabytes_per_1_minute": 1}, "max_audio_megabytes_per_1_minute"),
        ({"batch_1_day_max_input_tokens": 1}, "batch_1_day_max_input_tokens"),
        ({"max_requests": 1}, "max_requests"),
    ]
    for body, param in bad:
        r = await client.post(url, json=body, headers=tenant.admin_headers)
        assert r.status_code == 400, body
        assert r.json()["error"]["param"] == param and r.json()["error"]["type"]
    for rate_limit_id in ("rl-nope", "m1", "rl-~41", "rl-a~zz"):
        r = await client.post(
            limits_url(tenant.project_id) + f"/{rate_limit_id}",
            json={"max_requests_per_1_minute": 1},
            headers=tenant.admin_headers,
        )
        assert r.status_code == 404, rate_limit_id
    # Empty changes nothing.
    r = await client.post(url, json={}, headers=tenant.admin_headers)
    assert r.status_code == 200 and r.json()["max_requests_per_1_minute"] == 0


async def test_roles_and_tenants(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    url = limits_url(tenant.project_id)
    change = {"max_requests_per_1_minute": 1}
    # A project member reads its project's limits; only organization owners change them,
    # a project's owner included (they must not lift their own project's limits).
    _, member = await create_member(runtime, tenant)
    assert (await client.get(url, headers=bearer(member))).status_code == 200
    assert (
        await client.post(url + "/rl-m1", json=change, headers=bearer(member))
    ).status_code == 403
    _, owner = await create_member(runtime, tenant, project_role="owner")
    assert (
        await client.post(url + "/rl-m1", json=change, headers=bearer(owner))
    ).status_code == 403
    _, reader = await create_member(runtime, tenant, org_role="reader", project_role=None)
    assert (await client.get(url, headers=bearer(reader))).status_code == 200
    r = await client.post("/v1/organization/rate_limits/rl-m1", json=change, headers=bearer(reader))
    assert r.status_code == 403
    # Project keys never administer; another organization sees nothing.
    assert (await client.get(url, headers=tenant.project_headers)).status_code == 403
    other = await create_tenant(runtime)
    assert (await client.get(url, headers=other.admin_headers)).status_code == 404
    r = await client.post(url + "/rl-m1", json=change, headers=other.admin_headers)
    assert r.status_code == 404
    keys = (await client.get(
        f"/v1/organization/projects/{tenant.project_id}/api_keys", headers=tenant.admin_headers
    )).json()["data"]  # fmt: skip
    r = await client.post(
        f"/v1/organization/projects/{tenant.project_id}/api_keys/{keys[0]['id']}/rate_limits",
        json=change,
        headers=other.admin_headers,
    )
    assert r.status_code == 404
    r = await client.post(
        f"/v1/organization/users/{tenant.owner_user_id}/rate_limits",
        json=change,
        headers=other.admin_headers,
    )
    assert r.status_code == 404


async def test_the_failure_policy(client: httpx.AsyncClient, tenant: Tenant) -> None:
    url = "/v1/organization/rate_limit_policy"
    admin = tenant.admin_headers
    assert (await client.get(url, headers=admin)).json() == {
        "object": "organization.rate_limit_policy",
        "failure_mode": "open",
        "source": "default",
    }
    r = await client.post(url, json={"failure_mode": "closed"}, headers=admin)
    assert r.json() == {
        "object": "organization.rate_limit_policy",
        "failure_mode": "closed",
        "source": "organization",
    }
    assert (await client.get(url, headers=admin)).json()["failure_mode"] == "closed"
    assert (await client.post(url, json={"failure_mode": "ajar"}, headers=admin)).status_code == 400
    assert (await client.post(url, json={}, headers=admin)).status_code == 400
    r = await client.post(url, json={"failure_mode": None}, headers=admin)
    assert r.json()["source"] == "default"


async def test_an_admin_only_process_lists_stored_and_builtin_models(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    """No inference catalog there: the stored providers' models (discovered and declared)
    and the built-in provider's /models, polled."""
    provider = await FakeUpstream("provider", models=("p1",)).start()
    admin_only = Runtime(
        settings.model_copy(
            update={"jan_function": "admin", "jan_provider_allowed_hosts": ("127.0.0.1",)}
        )
    )
    app = create_app(admin_only)
    await admin_only.open()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
            made = await c.post(
                "/v1/organization/models/providers",
                json={"name": "q", "kind": "vllm", "base_url": provider.base_url,
                      "models": ["declared"]},
                headers=tenant.admin_headers,
            )  # fmt: skip
            assert made.status_code == 200, made.text
            listed = await c.get(limits_url(tenant.project_id), headers=tenant.admin_headers)
    finally:
        await admin_only.close()
        await provider.stop()
    assert [r["model"] for r in listed.json()["data"]] == ["declared", "m1", "m2", "p1"]
