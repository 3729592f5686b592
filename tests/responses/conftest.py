from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.conftest import make_settings
from tests.conversations.tenants import stranger, tenant
from tests.responses.processes import callers, gateway, gateway_database
from tests.responses.upstream import ScriptedUpstream
from tests.tools.http_server import serve_app

# End-to-end fixtures (real predictor and gateway processes, session-scoped); callers.
__all__ = ["callers", "gateway", "gateway_database", "stranger", "tenant"]


@pytest.fixture(scope="session")
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def settings(database_dsn: str, upstream: ScriptedUpstream) -> Settings:
    upstream.reset()
    return make_settings(database_dsn, jan_inference_model_url=upstream.url)


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[str]:
    """The app on a real port (instead of `client`): its base URL."""
    async with serve_app(runtime) as base:
        yield base
