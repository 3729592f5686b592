"""The limiter itself, with a clock moved by hand: token buckets that refill continuously,
reservations settled with the real usage, concurrency, every scope, the headers; and in
shared mode, leases from a store that several instances share, the failure policy."""

from __future__ import annotations

import math

import pytest

from functions.common import errors
from functions.services.limits.limiter import Limiter, Ticket, duration, reservation
from functions.services.limits.rules import LimitSet, OrgRules
from tests.limits.support import (
    ORG,
    PROJECT,
    Clock,
    MemoryStore,
    caller,
    limiter,
    project_rules,
)

BODY: dict[str, object] = {"model": "m1", "max_tokens": 10}


async def admit(
    lim: Limiter, size: int = 40, body: dict[str, object] | None = None, **who: object
) -> Ticket | None:
    return await lim.admit(caller(**who), "m1", "chat.completions", body or BODY, size)


async def refused(
    lim: Limiter, size: int = 40, body: dict[str, object] | None = None, **who: object
) -> errors.RateLimited:
    with pytest.raises(errors.RateLimited) as caught:
        await admit(lim, size, body, **who)
    return caught.value


# --- memory mode ----------------------------------------------------------------------------
async def test_requests_per_minute_refill_continuously() -> None:
    clock = Clock()
    lim = limiter(clock, project_rules(max_requests_per_1_minute=3))
    for _ in range(3):
        assert await admit(lim) is not None
    err = await refused(lim)
    assert (err.status, err.code, err.type) == (429, "rate_limit_exceeded", "rate_limit_error")
    assert err.headers["Retry-After"] == "20" and err.headers["retry-after-ms"] == "20000"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per min (RPM)" in err.message and "Limit 3" in err.message
    clock.advance(19.9)
    await refused(lim)
    clock.advance(0.1)  # one request's worth refilled (3 per 60 s)
    await admit(lim)
    await refused(lim)


async def test_a_call_takes_nothing_when_one_counter_refuses() -> None:
    clock = Clock()
    rules = project_rules(max_requests_per_1_minute=100, max_tokens_per_1_minute=100)
    lim = limiter(clock, rules)
    await admit(lim, size=0, body={"max_tokens": 80})
    err = await refused(lim, 0, {"max_tokens": 80})  # 80 more tokens do not fit in 20
    assert "tokens per min (TPM)" in err.message
    assert err.headers["x-ratelimit-limit-tokens"] == "100"
    ticket = await admit(lim, size=0, body={"max_tokens": 20})
    assert ticket is not None
    headers = ticket.headers()
    assert headers["x-ratelimit-remaining-requests"] == "98"  # the refused call took none
    assert headers["x-ratelimit-remaining-tokens"] == "0"


async def test_tokens_are_reserved_then_reconciled_with_the_real_usage() -> None:
    clock = Clock()
    lim = limiter(clock, project_rules(max_tokens_per_1_minute=1000))
    ticket = await admit(lim, size=400, body={"max_tokens": 500})  # 100 in + 500 out
    assert ticket is not None
    assert ticket.headers()["x-ratelimit-remaining-tokens"] == "400"
    ticket.settle(150)
    assert ticket.headers()["x-ratelimit-remaining-tokens"] == "850"
    ticket.settle(10_000)  # once only
    assert ticket.headers()["x-ratelimit-remaining-tokens"] == "850"
    over = await admit(lim, size=0, body={"max_tokens": 100})
    assert over is not None
    over.settle(1600)  # used far beyond its reservation: a debt
    assert over.headers()["x-ratelimit-remaining-tokens"] == "0"
    err = await refused(lim)  # 20 tokens: -750 + 770 at 1000/60 per second
    assert err.headers["Retry-After"] == "47"
    clock.advance(120)
    unknown = await admit(lim, size=0, body={"max_tokens": 100})
    assert unknown is not None
    unknown.settle(None)  # usage unknown: the reservation stands
    assert unknown.headers()["x-ratelimit-remaining-tokens"] == "900"


async def test_a_reservation_larger_than_the_limit_waits_for_a_full_bucket() -> None:
    clock = Clock()
    lim = limiter(clock, project_rules(max_tokens_per_1_minute=100))
    ticket = await admit(lim, size=0, body={"max_tokens": 5000})
    assert ticket is not None  # never refused forever: it takes the whole bucket
    ticket.settle(5000)
    err = await refused(lim)
    assert int(err.headers["Retry-After"]) > 60


