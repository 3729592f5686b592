"""The usage ledger at scale: a usage report over millions of rows, and the cost of writing.

    .venv/bin/python bench/bench_usage.py [rows]      (default 10000000)

In a scratch database made for the run on ``JAN_TEST_PG_DSN``'s server (default the local
one; dropped at the end), migrated as production is:

1. ``rows`` ledger rows over the last 90 days, written with one ``generate_series`` per
   million (into the monthly partitions), for one organization: 50 projects of 2 API keys
   each, each key its user's, two models per key, so about 200 keys x models are active
   every hour; then the hourly rollup built from them (one ``GROUP BY``), as the ledger
   writer would have left it.
2. The report: ``GET /v1/organization/usage/completions`` over the last 30 days in 1-day
   buckets grouped by project (the admin area over ASGI, as a dashboard asks it), 30 times
   after a warm-up: p50 and p90. The target is p50 ≤ 100 ms. For comparison, the same sums
   straight from the per-request rows (the report's query before the rollup), 3 times.
3. Writing: the recorder's flush (COPY and the rollups' upsert, in one transaction per
   2000 records) of 100 000 records into the partitioned ledger and into a plain table of
   the old layout, six times each, taking turns at going first, in records a second
   (median); and the plain table without the rollups (the writer before this issue), for
   what they cost.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functions.app import create_app
from functions.common import migrate
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services import ledger, tenancy
from functions.services.ledger import UsageRecord, UsageRecorder

ADMIN_DSN = os.environ.get("JAN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = 86400
SPAN_DAYS = 90
PROJECTS, KEYS_PER_PROJECT = 50, 2
WRITES = 100_000
ROUNDS = 6

# One ledger row per i in [lo, hi): spread evenly over the span, key i % 100 of project
# key // 2, the key's user, two models per key.
GENERATE = """
INSERT INTO usage_completions (created_at, organization_id, project_id, api_key_id, user_id,
                               model, provider_id, endpoint, operation, streamed,
                               input_tokens, output_tokens, input_cached_tokens, latency_ms,
                               ttft_ms, status, cost_picodollars, reserved_tokens)
SELECT $2::timestamptz + make_interval(secs => i * $3::float8),
       $1, 'proj_' || (i % 100) / 2, 'key_' || i % 100, 'user_' || i % 100,
       'model-' || ((i / 100) % 2 + 2 * (i % 100 % 3)), 'prov_bench', 'prov_bench/0',
       'chat.completions', i % 2 = 0, 50 + i % 500, 20 + i % 300, i % 50, 200 + i % 900,
       40 + i % 90, 200, (70 + i % 800) * 1000000, 1024
FROM generate_series($4::bigint, $5::bigint - 1) i
"""
ROLL_UP_ALL = """
INSERT INTO usage_hourly (organization_id, hour, project_id, api_key_id, user_id, model,
                          operation, requests, input_tokens, input_cached_tokens,
                          output_tokens, reserved_tokens, cost_picodollars)
SELECT organization_id, date_trunc('hour', created_at), coalesce(project_id, ''),
       coalesce(api_key_id, ''), coalesce(user_id, ''), model, operation, count(*),
       sum(input_tokens), sum(input_cached_tokens), sum(output_tokens),
       sum(reserved_tokens), sum(cost_picodollars)
FROM usage_completions GROUP BY 1, 2, 3, 4, 5, 6, 7;
INSERT INTO usage_daily (organization_id, day, project_id, api_key_id, user_id, model,
                         operation, requests, input_tokens, input_cached_tokens,
                         output_tokens, reserved_tokens, cost_picodollars)
SELECT organization_id, date_trunc('day', hour, 'UTC'), project_id, api_key_id, user_id,
       model, operation, sum(requests), sum(input_tokens), sum(input_cached_tokens),
       sum(output_tokens), sum(reserved_tokens), sum(cost_picodollars)
FROM usage_hourly GROUP BY 1, 2, 3, 4, 5, 6, 7
"""
RAW_REPORT = """
SELECT (floor(extract(epoch FROM created_at) / 86400) * 86400)::bigint AS bucket, project_id,
       sum(input_tokens), sum(output_tokens), sum(input_cached_tokens), count(*)
