"""`/v1/organization/admin_api_keys`: organization admin keys (``sk-admin-…``)."""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import (
    AdminDeps,
    admin_call,
    deleted,
    found,
    string_field,
    ts,
)
from functions.common.db import Executor
from functions.common.errors import NotFound
from functions.common.http import JSON, json_body
from functions.common.pagination import Page
from functions.common.routing import Operation
from functions.services import tenancy

OBJECT = "organization.admin_api_key"


def render(row: asyncpg.Record, *, value: str | None = None) -> dict[str, Any]:
    """OpenAI's admin key object. ``owner.role`` is the owner's current organization role,
    which is what the key may do (a demoted owner's keys read only); operator keys
    (``jan-server admin``) belong to no user and act as an owner: ``{"role": "owner"}``."""
    owner: dict[str, Any] = {"role": "owner"}
    if row["owner_user_id"] is not None:
        owner = {
            "type": "user",
            "object": "organization.user",
            "id": row["owner_user_id"],
            "name": row["owner_name"],
            "email": row["owner_email"],
            "created_at": ts(row["owner_created_at"]),
            "role": row["owner_role"],
        }
    out = {
        "object": OBJECT,
        "id": row["id"],
        "name": row["name"],
        "redacted_value": row["redacted_value"],
        "created_at": ts(row["created_at"]),
        "last_used_at": ts(row["last_used_at"]),
        "expires_at": ts(row["expires_at"]),
        "owner": owner,
    }
    if value is not None:
        out["value"] = value  # only in the create response
    return out


async def _get(ex: Executor, organization_id: str, key_id: str) -> asyncpg.Record:
    return found(
        await store.get_admin_key(ex, organization_id=organization_id, key_id=key_id),
        missing=f"No admin API key found with id '{key_id}'.",
    )


async def list_keys(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List admin API keys
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of organization.admin_api_key objects."}
      401: {description: Bad credentials.}
      403: {description: Not an organization administrator.}
    """
    call = await admin_call(deps, request, write=False)
    page = Page.of(request, default_order="asc")
    rows = await store.list_admin_keys(call.db, organization_id=call.organization_id, page=page)
    return JSON(page.answer(rows, render))


async def create_key(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create an admin API key (its value is returned once)
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [name], properties: {name: {type: string}}}
    responses:
      200: {description: "The organization.admin_api_key, with `value`."}
      400: {description: Invalid body.}
    """
    call = await admin_call(deps, request, write=True)
    name = string_field(await json_body(request), "name", required=True)
    owner = call.principal.user_id
    async with call.db.acquire() as conn, conn.transaction():
        created = await tenancy.create_api_key(
            conn,
            apikey_secret=call.identity.apikey_secret,
            kind="admin",
            organization_id=call.organization_id,
            name=name or "",
            owner_user_id=owner,
        )
        key_id = created.row["id"]
        await call.record(conn, "api_key.created", key_id, data={"object": OBJECT, "name": name})
        row = await _get(conn, call.organization_id, key_id)
    return JSON(render(row, value=created.plaintext))


async def get_key(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve an admin API key
    tags: [admin]
    responses:
      200: {description: "The organization.admin_api_key."}
      404: {description: No such key in this organization.}
    """
    call = await admin_call(deps, request, write=False)
    return JSON(render(await _get(call.db, call.organization_id, request.path_params["key_id"])))


async def delete_key(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete an admin API key (refused everywhere from the next request on)
    tags: [admin]
    responses:
      200: {description: "organization.admin_api_key.deleted"}
      404: {description: No such key in this organization.}
    """
    call = await admin_call(deps, request, write=True)
    key_id = request.path_params["key_id"]
    async with call.db.acquire() as conn, conn.transaction():
        secret_hash = await store.delete_admin_key(
            conn, organization_id=call.organization_id, key_id=key_id
        )
        if secret_hash is None:
            raise NotFound(f"No admin API key found with id '{key_id}'.")
        await call.record(conn, "api_key.deleted", key_id, data={"object": OBJECT})
    await call.identity.revoke_keys([secret_hash])
    return JSON(deleted(OBJECT, key_id))


_BASE = "/v1/organization/admin_api_keys"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _BASE, list_keys),
    Operation("POST", _BASE, create_key),
    Operation("GET", _BASE + "/{key_id}", get_key),
    Operation("DELETE", _BASE + "/{key_id}", delete_key),
]
