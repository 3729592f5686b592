"""`/v1/organization/projects/{project_id}/api_keys`: a project's ``sk-proj-…`` keys (and,
in lists, its service accounts' keys), with optional expiry and allowed-model list. Managed
by organization owners and the project's owners; read by organization readers and the
project's members."""

from __future__ import annotations

import time
from datetime import UTC, datetime
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
from functions.admin.limit_fields import attach, token_budgets
from functions.common.db import Executor
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body
from functions.common.pagination import Page
from functions.common.routing import Operation
from functions.services import tenancy
from functions.services.limits.rules import UNSET

_MAX_MODELS = 256
OBJECT = "organization.project.api_key"


def _owner(row: asyncpg.Record) -> dict[str, Any]:
    """A user's or a service account's; ``{}`` for a key made by an operator or an admin
    key, which belongs to no one."""
    if row["service_account_id"] is not None:
        return {
            "type": "service_account",
            "service_account": {
                "object": "organization.project.service_account",
                "id": row["service_account_id"],
                "name": row["sa_name"],
                "role": row["sa_role"],
                "created_at": ts(row["sa_created_at"]),
            },
        }
    if row["owner_user_id"] is not None:
        return {
            "type": "user",
            "user": {
                "object": "organization.project.user",
                "id": row["owner_user_id"],
                "name": row["user_name"],
                "email": row["user_email"],
                "role": row["user_role"],
                "created_at": ts(row["user_created_at"]),
            },
        }
    return {}


def render(row: asyncpg.Record, *, value: str | None = None) -> dict[str, Any]:
    # A user who owns a key but is no longer a member of the project has no access there.
    inactive = row["owner_user_id"] is not None and row["user_role"] is None
    out = {
        "object": OBJECT,
        "id": row["id"],
        "name": row["name"],
        "redacted_value": row["redacted_value"],
        "created_at": ts(row["created_at"]),
        "last_used_at": ts(row["last_used_at"]),
        "expires_at": ts(row["expires_at"]),
        "allowed_models": row["allowed_models"],
        "owner_project_access": "inactive" if inactive else "active",
        "owner": _owner(row),
    }
    if value is not None:
        out["value"] = value  # only in the create response
    return out


async def _get(ex: Executor, org_id: str, project_id: str, key_id: str) -> asyncpg.Record:
    return found(
        await store.get_project_key(
            ex, organization_id=org_id, project_id=project_id, key_id=key_id
        ),
        missing=f"No API key found with id '{key_id}' in this project.",
    )


def _allowed_models(body: dict[str, Any]) -> list[str] | None:
    value = body.get("allowed_models")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or len(value) > _MAX_MODELS
        or not all(isinstance(m, str) and m and len(m) <= 256 for m in value)
    ):
        raise InvalidRequest(
            f"'allowed_models' must be a list of 1 to {_MAX_MODELS} model IDs.",
            param="allowed_models",
        )
    return sorted(set(value))


def _expires_at(body: dict[str, Any]) -> datetime | None:
    value = body.get("expires_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= time.time():
        raise InvalidRequest(
            "'expires_at' must be a Unix timestamp (seconds) in the future.", param="expires_at"
        )
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidRequest("'expires_at' is out of range.", param="expires_at") from None


async def list_keys(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List a project's API keys
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
    responses:
      200: {description: "A list of organization.project.api_key objects."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    page = Page.of(request, default_order="asc")
    rows = await store.list_project_keys(
        call.db, organization_id=call.organization_id, project_id=call.project_id, page=page
    )
    out = page.answer(rows, render)
    await attach(
        call.db, organization_id=call.organization_id, column="api_key_id", objects=out["data"]
    )
    return JSON(out)


async def create_key(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create a project API key (its value is returned once)
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              name: {type: string}
              allowed_models: {type: array, items: {type: string}}
              expires_at: {type: integer, description: Unix seconds}
    responses:
      200: {description: "The organization.project.api_key, with `value`."}
      400: {description: "Invalid body, or the project is archived."}
    """
    call = await project_call(deps, request, write=True)
    body = await json_body(request)
    name = string_field(body, "name", required=False) or "Secret key"
    allowed, expires = _allowed_models(body), _expires_at(body)
    async with call.db.acquire() as conn, conn.transaction():
        created = await tenancy.create_api_key(
            conn,
            apikey_secret=call.identity.apikey_secret,
            kind="project",
            organization_id=call.organization_id,
            project_id=call.project_id,
            name=name,
            owner_user_id=call.principal.user_id if call.principal.kind == "user" else None,
            allowed_models=allowed,
            expires_at=expires,
        )
        key_id = created.row["id"]
        await call.record(
            conn,
            "api_key.created",
            key_id,
            data={
                "object": OBJECT,
                "name": name,
                "allowed_models": allowed,
                "expires_at": ts(expires),
            },
        )
        row = await _get(conn, call.organization_id, call.project_id, key_id)
    out = render(row, value=created.plaintext)
    out["rate_limits"] = UNSET.effective()  # a new key has none of its own
    out["token_budgets"] = token_budgets({})
    return JSON(out)


async def get_key(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a project API key
    tags: [admin]
    responses:
      200: {description: "The organization.project.api_key."}
      404: {description: No such project or key.}
    """
    call = await project_call(deps, request, write=False)
    key_id = request.path_params["key_id"]
    row = await _get(call.db, call.organization_id, call.project_id, key_id)
    [out] = await attach(
        call.db, organization_id=call.organization_id, column="api_key_id", objects=[render(row)]
    )
    return JSON(out)


async def delete_key(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete a project API key (refused everywhere from the next request on)
    tags: [admin]
    responses:
      200: {description: "organization.project.api_key.deleted"}
      404: {description: No such project or key.}
    """
    call = await project_call(deps, request, write=True)
    key_id = request.path_params["key_id"]
    async with call.db.acquire() as conn, conn.transaction():
        secret_hash = await store.delete_project_key(
            conn, organization_id=call.organization_id, project_id=call.project_id, key_id=key_id
        )
        if secret_hash is None:
            raise NotFound(f"No API key found with id '{key_id}' in this project.")
        await call.record(conn, "api_key.deleted", key_id, data={"object": OBJECT})
    await call.identity.revoke_keys([secret_hash])
    return JSON(deleted(OBJECT, key_id))


_BASE = "/v1/organization/projects/{project_id}/api_keys"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _BASE, list_keys),
    Operation("POST", _BASE, create_key),
    Operation("GET", _BASE + "/{key_id}", get_key),
    Operation("DELETE", _BASE + "/{key_id}", delete_key),
]
