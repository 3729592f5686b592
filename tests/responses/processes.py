"""Real processes for end-to-end tests: the CPU predictor (SmolLM2 over llama.cpp) and the
gateway (`jan-server serve all`, on hypercorn through func-python as Knative runs it),
wired together the way a deployment is, over a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from functions.common.runtime import Runtime
from tests.conftest import ADMIN_DSN, dsn_for, make_settings
from tests.factories import create_member, create_tenant
from tests.pg import free_port

ROOT = Path(__file__).resolve().parents[2]
PREDICTOR_PYTHON = ROOT / "kserve" / ".venv" / "bin" / "python"
REAL_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Process:
    base_url: str
    process: subprocess.Popen[bytes]


def _wait_ready(process: subprocess.Popen[bytes], url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"{url}: the process exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never became ready"
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def predictor() -> Iterator[Process]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "PREDICTOR_INSTANCES": "1",
        "PREDICTOR_THREADS_PER_INSTANCE": "2",
        "PREDICTOR_CONTEXT_SIZE": "2048",
        "PREDICTOR_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [str(PREDICTOR_PYTHON), "-m", "jan_predictor", "--host", "127.0.0.1"],
        env=env,
        cwd=ROOT / "kserve",
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, f"{base_url}/v2/health/ready", 120)
        yield Process(base_url, process)
    finally:
        _stop(process)


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
def gateway(predictor: Process, gateway_database: str) -> Iterator[Process]:
    port = free_port()
    settings = make_settings(gateway_database)
    env = {
        **os.environ,
        "DB_POSTGRESQL_WRITE_DSN": gateway_database,
        "JWT_SECRET": settings.jwt_secret.get_secret_value() if settings.jwt_secret else "",
        "APIKEY_SECRET": settings.apikey_secret.get_secret_value()
        if settings.apikey_secret
        else "",
        "MODEL_PROVIDER_SECRET": "e2e-provider-secret-0123456789abcdef",
        "JAN_INFERENCE_MODEL_URL": f"{predictor.base_url}/openai/v1",
        "JAN_LOG_LEVEL": "WARNING",
        "JAN_FUNCTION": "all",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "functions", "serve", "all", "--listen", f"127.0.0.1:{port}"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, f"{base_url}/readyz", 60)
        yield Process(base_url, process)
    finally:
        _stop(process)


@dataclass(frozen=True)
class Callers:
    project_key: str
    owner_token: str  # a user's JWT in that project
    member_token: str  # another user of the same project


@pytest.fixture(scope="session")
async def callers(gateway: Process, gateway_database: str) -> Callers:
    """Credentials of a fresh tenant in the gateway's database."""
    runtime = Runtime(make_settings(gateway_database))
    await runtime.open()  # no areas: just the pools, no hooks
    try:
        tenant = await create_tenant(runtime)
        _, member_token = await create_member(runtime, tenant)
    finally:
        await runtime.close()
    return Callers(tenant.project_key, tenant.access_token, member_token)
