"""`/v1/organization/projects/{project_id}/users`: project members and their roles.

Managed by organization owners and by the project's own owners; read by organization
readers and the project's members."""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import (
    AdminDeps,
    choice_field,
    deleted,
    found,
    project_call,
    string_field,
    ts,
)
from functions.common.db import Executor
from functions.common.errors import InvalidRequest
from functions.common.http import JSON, json_body
from functions.common.pagination import Page
from functions.common.routing import Operation
from functions.services import tenancy

PROJECT_ROLES = ("owner", "member")


def render(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": "organization.project.user",
        "id": row["id"],
        "name": row["name"],
        "email": row["email"],
        "role": row["role"],
        "added_at": ts(row["added_at"]),
    }


async def _get(ex: Executor, org_id: str, project_id: str, user_id: str) -> asyncpg.Record:
    return found(
        await store.get_project_user(
            ex, organization_id=org_id, project_id=project_id, user_id=user_id
        ),
        missing=f"No user found with id '{user_id}' in this project.",
    )


async def list_members(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List a project's users
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
    responses:
      200: {description: "A list of organization.project.user objects."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    page = Page.of(request, default_order="asc")
    rows = await store.list_project_users(
        call.db, organization_id=call.organization_id, project_id=call.project_id, page=page
    )
    return JSON(page.answer(rows, render))


async def add_member(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Add an organization user to a project
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [user_id, role]
            properties: {user_id: {type: string}, role: {enum: [owner, member]}}
    responses:
      200: {description: "The organization.project.user."}
      400: {description: "Not an organization user, or the project is archived."}
    """
    call = await project_call(deps, request, write=True)
    body = await json_body(request)
    user_id = string_field(body, "user_id", required=True)
    role = choice_field(body, "role", PROJECT_ROLES)
    assert user_id is not None
    async with call.db.acquire() as conn, conn.transaction():
        org_role = await store.organization_role(
            conn, organization_id=call.organization_id, user_id=user_id
        )
        if org_role is None:
            raise InvalidRequest(
                f"User '{user_id}' is not a member of this organization; invite them first.",
                param="user_id",
            )
        await tenancy.set_project_role(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            user_id=user_id,
            role=role,
        )
        row = await _get(conn, call.organization_id, call.project_id, user_id)
        await call.record(conn, "user.added", user_id, data={"role": role})
    await call.identity.revoke_all()
    return JSON(render(row))


async def get_member(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a project user
    tags: [admin]
    responses:
      200: {description: "The organization.project.user."}
      404: {description: No such project or user.}
    """
    call = await project_call(deps, request, write=False)
    user_id = request.path_params["user_id"]
    return JSON(render(await _get(call.db, call.organization_id, call.project_id, user_id)))


async def modify_member(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Change a project user's role
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [role], properties: {role: {enum: [owner, member]}}}
    responses:
      200: {description: "The updated organization.project.user."}
      400: {description: "Invalid role, or the project is archived."}
      404: {description: No such project or user.}
    """
    call = await project_call(deps, request, write=True)
    role = choice_field(await json_body(request), "role", PROJECT_ROLES)
    user_id = request.path_params["user_id"]
    async with call.db.acquire() as conn, conn.transaction():
        await _get(conn, call.organization_id, call.project_id, user_id)
        await store.update_project_role(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            user_id=user_id,
            role=role,
        )
        row = await _get(conn, call.organization_id, call.project_id, user_id)
        await call.record(conn, "user.updated", user_id, changes_requested={"role": role})
    await call.identity.revoke_all()
    return JSON(render(row))


async def remove_member(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Remove a user from a project (their keys for it are deleted)
    tags: [admin]
    responses:
      200: {description: "organization.project.user.deleted"}
      404: {description: No such project or user.}
    """
    call = await project_call(deps, request, write=True)
    user_id = request.path_params["user_id"]
    async with call.db.acquire() as conn, conn.transaction():
        await _get(conn, call.organization_id, call.project_id, user_id)
        await store.remove_project_user(
            conn, organization_id=call.organization_id, project_id=call.project_id, user_id=user_id
        )
        await call.record(conn, "user.deleted", user_id)
    await call.identity.revoke_all()  # membership changed; the deleted keys go with the rest
    return JSON(deleted("organization.project.user", user_id))


_BASE = "/v1/organization/projects/{project_id}/users"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _BASE, list_members),
    Operation("POST", _BASE, add_member),
    Operation("GET", _BASE + "/{user_id}", get_member),
    Operation("POST", _BASE + "/{user_id}", modify_member),
    Operation("DELETE", _BASE + "/{user_id}", remove_member),
]
