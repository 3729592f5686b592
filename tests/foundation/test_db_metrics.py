"""The database pools' gauges on /metrics: the connections each pool holds (busy, idle), its
ceiling (DB_POOL_MAX_SIZE) and whether each reader is in rotation, read at scrape time."""

from __future__ import annotations

import re

import httpx
from pydantic import SecretStr

from functions.app import create_app
from functions.common.runtime import Runtime
from tests.conftest import METRICS_AUTH, make_settings


def gauge(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name}{{{wanted}}} not in /metrics"
    return float(found.group(1))


async def test_pool_gauges_follow_the_pools(database_dsn: str) -> None:
    settings = make_settings(
        database_dsn,
        jan_function="conversations",
        db_pool_max_size=4,
        db_postgresql_read_dsns=(SecretStr(database_dsn),),  # a "replica": the same server
    )
    runtime = Runtime(settings)
    app = create_app(runtime)
    await runtime.open()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def scrape() -> str:
                r = await client.get("/metrics", headers=METRICS_AUTH)
                assert r.status_code == 200
                return r.text

            before = await scrape()
            assert gauge(before, "jan_db_pool_max_connections", pool="writer") == 4
            assert gauge(before, "jan_db_pool_max_connections", pool="read1") == 4
            assert gauge(before, "jan_db_reader_healthy", pool="read1") == 1
            busy = gauge(before, "jan_db_pool_connections", pool="writer", state="busy")
            async with runtime.db.writer.acquire(), runtime.db.writer.acquire():
                held = await scrape()
                assert gauge(held, "jan_db_pool_connections", pool="writer", state="busy") == (
                    busy + 2
                )
            after = await scrape()
            assert gauge(after, "jan_db_pool_connections", pool="writer", state="busy") == busy
            assert gauge(after, "jan_db_pool_connections", pool="writer", state="idle") >= 2
    finally:
        await runtime.close()
    closed = generate_text()
    assert 'jan_db_pool_max_connections{pool="writer"}' not in closed  # gone with its runtime


def generate_text() -> str:
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY).decode()
