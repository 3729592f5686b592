"""Model discovery in the background: stored providers are polled a few at a time, so
one tenant's dead endpoints do not hold up everyone else's (nor the upkeep loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from functions.services.providers import store
from tests.conftest import component
from tests.factories import create_tenant


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_stale_providers_are_discovered_concurrently(
    client: httpx.AsyncClient, runtime: Runtime, silent_url: str
) -> None:
    tenant = await create_tenant(runtime)
    for n in range(4):
        await store.insert_provider(
            runtime.db.writer,
            id=f"prov_silent{n}",
            organization_id=tenant.organization_id,
            project_id=None,
            name=f"silent {n}",
            kind="vllm",
            base_urls=[silent_url],
            api_key_ciphertext=None,
            static_models=[],
            active=True,
        )
    catalog = component(runtime, Inference).catalog
    catalog.providers.discovery_timeout = 0.5
    await catalog.refresh()
    started = time.perf_counter()
    await catalog.discover_stale()
    assert time.perf_counter() - started < 1.5  # one by one: four timeouts, 2 s