def test_reservation_estimate() -> None:
    assert reservation("chat.completions", {"max_tokens": 10}, 400, 1024) == 110
    assert reservation("chat.completions", {"max_completion_tokens": 7, "max_tokens": 9}, 4, 1) == 8
    assert reservation("chat.completions", {}, 40, 1024) == 1034
    assert reservation("chat.completions", {"max_tokens": 10, "n": 3}, 0, 1) == 30
    assert reservation("chat.completions", {"max_tokens": True}, 0, 5) == 5
    assert reservation("embeddings", {"max_tokens": 99}, 80, 1024) == 20


async def test_concurrent_requests() -> None:
    clock = Clock()
    lim = limiter(clock, project_rules(max_concurrent_requests=2))
    first, second = await admit(lim), await admit(lim)
    err = await refused(lim)
    assert "concurrent requests" in err.message and err.headers["Retry-After"] == "1"
    assert first is not None and second is not None
    first.settle(0)
    third = await admit(lim)
    assert third is not None
    assert third.headers() == {}  # no requests or tokens counter: no x-ratelimit headers


async def test_every_scope_applies_with_its_own_counters() -> None:
    clock = Clock()
    rules = OrgRules(
        defaults={"m1": LimitSet(max_requests_per_1_minute=100, max_tokens_per_1_minute=50)},
        projects={(PROJECT, "m1"): LimitSet(max_requests_per_1_minute=10)},
        keys={"key_1": LimitSet(max_requests_per_1_minute=5)},
        users={"user_1": LimitSet(max_requests_per_1_day=7)},
        service_accounts={"key_sa": ("svc_1", LimitSet(max_requests_per_1_minute=2))},
    )
    lim = limiter(clock, rules)
    # The project's own 10 RPM overrides the default's 100, its TPM is the default's 50.
    plan = lim.plan(caller(user_id="user_1"), "m1", rules)
    assert {s.key: s.capacity for s in plan.specs} == {
        f"p:{PROJECT}:m1:rpm": 10,
        f"p:{PROJECT}:m1:tpm": 50,
        "k:key_1:rpm": 5,
        f"u:{ORG}:user_1:rpd": 7,
    }
    for _ in range(5):
        await admit(lim, size=0, body={"max_tokens": 1}, user_id="user_1")
    assert "API key key_1" in (await refused(lim, user_id="user_1")).message
    # Another key of the same user: the key limit is the other key's; the user's 7/day hold.
    await admit(lim, size=0, body={"max_tokens": 1}, api_key_id="key_2", user_id="user_1")
    await admit(lim, size=0, body={"max_tokens": 1}, api_key_id="key_2", user_id="user_1")
    err = await refused(lim, api_key_id="key_2", user_id="user_1")
    assert "user user_1" in err.message and "requests per day" in err.message
    # A service account's keys share the account's counter.
    sa = caller(kind="service_account", api_key_id="key_sa", project_id="proj_other")
    for _ in range(2):
        await lim.admit(sa, "m1", "embeddings", {}, 0)
    with pytest.raises(errors.RateLimited, match="service account svc_1"):
        await lim.admit(sa, "m1", "embeddings", {}, 0)
    # Another model: neither the project's limit nor the default applies.
    other = lim.plan(caller(api_key_id="key_3"), "m2", rules)
    assert other.specs == ()


async def test_guests_get_the_default_limits_unless_they_have_their_own() -> None:
    clock = Clock()
    rules = OrgRules(users={"user_vip": LimitSet(max_requests_per_1_minute=1000)})
    lim = limiter(clock, rules, jan_guest_requests_per_minute=2, jan_guest_tokens_per_day=500)
    guest = caller(kind="user", api_key_id=None, user_id="user_g", is_guest=True)
    plan = lim.plan(guest, "m1", rules)
    assert {s.key: s.capacity for s in plan.specs} == {
        f"u:{ORG}:user_g:rpm": 2,
        f"u:{ORG}:user_g:tpd": 500,
    }
    vip_guest = caller(kind="user", api_key_id=None, user_id="user_vip", is_guest=True)
    vip = lim.plan(vip_guest, "m1", rules)
    assert [s.capacity for s in vip.specs] == [1000]
    member = lim.plan(caller(kind="user", api_key_id=None, user_id="user_m"), "m1", rules)
    assert member.specs == ()
    for _ in range(2):
        await lim.admit(guest, "m1", "chat.completions", {"max_tokens": 1}, 0)
    with pytest.raises(errors.RateLimited, match="guest user user_g"):
        await lim.admit(guest, "m1", "chat.completions", {"max_tokens": 1}, 0)


async def test_no_limits_no_ticket() -> None:
    lim = limiter(Clock(), OrgRules())
    assert await admit(lim) is None


def test_durations_as_openai_writes_them() -> None:
    assert duration(0.02) == "20ms"
    assert duration(1) == "1s"
    assert duration(1.5) == "1.5s"
    assert duration(360) == "6m0s"
    assert duration(3723.5) == "1h2m3.5s"


