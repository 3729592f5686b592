"""SQL of the auth area: refresh tokens, the users sessions and sign-in look up or change,
and OIDC login states.

Functions take the executor first and keyword-only arguments; the caller owns the
transaction. Rows shared with other areas (creating users, organizations, memberships,
personal projects) live in ``functions.services.tenancy``.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from functions.common import ids
from functions.common.db import Executor


# --- refresh tokens ----------------------------------------------------------------------
async def insert_refresh_token(
    ex: Executor, *, user_id: str, family_id: str, token_hash: bytes, expires_at: datetime
) -> None:
    await ex.execute(
        """
        INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
        VALUES ($1, $2, $3, $4, $5)
        """,
        ids.new_id(ids.REFRESH_TOKEN),
        user_id,
        family_id,
        token_hash,
        expires_at,
    )


async def lock_refresh_token(ex: Executor, *, token_hash: bytes) -> asyncpg.Record | None:
    """The token's row, locked FOR UPDATE until the caller's transaction ends, so two
    rotations of one token serialise and the second sees it spent."""
    return await ex.fetchrow(
        "SELECT * FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE", token_hash
    )


async def mark_refresh_token_used(ex: Executor, *, token_id: str) -> None:
    await ex.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", token_id)


async def revoke_token_family(ex: Executor, *, family_id: str) -> None:
    await ex.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
    )


async def revoke_token_family_of(ex: Executor, *, token_hash: bytes) -> str | None:
    """Revoke the family of the token with this hash; the user it belongs to, None when
    the hash is unknown."""
    user_id: str | None = await ex.fetchval(
        """
        WITH token AS (SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1),
        revoked AS (
            UPDATE refresh_tokens SET revoked_at = now()
            WHERE revoked_at IS NULL AND family_id = (SELECT family_id FROM token)
        )
        SELECT user_id FROM token
        """,
        token_hash,
    )
    return user_id


async def sweep_refresh_tokens(ex: Executor, *, limit: int) -> int:
    """Delete up to ``limit`` refresh tokens expired or revoked over a day ago (housekeeping).
    A spent token stays until then: presented again, it revokes its family."""
    status = await ex.execute(
        """
        DELETE FROM refresh_tokens WHERE id IN (
            SELECT id FROM refresh_tokens
            WHERE LEAST(expires_at, revoked_at) < now() - interval '1 day'
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        """,
        limit,
    )
    return int(status.split()[-1])


# --- users ---------------------------------------------------------------------------------
async def get_user(ex: Executor, *, user_id: str) -> asyncpg.Record | None:
    return await ex.fetchrow("SELECT * FROM users WHERE id = $1", user_id)


async def list_memberships(ex: Executor, *, user_id: str) -> list[asyncpg.Record]:
    """The user's organizations as (id, role), by organization ID."""
    return await ex.fetch(
        "SELECT organization_id AS id, role FROM organization_members WHERE user_id = $1"
        " ORDER BY organization_id",
        user_id,
    )


async def user_id_by_oidc(ex: Executor, *, issuer: str, subject: str) -> str | None:
    found: str | None = await ex.fetchval(
        "SELECT id FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2", issuer, subject
    )
    return found


async def link_oidc_by_email(ex: Executor, *, email: str, issuer: str, subject: str) -> str | None:
    """Link the identity to the user with this (lower-case) e-mail, when that user has no
    identity yet; they are no longer a guest. The user's ID, or None when none matched."""
    found: str | None = await ex.fetchval(
        "UPDATE users SET oidc_issuer = $2, oidc_subject = $3, is_guest = false,"
        " updated_at = now() WHERE lower(email) = $1 AND oidc_subject IS NULL RETURNING id",
        email,
        issuer,
        subject,
    )
    return found


async def email_in_use(ex: Executor, *, email: str) -> bool:
    """Whether any user has this (lower-case) e-mail."""
    found = await ex.fetchval("SELECT 1 FROM users WHERE lower(email) = $1", email)
    return bool(found)


async def upgrade_guest(
    ex: Executor, *, user_id: str, email: str | None, name: str, issuer: str, subject: str
) -> str | None:
    """Turn the guest into a signed-in user of this identity, in place (its projects and
    data stay). The user's ID, or None when it is not, or no longer, a guest."""
    found: str | None = await ex.fetchval(
        "UPDATE users SET email = $2, name = $3, is_guest = false, oidc_issuer = $4,"
        " oidc_subject = $5, updated_at = now() WHERE id = $1 AND is_guest RETURNING id",
        user_id,
        email,
        name,
        issuer,
        subject,
    )
    return found


async def guest_id_by_refresh_token(ex: Executor, *, token_hash: bytes) -> str | None:
    """The guest holding this live (unrevoked, unspent, unexpired) refresh token."""
    found: str | None = await ex.fetchval(
        "SELECT u.id FROM refresh_tokens r JOIN users u ON u.id = r.user_id"
        " WHERE r.token_hash = $1 AND r.revoked_at IS NULL AND r.used_at IS NULL"
        " AND r.expires_at > now() AND u.is_guest",
        token_hash,
    )
    return found


async def guest_id(ex: Executor, *, user_id: str) -> str | None:
    """The user's ID when that user exists and is a guest."""
    found: str | None = await ex.fetchval(
        "SELECT id FROM users WHERE id = $1 AND is_guest", user_id
    )
    return found


async def organizations_of(ex: Executor, *, user_id: str) -> list[str]:
    """The organizations the user is in, as a member or through a project: where their
    sign-ins are recorded."""
    rows = await ex.fetch(
        "SELECT organization_id FROM organization_members WHERE user_id = $1"
        " UNION SELECT organization_id FROM project_members WHERE user_id = $1"
        " ORDER BY 1",
        user_id,
    )
    return [r["organization_id"] for r in rows]


# --- OIDC login states --------------------------------------------------------------------
async def insert_login_state(
    ex: Executor,
    *,
    state_hash: bytes,
    code_verifier: str,
    nonce: str,
    browser_hash: bytes,
    guest_user_id: str | None,
    expires_at: datetime,
) -> None:
    """Store a sign-in in flight — bound to the browser that started it by the hash of its
    cookie, with the guest it upgrades, if any — deleting every expired one in the same
    statement (so anyone calling login cannot grow the table)."""
    await ex.execute(
        "WITH swept AS (DELETE FROM oidc_login_states WHERE expires_at <= now())"
        " INSERT INTO oidc_login_states"
        " (state_hash, code_verifier, nonce, browser_hash, guest_user_id, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        state_hash,
        code_verifier,
        nonce,
        browser_hash,
        guest_user_id,
        expires_at,
    )


async def consume_login_state(ex: Executor, *, state_hash: bytes) -> asyncpg.Record | None:
    """Delete and return the sign-in with this state (used once, whatever the caller then
    decides; the caller checks expiry and browser)."""
    return await ex.fetchrow(
        "DELETE FROM oidc_login_states WHERE state_hash = $1 RETURNING *", state_hash
    )
