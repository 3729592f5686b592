"""`/v1/organization/projects`: create, list, rename and archive projects.

Organization owners and readers list every project; a user who is only in some projects
lists those. Only organization owners create, rename or archive projects.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import AdminDeps, admin_call, project_call, string_field, ts
from functions.common.http import JSON, json_body
from functions.common.pagination import Page
from functions.common.principal import refuse_project_credentials, require_admin
from functions.common.routing import Operation
from functions.services import tenancy


def render(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": "organization.project",
        "id": row["id"],
        "name": row["name"],
        "created_at": ts(row["created_at"]),
        "archived_at": ts(row["archived_at"]),
        "status": row["status"],
    }


async def list_projects(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List projects
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
      - {name: include_archived, in: query, schema: {type: boolean, default: false}}
    responses:
      200: {description: "A list of organization.project objects."}
    """
    principal = await deps.identity.authenticate(request)
    refuse_project_credentials(principal)
    include_archived = request.query_params.get("include_archived", "false").lower() == "true"
    # In some of the organization's projects but not in the organization: those only.
    member_only = principal.kind == "user" and principal.org_role is None and not principal.is_guest
    if not member_only:
        require_admin(principal, write=False)
    page = Page.of(request, default_order="asc")
    db = deps.runtime.db.writer
    if member_only:
        assert principal.user_id is not None  # a user's principal always names the user
        rows = await store.list_member_projects(
            db,
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            include_archived=include_archived,
            page=page,
        )
    else:
        rows = await store.list_projects(
            db,
            organization_id=principal.organization_id,
            include_archived=include_archived,
            page=page,
        )
    return JSON(page.answer(rows, render))


async def create_project(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create a project
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [name], properties: {name: {type: string}}}
    responses:
      200: {description: "The new organization.project."}
    """
    call = await admin_call(deps, request, write=True)
    name = string_field(await json_body(request), "name", required=True)
    assert name is not None
    async with call.db.acquire() as conn, conn.transaction():
        row = await tenancy.create_project(conn, organization_id=call.organization_id, name=name)
        if call.principal.kind == "user" and call.principal.user_id is not None:
            await tenancy.set_project_role(
                conn,
                organization_id=call.organization_id,
                project_id=row["id"],
                user_id=call.principal.user_id,
                role="owner",
            )
        await call.record(
            conn, "project.created", row["id"], project_id=row["id"], data={"name": name}
        )
    return JSON(render(row))


async def get_project(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a project
    tags: [admin]
    responses:
      200: {description: "The organization.project."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    return JSON(render(call.project))


async def modify_project(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Rename a project (refused when archived)
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [name], properties: {name: {type: string}}}
    responses:
      200: {description: "The updated organization.project."}
      400: {description: "Invalid body, or the project is archived."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    name = string_field(await json_body(request), "name", required=True)
    assert name is not None
    async with call.db.acquire() as conn, conn.transaction():
        row = await store.rename_project(
            conn, organization_id=call.organization_id, project_id=call.project_id, name=name
        )
        assert row is not None
        await call.record(
            conn, "project.updated", call.project_id, changes_requested={"name": name}
        )
    return JSON(render(row))


async def archive_project(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Archive a project (read-only from then on; its keys stop working)
    tags: [admin]
    responses:
      200: {description: "The archived organization.project."}
      400: {description: Already archived.}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    async with call.db.acquire() as conn, conn.transaction():
        row = await store.archive_project(
            conn, organization_id=call.organization_id, project_id=call.project_id
        )
        assert row is not None
        await call.record(conn, "project.archived", call.project_id)
    await call.identity.revoke_all()
    return JSON(render(row))


_BASE = "/v1/organization/projects"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _BASE, list_projects),
    Operation("POST", _BASE, create_project),
    Operation("GET", _BASE + "/{project_id}", get_project),
    Operation("POST", _BASE + "/{project_id}", modify_project),
    Operation("POST", _BASE + "/{project_id}/archive", archive_project),
]
