from __future__ import annotations

import httpx
import pytest

from functions.common.runtime import Runtime
from tests.conversations.tenants import Tenant, make_tenant


@pytest.fixture
async def tenant(client: httpx.AsyncClient, runtime: Runtime) -> Tenant:
    return await make_tenant(runtime)


@pytest.fixture
async def stranger(client: httpx.AsyncClient, runtime: Runtime) -> Tenant:
    """Another organization altogether."""
    return await make_tenant(runtime)
