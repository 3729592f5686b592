"""The whole app over ASGI in front of a fake upstream (models ``m1``, ``m2``), limits kept
in this process (``JAN_RATE_LIMIT_STORE=memory``); guests get 3 calls a minute."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.chat.fakes import FakeUpstream
from tests.conftest import make_settings
from tests.factories import Tenant, create_tenant


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = await FakeUpstream("builtin", models=("m1", "m2")).start()
    yield upstream
    await upstream.stop()


@pytest.fixture
def settings(database_dsn: str, fake: FakeUpstream) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=fake.base_url,
        jan_rate_limit_store="memory",
        jan_guest_requests_per_minute=3,
    )


@pytest.fixture
async def tenant(client: httpx.AsyncClient, runtime: Runtime) -> Tenant:
    return await create_tenant(runtime)
