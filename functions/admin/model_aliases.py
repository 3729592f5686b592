"""Model aliases (a Jan extension of the Administration API): a name callers use for a
model — `default`, or `gpt-4o` for `qwen3-8b` — for the organization
(``/v1/organization/model_aliases``) and per project
(``/v1/organization/projects/{project_id}/model_aliases``: the project's alias replaces the
organization's of the same name).

An alias resolves before anything else looks at the model: permissions, rate limits,
budgets, prices, routing and the usage ledger see the model it names, and the upstream is
sent that model, so answers name the model that served. One step only: an alias's target is
never resolved again, so an alias may take over the name of the model it replaces
(``qwen3-8b`` → ``qwen3-8b-v2``). ``/v1/models`` lists each alias whose model the caller may
use, with ``jan_alias_of`` naming the model.

Who: organization owners (and admin keys) write the organization's, they and the project's
owners a project's; readers and a project's members read. A change applies at once on the
instance that made it and within the model catalog's reload (10 s) on the others; a name
that is neither an alias nor a model reloads at once (at most every 2 s).
"""

from __future__ import annotations

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

MAX_ALIASES = 100  # per organization and per project
MAX_NAME_LENGTH = 256
_FIELDS = ("alias", "model")


def render(object_name: str, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": object_name,
        "id": row["alias"],
        "alias": row["alias"],
        "model": row["model"],
        "created_at": int(row["created_at"].timestamp()),
        "updated_at": int(row["updated_at"].timestamp()),
    }


def model_name(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    if not isinstance(value, str) or not value or value != value.strip() or not value.isprintable():
        raise InvalidRequest(
            f"'{name}' must be a model name without surrounding spaces or control characters.",
            param=name,
        )
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"'{name}' must be at most {MAX_NAME_LENGTH} characters.", param=name)
    return value


def paged(request: Request, items: list[dict[str, Any]]) -> Response:
    """A list page of ``items`` (sorted by ``id``) as the request's ``after``, ``limit``
    and ``order`` ask."""
    page = Page.of(request, default_order="asc")
    limit = limit_param(request, default=100)
    if page.order == "desc":
        items.reverse()
    after = page.after
    if after is not None:
        if page.order == "asc":
            items = [i for i in items if i["id"] > after]
        else:
            items = [i for i in items if i["id"] < after]
    return JSON(list_page(items[:limit], has_more=len(items) > limit))


async def _list(
    call: Admin, request: Request, project_id: str | None, object_name: str
) -> Response:
    rows = await store.model_aliases(
        call.db, organization_id=call.organization_id, project_id=project_id
    )
    return paged(request, [render(object_name, r) for r in rows])


async def _set(deps: AdminDeps, call: Admin, request: Request, project_id: str | None,
               object_name: str) -> Response:  # fmt: skip
    body = await json_body(request)
    for name in body:
        if name not in _FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    alias, model = model_name(body, "alias"), model_name(body, "model")
    if alias == model:
        raise InvalidRequest("An alias cannot name itself.", param="model")
    row = await store.set_model_alias(
        call.db,
        organization_id=call.organization_id,
        project_id=project_id,
        alias=alias,
        model=model,
        max_aliases=MAX_ALIASES,
    )
    if row is None:
        raise InvalidRequest(
            f"At most {MAX_ALIASES} aliases per organization and per project; delete one first.",
            param="alias",
        )
    await deps.providers.changed()  # this instance's catalog applies it now
    return JSON(render(object_name, row))


async def _delete(deps: AdminDeps, call: Admin, request: Request, project_id: str | None,
                  object_name: str) -> Response:  # fmt: skip
    alias = request.path_params["alias"]
    removed = await store.delete_model_alias(
        call.db, organization_id=call.organization_id, project_id=project_id, alias=alias
    )
    if not removed:
        raise NotFound(f"No model alias named '{alias}'.")
    await deps.providers.changed()
    return JSON({"object": f"{object_name}.deleted", "id": alias, "deleted": True})


ORG_OBJECT = "organization.model_alias"
PROJECT_OBJECT = "project.model_alias"


async def list_organization_aliases(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "The organization's model aliases (Jan extension)"
    description: >-
      Each alias with the model it names, sorted by alias; `after` is an alias.
      Organization owners and readers.
    tags: [admin]
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of organization.model_alias (id: the alias)."}
    """
    call = await admin_call(deps, request, write=False)
    return await _list(call, request, None, ORG_OBJECT)


async def set_organization_alias(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Create or retarget a model alias for the organization (Jan extension)"
    description: >-
      Callers of every project may name `alias` where a model is expected; permissions,
      limits, prices, routing and the usage ledger see `model`, and answers name it. An
      alias replaces a model of the same name (one step: `model` is never an alias).
      At once on this instance, within 10 s on the others. At most 100. Organization owners.
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [alias, model]
            properties:
              alias: {type: string, maxLength: 256, description: "The name callers use."}
              model: {type: string, maxLength: 256, description: "The model it names."}
    responses:
      200: {description: The organization.model_alias.}
      400: {description: "A missing or invalid name, an unknown field, or too many aliases."}
      403: {description: Not an organization owner.}
    """
    call = await admin_call(deps, request, write=True)
    return await _set(deps, call, request, None, ORG_OBJECT)


async def delete_organization_alias(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Delete an organization's model alias (Jan extension)"
    description: Organization owners.
    tags: [admin]
    parameters:
      - {name: alias, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "organization.model_alias.deleted"}
      404: {description: No such alias.}
    """
    call = await admin_call(deps, request, write=True)
    return await _delete(deps, call, request, None, ORG_OBJECT)


async def list_project_aliases(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "A project's model aliases (Jan extension)"
    description: >-
      The project's own aliases (they replace the organization's of the same name), sorted
      by alias. Organization owners and readers, and the project's members.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of project.model_alias (id: the alias)."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=False)
    return await _list(call, request, call.project_id, PROJECT_OBJECT)


async def set_project_alias(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Create or retarget a model alias for a project (Jan extension)"
    description: >-
      As the organization's, for this project's callers only, replacing an organization
      alias of the same name. At most 100 per project. Organization owners and the
      project's owners.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [alias, model]
            properties:
              alias: {type: string, maxLength: 256, description: "The name callers use."}
              model: {type: string, maxLength: 256, description: "The model it names."}
    responses:
      200: {description: The project.model_alias.}
      400: {description: "An invalid name or field, too many aliases, or the project is archived."}
      403: {description: Not an owner of the organization or the project.}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=True)
    return await _set(deps, call, request, call.project_id, PROJECT_OBJECT)


async def delete_project_alias(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Delete a project's model alias (Jan extension)"
    description: Organization owners and the project's owners.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: alias, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "project.model_alias.deleted"}
      404: {description: "No such project, or no such alias."}
    """
    call = await project_call(deps, request, write=True)
    return await _delete(deps, call, request, call.project_id, PROJECT_OBJECT)


ORG_PATH = "/v1/organization/model_aliases"
PROJECT_PATH = "/v1/organization/projects/{project_id}/model_aliases"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", ORG_PATH, list_organization_aliases),
    Operation("POST", ORG_PATH, set_organization_alias),
    Operation("DELETE", ORG_PATH + "/{alias}", delete_organization_alias,
              match=ORG_PATH + "/{alias:path}"),
    Operation("GET", PROJECT_PATH, list_project_aliases),
    Operation("POST", PROJECT_PATH, set_project_alias),
    Operation("DELETE", PROJECT_PATH + "/{alias}", delete_project_alias,
              match=PROJECT_PATH + "/{alias:path}"),
]  # fmt: skip
