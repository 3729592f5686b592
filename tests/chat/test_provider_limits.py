"""Limits on what one tenant's providers make every instance hold: static models per
provider, model name length, base URLs per provider, providers per organization, models
kept from one endpoint's /models answer. Past a limit the admin API answers 400 in
OpenAI's envelope naming the parameter; discovery keeps the first models and logs once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.chat.fakes import FakeUpstream
from tests.conftest import make_settings
from tests.factories import create_project, create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
ORG = "/v1/organization/models/providers"
DEFAULTS = Settings.model_fields


@pytest.fixture
def settings(database_dsn: str, builtin: FakeUpstream) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=("127.0.0.1",),
        jan_providers_per_organization=3,
        jan_provider_max_discovered_models=3,
        jan_provider_max_base_urls=2,
    )


def _error(r: httpx.Response) -> dict[str, object]:
    assert r.status_code == 400, r.text
    error: dict[str, object] = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def test_the_defaults_are_the_documented_ones() -> None:
    assert DEFAULTS["jan_provider_max_models"].default == 1000
    assert DEFAULTS["jan_model_name_max_chars"].default == 256
    assert DEFAULTS["jan_providers_per_organization"].default == 100
    assert DEFAULTS["jan_provider_max_base_urls"].default == 16
    assert DEFAULTS["jan_provider_max_discovered_models"].default == 1000


async def test_too_many_static_models_or_too_long_a_name_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("up")
    tenant = await create_tenant(runtime)
    h = tenant.admin_headers
    body = {"name": "big", "kind": "vllm", "base_url": up.base_url}
    # The attack: one provider listing a huge model list (200,000 were accepted).
    many = [f"m{n}" for n in range(1001)]
    error = _error(await client.post(ORG, json=body | {"models": many}, headers=h))
    assert error["param"] == "models" and error["code"] == "too_many_models"
    error = _error(await client.post(ORG, json=body | {"models": ["x" * 257]}, headers=h))
    assert error["param"] == "models" and "256" in str(error["message"])
    assert (await client.get(ORG, headers=h)).json()["data"] == []

    ok = await client.post(ORG, json=body | {"models": many[:1000]}, headers=h)
    assert ok.status_code == 200 and len(ok.json()["static_models"]) == 1000
    url = f"{ORG}/{ok.json()['id']}"
    error = _error(await client.post(url, json={"models": many}, headers=h))
    assert error["param"] == "models"
    kept = (await client.get(url, headers=h)).json()
    assert len(kept["static_models"]) == 1000


async def test_too_many_base_urls_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    a, b, c = await upstreams("a"), await upstreams("b"), await upstreams("c")
    tenant = await create_tenant(runtime)
    urls = [a.base_url, b.base_url, c.base_url]
    body = {"name": "wide", "kind": "vllm", "base_urls": urls}
    error = _error(await client.post(ORG, json=body, headers=tenant.admin_headers))
    assert error["param"] == "base_urls" and "1 to 2" in str(error["message"])
    created = await client.post(
        ORG, json=body | {"base_urls": urls[:2]}, headers=tenant.admin_headers
    )
    assert created.status_code == 200
    url = f"{ORG}/{created.json()['id']}"
    error = _error(await client.post(url, json={"base_urls": urls}, headers=tenant.admin_headers))
    assert error["param"] == "base_urls"


async def test_providers_per_organization_are_capped_projects_included(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("up")
    tenant, other = await create_tenant(runtime), await create_tenant(runtime)
    second = await create_project(runtime, tenant)
    project_path = f"/v1/organization/projects/{second}/models/providers"

    def body(name: str) -> dict[str, str]:
        return {"name": name, "kind": "vllm", "base_url": up.base_url}

    # Concurrent creations take turns: exactly the cap gets through.
    made = await asyncio.gather(
        client.post(project_path, json=body("p0"), headers=tenant.admin_headers),
        *(client.post(ORG, json=body(f"o{n}"), headers=tenant.admin_headers) for n in range(4)),
    )
    assert sorted(r.status_code for r in made) == [200, 200, 200, 400, 400]
    refused = next(r for r in made if r.status_code == 400)
    assert _error(refused)["code"] == "too_many_providers"
    count = await runtime.db.writer.fetchval(
        "SELECT count(*) FROM model_providers WHERE organization_id = $1", tenant.organization_id
    )
    assert count == 3
    # Another organization has its own allowance; a deletion makes room again.
    assert (await client.post(ORG, json=body("x"), headers=other.admin_headers)).status_code == 200
    victim = next(r.json()["id"] for r in made[1:] if r.status_code == 200)
    await client.delete(f"{ORG}/{victim}", headers=tenant.admin_headers)
    again = await client.post(ORG, json=body("again"), headers=tenant.admin_headers)
    assert again.status_code == 200


async def test_discovery_keeps_the_first_models_and_logs_once(
    client: httpx.AsyncClient,
    runtime: Runtime,
    upstreams: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    long_name = "y" * 257
    up = await upstreams("wide", models=("a", long_name, "b", "a", "c", "d", "e"))
    tenant = await create_tenant(runtime)
    body = {"name": "wide", "kind": "vllm", "base_url": up.base_url}
    with caplog.at_level(logging.WARNING, logger="functions.services.providers.directory"):
        created = (await client.post(ORG, json=body, headers=tenant.admin_headers)).json()
        assert created["endpoints"][0]["models"] == ["a", "b", "c"]
        stored = await runtime.db.writer.fetchval(
            "SELECT count(*) FROM model_provider_models WHERE provider_id = $1", created["id"]
        )
        assert stored == 3
        url = f"{ORG}/{created['id']}"
        await client.post(url, json={"name": "wider"}, headers=tenant.admin_headers)  # polls again
    cut = [r for r in caplog.records if r.getMessage() == "models listed by an endpoint left out"]
    assert len(cut) == 1
    assert cut[0].__dict__["endpoint"] == f"{created['id']}/0"
    assert cut[0].__dict__["kept"] == 3 and cut[0].__dict__["left_out"] == 3
    models = await client.get("/v1/models", headers=tenant.project_headers)
    names = {m["id"] for m in models.json()["data"]}
    assert {"a", "b", "c"} <= names and "d" not in names and long_name not in names
