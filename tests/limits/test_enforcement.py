"""Limits set through the Administration API hold on every model endpoint: 429 in OpenAI's
envelope with Retry-After once reached, OpenAI's x-ratelimit-* headers on every answer,
tokens reserved at admission and reconciled with the upstream's usage."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.conftest import METRICS_AUTH
from tests.factories import Tenant, bearer, create_member, create_project_key
from tests.limits.support import set_project_limits

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


def limits_of(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("x-ratelimit-")}


def assert_rate_limited(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert int(r.headers["retry-after"]) >= 1 and int(r.headers["retry-after-ms"]) > 0
    return error


async def test_requests_per_minute_on_chat_completions(
    client: httpx.AsyncClient, tenant: Tenant, fake: FakeUpstream
) -> None:
    await set_project_limits(
        client, tenant.admin_headers, tenant.project_id, "m1", max_requests_per_1_minute=2
    )
    first = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    second = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    assert first.status_code == second.status_code == 200
    assert limits_of(first)["x-ratelimit-limit-requests"] == "2"
    assert limits_of(first)["x-ratelimit-remaining-requests"] == "1"
    assert limits_of(second)["x-ratelimit-remaining-requests"] == "0"
    assert limits_of(second)["x-ratelimit-reset-requests"].endswith("s")
    refused = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    error = assert_rate_limited(refused)
    assert "requests per min (RPM)" in error["message"] and "Limit 2" in error["message"]
    assert refused.headers["retry-after"] == "30"  # 2 a minute: one more in 30 s
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert fake.calls == 2  # the refused call never reached the model
    # Another model of the same project has no limit: no headers, no refusal.
    other = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "m2"}, headers=tenant.project_headers
    )
    assert other.status_code == 200 and limits_of(other) == {}


async def test_completions_embeddings_and_chat_share_the_model_limit(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await set_project_limits(
        client, tenant.admin_headers, tenant.project_id, "m1", max_requests_per_1_minute=3
    )
    headers = tenant.project_headers
    calls = [
        ("/v1/completions", {"model": "m1", "prompt": "hi", "max_tokens": 5}),
        ("/v1/embeddings", {"model": "m1", "input": "hi"}),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
    ]
    for path, body in calls:
        r = await client.post(path, json=body, headers=headers)
        assert r.status_code == 200, (path, r.text)
        assert "x-ratelimit-remaining-requests" in r.headers, path
    for path, body in calls:
        assert_rate_limited(await client.post(path, json=body, headers=headers))


async def test_tokens_are_reserved_and_reconciled_streamed_or_not(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await set_project_limits(
        client, tenant.admin_headers, tenant.project_id, "m1", max_tokens_per_1_minute=600
    )
    headers = tenant.project_headers
    # 600 a minute refill 10 a second: figures below allow for a few seconds of refill.
    slack = 30

    def remaining(r: httpx.Response) -> int:
        assert r.status_code == 200, r.text
        return int(r.headers["x-ratelimit-remaining-tokens"])

    # Not streamed: the answer's headers come after the call ended, reconciled with the
    # upstream's usage (the fake reports 12 tokens): the reservation of 500+ is back.
    body = {**CHAT, "max_tokens": 500}
    r = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert 600 - 12 <= remaining(r) <= 600
    # Streamed: the headers go out while the reservation (bytes/4 + max_tokens) is held.
    streamed = {**body, "stream": True}
    # (The upstream gets stream_options added for its usage: 41 bytes more to estimate.)
    sent = len(httpx.Request("POST", "/", json=streamed).content) + 41
    reserved = sent // 4 + 500
    r = await client.post("/v1/chat/completions", json=streamed, headers=headers)
    assert "data: [DONE]" in r.text
    assert 600 - 12 - reserved <= remaining(r) <= 600 - 12 - reserved + slack
    # … and reconciled once the stream ended.
    r = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert 600 - 36 <= remaining(r) <= 600
    # A reservation that does not fit is refused before reaching the model.
    r = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 599}, headers=headers)
    error = assert_rate_limited(r)
    assert "tokens per min (TPM)" in error["message"]
    assert r.headers["x-ratelimit-limit-tokens"] == "600"


async def test_upstream_errors_carry_the_headers_too(
    client: httpx.AsyncClient, tenant: Tenant, fake: FakeUpstream
) -> None:
    await set_project_limits(
        client, tenant.admin_headers, tenant.project_id, "m1", max_requests_per_1_minute=10
    )
    fake.mode = "refuse400"
    r = await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    assert r.status_code == 400
    assert r.headers["x-ratelimit-limit-requests"] == "10"
    assert r.headers["x-ratelimit-remaining-requests"] == "9"


async def test_key_user_and_service_account_limits(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    admin = tenant.admin_headers
    base = f"/v1/organization/projects/{tenant.project_id}"
    # A key of its own with 1 request a minute; the tenant's other key is not limited.
    limited = await create_project_key(runtime, tenant, name="limited")
    keys = (await client.get(f"{base}/api_keys", headers=admin)).json()["data"]
    key_id = next(k["id"] for k in keys if k["name"] == "limited")
    r = await client.post(
        f"{base}/api_keys/{key_id}/rate_limits",
        json={"max_requests_per_1_minute": 1},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "organization.project.api_key"
    assert r.json()["rate_limits"]["max_requests_per_1_minute"] == 1
    shown = (await client.get(f"{base}/api_keys/{key_id}", headers=admin)).json()
    assert shown["rate_limits"] == {
        "max_requests_per_1_minute": 1,
        "max_tokens_per_1_minute": 0,
        "max_requests_per_1_day": 0,
        "max_tokens_per_1_day": 0,
        "max_concurrent_requests": 0,
    }
    r = await client.post(
        "/v1/embeddings", json={"model": "m2", "input": "x"}, headers=bearer(limited)
    )
    assert r.status_code == 200
    r = await client.post(
        "/v1/embeddings", json={"model": "m2", "input": "x"}, headers=bearer(limited)
    )
    assert "API key" in assert_rate_limited(r)["message"]
    r = await client.post(
        "/v1/embeddings", json={"model": "m2", "input": "x"}, headers=tenant.project_headers
    )
    assert r.status_code == 200

    # A user: their own calls (JWT) count, and so do calls with the keys they own.
    user_id, token = await create_member(runtime, tenant, org_role="reader")
    r = await client.post(
        f"/v1/organization/users/{user_id}/rate_limits",
        json={"max_requests_per_1_day": 1},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["rate_limits"]["max_requests_per_1_day"] == 1
    users = (await client.get("/v1/organization/users", headers=admin)).json()["data"]
    listed_user = next(u for u in users if u["id"] == user_id)
    assert listed_user["rate_limits"]["max_requests_per_1_day"] == 1
    assert all("rate_limits" in u for u in users)
    jwt = bearer(token)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=jwt)).status_code == 200
    r = await client.post("/v1/chat/completions", json=CHAT, headers=jwt)
    assert "requests per day (RPD)" in assert_rate_limited(r)["message"]

    # A service account: its key counts against the account's limits.
    made = await client.post(f"{base}/service_accounts", json={"name": "bot"}, headers=admin)
    account = made.json()
    assert account["rate_limits"]["max_concurrent_requests"] == 0
    r = await client.post(
        f"{base}/service_accounts/{account['id']}/rate_limits",
        json={"max_requests_per_1_minute": 1, "max_tokens_per_1_minute": None},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["rate_limits"]["max_requests_per_1_minute"] == 1
    listed = (await client.get(f"{base}/service_accounts", headers=admin)).json()["data"]
    assert listed[0]["rate_limits"]["max_requests_per_1_minute"] == 1
    bot = bearer(account["api_key"]["value"])
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bot)).status_code == 200
    r = await client.post("/v1/chat/completions", json=CHAT, headers=bot)
    assert "service account" in assert_rate_limited(r)["message"]


async def test_concurrent_requests(
    client: httpx.AsyncClient, tenant: Tenant, fake: FakeUpstream
) -> None:
    await set_project_limits(
        client, tenant.admin_headers, tenant.project_id, "m1", max_concurrent_requests=1
    )
    fake.mode, fake.delay = "slow", 0.3
    headers = tenant.project_headers
    first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT, headers=headers))
    while fake.calls == 0:  # the first call is at the model now
        await asyncio.sleep(0.01)
    second = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert "concurrent requests" in assert_rate_limited(second)["message"]
    assert (await first).status_code == 200
    fake.mode = "ok"
    third = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert third.status_code == 200  # its slot came back when the first ended


async def test_guests_get_the_default_limits(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    _, token = await create_member(runtime, tenant, guest=True)
    guest = bearer(token)
    for _ in range(3):  # JAN_GUEST_REQUESTS_PER_MINUTE in this suite
        r = await client.post("/v1/chat/completions", json=CHAT, headers=guest)
        assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-requests"] == "3"
    error = assert_rate_limited(await client.post("/v1/chat/completions", json=CHAT, headers=guest))
    assert "guest user" in error["message"]
    # Members are not guests.
    _, member = await create_member(runtime, tenant)
    for _ in range(4):
        r = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(member))
        assert r.status_code == 200


async def test_refusals_are_counted_by_reason(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await set_project_limits(
        client, tenant.admin_headers, tenant.project_id, "m1", max_requests_per_1_day=1
    )
    await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    before = _refusals(await client.get("/metrics", headers=METRICS_AUTH))
    await client.post("/v1/chat/completions", json=CHAT, headers=tenant.project_headers)
    after = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert _refusals(after) == before + 1
    assert tenant.project_id not in after  # no tenant IDs in the labels


def _refusals(metrics: httpx.Response | str) -> float:
    text = metrics if isinstance(metrics, str) else metrics.text
    prefix = 'jan_rate_limit_refusals_total{reason="requests_per_day",scope="project"} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0
