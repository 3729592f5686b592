"""SQL of data retention: the organizations' and projects' controls, and the sweeps that
delete what is past its retention period, in bounded batches."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg

from functions.common.db import Executor

# The kinds of data with a retention period, and the column holding each one's days.
PERIOD_COLUMNS = {
    "responses": "responses_days",
    "conversation_items": "conversation_items_days",
    "usage_detail": "usage_detail_days",
    "audit_log": "audit_log_days",
}


# --- the controls --------------------------------------------------------------------------
async def get_organization(ex: Executor, *, organization_id: str) -> asyncpg.Record | None:
    return await ex.fetchrow(
        "SELECT * FROM organization_data_retention WHERE organization_id = $1", organization_id
    )


async def set_organization(
    ex: Executor,
    *,
    organization_id: str,
    retention_type: str | None,
    periods: Mapping[str, int | None],
) -> asyncpg.Record:
    """Upsert the organization's row: ``retention_type`` when given, and each period named
    in ``periods`` (by kind; None: back to the server's default)."""
    # Only constant SQL goes in: column names from PERIOD_COLUMNS, "$n" placeholders.
    args: list[object] = [organization_id]
    columns, values, updates = ["organization_id"], ["$1"], ["updated_at = now()"]
    chosen: dict[str, object] = {PERIOD_COLUMNS[kind]: days for kind, days in periods.items()}
    if retention_type is not None:
        chosen["retention_type"] = retention_type
    for column, value in chosen.items():
        args.append(value)
        columns.append(column)
        values.append(f"${len(args)}")
        updates.append(f"{column} = ${len(args)}")
    row = await ex.fetchrow(
        f"INSERT INTO organization_data_retention ({', '.join(columns)})"  # noqa: S608
        f" VALUES ({', '.join(values)}) ON CONFLICT (organization_id) DO UPDATE"
        f" SET {', '.join(updates)} RETURNING *",
        *args,
    )
    assert row is not None
    return row


async def get_project(ex: Executor, *, organization_id: str, project_id: str) -> str | None:
    """The project's own retention type; None: it follows the organization's."""
    found: str | None = await ex.fetchval(
        "SELECT retention_type FROM project_data_retention"
        " WHERE organization_id = $1 AND project_id = $2",
        organization_id,
        project_id,
    )
    return found


async def set_project(
    ex: Executor, *, organization_id: str, project_id: str, retention_type: str | None
) -> None:
    """Set the project's retention type; None: follow the organization's again."""
    if retention_type is None:
        await ex.execute(
            "DELETE FROM project_data_retention WHERE organization_id = $1 AND project_id = $2",
            organization_id,
            project_id,
        )
        return
    await ex.execute(
        "INSERT INTO project_data_retention (organization_id, project_id, retention_type)"
        " VALUES ($1, $2, $3) ON CONFLICT (project_id)"
        " DO UPDATE SET retention_type = $3, updated_at = now()",
        organization_id,
        project_id,
        retention_type,
    )


# --- the sweeps ----------------------------------------------------------------------------
async def delete_responses(ex: Executor, *, now: datetime, default_days: int, limit: int) -> int:
    """Stored responses (with their input items) past retention; never one still queued or
    running."""
    status = await ex.execute(
        """
        WITH cutoffs AS (SELECT * FROM retention_cutoffs('responses', $1, $2)),
        doomed AS (
            SELECT x.id FROM cutoffs c CROSS JOIN LATERAL (
                SELECT id FROM responses r
                WHERE r.organization_id = c.organization_id AND r.created_at < c.cutoff
                  AND r.status NOT IN ('queued', 'in_progress')
                ORDER BY r.created_at LIMIT $3
            ) x
            LIMIT $3
        )
        DELETE FROM responses WHERE id IN (SELECT id FROM doomed)
        """,
        now,
        default_days,
        limit,
    )
    return int(status.split()[-1])


async def delete_conversation_items(
    ex: Executor, *, now: datetime, default_days: int, limit: int
) -> int:
    """Conversation items past retention, then conversations begun before the cut-off that
    have no item left (up to ``limit`` rows in all)."""
    status = await ex.execute(
        """
        WITH cutoffs AS (SELECT * FROM retention_cutoffs('conversation_items', $1, $2)),
        doomed AS (
            SELECT x.seq FROM cutoffs c CROSS JOIN LATERAL (
                SELECT seq FROM conversation_items i
                WHERE i.organization_id = c.organization_id AND i.created_at < c.cutoff
                ORDER BY i.created_at LIMIT $3
            ) x
            LIMIT $3
        )
        DELETE FROM conversation_items WHERE seq IN (SELECT seq FROM doomed)
        """,
        now,
        default_days,
        limit,
    )
    items = int(status.split()[-1])
    if items >= limit:
        return items
    status = await ex.execute(
        """
        WITH cutoffs AS (SELECT * FROM retention_cutoffs('conversation_items', $1, $2)),
        doomed AS (
            SELECT x.id FROM cutoffs c CROSS JOIN LATERAL (
                SELECT id FROM conversations v
                WHERE v.organization_id = c.organization_id AND v.created_at < c.cutoff
                  AND NOT EXISTS (SELECT 1 FROM conversation_items i
                                  WHERE i.conversation_id = v.id)
                ORDER BY v.created_at LIMIT $3
            ) x
            LIMIT $3
        )
        DELETE FROM conversations WHERE id IN (SELECT id FROM doomed)
        """,
        now,
        default_days,
        limit - items,
    )
    return items + int(status.split()[-1])


async def delete_usage_detail(ex: Executor, *, now: datetime, default_days: int, limit: int) -> int:
    """The ledger's per-request rows past retention (the rollups stay), of the first
    organization that has some: its oldest ``limit`` or so (rows that share the last one's
    instant go with it; the ledger has no key to cut a tie with)."""
    status = await ex.execute(
        """
        WITH due AS (
            SELECT c.organization_id, c.cutoff FROM retention_cutoffs('usage_detail', $1, $2) c
            WHERE EXISTS (SELECT 1 FROM usage_completions u
                          WHERE u.organization_id = c.organization_id
                            AND u.created_at < c.cutoff)
            ORDER BY c.organization_id LIMIT 1
        ), bound AS (
            SELECT d.organization_id, least(d.cutoff, (
                SELECT u.created_at FROM usage_completions u
                WHERE u.organization_id = d.organization_id AND u.created_at < d.cutoff
                ORDER BY u.created_at OFFSET $3 - 1 LIMIT 1
            ) + interval '1 microsecond') AS before
            FROM due d
        )
        DELETE FROM usage_completions u USING bound b
        WHERE u.organization_id = b.organization_id AND u.created_at < b.before
        """,
        now,
        default_days,
        limit,
    )
    return int(status.split()[-1])


async def audit_cutoffs(
    ex: Executor, *, now: datetime, default_days: int
) -> list[tuple[str, datetime]]:
    """(organization, cut-off) for each organization with audit events past retention."""
    rows = await ex.fetch(
        """
        WITH cutoffs AS (SELECT * FROM retention_cutoffs('audit_log', $1, $2))
        SELECT organization_id, cutoff FROM cutoffs c
        WHERE EXISTS (SELECT 1 FROM audit_logs a
                      WHERE a.organization_id = c.organization_id AND a.effective_at < c.cutoff)
        """,
        now,
        default_days,
    )
    return [(r["organization_id"], r["cutoff"]) for r in rows]


# --- the ledger's monthly partitions -----------------------------------------------------
async def maintain_usage_partitions(ex: Executor, *, now: datetime, ahead: int) -> int:
    """Create the ledger's partitions from ``now``'s month to ``ahead`` months later (and
    for rows waiting in the default partition): how many were created."""
    created: int = await ex.fetchval("SELECT usage_partitions_maintain($1, $2)", now, ahead)
    return created


async def usage_partition_horizon(
    ex: Executor, *, now: datetime, default_days: int
) -> datetime | None:
    """The instant before which every organization's ledger rows are past retention; None
    when one of them keeps its rows for ever."""
    horizon: datetime | None = await ex.fetchval(
        """
        SELECT CASE WHEN count(*) = (SELECT count(*) FROM organizations) THEN min(cutoff) END
        FROM retention_cutoffs('usage_detail', $1, $2)
        """,
        now,
        default_days,
    )
    return horizon


async def drop_usage_partitions(ex: Executor, *, before: datetime) -> int:
    """Drop the ledger's months that end by ``before``: how many."""
    dropped: int = await ex.fetchval("SELECT usage_partitions_drop($1)", before)
    return dropped
