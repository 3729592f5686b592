"""SQL for model providers and their discovered models (used by `chat` and the admin API).

Every query on tenant rows filters by organization_id, and by project_id where the row
belongs to a project (``project_id IS NOT DISTINCT FROM $n``: NULL = organization-level).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from functions.common.db import AnyConnection, Executor
from functions.common.pagination import Page

# Interpolated into the SQL below (a constant, never input: hence the S608 waivers).
PROVIDER_COLUMNS = (
    "id, organization_id, project_id, name, kind, base_urls, api_key_ciphertext,"
    " static_models, active, options, created_at, updated_at, endpoint_weights"
)


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    provider_id: str
    base_url: str
    model: str
    owned_by: str | None
    discovered_at: datetime


@dataclass(frozen=True, slots=True)
class DiscoveryDigest:
    """What one endpoint's stored /models answer holds, in a few numbers: a changed
    answer changes ``models`` or ``checksum``; ``discovered_at`` moves at every poll."""

    provider_id: str
    base_url: str
    models: int
    checksum: int
    discovered_at: datetime


async def provider_stamps(ex: Executor) -> dict[str, datetime]:
    """Every active provider of every tenant (the router's catalog is process-wide) with
    its ``updated_at``: what a reload compares to see which providers changed."""
    rows = await ex.fetch("SELECT id, updated_at FROM model_providers WHERE active")
    return {r["id"]: r["updated_at"] for r in rows}


async def routing_stamp(ex: Executor) -> tuple[int, datetime | None, int, datetime | None]:
    """How many model aliases and fallback lists there are and when the last of each
    changed: what a reload compares to see whether to read them again (a delete lowers a
    count, a write a time)."""
    row = await ex.fetchrow(
        """
        SELECT (SELECT count(*) FROM model_aliases) AS aliases,
               (SELECT max(updated_at) FROM model_aliases) AS aliases_at,
               (SELECT count(*) FROM model_fallbacks) AS fallbacks,
               (SELECT max(updated_at) FROM model_fallbacks) AS fallbacks_at
        """
    )
    assert row is not None
    return row["aliases"], row["aliases_at"], row["fallbacks"], row["fallbacks_at"]


async def model_aliases(ex: Executor) -> list[asyncpg.Record]:
    """Every model alias of every tenant (the catalog is process-wide)."""
    return await ex.fetch("SELECT organization_id, project_id, alias, model FROM model_aliases")


async def model_fallbacks(ex: Executor) -> list[asyncpg.Record]:
    """Every fallback list of every tenant."""
    return await ex.fetch(
        "SELECT organization_id, project_id, model, fallbacks FROM model_fallbacks"
    )


async def active_providers(
    ex: Executor, *, provider_ids: Sequence[str] | None = None
) -> list[asyncpg.Record]:
    """Active providers (all, or those of ``provider_ids``), oldest first: the catalog
    gives a model name two providers share to the oldest."""
    return await ex.fetch(
        f"SELECT {PROVIDER_COLUMNS} FROM model_providers"  # noqa: S608
        " WHERE active AND ($1::text[] IS NULL OR id = ANY($1::text[]))"
        " ORDER BY created_at, id",
        None if provider_ids is None else list(provider_ids),
    )


async def discovery_digests(ex: Executor) -> list[DiscoveryDigest]:
    """Per provider and endpoint, how many models its stored answer lists and a checksum
    of them (an order-independent sum of hashes), computed by the database: a reload reads
    a few numbers per endpoint, not every model of every tenant."""
    rows = await ex.fetch(
        "SELECT provider_id, base_url, count(*),"
        " sum(hashtextextended(model || E'\\n' || coalesce(owned_by, ''), 0)),"
        " max(discovered_at)"
        " FROM model_provider_models GROUP BY provider_id, base_url"
    )
    return [DiscoveryDigest(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]


async def active_provider(ex: Executor, *, provider_id: str) -> asyncpg.Record | None:
    return await ex.fetchrow(
        f"SELECT {PROVIDER_COLUMNS} FROM model_providers WHERE id = $1 AND active",  # noqa: S608
        provider_id,
    )


async def discovered_models(
    ex: Executor, *, provider_ids: Sequence[str] | None = None
) -> list[DiscoveredModel]:
    if provider_ids is None:
        rows = await ex.fetch(
            "SELECT provider_id, base_url, model, owned_by, discovered_at"
            " FROM model_provider_models"
        )
    else:
        rows = await ex.fetch(
            "SELECT provider_id, base_url, model, owned_by, discovered_at"
            " FROM model_provider_models WHERE provider_id = ANY($1::text[]) ORDER BY model",
            list(provider_ids),
        )
    return [DiscoveredModel(*r) for r in rows]


async def replace_discovered_models(
    conn: AnyConnection,
    *,
    provider_id: str,
    organization_id: str,
    base_url: str,
    models: Sequence[tuple[str, str | None]],
) -> None:
    """What one endpoint's /models answered, replacing the previous answer."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM model_provider_models"
            " WHERE provider_id = $1 AND organization_id = $2 AND base_url = $3",
            provider_id,
            organization_id,
            base_url,
        )
        await conn.executemany(
            "INSERT INTO model_provider_models"
            " (provider_id, organization_id, base_url, model, owned_by)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [(provider_id, organization_id, base_url, m, o) for m, o in models],
        )


