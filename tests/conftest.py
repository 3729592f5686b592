"""Shared fixtures: a migrated template database on the machine's PostgreSQL, a fresh
database per test cloned from it, and the real app over ASGI.

The server is the one at JAN_TEST_PG_DSN (default: the local server on 127.0.0.1:5432).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from functions.app import create_app
from functions.common import migrate
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from tests.e2e import predictor_url  # noqa: F401  (one predictor per session, for all suites)

ADMIN_DSN = os.environ.get("JAN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEMPLATE = f"jan_test_template_{os.getpid()}"


def dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
async def template_database() -> AsyncIterator[str]:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        conn = await asyncpg.connect(dsn_for(TEMPLATE))
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()
        yield TEMPLATE
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def copied_database(template: str, prefix: str = "jan_test") -> AsyncIterator[str]:
    """A new database cloned from ``template`` (its DSN), dropped when the block ends."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        try:
            yield dsn_for(name)
        finally:  # a failing block must not leave its database on the shared server
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_dsn(template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    async with copied_database(template_database) as dsn:
        yield dsn


T = TypeVar("T")


def component(runtime: Runtime, cls: type[T]) -> T:
    """The one component of type ``cls`` the app factory handed to ``runtime``."""
    found = [c for c in runtime.components if isinstance(c, cls)]
    assert len(found) == 1, f"{len(found)} components of type {cls.__name__}"
    return found[0]


METRICS_TOKEN = "test-metrics-token-0123456789abcdef"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}  # what the scraper sends


def make_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_postgresql_write_dsn": SecretStr(dsn),
        "jan_metrics_token": SecretStr(METRICS_TOKEN),
        "jwt_secret": SecretStr("test-jwt-secret-0123456789abcdef0123456789"),
        "apikey_secret": SecretStr("test-apikey-secret-0123456789abcdef"),
        "model_provider_secret": SecretStr("test-provider-secret-0123456789abcdef"),
        "jan_function": "all",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_dsn: str) -> Settings:
    return make_settings(database_dsn)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    await rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app (every area) over ASGI, opened like a function instance would be."""
    app = create_app(runtime)
    await runtime.open()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
