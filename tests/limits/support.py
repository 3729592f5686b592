"""Shared pieces of the rate-limit tests: a clock tests move by hand, a shared store kept in
memory with the same contract as Redis' and PostgreSQL's (``tests/limits/test_stores.py``
checks the real ones against it), limiters built without a database, and our own
``redis-server`` on a free port (never the machine's: tests stop it)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from functions.common.principal import Principal
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.limits.limiter import Limiter
from functions.services.limits.rules import LimitSet, OrgRules
from functions.services.limits.shared import Ask, SlotAsk, StoreUnavailable
from tests.pg import free_port

ORG = "org_test"
PROJECT = "proj_test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryStore:
    """The shared-store contract (``functions.services.limits.shared``) in memory."""

    name = "memory-test"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}
        self.budgets: dict[str, float] = {}  # key → taken
        self.held: dict[str, dict[str, tuple[int, float]]] = {}
        self.calls = 0
        self.down = False

    async def lease(self, asks: Sequence[Ask]) -> list[tuple[float, float]]:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("down")
        now = self.clock()
        out = []
        for a in asks:
            if a.expires:  # a budget: what was taken, never refilled, never below `used`
                taken = max(0.0, self.budgets.get(a.key, 0.0) + a.adjust, a.used)
                granted = 0.0
                if a.want > 0 and math.floor(a.capacity - taken) >= a.minimum:
                    granted = min(a.want, math.floor(a.capacity - taken))
                    taken += granted
                self.budgets[a.key] = taken
                out.append((granted, a.capacity - taken))
                continue
            level, at = self.buckets.get(a.key, (a.capacity, now))
            level = min(a.capacity, level + max(0.0, now - at) * a.rate)
            level = min(a.capacity, level - a.adjust)
            granted = 0.0
            if a.want > 0 and math.floor(level) >= a.minimum:
                granted = min(a.want, math.floor(level))
                level -= granted
            self.buckets[a.key] = (level, now)
            out.append((granted, level))
        return out

    async def slots(self, instance: str, asks: Sequence[SlotAsk]) -> list[tuple[int, int]]:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("down")
        now = self.clock()
        out = []
        for a in asks:
            holders = {
                i: (n, exp) for i, (n, exp) in self.held.get(a.key, {}).items() if exp >= now
            }
            others = sum(n for i, (n, _) in holders.items() if i != instance)
            granted = max(a.floor, min(a.want, a.limit - others))
            if granted > 0:
                holders[instance] = (granted, now + 10)
            else:
                holders.pop(instance, None)
            self.held[a.key] = holders
            out.append((granted, others + granted))
        return out

    async def sweep(self) -> None:
        pass

    async def close(self) -> None:
        pass


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_postgresql_write_dsn": SecretStr("postgresql://unused@127.0.0.1:1/unused"),
        "jwt_secret": SecretStr("test-jwt-secret-0123456789abcdef0123456789"),
        "apikey_secret": SecretStr("test-apikey-secret-0123456789abcdef"),
        "model_provider_secret": SecretStr("test-provider-secret-0123456789abcdef"),
        "jan_rate_limit_store": "memory",
        **overrides,
    }
    return Settings(**values)


def limiter(
    clock: Clock,
    rules: OrgRules,
    *,
    shared: Any = None,
    runtime: Runtime | None = None,
    **overrides: Any,
) -> Limiter:
    """A limiter with ``rules`` for ``ORG`` already loaded (no database, unless given an
    opened ``runtime``: budgets read the usage ledger there)."""
    mode = "memory" if shared is None else "shared"
    made = Limiter(runtime or Runtime(settings(**overrides)), shared=shared, mode=mode)
    made.clock = clock
    made.refresh_seconds = math.inf
    rules.loaded_at = clock()
    made.rules[ORG] = rules
    return made


def project_rules(model: str = "m1", **limits: int) -> OrgRules:
    return OrgRules(projects={(PROJECT, model): LimitSet(**limits)})


def caller(**fields: Any) -> Principal:
    values: dict[str, Any] = {
        "kind": "project_key",
        "organization_id": ORG,
        "project_id": PROJECT,
        "api_key_id": "key_1",
        **fields,
    }
    return Principal(**values)


# --- our own Redis -----------------------------------------------------------------------
class RedisServer:
    """``redis-server`` on a free port, stopped and started again at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        server.stop()


# --- over HTTP -----------------------------------------------------------------------------
async def set_project_limits(
    client: httpx.AsyncClient, headers: dict[str, str], project_id: str, model: str, **limits: Any
) -> dict[str, Any]:
    from functions.admin.limit_fields import rate_limit_id

    r = await client.post(
        f"/v1/organization/projects/{project_id}/rate_limits/{rate_limit_id(model)}",
        json=limits,
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
