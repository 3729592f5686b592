"""A foreground response left `in_progress` by an instance that stopped mid-request is
failed by housekeeping once it is older than JAN_RESPONSE_ABANDONED_AFTER_SECONDS; running
ones, background ones (the worker's, by lease) and finished ones are left alone."""

from __future__ import annotations

from datetime import timedelta

import httpx

from functions.common.housekeeping import Housekeeping
from functions.common.runtime import Runtime
from tests.conftest import component
from tests.conversations.tenants import Tenant
from tests.responses.helpers import create


async def _left_running(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    *,
    age: timedelta,
    background: bool,
) -> str:
    """A stored response put back `in_progress`, as its instance left it ``age`` ago."""
    response_id: str = (await create(client, tenant.user, input="hi"))["id"]
    await runtime.db.writer.execute(
        "UPDATE responses SET status = 'in_progress', completed_at = NULL, usage = NULL,"
        " created_at = now() - $2::interval, background = $3,"
        " lease_owner = CASE WHEN $3 THEN 'elsewhere' END,"
        " lease_expires_at = CASE WHEN $3 THEN now() + interval '30 seconds' END"
        " WHERE id = $1",
        response_id,
        age,
        background,
    )
    return response_id


async def test_abandoned_foreground_responses_are_failed(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    abandoned = await _left_running(
        client, runtime, tenant, age=timedelta(hours=2), background=False
    )
    running = await _left_running(
        client, runtime, tenant, age=timedelta(minutes=5), background=False
    )
    leased = await _left_running(client, runtime, tenant, age=timedelta(hours=2), background=True)
    finished = (await create(client, tenant.user, input="done"))["id"]
    await runtime.db.writer.execute(
        "UPDATE responses SET created_at = now() - interval '2 hours' WHERE id = $1", finished
    )

    done = await component(runtime, Housekeeping).run_once(runtime.db)

    assert done["responses.abandoned"] == 1
    failed = (await client.get(f"/v1/responses/{abandoned}", headers=tenant.user)).json()
    assert failed["status"] == "failed" and failed["completed_at"] is not None
    assert failed["error"]["code"] == "server_error"
    assert "server stopped" in failed["error"]["message"]
    statuses = await runtime.db.writer.fetch(
        "SELECT id, status FROM responses WHERE id = ANY($1::text[])", [running, leased, finished]
    )
    assert {r["id"]: r["status"] for r in statuses} == {
        running: "in_progress",
        leased: "in_progress",
        finished: "completed",
    }
