"""Model prices (a Jan extension of the Administration API): what a model's tokens cost, in
USD per 1M tokens — input, cached input and output — for the organization
(``/v1/organization/model_prices``) and overridden per project
(``/v1/organization/projects/{project_id}/model_prices``: the project's row replaces the
organization's for that model).

The usage ledger records each call's cost at the price in force when it was made
(``functions.services.pricing``), so a change never rewrites history; costs
(``/v1/organization/costs``), spend limits and spend alerts count those recorded costs. A
model without a price costs nothing.

Who: organization owners (and admin keys) set prices, the organization's and projects'
(spend limits depend on them: a project's owners cannot lower its prices); readers and a
project's members read. A change applies at once on this instance and within
``JAN_RATE_LIMIT_REFRESH_SECONDS`` on the others.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import Admin, AdminDeps, admin_call, project_call
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body
from functions.common.pagination import Page, limit_param, list_page
from functions.common.routing import Operation

MAX_PRICE = Decimal("999999999999.999999")  # numeric(18, 6)
MAX_MODEL_LENGTH = 256
_FIELDS = ("model", "input", "cached_input", "output")


def render(object_name: str, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": object_name,
        "id": row["model"],
        "model": row["model"],
        "input": float(row["input"]),
        "cached_input": float(row["cached_input"]) if row["cached_input"] is not None else None,
        "output": float(row["output"]),
        "currency": "usd",
        "created_at": int(row["created_at"].timestamp()),
        "updated_at": int(row["updated_at"].timestamp()),
    }


def _price(body: dict[str, Any], name: str, *, required: bool) -> Decimal | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return None
    problem = (
        f"'{name}' must be a number of USD per 1M tokens from 0 to {MAX_PRICE}, "
        "with at most 6 decimals."
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(problem, param=name)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(problem, param=name)
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(problem, param=name) from None
    exponent = price.as_tuple().exponent
    if price < 0 or price > MAX_PRICE or (isinstance(exponent, int) and exponent < -6):
        raise InvalidRequest(problem, param=name)
    return price


async def _list(
    call: Admin, request: Request, project_id: str | None, object_name: str
) -> Response:
    page = Page.of(request, default_order="asc")
    limit = limit_param(request, default=100)
    rows = await store.model_prices(
        call.db, organization_id=call.organization_id, project_id=project_id
    )
    items = [render(object_name, r) for r in rows]
    if page.order == "desc":
        items.reverse()
    after = page.after
    if after is not None:
        if page.order == "asc":
            items = [i for i in items if i["id"] > after]
        else:
            items = [i for i in items if i["id"] < after]
    return JSON(list_page(items[:limit], has_more=len(items) > limit))


async def _set(deps: AdminDeps, call: Admin, request: Request, project_id: str | None,
               object_name: str) -> Response:  # fmt: skip
    body = await json_body(request)
    for name in body:
        if name not in _FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_LENGTH:
        raise InvalidRequest(
            f"'model' must be a model ID of 1 to {MAX_MODEL_LENGTH} characters.", param="model"
        )
    input_price = _price(body, "input", required=True)
    cached = _price(body, "cached_input", required=False)
    output = _price(body, "output", required=True)
    assert input_price is not None and output is not None
    row = await store.set_model_price(
        call.db,
        organization_id=call.organization_id,
        project_id=project_id,
        model=model,
        input=input_price,
        cached_input=cached,
        output=output,
    )
    deps.limits.changed(call.organization_id)
    return JSON(render(object_name, row))


async def _delete(deps: AdminDeps, call: Admin, request: Request, project_id: str | None,
                  object_name: str) -> Response:  # fmt: skip
    model = request.path_params["model"]
    removed = await store.delete_model_price(
        call.db, organization_id=call.organization_id, project_id=project_id, model=model
    )
    if not removed:
        raise NotFound(f"No price is set for model '{model}'.")
    deps.limits.changed(call.organization_id)
    return JSON({"object": f"{object_name}.deleted", "id": model, "deleted": True})


ORG_OBJECT = "organization.model_price"
PROJECT_OBJECT = "project.model_price"


async def list_organization_prices(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "The organization's model prices (Jan extension)"
    description: >-
      USD per 1M tokens for each priced model, sorted by model; `after` is a model ID.
    tags: [admin]
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of organization.model_price (id: the model)."}
    """
    call = await admin_call(deps, request, write=False)
    return await _list(call, request, None, ORG_OBJECT)


async def set_organization_price(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set a model's price for the organization (Jan extension)"
    description: >-
      Creates or replaces it. Calls made from now on record their cost at this price.
      Organization owners.
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [model, input, output]
            properties:
              model: {type: string, maxLength: 256}
              input:
                type: number
                minimum: 0
                description: "USD per 1M input tokens, 6 decimals at most."
              cached_input:
                type: number
                minimum: 0
                nullable: true
                description: "USD per 1M cached input tokens; null or absent: as input."
              output: {type: number, minimum: 0, description: "USD per 1M output tokens."}
    responses:
      200: {description: The organization.model_price.}
      400: {description: A price out of range or an unknown field.}
    """
    call = await admin_call(deps, request, write=True)
    return await _set(deps, call, request, None, ORG_OBJECT)


async def delete_organization_price(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Delete a model's organization price (Jan extension)"
    description: Its calls cost nothing from now on (project overrides stay). Organization owners.
    tags: [admin]
    parameters:
      - {name: model, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "organization.model_price.deleted"}
      404: {description: No price is set for this model.}
    """
    call = await admin_call(deps, request, write=True)
    return await _delete(deps, call, request, None, ORG_OBJECT)


async def list_project_prices(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "A project's model price overrides (Jan extension)"
    description: >-
      The prices that replace the organization's for this project's calls, sorted by
      model. Organization owners and readers, and the project's members.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of project.model_price (id: the model)."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=False)
    return await _list(call, request, call.project_id, PROJECT_OBJECT)


async def set_project_price(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Override a model's price for a project (Jan extension)"
    description: Organization owners only (a project's owners cannot change what it spends).
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [model, input, output]
            properties:
              model: {type: string, maxLength: 256}
              input:
                type: number
                minimum: 0
                description: "USD per 1M input tokens, 6 decimals at most."
              cached_input:
                type: number
                minimum: 0
                nullable: true
                description: "USD per 1M cached input tokens; null or absent: as input."
              output: {type: number, minimum: 0, description: "USD per 1M output tokens."}
    responses:
      200: {description: The project.model_price.}
      400: {description: "A price out of range, an unknown field, or the project is archived."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    return await _set(deps, call, request, call.project_id, PROJECT_OBJECT)


async def delete_project_price(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Delete a project's price override (Jan extension)"
    description: The organization's price applies again. Organization owners only.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: model, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "project.model_price.deleted"}
      404: {description: "No such project, or no override for this model."}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    return await _delete(deps, call, request, call.project_id, PROJECT_OBJECT)


ORG_PATH = "/v1/organization/model_prices"
PROJECT_PATH = "/v1/organization/projects/{project_id}/model_prices"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", ORG_PATH, list_organization_prices),
    Operation("POST", ORG_PATH, set_organization_price),
    Operation("DELETE", ORG_PATH + "/{model}", delete_organization_price,
              match=ORG_PATH + "/{model:path}"),
    Operation("GET", PROJECT_PATH, list_project_prices),
    Operation("POST", PROJECT_PATH, set_project_price),
    Operation("DELETE", PROJECT_PATH + "/{model}", delete_project_price,
              match=PROJECT_PATH + "/{model:path}"),
]  # fmt: skip
