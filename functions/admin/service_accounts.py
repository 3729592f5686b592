"""`/v1/organization/projects/{project_id}/service_accounts`: bot identities of a project,
each created with one ``sk-svcacct-…`` key returned once. Managed by organization owners and
the project's owners; read by organization readers and the project's members."""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import (
    AdminDeps,
    deleted,
    found,
    project_call,
    string_field,
    ts,
)
from functions.admin.limit_fields import attach
from functions.common.errors import NotFound
from functions.common.http import JSON, json_body
from functions.common.pagination import Page
from functions.common.routing import Operation
from functions.services import tenancy
from functions.services.limits.rules import UNSET

KEY_OBJECT = "organization.project.service_account.api_key"


def render(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": "organization.project.service_account",
        "id": row["id"],
        "name": row["name"],
        "role": row["role"],
        "created_at": ts(row["created_at"]),
    }


async def list_accounts(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List a project's service accounts
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
    responses:
      200: {description: "A list of organization.project.service_account objects."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    page = Page.of(request, default_order="asc")
    rows = await store.list_service_accounts(
        call.db, organization_id=call.organization_id, project_id=call.project_id, page=page
    )
    out = page.answer(rows, render)
    await attach(
        call.db,
        organization_id=call.organization_id,
        column="service_account_id",
        objects=out["data"],
    )
    return JSON(out)


async def create_account(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create a service account and its API key (returned once)
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [name], properties: {name: {type: string}}}
    responses:
      200: {description: "The service account with `api_key.value`."}
      400: {description: "Invalid body, or the project is archived."}
    """
    call = await project_call(deps, request, write=True)
    name = string_field(await json_body(request), "name", required=True)
    assert name is not None
    async with call.db.acquire() as conn, conn.transaction():
        account = await tenancy.create_service_account(
            conn, organization_id=call.organization_id, project_id=call.project_id, name=name
        )
        key = await tenancy.create_api_key(
            conn,
            apikey_secret=call.identity.apikey_secret,
            kind="service_account",
            organization_id=call.organization_id,
            project_id=call.project_id,
            name="Secret Key",
            service_account_id=account["id"],
        )
        await call.record(
            conn,
            "service_account.created",
            account["id"],
            data={"name": name, "role": account["role"]},
        )
        await call.record(
            conn,
            "api_key.created",
            key.row["id"],
            data={"object": KEY_OBJECT, "service_account_id": account["id"]},
        )
    out = render(account)
    out["rate_limits"] = UNSET.effective()  # a new account has none of its own
    out["api_key"] = {
        "object": KEY_OBJECT,
        "id": key.row["id"],
        "name": key.row["name"],
        "value": key.plaintext,
        "created_at": ts(key.row["created_at"]),
    }
    return JSON(out)


async def get_account(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a service account
    tags: [admin]
    responses:
      200: {description: "The organization.project.service_account."}
      404: {description: No such project or service account.}
    """
    call = await project_call(deps, request, write=False)
    account_id = request.path_params["service_account_id"]
    row = found(
        await store.get_service_account(
            call.db,
            organization_id=call.organization_id,
            project_id=call.project_id,
            service_account_id=account_id,
        ),
        missing=f"No service account found with id '{account_id}'.",
    )
    [out] = await attach(
        call.db,
        organization_id=call.organization_id,
        column="service_account_id",
        objects=[render(row)],
    )
    return JSON(out)


async def delete_account(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete a service account and its keys
    tags: [admin]
    responses:
      200: {description: "organization.project.service_account.deleted"}
      404: {description: No such project or service account.}
    """
    call = await project_call(deps, request, write=True)
    account_id = request.path_params["service_account_id"]
    async with call.db.acquire() as conn, conn.transaction():
        hashes = await store.delete_service_account_keys(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            service_account_id=account_id,
        )
        gone = await store.delete_service_account(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            service_account_id=account_id,
        )
        if not gone:
            raise NotFound(f"No service account found with id '{account_id}'.")
        await call.record(conn, "service_account.deleted", account_id)
    await call.identity.revoke_keys(hashes)
    return JSON(deleted("organization.project.service_account", account_id))


_BASE = "/v1/organization/projects/{project_id}/service_accounts"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _BASE, list_accounts),
    Operation("POST", _BASE, create_account),
    Operation("GET", _BASE + "/{service_account_id}", get_account),
    Operation("DELETE", _BASE + "/{service_account_id}", delete_account),
]
