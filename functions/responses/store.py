"""SQL for stored responses, their input items, and the background work queue.

Owner-scoped like conversations ($1..$3 are organization, project and the visible user).
Background responses are claimed with ``FOR UPDATE SKIP LOCKED`` and held by a lease that
the running instance renews; an expired lease (the instance scaled down or died) makes
the response claimable again, up to ``MAX_ATTEMPTS`` runs, after which it is failed.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from functions.common.db import Executor
from functions.common.pagination import Page
from functions.common.principal import OWNED, Owner

MAX_ATTEMPTS = 3
ABANDONED_ERROR = {
    "code": "server_error",
    "message": "The server stopped before the response was complete; send it again.",
}
CHAIN_DEPTH = 100


async def insert_response(
    ex: Executor, *, owner: Owner, response: dict[str, Any], params: dict[str, Any]
) -> None:
    """Store a response object (as built by the engine) and nothing else."""
    await ex.execute(
        """
        INSERT INTO responses (id, organization_id, project_id, user_id, api_key_id,
            conversation_id, previous_response_id, status, background, params, output, usage,
            error, incomplete_details, metadata, created_at, completed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
            to_timestamp($16), to_timestamp($17))
        """,
        response["id"],
        owner.organization_id,
        owner.project_id,
        owner.user_id,
        owner.api_key_id,
        (response["conversation"] or {}).get("id"),
        response["previous_response_id"],
        response["status"],
        response["background"],
        params,
        response["output"],
        response.get("usage"),
        response["error"],
        response["incomplete_details"],
        response["metadata"],
        response["created_at"],
        response["completed_at"],
    )


async def insert_input_items(
    ex: Executor, *, owner: Owner, response_id: str, items: list[dict[str, Any]]
) -> None:
    await ex.executemany(
        """
        INSERT INTO response_input_items (id, response_id, organization_id, project_id, item)
        VALUES ($1, $2, $3, $4, $5)
        """,
        [(i["id"], response_id, owner.organization_id, owner.project_id, i) for i in items],
    )


async def get_response(ex: Executor, *, owner: Owner, response_id: str) -> asyncpg.Record | None:
    return await ex.fetchrow(
        f"SELECT * FROM responses WHERE {OWNED} AND id = $4",  # noqa: S608
        *owner.scope(),
        response_id,
    )


async def delete_response(ex: Executor, *, owner: Owner, response_id: str) -> bool:
    status = await ex.execute(
        f"DELETE FROM responses WHERE {OWNED} AND id = $4",  # noqa: S608
        *owner.scope(),
        response_id,
    )
    return status == "DELETE 1"


async def input_item_seq(
    ex: Executor, *, owner: Owner, response_id: str, item_id: str
) -> int | None:
    """Where an input item stands in its response's list (a page cursor)."""
    seq: int | None = await ex.fetchval(
        "SELECT seq FROM response_input_items"
        " WHERE organization_id = $1 AND project_id = $2 AND response_id = $3 AND id = $4",
        owner.organization_id,
        owner.project_id,
        response_id,
        item_id,
    )
    return seq


async def list_input_items(
    ex: Executor, *, owner: Owner, response_id: str, page: Page, after_seq: int | None
) -> list[dict[str, Any]]:
    """A response's input items after the cursor's ``seq`` (check the response first): up
    to ``page.fetch`` of them, for ``page.answer``."""
    rows = await ex.fetch(
        f"""
        SELECT item FROM response_input_items
        WHERE organization_id = $1 AND project_id = $2 AND response_id = $3
          AND ($4::bigint IS NULL OR seq {page.comparison} $4)
        ORDER BY seq {page.direction}
        LIMIT $5
        """,  # noqa: S608
        owner.organization_id,
        owner.project_id,
        response_id,
        after_seq,
        page.fetch,
    )
    return [r["item"] for r in rows]


