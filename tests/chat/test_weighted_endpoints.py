"""Weighted endpoints (a canary's share of the traffic): set through the providers admin
API, stored, and used by the router, with the split checked over 1,000 requests against
local upstreams (real HTTP servers that count what they serve).

Tolerances are statistical, never timing: a draw of n requests with share p lands within
6 standard deviations of n·p but for odds of about 2 in a billion."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import httpx
import orjson

from functions.common.runtime import Runtime
from functions.common.upstream import Upstream
from functions.services.inference.catalog import ModelRoute
from functions.services.inference.health import HealthBook
from functions.services.inference.router import Router
from functions.services.providers.directory import Provider
from tests.chat.fakes import FakeUpstream
from tests.factories import create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
ORG = "/v1/organization/models/providers"
BODY = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]})


def within(count: int, n: int, share: float) -> bool:
    """``count`` of ``n`` is a plausible draw of share ``share`` (6 sigma)."""
    return abs(count - n * share) <= 6 * math.sqrt(n * share * (1 - share))


def weighted_route(
    health: HealthBook, weights: tuple[int, ...], *fakes: FakeUpstream
) -> ModelRoute:
    urls = tuple(f.base_url for f in fakes)
    provider = Provider(
        f"prov_wt{len(health.endpoints())}", "org_t", None, "t", "vllm", urls, None, weights=weights
    )
    eps = tuple(health.endpoint(u, label=provider.label(i)) for i, u in enumerate(urls))
    return ModelRoute("m1", provider, eps, provider.headers, "test", 0)


async def test_a_canary_gets_its_share_of_1000_requests_set_through_the_admin_api(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    stable, canary = (
        await upstreams("stable", models=("w1",)),
        await upstreams("canary", models=("w1",)),
    )
    tenant = await create_tenant(runtime)
    h = tenant.admin_headers
    body = {
        "name": "gpu",
        "kind": "vllm",
        "base_urls": [stable.base_url, canary.base_url],
        "weights": [95, 5],
    }
    created = await client.post(ORG, json=body, headers=h)
    assert created.status_code == 200, created.text
    provider = created.json()
    assert provider["weights"] == [95, 5]
    assert [e["weight"] for e in provider["endpoints"]] == [95, 5]
    stored = await runtime.db.writer.fetchval(
        "SELECT endpoint_weights FROM model_providers WHERE id = $1", provider["id"]
    )
    assert stored == [95, 5]

    chat = {"model": "w1", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(1000):
        r = await client.post("/v1/chat/completions", json=chat, headers=tenant.project_headers)
        assert r.status_code == 200
    assert stable.calls + canary.calls == 1000
    assert within(canary.calls, 1000, 0.05), canary.calls

    # Moved to a 50/50 split: the router follows at once.
    url = f"{ORG}/{provider['id']}"
    changed = await client.post(url, json={"weights": [1, 1]}, headers=h)
    assert changed.json()["weights"] == [1, 1]
    before = canary.calls
    for _ in range(200):
        await client.post("/v1/chat/completions", json=chat, headers=tenant.project_headers)
    assert within(canary.calls - before, 200, 0.5)

    # Weights dropped: least outstanding requests again, and the answer says so.
    cleared = await client.post(url, json={"weights": None}, headers=h)
    assert cleared.json()["weights"] is None
    assert "weight" not in cleared.json()["endpoints"][0]

    # Each change is in the audit log, weights included.
    events = await runtime.db.writer.fetch(
        "SELECT type, details::text AS payload FROM audit_logs WHERE organization_id = $1"
        " AND type LIKE 'model_provider.%' ORDER BY effective_at, id",
        tenant.organization_id,
    )
    assert [e["type"] for e in events] == ["model_provider.created"] + [
        "model_provider.updated"
    ] * 2
    assert "[95, 5]" in events[0]["payload"] and "[1, 1]" in events[1]["payload"]


async def test_the_served_openapi_describes_weights(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    for path, method in ((ORG, "post"), (ORG + "/{provider_id}", "post")):
        schema = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
        weights = schema["schema"]["properties"]["weights"]
        assert weights["type"] == "array" and weights["items"]["type"] == "integer"
        assert "Jan extension" in weights["description"]


async def test_weights_are_checked(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    tenant = await create_tenant(runtime)
    h = tenant.admin_headers
    base = {"name": "gpu", "kind": "vllm", "base_urls": [a.base_url, b.base_url]}
    for weights in ([1], [1, 2, 3], [0, 0], [-1, 2], [1.5, 1], [True, 1], [1, 10_001], "1,1"):
        r = await client.post(ORG, json={**base, "weights": weights}, headers=h)
        assert r.status_code == 400 and r.json()["error"]["param"] == "weights", weights
    created = (await client.post(ORG, json={**base, "weights": [3, 0]}, headers=h)).json()
    url = f"{ORG}/{created['id']}"
    # New base URLs in another number while weights are set: weights must come with them.
    r = await client.post(url, json={"base_urls": [a.base_url]}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "weights"
    r = await client.post(url, json={"base_urls": [a.base_url], "weights": [2]}, headers=h)
    assert r.status_code == 200 and r.json()["weights"] == [2]
    r = await client.post(url, json={"base_urls": [b.base_url]}, headers=h)  # same number
    assert r.status_code == 200 and r.json()["weights"] == [2]


async def test_affinity_keys_split_by_weight_and_stick(
    upstreams: Start, upstream_client: Upstream
) -> None:
    a, b = await upstreams("a"), await upstreams("b")
    health = HealthBook(None)
    router = Router(health, upstream_client)
    route = weighted_route(health, (3, 1), a, b)
    chosen = {key: router.pick(route, [], f"conversation-{key}") for key in range(1000)}
    to_b = sum(ep is not None and ep.base_url == b.base_url for ep in chosen.values())
    assert within(to_b, 1000, 0.25), to_b
    # The same key lands where it did (no load: the slack never applies).
    assert all(router.pick(route, [], f"conversation-{k}") is ep for k, ep in chosen.items())


async def test_a_standby_of_weight_0_serves_only_when_the_weighted_cannot(
    upstreams: Start, upstream_client: Upstream
) -> None:
    main, standby = await upstreams("main"), await upstreams("standby")
    health = HealthBook(None)
    router = Router(health, upstream_client, backoff_seconds=0)
    route = weighted_route(health, (1, 0), main, standby)
    for _ in range(50):
        await router.send(route, "/chat/completions", BODY)
    assert main.calls == 50 and standby.calls == 0
    await main.stop()
    reply = await router.send(route, "/chat/completions", BODY)
    assert b"hi from standby" in reply.body
