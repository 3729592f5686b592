"""Retention periods enforced by housekeeping, with the sweeps' clock moved: an organization's
stored responses, conversation items (and the conversations they leave empty), the
ledger's per-request rows and its audit events go once past their periods, in bounded
batches; another organization's, kept for ever, stay; a response still running stays."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from functions.app import create_app, services_of
from functions.common.housekeeping import Housekeeping
from functions.common.runtime import Runtime
from functions.services.inference.service import Inference
from functions.services.retention import Retention
from tests.conftest import component, make_settings
from tests.factories import Tenant, create_tenant
from tests.responses.upstream import MODEL

DAY = 86400
PERIODS = {"responses": 30, "conversation_items": 30, "usage_detail": 30, "audit_log": 30}


@dataclass
class App:
    client: httpx.AsyncClient
    runtime: Runtime
    retention: Retention
    keeper: Housekeeping


@pytest.fixture
async def app(runtime: Runtime) -> AsyncIterator[App]:
    built = create_app(runtime)
    await runtime.open()
    transport = httpx.ASGITransport(app=built)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield App(
            client,
            runtime,
            services_of(built).retention,
            component(runtime, Housekeeping),
        )


async def fill(app: App, tenant: Tenant) -> None:
    """Two stored responses, a conversation with two items, an empty one, usage rows."""
    c, key = app.client, tenant.project_headers
    for text in ("one", "two"):
        r = await c.post("/v1/responses", json={"model": MODEL, "input": text}, headers=key)
        assert r.status_code == 200, r.text
    items = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    await c.post("/v1/conversations", json={"items": items}, headers=key)
    await c.post("/v1/conversations", json={}, headers=key)
    async with app.runtime.db.writer.acquire() as conn:
        await component(app.runtime, Inference).usage.flush(conn)


async def counts(app: App, organization_id: str) -> dict[str, int]:
    out = {}
    for table, column in (
        ("responses", "organization_id"),
        ("conversations", "organization_id"),
        ("conversation_items", "organization_id"),
        ("usage_completions", "organization_id"),
        ("audit_logs", "organization_id"),
    ):
        out[table] = await app.runtime.db.writer.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column} = $1",  # noqa: S608 (constants)
            organization_id,
        )
    return out


def deleted(swept: dict[str, int | None]) -> set[int | None]:
    """What the retention sweeps of a housekeeping round deleted."""
    return {n for name, n in swept.items() if name.startswith("retention.")}


async def test_what_is_past_its_period_goes_the_rest_stays(app: App) -> None:
    short, kept = await create_tenant(app.runtime), await create_tenant(app.runtime)
    r = await app.client.post(
        "/v1/organization/data_retention",
        json={"retention_days": PERIODS},
        headers=short.admin_headers,
    )
    assert r.status_code == 200, r.text
    await app.client.post(
        "/v1/organization/projects", json={"name": "audited"}, headers=kept.admin_headers
    )
    for tenant in (short, kept):
        await fill(app, tenant)
    db = app.runtime.db.writer
    running = await db.fetchval(
        "UPDATE responses SET status = 'in_progress' WHERE id ="
        " (SELECT min(id) FROM responses WHERE organization_id = $1) RETURNING id",
        short.organization_id,
    )
    # An event written after the cut-off the moved clock gives (now + 1 day) stays.
    await db.execute(
        "INSERT INTO audit_logs (id, organization_id, type, effective_at)"
        " VALUES ('audit_log-late', $1, 'project.updated', now() + interval '20 days')",
        short.organization_id,
    )
    before = {t.organization_id: await counts(app, t.organization_id) for t in (short, kept)}
    assert before[short.organization_id] == {
        "responses": 2,
        "conversations": 2,
        "conversation_items": 2,
        "usage_completions": 2,
        "audit_logs": 2,
    }

    app.retention.clock = lambda: time.time() + 29 * DAY  # not yet
    assert deleted(await app.keeper.run_once(app.runtime.db)) == {0}

    app.retention.clock = lambda: time.time() + 31 * DAY
    swept = await app.keeper.run_once(app.runtime.db)
    assert swept["retention.responses"] == 1
    assert swept["retention.conversation_items"] == 4  # two items, then two conversations
    assert swept["retention.usage_detail"] == 2
    assert swept["retention.audit_log"] == 1
    assert await counts(app, short.organization_id) == {
        "responses": 1,  # the one still running
        "conversations": 0,
        "conversation_items": 0,
        "usage_completions": 0,
        "audit_logs": 1,  # the late one
    }
    left = await db.fetchval(
        "SELECT id FROM responses WHERE organization_id = $1", short.organization_id
    )
    assert left == running
    assert await counts(app, kept.organization_id) == before[kept.organization_id]
    assert deleted(await app.keeper.run_once(app.runtime.db)) == {0}


async def test_each_batch_is_bounded(app: App) -> None:
    tenant = await create_tenant(app.runtime)
    await app.client.post(
        "/v1/organization/data_retention",
        json={"retention_days": PERIODS},
        headers=tenant.admin_headers,
    )
    await fill(app, tenant)
    app.retention.clock = lambda: time.time() + 31 * DAY
    r = app.retention
    for sweep in (
        r.sweep_responses,
        r.sweep_conversation_items,
        r.sweep_usage_detail,
        r.sweep_audit_log,
    ):
        async with app.runtime.db.writer.acquire() as conn, conn.transaction():
            assert await sweep(conn, limit=1) == 1
    after = await counts(app, tenant.organization_id)
    assert after == {
        "responses": 1,
        "conversations": 2,
        "conversation_items": 1,
        "usage_completions": 1,
        "audit_logs": 0,
    }


async def test_the_servers_defaults_apply_to_organizations_without_their_own(
    database_dsn: str,
) -> None:
    runtime = Runtime(make_settings(database_dsn, jan_retention_usage_detail_days=10))
    try:
        built = create_app(runtime)
        await runtime.open()
        tenant = await create_tenant(runtime)
        transport = httpx.ASGITransport(app=built)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.get("/v1/organization/data_retention", headers=tenant.admin_headers)
            assert r.json()["retention_days"]["usage_detail"] == {"days": 10, "source": "default"}
        await runtime.db.writer.execute(
            "INSERT INTO usage_completions (created_at, organization_id, model, operation,"
            " streamed, latency_ms, status) VALUES (now(), $1, 'm', 'chat.completions',"
            " false, 1, 200)",
            tenant.organization_id,
        )
        retention = services_of(built).retention
        retention.clock = lambda: time.time() + 9 * DAY
        async with runtime.db.writer.acquire() as conn:
            assert await retention.sweep_usage_detail(conn, limit=10) == 0
        retention.clock = lambda: time.time() + 11 * DAY
        async with runtime.db.writer.acquire() as conn:
            assert await retention.sweep_usage_detail(conn, limit=10) == 1
    finally:
        await runtime.close()
