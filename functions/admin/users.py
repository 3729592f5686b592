"""`/v1/organization/users`: the organization's members and their roles."""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import AdminDeps, admin_call, choice_field, deleted, found, ts
from functions.admin.limit_fields import attach
from functions.common.db import Executor
from functions.common.errors import InvalidRequest
from functions.common.http import JSON, json_body
from functions.common.pagination import Page
from functions.common.routing import Operation

ORG_ROLES = ("owner", "reader")


def render(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": "organization.user",
        "id": row["id"],
        "name": row["name"],
        "email": row["email"],
        "role": row["role"],
        "added_at": ts(row["added_at"]),
    }


async def _get(ex: Executor, organization_id: str, user_id: str) -> asyncpg.Record:
    return found(
        await store.get_organization_user(ex, organization_id=organization_id, user_id=user_id),
        missing=f"No user found with id '{user_id}' in this organization.",
    )


def _refuse_last_owner(owners: list[str], user_id: str) -> None:
    if not any(owner != user_id for owner in owners):
        raise InvalidRequest(
            "This is the organization's last owner; make another user owner first.",
            code="last_owner",
        )


async def list_users(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List the organization's users
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
    responses:
      200: {description: "A list of organization.user objects."}
    """
    call = await admin_call(deps, request, write=False)
    page = Page.of(request, default_order="asc")
    rows = await store.list_organization_users(
        call.db, organization_id=call.organization_id, page=page
    )
    out = page.answer(rows, render)
    await attach(
        call.db, organization_id=call.organization_id, column="user_id", objects=out["data"]
    )
    return JSON(out)


async def get_user(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a user of the organization
    tags: [admin]
    responses:
      200: {description: "The organization.user."}
      404: {description: Not a member of this organization.}
    """
    call = await admin_call(deps, request, write=False)
    row = await _get(call.db, call.organization_id, request.path_params["user_id"])
    [out] = await attach(
        call.db, organization_id=call.organization_id, column="user_id", objects=[render(row)]
    )
    return JSON(out)


async def modify_user(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Change a user's organization role
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [role], properties: {role: {enum: [owner, reader]}}}
    responses:
      200: {description: "The updated organization.user."}
      404: {description: Not a member of this organization.}
    """
    call = await admin_call(deps, request, write=True)
    role = choice_field(await json_body(request), "role", ORG_ROLES)
    user_id = request.path_params["user_id"]
    async with call.db.acquire() as conn, conn.transaction():
        owners = await store.lock_owners(conn, organization_id=call.organization_id)
        current = await _get(conn, call.organization_id, user_id)
        if current["role"] == "owner" and role != "owner":
            _refuse_last_owner(owners, user_id)
        await store.update_organization_role(
            conn, organization_id=call.organization_id, user_id=user_id, role=role
        )
        await call.record(conn, "user.updated", user_id, changes_requested={"role": role})
        row = await _get(conn, call.organization_id, user_id)
        [out] = await attach(
            conn, organization_id=call.organization_id, column="user_id", objects=[render(row)]
        )
    await call.identity.revoke_all()
    return JSON(out)


async def delete_user(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Remove a user from the organization (and its projects; their keys are deleted)
    tags: [admin]
    responses:
      200: {description: "organization.user.deleted"}
      404: {description: Not a member of this organization.}
    """
    call = await admin_call(deps, request, write=True)
    user_id = request.path_params["user_id"]
    async with call.db.acquire() as conn, conn.transaction():
        owners = await store.lock_owners(conn, organization_id=call.organization_id)
        current = await _get(conn, call.organization_id, user_id)
        if current["role"] == "owner":
            _refuse_last_owner(owners, user_id)
        await store.remove_organization_user(
            conn, organization_id=call.organization_id, user_id=user_id
        )
        await call.record(conn, "user.deleted", user_id)
    await call.identity.revoke_all()  # memberships changed; the deleted keys go with the rest
    return JSON(deleted("organization.user", user_id))


_BASE = "/v1/organization/users"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _BASE, list_users),
    Operation("GET", _BASE + "/{user_id}", get_user),
    Operation("POST", _BASE + "/{user_id}", modify_user),
    Operation("DELETE", _BASE + "/{user_id}", delete_user),
]
