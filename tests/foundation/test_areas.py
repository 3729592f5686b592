"""Each area's process runs what that area serves and nothing else (scale to zero makes
every pool, task and client a cost on each cold start): the components the app factory
builds for it, the background tasks they start, and the clients they open."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from functions.app import create_app
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.common.upstream import Upstream

# The usage recorder waits with asyncio.wait_for, which runs the wait as a task of its own.
WAIT_FOR = "Event.wait"
# What `JAN_FUNCTION=<area>` builds: component types, and the background loops they run.
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "auth": (
        {"Bootstrap", "Identity", "Outbound", "Housekeeping", "LoginRateLimiter"},
        {"Identity._flush_forever", "Housekeeping._forever"},
    ),
    "admin": (
        # The upstream client is lazy here: opened only when a provider is polled.
        # Housekeeping: the retention sweeps run in every area that stores data.
        {"Bootstrap", "Identity", "Upstream", "Housekeeping"},
        {"Identity._flush_forever", "Housekeeping._forever"},
    ),
    "chat": (
        # The rate limiter runs a background task only once a limit applies to a call.
        # Spend alerts are checked where spend happens (and the process stays warm).
        {
            "Identity",
            "Upstream",
            "UsageRecorder",
            "Limiter",
            "Inference",
            "SpendAlerts",
            "Housekeeping",
        },
        {
            "Identity._flush_forever",
            "UsageRecorder._run",
            "Catalog.run",
            WAIT_FOR,
            "SpendAlerts._forever",
            "Housekeeping._forever",
        },
    ),
    "conversations": (
        {"Identity", "Housekeeping"},
        {"Identity._flush_forever", "Housekeeping._forever"},
    ),
    "responses": (
        {
            "Identity",
            "Upstream",
            "UsageRecorder",
            "Limiter",
            "Inference",
            "SpendAlerts",
            "Outbound",
            "ToolBox",
            "Housekeeping",
            "BackgroundWorker",
        },
        {
            "Identity._flush_forever",
            "UsageRecorder._run",
            "Catalog.run",
            WAIT_FOR,
            "Housekeeping._forever",
            "BackgroundWorker._claim_forever",
            "SpendAlerts._forever",
        },
    ),
    # Static files: nothing but the runtime's database pool (readiness, as every area).
    "console": (set(), set()),
    "mcp": (
        {"Identity", "Outbound", "ToolBox", "Housekeeping", "MCPService"},
        {"Identity._flush_forever", "Housekeeping._forever", "MCPService.start.<locals>.hold"},
    ),
}


def _loops(tasks: set[asyncio.Task[object]]) -> set[str]:
    return {task.get_coro().__qualname__ for task in tasks}  # type: ignore[union-attr]


@pytest.mark.parametrize("area", sorted(EXPECTED))
async def test_an_area_starts_only_what_it_serves(settings: Settings, area: str) -> None:
    components, loops = EXPECTED[area]
    runtime = Runtime(settings.model_copy(update={"jan_function": area}))
    create_app(runtime)
    before = asyncio.all_tasks()
    await runtime.open()
    try:
        built = Counter(type(c).__name__ for c in runtime.components)
        assert set(built) == components and all(n == 1 for n in built.values()), built
        assert _loops(asyncio.all_tasks() - before) == loops
        sessions = [c for c in runtime.components if isinstance(c, Upstream) and c.is_open]
        assert len(sessions) == (1 if "Inference" in components else 0)
    finally:
        await runtime.close()
    assert len(runtime.components) == len(components)
    assert not asyncio.all_tasks() - before - {asyncio.current_task()}


async def test_all_builds_every_service_once(settings: Settings) -> None:
    runtime = Runtime(settings)  # jan_function "all"
    create_app(runtime)
    counts = Counter(type(c).__name__ for c in runtime.components)
    assert set(counts) == set().union(*(c for c, _ in EXPECTED.values()))
    assert all(n == 1 for n in counts.values()), counts
