"""The catalog reloads incrementally: with many providers stored, a reload that finds
nothing changed reads no provider in full and rebuilds nothing, and a change to one
provider (its row, or what its endpoint's /models lists) makes that provider's routes
again and rebuilds its scope alone. Counted with the catalog's own counters, never timed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from functions.common.runtime import Runtime
from functions.services.inference.catalog import Catalog
from functions.services.inference.health import HealthBook
from functions.services.inference.service import Inference
from functions.services.providers import store
from tests.chat.fakes import FakeUpstream
from tests.conftest import component
from tests.factories import create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
ORG = "/v1/organization/models/providers"
TENANTS = 40
CLOSED = "http://127.0.0.1:9/v1"  # nothing listens: polls fail at once


async def _stored(runtime: Runtime, provider_id: str, organization_id: str, *models: str) -> None:
    await store.insert_provider(
        runtime.db.writer,
        id=provider_id,
        organization_id=organization_id,
        project_id=None,
        name=provider_id,
        kind="vllm",
        base_urls=[CLOSED],
        api_key_ciphertext=None,
        static_models=list(models),
        active=True,
    )


async def test_a_reload_rebuilds_only_what_changed(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("mine", models=("found-1",))
    tenant = await create_tenant(runtime)
    org = tenant.organization_id
    for n in range(TENANTS):  # many other tenants, one provider each
        await runtime.db.writer.execute(
            "INSERT INTO organizations (id, name) VALUES ($1, $1)", f"org_many{n}"
        )
        await _stored(runtime, f"prov_many{n}", f"org_many{n}", f"static-{n}")
    await _stored(runtime, "prov_neighbour", org, "shared", "n1")  # older, same scope
    created = await client.post(
        ORG,
        json={"name": "mine", "kind": "vllm", "base_url": up.base_url, "models": ["s1", "shared"]},
        headers=tenant.admin_headers,
    )
    provider_id = created.json()["id"]
    # A catalog of its own, so the service's background upkeep cannot move the counters.
    providers = component(runtime, Inference).catalog.providers
    catalog = Catalog(health=HealthBook(None), providers=providers)
    await catalog.refresh()
    assert catalog.loaded_providers == catalog.routed_providers == TENANTS + 2
    assert catalog.rebuilt_scopes == TENANTS + 1
    assert catalog.resolve("org_many7", None, "static-7") is not None
    assert catalog.resolve(org, None, "found-1") is not None
    shared = catalog.resolve(org, None, "shared")
    assert shared is not None and shared.provider.id == "prov_neighbour"  # the oldest wins

    def cost() -> tuple[int, int, int]:
        return catalog.loaded_providers, catalog.routed_providers, catalog.rebuilt_scopes

    before = cost()
    await catalog.refresh()
    assert cost() == before  # nothing changed: nothing read in full, nothing rebuilt

    # Its row changes: it alone is read and routed again, and only its scope rebuilt.
    h = tenant.admin_headers
    await client.post(f"{ORG}/{provider_id}", json={"models": ["s2", "shared"]}, headers=h)
    await catalog.refresh()
    assert cost() == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert catalog.resolve(org, None, "s2") is not None
    assert catalog.resolve(org, None, "s1") is None
    assert catalog.resolve(org, None, "n1") is not None
    shared = catalog.resolve(org, None, "shared")
    assert shared is not None and shared.provider.id == "prov_neighbour"
    assert catalog.resolve("org_many7", None, "static-7") is not None

    # Polled again with the same answer (its discovered_at moves): nothing to rebuild.
    before = cost()
    provider = catalog.provider(provider_id)
    assert provider is not None
    assert await catalog.discover_provider(provider) is False
    await catalog.refresh()
    assert cost() == before

    # What its endpoint lists changes, as another instance's poll stored it.
    up.models = ("found-1", "found-2")
    await providers.discover(provider)
    await catalog.refresh()
    assert cost() == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert catalog.resolve(org, None, "found-2") is not None

    # This instance polls every provider (all stale now): one answer changed, so one
    # provider is routed again and one scope rebuilt; the others' failed polls change nothing.
    up.models = ("found-3",)
    catalog.discover_seconds = 0
    before = cost()
    await catalog.discover_stale()
    assert cost() == (before[0], before[1] + 1, before[2] + 1)
    assert catalog.resolve(org, None, "found-3") is not None
    await catalog.refresh()  # reads the answer this poll stored
    before = cost()
    await catalog.refresh()
    assert cost() == before

    # Deleted: its scope is rebuilt from what the neighbour's routes were, nothing else.
    before = cost()
    await client.delete(f"{ORG}/{provider_id}", headers=h)
    await catalog.refresh()
    assert cost() == (before[0], before[1], before[2] + 1)
    assert catalog.resolve(org, None, "s2") is None
    assert catalog.resolve(org, None, "n1") is not None
    assert catalog.resolve("org_many3", None, "static-3") is not None
