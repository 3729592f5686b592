"""Long PostgreSQL outages under load, against a cluster the test owns (``tests/pg.py``),
stopped with ``pg_ctl stop -m fast`` while clients call chat completions through the real
app and a local model server, then started again:

- callers whose credentials were verified before the outage keep being served, the
  project key's and the signed-in user's alike (the cache serves them past its 5 s);
- a credential revoked meanwhile (a broadcast from another instance) is refused;
- a key never seen before gets a 503 with ``Retry-After`` in OpenAI's envelope, not a 500;
- readiness reports the outage (``degraded``, still 200: see ``functions/ops``);
- usage records wait in memory (``jan_usage_queue_records`` rises, within its bound) and
  every one is in the ledger once the database is back, through the same pools;
- past ``JAN_USAGE_QUEUE_MAX`` the oldest records are dropped, counted and logged;
- a route that needs the database itself answers 503 ``database_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from functions.app import create_app
from functions.common import migrate
from functions.common.runtime import Runtime
from functions.services import keys
from functions.services.identity import Identity
from functions.services.ledger import UsageRecorder
from tests.chat.fakes import FakeUpstream
from tests.conftest import component, make_settings
from tests.factories import Tenant, bearer, create_project_key, create_tenant
from tests.pg import Cluster, standalone

BODY = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
QUEUED = "jan_usage_queue_records"
DROPPED = "jan_usage_records_dropped_total"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with standalone() as c:
        yield c


@dataclass
class Gateway:
    runtime: Runtime
    client: httpx.AsyncClient
    tenant: Tenant
    cluster: Cluster


@dataclass
class Load:
    """Clients calling chat completions (plain and streamed) with credentials the gateway
    has verified; each answer's status counted by the phase it started in."""

    gateway: Gateway
    phase: str = "before"
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)  # of answers other than 200
    running: bool = True

    async def client(self, headers: dict[str, str], stream: bool) -> None:
        body = {**BODY, "stream": stream}
        while self.running:
            phase = self.phase
            if stream:
                async with self.gateway.client.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as r:
                    text = b"".join([chunk async for chunk in r.aiter_bytes()])
                    ok = r.status_code == 200 and text.rstrip().endswith(b"data: [DONE]")
            else:
                r = await self.gateway.client.post(
                    "/v1/chat/completions", json=body, headers=headers
                )
                text, ok = r.content, r.status_code == 200
            self.statuses.setdefault(phase, Counter())[r.status_code if ok else -1] += 1
            if not ok:
                self.bodies.append(text[:300])

    @property
    def served(self) -> int:
        return sum(c[200] for c in self.statuses.values())


@pytest.fixture
async def gateway(cluster: Cluster, builtin: FakeUpstream) -> AsyncIterator[Gateway]:
    conn = await asyncpg.connect(cluster.dsn)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()
    settings = make_settings(
        cluster.dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=("127.0.0.1",),
        jan_spend_alert_interval_seconds=0,
        jan_housekeeping_interval_seconds=0,
    )
    runtime = Runtime(settings)
    app = create_app(runtime)
    await runtime.open()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=30
        ) as client:
            tenant = await create_tenant(runtime)
            yield Gateway(runtime, client, tenant, cluster)
    finally:
        await runtime.close()


