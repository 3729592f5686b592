"""Housekeeping deletes daily tool-call counters older than a week; recent days stay."""

from __future__ import annotations

import httpx

from functions.common.housekeeping import Housekeeping
from functions.common.runtime import Runtime
from functions.services.toolbox.store import COUNTER_KEEP_DAYS, calls_today
from tests.conftest import component
from tests.factories import create_tenant


async def test_old_tool_call_counters_are_swept(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await create_tenant(runtime)
    ages = [0, 1, COUNTER_KEEP_DAYS, COUNTER_KEEP_DAYS + 1, 400]
    await runtime.db.writer.executemany(
        "INSERT INTO tool_call_counters (organization_id, project_id, day, calls)"
        " VALUES ($1, $2, (now() AT TIME ZONE 'utc')::date - $3::integer, 5)",
        [(tenant.organization_id, tenant.project_id, age) for age in ages],
    )

    done = await component(runtime, Housekeeping).run_once(runtime.db)

    assert done["tools.call_counters"] == 2
    left = await runtime.db.writer.fetch(
        "SELECT (now() AT TIME ZONE 'utc')::date - day AS age FROM tool_call_counters ORDER BY age"
    )
    assert [r["age"] for r in left] == [0, 1, COUNTER_KEEP_DAYS]
    assert (
        await calls_today(
            runtime.db.writer, organization_id=tenant.organization_id, project_id=tenant.project_id
        )
        == 5
    )
