"""Rate limits in the Administration API.

OpenAI's: ``GET /v1/organization/projects/{project_id}/rate_limits`` (one
``project.rate_limit`` per model the project can use) and ``POST …/{rate_limit_id}``.
Jan extensions: the organization's defaults per model (``/v1/organization/rate_limits``,
which a project's limits inherit field by field, so new projects start with them), limits
of an API key, a service account and a user (``…/rate_limits`` under each, shown as
``rate_limits`` on those objects), and the organization's policy for when the shared
counters cannot be reached (``/v1/organization/rate_limit_policy``).

Values are integers, 0 meaning no limit. In a change, a field left out keeps its value;
``null`` unsets it (a project then follows the organization's default again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import project_keys, service_accounts, store, users
from functions.admin.call import Admin, AdminDeps, admin_call, found, project_call
from functions.admin.limit_fields import attach, limit_changes, model_of, rate_limit_id
from functions.common.db import Executor
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body
from functions.common.pagination import Page, limit_param, list_page
from functions.common.principal import model_grants
from functions.common.routing import Operation
from functions.services.limits import store as limits_store
from functions.services.limits.rules import LimitSet

PROJECT_OBJECT = "project.rate_limit"
ORGANIZATION_OBJECT = "organization.rate_limit"


def render(object_name: str, model: str, limits: LimitSet) -> dict[str, Any]:
    return {"object": object_name, "id": rate_limit_id(model), "model": model, **limits.effective()}


def _page(request: Request, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's list envelope over a list computed here, sorted by ID: ``after`` /
    ``before`` cursors (IDs), ``limit`` (default 100)."""
    Page.of(request, default_order="asc")  # 400 for a bad order or limit, like every list
    limit = limit_param(request, default=100)
    after = request.query_params.get("after") or None
    before = request.query_params.get("before") or None
    ordered = sorted(items, key=lambda item: item["id"])
    if request.query_params.get("order") == "desc":
        ordered.reverse()
        ids_after = [i for i in ordered if after is None or i["id"] < after]
        kept = [i for i in ids_after if before is None or i["id"] > before]
    else:
        ids_after = [i for i in ordered if after is None or i["id"] > after]
        kept = [i for i in ids_after if before is None or i["id"] < before]
    if before is not None and after is None:
        return list_page(kept[-limit:], has_more=len(kept) > limit)
    return list_page(kept[:limit], has_more=len(kept) > limit)


# --- a project's limits (OpenAI's) ---------------------------------------------------------
async def _project_limits(deps: AdminDeps, organization_id: str, project_id: str) -> list[Any]:
    db = deps.runtime.db.writer
    defaults = await limits_store.model_limits(db, organization_id=organization_id, project_id=None)
    own = await limits_store.model_limits(
        db, organization_id=organization_id, project_id=project_id
    )
    models = await deps.limits.models(organization_id, project_id) | set(own)
    # One per model the project can use: its model permissions apply (as to its calls).
    permissions = await store.get_model_permissions(
        db, organization_id=organization_id, project_id=project_id
    )
    if permissions is not None:
        allowed, denied = model_grants(None, permissions["mode"], permissions["model_ids"])
        models = {m for m in models if (allowed is None or m in allowed) and m not in denied}
    out = []
    for model in models:
        mine = own.get(model)
        default = defaults.get(model)
        limits = mine.over(default) if mine is not None else default or LimitSet()
        out.append(render(PROJECT_OBJECT, model, limits))
    return out