async def ledger_rows(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM usage_completions")
        rolled = await conn.fetchval("SELECT coalesce(sum(requests), 0) FROM usage_hourly")
        return int(rows), int(rolled)
    finally:
        await conn.close()


async def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def queued() -> float:
    return REGISTRY.get_sample_value(QUEUED) or 0.0


@pytest.mark.parametrize("outage_seconds", [10, 60])
async def test_cached_callers_are_served_through_a_database_outage(
    gateway: Gateway, outage_seconds: int, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, client, tenant = gateway.runtime, gateway.client, gateway.tenant
    identity = component(runtime, Identity)
    recorder = component(runtime, UsageRecorder)
    never_used = await create_project_key(runtime, tenant, name="never used before")
    revoked = await create_project_key(runtime, tenant, name="revoked during the outage")
    callers = [tenant.project_headers, tenant.user_headers, bearer(revoked)]
    for headers in callers:  # verified (and cached) before the outage
        assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).is_success

    load = Load(gateway)
    tasks = [
        asyncio.ensure_future(load.client(headers, stream))
        for headers, stream in [
            (tenant.project_headers, False),
            (tenant.project_headers, False),
            (tenant.project_headers, True),
            (tenant.user_headers, False),
        ]
    ]
    await asyncio.sleep(1.0)
    caplog.set_level(logging.INFO)
    gateway.cluster.stop("fast")
    load.phase = "outage"
    stopped = time.monotonic()
    most_queued = 0.0
    revoked_hash = keys.hash_key(identity.apikey_secret, revoked)
    await asyncio.sleep(1.0)
    # A key deleted (here, or elsewhere and broadcast) is refused at once, outage or not.
    await identity.revoke_keys([revoked_hash])
    while time.monotonic() < stopped + outage_seconds:
        most_queued = max(most_queued, queued())
        await asyncio.sleep(0.2)

    # Still down: what needs the database answers 503 with Retry-After; readiness says so.
    for credential in (never_used, revoked):
        r = await client.post("/v1/chat/completions", json=BODY, headers=bearer(credential))
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) > 0
        assert r.json()["error"]["code"] == "database_unavailable"
        assert r.json()["error"]["type"] == "server_error"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert "database not answering" in ready.json()["message"]
    waiting = recorder.pending
    assert 0 < most_queued <= recorder.max_queue and waiting > 0

    gateway.cluster.start()
    load.phase = "after"
    await asyncio.sleep(2.0)
    load.running = False
    await asyncio.gather(*tasks)

    outage = load.statuses["outage"]
    print(
        f"outage {outage_seconds} s: {dict(load.statuses)}; most queued {most_queued:.0f}, "
        f"{waiting} waiting at the end"
    )
    # Every call of a cached caller succeeded, before, during and after the outage.
    assert set(outage) == {200} and outage[200] > 0, load.bodies[:3]
    assert all(set(c) == {200} for c in load.statuses.values()), load.bodies[:3]
    stale_served = REGISTRY.get_sample_value("jan_auth_stale_credentials_total")
    assert stale_served and stale_served > 0

    # The pools reconnect: a new key is looked up, readiness is ok, the queue is written.
    r = await client.post("/v1/chat/completions", json=BODY, headers=bearer(never_used))
    assert r.status_code == 200, r.text
    assert (await client.get("/readyz")).json()["status"] == "ok"
    expected = len(callers) + load.served + 1  # the calls before, under load, and this one

    async def all_written() -> bool:
        return recorder.pending == 0 and (await ledger_rows(gateway.cluster.dsn))[0] >= expected

    await wait_for(all_written)
    rows, rolled = await ledger_rows(gateway.cluster.dsn)
    assert rows == rolled == expected
    messages = [r.getMessage() for r in caplog.records]
    assert "credential lookups cannot reach the database; serving cached credentials" in messages
    assert "credential lookups reach the database again" in messages
    assert "usage flushed after failures" in messages


async def test_usage_past_the_queue_bound_is_dropped_counted_and_logged(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, client, tenant = gateway.runtime, gateway.client, gateway.tenant
    recorder = component(runtime, UsageRecorder)
    recorder.max_queue = recorder.batch_size = 20  # JAN_USAGE_QUEUE_MAX=20
    headers = tenant.project_headers
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).is_success
    projects = "/v1/organization/projects"
    assert (await client.get(projects, headers=tenant.admin_headers)).is_success

    async def first_written() -> bool:
        return recorder.pending == 0 and (await ledger_rows(gateway.cluster.dsn))[0] == 1

    await wait_for(first_written)
    dropped_before = REGISTRY.get_sample_value(DROPPED) or 0.0
    caplog.set_level(logging.ERROR, "functions.services.ledger")
    gateway.cluster.stop("fast")
    served = 0
    for _ in range(100):
        r = await client.post("/v1/chat/completions", json=BODY, headers=headers)
        assert r.status_code == 200, r.text
        served += 1
        assert recorder.pending <= 20
    # A route that needs the database itself: 503 with Retry-After (its caller is cached).
    r = await client.get(projects, headers=tenant.admin_headers)
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
    assert r.headers["retry-after"] == "2"
    dropped = (REGISTRY.get_sample_value(DROPPED) or 0.0) - dropped_before
    assert dropped == served - recorder.pending
    (logged,) = {r for r in caplog.records if r.getMessage() == "usage records dropped: queue full"}
    assert logged.__dict__["max_queue"] == 20 and logged.__dict__["dropped"] > 0
    gateway.cluster.start()

    async def written() -> bool:
        return recorder.pending == 0 and (await ledger_rows(gateway.cluster.dsn))[0] >= 21

    await wait_for(written)
    assert (await ledger_rows(gateway.cluster.dsn))[0] == 1 + served - int(dropped)
