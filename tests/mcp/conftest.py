"""The real app served over HTTP on a free port, with Serper and web pages stood in for by
local servers; ``mcp_url`` is its ``/v1/mcp``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.conftest import make_settings
from tests.factories import Tenant, create_tenant
from tests.tools.fakes import SERPER_KEY, FakeSerper, serper, site
from tests.tools.http_server import serve

__all__ = ["serper", "site"]


@pytest.fixture
def settings(database_dsn: str, serper: tuple[FakeSerper, str]) -> Settings:
    return make_settings(
        database_dsn,
        serper_url=serper[1],
        serper_api_key=SERPER_KEY,
        jan_fetch_allowed_hosts=("127.0.0.1",),
        jan_tool_timeout_seconds=2.0,
        jan_fetch_max_bytes=64 * 1024,
    )


@pytest.fixture
async def app_url(runtime: Runtime) -> AsyncIterator[str]:
    app = create_app(runtime)
    await runtime.open()
    async with serve(app) as base:
        yield base


@pytest.fixture
def mcp_url(app_url: str) -> str:
    return f"{app_url}/v1/mcp"


@pytest.fixture
async def tenant(runtime: Runtime, app_url: str) -> Tenant:
    return await create_tenant(runtime)
