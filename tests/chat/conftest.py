"""Fixtures for the chat area: fake upstreams on free ports, and a gateway whose built-in
provider points at the first of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from functions.common.settings import Settings
from functions.common.upstream import Upstream
from tests.chat.fakes import FakeUpstream
from tests.conftest import make_settings


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[FakeUpstream]]]:
    """Start fake upstreams on demand; all stopped at the end of the test."""
    started: list[FakeUpstream] = []

    async def start(name: str, **kwargs: object) -> FakeUpstream:
        fake = await FakeUpstream(name, **kwargs).start()  # type: ignore[arg-type]
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.stop()


@pytest.fixture
async def builtin(upstreams: Callable[..., Awaitable[FakeUpstream]]) -> FakeUpstream:
    return await upstreams("builtin", models=("m1", "m2"))


@pytest.fixture
def settings(database_dsn: str, builtin: FakeUpstream) -> Settings:
    # The fake upstreams listen on loopback, which providers may only use when allowed.
    return make_settings(
        database_dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=("127.0.0.1",),
    )


@pytest.fixture
async def upstream_client() -> AsyncIterator[Upstream]:
    """The router's upstream client, for tests that drive a Router directly."""
    up = Upstream()
    up.open()
    yield up
    await up.close()