# --- shared mode ----------------------------------------------------------------------------
def shared_limiters(clock: Clock, store: MemoryStore, n: int, rules: OrgRules) -> list[Limiter]:
    out = []
    for _ in range(n):
        # Each instance has its own copy of the definitions, as when loaded.
        copy = OrgRules(
            projects=dict(rules.projects), keys=dict(rules.keys), failure_mode=rules.failure_mode
        )
        out.append(limiter(clock, copy, shared=store))
    return out


async def test_instances_lease_in_blocks_and_never_exceed_the_shared_bucket() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    instances = shared_limiters(clock, store, 3, project_rules(max_requests_per_1_minute=60))
    accepted = 0
    for i in range(300):  # spread over the three, no time passing
        try:
            await admit(instances[i % 3])
            accepted += 1
        except errors.RateLimited:
            pass
    assert accepted == 60  # exactly the limit: a grant never takes the bucket below zero
    # Most decisions were local: far fewer store exchanges than calls.
    assert store.calls < 100
    for lim in instances:
        await lim.stop()


async def test_idle_leases_go_back_and_debts_are_charged() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    a, b = shared_limiters(clock, store, 2, project_rules(max_requests_per_1_minute=60))
    await admit(a)  # leases 1 + a block of 6
    key = f"p:{PROJECT}:m1:rpm"
    assert a.counters[key].held == 6
    assert store.buckets[key][0] == 53
    clock.advance(2)  # idle: handed back by the next background round
    await a.renew()
    assert a.counters[key].held == 0
    assert math.isclose(store.buckets[key][0], 60)  # 53 + 6 back + 2 s of refill, capped
    # Tokens used beyond the reservation become a debt charged to the shared bucket.
    tokens = shared_limiters(clock, store, 1, project_rules(max_tokens_per_1_minute=1000))[0]
    ticket = await tokens.admit(caller(), "m1", "chat.completions", {"max_tokens": 10}, 0)
    assert ticket is not None
    ticket.settle(400)
    tkey = f"p:{PROJECT}:m1:tpm"
    assert tokens.counters[tkey].held < 0
    before = store.buckets[tkey][0]
    await tokens.renew()
    assert store.buckets[tkey][0] < before - 200  # charged
    assert tokens.counters[tkey].held >= 0
    for lim in (a, b, tokens):
        await lim.stop()


async def test_concurrency_is_shared_between_instances() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    a, b = shared_limiters(clock, store, 2, project_rules(max_concurrent_requests=3))
    held = [await admit(a), await admit(a), await admit(b)]
    with pytest.raises(errors.RateLimited):
        await admit(b)
    with pytest.raises(errors.RateLimited):
        await admit(a)
    first = held[0]
    assert first is not None
    first.settle(0)  # a's slot is free, but a still holds it for a moment …
    with pytest.raises(errors.RateLimited):
        await admit(b)
    clock.advance(2)
    await a.renew()  # … until it hands unused slots back
    assert await admit(b) is not None
    for lim in (a, b):
        await lim.stop()


async def test_fail_open_decides_locally_and_fail_closed_refuses() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    rules = project_rules(max_requests_per_1_minute=10)
    [lim] = shared_limiters(clock, store, 1, rules)
    await admit(lim)  # leases 1 + a block of 1
    store.down = True
    await admit(lim)  # the lease still covers it
    for _ in range(8):  # then this instance decides alone, from where it last saw the bucket
        await admit(lim)
    with pytest.raises(errors.RateLimited):
        await admit(lim)
    # What it admitted alone is charged once the store is back.
    store.down = False
    clock.advance(1.5)  # past the retry pause
    await lim.renew()
    key = f"p:{PROJECT}:m1:rpm"
    assert store.buckets[key][0] < 2
    await lim.stop()

    closed = OrgRules(projects=dict(rules.projects), failure_mode="closed")
    [strict] = shared_limiters(clock, store, 1, closed)
    store.down = True
    with pytest.raises(errors.ServiceUnavailable) as caught:
        await admit(strict)
    assert caught.value.code == "rate_limit_unavailable" and caught.value.status == 503
    await strict.stop()


async def test_memory_mode_forgets_counters_that_are_full_again() -> None:
    clock = Clock()
    rules = OrgRules(keys={f"key_{n}": LimitSet(max_requests_per_1_minute=60) for n in range(3)})
    lim = limiter(clock, rules)
    for n in range(3):
        await admit(lim, api_key_id=f"key_{n}")
    assert len(lim.counters) == 3
    clock.advance(61)  # every bucket is full again: as good as a new one
    await admit(lim, api_key_id="key_0")
    assert list(lim.counters) == ["k:key_0:rpm"]
