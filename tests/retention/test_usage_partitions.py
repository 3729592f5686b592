"""The usage ledger by month: rows land in their month's partition; housekeeping makes the
months ahead and gives rows waiting in the default partition a month of their own; a month
past every organization's retention is dropped whole, and only then."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from functions.app import create_app, services_of
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.retention import Retention
from tests.conftest import make_settings
from tests.factories import create_tenant

DAY = 86400


@pytest.fixture(name="settings")
def thirty_days(database_dsn: str) -> Settings:
    return make_settings(database_dsn, jan_retention_usage_detail_days=30)


@pytest.fixture
async def retention(runtime: Runtime) -> Retention:
    built = create_app(runtime)
    await runtime.open()
    return services_of(built).retention


async def partitions(runtime: Runtime) -> dict[str, int]:
    """Each partition of the ledger and its row count."""
    rows = await runtime.db.writer.fetch(
        "SELECT c.relname AS name,"
        " (SELECT count(*) FROM usage_completions u WHERE u.tableoid = c.oid) AS n"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'usage_completions'::regclass"
    )
    return {r["name"]: r["n"] for r in rows}


def month_name(at: datetime) -> str:
    return f"usage_completions_{at:%Y%m}"


async def insert(runtime: Runtime, organization_id: str, at: datetime) -> None:
    await runtime.db.writer.execute(
        "INSERT INTO usage_completions (created_at, organization_id, model, operation,"
        " streamed, latency_ms, status) VALUES ($1, $2, 'm', 'chat.completions', false, 1, 200)",
        at,
        organization_id,
    )


async def sweep(retention: Retention, runtime: Runtime, at: float) -> int:
    retention.clock = lambda: at
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        await retention.maintain_partitions(conn, limit=1000)
        return await retention.sweep_usage_detail(conn, limit=1000)


async def test_rows_go_to_their_month_and_old_months_are_dropped_whole(
    runtime: Runtime, retention: Retention
) -> None:
    now = time.time()
    this_month = datetime.fromtimestamp(now, UTC)
    old = datetime(2024, 2, 10, tzinfo=UTC)
    tenant = await create_tenant(runtime)
    partitioned = await runtime.db.writer.fetchval(
        "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'usage_completions'::regclass"
    )
    assert partitioned == 1
    await insert(runtime, tenant.organization_id, this_month)
    await insert(runtime, tenant.organization_id, old)  # no month of its own yet
    found = await partitions(runtime)
    assert found[month_name(this_month)] == 1 and found["usage_completions_default"] == 1
    assert len([n for n in found if n != "usage_completions_default"]) >= 3  # and 2 ahead

    # Housekeeping (a day later: nothing past 30 days yet but the old month, by rows).
    await sweep(retention, runtime, now + DAY)
    found = await partitions(runtime)
    assert "usage_completions_202402" not in found  # dropped whole: past every period
    assert found["usage_completions_default"] == 0
    assert found[month_name(this_month)] == 1

    # An organization that keeps its rows for ever holds every month back.
    await runtime.db.writer.execute(
        "INSERT INTO organization_data_retention (organization_id, usage_detail_days)"
        " VALUES ($1, 0)",
        tenant.organization_id,
    )
    await insert(runtime, tenant.organization_id, old)
    assert await sweep(retention, runtime, now + 400 * DAY) == 0
    found = await partitions(runtime)
    assert found["usage_completions_202402"] == 1 and found[month_name(this_month)] == 1


async def test_a_shorter_period_deletes_that_organizations_rows_only(
    runtime: Runtime, retention: Retention
) -> None:
    now = time.time()
    brief, other = await create_tenant(runtime), await create_tenant(runtime)
    await runtime.db.writer.execute(
        "INSERT INTO organization_data_retention (organization_id, usage_detail_days)"
        " VALUES ($1, 1)",
        brief.organization_id,
    )
    here = datetime.fromtimestamp(now, UTC)
    for tenant in (brief, other):
        await insert(runtime, tenant.organization_id, here)
    assert await sweep(retention, runtime, now + 2 * DAY) == 1
    left = await runtime.db.writer.fetch("SELECT organization_id FROM usage_completions")
    assert [r["organization_id"] for r in left] == [other.organization_id]
    assert (await partitions(runtime))[month_name(here)] == 1  # its month stays
