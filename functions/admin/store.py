"""SQL of the Administration API: projects, members, keys, service accounts, invites, usage.

Functions take the executor first and keyword-only arguments; the caller owns the
transaction. Every query on tenant rows filters by organization_id (and project_id where
the row belongs to a project). SQL text is constant: values travel only as ``$n``
parameters. Lists page by ID (IDs are time-ordered) and read ``page.fetch`` rows, one more
than the page, for ``Page.answer`` to tell whether more follow.

Rows shared with other areas are written through ``functions.services.tenancy`` (creating
projects, keys, service accounts; setting roles) and model providers through
``functions.services.providers.store``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from functions.common import ids
from functions.common.db import Executor
from functions.common.pagination import Page


# --- paging ------------------------------------------------------------------------------
async def _page_by_id(
    ex: Executor,
    *,
    select: str,
    where: str,
    args: Sequence[Any],
    page: Page,
    id_column: str = "id",
) -> list[asyncpg.Record]:
    """Up to ``page.fetch`` rows after the cursor, in ID order.

    ``select``, ``where`` and ``id_column`` are this module's constants, and
    ``page.comparison`` / ``page.direction`` are constant fragments too: no caller text
    reaches the SQL. Values (the ``where`` arguments, the cursor, the limit) go through
    ``args`` as parameters numbered after those ``where`` uses.
    """
    params = list(args)
    condition = where
    if page.after is not None:
        params.append(page.after)
        condition += f" AND {id_column} {page.comparison} ${len(params)}"
    params.append(page.fetch)
    return await ex.fetch(
        f"{select} WHERE {condition} ORDER BY {id_column} {page.direction} LIMIT ${len(params)}",
        *params,
    )


# --- projects ----------------------------------------------------------------------------
async def get_project(
    ex: Executor, *, organization_id: str, project_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        "SELECT * FROM projects WHERE id = $1 AND organization_id = $2",
        project_id,
        organization_id,
    )


async def get_project_for_caller(
    ex: Executor, *, organization_id: str, project_id: str, user_id: str | None
) -> asyncpg.Record | None:
    """The organization's project, with ``caller_project_role``: the user's role in it
    (None when ``user_id`` is None or not a member)."""
    return await ex.fetchrow(
        """
        SELECT p.*, pm.role AS caller_project_role
        FROM projects p
        LEFT JOIN project_members pm ON pm.project_id = p.id AND pm.user_id = $3
        WHERE p.id = $1 AND p.organization_id = $2
        """,
        project_id,
        organization_id,
        user_id,
    )


_PROJECTS_WHERE = "organization_id = $1 AND ($2 OR status = 'active')"
_MEMBER_PROJECTS_WHERE = (
    "organization_id = $1 AND ($2 OR status = 'active')"
    " AND id IN (SELECT project_id FROM project_members WHERE user_id = $3)"
)


async def list_projects(
    ex: Executor, *, organization_id: str, include_archived: bool, page: Page
) -> list[asyncpg.Record]:
    """The organization's projects (active ones only unless ``include_archived``)."""
    return await _page_by_id(
        ex,
        select="SELECT * FROM projects",
        where=_PROJECTS_WHERE,
        args=[organization_id, include_archived],
        page=page,
    )


async def list_member_projects(
    ex: Executor, *, organization_id: str, user_id: str, include_archived: bool, page: Page
) -> list[asyncpg.Record]:
    """The organization's projects the user is a member of."""
    return await _page_by_id(
        ex,
        select="SELECT * FROM projects",
        where=_MEMBER_PROJECTS_WHERE,
        args=[organization_id, include_archived, user_id],
        page=page,
    )


async def is_active_project(ex: Executor, *, organization_id: str, project_id: str) -> bool:
    found = await ex.fetchval(
        "SELECT 1 FROM projects WHERE id = $1 AND organization_id = $2 AND status = 'active'",
        project_id,
        organization_id,
    )
    return found is not None


async def rename_project(
    ex: Executor, *, organization_id: str, project_id: str, name: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        "UPDATE projects SET name = $3 WHERE id = $1 AND organization_id = $2 RETURNING *",
        project_id,
        organization_id,
        name,
    )