# --- provider administration ---------------------------------------------------------
async def insert_provider(ex: Executor, **values: Any) -> asyncpg.Record:
    row = await ex.fetchrow(
        "INSERT INTO model_providers (id, organization_id, project_id, name, kind, base_urls,"  # noqa: S608
        " api_key_ciphertext, static_models, active, endpoint_weights, options)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {PROVIDER_COLUMNS}",
        values["id"],
        values["organization_id"],
        values["project_id"],
        values["name"],
        values["kind"],
        values["base_urls"],
        values["api_key_ciphertext"],
        values["static_models"],
        values["active"],
        values.get("endpoint_weights"),
        values.get("options", {}),
    )
    assert row is not None
    return row


async def insert_provider_within(
    conn: Executor, *, limit: int, **values: Any
) -> asyncpg.Record | None:
    """Insert unless the organization already has ``limit`` providers (its projects'
    included); None then. Creations in one organization take turns (a lock on its row, held
    until the caller's transaction ends, that other writers' foreign-key checks do not wait
    for), so concurrent ones cannot overshoot."""
    organization_id = values["organization_id"]
    await conn.execute(
        "SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE", organization_id
    )
    count = await conn.fetchval(
        "SELECT count(*) FROM model_providers WHERE organization_id = $1", organization_id
    )
    if count >= limit:
        return None
    return await insert_provider(conn, **values)


async def get_provider(
    ex: Executor, *, organization_id: str, project_id: str | None, provider_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        f"SELECT {PROVIDER_COLUMNS} FROM model_providers"  # noqa: S608
        " WHERE id = $1 AND organization_id = $2 AND project_id IS NOT DISTINCT FROM $3",
        provider_id,
        organization_id,
        project_id,
    )


async def list_providers(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    page: Page,
) -> list[asyncpg.Record]:
    """The rows of one page in ID order (``page.fetch`` of them: see ``Page.split``)."""
    return await ex.fetch(
        f"SELECT {PROVIDER_COLUMNS} FROM model_providers"  # noqa: S608
        " WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2"
        f" AND ($3::text IS NULL OR id {page.comparison} $3) ORDER BY id {page.direction}"
        " LIMIT $4",
        organization_id,
        project_id,
        page.after,
        page.fetch,
    )


async def update_provider(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    provider_id: str,
    changes: dict[str, Any],
) -> asyncpg.Record | None:
    """Set the given columns (names come from our own allow-list, never the client)."""
    allowed = {
        "name", "kind", "base_urls", "api_key_ciphertext", "static_models", "active",
        "endpoint_weights", "options",
    }  # fmt: skip
    assert set(changes) <= allowed
    sets = [f"{column} = ${i}" for i, column in enumerate(changes, start=4)]
    sets.append("updated_at = now()")
    return await ex.fetchrow(
        f"UPDATE model_providers SET {', '.join(sets)}"  # noqa: S608 - columns from allow-list
        " WHERE id = $1 AND organization_id = $2 AND project_id IS NOT DISTINCT FROM $3"
        f" RETURNING {PROVIDER_COLUMNS}",
        provider_id,
        organization_id,
        project_id,
        *changes.values(),
    )


async def delete_provider(
    ex: Executor, *, organization_id: str, project_id: str | None, provider_id: str
) -> bool:
    status = await ex.execute(
        "DELETE FROM model_providers"
        " WHERE id = $1 AND organization_id = $2 AND project_id IS NOT DISTINCT FROM $3",
        provider_id,
        organization_id,
        project_id,
    )
    return status.endswith(" 1")
