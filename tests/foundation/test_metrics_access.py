"""`/metrics` names every tenant's models and providers, so only the operator's scraper
reads it: with JAN_METRICS_TOKEN set, the bearer token is required; with none set, only
a loopback client of a local embedded install (`make run`) is answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from functions.app import create_app
from functions.common.runtime import Runtime
from tests.conftest import METRICS_AUTH, METRICS_TOKEN, make_settings


@asynccontextmanager
async def _client(
    dsn: str, peer: str = "127.0.0.1", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(make_settings(dsn, jan_function="admin", **overrides))
    app = create_app(runtime)  # /metrics needs no database: the pools are not opened
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c
    finally:
        await runtime.close()


async def test_with_a_token_set_metrics_require_it(database_dsn: str) -> None:
    async with _client(database_dsn) as client:
        missing = await client.get("/metrics")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"]["code"] == "invalid_metrics_token"
        assert "jan_http_requests_total" not in missing.text
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = await client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"})
        assert basic.status_code == 401
        ok = await client.get("/metrics", headers=METRICS_AUTH)
        assert ok.status_code == 200 and "jan_http_requests_total" in ok.text


async def test_without_a_token_metrics_are_off_unless_local_and_loopback(
    database_dsn: str,
) -> None:
    # An install with an external database (any deployment): off, whoever asks.
    async with _client(database_dsn, jan_metrics_token=None) as client:
        off = await client.get("/metrics")
        assert off.status_code == 403 and off.json()["error"]["code"] == "metrics_disabled"
    empty: dict[str, Any] = {"jan_metrics_token": SecretStr("")}
    async with _client(database_dsn, **empty) as client:
        assert (await client.get("/metrics")).status_code == 403
    # Local embedded mode (`make run`): answered on loopback only, although it listens on
    # every interface.
    local: dict[str, Any] = {"jan_metrics_token": None, "jan_embedded": True}
    async with _client(database_dsn, **local) as client:
        assert (await client.get("/metrics")).status_code == 200
    async with _client(database_dsn, peer="::1", **local) as client:
        assert (await client.get("/metrics")).status_code == 200
    async with _client(database_dsn, peer="192.168.1.20", **local) as client:
        assert (await client.get("/metrics")).status_code == 403
