"""Model fallbacks (a Jan extension of the Administration API): for a model or an alias,
the models to try in turn when every endpoint of it fails before the first byte — for the
organization (``/v1/organization/model_fallbacks``) and per project
(``/v1/organization/projects/{project_id}/model_fallbacks``: the project's list replaces
the organization's for that name).

A request falls back when the router answers 502, 503 or 504 for its model (every
endpoint failed before the first byte, or a cold one did not wake within
``JAN_UPSTREAM_WARMUP_SECONDS``). The list of the name the caller used applies, else the
list of the model it stands for; each fallback the caller may use is tried in turn (its
aliases resolved), at most 3, none started over 60 s after the request began. Each try is
admitted, charged and recorded in the usage ledger as its own model, so limits and budgets
charge the model that served; the answer names that model and carries
``x-jan-model-fallback`` (the models that failed, comma-separated);
``jan_model_fallbacks_total`` counts the tries.

Who: as for aliases (``functions.admin.model_aliases``): organization owners write the
organization's lists, they and the project's owners a project's; readers and members read.
Changes reach other instances within the catalog's reload (10 s).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import Admin, AdminDeps, admin_call, project_call
from functions.admin.model_aliases import MAX_NAME_LENGTH, model_name, paged
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body
from functions.common.routing import Operation

MAX_LISTS = 100  # per organization and per project
MAX_FALLBACKS = 3  # models per list (functions.services.inference.service tries as many)
_FIELDS = ("model", "fallbacks")


def render(object_name: str, row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": object_name,
        "id": row["model"],
        "model": row["model"],
        "fallbacks": list(row["fallbacks"]),
        "created_at": int(row["created_at"].timestamp()),
        "updated_at": int(row["updated_at"].timestamp()),
    }


def _fallbacks(body: dict[str, Any], model: str) -> list[str]:
    value = body.get("fallbacks")
    if value is None:
        raise InvalidRequest("Missing required parameter: 'fallbacks'.", param="fallbacks")
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= MAX_FALLBACKS
        or not all(
            isinstance(m, str) and m and len(m) <= MAX_NAME_LENGTH and m.isprintable()
            for m in value
        )
        or len(set(value)) != len(value)
        or model in value
    ):
        raise InvalidRequest(
            f"'fallbacks' must be a list of 1 to {MAX_FALLBACKS} distinct model names "
            f"(at most {MAX_NAME_LENGTH} characters each), without the model itself.",
            param="fallbacks",
        )
    return value


async def _list(
    call: Admin, request: Request, project_id: str | None, object_name: str
) -> Response:
    rows = await store.model_fallbacks(
        call.db, organization_id=call.organization_id, project_id=project_id
    )
    return paged(request, [render(object_name, r) for r in rows])


async def _set(deps: AdminDeps, call: Admin, request: Request, project_id: str | None,
               object_name: str) -> Response:  # fmt: skip
    body = await json_body(request)
    for name in body:
        if name not in _FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    model = model_name(body, "model")
    row = await store.set_model_fallbacks(
        call.db,
        organization_id=call.organization_id,
        project_id=project_id,
        model=model,
        fallbacks=_fallbacks(body, model),
        max_lists=MAX_LISTS,
    )
    if row is None:
        raise InvalidRequest(
            f"At most {MAX_LISTS} fallback lists per organization and per project.",
            param="model",
        )
    await deps.providers.changed()  # this instance's catalog applies it now
    return JSON(render(object_name, row))


async def _delete(deps: AdminDeps, call: Admin, request: Request, project_id: str | None,
                  object_name: str) -> Response:  # fmt: skip
    model = request.path_params["model"]
    removed = await store.delete_model_fallbacks(
        call.db, organization_id=call.organization_id, project_id=project_id, model=model
    )
    if not removed:
        raise NotFound(f"No fallback list for model '{model}'.")
    await deps.providers.changed()
    return JSON({"object": f"{object_name}.deleted", "id": model, "deleted": True})


ORG_OBJECT = "organization.model_fallbacks"
PROJECT_OBJECT = "project.model_fallbacks"


async def list_organization_fallbacks(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "The organization's model fallback lists (Jan extension)"
    description: Sorted by model; `after` is a model. Organization owners and readers.
    tags: [admin]
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of organization.model_fallbacks (id: the model)."}
    """
    call = await admin_call(deps, request, write=False)
    return await _list(call, request, None, ORG_OBJECT)