async def chain_items(ex: Executor, *, owner: Owner, response_id: str) -> list[dict[str, Any]]:
    """The history `previous_response_id` points at: for each response of the chain, oldest
    first, its input items then its output."""
    rows = await ex.fetch(
        f"""
        WITH RECURSIVE chain AS (
            SELECT id, previous_response_id, output, 0 AS depth FROM responses
            WHERE {OWNED} AND id = $4
          UNION ALL
            SELECT r.id, r.previous_response_id, r.output, c.depth + 1
            FROM responses r JOIN chain c ON r.id = c.previous_response_id
            WHERE r.organization_id = $1 AND r.project_id = $2
              AND ($3::text IS NULL OR r.user_id = $3) AND c.depth < $5
        )
        SELECT c.depth, c.output,
            COALESCE((SELECT jsonb_agg(i.item ORDER BY i.seq) FROM response_input_items i
                      WHERE i.organization_id = $1 AND i.project_id = $2
                        AND i.response_id = c.id), '[]'::jsonb) AS inputs
        FROM chain c ORDER BY c.depth DESC
        """,  # noqa: S608
        *owner.scope(),
        response_id,
        CHAIN_DEPTH,
    )
    items: list[dict[str, Any]] = []
    for row in rows:
        items += row["inputs"]
        items += row["output"]
    return items


async def cancel_response(ex: Executor, *, owner: Owner, response_id: str) -> asyncpg.Record | None:
    """Mark a queued or running background response cancelled; the runner sees it on its
    next lease renewal and stops."""
    return await ex.fetchrow(
        f"""
        UPDATE responses SET status = 'cancelled', lease_owner = NULL, completed_at = now()
        WHERE {OWNED} AND id = $4 AND background AND status IN ('queued', 'in_progress')
        RETURNING *
        """,  # noqa: S608
        *owner.scope(),
        response_id,
    )


async def claim_fairly(
    ex: Executor, *, worker_id: str, lease_seconds: float, limit: int
) -> list[asyncpg.Record]:
    """Take up to ``limit`` queued (or abandoned) background responses, fairly across
    projects: each claimable response's turn is its project's running count plus its place
    in the project's queue, so one round takes every waiting project's oldest before
    anyone's second, and a project already running work waits behind one running none
    (oldest first among equal turns). Rows another instance is claiming are skipped."""
    return await ex.fetch(
        """
        WITH active AS (
            SELECT id, organization_id, project_id, status, lease_expires_at, attempts,
                created_at
            FROM responses
            WHERE background AND status IN ('queued', 'in_progress')
        ),
        running AS (
            SELECT organization_id, project_id, count(*) AS n FROM active
            WHERE status = 'in_progress' AND lease_expires_at >= now()
            GROUP BY organization_id, project_id
        ),
        turns AS (
            SELECT a.id, a.created_at, coalesce(r.n, 0) + row_number() OVER (
                PARTITION BY a.organization_id, a.project_id ORDER BY a.created_at, a.id
            ) AS turn
            FROM active a LEFT JOIN running r USING (organization_id, project_id)
            WHERE a.attempts < $3 AND (a.status = 'queued' OR a.lease_expires_at < now())
        )
        UPDATE responses SET status = 'in_progress', lease_owner = $1,
            lease_expires_at = now() + make_interval(secs => $2), attempts = attempts + 1
        WHERE id = ANY(ARRAY(
            -- Locked at this level, where the conditions are checked again on the row as
            -- it is now (another instance may have claimed it since the turns were read).
            SELECT r.id FROM responses r JOIN turns t ON t.id = r.id
            WHERE r.background AND r.attempts < $3 AND (r.status = 'queued'
                OR (r.status = 'in_progress' AND r.lease_expires_at < now()))
            ORDER BY t.turn, t.created_at, t.id
            LIMIT $4
            FOR UPDATE OF r SKIP LOCKED
        ))
        RETURNING *
        """,
        worker_id,
        lease_seconds,
        MAX_ATTEMPTS,
        limit,
    )


async def background_in_flight(
    ex: Executor, *, organization_id: str, project_id: str, user_id: str | None
) -> tuple[int, int]:
    """(the project's, the user's) background responses queued or running. Call it after
    ``lock_background_admission`` in the same transaction, so concurrent creates count
    each other."""
    row = await ex.fetchrow(
        """
        SELECT
            (SELECT count(*) FROM responses WHERE background
                AND status IN ('queued', 'in_progress')
                AND organization_id = $1 AND project_id = $2) AS project,
            (SELECT count(*) FROM responses WHERE background
                AND status IN ('queued', 'in_progress') AND user_id = $3) AS user
        """,
        organization_id,
        project_id,
        user_id,
    )
    assert row is not None
    return int(row["project"]), int(row["user"])


