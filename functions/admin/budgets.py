"""Budgets in the Administration API.

OpenAI's hard spend limits: ``GET``/``POST``/``DELETE /v1/organization/spend_limit`` and
``…/projects/{project_id}/spend_limit`` (``organization.spend_limit``,
``project.spend_limit``: cents a calendar month, UTC). Jan's token budgets: tokens a
calendar day and a calendar month (UTC) of the organization
(``/v1/organization/token_budgets``), a project (``…/projects/{id}/token_budgets``), an API
key (``POST …/api_keys/{id}/token_budgets``) and a user
(``POST /v1/organization/users/{id}/token_budgets``), the last two shown as
``token_budgets`` on keys and users, as their ``rate_limits`` are.

Who: organization owners (and admin keys) set the organization's and projects' budgets, so
a project's owners cannot lift them; they set their keys' as they set the keys' rate
limits. Readers and the project's members read. The limiter enforces them
(``functions.services.limits``); a change applies at once on this instance and within
``JAN_RATE_LIMIT_REFRESH_SECONDS`` on the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import project_keys, store, users
from functions.admin.call import Admin, AdminDeps, admin_call, found, project_call
from functions.admin.limit_fields import attach, budget_changes, token_budgets
from functions.common.db import Executor
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body
from functions.common.routing import Operation
from functions.services.limits import store as limits_store
from functions.services.limits.rules import Budget

MAX_CENTS = 9_000_000_000  # $90M a month: budgets count spend exactly up to about that
_SPEND_FIELDS = ("threshold_amount", "currency", "interval")


# --- hard spend limits (OpenAI's) ------------------------------------------------------------
async def _spend_limit(
    deps: AdminDeps, ex: Executor, organization_id: str, subject_id: str, object_name: str
) -> dict[str, Any]:
    """The spend limit as OpenAI shows it; 404 when none is set."""
    stored = await limits_store.budgets_of(
        ex, organization_id=organization_id, subject_id=subject_id
    )
    cents = stored.get(("spend", "month"))
    if cents is None:
        where = f"project '{subject_id}'" if subject_id else "this organization"
        raise NotFound(f"No spend limit is set for {where}.")
    reached = await deps.limits.reached(
        ex,
        organization_id=organization_id,
        column="project_id" if subject_id else "",
        subject_id=subject_id,
        budget=Budget("spend", "month", cents),
    )
    return {
        "object": object_name,
        "threshold_amount": cents,
        "currency": "USD",
        "interval": "month",
        "enforcement": {"status": "enforcing" if reached else "inactive"},
    }


def _threshold(body: dict[str, Any]) -> int:
    """OpenAI's body: ``threshold_amount`` (cents ≥ 1), ``currency`` USD, ``interval``
    month, all required."""
    for name in body:
        if name == "notification_channel":  # the SDK's newer field: nothing to reset here
            if body[name] is not None:
                raise InvalidRequest(
                    "'notification_channel' is not supported here; spend alerts notify "
                    "(/v1/organization/spend_alerts).",
                    param=name,
                )
        elif name not in _SPEND_FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    for name in _SPEND_FIELDS:
        if name not in body:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    cents = body["threshold_amount"]
    if not isinstance(cents, int) or isinstance(cents, bool) or not 1 <= cents <= MAX_CENTS:
        raise InvalidRequest(
            f"'threshold_amount' must be a whole number of cents from 1 to {MAX_CENTS}.",
            param="threshold_amount",
        )
    if body["currency"] != "USD":
        raise InvalidRequest("'currency' must be 'USD'.", param="currency")
    if body["interval"] != "month":
        raise InvalidRequest("'interval' must be 'month'.", param="interval")
    return cents


async def _set_spend_limit(
    deps: AdminDeps, call: Admin, subject_id: str, cents: int | None, object_name: str
) -> dict[str, Any]:
    db = call.db
    async with db.acquire() as conn, conn.transaction():
        written = await limits_store.set_budget(
            conn,
            organization_id=call.organization_id,
            column="project_id" if subject_id else None,
            subject_id=subject_id,
            kind="spend",
            period="month",
            amount=cents,
        )
        if cents is None and not written:
            where = f"project '{subject_id}'" if subject_id else "this organization"
            raise NotFound(f"No spend limit is set for {where}.")
        resource_id = subject_id or call.organization_id
        if cents is None:
            await call.record(conn, "spend_limit.deleted", resource_id)
        else:
            asked = {"threshold_amount": cents, "currency": "USD", "interval": "month"}
            await call.record(conn, "spend_limit.updated", resource_id, changes_requested=asked)
    deps.limits.changed(call.organization_id)
    if cents is None:
        return {"object": f"{object_name}.deleted", "deleted": True}
    return await _spend_limit(deps, db, call.organization_id, subject_id, object_name)


async def get_organization_spend_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: The organization's hard spend limit
    description: >-
      Cents a calendar month (UTC), over every project. `enforcement.status` is
      `enforcing` once the month's spend (the usage ledger's, and what this instance's
      limiter has reserved) reaches it: from then on model calls of priced models are
      refused (429 `insufficient_quota`) until the month ends. 404 when none is set.
    tags: [admin]
    responses:
      200: {description: "The organization.spend_limit (threshold_amount in cents)."}
      404: {description: No spend limit is set.}
    """
    call = await admin_call(deps, request, write=False)
    return JSON(
        await _spend_limit(deps, call.db, call.organization_id, "", "organization.spend_limit")
    )


