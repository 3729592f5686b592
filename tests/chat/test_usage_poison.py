"""One bad usage record must not stop the ledger: a batch the table refuses is split until
the bad records stand alone; they are set aside, logged and counted, and everyone else's
usage is written, by the background flush and by the drain at shutdown alike. Counts an
upstream reports are clamped to what the columns hold."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from functions.common.db import AnyConnection
from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from functions.services.ledger import INT_MAX, UsageRecord, UsageRecorder
from tests.chat.fakes import FakeUpstream
from tests.conftest import component
from tests.factories import create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
REJECTED = "jan_usage_records_rejected_total"


def rejected_total() -> float:
    return REGISTRY.get_sample_value(REJECTED) or 0.0


def good(org: str, n: int) -> UsageRecord:
    return UsageRecord(
        created_at=datetime.fromtimestamp(time.time(), UTC), organization_id=org,
        project_id="proj_a", api_key_id="key_a", user_id=None, model="m1",
        provider_id="builtin", endpoint="http://x", operation="chat.completions",
        streamed=False, input_tokens=n, output_tokens=1, input_cached_tokens=0,
        latency_ms=5, ttft_ms=None, status=200,
    )  # fmt: skip


def poisoned_queue() -> tuple[list[UsageRecord], list[UsageRecord]]:
    """Twenty good records of two organizations with two bad ones among them: a count
    past the integer column (refused by the driver) and a NUL byte in a text column
    (refused by PostgreSQL)."""
    records = [good("org_a" if n % 2 else "org_b", n) for n in range(20)]
    bad = [
        replace(good("org_evil", 0), input_tokens=3_000_000_000),
        replace(good("org_evil", 0), model="m\x00"),
    ]
    records.insert(7, bad[0])
    records.insert(15, bad[1])
    return records, bad


async def written(conn: AnyConnection) -> list[tuple[str, int]]:
    rows = await conn.fetch("SELECT organization_id, input_tokens FROM usage_completions")
    return sorted((r["organization_id"], r["input_tokens"]) for r in rows)


EXPECTED = sorted(("org_a" if n % 2 else "org_b", n) for n in range(20))


@pytest.mark.parametrize("path", ["flush", "drain"])
async def test_bad_records_are_set_aside_and_the_rest_is_written(
    runtime: Runtime, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    recorder = UsageRecorder(runtime, batch_size=3, idle_seconds=60)  # batches of 12
    records, bad = poisoned_queue()
    for record in records:
        recorder.record(record)
    before = rejected_total()
    async with runtime.db.writer.acquire() as conn:
        with caplog.at_level(logging.ERROR, logger="functions.services.ledger"):
            if path == "flush":
                assert await recorder.flush(conn) == 20
            else:
                await recorder.drain(conn)
        assert await written(conn) == EXPECTED
    assert recorder.pending == 0
    assert rejected_total() == before + 2
    assert list(recorder.rejected) == bad
    logged = [r for r in caplog.records if r.getMessage() == "usage record rejected"]
    assert [(r.organization, r.error) for r in logged] == [  # type: ignore[attr-defined]
        ("org_evil", "OverflowError"),
        ("org_evil", "CharacterNotInRepertoireError"),
    ]


async def test_the_background_flush_goes_on_past_a_bad_record(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    recorder = UsageRecorder(runtime, batch_size=3, idle_seconds=0.02)
    records, _ = poisoned_queue()
    await recorder.start()
    try:
        for record in records:
            recorder.record(record)
        async with asyncio.timeout(10), runtime.db.writer.acquire() as conn:
            while await written(conn) != EXPECTED:
                await asyncio.sleep(0.02)
    finally:
        await recorder.stop()
    assert recorder.pending == 0 and len(recorder.rejected) == 2


async def test_a_database_failure_keeps_every_record_queued(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Only records refused for their values are set aside: a broken connection is not
    their fault, so nothing is rejected and everything waits for the next try."""
    recorder = UsageRecorder(runtime, batch_size=3, idle_seconds=60)
    records, _ = poisoned_queue()
    for record in records:
        recorder.record(record)
    assert runtime.settings.db_postgresql_write_dsn is not None
    conn = await asyncpg.connect(runtime.settings.db_postgresql_write_dsn.get_secret_value())
    await conn.close()
    before = rejected_total()
    with pytest.raises(asyncpg.InterfaceError):
        await recorder.flush(conn)
    assert recorder.pending == 22 and not recorder.rejected
    assert rejected_total() == before
    async with runtime.db.writer.acquire() as live:
        assert await recorder.flush(live) == 20
        assert await written(live) == EXPECTED


async def test_absurd_usage_from_a_tenants_upstream_is_clamped_and_others_still_land(
    runtime: Runtime, client: httpx.AsyncClient, upstreams: Start
) -> None:
    evil = await upstreams("evil", models=("evil-m",))
    evil.usage = {
        "prompt_tokens": 3_000_000_000,
        "completion_tokens": 10**15,
        "total_tokens": -1,
        "prompt_tokens_details": {"cached_tokens": 2**40},
    }
    a, b = await create_tenant(runtime), await create_tenant(runtime)
    created = await client.post(
        "/v1/organization/models/providers",
        json={"name": "evil", "kind": "vllm", "base_url": evil.base_url},
        headers=a.admin_headers,
    )
    assert created.status_code == 200, created.text
    svc = component(runtime, Inference)
    svc.usage.idle_seconds = 0.02
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    plain = await client.post(
        "/v1/chat/completions", json={**ask, "model": "evil-m"}, headers=a.project_headers
    )
    assert plain.status_code == 200 and plain.json()["usage"] == evil.usage
    streamed = await client.post(
        "/v1/chat/completions",
        json={**ask, "model": "evil-m", "stream": True},
        headers=a.project_headers,
    )
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    other = await client.post(
        "/v1/chat/completions", json={**ask, "model": "m1"}, headers=b.project_headers
    )
    assert other.status_code == 200

    query = "SELECT organization_id, input_tokens, output_tokens, input_cached_tokens FROM "
    rows: list[asyncpg.Record] = []
    async with asyncio.timeout(10):  # the background flush writes them
        while len(rows) < 3:
            await asyncio.sleep(0.02)
            rows = await runtime.db.writer.fetch(query + "usage_completions")
    assert sorted(tuple(r) for r in rows) == sorted(
        [
            (a.organization_id, INT_MAX, INT_MAX, INT_MAX),
            (a.organization_id, INT_MAX, INT_MAX, INT_MAX),
            (b.organization_id, 7, 5, 0),
        ]
    )
