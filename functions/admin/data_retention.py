"""`/v1/organization/data_retention` and `/v1/organization/projects/{id}/data_retention`:
OpenAI's data retention controls, and Jan's retention periods per kind of data.

``zero_data_retention`` (and ``enhanced_zero_data_retention``) store no prompt or output:
Responses are computed but not stored (as with ``store: false``), and conversations,
conversation items, background responses and ``previous_response_id`` are refused (400,
``zero_data_retention``); the usage ledger, which holds counts and never content, goes on.
The other types (and Jan's ``none``, the default) store as usual. A project's own type
wins over the organization's (``organization_default`` follows it). A change applies like
a key's deletion: at once on this instance, within 5 s elsewhere, at once with Redis.

Jan extension: ``retention_days``, how long each kind of data is kept (``responses``,
``conversation_items``, ``usage_detail``: the ledger's per-request rows, its hourly
rollups stay; ``audit_log``), 0 for ever; ``null`` in a change returns to the server's
default (``JAN_RETENTION_*_DAYS``). Housekeeping deletes what is past its period.

Organization owners change them (and admin keys); readers and a project's members read.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin.call import AdminDeps, admin_call, choice_field, project_call
from functions.common.errors import InvalidRequest
from functions.common.http import JSON, json_body
from functions.common.routing import Operation
from functions.services import retention
from functions.services.retention import store


def _periods(deps: AdminDeps, row: asyncpg.Record | None) -> dict[str, Any]:
    defaults = retention.default_days(deps.runtime.settings)
    out = {}
    for kind, column in store.PERIOD_COLUMNS.items():
        own = row[column] if row is not None else None
        out[kind] = {
            "days": defaults[kind] if own is None else own,
            "source": "default" if own is None else "organization",
        }
    return out


def render_organization(deps: AdminDeps, row: asyncpg.Record | None) -> dict[str, Any]:
    return {
        "object": "organization.data_retention",
        "type": row["retention_type"] if row is not None else "none",
        "retention_days": _periods(deps, row),
    }


def _days(body: dict[str, Any]) -> dict[str, int | None]:
    value = body.get("retention_days")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("'retention_days' must be an object.", param="retention_days")
    changes: dict[str, int | None] = {}
    for kind, days in value.items():
        param = f"retention_days.{kind}"
        if kind not in store.PERIOD_COLUMNS:
            raise InvalidRequest(
                f"'retention_days' takes {', '.join(store.PERIOD_COLUMNS)}.", param=param
            )
        least = retention.MIN_AUDIT_LOG_DAYS if kind == "audit_log" else 1
        if days is not None and (
            not isinstance(days, int)
            or isinstance(days, bool)
            or not (days == 0 or least <= days <= retention.MAX_DAYS)
        ):
            raise InvalidRequest(
                f"'{param}' must be 0 (kept for ever), from {least} to {retention.MAX_DAYS}, "
                "or null (the server's default).",
                param=param,
            )
        changes[kind] = days
    return changes


async def get_organization_retention(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve the organization's data retention controls
    description: >
      OpenAI's `type` (Jan's default, storing as usual, is `none`) and, a Jan extension,
      `retention_days`: for `responses`, `conversation_items`, `usage_detail` (the usage
      ledger's per-request rows; its hourly rollups, which usage and costs answer from,
      stay) and `audit_log`, the days they are kept (0: for ever) and whether that is the
      organization's own value or the server's default.
    tags: [admin]
    responses:
      200: {description: "The organization.data_retention object."}
    """
    call = await admin_call(deps, request, write=False)
    row = await store.get_organization(call.db, organization_id=call.organization_id)
    return JSON(render_organization(deps, row))