FROM usage_completions WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3
GROUP BY 1, 2 ORDER BY 1, 2
"""
PLAIN_TABLE = """
CREATE TABLE usage_completions_plain (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL, organization_id text NOT NULL, project_id text,
    api_key_id text, user_id text, model text NOT NULL, provider_id text, endpoint text,
    operation text NOT NULL, streamed boolean NOT NULL,
    input_tokens integer NOT NULL DEFAULT 0, output_tokens integer NOT NULL DEFAULT 0,
    input_cached_tokens integer NOT NULL DEFAULT 0, latency_ms integer NOT NULL,
    ttft_ms integer, status integer NOT NULL,
    cost_picodollars numeric NOT NULL DEFAULT 0, reserved_tokens integer NOT NULL DEFAULT 0
);
CREATE INDEX usage_completions_plain_org_time ON usage_completions_plain
    (organization_id, created_at);
"""


def dsn_for(database: str) -> str:
    return ADMIN_DSN.rpartition("/")[0] + "/" + database


def settings(dsn: str) -> Settings:
    return Settings(
        db_postgresql_write_dsn=SecretStr(dsn),
        jan_function="admin",
        jan_migrate_on_start=False,
        jan_housekeeping_interval_seconds=0,
        jwt_secret=SecretStr("bench-jwt-secret-0123456789abcdef0123456789"),
        apikey_secret=SecretStr("bench-apikey-secret-0123456789abcdef"),
        model_provider_secret=SecretStr("bench-provider-secret-0123456789abcdef"),
        jan_log_level="WARNING",
    )


def say(message: str) -> None:
    print(message, flush=True)


async def fill(conn: asyncpg.Connection, organization_id: str, rows: int, now: float) -> None:
    start = datetime.fromtimestamp(now - SPAN_DAYS * DAY, UTC)
    await conn.execute(
        "SELECT usage_partition_ensure($1::timestamptz - make_interval(days => d))"
        " FROM generate_series(0, $2, 10) d",
        datetime.fromtimestamp(now, UTC),
        SPAN_DAYS + 10,
    )
    step = SPAN_DAYS * DAY / rows
    began = time.perf_counter()
    chunk = 1_000_000
    for lo in range(0, rows, chunk):
        await conn.execute(GENERATE, organization_id, start, step, lo, min(rows, lo + chunk))
        done = min(rows, lo + chunk)
        say(f"  ledger: {done:,} rows ({time.perf_counter() - began:.0f} s)")
    began = time.perf_counter()
    await conn.execute(ROLL_UP_ALL)
    hourly = await conn.fetchval("SELECT count(*) FROM usage_hourly")
    daily = await conn.fetchval("SELECT count(*) FROM usage_daily")
    say(f"  rollups: {hourly:,} hourly, {daily:,} daily rows ({time.perf_counter() - began:.0f} s)")
    await conn.execute("VACUUM ANALYZE")


async def report(runtime: Runtime, admin_key: str, now: float) -> dict[str, Any]:
    app = create_app(runtime)
    await runtime.open()
    end = int(now) // DAY * DAY + DAY
    params = {
        "start_time": end - 30 * DAY,
        "end_time": end,
        "bucket_width": "1d",
        "group_by": "project_id",
        "limit": 31,
    }
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(3):  # warm-up: caches, prepared statements
            r = await client.get(
                "/v1/organization/usage/completions", params=params, headers=headers
            )
            assert r.status_code == 200, r.text
        times = []
        for _ in range(30):
            began = time.perf_counter()
            r = await client.get(
                "/v1/organization/usage/completions", params=params, headers=headers
            )
            times.append((time.perf_counter() - began) * 1000)
    body = r.json()
    requests = sum(x["num_model_requests"] for b in body["data"] for x in b["results"])
    return {
        "p50": statistics.median(times),
        "p90": statistics.quantiles(times, n=10)[-1],
        "requests": requests,
        "results": sum(len(b["results"]) for b in body["data"]),
        "window": (params["start_time"], end),
    }


def records(organization_id: str, count: int) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return [
        UsageRecord(
            created_at=now,
            organization_id=organization_id,
            project_id=f"proj_{i % 50}",
            api_key_id=f"key_{i % 100}",
            user_id=f"user_{i % 100}",
            model=f"model-{i % 4}",
            provider_id="prov_bench",
            endpoint="prov_bench/0",
            operation="chat.completions",
            streamed=True,
            input_tokens=100 + i % 50,
            output_tokens=40,
            input_cached_tokens=0,
            latency_ms=300,
            ttft_ms=40,
            status=200,
            cost_picodollars=12345,
            reserved_tokens=1024,
        )
        for i in range(count)
    ]


async def flush_rate(runtime: Runtime, conn: asyncpg.Connection, organization_id: str) -> float:
    recorder = UsageRecorder(runtime, batch_size=500)
    for record in records(organization_id, WRITES):
        recorder.record(record)
    began = time.perf_counter()
    written = await recorder.flush(conn)
    assert written == WRITES
    return WRITES / (time.perf_counter() - began)


async def writes(runtime: Runtime, dsn: str, organization_id: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    await conn.execute(PLAIN_TABLE)
    rates: dict[str, list[float]] = {"partitioned": [], "plain": [], "plain, no rollup": []}

    async def swap() -> None:  # the plain table takes the ledger's name, and back
        await conn.execute(
            "ALTER TABLE usage_completions RENAME TO usage_completions_swap;"
            "ALTER TABLE usage_completions_plain RENAME TO usage_completions;"
            "ALTER TABLE usage_completions_swap RENAME TO usage_completions_plain"
        )

    rollup_sql, rollup_args = ledger._ROLLUP, ledger._rollup

    def rollups(on: bool) -> None:
        """The writer with its rollups, or without (the writer before issue 12)."""
        ledger._ROLLUP = rollup_sql if on else "SELECT 1"
        ledger._rollup = rollup_args if on else (lambda records: [])  # type: ignore[assignment]

    async def partitioned() -> None:
        rates["partitioned"].append(await flush_rate(runtime, conn, organization_id))

    async def plain() -> None:
        await swap()
        try:
            rates["plain"].append(await flush_rate(runtime, conn, organization_id))
            rollups(False)
            rates["plain, no rollup"].append(await flush_rate(runtime, conn, organization_id))
        finally:
            rollups(True)
            await swap()

    try:
        for n in range(ROUNDS):  # in turn first: what runs later meets a busier table
            for step in (partitioned, plain) if n % 2 == 0 else (plain, partitioned):
                await step()
    finally:
        await conn.close()
    for name, values in rates.items():
        say(f"  {name}: " + ", ".join(f"{v:,.0f}" for v in values))
    return {name: statistics.median(values) for name, values in rates.items()}


async def main(rows: int) -> None:
    database = f"jan_bench_usage_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = dsn_for(database)
    runtime = Runtime(settings(dsn))
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.apply(conn)
            organization = await tenancy.create_organization(conn, name="bench")
            key = await tenancy.create_api_key(
                conn,
                apikey_secret=b"bench-apikey-secret-0123456789abcdef",
                kind="admin",
                organization_id=organization["id"],
                name="bench",
            )
            now = time.time()
            say(f"bench_usage: {rows:,} ledger rows over {SPAN_DAYS} days in {database}")
            await fill(conn, organization["id"], rows, now)
            size = await conn.fetchval(
                "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid)))"
                " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'usage_completions'::regclass"
            )
            hourly = await conn.fetchval(
                "SELECT pg_size_pretty(pg_total_relation_size('usage_hourly'))"
            )
            say(f"  sizes: ledger {size}, rollup {hourly}")
        finally:
            await conn.close()

        found = await report(runtime, key.plaintext, now)
        conn = await asyncpg.connect(dsn)
        try:
            start, end = (datetime.fromtimestamp(t, UTC) for t in found["window"])
            times, raw = [], []
            for _ in range(3):
                began = time.perf_counter()
                raw = await conn.fetch(RAW_REPORT, organization["id"], start, end)
                times.append((time.perf_counter() - began) * 1000)
        finally:
            await conn.close()
        assert sum(r["count"] for r in raw) == found["requests"], "rollup and rows disagree"
        say(
            f"report, 30 days x 1d buckets by project ({found['results']} results, "
            f"{found['requests']:,} requests): p50 {found['p50']:.1f} ms, "
            f"p90 {found['p90']:.1f} ms over 30 calls (target p50 ≤ 100 ms)"
        )
        say(f"  the same sums from the per-request rows: {statistics.median(times):.0f} ms")
        rates = await writes(runtime, dsn, organization["id"])
        say(
            f"flush, records/s (median of {ROUNDS} x 100 000): "
            + ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
        )
        say(f"  partitioned / plain: {rates['partitioned'] / rates['plain']:.2f}")
    finally:
        await runtime.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000))
