"""Budgets through the Administration API and on the model endpoints: OpenAI's hard spend
limits (read and written by the official SDK's admin client), Jan's token budgets of the
organization, projects, API keys and users (shown on keys and users), validation, roles
and tenants; enforced with 429 ``insufficient_quota``, counted in the refusal metric."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import httpx2
import openai
import pytest

from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.conftest import METRICS_AUTH
from tests.factories import Tenant, bearer, create_member, create_project, create_tenant
from tests.tools.http_server import serve_app

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
NONE = {"tokens_per_day": 0, "tokens_per_month": 0}


async def spent_this_month(runtime: Runtime, tenant: Tenant, cents: int, project: str) -> None:
    """What the usage ledger's hourly rollup says the project spent this month."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await runtime.db.writer.execute(
        "INSERT INTO usage_hourly (organization_id, hour, project_id, model, operation,"
        " requests, cost_picodollars) VALUES ($1, $2, $3, 'm1', 'chat.completions', 1, $4)",
        tenant.organization_id,
        hour,
        project,
        cents * 10**10,
    )


async def priced(runtime: Runtime, tenant: Tenant, model: str = "m1") -> None:
    """$10 per 1M input tokens, $30 per 1M output tokens (set directly: prices have their
    own API)."""
    await runtime.db.writer.execute(
        "INSERT INTO model_prices (organization_id, model, input, output) VALUES ($1, $2, 10, 30)",
        tenant.organization_id,
        model,
    )


async def test_spend_limits_in_openais_shape_through_the_sdk(
    runtime: Runtime, fake: FakeUpstream
) -> None:
    async with serve_app(runtime) as base:
        tenant = await create_tenant(runtime)
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key="unused", admin_api_key=tenant.admin_key, max_retries=0
        ) as sdk:
            org = sdk.admin.organization.spend_limit
            with pytest.raises(openai.NotFoundError):
                await org.retrieve()
            made = await org.update(threshold_amount=10_000, currency="USD", interval="month")
            assert made.object == "organization.spend_limit" and made.threshold_amount == 10_000
            assert (made.currency, made.interval, made.enforcement.status) == (
                "USD",
                "month",
                "inactive",
            )
            assert (await org.retrieve()).threshold_amount == 10_000
            replaced = await org.update(threshold_amount=500, currency="USD", interval="month")
            assert replaced.threshold_amount == 500

            project = sdk.admin.organization.projects.spend_limit
            with pytest.raises(openai.NotFoundError):
                await project.retrieve(tenant.project_id)
            made_p = await project.update(
                tenant.project_id, threshold_amount=100, currency="USD", interval="month"
            )
            assert made_p.object == "project.spend_limit"
            assert made_p.enforcement.status == "inactive"
            # The month's spend, as the ledger says, reaches it.
            await spent_this_month(runtime, tenant, 100, tenant.project_id)
            assert (await project.retrieve(tenant.project_id)).enforcement.status == "enforcing"
            assert (await org.retrieve()).enforcement.status == "inactive"  # 100 of 500

            deleted = await project.delete(tenant.project_id)
            assert deleted.object == "project.spend_limit.deleted" and deleted.deleted
            with pytest.raises(openai.NotFoundError):
                await project.retrieve(tenant.project_id)
            with pytest.raises(openai.NotFoundError):
                await project.delete(tenant.project_id)
            assert (await org.delete()).object == "organization.spend_limit.deleted"
            with pytest.raises(openai.BadRequestError) as bad:
                await org.update(threshold_amount=0, currency="USD", interval="month")
            assert bad.value.body["param"] == "threshold_amount"  # type: ignore[index]

        # A spent budget: the SDK raises at once, without its retries (x-should-retry).
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{base}/v1/organization/token_budgets",
                json={"tokens_per_day": 12},  # one answer of the fake upstream
                headers=tenant.admin_headers,
            )
            assert r.status_code == 200
            sent: list[httpx2.Request] = []

            async def count(request: httpx2.Request) -> None:
                sent.append(request)

            # The SDK's own HTTP client (httpx2), watched: how many requests it sent.
            async with (
                httpx2.AsyncClient(event_hooks={"request": [count]}) as hooked,
                openai.AsyncOpenAI(
                    base_url=f"{base}/v1", api_key=tenant.project_key, http_client=hooked
                ) as with_key,
            ):
                chat = with_key.chat.completions
                await chat.create(model="m1", messages=[{"role": "user", "content": "hi"}])
                with pytest.raises(openai.RateLimitError) as refused:
                    await chat.create(model="m1", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.code == "insufficient_quota"
        assert len(sent) == 2  # the default two retries were not made


async def test_bad_spend_limits_are_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    url = "/v1/organization/spend_limit"
    good = {"threshold_amount": 100, "currency": "USD", "interval": "month"}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"currency": "USD", "interval": "month"}, "threshold_amount"),
        ({**good, "threshold_amount": 1.5}, "threshold_amount"),
        ({**good, "threshold_amount": True}, "threshold_amount"),
        ({**good, "threshold_amount": 10**12}, "threshold_amount"),
        ({**good, "currency": "EUR"}, "currency"),
        ({**good, "interval": "day"}, "interval"),
        ({"threshold_amount": 100, "interval": "month"}, "currency"),
        (
            {**good, "notification_channel": {"type": "email", "recipients": []}},
            "notification_channel",
        ),
        ({**good, "extra": 1}, "extra"),
    ]
    for body, param in bad:
        r = await client.post(url, json=body, headers=tenant.admin_headers)
        assert r.status_code == 400, body
        assert r.json()["error"]["param"] == param
    r = await client.post(
        url, json={**good, "notification_channel": None}, headers=tenant.admin_headers
    )
    assert r.status_code == 200
    r = await client.get(url + "?x=1", headers=tenant.admin_headers)
    assert r.json()["threshold_amount"] == 100


