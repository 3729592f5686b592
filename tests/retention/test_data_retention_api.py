"""OpenAI's data retention controls (organization and project) and Jan's retention periods:
defaults, changes, validation, who may change them, and the official SDK's admin client."""

from __future__ import annotations

import httpx
import openai

from functions.common.runtime import Runtime
from tests.factories import bearer, create_member, create_tenant
from tests.tools.http_server import serve_app

ORG = "/v1/organization/data_retention"
KINDS = ("responses", "conversation_items", "usage_detail", "audit_log")


async def test_organization_type_and_periods(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    admin = tenant.admin_headers
    r = await client.get(ORG, headers=admin)
    assert r.json() == {
        "object": "organization.data_retention",
        "type": "none",
        "retention_days": {k: {"days": 0, "source": "default"} for k in KINDS},
    }
    r = await client.post(ORG, json={"retention_type": "zero_data_retention"}, headers=admin)
    assert r.status_code == 200 and r.json()["type"] == "zero_data_retention"
    change = {"retention_days": {"responses": 7, "audit_log": 365}}
    r = await client.post(ORG, json=change, headers=admin)
    assert r.json()["type"] == "zero_data_retention"  # left out: unchanged
    assert r.json()["retention_days"]["responses"] == {"days": 7, "source": "organization"}
    assert r.json()["retention_days"]["audit_log"] == {"days": 365, "source": "organization"}
    assert r.json()["retention_days"]["usage_detail"] == {"days": 0, "source": "default"}
    r = await client.post(ORG, json={"retention_days": {"responses": None}}, headers=admin)
    assert r.json()["retention_days"]["responses"] == {"days": 0, "source": "default"}
    assert (await client.get(ORG, headers=admin)).json() == r.json()

    for bad in (
        {},
        {"retention_type": "forever"},
        {"retention_days": {"audit_log": 29}},
        {"retention_days": {"responses": -1}},
        {"retention_days": {"responses": "7"}},
        {"retention_days": {"prompts": 7}},
        {"retention_days": [7]},
    ):
        r = await client.post(ORG, json=bad, headers=admin)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    # Readers read; only owners change.
    _, reader = await create_member(runtime, tenant, org_role="reader")
    assert (await client.get(ORG, headers=bearer(reader))).json()["type"] == "zero_data_retention"
    r = await client.post(ORG, json={"retention_type": "none"}, headers=bearer(reader))
    assert r.status_code == 403
    # Another organization's are its own.
    other = await create_tenant(runtime)
    assert (await client.get(ORG, headers=other.admin_headers)).json()["type"] == "none"


async def test_project_type(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    url = f"/v1/organization/projects/{tenant.project_id}/data_retention"
    admin = tenant.admin_headers
    r = await client.get(url, headers=admin)
    assert r.json() == {"object": "project.data_retention", "type": "organization_default"}
    for kind in ("zero_data_retention", "none", "organization_default"):
        r = await client.post(url, json={"retention_type": kind}, headers=admin)
        assert r.json() == {"object": "project.data_retention", "type": kind}
        assert (await client.get(url, headers=admin)).json()["type"] == kind
    r = await client.post(url, json={"retention_type": "forever"}, headers=admin)
    assert r.status_code == 400
    # The project's own owners may not lift the organization's policy.
    _, project_owner = await create_member(runtime, tenant, project_role="owner")
    r = await client.post(url, json={"retention_type": "none"}, headers=bearer(project_owner))
    assert r.status_code == 403
    assert (await client.get(url, headers=bearer(project_owner))).status_code == 200
    other = await create_tenant(runtime)
    assert (await client.get(url, headers=other.admin_headers)).status_code == 404


async def test_the_openai_sdk_admin_client(runtime: Runtime) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key="unused", admin_api_key=tenant.admin_key, max_retries=0
        ) as sdk:
            org = sdk.admin.organization.data_retention
            updated = await org.update(retention_type="zero_data_retention")
            assert updated.object == "organization.data_retention"
            assert updated.type == "zero_data_retention"
            assert (await org.retrieve()).type == "zero_data_retention"
            project = sdk.admin.organization.projects.data_retention
            done = await project.update(tenant.project_id, retention_type="none")
            assert done.type == "none"
            assert (await project.retrieve(tenant.project_id)).type == "none"