async def list_project_rate_limits(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List a project's rate limits, one per model it can use
    description: >
      OpenAI's `project.rate_limit` objects, with Jan's `max_tokens_per_1_day` and
      `max_concurrent_requests`. Values are the project's own, else the organization's
      default for the model; 0 means no limit.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, default: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: before, in: query, schema: {type: string}}
    responses:
      200: {description: "A list of project.rate_limit objects."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    items = await _project_limits(deps, call.organization_id, call.project_id)
    return JSON(_page(request, items))


async def modify_project_rate_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Change a project's rate limit on one model
    description: >
      Organization owners only. A field left out keeps its value; `null` makes it follow
      the organization's default again; 0 means no limit. OpenAI's image, audio and batch
      limits do not apply (400).
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: rate_limit_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              max_requests_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_requests_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_concurrent_requests: {type: integer, minimum: 0, nullable: true}
    responses:
      200: {description: "The project.rate_limit."}
      400: {description: "A value out of range, or a limit that does not apply."}
      404: {description: "No such project, or no model of it with this rate limit ID."}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    rate_id = request.path_params["rate_limit_id"]
    model = model_of(rate_id)
    missing = NotFound(f"No rate limit found with id '{rate_id}' in this project.")
    if model is None:
        raise missing
    changes = limit_changes(await json_body(request))
    db = call.db
    own = await limits_store.model_limits(
        db, organization_id=call.organization_id, project_id=call.project_id
    )
    if model not in own and model not in await deps.limits.models(
        call.organization_id, call.project_id
    ):
        raise missing
    stored = own.get(model)
    if changes:
        async with db.acquire() as conn, conn.transaction():
            stored = await limits_store.set_model_limits(
                conn,
                organization_id=call.organization_id,
                project_id=call.project_id,
                model=model,
                changes=changes,
            )
            await call.record(
                conn, "rate_limit.updated", rate_id, model=model, changes_requested=changes
            )
        deps.limits.changed(call.organization_id)
    defaults = await limits_store.model_limits(
        db, organization_id=call.organization_id, project_id=None
    )
    default = defaults.get(model)
    limits = stored.over(default) if stored is not None else default or LimitSet()
    return JSON(render(PROJECT_OBJECT, model, limits))


# --- the organization's defaults (Jan extension) -------------------------------------------
async def list_organization_rate_limits(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "List the organization's default rate limits per model (Jan extension)"
    description: >
      One `organization.rate_limit` per model of the organization's providers and the
      built-in provider, and per model that has a default. A project's limit on a model
      follows these defaults wherever it sets no value of its own (new projects included).
    tags: [admin]
    parameters:
      - {name: limit, in: query, schema: {type: integer, default: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: before, in: query, schema: {type: string}}
    responses:
      200: {description: "A list of organization.rate_limit objects."}
    """
    call = await admin_call(deps, request, write=False)
    defaults = await limits_store.model_limits(
        call.db, organization_id=call.organization_id, project_id=None
    )
    models = await deps.limits.models(call.organization_id, None) | set(defaults)
    items = [render(ORGANIZATION_OBJECT, m, defaults.get(m, LimitSet())) for m in models]
    return JSON(_page(request, items))


async def modify_organization_rate_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Change the organization's default rate limit on a model (Jan extension)"
    description: >
      Organization owners. `rate_limit_id` is `rl-` and the model's name (characters other
      than letters, digits, `.`, `_` and `-` written `~xx` per UTF-8 byte), so a default
      can be set for a model before any provider serves it.
    tags: [admin]
    parameters:
      - {name: rate_limit_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              max_requests_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_requests_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_concurrent_requests: {type: integer, minimum: 0, nullable: true}
    responses:
      200: {description: "The organization.rate_limit."}
      400: {description: "A value out of range, or a limit that does not apply."}
      404: {description: Not a rate limit ID.}
    """
    call = await admin_call(deps, request, write=True)
    rate_id = request.path_params["rate_limit_id"]
    model = model_of(rate_id)
    if model is None:
        raise NotFound(f"No rate limit found with id '{rate_id}'.")
    changes = limit_changes(await json_body(request))
    if changes:
        async with call.db.acquire() as conn, conn.transaction():
            limits = await limits_store.set_model_limits(
                conn,
                organization_id=call.organization_id,
                project_id=None,
                model=model,
                changes=changes,
            )
            await call.record(
                conn, "rate_limit.updated", rate_id, model=model, changes_requested=changes
            )
        deps.limits.changed(call.organization_id)
    else:
        defaults = await limits_store.model_limits(
            call.db, organization_id=call.organization_id, project_id=None
        )
        limits = defaults.get(model, LimitSet())
    return JSON(render(ORGANIZATION_OBJECT, model, limits))


# --- API keys, service accounts, users (Jan extensions) ------------------------------------
async def modify_key_rate_limits(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set an API key's rate limits, over every model (Jan extension)"
    description: >
      Organization owners and the project's owners. They apply on top of the project's
      limits. A field left out keeps its value; 0 or `null` means no limit.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: key_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              max_requests_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_requests_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_concurrent_requests: {type: integer, minimum: 0, nullable: true}
    responses:
      200: {description: "The organization.project.api_key, with `rate_limits`."}
      400: {description: "A value out of range, or a limit that does not apply."}
      404: {description: No such project or key.}
    """
    call = await project_call(deps, request, write=True)
    key_id = request.path_params["key_id"]
    changes = limit_changes(await json_body(request))

    async def load(conn: Executor) -> asyncpg.Record | None:
        return await store.get_project_key(
            conn, organization_id=call.organization_id, project_id=call.project_id, key_id=key_id
        )

    return await _set_subject_limits(
        deps,
        call,
        changes,
        "api_key_id",
        key_id,
        load=load,
        missing=f"No API key found with id '{key_id}' in this project.",
        render=project_keys.render,
    )


async def modify_service_account_rate_limits(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set a service account's rate limits, over every model (Jan extension)"
    description: >
      Organization owners and the project's owners. Every key of the account counts
      against them together, on top of the project's limits. A field left out keeps its
      value; 0 or `null` means no limit.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: service_account_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              max_requests_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_requests_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_concurrent_requests: {type: integer, minimum: 0, nullable: true}
    responses:
      200: {description: "The organization.project.service_account, with `rate_limits`."}
      400: {description: "A value out of range, or a limit that does not apply."}
      404: {description: No such project or service account.}
    """
    call = await project_call(deps, request, write=True)
    account_id = request.path_params["service_account_id"]
    changes = limit_changes(await json_body(request))

    async def load(conn: Executor) -> asyncpg.Record | None:
        return await store.get_service_account(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            service_account_id=account_id,
        )

    return await _set_subject_limits(
        deps,
        call,
        changes,
        "service_account_id",
        account_id,
        load=load,
        missing=f"No service account found with id '{account_id}'.",
        render=service_accounts.render,
    )


async def modify_user_rate_limits(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set a user's rate limits in this organization, over every model (Jan extension)"
    description: >
      Organization owners. They count the user's own calls and those of the project keys
      the user owns, on top of the projects' limits; a guest's replace the guest defaults.
      A field left out keeps its value; 0 or `null` means no limit.
    tags: [admin]
    parameters:
      - {name: user_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              max_requests_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_minute: {type: integer, minimum: 0, nullable: true}
              max_requests_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_tokens_per_1_day: {type: integer, minimum: 0, nullable: true}
              max_concurrent_requests: {type: integer, minimum: 0, nullable: true}
    responses:
      200: {description: "The organization.user, with `rate_limits`."}
      400: {description: "A value out of range, or a limit that does not apply."}
      404: {description: Not a member of this organization.}
    """
    call = await admin_call(deps, request, write=True)
    user_id = request.path_params["user_id"]
    changes = limit_changes(await json_body(request))

    async def load(conn: Executor) -> asyncpg.Record | None:
        return await store.get_organization_user(
            conn, organization_id=call.organization_id, user_id=user_id
        )

    return await _set_subject_limits(
        deps,
        call,
        changes,
        "user_id",
        user_id,
        load=load,
        missing=f"No user found with id '{user_id}' in this organization.",
        render=users.render,
    )


async def _set_subject_limits(
    deps: AdminDeps,
    call: Admin,
    changes: dict[str, int | None],
    column: limits_store.Subject,
    subject_id: str,
    *,
    load: Callable[[Executor], Awaitable[asyncpg.Record | None]],
    missing: str,
    render: Callable[[asyncpg.Record], dict[str, Any]],
) -> Response:
    """Change a key's, service account's or user's own limits (a 404 when ``load`` finds
    no such object of the caller's), and answer the object with its ``rate_limits``."""
    async with call.db.acquire() as conn, conn.transaction():
        row = found(await load(conn), missing=missing)
        if changes:
            await limits_store.set_subject_limits(
                conn,
                organization_id=call.organization_id,
                column=column,
                subject_id=subject_id,
                changes=changes,
            )
            await call.record(
                conn,
                "rate_limit.updated",
                subject_id,
                subject=column.removesuffix("_id"),
                changes_requested=changes,
            )
        [out] = await attach(
            conn, organization_id=call.organization_id, column=column, objects=[render(row)]
        )
    deps.limits.changed(call.organization_id)
    return JSON(out)


# --- the failure policy (Jan extension) ----------------------------------------------------
def _policy(deps: AdminDeps, mode: str | None) -> dict[str, Any]:
    setting = deps.runtime.settings.jan_rate_limit_failure_mode
    return {
        "object": "organization.rate_limit_policy",
        "failure_mode": mode or setting,
        "source": "organization" if mode else "default",
    }


async def get_rate_limit_policy(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "The organization's policy when rate-limit counters are unreachable (Jan extension)"
    description: >
      `failure_mode` `open`: each instance enforces every limit on its own until the
      counters answer again; `closed`: calls that need the counters get 503
      (`rate_limit_unavailable`). `source` says whether it is the organization's own
      choice or the server's default (`JAN_RATE_LIMIT_FAILURE_MODE`).
    tags: [admin]
    responses:
      200: {description: "The organization.rate_limit_policy."}
    """
    call = await admin_call(deps, request, write=False)
    mode = await limits_store.failure_mode(call.db, organization_id=call.organization_id)
    return JSON(_policy(deps, mode))


async def modify_rate_limit_policy(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Choose fail open or fail closed for this organization (Jan extension)"
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [failure_mode]
            properties:
              failure_mode:
                type: string
                enum: [open, closed]
                nullable: true
                description: "`null`: follow the server's default again."
    responses:
      200: {description: "The organization.rate_limit_policy."}
      400: {description: "Not open, closed or null."}
    """
    call = await admin_call(deps, request, write=True)
    body = await json_body(request)
    if "failure_mode" not in body:
        raise InvalidRequest("Missing required parameter: 'failure_mode'.", param="failure_mode")
    mode = body["failure_mode"]
    if mode not in ("open", "closed", None):
        raise InvalidRequest(
            "'failure_mode' must be 'open', 'closed' or null.", param="failure_mode"
        )
    async with call.db.acquire() as conn, conn.transaction():
        await limits_store.set_failure_mode(conn, organization_id=call.organization_id, mode=mode)
        await call.record(
            conn,
            "rate_limit_policy.updated",
            call.organization_id,
            changes_requested={"failure_mode": mode},
        )
    deps.limits.changed(call.organization_id)
    return JSON(_policy(deps, mode))


_PROJECT = "/v1/organization/projects/{project_id}"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _PROJECT + "/rate_limits", list_project_rate_limits),
    Operation("POST", _PROJECT + "/rate_limits/{rate_limit_id}", modify_project_rate_limit),
    Operation("GET", "/v1/organization/rate_limits", list_organization_rate_limits),
    Operation(
        "POST", "/v1/organization/rate_limits/{rate_limit_id}", modify_organization_rate_limit
    ),
    Operation("POST", _PROJECT + "/api_keys/{key_id}/rate_limits", modify_key_rate_limits),
    Operation(
        "POST",
        _PROJECT + "/service_accounts/{service_account_id}/rate_limits",
        modify_service_account_rate_limits,
    ),
    Operation("POST", "/v1/organization/users/{user_id}/rate_limits", modify_user_rate_limits),
    Operation("GET", "/v1/organization/rate_limit_policy", get_rate_limit_policy),
    Operation("POST", "/v1/organization/rate_limit_policy", modify_rate_limit_policy),
]