async def set_project_priority(
    ex: Executor, *, organization_id: str, project_id: str, priority: int | None
) -> None:
    await ex.execute(
        "UPDATE projects SET priority = $3 WHERE id = $1 AND organization_id = $2",
        project_id,
        organization_id,
        priority,
    )


async def archive_project(
    ex: Executor, *, organization_id: str, project_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        "UPDATE projects SET status = 'archived', archived_at = now()"
        " WHERE id = $1 AND organization_id = $2 RETURNING *",
        project_id,
        organization_id,
    )


# --- organization users ------------------------------------------------------------------
_ORGANIZATION_USERS = """
SELECT u.id, u.name, u.email, om.role, om.created_at AS added_at
FROM organization_members om JOIN users u ON u.id = om.user_id
"""


async def get_organization_user(
    ex: Executor, *, organization_id: str, user_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        _ORGANIZATION_USERS + " WHERE om.organization_id = $1 AND om.user_id = $2",
        organization_id,
        user_id,
    )


async def list_organization_users(
    ex: Executor, *, organization_id: str, page: Page
) -> list[asyncpg.Record]:
    return await _page_by_id(
        ex,
        select=_ORGANIZATION_USERS,
        where="om.organization_id = $1",
        args=[organization_id],
        page=page,
        id_column="u.id",
    )


async def organization_role(ex: Executor, *, organization_id: str, user_id: str) -> str | None:
    """The user's role in the organization; None when not a member."""
    role: str | None = await ex.fetchval(
        "SELECT role FROM organization_members WHERE organization_id = $1 AND user_id = $2",
        organization_id,
        user_id,
    )
    return role


async def is_member_by_email(ex: Executor, *, organization_id: str, email: str) -> bool:
    """Whether a member of the organization has this e-mail (case-insensitive)."""
    found = await ex.fetchval(
        "SELECT 1 FROM organization_members om JOIN users u ON u.id = om.user_id"
        " WHERE om.organization_id = $1 AND lower(u.email) = lower($2)",
        organization_id,
        email,
    )
    return bool(found)


async def lock_owners(ex: Executor, *, organization_id: str) -> list[str]:
    """The organization's owners' user IDs, their rows locked until the transaction ends
    (call inside one). Demotions and removals take this lock before reading anything, so
    concurrent ones queue here and each sees the owners the previous one left; the rows are
    locked in ID order, so two of them never deadlock."""
    rows = await ex.fetch(
        "SELECT user_id FROM organization_members"
        " WHERE organization_id = $1 AND role = 'owner' ORDER BY user_id FOR UPDATE",
        organization_id,
    )
    return [r["user_id"] for r in rows]


async def update_organization_role(
    ex: Executor, *, organization_id: str, user_id: str, role: str
) -> None:
    """Change an existing member's role (``tenancy.set_organization_role`` also adds)."""
    await ex.execute(
        "UPDATE organization_members SET role = $3 WHERE organization_id = $1 AND user_id = $2",
        organization_id,
        user_id,
        role,
    )


async def remove_organization_user(ex: Executor, *, organization_id: str, user_id: str) -> None:
    """Delete the user's keys, project memberships and membership in the organization
    (call inside a transaction)."""
    await ex.execute(
        "DELETE FROM api_keys WHERE organization_id = $1 AND owner_user_id = $2",
        organization_id,
        user_id,
    )
    await ex.execute(
        "DELETE FROM project_members WHERE organization_id = $1 AND user_id = $2",
        organization_id,
        user_id,
    )
    await ex.execute(
        "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2",
        organization_id,
        user_id,
    )


async def get_user_email(ex: Executor, *, user_id: str) -> asyncpg.Record | None:
    """The user's ``email`` and ``is_guest``."""
    return await ex.fetchrow("SELECT email, is_guest FROM users WHERE id = $1", user_id)


# --- project users -----------------------------------------------------------------------
_PROJECT_USERS = """
SELECT u.id, u.name, u.email, pm.role, pm.created_at AS added_at
FROM project_members pm JOIN users u ON u.id = pm.user_id
"""


