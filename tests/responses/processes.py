"""The gateway process for the Responses/Conversations end-to-end tests: `python -m
functions serve all` (hypercorn through func-python, as Knative runs it) over a fresh
database, pointed at the session's real predictor (``predictor_url``, tests/e2e.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from functions.common.runtime import Runtime
from tests.conftest import ADMIN_DSN, dsn_for, make_settings
from tests.e2e import ROOT, free_port, stop, wait_ready
from tests.factories import create_member, create_tenant

REAL_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Process:
    base_url: str
    process: subprocess.Popen[bytes]


@dataclass(frozen=True)
class Callers:
    project_key: str
    owner_token: str  # a user's JWT in that project
    member_token: str  # another user of the same project


@pytest.fixture(scope="session")
async def gateway_database(template_database: str) -> AsyncIterator[str]:
    name = f"jan_e2e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield dsn_for(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def gateway(
    predictor_url: str, gateway_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    port = free_port()
    settings = make_settings(gateway_database)
    assert settings.jwt_secret is not None and settings.apikey_secret is not None
    data = tmp_path_factory.mktemp("responses-gateway")
    log = data / "gateway.log"
    env = {
        **os.environ,
        "DB_POSTGRESQL_WRITE_DSN": gateway_database,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "APIKEY_SECRET": settings.apikey_secret.get_secret_value(),
        "MODEL_PROVIDER_SECRET": "e2e-provider-secret-0123456789abcdef",
        "JAN_INFERENCE_MODEL_URL": predictor_url,
        "JAN_DATA_DIR": str(data),
        "JAN_LOG_LEVEL": "WARNING",
        "JAN_FUNCTION": "all",
        "LISTEN_ADDRESS": f"127.0.0.1:{port}",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "functions", "serve", "all"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base_url}/readyz", process, log, 60)
        yield Process(base_url, process)
    finally:
        stop(process)


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