async def set_organization_fallbacks(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set a model's fallback list for the organization (Jan extension)"
    description: >-
      When every endpoint of `model` (a model or an alias) fails before the first byte
      (502, 503 or 504), the request goes to each of `fallbacks` in turn; the answer names
      the model that served and carries `x-jan-model-fallback`. At most 100 lists.
      Organization owners.
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [model, fallbacks]
            properties:
              model: {type: string, maxLength: 256}
              fallbacks:
                type: array
                minItems: 1
                maxItems: 3
                items: {type: string, maxLength: 256}
    responses:
      200: {description: The organization.model_fallbacks.}
      400: {description: "An invalid name or list, an unknown field, or too many lists."}
      403: {description: Not an organization owner.}
    """
    call = await admin_call(deps, request, write=True)
    return await _set(deps, call, request, None, ORG_OBJECT)


async def delete_organization_fallbacks(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Delete a model's organization fallback list (Jan extension)"
    description: Organization owners.
    tags: [admin]
    parameters:
      - {name: model, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "organization.model_fallbacks.deleted"}
      404: {description: No list for this model.}
    """
    call = await admin_call(deps, request, write=True)
    return await _delete(deps, call, request, None, ORG_OBJECT)


async def list_project_fallbacks(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "A project's model fallback lists (Jan extension)"
    description: >-
      The project's own lists (they replace the organization's for the same name).
      Organization owners and readers, and the project's members.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of project.model_fallbacks (id: the model)."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=False)
    return await _list(call, request, call.project_id, PROJECT_OBJECT)


async def set_project_fallbacks(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Set a model's fallback list for a project (Jan extension)"
    description: >-
      As the organization's, for this project's callers only. At most 100 lists.
      Organization owners and the project's owners.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [model, fallbacks]
            properties:
              model: {type: string, maxLength: 256}
              fallbacks:
                type: array
                minItems: 1
                maxItems: 3
                items: {type: string, maxLength: 256}
    responses:
      200: {description: The project.model_fallbacks.}
      400: {description: "An invalid name or list, too many lists, or the project is archived."}
      403: {description: Not an owner of the organization or the project.}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=True)
    return await _set(deps, call, request, call.project_id, PROJECT_OBJECT)


async def delete_project_fallbacks(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "Delete a project's model fallback list (Jan extension)"
    description: Organization owners and the project's owners.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: model, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "project.model_fallbacks.deleted"}
      404: {description: "No such project, or no list for this model."}
    """
    call = await project_call(deps, request, write=True)
    return await _delete(deps, call, request, call.project_id, PROJECT_OBJECT)


ORG_PATH = "/v1/organization/model_fallbacks"
PROJECT_PATH = "/v1/organization/projects/{project_id}/model_fallbacks"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", ORG_PATH, list_organization_fallbacks),
    Operation("POST", ORG_PATH, set_organization_fallbacks),
    Operation("DELETE", ORG_PATH + "/{model}", delete_organization_fallbacks,
              match=ORG_PATH + "/{model:path}"),
    Operation("GET", PROJECT_PATH, list_project_fallbacks),
    Operation("POST", PROJECT_PATH, set_project_fallbacks),
    Operation("DELETE", PROJECT_PATH + "/{model}", delete_project_fallbacks,
              match=PROJECT_PATH + "/{model:path}"),
]  # fmt: skip
