"""Budgets in the limiter, with clocks moved by hand and the usage ledger on the real
database: token budgets and spend limits are counters that never refill, one per calendar
period; reservations (and their price) settled with the real usage and cost; refusals in
OpenAI's ``insufficient_quota`` until the period ends; the ledger is the ground truth (a
restarted instance starts from it, reconciliation brings counters down to it, in memory,
in a shared store, in Redis after a FLUSHALL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from functions.common import errors
from functions.common.runtime import Runtime
from functions.services.limits.limiter import Limiter, Ticket
from functions.services.limits.rules import Budget, LimitSet, OrgRules
from functions.services.limits.shared import PREFIX, RedisStore
from functions.services.pricing import SPEND_UNIT, Price
from tests.conftest import make_settings
from tests.limits.support import ORG, PROJECT, Clock, MemoryStore, caller, limiter, redis_server

BODY: dict[str, object] = {"model": "m1", "max_tokens": 10}  # with 40 bytes: 20 reserved
NOON = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 12, 6, tzinfo=UTC).timestamp()
# $10 / $30 per 1M tokens: 1e-5 and 3e-5 USD a token.
PRICE = Price.per_million(Decimal("10"), None, Decimal("30"))


@pytest.fixture
async def ledger(database_dsn: str) -> AsyncIterator[Runtime]:
    """An opened runtime: the usage ledger budgets read (``usage_hourly``)."""
    runtime = Runtime(make_settings(database_dsn, jan_migrate_on_start=False))
    await runtime.open()
    yield runtime
    await runtime.close()


async def used_before(runtime: Runtime, tokens: int, picodollars: int = 0, **scope: str) -> None:
    """A line of the ledger's hourly rollup, this morning, for the project (by default)."""
    await runtime.db.writer.execute(
        """
        INSERT INTO usage_hourly (organization_id, hour, project_id, api_key_id, user_id,
                                  model, operation, requests, input_tokens, output_tokens,
                                  cost_picodollars)
        VALUES ($1, $2, $3, $4, $5, 'm1', 'chat.completions', 1, $6, 0, $7)
        ON CONFLICT (organization_id, hour, project_id, api_key_id, user_id, model, operation)
        DO UPDATE SET input_tokens = usage_hourly.input_tokens + excluded.input_tokens,
                      cost_picodollars = usage_hourly.cost_picodollars + excluded.cost_picodollars
        """,
        ORG,
        datetime(2026, 12, 5, 9, tzinfo=UTC),
        scope.get("project_id", PROJECT),
        scope.get("api_key_id", ""),
        scope.get("user_id", ""),
        tokens,
        picodollars,
    )


def budgets(subject: str = PROJECT, **by_kind: tuple[str, int]) -> OrgRules:
    """Rules with budgets of one subject: ``tokens=("day", 1000)``, ``spend=("month", 1)``."""
    found = tuple(Budget(kind, period, amount) for kind, (period, amount) in by_kind.items())
    return OrgRules(budgets={subject: found}, prices={("", "m1"): PRICE})


def on(runtime: Runtime, rules: OrgRules, wall: Clock, **kwargs: object) -> Limiter:
    lim = limiter(Clock(), rules, runtime=runtime, **kwargs)
    lim.wall = wall
    return lim


async def admit(lim: Limiter, model: str = "m1", size: int = 40, **body: object) -> Ticket:
    ticket = await lim.admit(caller(), model, "chat.completions", {**BODY, **body}, size)
    assert ticket is not None
    return ticket


async def spent(lim: Limiter, model: str = "m1", size: int = 40, **body: object) -> errors.APIError:
    with pytest.raises(errors.QuotaExceeded) as caught:
        await admit(lim, model, size, **body)
    return caught.value