async def get_project_user(
    ex: Executor, *, organization_id: str, project_id: str, user_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        _PROJECT_USERS
        + " WHERE pm.organization_id = $1 AND pm.project_id = $2 AND pm.user_id = $3",
        organization_id,
        project_id,
        user_id,
    )


async def list_project_users(
    ex: Executor, *, organization_id: str, project_id: str, page: Page
) -> list[asyncpg.Record]:
    return await _page_by_id(
        ex,
        select=_PROJECT_USERS,
        where="pm.organization_id = $1 AND pm.project_id = $2",
        args=[organization_id, project_id],
        page=page,
        id_column="u.id",
    )


async def update_project_role(
    ex: Executor, *, organization_id: str, project_id: str, user_id: str, role: str
) -> None:
    """Change an existing member's role (``tenancy.set_project_role`` also adds)."""
    await ex.execute(
        "UPDATE project_members SET role = $4"
        " WHERE organization_id = $1 AND project_id = $2 AND user_id = $3",
        organization_id,
        project_id,
        user_id,
        role,
    )


async def remove_project_user(
    ex: Executor, *, organization_id: str, project_id: str, user_id: str
) -> None:
    """Delete the user's keys for the project and their membership (call inside a
    transaction)."""
    await ex.execute(
        "DELETE FROM api_keys WHERE organization_id = $1 AND project_id = $2"
        " AND owner_user_id = $3",
        organization_id,
        project_id,
        user_id,
    )
    await ex.execute(
        "DELETE FROM project_members"
        " WHERE organization_id = $1 AND project_id = $2 AND user_id = $3",
        organization_id,
        project_id,
        user_id,
    )


# --- admin API keys ----------------------------------------------------------------------
_ADMIN_KEYS = """
SELECT k.*, u.name AS owner_name, u.email AS owner_email, u.created_at AS owner_created_at,
       om.role AS owner_role
FROM api_keys k
LEFT JOIN users u ON u.id = k.owner_user_id
LEFT JOIN organization_members om
       ON om.organization_id = k.organization_id AND om.user_id = k.owner_user_id
"""


async def get_admin_key(
    ex: Executor, *, organization_id: str, key_id: str
) -> asyncpg.Record | None:
    """The admin key with its owner's ``owner_name``, ``owner_email``,
    ``owner_created_at`` and ``owner_role``."""
    return await ex.fetchrow(
        _ADMIN_KEYS + " WHERE k.id = $1 AND k.organization_id = $2 AND k.kind = 'admin'",
        key_id,
        organization_id,
    )


async def list_admin_keys(
    ex: Executor, *, organization_id: str, page: Page
) -> list[asyncpg.Record]:
    return await _page_by_id(
        ex,
        select=_ADMIN_KEYS,
        where="k.organization_id = $1 AND k.kind = 'admin'",
        args=[organization_id],
        page=page,
        id_column="k.id",
    )


async def delete_admin_key(ex: Executor, *, organization_id: str, key_id: str) -> bytes | None:
    """The deleted key's ``secret_hash`` (to revoke), or None if there was none."""
    secret_hash: bytes | None = await ex.fetchval(
        "DELETE FROM api_keys WHERE id = $1 AND organization_id = $2 AND kind = 'admin'"
        " RETURNING secret_hash",
        key_id,
        organization_id,
    )
    return secret_hash


# --- project API keys --------------------------------------------------------------------
_PROJECT_KEYS = """
SELECT k.*, u.name AS user_name, u.email AS user_email, u.created_at AS user_created_at,
       pm.role AS user_role, sa.name AS sa_name, sa.role AS sa_role,
       sa.created_at AS sa_created_at
FROM api_keys k
LEFT JOIN users u ON u.id = k.owner_user_id
LEFT JOIN project_members pm ON pm.project_id = k.project_id AND pm.user_id = k.owner_user_id
LEFT JOIN service_accounts sa ON sa.id = k.service_account_id
"""


