"""Per-project tool settings and the daily tool-call counters (migrations 0005, 0009)."""

from __future__ import annotations

from dataclasses import dataclass

from functions.common.db import Executor

# Only today's counter is read; a few earlier days are kept for anyone looking at the table.
COUNTER_KEEP_DAYS = 7


@dataclass(frozen=True, slots=True)
class ProjectToolSettings:
    enabled_tools: frozenset[str] | None  # None: every tool
    # None: the organization owner's ceiling, else the server default; 0: unlimited.
    daily_call_quota: int | None
    # What an organization owner last set: project owners may not go above it (None: only
    # the operator's ceiling applies; 0: unlimited).
    daily_call_quota_ceiling: int | None = None


DEFAULTS = ProjectToolSettings(enabled_tools=None, daily_call_quota=None)


_GET_SETTINGS = (
    "SELECT enabled_tools, daily_call_quota, daily_call_quota_ceiling FROM project_tool_settings"
    " WHERE organization_id = $1 AND project_id = $2"
)
_LOCK_SETTINGS = _GET_SETTINGS + " FOR UPDATE"


async def get_settings(
    ex: Executor, *, organization_id: str, project_id: str, lock: bool = False
) -> ProjectToolSettings:
    """The project's settings; with ``lock`` (in a transaction) its row is made if missing
    and held until the transaction ends, so concurrent changes apply one after the other
    (an organization owner's new ceiling is never overwritten by a stale one)."""
    if lock:
        await ex.execute(
            "INSERT INTO project_tool_settings (organization_id, project_id)"
            " VALUES ($1, $2) ON CONFLICT DO NOTHING",
            organization_id,
            project_id,
        )
    row = await ex.fetchrow(_LOCK_SETTINGS if lock else _GET_SETTINGS, organization_id, project_id)
    if row is None:
        return DEFAULTS
    enabled = row["enabled_tools"]
    return ProjectToolSettings(
        enabled_tools=None if enabled is None else frozenset(enabled),
        daily_call_quota=row["daily_call_quota"],
        daily_call_quota_ceiling=row["daily_call_quota_ceiling"],
    )


async def put_settings(
    ex: Executor, *, organization_id: str, project_id: str, settings: ProjectToolSettings
) -> None:
    enabled = None if settings.enabled_tools is None else sorted(settings.enabled_tools)
    await ex.execute(
        "INSERT INTO project_tool_settings"
        " (organization_id, project_id, enabled_tools, daily_call_quota,"
        " daily_call_quota_ceiling)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (organization_id, project_id) DO UPDATE"
        " SET enabled_tools = EXCLUDED.enabled_tools,"
        " daily_call_quota = EXCLUDED.daily_call_quota,"
        " daily_call_quota_ceiling = EXCLUDED.daily_call_quota_ceiling, updated_at = now()",
        organization_id,
        project_id,
        enabled,
        settings.daily_call_quota,
        settings.daily_call_quota_ceiling,
    )


async def take_call(ex: Executor, *, organization_id: str, project_id: str, quota: int) -> bool:
    """Count one call for today (UTC) if the quota allows it (0: unlimited); False if not."""
    calls = await ex.fetchval(
        "INSERT INTO tool_call_counters AS c (organization_id, project_id, day, calls)"
        " VALUES ($1, $2, (now() AT TIME ZONE 'utc')::date, 1)"
        " ON CONFLICT (organization_id, project_id, day) DO UPDATE"
        " SET calls = c.calls + 1 WHERE $3::integer = 0 OR c.calls < $3::integer"
        " RETURNING c.calls",
        organization_id,
        project_id,
        quota,
    )
    return calls is not None


async def calls_today(ex: Executor, *, organization_id: str, project_id: str) -> int:
    calls = await ex.fetchval(
        "SELECT calls FROM tool_call_counters WHERE organization_id = $1 AND project_id = $2"
        " AND day = (now() AT TIME ZONE 'utc')::date",
        organization_id,
        project_id,
    )
    return int(calls or 0)


async def sweep_old_counters(ex: Executor, *, limit: int) -> int:
    """Delete up to ``limit`` counters older than COUNTER_KEEP_DAYS (housekeeping)."""
    status = await ex.execute(
        "DELETE FROM tool_call_counters WHERE (organization_id, project_id, day) IN ("
        " SELECT organization_id, project_id, day FROM tool_call_counters"
        " WHERE day < (now() AT TIME ZONE 'utc')::date - $2::integer LIMIT $1)",
        limit,
        COUNTER_KEEP_DAYS,
    )
    return int(status.split()[-1])
