"""The gateway process for the Responses/Conversations end-to-end tests: `python -m
functions serve all` (hypercorn through func-python, as Knative runs it) over a fresh
database, pointed at the session's real predictor (``predictor_url``, tests/e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from functions.common.runtime import Runtime
from tests.conftest import copied_database, make_settings
from tests.e2e import gateway_process
from tests.factories import create_member, create_tenant

REAL_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Process:
    base_url: str


@dataclass(frozen=True)
class Callers:
    project_key: str
    owner_token: str  # a user's JWT in that project
    member_token: str  # another user of the same project


@pytest.fixture(scope="session")
async def gateway_database(template_database: str) -> AsyncIterator[str]:
    async with copied_database(template_database, prefix="jan_e2e") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def gateway(
    predictor_url: str, gateway_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    with gateway_process(
        make_settings(gateway_database),
        predictor_url=predictor_url,
        data_dir=tmp_path_factory.mktemp("responses-gateway"),
    ) as base_url:
        yield Process(base_url)


@pytest.fixture(scope="session")
async def callers(gateway: Process, gateway_database: str) -> Callers:
    """Credentials of a fresh tenant in the gateway's database."""
    runtime = Runtime(make_settings(gateway_database, jan_migrate_on_start=False))
    await runtime.open()  # no areas: just the pools, no hooks
    try:
        tenant = await create_tenant(runtime)
        _, member_token = await create_member(runtime, tenant)
    finally:
        await runtime.close()
    return Callers(tenant.project_key, tenant.access_token, member_token)