async def get_project_key(
    ex: Executor, *, organization_id: str, project_id: str, key_id: str
) -> asyncpg.Record | None:
    """A key of the project (a user's or a service account's), with its owner's columns."""
    return await ex.fetchrow(
        _PROJECT_KEYS + " WHERE k.organization_id = $1 AND k.project_id = $2 AND k.id = $3",
        organization_id,
        project_id,
        key_id,
    )


async def list_project_keys(
    ex: Executor, *, organization_id: str, project_id: str, page: Page
) -> list[asyncpg.Record]:
    return await _page_by_id(
        ex,
        select=_PROJECT_KEYS,
        where="k.organization_id = $1 AND k.project_id = $2",
        args=[organization_id, project_id],
        page=page,
        id_column="k.id",
    )


async def delete_project_key(
    ex: Executor, *, organization_id: str, project_id: str, key_id: str
) -> bytes | None:
    """The deleted key's ``secret_hash`` (to revoke), or None if there was none."""
    secret_hash: bytes | None = await ex.fetchval(
        "DELETE FROM api_keys WHERE organization_id = $1 AND project_id = $2 AND id = $3"
        " RETURNING secret_hash",
        organization_id,
        project_id,
        key_id,
    )
    return secret_hash


# --- service accounts --------------------------------------------------------------------
async def get_service_account(
    ex: Executor, *, organization_id: str, project_id: str, service_account_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        "SELECT * FROM service_accounts WHERE organization_id = $1 AND project_id = $2 AND id = $3",
        organization_id,
        project_id,
        service_account_id,
    )


async def list_service_accounts(
    ex: Executor, *, organization_id: str, project_id: str, page: Page
) -> list[asyncpg.Record]:
    return await _page_by_id(
        ex,
        select="SELECT * FROM service_accounts",
        where="organization_id = $1 AND project_id = $2",
        args=[organization_id, project_id],
        page=page,
    )


async def delete_service_account_keys(
    ex: Executor, *, organization_id: str, project_id: str, service_account_id: str
) -> list[bytes]:
    """Delete the service account's keys; their ``secret_hash``es, to revoke."""
    rows = await ex.fetch(
        "DELETE FROM api_keys WHERE organization_id = $1 AND project_id = $2"
        " AND service_account_id = $3 RETURNING secret_hash",
        organization_id,
        project_id,
        service_account_id,
    )
    return [r["secret_hash"] for r in rows]


async def delete_service_account(
    ex: Executor, *, organization_id: str, project_id: str, service_account_id: str
) -> bool:
    gone = await ex.fetchval(
        "DELETE FROM service_accounts"
        " WHERE organization_id = $1 AND project_id = $2 AND id = $3 RETURNING id",
        organization_id,
        project_id,
        service_account_id,
    )
    return gone is not None


# --- model permissions -------------------------------------------------------------------
async def get_model_permissions(
    ex: Executor, *, organization_id: str, project_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        """
        SELECT mode, model_ids FROM project_model_permissions
        WHERE organization_id = $1 AND project_id = $2
        """,
        organization_id,
        project_id,
    )


async def set_model_permissions(
    ex: Executor, *, organization_id: str, project_id: str, mode: str, model_ids: Sequence[str]
) -> asyncpg.Record:
    row = await ex.fetchrow(
        """
        INSERT INTO project_model_permissions (organization_id, project_id, mode, model_ids)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (project_id) DO UPDATE
            SET mode = excluded.mode, model_ids = excluded.model_ids, updated_at = now()
            WHERE project_model_permissions.organization_id = excluded.organization_id
        RETURNING mode, model_ids
        """,
        organization_id,
        project_id,
        mode,
        list(model_ids),
    )
    assert row is not None  # the caller loaded the project from this organization
    return row


async def delete_model_permissions(ex: Executor, *, organization_id: str, project_id: str) -> bool:
    """Whether the project had model permissions."""
    gone = await ex.fetchval(
        """
        DELETE FROM project_model_permissions
        WHERE organization_id = $1 AND project_id = $2
        RETURNING true
        """,
        organization_id,
        project_id,
    )
    return bool(gone)


