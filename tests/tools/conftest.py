"""Tool tests run the real ToolBox (real database for quotas) against local servers.

``make_box(**settings)`` opens a runtime with those settings (127.0.0.1 allow-listed, short
limits) and returns its ToolBox and a principal for a fresh tenant's project.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from functions.common.outbound import Outbound
from functions.common.principal import Principal
from functions.common.runtime import Runtime
from functions.services.toolbox.toolbox import ToolBox
from tests.conftest import make_settings
from tests.factories import create_tenant
from tests.tools.fakes import serper, site

__all__ = ["MakeBox", "make_box", "serper", "site"]
MakeBox = Callable[..., Awaitable[tuple[ToolBox, Principal]]]
TEST_LIMITS: dict[str, Any] = {
    "jan_fetch_allowed_hosts": ("127.0.0.1",),
    "jan_tool_timeout_seconds": 2.0,
    "jan_fetch_max_bytes": 64 * 1024,
}


@pytest.fixture
async def make_box(database_dsn: str) -> AsyncIterator[MakeBox]:
    opened: list[Runtime] = []

    async def make(**overrides: Any) -> tuple[ToolBox, Principal]:
        runtime = Runtime(make_settings(database_dsn, **{**TEST_LIMITS, **overrides}))
        opened.append(runtime)
        outbound = Outbound()
        box = ToolBox(runtime, outbound)
        runtime.manage(outbound, box)
        await runtime.open()
        tenant = await create_tenant(runtime)
        principal = Principal(
            kind="project_key",
            organization_id=tenant.organization_id,
            project_id=tenant.project_id,
        )
        return box, principal

    yield make
    for runtime in opened:
        await runtime.close()
