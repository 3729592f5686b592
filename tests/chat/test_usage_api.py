"""The usage ledger: batched writes off the request path, drained on stop, and read back
in OpenAI's usage shape."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx

from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from functions.services.ledger import UsageRecord, UsageRecorder
from tests.conftest import component
from tests.factories import create_tenant

DAY = 86400


def rec(
    org: str, *, at: float, model: str = "m1", project: str = "proj_a", tokens: int = 10
) -> UsageRecord:
    return UsageRecord(
        created_at=datetime.fromtimestamp(at, UTC), organization_id=org, project_id=project,
        api_key_id="key_a", user_id=None, model=model, provider_id="builtin", endpoint="http://x",
        operation="chat.completions", streamed=False, input_tokens=tokens, output_tokens=2 * tokens,
        input_cached_tokens=0, latency_ms=5, ttft_ms=None, status=200,
    )  # fmt: skip


async def test_records_wait_in_memory_and_drain_in_one_go(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    recorder = UsageRecorder(runtime, batch_size=1000, idle_seconds=60)
    for i in range(25):
        recorder.record(rec("org_d", at=time.time(), tokens=i))
    assert recorder.pending == 25
    async with runtime.db.writer.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM usage_completions") == 0
        await recorder.drain(conn)
        assert await conn.fetchval("SELECT count(*) FROM usage_completions") == 25
    assert recorder.pending == 0


async def test_runtime_close_drains_what_requests_queued(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    svc = component(runtime, Inference)
    svc.usage.idle_seconds = 60
    svc.usage.record(rec("org_c", at=time.time()))
    await runtime.close()
    import asyncpg

    assert runtime.settings.db_postgresql_write_dsn is not None
    conn = await asyncpg.connect(runtime.settings.db_postgresql_write_dsn.get_secret_value())
    try:
        assert await conn.fetchval("SELECT count(*) FROM usage_completions") == 1
    finally:
        await conn.close()


async def test_usage_in_openai_shape_with_buckets_groups_and_pages(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    org = tenant.organization_id
    day0 = (int(time.time()) // DAY - 3) * DAY
    svc = component(runtime, Inference)
    for record in (
        rec(org, at=day0 + 10, tokens=1),
        rec(org, at=day0 + 20, tokens=2, model="m2"),
        rec(org, at=day0 + DAY + 5, tokens=4, project="proj_b"),
        rec("org_other", at=day0 + 30, tokens=100),
    ):
        svc.usage.record(record)
    async with runtime.db.writer.acquire() as conn:
        await svc.usage.flush(conn)
    h = tenant.admin_headers
    url = "/v1/organization/usage/completions"
    r = await client.get(url, params={"start_time": day0, "end_time": day0 + 3 * DAY}, headers=h)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["object"] == "page" and page["has_more"] is False
    assert [len(b["results"]) for b in page["data"]] == [1, 1, 0]
    first = page["data"][0]["results"][0]
    assert first["object"] == "organization.usage.completions.result"
    assert (first["input_tokens"], first["output_tokens"], first["num_model_requests"]) == (3, 6, 2)
    assert first["model"] is None

    grouped = await client.get(
        url,
        params=[("start_time", day0), ("end_time", day0 + DAY), ("group_by", "model"),
                ("group_by", "project_id")],
        headers=h,
    )  # fmt: skip
    results = grouped.json()["data"][0]["results"]
    assert sorted((x["model"], x["input_tokens"]) for x in results) == [("m1", 1), ("m2", 2)]
    assert {x["project_id"] for x in results} == {"proj_a"}

    paged = await client.get(
        url, params={"start_time": day0, "end_time": day0 + 3 * DAY, "limit": 2}, headers=h
    )
    assert paged.json()["has_more"] is True and len(paged.json()["data"]) == 2
    rest = await client.get(
        url,
        params={"start_time": day0, "end_time": day0 + 3 * DAY, "limit": 2,
                "page": paged.json()["next_page"]},
        headers=h,
    )  # fmt: skip
    assert [b["start_time"] for b in rest.json()["data"]] == [day0 + 2 * DAY]

    hourly = await client.get(
        url, params={"start_time": day0, "end_time": day0 + 7200, "bucket_width": "1h",
                     "models": "m2"}, headers=h,
    )  # fmt: skip
    assert [len(b["results"]) for b in hourly.json()["data"]] == [1, 0]
    assert hourly.json()["data"][0]["results"][0]["input_tokens"] == 2


async def test_usage_needs_an_admin_and_valid_params(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    url = "/v1/organization/usage/completions"
    assert (
        await client.get(url, params={"start_time": 0}, headers=tenant.project_headers)
    ).status_code == 403
    cases: list[dict[str, str | int]] = [
        {},
        {"start_time": "x"},
        {"start_time": 0, "bucket_width": "2h"},
        {"start_time": 0, "group_by": "secret"},
        {"start_time": 0, "limit": 500},
        {"start_time": 0, "limit": 0},  # not "the default"
        {"start_time": 60, "end_time": 0},  # not "now"
    ]
    for params in cases:
        r = await client.get(url, params=params, headers=tenant.admin_headers)
        assert r.status_code == 400, params