# --- invites -----------------------------------------------------------------------------
async def get_invite(
    ex: Executor, *, organization_id: str, invite_id: str
) -> asyncpg.Record | None:
    return await ex.fetchrow(
        "SELECT * FROM invites WHERE organization_id = $1 AND id = $2",
        organization_id,
        invite_id,
    )


async def list_invites(ex: Executor, *, organization_id: str, page: Page) -> list[asyncpg.Record]:
    return await _page_by_id(
        ex,
        select="SELECT * FROM invites",
        where="organization_id = $1",
        args=[organization_id],
        page=page,
    )


async def expire_stale_invites(ex: Executor, *, organization_id: str, email: str) -> None:
    """Mark the address's pending invites that are past their expiry as expired."""
    await ex.execute(
        "UPDATE invites SET status = 'expired' WHERE organization_id = $1"
        " AND lower(email) = lower($2) AND status = 'pending' AND expires_at <= now()",
        organization_id,
        email,
    )


async def insert_invite(
    ex: Executor,
    *,
    organization_id: str,
    email: str,
    role: str,
    projects: list[dict[str, str]],
    code_hash: bytes,
    expires_at: datetime,
) -> asyncpg.Record:
    """A new pending invite (UniqueViolationError: the address has a pending one)."""
    row = await ex.fetchrow(
        """
        INSERT INTO invites (id, organization_id, email, role, projects, code_hash,
                             expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *
        """,
        ids.new_id(ids.INVITE),
        organization_id,
        email,
        role,
        projects,
        code_hash,
        expires_at,
    )
    assert row is not None
    return row


async def delete_invite(ex: Executor, *, organization_id: str, invite_id: str) -> None:
    await ex.execute(
        "DELETE FROM invites WHERE organization_id = $1 AND id = $2",
        organization_id,
        invite_id,
    )


async def lock_pending_invite(ex: Executor, *, code_hash: bytes) -> asyncpg.Record | None:
    """The unexpired pending invite with this code, locked until the transaction ends."""
    return await ex.fetchrow(
        "SELECT * FROM invites WHERE code_hash = $1 AND status = 'pending'"
        " AND expires_at > now() FOR UPDATE",
        code_hash,
    )


async def mark_invite_accepted(ex: Executor, *, invite_id: str) -> asyncpg.Record:
    row = await ex.fetchrow(
        "UPDATE invites SET status = 'accepted', accepted_at = now() WHERE id = $1 RETURNING *",
        invite_id,
    )
    assert row is not None
    return row


# --- usage -------------------------------------------------------------------------------
# The ledger's rollups, written with each batch of its rows: (table, time column).
Rollup = Literal["hourly", "daily"]
ROLLUPS: dict[Rollup, tuple[str, str]] = {
    "hourly": ("usage_hourly", "hour"),
    "daily": ("usage_daily", "day"),
}
# The ledger's columns a usage report may group and filter by.
USAGE_COLUMNS = ("project_id", "user_id", "api_key_id", "model")


async def usage_buckets(
    ex: Executor,
    *,
    organization_id: str,
    start: datetime,
    stop: datetime,
    width: int,
    groups: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    rollup: Rollup | None = None,
) -> list[asyncpg.Record]:
    """Completions usage from ``start`` to ``stop`` summed per ``width``-second bucket
    (``bucket``: Unix seconds, aligned to the epoch) and per ``groups``, ordered by bucket
    then groups. ``filters`` keeps, per column, the rows with one of the given values.
    ``groups`` and ``filters`` name columns of ``USAGE_COLUMNS``; the rest is refused.
    ``rollup``: from the hourly or daily rollup (``start`` and ``width`` whole hours or
    days), where "none" is '' (given back as NULL), instead of the ledger's rows.
    """
    sums = (
        "sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,"
        " sum(input_cached_tokens) AS input_cached_tokens,"
        " sum(reserved_tokens) AS reserved_tokens, "
        + ("sum(requests) AS requests" if rollup else "count(*) AS requests")
    )
    table, time_column = ROLLUPS[rollup] if rollup else ("usage_completions", "created_at")
    return await _buckets(
        ex, table, time_column, sums, USAGE_COLUMNS, organization_id=organization_id,
        start=start, stop=stop, width=width, groups=groups, filters=filters,
        blank_is_none=rollup is not None,
    )  # fmt: skip