async def test_a_token_budget_refuses_with_insufficient_quota_until_its_period_ends(
    ledger: Runtime,
) -> None:
    wall = Clock()
    wall.now = NOON
    lim = on(ledger, budgets(tokens=("day", 100)), wall)
    for _ in range(5):  # 20 reserved each, settled as used
        (await admit(lim)).settle(20)
    wall.advance(3600)  # no refill, however long
    err = await spent(lim)
    assert (err.status, err.type, err.code) == (429, "insufficient_quota", "insufficient_quota")
    assert err.message.startswith("You exceeded your current quota")
    assert f"daily token budget (100 tokens) of project {PROJECT}" in err.message
    assert err.headers["Retry-After"] == str(int(MIDNIGHT - wall.now))  # when the day ends
    assert err.headers["x-should-retry"] == "false"
    assert not any(name.startswith("x-ratelimit") for name in err.headers)
    # Given back when a call uses less than it reserved.
    wall.now = MIDNIGHT - 1
    late = await spent(lim, max_tokens=1, size=0)  # 1 token does not fit either
    assert late.headers["Retry-After"] == "1"
    # A new day: a fresh counter (the plan is made again).
    wall.now = MIDNIGHT
    (await admit(lim)).settle(5)
    assert f"b:{PROJECT}:t:2026-12-06" in lim.counters
    await lim.stop()


async def test_a_spend_limit_reserves_the_price_and_settles_the_cost(ledger: Runtime) -> None:
    wall = Clock()
    wall.now = NOON
    # 1 cent a month; a call reserves 100 input tokens (400 bytes) at $10/1M and 100 output
    # tokens at $30/1M: $0.004.
    lim = on(ledger, budgets(spend=("month", 1)), wall)
    first = await admit(lim, size=400, max_tokens=100)
    second = await admit(lim, size=400, max_tokens=100)
    err = await spent(lim, size=400, max_tokens=100)
    assert "monthly hard spend limit ($0.01) of project" in err.message
    assert err.headers["Retry-After"] == str(
        int(datetime(2027, 1, 1, tzinfo=UTC).timestamp() - NOON)
    )
    key = f"b:{PROJECT}:$:2026-12"
    assert lim.counters[key].level == (10**10 - 2 * 4 * 10**9) // SPEND_UNIT
    # Settled with what it cost: 40 tokens in, 10 out.
    first.settle(50, PRICE.cost(40, 0, 10))
    assert lim.counters[key].level == (10**10 - 4 * 10**9 - 7 * 10**8) // SPEND_UNIT
    third = await admit(lim, size=400, max_tokens=100)
    # Usage unknown: the reservation stands; no model answered: all of it comes back.
    second.settle(None)
    third.settle(0)
    assert lim.counters[key].level == (10**10 - 4 * 10**9 - 7 * 10**8) // SPEND_UNIT
    # A model without a price costs nothing: the spend limit does not apply to it.
    for _ in range(3):
        assert await lim.admit(caller(), "free", "chat.completions", BODY, 400) is None
    await lim.stop()


async def test_budgets_stay_out_of_the_rate_limit_headers_and_count_every_scope(
    ledger: Runtime,
) -> None:
    wall = Clock()
    wall.now = NOON
    rules = OrgRules(
        projects={(PROJECT, "m1"): LimitSet(max_requests_per_1_minute=10)},
        budgets={
            "": (Budget("tokens", "month", 10_000),),
            "key_1": (Budget("tokens", "day", 45),),
            "user_1": (Budget("tokens", "month", 10_000),),
        },
    )
    lim = on(ledger, rules, wall)
    ticket = await lim.admit(caller(user_id="user_1"), "m1", "chat.completions", BODY, 40)
    assert ticket is not None
    assert set(ticket.headers()) == {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    }
    assert sorted(lim.counters) == [
        "b:key_1:t:2026-12-05",
        f"b:{ORG}:t:2026-12",
        "b:user_1:t:2026-12",
        f"p:{PROJECT}:m1:rpm",
    ]
    await admit(lim)
    err = await spent(lim)  # the key's: 40 of 45 reserved
    assert "daily token budget (45 tokens) of API key key_1" in err.message
    await lim.stop()


