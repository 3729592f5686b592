"""Test factories: whole tenants made directly through the identity library code.

Usage in any area's tests (the ``client`` fixture opens the runtime first)::

    async def test_something(client, runtime):
        tenant = await create_tenant(runtime)
        r = await client.get("/v1/models", headers=tenant.project_headers)
        key = await create_project_key(runtime, tenant, allowed_models=["m1"])

``Tenant`` holds plaintext credentials: an admin key, a project key and a user access
token for the organization owner (who is also owner of the project).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from functions.common import tokens
from functions.common.runtime import Runtime
from functions.services import tenancy

_counter = itertools.count(1)


def bearer(credential: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", **extra}


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    owner_user_id: str
    owner_email: str
    project_id: str
    admin_key: str
    project_key: str
    access_token: str

    @property
    def admin_headers(self) -> dict[str, str]:
        return bearer(self.admin_key)

    @property
    def project_headers(self) -> dict[str, str]:
        return bearer(self.project_key)

    @property
    def user_headers(self) -> dict[str, str]:
        """The owner's JWT, acting in the tenant's project."""
        return bearer(self.access_token, **{"OpenAI-Project": self.project_id})


def _apikey_secret(runtime: Runtime) -> bytes:
    assert runtime.settings.apikey_secret is not None
    return runtime.settings.apikey_secret.get_secret_value().encode()


def access_token_for(runtime: Runtime, user_id: str) -> str:
    assert runtime.settings.jwt_secret is not None
    return tokens.issue_access_token(
        runtime.settings.jwt_secret.get_secret_value(), user_id=user_id
    )


async def create_tenant(runtime: Runtime, *, name: str | None = None) -> Tenant:
    """An organization with an owner user, one project, and credentials for all three."""
    n = next(_counter)
    name = name or f"Tenant {n}"
    email = f"owner{n}-{id(runtime)}@example.test"
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        org = await tenancy.create_organization(conn, name=name)
        user = await tenancy.create_user(conn, email=email, name=f"Owner {n}")
        await tenancy.set_organization_role(
            conn, organization_id=org["id"], user_id=user["id"], role="owner"
        )
        project = await tenancy.create_personal_project(
            conn, organization_id=org["id"], user_id=user["id"], name=f"{name} project"
        )
        admin = await tenancy.create_api_key(
            conn,
            apikey_secret=_apikey_secret(runtime),
            kind="admin",
            organization_id=org["id"],
            name="test admin key",
            owner_user_id=user["id"],
        )
        proj = await tenancy.create_api_key(
            conn,
            apikey_secret=_apikey_secret(runtime),
            kind="project",
            organization_id=org["id"],
            project_id=project["id"],
            name="test project key",
            owner_user_id=user["id"],
        )
    return Tenant(
        organization_id=org["id"],
        owner_user_id=user["id"],
        owner_email=email,
        project_id=project["id"],
        admin_key=admin.plaintext,
        project_key=proj.plaintext,
        access_token=access_token_for(runtime, user["id"]),
    )


async def create_project_key(
    runtime: Runtime,
    tenant: Tenant,
    *,
    project_id: str | None = None,
    allowed_models: Sequence[str] | None = None,
    expires_at: datetime | None = None,
    name: str = "test key",
) -> str:
    """Another project key (plaintext), optionally limited to models or expiring."""
    created = await tenancy.create_api_key(
        runtime.db.writer,
        apikey_secret=_apikey_secret(runtime),
        kind="project",
        organization_id=tenant.organization_id,
        project_id=project_id or tenant.project_id,
        name=name,
        owner_user_id=tenant.owner_user_id,
        allowed_models=allowed_models,
        expires_at=expires_at,
    )
    return created.plaintext


async def create_project(runtime: Runtime, tenant: Tenant, *, name: str = "second") -> str:
    """Another project in the tenant's organization (the owner owns it)."""
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        project = await tenancy.create_project(
            conn, organization_id=tenant.organization_id, name=name
        )
        await tenancy.set_project_role(
            conn,
            organization_id=tenant.organization_id,
            project_id=project["id"],
            user_id=tenant.owner_user_id,
            role="owner",
        )
    project_id: str = project["id"]
    return project_id


async def create_member(
    runtime: Runtime,
    tenant: Tenant,
    *,
    org_role: str | None = None,
    project_role: str | None = "member",
    project_id: str | None = None,
    guest: bool = False,
) -> tuple[str, str]:
    """A user in the tenant (organization and/or project roles): (user_id, access token).

    The project role is in ``project_id`` (default: the tenant's project), which becomes
    the user's default project."""
    n = next(_counter)
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        user = await tenancy.create_user(
            conn,
            email=None if guest else f"member{n}-{id(runtime)}@example.test",
            name=f"Member {n}",
            is_guest=guest,
        )
        if org_role is not None:
            await tenancy.set_organization_role(
                conn, organization_id=tenant.organization_id, user_id=user["id"], role=org_role
            )
        if project_role is not None:
            await tenancy.set_project_role(
                conn,
                organization_id=tenant.organization_id,
                project_id=project_id or tenant.project_id,
                user_id=user["id"],
                role=project_role,
            )
            await tenancy.set_default_project(
                conn, user_id=user["id"], project_id=project_id or tenant.project_id
            )
    return user["id"], access_token_for(runtime, user["id"])
