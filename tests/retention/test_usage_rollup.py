"""The hourly and daily rollups, written with each batch of ledger rows, are what hour and
day usage reports read: they stay once the per-request rows are gone; minute reports read
the rows. Instances adding to the same hours and days at once lose nothing."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

from functions.common.runtime import Runtime
from functions.services.ledger import UsageRecord, UsageRecorder
from tests.factories import create_tenant

HOUR, DAY = 3600, 86400
URL = "/v1/organization/usage/completions"


def rec(org: str, at: float, *, project: str | None, key: str | None, tokens: int) -> UsageRecord:
    return UsageRecord(
        created_at=datetime.fromtimestamp(at, UTC), organization_id=org, project_id=project,
        api_key_id=key, user_id=None, model="m1", provider_id=None, endpoint=None,
        operation="chat.completions", streamed=False, input_tokens=tokens, output_tokens=1,
        input_cached_tokens=0, latency_ms=5, ttft_ms=None, status=200, cost_picodollars=7,
        reserved_tokens=3,
    )  # fmt: skip


async def report(client: httpx.AsyncClient, headers: dict[str, str], **params: str | int) -> object:
    r = await client.get(URL, params=params, headers=headers)
    assert r.status_code == 200, r.text
    out = []
    for bucket in r.json()["data"]:
        results = [
            (x["project_id"], x["num_model_requests"], x["input_tokens"]) for x in bucket["results"]
        ]
        if results:
            out.append((bucket["start_time"], results))
    return out


async def test_hour_and_day_reports_read_the_rollup(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    org = tenant.organization_id
    day0 = (int(time.time()) // DAY - 2) * DAY
    recorder = UsageRecorder(runtime, batch_size=1000, idle_seconds=60)
    for at, project, tokens in (
        (day0 + 60, "proj_a", 1),
        (day0 + 120, "proj_a", 2),
        (day0 + HOUR + 5, None, 4),
        (day0 + DAY + 30, "proj_b", 8),
    ):
        key = "key_1" if project else None
        recorder.record(rec(org, at, project=project, key=key, tokens=tokens))
    async with runtime.db.writer.acquire() as conn:
        await recorder.flush(conn)
        hourly = await conn.fetch(
            "SELECT hour, project_id, api_key_id, requests, input_tokens, cost_picodollars,"
            " reserved_tokens FROM usage_hourly WHERE organization_id = $1 ORDER BY hour",
            org,
        )
        daily = await conn.fetch(
            "SELECT day, project_id, requests, input_tokens FROM usage_daily"
            " WHERE organization_id = $1 ORDER BY day, project_id",
            org,
        )
    assert [tuple(r) for r in hourly] == [
        (datetime.fromtimestamp(day0, UTC), "proj_a", "key_1", 2, 3, 14, 6),
        (datetime.fromtimestamp(day0 + HOUR, UTC), "", "", 1, 4, 7, 3),
        (datetime.fromtimestamp(day0 + DAY, UTC), "proj_b", "key_1", 1, 8, 7, 3),
    ]
    assert [tuple(r) for r in daily] == [
        (datetime.fromtimestamp(day0, UTC), "", 1, 4),
        (datetime.fromtimestamp(day0, UTC), "proj_a", 2, 3),
        (datetime.fromtimestamp(day0 + DAY, UTC), "proj_b", 1, 8),
    ]
    h = tenant.admin_headers
    window = {"start_time": day0, "end_time": day0 + 2 * DAY}
    by_day = await report(client, h, bucket_width="1d", group_by="project_id", **window)
    assert by_day == [
        (day0, [("proj_a", 2, 3), (None, 1, 4)]),
        (day0 + DAY, [("proj_b", 1, 8)]),
    ]
    by_hour = await report(client, h, bucket_width="1h", limit=48, **window)
    by_minute = await report(
        client, h, bucket_width="1m", start_time=day0, end_time=day0 + 180, limit=3
    )
    assert by_minute == [(day0 + 60, [(None, 1, 1)]), (day0 + 120, [(None, 1, 2)])]

    # The per-request rows go (retention); hours and days stay, minutes go with them.
    await runtime.db.writer.execute("DELETE FROM usage_completions WHERE organization_id = $1", org)
    assert await report(client, h, bucket_width="1d", group_by="project_id", **window) == by_day
    assert await report(client, h, bucket_width="1h", limit=48, **window) == by_hour
    assert await report(client, h, bucket_width="1m", start_time=day0, end_time=day0 + 180) == []


async def test_instances_adding_to_the_same_hours_at_once_lose_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    now = time.time()
    recorders = [UsageRecorder(runtime, batch_size=50, idle_seconds=60) for _ in range(4)]
    for n, recorder in enumerate(recorders):
        for i in range(500):
            at, project = now - (i % 3) * HOUR, f"proj_{(i + n) % 7}"
            recorder.record(rec("org_busy", at, project=project, key=None, tokens=1))

    async def flush(recorder: UsageRecorder) -> int:
        async with runtime.db.writer.acquire() as conn:
            return await recorder.flush(conn)

    assert await asyncio.gather(*map(flush, recorders)) == [500] * 4
    for table in ("usage_hourly", "usage_daily"):
        total = await runtime.db.writer.fetchval(
            f"SELECT sum(requests) FROM {table} WHERE organization_id = 'org_busy'"  # noqa: S608
        )
        assert total == 2000, table