async def test_a_changed_budget_applies_at_once(ledger: Runtime) -> None:
    wall = Clock()
    wall.now = NOON
    lim = on(ledger, budgets(tokens=("day", 40)), wall)
    (await admit(lim)).settle(20)
    (await admit(lim)).settle(20)
    await spent(lim)
    raised = budgets(tokens=("day", 100))
    raised.loaded_at = lim.clock()
    lim.rules[ORG] = raised  # as reloaded
    for _ in range(3):  # 60 more: what was used stays used
        (await admit(lim)).settle(20)
    await spent(lim)
    await lim.stop()


async def test_a_restarted_instance_starts_from_the_ledger(ledger: Runtime) -> None:
    wall = Clock()
    wall.now = NOON
    await used_before(ledger, 900)  # this morning, as the ledger says
    await used_before(ledger, 5000, project_id="proj_other")  # another project's
    lim = on(ledger, budgets(tokens=("day", 1000)), wall)
    for _ in range(5):
        (await admit(lim)).settle(20)
    await spent(lim)
    await lim.stop()
    # Yesterday's usage does not count today.
    wall.now = MIDNIGHT + 60
    again = on(ledger, budgets(tokens=("day", 1000)), wall)
    for _ in range(50):
        (await admit(again)).settle(20)
    await spent(again)
    await again.stop()


async def test_reconciliation_brings_counters_down_to_the_ledger(ledger: Runtime) -> None:
    wall = Clock()
    wall.now = NOON
    lim = on(ledger, budgets(tokens=("day", 1000)), wall)
    (await admit(lim)).settle(20)
    key = f"b:{PROJECT}:t:2026-12-05"
    assert lim.counters[key].level == 980
    await used_before(ledger, 700)  # what others used, now in the ledger
    assert await lim.reconcile()
    assert lim.counters[key].level == 300
    await used_before(ledger, -600)  # never up: the counter knows of usage the ledger lacks
    await lim.reconcile()
    assert lim.counters[key].level == 300
    await lim.stop()


async def test_shared_counters_are_rebuilt_from_the_ledger(ledger: Runtime) -> None:
    wall = Clock()
    wall.now = NOON
    store = MemoryStore(Clock())
    rules = budgets(tokens=("day", 1000))
    a = on(ledger, rules, wall, shared=store)
    b = on(ledger, budgets(tokens=("day", 1000)), wall, shared=store)
    accepted = 0
    for n in range(100):  # spread over two instances, leasing in blocks
        try:
            (await admit(a if n % 2 else b)).settle(20)
            accepted += 1
        except errors.QuotaExceeded:
            pass
    assert accepted == 50  # exactly the budget: grants never exceed what is left
    key = f"b:{PROJECT}:t:2026-12-05"
    # The store loses the counter; the ledger knows of 400 tokens.
    del store.budgets[key]
    await used_before(ledger, 400)
    await a.reconcile()
    assert store.budgets[key] == 400
    for lim in (a, b):
        await lim.stop()


async def test_redis_flushed_mid_test_the_counter_is_reconciled(ledger: Runtime) -> None:
    wall = Clock()
    wall.now = NOON
    await used_before(ledger, 600)
    async with redis_server() as server:
        redis = RedisStore(server.url)
        lim = on(ledger, budgets(tokens=("day", 1000)), wall, shared=redis)
        for _ in range(10):
            (await admit(lim)).settle(20)
        key = PREFIX + f"b:{PROJECT}:t:2026-12-05"
        assert float(await redis.client.get(key)) >= 800  # 600 + 200 + what this one holds
        await used_before(ledger, 200)  # the ledger catches up with those calls …
        await lim.reconcile()  # … and the instance with the ledger (every 10 s)
        await redis.client.flushall()
        await lim.reconcile()
        # Rebuilt from the ledger (plus a top-up this instance may have taken since).
        assert 800 <= float(await redis.client.get(key)) <= 900
        # Handed out from now on: what is left, plus at most the lease the instance held
        # when the counter was lost (a tenth of the budget).
        accepted = 0
        for _ in range(30):
            try:
                (await admit(lim)).settle(20)
                accepted += 1
            except errors.QuotaExceeded:
                pass
        assert 200 <= accepted * 20 <= 200 + 100
        await lim.stop()
        await redis.close()
