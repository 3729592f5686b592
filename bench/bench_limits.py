"""CPU the rate limiter adds to a model call: admission + settlement, limits off and on,
then with budgets on too.

    .venv/bin/python bench/bench_limits.py [calls]      (default 100000)

32 tasks (as 32 connections would) interleave their calls; each call is
``ticket = await limiter.admit(...)``, a turn of the event loop (the upstream call's
place), ``ticket.raw_headers()`` (the x-ratelimit-* headers the handler sends) and
``ticket.settle(used_tokens)``. CPU is the process's (``time.process_time``, so the shared
modes' Redis/PostgreSQL client work and the background lease exchanges count), per call,
minus the same loop without a limiter. Modes:

- ``off``: the organization sets no limits (what every call pays for the limiter existing);
- ``memory``: three counters (project RPM and TPM on the model, the key's RPM), one process;
- ``redis``: the same three, leased in blocks from a redis-server this script starts on a
  free port (``redis-server`` must be installed), limits far above the traffic;
- ``postgres``: the same, leased from PostgreSQL (``JAN_TEST_PG_DSN``, default the local
  server: a scratch database is created and dropped).

The shared modes run twice: with blocks of a tenth of these huge limits (one exchange at
the start, then every decision local: the best case), and with blocks forced to 100 calls'
worth (an exchange per 100 calls per counter, as for limits of 1000 requests and 86,000
tokens a minute: the cost of leasing shows).

``+ budgets``: the same three counters, plus a token budget of the project (a day) and a
spend limit of the organization (a month, the model priced: each call reserves its price
and settles its cost) — five counters; the budgets start from the usage ledger of the
scratch database (``JAN_TEST_PG_DSN``) and are reconciled with it every 10 s.

No HTTP and no upstream: the figure is the limiter's own cost, which adds to the gateway's
per-request CPU measured by ``bench/gateway.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functions.common import migrate
from functions.common.principal import Principal
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.limits.limiter import Limiter
from functions.services.limits.rules import TOKENS, Budget, LimitSet, OrgRules, Plan
from functions.services.limits.shared import PostgresStore, RedisStore, SharedStore
from functions.services.pricing import Price

CONNECTIONS = 32
BIG = 10**12  # limits far above the benchmark's traffic: nothing is refused
ORG, PROJECT, MODEL = "org_bench", "proj_bench", "bench-model"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
RESERVED = 90 // 4 + 64  # tokens reserved per call: bytes/4 of a 90-byte request + max_tokens
PRINCIPAL = Principal(
    kind="project_key", organization_id=ORG, project_id=PROJECT, api_key_id="key_bench"
)


def settings(dsn: str = "postgresql://unused@127.0.0.1:1/unused") -> Settings:
    values: dict[str, Any] = {
        "db_postgresql_write_dsn": SecretStr(dsn),
        "jan_migrate_on_start": False,
        "jwt_secret": SecretStr("bench-jwt-secret-0123456789abcdef0123456789"),
        "apikey_secret": SecretStr("bench-apikey-secret-0123456789abcdef"),
        "model_provider_secret": SecretStr("bench-provider-secret-0123456789abcdef"),
    }
    return Settings(**values)


def make_limiter(
    shared: SharedStore | None, *, limited: bool, ledger: Runtime | None = None
) -> Limiter:
    """Three counters when ``limited``; with a ``ledger`` (an opened runtime), two budgets
    more."""
    runtime = ledger or Runtime(settings())
    limiter = Limiter(runtime, shared=shared, mode="memory" if shared is None else "x")
    rules = OrgRules()
    if limited:
        rules.projects[(PROJECT, MODEL)] = LimitSet(
            max_requests_per_1_minute=BIG, max_tokens_per_1_minute=BIG
        )
        rules.keys["key_bench"] = LimitSet(max_requests_per_1_minute=BIG)
    if ledger is not None:
        rules.budgets[PROJECT] = (Budget("tokens", "day", BIG),)
        rules.budgets[""] = (Budget("spend", "month", BIG // 10**6),)  # cents
        rules.prices[("", MODEL)] = Price.per_million(Decimal("0.5"), None, Decimal("1.5"))
    rules.loaded_at = time.monotonic()
    limiter.rules[ORG] = rules
    limiter.refresh_seconds = float("inf")
    return limiter


def with_blocks_of_100_calls(store: SharedStore) -> Limiter:
    """A limiter whose counters lease 100 calls' worth at a time (100 requests, 100
    reservations of tokens) instead of a tenth of the limit."""
    limiter = make_limiter(store, limited=True)
    made = limiter.plan
    forced: dict[int, Plan] = {}

    def plan(principal: Principal, model: str, rules: OrgRules) -> Plan:
        natural = made(principal, model, rules)
        if id(natural) not in forced:
            specs = tuple(
                replace(spec, block=100 * (RESERVED if spec.kind == TOKENS else 1))
                for spec in natural.specs
            )
            forced[id(natural)] = replace(natural, specs=specs)
        return forced[id(natural)]

    limiter.plan = plan  # type: ignore[method-assign]
    return limiter


async def run(limiter: Limiter | None, calls: int) -> float:
    """CPU seconds per call of ``calls`` calls over ``CONNECTIONS`` tasks."""
    per_task = calls // CONNECTIONS

    async def connection() -> None:
        for _ in range(per_task):
            ticket = None
            if limiter is not None:
                ticket = await limiter.admit(PRINCIPAL, MODEL, "chat.completions", BODY, 90)
            await asyncio.sleep(0)  # the call itself
            if ticket is not None:
                ticket.raw_headers()  # what the handler sends (x-ratelimit-*)
                ticket.settle(40)

    started = time.process_time()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return (time.process_time() - started) / (per_task * CONNECTIONS)


@contextlib.asynccontextmanager
async def redis_store() -> AsyncIterator[SharedStore | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis: skipped (redis-server is not installed)")
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            await asyncio.sleep(0.02)
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        yield store
        await store.close()
    finally:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[Runtime | None]:
    """An opened runtime on a migrated scratch database (the PostgreSQL store's, and the
    usage ledger budgets read), dropped afterwards; None without PostgreSQL."""
    admin_dsn = os.environ.get("JAN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"jan_bench_limits_{uuid.uuid4().hex[:8]}"
    try:
        admin = await asyncpg.connect(admin_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"postgres: skipped ({type(exc).__name__})")
        yield None
        return
    await admin.execute(f'CREATE DATABASE "{name}"')
    runtime = None
    try:
        dsn = admin_dsn.rpartition("/")[0] + "/" + name
        conn = await asyncpg.connect(dsn)
        await migrate.apply(conn)
        await conn.close()
        runtime = Runtime(settings(dsn))
        await runtime.open()
        yield runtime
    finally:
        if runtime is not None:
            await runtime.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def exchanges_per_1000(limiter: Limiter, calls: int) -> str:
    store = limiter.shared
    if store is None:
        return "-"
    counted = 0
    lease, slots = store.lease, store.slots

    async def counting_lease(*args: Any) -> Any:
        nonlocal counted
        counted += 1
        return await lease(*args)

    store.lease = counting_lease  # type: ignore[method-assign,assignment]
    await run(limiter, calls)
    store.lease, store.slots = lease, slots  # type: ignore[method-assign]
    return f"{counted * 1000 / calls:.2f}"


async def main(calls: int) -> None:
    for _ in range(3):  # warm-up
        await run(None, 10_000)
    bare = min([await run(None, calls) for _ in range(3)])
    rows: list[tuple[str, float, str]] = []

    async def measure(label: str, limiter: Limiter) -> None:
        await run(limiter, 10_000)  # warm: counters made, first leases taken
        cost = min([await run(limiter, calls) for _ in range(3)]) - bare
        rows.append((label, cost, await exchanges_per_1000(limiter, calls)))
        await limiter.stop()

    async with scratch_database() as ledger, redis_store() as redis:
        await measure("off (no limits set)", make_limiter(None, limited=False))
        await measure("memory (3 counters)", make_limiter(None, limited=True))
        if ledger is not None:
            await measure(
                "memory + budgets (5 counters)", make_limiter(None, limited=True, ledger=ledger)
            )
        postgres = PostgresStore(lambda: ledger.db.writer) if ledger is not None else None
        for name, store in (("redis", redis), ("postgres", postgres)):
            if store is None:
                continue
            await measure(f"{name} leases (3 counters)", make_limiter(store, limited=True))
            await measure(f"{name}, blocks of 100", with_blocks_of_100_calls(store))
            if ledger is not None:
                await measure(
                    f"{name} leases + budgets (5 counters)",
                    make_limiter(store, limited=True, ledger=ledger),
                )
    print(f"rate limiter, {calls} calls over {CONNECTIONS} concurrent tasks")
    print(f"loop without a limiter: {bare * 1e6:.2f} µs CPU per call (subtracted below)")
    print("| mode | µs CPU per call (admit, headers, settle) | store exchanges per 1000 calls |")
    print("|---|---|---|")
    for label, cost, exchanges in rows:
        print(f"| {label} | {cost * 1e6:.2f} | {exchanges} |")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
