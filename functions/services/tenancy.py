"""Tenant rows: organizations, users, memberships, projects, service accounts, API keys.

The queries the auth and admin areas, the operator CLI, bootstrap and test factories share.
Each takes the executor first and keyword-only arguments; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from functions.common import ids
from functions.common.db import Executor
from functions.services import keys

DEFAULT_ORGANIZATION_NAME = "Default Organization"
DEFAULT_PROJECT_NAME = "Default Project"


# --- organizations -----------------------------------------------------------------------
async def create_organization(
    ex: Executor, *, name: str, is_default: bool = False
) -> asyncpg.Record:
    row = await ex.fetchrow(
        "INSERT INTO organizations (id, name, is_default) VALUES ($1, $2, $3) RETURNING *",
        ids.new_id(ids.ORGANIZATION),
        name,
        is_default,
    )
    assert row is not None
    return row


async def ensure_default_organization(ex: Executor) -> str:
    """The default organization's ID, created on first call (safe under concurrency).

    Every guest login and sign-in asks; after the first, one SELECT answers."""
    found = await default_organization_id(ex)
    if found is not None:
        return found
    await ex.execute(
        """
        INSERT INTO organizations (id, name, is_default) VALUES ($1, $2, true)
        ON CONFLICT (is_default) WHERE is_default DO NOTHING
        """,
        ids.new_id(ids.ORGANIZATION),
        DEFAULT_ORGANIZATION_NAME,
    )
    org_id: str = await ex.fetchval("SELECT id FROM organizations WHERE is_default")
    return org_id


async def default_organization_id(ex: Executor) -> str | None:
    found: str | None = await ex.fetchval("SELECT id FROM organizations WHERE is_default")
    return found


async def list_organizations(ex: Executor) -> list[asyncpg.Record]:
    return await ex.fetch("SELECT * FROM organizations ORDER BY id")


async def get_organization(ex: Executor, *, organization_id: str) -> asyncpg.Record | None:
    return await ex.fetchrow("SELECT * FROM organizations WHERE id = $1", organization_id)


# --- users and memberships ------------------------------------------------------------------
async def create_user(
    ex: Executor,
    *,
    email: str | None,
    name: str = "",
    is_guest: bool = False,
    oidc_issuer: str | None = None,
    oidc_subject: str | None = None,
) -> asyncpg.Record:
    row = await ex.fetchrow(
        """
        INSERT INTO users (id, email, name, is_guest, oidc_issuer, oidc_subject)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING *
        """,
        ids.new_id(ids.USER),
        email,
        name,
        is_guest,
        oidc_issuer,
        oidc_subject,
    )
    assert row is not None
    return row


async def set_organization_role(
    ex: Executor, *, organization_id: str, user_id: str, role: str
) -> None:
    await ex.execute(
        """
        INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, $3)
        ON CONFLICT (organization_id, user_id) DO UPDATE SET role = EXCLUDED.role
        """,
        organization_id,
        user_id,
        role,
    )


async def set_default_project(ex: Executor, *, user_id: str, project_id: str) -> None:
    await ex.execute(
        "UPDATE users SET default_project_id = $2, updated_at = now() WHERE id = $1",
        user_id,
        project_id,
    )


# --- projects ---------------------------------------------------------------------------
async def create_project(ex: Executor, *, organization_id: str, name: str) -> asyncpg.Record:
    row = await ex.fetchrow(
        "INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, $3) RETURNING *",
        ids.new_id(ids.PROJECT),
        organization_id,
        name,
    )
    assert row is not None
    return row


async def set_project_role(
    ex: Executor, *, organization_id: str, project_id: str, user_id: str, role: str
) -> None:
    await ex.execute(
        """
        INSERT INTO project_members (organization_id, project_id, user_id, role)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role
        """,
        organization_id,
        project_id,
        user_id,
        role,
    )


async def create_personal_project(
    ex: Executor, *, organization_id: str, user_id: str, name: str = DEFAULT_PROJECT_NAME
) -> asyncpg.Record:
    """A project the user owns, made their default (guests and new sign-ins get one)."""
    project = await create_project(ex, organization_id=organization_id, name=name)
    await set_project_role(
        ex,
        organization_id=organization_id,
        project_id=project["id"],
        user_id=user_id,
        role="owner",
    )
    await set_default_project(ex, user_id=user_id, project_id=project["id"])
    return project


async def create_service_account(
    ex: Executor, *, organization_id: str, project_id: str, name: str, role: str = "member"
) -> asyncpg.Record:
    row = await ex.fetchrow(
        """
        INSERT INTO service_accounts (id, organization_id, project_id, name, role)
        VALUES ($1, $2, $3, $4, $5) RETURNING *
        """,
        ids.new_id(ids.SERVICE_ACCOUNT),
        organization_id,
        project_id,
        name,
        role,
    )
    assert row is not None
    return row


# --- API keys ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CreatedKey:
    row: asyncpg.Record
    plaintext: str  # shown once to whoever created it, never stored or logged


_PREFIX_BY_KIND = {
    "admin": keys.ADMIN_PREFIX,
    "project": keys.PROJECT_PREFIX,
    "service_account": keys.SERVICE_ACCOUNT_PREFIX,
}


async def create_api_key(
    ex: Executor,
    *,
    apikey_secret: bytes,
    kind: str,
    organization_id: str,
    project_id: str | None = None,
    name: str = "",
    owner_user_id: str | None = None,
    service_account_id: str | None = None,
    allowed_models: Sequence[str] | None = None,
    expires_at: datetime | None = None,
) -> CreatedKey:
    material = keys.generate(_PREFIX_BY_KIND[kind], apikey_secret)
    row = await ex.fetchrow(
        """
        INSERT INTO api_keys (id, organization_id, project_id, kind, secret_hash,
                              redacted_value, name, owner_user_id, service_account_id,
                              allowed_models, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        RETURNING *
        """,
        ids.new_id(ids.API_KEY),
        organization_id,
        project_id,
        kind,
        material.secret_hash,
        material.redacted_value,
        name,
        owner_user_id,
        service_account_id,
        list(allowed_models) if allowed_models is not None else None,
        expires_at,
    )
    assert row is not None
    return CreatedKey(row, material.plaintext)