# The rollup's columns a cost report may group and filter by.
COST_COLUMNS = ("project_id", "api_key_id", "model")


async def cost_buckets(
    ex: Executor,
    *,
    organization_id: str,
    start: datetime,
    stop: datetime,
    width: int,
    groups: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    rollup: Rollup = "hourly",
) -> list[asyncpg.Record]:
    """Costs (picodollars) and tokens per line item kind, from a rollup, per bucket and
    ``groups`` (of ``COST_COLUMNS``)."""
    sums = (
        "sum(cost_picodollars) AS cost, sum(input_cost_picodollars) AS input_cost,"
        " sum(cached_input_cost_picodollars) AS cached_input_cost,"
        " sum(output_cost_picodollars) AS output_cost,"
        " sum(input_tokens - input_cached_tokens) AS input_tokens,"
        " sum(input_cached_tokens) AS cached_input_tokens, sum(output_tokens) AS output_tokens"
    )
    table, time_column = ROLLUPS[rollup]
    return await _buckets(
        ex, table, time_column, sums, COST_COLUMNS, organization_id=organization_id,
        start=start, stop=stop, width=width, groups=groups, filters=filters,
        blank_is_none=True,
    )  # fmt: skip


async def _buckets(
    ex: Executor,
    table: str,
    time_column: str,
    sums: str,
    columns: Sequence[str],
    *,
    organization_id: str,
    start: datetime,
    stop: datetime,
    width: int,
    groups: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    blank_is_none: bool,
) -> list[asyncpg.Record]:
    unknown = {*groups, *filters} - set(columns)
    if unknown:
        raise ValueError(f"Not usage columns: {sorted(unknown)}")
    # Assembled with f-strings, yet safe: every fragment put in is constant text of this
    # module: table, column names taken from ``columns`` (the caller's strings only pick
    # among them, they are never copied in) and "$n" placeholders. Every value, filter
    # values included, travels as a parameter.
    chosen = [column for column in columns if column in groups]
    args: list[Any] = [organization_id, start, stop, width]
    where = ["organization_id = $1", f"{time_column} >= $2", f"{time_column} < $3"]
    for column in columns:
        values = filters.get(column)
        if values:
            args.append(list(values))
            where.append(f"{column} = ANY(${len(args)}::text[])")
    group_sql = "".join(f", {column}" for column in chosen)
    shown = "".join(
        f", nullif({column}, '') AS {column}" if blank_is_none else f", {column}"
        for column in chosen
    )
    sql = (
        f"SELECT (floor(extract(epoch FROM {time_column}) / $4) * $4)::bigint AS bucket"  # noqa: S608
        f"{shown}, {sums} FROM {table} WHERE {' AND '.join(where)}"
        f" GROUP BY bucket{group_sql} ORDER BY bucket{group_sql}"
    )
    return await ex.fetch(sql, *args)


# --- model prices (Jan extension) ------------------------------------------------------------
_PRICE_COLUMNS = "model, input, cached_input, output, created_at, updated_at"


async def model_prices(
    ex: Executor, *, organization_id: str, project_id: str | None
) -> list[asyncpg.Record]:
    """The organization's prices (``project_id`` None) or a project's overrides, by model."""
    return await ex.fetch(
        f"""
        SELECT {_PRICE_COLUMNS} FROM model_prices
        WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2 ORDER BY model
        """,  # noqa: S608  (constant column list)
        organization_id,
        project_id,
    )


async def set_model_price(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    model: str,
    input: Decimal,
    cached_input: Decimal | None,
    output: Decimal,
) -> asyncpg.Record:
    row = await ex.fetchrow(
        f"""
        INSERT INTO model_prices (organization_id, project_id, model, input, cached_input, output)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (organization_id, (coalesce(project_id, '')), model)
        DO UPDATE SET input = excluded.input, cached_input = excluded.cached_input,
                      output = excluded.output, updated_at = now()
        RETURNING {_PRICE_COLUMNS}
        """,  # noqa: S608
        organization_id,
        project_id,
        model,
        input,
        cached_input,
        output,
    )
    assert row is not None
    return row