async def update_organization_spend_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create or replace the organization's hard spend limit
    description: Organization owners. Takes effect at once.
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [threshold_amount, currency, interval]
            properties:
              threshold_amount: {type: integer, minimum: 1, description: Cents.}
              currency: {type: string, enum: [USD]}
              interval: {type: string, enum: [month]}
    responses:
      200: {description: "The organization.spend_limit (threshold_amount in cents)."}
      400: {description: A field missing or out of range.}
    """
    call = await admin_call(deps, request, write=True)
    cents = _threshold(await json_body(request))
    return JSON(await _set_spend_limit(deps, call, "", cents, "organization.spend_limit"))


async def delete_organization_spend_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete the organization's hard spend limit
    tags: [admin]
    responses:
      200: {description: "organization.spend_limit.deleted"}
      404: {description: No spend limit is set.}
    """
    call = await admin_call(deps, request, write=True)
    return JSON(await _set_spend_limit(deps, call, "", None, "organization.spend_limit"))


async def get_project_spend_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: A project's hard spend limit
    description: >-
      Cents a calendar month (UTC) for the project's calls, on top of the organization's.
      `enforcement.status` as for the organization's. Organization owners and readers,
      and the project's members. 404 when none is set.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "The project.spend_limit (threshold_amount in cents)."}
      404: {description: "No such project, or no spend limit is set."}
    """
    call = await project_call(deps, request, write=False)
    return JSON(
        await _spend_limit(
            deps, call.db, call.organization_id, call.project_id, "project.spend_limit"
        )
    )


async def update_project_spend_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create or replace a project's hard spend limit
    description: Organization owners only (a project's owners cannot lift it).
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [threshold_amount, currency, interval]
            properties:
              threshold_amount: {type: integer, minimum: 1, description: Cents.}
              currency: {type: string, enum: [USD]}
              interval: {type: string, enum: [month]}
    responses:
      200: {description: "The project.spend_limit (threshold_amount in cents)."}
      400: {description: "A field missing or out of range, or the project is archived."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    cents = _threshold(await json_body(request))
    return JSON(await _set_spend_limit(deps, call, call.project_id, cents, "project.spend_limit"))


async def delete_project_spend_limit(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete a project's hard spend limit
    description: Organization owners only.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "project.spend_limit.deleted"}
      404: {description: "No such project, or no spend limit is set."}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    return JSON(await _set_spend_limit(deps, call, call.project_id, None, "project.spend_limit"))


# --- token budgets (Jan extension) -------------------------------------------------------
async def _token_budget(
    deps: AdminDeps, ex: Executor, organization_id: str, subject_id: str, object_name: str
) -> dict[str, Any]:
    stored = await limits_store.budgets_of(
        ex, organization_id=organization_id, subject_id=subject_id
    )
    by_period = {period: amount for (kind, period), amount in stored.items() if kind == "tokens"}
    reached = False
    for period, amount in by_period.items():
        reached = reached or await deps.limits.reached(
            ex,
            organization_id=organization_id,
            column="project_id" if subject_id else "",
            subject_id=subject_id,
            budget=Budget("tokens", period, amount),
        )
    return {
        "object": object_name,
        **token_budgets(by_period),
        "enforcement": {"status": "enforcing" if reached else "inactive"},
    }


async def _set_token_budgets(
    conn: Executor,
    call: Admin,
    column: limits_store.BudgetColumn | None,
    subject_id: str,
    changes: dict[str, int | None],
) -> None:
    """Change token budgets in the caller's transaction, and record the change."""
    for period, amount in changes.items():
        await limits_store.set_budget(
            conn,
            organization_id=call.organization_id,
            column=column,
            subject_id=subject_id,
            kind="tokens",
            period=period,
            amount=amount,
        )
    if changes:
        await call.record(
            conn,
            "token_budget.updated",
            subject_id or call.organization_id,
            subject=column.removesuffix("_id") if column else "organization",
            changes_requested=changes,
        )