async def lock_background_admission(
    ex: Executor, *, organization_id: str, project_id: str, user_id: str | None
) -> None:
    """Serialise background creates of one project and of one user until the transaction
    ends (always project first, then user, so two locks never deadlock)."""
    await ex.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('jan.background.project:' || $1, 0))",
        f"{organization_id}/{project_id}",
    )
    if user_id is not None:
        await ex.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('jan.background.user:' || $1, 0))",
            user_id,
        )


async def fail_exhausted(ex: Executor) -> int:
    """Background responses abandoned too often are failed rather than retried forever."""
    status = await ex.execute(
        """
        UPDATE responses SET status = 'failed', lease_owner = NULL, completed_at = now(),
            error = '{"code": "server_error", "message": "The response could not be completed."}'
        WHERE background AND attempts >= $1 AND (status = 'queued'
            OR (status = 'in_progress' AND lease_expires_at < now()))
        """,
        MAX_ATTEMPTS,
    )
    return int(status.split()[-1])


async def fail_abandoned(ex: Executor, *, older_than_seconds: float, limit: int) -> int:
    """Fail up to ``limit`` foreground responses still `in_progress` long after they started
    (housekeeping): the instance running them stopped mid-request, and nothing else would
    ever finish them. Background ones have leases and are left to the worker."""
    status = await ex.execute(
        """
        UPDATE responses SET status = 'failed', completed_at = now(), error = $3
        WHERE id IN (
            SELECT id FROM responses
            WHERE NOT background AND status = 'in_progress' AND lease_owner IS NULL
              AND created_at < now() - make_interval(secs => $1)
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        """,
        older_than_seconds,
        limit,
        ABANDONED_ERROR,
    )
    return int(status.split()[-1])


async def renew_lease(
    ex: Executor, *, response_id: str, worker_id: str, lease_seconds: float
) -> bool:
    """Extend our lease; False when it is no longer ours (cancelled or taken over)."""
    status = await ex.execute(
        """
        UPDATE responses SET lease_expires_at = now() + make_interval(secs => $3)
        WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'
        """,
        response_id,
        worker_id,
        lease_seconds,
    )
    return status == "UPDATE 1"


async def finish_response(
    ex: Executor, *, response: dict[str, Any], worker_id: str | None = None
) -> bool:
    """Write a run's result onto its `in_progress` row: a foreground response's
    (``worker_id`` None), or a background one's if that worker still holds its lease.
    False when the row is gone, cancelled or taken over."""
    status = await ex.execute(
        """
        UPDATE responses SET status = $3, output = $4, usage = $5, error = $6,
            incomplete_details = $7, completed_at = COALESCE(to_timestamp($8), now()),
            lease_owner = NULL, lease_expires_at = NULL,
            -- the model that served (a fallback's); the one asked for stays for a rerun
            params = CASE WHEN $9::text IS NULL OR params->>'model' = $9 THEN params
                ELSE params || jsonb_build_object(
                    'model', $9::text,
                    'requested_model', coalesce(params->>'requested_model', params->>'model'))
            END
        WHERE id = $1 AND lease_owner IS NOT DISTINCT FROM $2 AND status = 'in_progress'
        """,
        response["id"],
        worker_id,
        response["status"],
        response["output"],
        response.get("usage"),
        response["error"],
        response["incomplete_details"],
        response["completed_at"],
        response.get("model"),
    )
    return status == "UPDATE 1"


async def release_leases(ex: Executor, *, worker_id: str) -> int:
    """On shutdown: hand our running responses to whichever instance claims next."""
    status = await ex.execute(
        """
        UPDATE responses SET lease_owner = NULL, lease_expires_at = now(),
            attempts = greatest(attempts - 1, 0)  -- handed back, not failed
        WHERE lease_owner = $1 AND status = 'in_progress'
        """,
        worker_id,
    )
    return int(status.split()[-1])


async def input_items_of(ex: Executor, *, owner: Owner, response_id: str) -> list[dict[str, Any]]:
    """All input items of one response, in order (for the background runner)."""
    rows = await ex.fetch(
        "SELECT item FROM response_input_items"
        " WHERE organization_id = $1 AND project_id = $2 AND response_id = $3 ORDER BY seq",
        owner.organization_id,
        owner.project_id,
        response_id,
    )
    return [r["item"] for r in rows]
