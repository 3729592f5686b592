"""`/v1/organization/projects/{id}/priority` (a Jan extension): a project's scheduling
priority on shared model servers.

The priority is forwarded with each of the project's model requests as vLLM's ``priority``
body field to the providers that declare they take it (``options.priority``; vLLM started
with ``--scheduling-policy priority``): lower runs first, as vLLM orders it, so an
interactive project at -10 outranks batch work at 10 on one pool. To such a provider a
project without one sends 0 (vLLM's default), and whatever ``priority`` a client put in
its body is replaced: the project's setting, not the caller, decides. Other providers get
no ``priority`` from the gateway.

Organization owners change it (and admin keys); readers and the project's members read.
A change applies like a key's deletion: at once on this instance, within 5 s elsewhere,
at once with Redis (it rides on the cached principal). Written as OpenAI's
``project.updated`` audit event.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import AdminDeps, project_call
from functions.common.errors import InvalidRequest
from functions.common.http import JSON, json_body
from functions.common.routing import Operation

OBJECT = "project.priority"
LOWEST, HIGHEST = -1_000_000, 1_000_000  # what the column's CHECK allows


def render(project_id: str, priority: int | None) -> dict[str, Any]:
    return {"object": OBJECT, "project_id": project_id, "priority": priority}


def _priority(body: dict[str, Any]) -> int | None:
    if "priority" not in body:
        raise InvalidRequest("Missing required parameter: 'priority'.", param="priority")
    unknown = next((k for k in body if k != "priority"), None)
    if unknown is not None:
        raise InvalidRequest(f"Unknown parameter: '{unknown}'.", param=unknown)
    value = body["priority"]
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not LOWEST <= value <= HIGHEST
    ):
        raise InvalidRequest(
            f"'priority' must be an integer from {LOWEST} to {HIGHEST}, or null.",
            param="priority",
        )
    return value


async def get_priority(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a project's scheduling priority (Jan extension)
    description: >
      The priority forwarded as vLLM's `priority` to the providers that declare they take
      it (`options.priority`); lower runs first; `null`: none (0 is sent).
    tags: [admin]
    responses:
      200: {description: "The project.priority object: `{object, project_id, priority}`."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    return JSON(render(call.project_id, call.project["priority"]))


async def update_priority(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Set a project's scheduling priority (Jan extension; organization owners)
    description: >
      `priority`: an integer (vLLM's order: lower runs first; an interactive project at
      -10 outranks batch work at 10 on the same engines), or `null` to remove it. Applies
      at once on this instance, within 5 s on the others (at once with Redis); refused on
      an archived project (400).
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [priority]
            properties:
              priority: {type: integer, minimum: -1000000, maximum: 1000000, nullable: true}
    responses:
      200: {description: "The updated project.priority object."}
      400: {description: "Not an integer in range, or the project is archived."}
      403: {description: Not an organization owner.}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    priority = _priority(await json_body(request))
    async with call.db.acquire() as conn, conn.transaction():
        await store.set_project_priority(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            priority=priority,
        )
        await call.record(
            conn, "project.updated", call.project_id, changes_requested={"priority": priority}
        )
    await call.identity.revoke_all()  # cached principals carry the old priority
    return JSON(render(call.project_id, priority))


_PATH = "/v1/organization/projects/{project_id}/priority"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _PATH, get_priority),
    Operation("POST", _PATH, update_priority),
]
