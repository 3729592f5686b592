"""Callers for the conversations/responses tests, made with the shared tenant factories:
a project's owner (JWT), another member of the same project (JWT), and a project key.
The `tenant` and `stranger` fixtures are offered by both suites' conftest files."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from functions.common.runtime import Runtime
from tests.factories import bearer, create_member, create_tenant


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    project_id: str
    user_id: str
    user: dict[str, str]
    other_user: dict[str, str]
    key: dict[str, str]


async def make_tenant(runtime: Runtime) -> Tenant:
    """Needs an open runtime (depend on the `client` fixture first)."""
    made = await create_tenant(runtime)
    _, other_token = await create_member(runtime, made)
    return Tenant(
        organization_id=made.organization_id,
        project_id=made.project_id,
        user_id=made.owner_user_id,
        user=made.user_headers,
        other_user=bearer(other_token),
        key=made.project_headers,
    )


@pytest.fixture
async def tenant(client: httpx.AsyncClient, runtime: Runtime) -> Tenant:
    return await make_tenant(runtime)


@pytest.fixture
async def stranger(client: httpx.AsyncClient, runtime: Runtime) -> Tenant:
    """Another organization altogether."""
    return await make_tenant(runtime)
