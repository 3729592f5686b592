"""`/v1/organization/projects/{project_id}/model_permissions`: which models a project may
use, in OpenAI's shape (`project.model_permissions`): an ``allow_list`` (only these model
IDs) or a ``deny_list`` (every model but these). A project without one may use every model
its providers serve (shown as an empty deny list); deleting it goes back to that.

Who: as in OpenAI, where these operations take an admin key, only organization owners (and
admin keys) change them; project owners cannot, so an organization's policy cannot be
lifted from inside the project. Organization readers and the project's members read them
(members see the result in `/v1/models` anyway). Another organization's project is a 404.

Enforcement: the permissions travel with the caller's principal, resolved with it and
cached like it (``functions.services.identity``), so every model call (chat completions,
completions, embeddings, responses) and `/v1/models` check them in O(1) without a query; a
denied model answers like an unknown one (404 ``model_not_found``), the built-in models
included. With a key's own ``allowed_models`` the caller gets the intersection. A change
revokes the cached principals: it applies at once on the instance that made it, at once on
every instance with Redis, and within 5 s without. Background responses already queued run
with the permissions they were created under.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import AdminDeps, choice_field, project_call
from functions.common.errors import InvalidRequest
from functions.common.http import JSON, json_body
from functions.common.routing import Operation

MODES = ("allow_list", "deny_list")
MAX_MODEL_IDS = 1000
MAX_MODEL_ID_LENGTH = 256


def render(mode: str, model_ids: Sequence[str]) -> dict[str, Any]:
    return {"object": "project.model_permissions", "mode": mode, "model_ids": list(model_ids)}


def _model_ids(body: dict[str, Any]) -> list[str]:
    value = body.get("model_ids")
    if value is None:
        raise InvalidRequest("Missing required parameter: 'model_ids'.", param="model_ids")
    if (
        not isinstance(value, list)
        or len(value) > MAX_MODEL_IDS
        or not all(isinstance(m, str) and 0 < len(m) <= MAX_MODEL_ID_LENGTH for m in value)
    ):
        raise InvalidRequest(
            f"'model_ids' must be a list of at most {MAX_MODEL_IDS} model IDs "
            f"(non-empty strings of at most {MAX_MODEL_ID_LENGTH} characters).",
            param="model_ids",
        )
    return list(dict.fromkeys(value))  # without repeats, in the caller's order


async def retrieve_permissions(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a project's model permissions
    description: >-
      The project's `allow_list` (only these models) or `deny_list` (every model but
      these). A project without permissions may use every model its providers serve and
      shows an empty `deny_list`. Organization owners and readers, and the project's
      members, may read them.
    tags: [admin]
    responses:
      200:
        description: "The project.model_permissions object."
        content:
          application/json:
            schema:
              type: object
              required: [object, mode, model_ids]
              properties:
                object: {type: string, enum: [project.model_permissions]}
                mode: {type: string, enum: [allow_list, deny_list]}
                model_ids: {type: array, items: {type: string}}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    row = await store.get_model_permissions(
        call.db, organization_id=call.organization_id, project_id=call.project_id
    )
    if row is None:
        return JSON(render("deny_list", []))
    return JSON(render(row["mode"], row["model_ids"]))


async def update_permissions(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Set a project's model permissions (organization owners)
    description: >-
      Replaces the project's model permissions. `allow_list`: the project's callers may use
      only these models (an empty list: none); `deny_list`: every model but these. A key's
      own `allowed_models` still applies: its callers get the intersection. Denied models
      answer 404 `model_not_found` on every model API and are absent from `/v1/models`.
      Takes effect at once on the instance that made the change, on every instance at once
      with Redis (`REDIS_URL`), and within 5 s without. Only organization owners and admin
      keys may change them (403 otherwise); refused on an archived project (400).
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [mode, model_ids]
            properties:
              mode: {type: string, enum: [allow_list, deny_list]}
              model_ids:
                type: array
                maxItems: 1000
                items: {type: string, minLength: 1, maxLength: 256}
    responses:
      200:
        description: "The updated project.model_permissions object."
        content:
          application/json:
            schema:
              type: object
              required: [object, mode, model_ids]
              properties:
                object: {type: string, enum: [project.model_permissions]}
                mode: {type: string, enum: [allow_list, deny_list]}
                model_ids: {type: array, items: {type: string}}
      400: {description: "Invalid body, or the project is archived."}
      403: {description: Not an organization owner.}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    body = await json_body(request)
    mode = choice_field(body, "mode", MODES)
    model_ids = _model_ids(body)
    async with call.db.acquire() as conn, conn.transaction():
        row = await store.set_model_permissions(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            mode=mode,
            model_ids=model_ids,
        )
        await call.record(
            conn,
            "model_permissions.updated",
            call.project_id,
            changes_requested={"mode": mode, "model_ids": model_ids},
        )
    await call.identity.revoke_all()  # cached principals carry the old permissions
    return JSON(render(row["mode"], row["model_ids"]))


async def delete_permissions(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete a project's model permissions (organization owners)
    description: >-
      The project may use every model its providers serve again. `deleted` says whether
      the project had permissions. Only organization owners and admin keys (403
      otherwise); refused on an archived project (400).
    tags: [admin]
    responses:
      200:
        description: "project.model_permissions.deleted"
        content:
          application/json:
            schema:
              type: object
              required: [object, deleted]
              properties:
                object: {type: string, enum: [project.model_permissions.deleted]}
                deleted: {type: boolean}
      400: {description: The project is archived.}
      403: {description: Not an organization owner.}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    async with call.db.acquire() as conn, conn.transaction():
        gone = await store.delete_model_permissions(
            conn, organization_id=call.organization_id, project_id=call.project_id
        )
        if gone:
            await call.record(conn, "model_permissions.deleted", call.project_id)
    if gone:
        await call.identity.revoke_all()
    return JSON({"object": "project.model_permissions.deleted", "deleted": gone})


_PATH = "/v1/organization/projects/{project_id}/model_permissions"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _PATH, retrieve_permissions),
    Operation("POST", _PATH, update_permissions),
    Operation("DELETE", _PATH, delete_permissions),
]