async def get_organization_token_budget(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "The organization's token budgets (Jan extension)"
    description: >-
      Tokens (input and output, every model) the organization may use a calendar day and
      a calendar month (UTC); 0 means none. `enforcement.status` is `enforcing` once one
      is used up: model calls are then refused (429 `insufficient_quota`) until its period
      ends.
    tags: [admin]
    responses:
      200: {description: "The organization.token_budget."}
    """
    call = await admin_call(deps, request, write=False)
    return JSON(
        await _token_budget(deps, call.db, call.organization_id, "", "organization.token_budget")
    )


async def update_organization_token_budget(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set the organization's token budgets (Jan extension)"
    description: >-
      Organization owners. A field left out keeps its value; 0 or `null` removes that
      budget.
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              tokens_per_day:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens (input and output) a calendar day, UTC; 0 or null: none."
              tokens_per_month:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens a calendar month, UTC; 0 or null: none."
    responses:
      200: {description: The organization.token_budget.}
      400: {description: A value out of range or an unknown field.}
    """
    call = await admin_call(deps, request, write=True)
    changes = budget_changes(await json_body(request))
    async with call.db.acquire() as conn, conn.transaction():
        await _set_token_budgets(conn, call, None, "", changes)
    deps.limits.changed(call.organization_id)
    return JSON(
        await _token_budget(deps, call.db, call.organization_id, "", "organization.token_budget")
    )


async def get_project_token_budget(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "A project's token budgets (Jan extension)"
    description: >-
      Tokens the project's calls may use a calendar day and a calendar month (UTC), on top
      of the organization's; `enforcement` as for the organization's. Organization owners
      and readers, and the project's members.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "The project.token_budget."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=False)
    return JSON(
        await _token_budget(
            deps, call.db, call.organization_id, call.project_id, "project.token_budget"
        )
    )


async def update_project_token_budget(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set a project's token budgets (Jan extension)"
    description: >-
      Organization owners only (a project's owners cannot lift them). A field left out
      keeps its value; 0 or `null` removes that budget.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              tokens_per_day:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens (input and output) a calendar day, UTC; 0 or null: none."
              tokens_per_month:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens a calendar month, UTC; 0 or null: none."
    responses:
      200: {description: The project.token_budget.}
      400: {description: "A value out of range, an unknown field, or the project is archived."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    changes = budget_changes(await json_body(request))
    async with call.db.acquire() as conn, conn.transaction():
        await _set_token_budgets(conn, call, "project_id", call.project_id, changes)
    deps.limits.changed(call.organization_id)
    return JSON(
        await _token_budget(
            deps, call.db, call.organization_id, call.project_id, "project.token_budget"
        )
    )


async def update_key_token_budgets(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set an API key's token budgets, over every model (Jan extension)"
    description: >-
      Organization owners and the project's owners. They count the key's calls (a
      service account's key included) on top of the project's and the organization's
      budgets. A field left out keeps its value; 0 or `null` removes that budget.
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
              tokens_per_day:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens (input and output) a calendar day, UTC; 0 or null: none."
              tokens_per_month:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens a calendar month, UTC; 0 or null: none."
    responses:
      200: {description: "The organization.project.api_key, with `token_budgets`."}
      400: {description: A value out of range or an unknown field.}
      404: {description: No such project or key.}
    """
    call = await project_call(deps, request, write=True)
    key_id = request.path_params["key_id"]
    changes = budget_changes(await json_body(request))

    async def load(conn: Executor) -> asyncpg.Record | None:
        return await store.get_project_key(
            conn, organization_id=call.organization_id, project_id=call.project_id, key_id=key_id
        )

    return await _set_subject_budgets(
        deps,
        call,
        changes,
        "api_key_id",
        key_id,
        load=load,
        missing=f"No API key found with id '{key_id}' in this project.",
        render=project_keys.render,
    )


async def update_user_token_budgets(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set a user's token budgets in this organization, over every model (Jan extension)"
    description: >-
      Organization owners. They count the user's own calls and those of the project keys
      the user owns, on top of the projects' and the organization's budgets. A field left
      out keeps its value; 0 or `null` removes that budget.
    tags: [admin]
    parameters:
      - {name: user_id, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              tokens_per_day:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens (input and output) a calendar day, UTC; 0 or null: none."
              tokens_per_month:
                type: integer
                minimum: 0
                nullable: true
                description: "Tokens a calendar month, UTC; 0 or null: none."
    responses:
      200: {description: "The organization.user, with `token_budgets`."}
      400: {description: A value out of range or an unknown field.}
      404: {description: Not a member of this organization.}
    """
    call = await admin_call(deps, request, write=True)
    user_id = request.path_params["user_id"]
    changes = budget_changes(await json_body(request))

    async def load(conn: Executor) -> asyncpg.Record | None:
        return await store.get_organization_user(
            conn, organization_id=call.organization_id, user_id=user_id
        )

    return await _set_subject_budgets(
        deps,
        call,
        changes,
        "user_id",
        user_id,
        load=load,
        missing=f"No user found with id '{user_id}' in this organization.",
        render=users.render,
    )


async def _set_subject_budgets(
    deps: AdminDeps,
    call: Admin,
    changes: dict[str, int | None],
    column: limits_store.BudgetColumn,
    subject_id: str,
    *,
    load: Callable[[Executor], Awaitable[asyncpg.Record | None]],
    missing: str,
    render: Callable[[asyncpg.Record], dict[str, Any]],
) -> Response:
    """Change a key's or user's token budgets (a 404 when ``load`` finds no such object of
    the caller's), and answer the object with its ``rate_limits`` and ``token_budgets``."""
    async with call.db.acquire() as conn, conn.transaction():
        row = found(await load(conn), missing=missing)
        await _set_token_budgets(conn, call, column, subject_id, changes)
        [out] = await attach(
            conn, organization_id=call.organization_id, column=column, objects=[render(row)]
        )
    deps.limits.changed(call.organization_id)
    return JSON(out)


_PROJECT = "/v1/organization/projects/{project_id}"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", "/v1/organization/spend_limit", get_organization_spend_limit),
    Operation("POST", "/v1/organization/spend_limit", update_organization_spend_limit),
    Operation("DELETE", "/v1/organization/spend_limit", delete_organization_spend_limit),
    Operation("GET", _PROJECT + "/spend_limit", get_project_spend_limit),
    Operation("POST", _PROJECT + "/spend_limit", update_project_spend_limit),
    Operation("DELETE", _PROJECT + "/spend_limit", delete_project_spend_limit),
    Operation("GET", "/v1/organization/token_budgets", get_organization_token_budget),
    Operation("POST", "/v1/organization/token_budgets", update_organization_token_budget),
    Operation("GET", _PROJECT + "/token_budgets", get_project_token_budget),
    Operation("POST", _PROJECT + "/token_budgets", update_project_token_budget),
    Operation("POST", _PROJECT + "/api_keys/{key_id}/token_budgets", update_key_token_budgets),
    Operation("POST", "/v1/organization/users/{user_id}/token_budgets", update_user_token_budgets),
]