async def test_token_budgets_of_every_scope_shown_where_limits_are(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    admin = tenant.admin_headers
    r = await client.get("/v1/organization/token_budgets", headers=admin)
    assert r.json() == {
        "object": "organization.token_budget",
        **NONE,
        "enforcement": {"status": "inactive"},
    }
    r = await client.post(
        "/v1/organization/token_budgets", json={"tokens_per_month": 10**6}, headers=admin
    )
    assert r.status_code == 200 and r.json()["tokens_per_month"] == 10**6
    base = f"/v1/organization/projects/{tenant.project_id}"
    r = await client.post(
        base + "/token_budgets",
        json={"tokens_per_day": 5000, "tokens_per_month": 50000},
        headers=admin,
    )
    assert r.json()["object"] == "project.token_budget"
    assert (r.json()["tokens_per_day"], r.json()["tokens_per_month"]) == (5000, 50000)
    # Left out keeps its value; 0 or null removes it.
    r = await client.post(base + "/token_budgets", json={"tokens_per_day": 0}, headers=admin)
    assert (r.json()["tokens_per_day"], r.json()["tokens_per_month"]) == (0, 50000)
    r = await client.post(base + "/token_budgets", json={"tokens_per_month": None}, headers=admin)
    assert r.json()["tokens_per_month"] == 0
    assert (await client.get(base + "/token_budgets", headers=admin)).json()[
        "tokens_per_month"
    ] == 0

    keys = (await client.get(base + "/api_keys", headers=admin)).json()["data"]
    assert all(k["token_budgets"] == NONE for k in keys)
    key_id = keys[0]["id"]
    r = await client.post(
        f"{base}/api_keys/{key_id}/token_budgets", json={"tokens_per_day": 100}, headers=admin
    )
    assert r.status_code == 200 and r.json()["object"] == "organization.project.api_key"
    assert r.json()["token_budgets"] == {"tokens_per_day": 100, "tokens_per_month": 0}
    assert "rate_limits" in r.json()
    shown = (await client.get(f"{base}/api_keys/{key_id}", headers=admin)).json()
    assert shown["token_budgets"]["tokens_per_day"] == 100
    made = await client.post(f"{base}/api_keys", json={"name": "new"}, headers=admin)
    assert made.json()["token_budgets"] == NONE

    user_id, _ = await create_member(runtime, tenant, org_role="reader")
    r = await client.post(
        f"/v1/organization/users/{user_id}/token_budgets",
        json={"tokens_per_month": 7},
        headers=admin,
    )
    assert r.json()["object"] == "organization.user"
    assert r.json()["token_budgets"]["tokens_per_month"] == 7
    listed = (await client.get("/v1/organization/users", headers=admin)).json()["data"]
    assert next(u for u in listed if u["id"] == user_id)["token_budgets"]["tokens_per_month"] == 7
    assert (await client.get(f"/v1/organization/users/{user_id}", headers=admin)).json()[
        "token_budgets"
    ]["tokens_per_month"] == 7

    for body, param in (
        ({"tokens_per_day": -1}, "tokens_per_day"),
        ({"tokens_per_day": "5"}, "tokens_per_day"),
        ({"tokens_per_month": 10**16}, "tokens_per_month"),
        ({"max_tokens_per_1_day": 5}, "max_tokens_per_1_day"),
    ):
        r = await client.post("/v1/organization/token_budgets", json=body, headers=admin)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, body


async def test_roles_and_tenants(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    base = f"/v1/organization/projects/{tenant.project_id}"
    spend = {"threshold_amount": 100, "currency": "USD", "interval": "month"}
    # A project's owner reads its budgets but cannot lift them; it sets its keys'.
    _, owner = await create_member(runtime, tenant, project_role="owner")
    assert (await client.get(base + "/token_budgets", headers=bearer(owner))).status_code == 200
    for path, body in (("/spend_limit", spend), ("/token_budgets", {"tokens_per_day": 1})):
        assert (await client.post(base + path, json=body, headers=bearer(owner))).status_code == 403
    assert (await client.delete(base + "/spend_limit", headers=bearer(owner))).status_code == 403
    keys = (await client.get(base + "/api_keys", headers=bearer(owner))).json()["data"]
    r = await client.post(
        f"{base}/api_keys/{keys[0]['id']}/token_budgets",
        json={"tokens_per_day": 1},
        headers=bearer(owner),
    )
    assert r.status_code == 200
    # Readers read; project keys never administer.
    _, reader = await create_member(runtime, tenant, org_role="reader", project_role=None)
    assert (
        await client.get("/v1/organization/token_budgets", headers=bearer(reader))
    ).status_code == 200
    r = await client.post("/v1/organization/spend_limit", json=spend, headers=bearer(reader))
    assert r.status_code == 403
    r = await client.get("/v1/organization/spend_limit", headers=tenant.project_headers)
    assert r.status_code == 403
    # Another organization sees nothing of this one's.
    other = await create_tenant(runtime)
    await client.post("/v1/organization/spend_limit", json=spend, headers=tenant.admin_headers)
    r = await client.get("/v1/organization/spend_limit", headers=other.admin_headers)
    assert r.status_code == 404
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", base + "/spend_limit", None),
        ("POST", base + "/spend_limit", spend),
        ("POST", base + "/token_budgets", {"tokens_per_day": 1}),
        ("POST", f"{base}/api_keys/{keys[0]['id']}/token_budgets", {"tokens_per_day": 1}),
        ("POST", f"/v1/organization/users/{tenant.owner_user_id}/token_budgets", {}),
    ]
    for method, path, sent in calls:
        r = await client.request(method, path, json=sent, headers=other.admin_headers)
        assert r.status_code == 404, (method, path)
    # A key of another project of the same organization is not this project's.
    second = await create_project(runtime, tenant)
    r = await client.post(
        f"/v1/organization/projects/{second}/api_keys/{keys[0]['id']}/token_budgets",
        json={"tokens_per_day": 1},
        headers=tenant.admin_headers,
    )
    assert r.status_code == 404


async def test_budgets_are_enforced_on_the_model_endpoints(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, fake: FakeUpstream
) -> None:
    admin, headers = tenant.admin_headers, tenant.project_headers
    # A token budget on the project's key: 40 tokens today; one call uses 40.
    keys = (
        await client.get(f"/v1/organization/projects/{tenant.project_id}/api_keys", headers=admin)
    ).json()["data"]
    r = await client.post(
        f"/v1/organization/projects/{tenant.project_id}/api_keys/{keys[0]['id']}/token_budgets",
        json={"tokens_per_day": 40},
        headers=admin,
    )
    assert r.status_code == 200
    fake.usage = {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}
    first = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status_code == 200
    assert not any(name.startswith("x-ratelimit") for name in first.headers)  # no rate limits
    before = _refusals(await client.get("/metrics", headers=METRICS_AUTH), "token_budget")
    for path, body in (
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "m2", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "m1", "input": "hi"}),
    ):
        r = await client.post(path, json=body, headers=headers)
        assert r.status_code == 429, (path, r.text)
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
        assert error["message"].startswith("You exceeded your current quota")
        assert f"API key {keys[0]['id']}" in error["message"]
        assert 0 < int(r.headers["retry-after"]) <= 86400  # until midnight, UTC
        assert r.headers["x-should-retry"] == "false"
    assert fake.calls == 1
    after = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert _refusals(after, "token_budget") == before + 3
    assert tenant.project_id not in after and keys[0]["id"] not in after
    # The key's object says so; the project's budget object is unaffected.
    r = await client.get("/v1/organization/token_budgets", headers=admin)
    assert r.json()["enforcement"]["status"] == "inactive"

    # A spend limit: 1 cent a month for the organization; m1 costs $10/$30 per 1M tokens,
    # so 700 tokens in and 100 out are a cent. m2 has no price: spend limits leave it be.
    await client.post(
        f"/v1/organization/projects/{tenant.project_id}/api_keys/{keys[0]['id']}/token_budgets",
        json={"tokens_per_day": None},
        headers=admin,
    )
    await priced(runtime, tenant)
    r = await client.post(
        "/v1/organization/spend_limit",
        json={"threshold_amount": 1, "currency": "USD", "interval": "month"},
        headers=admin,
    )
    assert r.json()["enforcement"]["status"] == "inactive"
    fake.usage = {"prompt_tokens": 700, "completion_tokens": 100, "total_tokens": 800}
    cheap = {**CHAT, "max_tokens": 1}  # reserves less than a cent
    assert (
        await client.post("/v1/chat/completions", json=cheap, headers=headers)
    ).status_code == 200
    r = await client.post("/v1/chat/completions", json=cheap, headers=headers)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert "monthly hard spend limit ($0.01) of organization" in r.json()["error"]["message"]
    r = await client.post("/v1/chat/completions", json={**cheap, "model": "m2"}, headers=headers)
    assert r.status_code == 200
    # What this instance's limiter holds says the limit is reached (the ledger will too).
    r = await client.get("/v1/organization/spend_limit", headers=admin)
    assert r.json()["enforcement"]["status"] == "enforcing"
    metrics = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert 'jan_rate_limit_refusals_total{reason="spend_limit",scope="organization"}' in metrics
    # Removed: served again at once.
    assert (await client.delete("/v1/organization/spend_limit", headers=admin)).status_code == 200
    assert (
        await client.post("/v1/chat/completions", json=cheap, headers=headers)
    ).status_code == 200


def _refusals(metrics: httpx.Response | str, reason: str) -> float:
    text = metrics if isinstance(metrics, str) else metrics.text
    prefix = f'jan_rate_limit_refusals_total{{reason="{reason}",scope="api_key"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0
