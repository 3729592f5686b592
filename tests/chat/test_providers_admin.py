"""Provider administration: CRUD at organization and project level, credentials encrypted
and never returned, tenants isolated, the router following changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from functions.common.crypto import DecryptError, SecretBox
from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.factories import create_project, create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
ORG = "/v1/organization/models/providers"


async def test_crud_with_encrypted_credentials(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("up", models=("a", "b"))
    tenant = await create_tenant(runtime)
    h = tenant.admin_headers
    body = {"name": "gpu", "kind": "vllm", "base_urls": [up.base_url], "api_key": "sk-secret-1"}
    created = (await client.post(ORG, json=body, headers=h)).json()
    assert created["object"] == "organization.model_provider"
    assert created["id"].startswith("prov_") and created["has_api_key"] is True
    assert created["endpoints"] == [{"base_url": up.base_url, "models": ["a", "b"]}]
    assert "sk-secret-1" not in str(created) and "api_key" not in created
    stored = await runtime.db.writer.fetchval(
        "SELECT api_key_ciphertext FROM model_providers WHERE id = $1", created["id"]
    )
    assert b"sk-secret-1" not in stored
    box = SecretBox("test-provider-secret-0123456789abcdef")
    assert box.decrypt(stored, associated=created["id"]) == "sk-secret-1"

    dup = await client.post(ORG, json=body, headers=h)
    assert dup.status_code == 409
    listed = (await client.get(ORG, headers=h)).json()
    assert listed["object"] == "list" and [p["id"] for p in listed["data"]] == [created["id"]]
    assert listed["has_more"] is False and listed["first_id"] == created["id"]

    url = f"{ORG}/{created['id']}"
    changed = await client.post(url, json={"api_key": None, "models": ["c"]}, headers=h)
    assert changed.json()["has_api_key"] is False and changed.json()["models"] == ["a", "b", "c"]
    models = await client.get("/v1/models", headers=tenant.project_headers)
    assert {"a", "b", "c"} <= {m["id"] for m in models.json()["data"]}

    gone = await client.delete(url, headers=h)
    assert gone.json() == {
        "object": "organization.model_provider.deleted",
        "id": created["id"],
        "deleted": True,
    }
    assert (await client.get(url, headers=h)).status_code == 404
    models = await client.get("/v1/models", headers=tenant.project_headers)
    assert "a" not in {m["id"] for m in models.json()["data"]}


async def test_project_providers_serve_only_their_project(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("proj", models=("pm",))
    tenant = await create_tenant(runtime)
    second = await create_project(runtime, tenant)
    path = f"/v1/organization/projects/{second}/models/providers"
    r = await client.post(
        path,
        json={"name": "p", "kind": "ollama", "base_url": up.base_url},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 200 and r.json()["project_id"] == second
    assert (await client.get(ORG, headers=tenant.admin_headers)).json()["data"] == []
    mine = await client.get("/v1/models", headers=tenant.user_headers | {"OpenAI-Project": second})
    assert "pm" in {m["id"] for m in mine.json()["data"]}
    default = await client.get("/v1/models", headers=tenant.project_headers)
    assert "pm" not in {m["id"] for m in default.json()["data"]}


async def test_other_tenants_see_404(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("x")
    a, b = await create_tenant(runtime), await create_tenant(runtime)
    made = (await client.post(ORG, json={"name": "n", "kind": "sglang", "base_url": up.base_url},
                              headers=a.admin_headers)).json()  # fmt: skip
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"{ORG}/{made['id']}", headers=b.admin_headers)
        assert r.status_code == 404
    r = await client.get(
        f"/v1/organization/projects/{a.project_id}/models/providers", headers=b.admin_headers
    )
    assert r.status_code == 404
    assert (await client.get(ORG, headers=a.project_headers)).status_code == 403


async def test_invalid_bodies(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await create_tenant(runtime)
    for body in (
        {"kind": "vllm", "base_url": "http://h"},
        {"name": "n", "kind": "anthropic", "base_url": "http://h"},
        {"name": "n", "kind": "vllm"},
        {"name": "n", "kind": "vllm", "base_url": "ftp://h"},
        {"name": "n", "kind": "vllm", "base_urls": []},
        {"name": "n", "kind": "vllm", "base_url": "http://h", "api_key": 5},
    ):
        r = await client.post(ORG, json=body, headers=tenant.admin_headers)
        assert r.status_code == 400, body


def test_base_urls_get_their_kinds_default_path() -> None:
    from functions.services.providers.directory import normalize_base_url

    assert normalize_base_url("kserve", "http://isvc.ns/") == "http://isvc.ns/openai/v1"
    assert normalize_base_url("vllm", "http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("openai", "https://api.openai.com/v1") == "https://api.openai.com/v1"
    assert normalize_base_url("ollama", "http://h/custom/v1/") == "http://h/custom/v1"


def test_ciphertexts_are_bound_to_secret_and_row() -> None:
    box = SecretBox("one")
    sealed = box.encrypt("k", associated="prov_1")
    assert sealed != box.encrypt("k", associated="prov_1")  # fresh nonce each time
    with pytest.raises(DecryptError):
        box.decrypt(sealed, associated="prov_2")
    with pytest.raises(DecryptError):
        SecretBox("two").decrypt(sealed, associated="prov_1")
    with pytest.raises(DecryptError):
        box.decrypt(b"junk", associated="prov_1")


async def test_openapi_documents_project_id_only_on_project_routes(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    project = "/v1/organization/projects/{project_id}/models/providers"
    for path in (ORG, ORG + "/{provider_id}", project, project + "/{provider_id}"):
        for method, operation in paths[path].items():
            names = {p["name"]: p for p in operation.get("parameters", [])}
            if path.startswith(project):
                assert names["project_id"]["required"] is True, (method, path)
                assert names["project_id"]["in"] == "path"
            else:
                assert "project_id" not in names, (method, path)
            assert ("provider_id" in names) == path.endswith("{provider_id}"), (method, path)


async def test_the_oldest_provider_keeps_a_shared_model_name_after_an_update(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    first = await upstreams("first", models=("shared",))
    second = await upstreams("second", models=("shared",))
    tenant = await create_tenant(runtime)
    h = tenant.admin_headers
    older = (
        await client.post(
            ORG, json={"name": "a", "kind": "vllm", "base_url": first.base_url}, headers=h
        )
    ).json()
    await client.post(
        ORG, json={"name": "b", "kind": "vllm", "base_url": second.base_url}, headers=h
    )
    # An UPDATE writes a new row version at the heap's end: a scan without ORDER BY then
    # meets the older provider last.
    await client.post(f"{ORG}/{older['id']}", json={"name": "a2"}, headers=h)
    chat = {"model": "shared", "messages": [{"role": "user", "content": "hi"}]}
    r = await client.post("/v1/chat/completions", json=chat, headers=tenant.project_headers)
    assert r.json()["served_by"] == "first"
