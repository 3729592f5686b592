"""What the Administration API handlers share: who may call (``admin_call`` for the
organization, ``project_call`` for one project), body fields, and loading a project of the
caller's organization (404 otherwise; archived refused on writes). Their SQL is in
``functions.admin.store``; lists page with ``functions.common.pagination.Page``.

Roles, as in OpenAI: organization owners change everything, organization readers read
everything (an admin key acts with its owner's current role; operator keys, owned by no
user, as an owner); a project's owners manage its users, service accounts and API
keys, its members read it. A project the caller may not see answers 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from starlette.requests import Request

from functions.admin import store
from functions.common.db import Executor
from functions.common.errors import Forbidden, InvalidRequest, NotFound
from functions.common.principal import Principal, refuse_project_credentials, require_admin
from functions.common.runtime import Runtime
from functions.services import audit
from functions.services.audit import Actor, Audit
from functions.services.identity import Identity
from functions.services.limits.definitions import RateLimitDefinitions
from functions.services.providers.directory import Providers


@dataclass(frozen=True, slots=True)
class AdminDeps:
    """What the admin area uses."""

    runtime: Runtime
    identity: Identity
    providers: Providers
    limits: RateLimitDefinitions
    audit: Audit


@dataclass(frozen=True)
class Admin:
    """An authorised Administration API call: who, on which organization, with what."""

    deps: AdminDeps
    principal: Principal
    organization_id: str
    actor: Actor

    @property
    def runtime(self) -> Runtime:
        return self.deps.runtime

    @property
    def db(self) -> asyncpg.Pool:
        # Admin traffic is light and callers read their own writes at once: use the writer.
        return self.deps.runtime.db.writer

    @property
    def identity(self) -> Identity:
        return self.deps.identity

    @property
    def scope_project_id(self) -> str | None:
        """The project events of this call belong to, unless told otherwise."""
        return None

    async def record(
        self,
        ex: Executor,
        type: str,
        resource_id: str | None = None,
        *,
        project_id: str | None = None,
        **payload: Any,
    ) -> None:
        """Write an audit event of this call, in the transaction of ``ex`` (the change's)."""
        await audit.record(
            ex,
            organization_id=self.organization_id,
            actor=self.actor,
            type=type,
            resource_id=resource_id,
            project_id=project_id or self.scope_project_id,
            payload=payload,
        )


async def admin_call(deps: AdminDeps, request: Request, *, write: bool) -> Admin:
    principal = await deps.identity.authenticate(request)
    organization_id = require_admin(principal, write=write)
    return Admin(deps, principal, organization_id, deps.audit.actor(principal, request))


@dataclass(frozen=True)
class ProjectAdmin(Admin):
    """An authorised call on the project named by the path's ``project_id``."""

    project: asyncpg.Record

    @property
    def project_id(self) -> str:
        project_id: str = self.project["id"]
        return project_id

    @property
    def scope_project_id(self) -> str | None:
        return self.project_id


async def project_call(
    deps: AdminDeps, request: Request, *, write: bool, org_owners_only: bool = False
) -> ProjectAdmin:
    """Authorise a call on one project of the caller's organization.

    Reads: organization owners and readers, and the project's members. Writes:
    organization owners, and the project's owners unless ``org_owners_only`` (renaming or
    archiving the project itself). Someone who is neither in the organization nor in the
    project gets 404, as if it did not exist; writes on an archived project get 400.
    """
    principal = await deps.identity.authenticate(request)
    refuse_project_credentials(principal)
    if principal.is_guest:
        raise Forbidden("Guests cannot administer projects; sign in first.")
    project_id = request.path_params["project_id"]
    row = await store.get_project_for_caller(
        deps.runtime.db.writer,
        organization_id=principal.organization_id,
        project_id=project_id,
        user_id=principal.user_id if principal.kind == "user" else None,
    )
    project_role = row["caller_project_role"] if row is not None else None
    if row is None or (principal.org_role is None and project_role is None):
        raise NotFound(f"No project found with id '{project_id}'.")
    if write:
        project_owner = project_role == "owner" and not org_owners_only
        if principal.org_role != "owner" and not project_owner:
            raise Forbidden(
                "Only organization owners can do this."
                if org_owners_only
                else "Only organization owners and this project's owners can change it."
            )
        _refuse_archived(row)
    actor = deps.audit.actor(principal, request)
    return ProjectAdmin(deps, principal, principal.organization_id, actor, row)


def ts(value: datetime | None) -> int | None:
    """OpenAI's timestamps: Unix seconds."""
    return int(value.timestamp()) if value is not None else None


# --- body fields ---------------------------------------------------------------------------
def string_field(
    body: dict[str, Any], name: str, *, required: bool, max_length: int = 256
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    if len(value) > max_length:
        raise InvalidRequest(f"'{name}' must be at most {max_length} characters.", param=name)
    return value.strip()


def choice_field(
    body: dict[str, Any], name: str, choices: Sequence[str], *, default: str | None = None
) -> str:
    value = body.get(name, default)
    if value is None:
        raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    if value not in choices:
        raise InvalidRequest(f"'{name}' must be one of: {', '.join(choices)}.", param=name)
    assert isinstance(value, str)
    return value


# --- projects ------------------------------------------------------------------------------
async def load_project(
    ex: Executor, *, organization_id: str, project_id: str, for_write: bool
) -> asyncpg.Record:
    """The organization's project; 404 if it is another's, 400 on writes when archived."""
    row = await store.get_project(ex, organization_id=organization_id, project_id=project_id)
    if row is None:
        raise NotFound(f"No project found with id '{project_id}'.")
    if for_write:
        _refuse_archived(row)
    return row


def _refuse_archived(project: asyncpg.Record) -> None:
    if project["status"] == "archived":
        raise InvalidRequest(
            f"Project '{project['id']}' is archived; archived projects are read-only.",
            code="project_archived",
        )


def found(row: asyncpg.Record | None, *, missing: str) -> asyncpg.Record:
    """``row``, or 404 with the message ``missing`` when there is none."""
    if row is None:
        raise NotFound(missing)
    return row


def deleted(object_name: str, object_id: str) -> dict[str, Any]:
    return {"object": f"{object_name}.deleted", "id": object_id, "deleted": True}