async def delete_model_price(
    ex: Executor, *, organization_id: str, project_id: str | None, model: str
) -> bool:
    status = await ex.execute(
        """
        DELETE FROM model_prices
        WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2 AND model = $3
        """,
        organization_id,
        project_id,
        model,
    )
    return status != "DELETE 0"


# --- model aliases (Jan extension) -----------------------------------------------------------
_ALIAS_COLUMNS = "alias, model, created_at, updated_at"


async def model_aliases(
    ex: Executor, *, organization_id: str, project_id: str | None
) -> list[asyncpg.Record]:
    """The organization's aliases (``project_id`` None) or a project's, by alias."""
    return await ex.fetch(
        f"""
        SELECT {_ALIAS_COLUMNS} FROM model_aliases
        WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2 ORDER BY alias
        """,  # noqa: S608  (constant column list)
        organization_id,
        project_id,
    )


async def set_model_alias(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    alias: str,
    model: str,
    max_aliases: int,
) -> asyncpg.Record | None:
    """Create or retarget an alias; None when it is new and the scope already holds
    ``max_aliases`` (checked and written in one statement)."""
    return await ex.fetchrow(
        f"""
        INSERT INTO model_aliases (organization_id, project_id, alias, model)
        SELECT $1, $2, $3, $4
        WHERE (SELECT count(*) FROM model_aliases
               WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2
                 AND alias <> $3) < $5
        ON CONFLICT (organization_id, (coalesce(project_id, '')), alias)
        DO UPDATE SET model = excluded.model, updated_at = clock_timestamp()
        RETURNING {_ALIAS_COLUMNS}
        """,  # noqa: S608
        organization_id,
        project_id,
        alias,
        model,
        max_aliases,
    )


async def delete_model_alias(
    ex: Executor, *, organization_id: str, project_id: str | None, alias: str
) -> bool:
    status = await ex.execute(
        """
        DELETE FROM model_aliases
        WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2 AND alias = $3
        """,
        organization_id,
        project_id,
        alias,
    )
    return status != "DELETE 0"


# --- model fallbacks (Jan extension) ---------------------------------------------------------
_FALLBACK_COLUMNS = "model, fallbacks, created_at, updated_at"


async def model_fallbacks(
    ex: Executor, *, organization_id: str, project_id: str | None
) -> list[asyncpg.Record]:
    """The organization's fallback lists (``project_id`` None) or a project's, by model."""
    return await ex.fetch(
        f"""
        SELECT {_FALLBACK_COLUMNS} FROM model_fallbacks
        WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2 ORDER BY model
        """,  # noqa: S608  (constant column list)
        organization_id,
        project_id,
    )


async def set_model_fallbacks(
    ex: Executor,
    *,
    organization_id: str,
    project_id: str | None,
    model: str,
    fallbacks: Sequence[str],
    max_lists: int,
) -> asyncpg.Record | None:
    """Create or replace a model's fallback list; None when it is new and the scope
    already holds ``max_lists``."""
    return await ex.fetchrow(
        f"""
        INSERT INTO model_fallbacks (organization_id, project_id, model, fallbacks)
        SELECT $1, $2, $3, $4
        WHERE (SELECT count(*) FROM model_fallbacks
               WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2
                 AND model <> $3) < $5
        ON CONFLICT (organization_id, (coalesce(project_id, '')), model)
        DO UPDATE SET fallbacks = excluded.fallbacks, updated_at = clock_timestamp()
        RETURNING {_FALLBACK_COLUMNS}
        """,  # noqa: S608
        organization_id,
        project_id,
        model,
        list(fallbacks),
        max_lists,
    )


async def delete_model_fallbacks(
    ex: Executor, *, organization_id: str, project_id: str | None, model: str
) -> bool:
    status = await ex.execute(
        """
        DELETE FROM model_fallbacks
        WHERE organization_id = $1 AND project_id IS NOT DISTINCT FROM $2 AND model = $3
        """,
        organization_id,
        project_id,
        model,
    )
    return status != "DELETE 0"
