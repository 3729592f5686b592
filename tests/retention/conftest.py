from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from functions.common.settings import Settings
from tests.conftest import make_settings
from tests.responses.upstream import ScriptedUpstream


@pytest.fixture(scope="session")
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def settings(database_dsn: str, upstream: ScriptedUpstream) -> Settings:
    upstream.reset()
    return make_settings(database_dsn, jan_inference_model_url=upstream.url)