async def update_organization_retention(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Update the organization's data retention controls (organization owners)
    description: >
      `retention_type` as OpenAI's (`zero_data_retention` and
      `enhanced_zero_data_retention`: no prompt or output is stored; Jan's `none` returns
      to storing as usual); Jan's `retention_days` changes the periods it names (0: kept
      for ever; the audit log at least 30 days; `null`: the server's default). One of the
      two is required. Takes effect at once on this instance, within 5 s on the others (at
      once with Redis); what is past a period is deleted by housekeeping in batches.
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            properties:
              retention_type:
                type: string
                enum: [zero_data_retention, enhanced_zero_data_retention,
                       modified_abuse_monitoring, enhanced_modified_abuse_monitoring, none]
              retention_days:
                type: object
                properties:
                  responses: {type: integer, minimum: 0, nullable: true}
                  conversation_items: {type: integer, minimum: 0, nullable: true}
                  usage_detail: {type: integer, minimum: 0, nullable: true}
                  audit_log: {type: integer, minimum: 0, nullable: true}
    responses:
      200: {description: "The updated organization.data_retention object."}
      400: {description: "An unknown type, or a period out of range."}
      403: {description: Not an organization owner.}
    """
    call = await admin_call(deps, request, write=True)
    body = await json_body(request)
    kind = None
    if "retention_type" in body or "retention_days" not in body:
        kind = choice_field(body, "retention_type", retention.ORGANIZATION_TYPES)
    periods = _days(body)
    async with call.db.acquire() as conn, conn.transaction():
        row = await store.set_organization(
            conn, organization_id=call.organization_id, retention_type=kind, periods=periods
        )
        asked: dict[str, Any] = {"retention_type": kind} if kind is not None else {}
        if periods:
            asked["retention_days"] = periods
        await call.record(
            conn, "data_retention.updated", call.organization_id, changes_requested=asked
        )
    await call.identity.revoke_all()  # cached principals carry the old type
    return JSON(render_organization(deps, row))


def render_project(kind: str | None) -> dict[str, Any]:
    return {"object": "project.data_retention", "type": kind or "organization_default"}


async def get_project_retention(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a project's data retention control
    description: >
      The project's own `type`, or `organization_default` (the organization's applies).
    tags: [admin]
    responses:
      200: {description: "The project.data_retention object."}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=False)
    kind = await store.get_project(
        call.db, organization_id=call.organization_id, project_id=call.project_id
    )
    return JSON(render_project(kind))


async def update_project_retention(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Update a project's data retention control (organization owners)
    description: >
      `zero_data_retention` (or `enhanced_zero_data_retention`): the project stores no
      prompt or output whatever the organization's type; `none` (and the abuse-monitoring
      types): it stores as usual; `organization_default`: it follows the organization.
      Only organization owners and admin keys (403 otherwise); refused on an archived
      project (400).
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [retention_type]
            properties:
              retention_type:
                type: string
                enum: [organization_default, none, zero_data_retention,
                       enhanced_zero_data_retention, modified_abuse_monitoring,
                       enhanced_modified_abuse_monitoring]
    responses:
      200: {description: "The updated project.data_retention object."}
      400: {description: "An unknown type, or the project is archived."}
      403: {description: Not an organization owner.}
      404: {description: No such project in this organization.}
    """
    call = await project_call(deps, request, write=True, org_owners_only=True)
    chosen = choice_field(await json_body(request), "retention_type", retention.PROJECT_TYPES)
    kind = None if chosen == "organization_default" else chosen
    async with call.db.acquire() as conn, conn.transaction():
        await store.set_project(
            conn,
            organization_id=call.organization_id,
            project_id=call.project_id,
            retention_type=kind,
        )
        await call.record(
            conn,
            "data_retention.updated",
            call.project_id,
            changes_requested={"retention_type": chosen},
        )
    await call.identity.revoke_all()
    return JSON(render_project(kind))


_PROJECT = "/v1/organization/projects/{project_id}/data_retention"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", "/v1/organization/data_retention", get_organization_retention),
    Operation("POST", "/v1/organization/data_retention", update_organization_retention),
    Operation("GET", _PROJECT, get_project_retention),
    Operation("POST", _PROJECT, update_project_retention),
]
