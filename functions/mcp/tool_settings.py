"""``/v1/mcp/settings``: which tools the caller's project may use, and its daily quota.

Anyone acting in the project reads them; project owners and organization owners change
them. The same settings govern MCP calls and server-side tools in Responses.

The quota is bounded (see ``daily_quota``, which computes what applies): the operator's
ceiling (JAN_TOOL_CALLS_PER_DAY_MAX) for everyone; what an organization owner set is the
ceiling for the project's owners, who may only stay at or below it; 0 (unlimited) only by
an organization owner where the operator allows it; guests at most
JAN_GUEST_TOOL_CALLS_PER_DAY. A quota nobody may set is a 400; one only someone with more
power may set is a 403.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.common.db import Executor
from functions.common.errors import Forbidden, InvalidRequest
from functions.common.http import JSON, json_body
from functions.common.principal import Principal, require_project
from functions.mcp.deps import MCPDeps
from functions.services import audit
from functions.services.toolbox import store
from functions.services.toolbox.base import ToolLimits
from functions.services.toolbox.toolbox import FAMILIES, daily_quota, enabled_specs

MAX_QUOTA = 10_000_000


async def get_settings(deps: MCPDeps, request: Request) -> Response:
    """
    summary: Tool settings of the caller's project
    tags: [mcp]
    responses:
      200:
        description: The project's tool settings.
        content: {application/json: {schema: {type: object}}}
      401: {description: Missing or invalid credential.}
    """
    principal = await deps.identity.authenticate(request)
    project_id = require_project(principal)
    runtime = deps.runtime
    async with runtime.db.writer.acquire() as conn:
        saved = await store.get_settings(
            conn, organization_id=principal.organization_id, project_id=project_id
        )
        return JSON(await _render(conn, deps, principal, project_id, saved))


async def update_settings(deps: MCPDeps, request: Request) -> Response:
    """
    summary: Change the tool settings of the caller's project
    description: >
      Fields left out are unchanged (a change is recorded in the organization's audit
      log, `tool_settings.updated`). enabled_tools lists tool families (web_search,
      fetch); null enables all. daily_call_quota null follows the organization owner's
      value, else the server default; 0 is unlimited. Project owners and organization
      owners only. An organization owner's daily_call_quota (at most the server's ceiling;
      0 only where the server allows unlimited) is also the most the project's owners may
      set; guests may only lower theirs.
    tags: [mcp]
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              enabled_tools:
                type: array
                items: {type: string, enum: [web_search, fetch]}
                nullable: true
              daily_call_quota: {type: integer, minimum: 0, nullable: true}
    responses:
      200:
        description: The project's tool settings after the change.
        content: {application/json: {schema: {type: object}}}
      400: {description: "Invalid settings, or a quota above the server's ceiling."}
      403: {description: "Not an owner of the project, or a quota above the caller's ceiling."}
    """
    principal = await deps.identity.authenticate(request)
    project_id = require_project(principal)
    if principal.kind != "user" or "owner" not in (principal.project_role, principal.org_role):
        raise Forbidden("Only project owners and organization owners change tool settings.")
    body = await json_body(request)
    runtime = deps.runtime
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        current = await store.get_settings(
            conn, organization_id=principal.organization_id, project_id=project_id, lock=True
        )
        quota, ceiling = current.daily_call_quota, current.daily_call_quota_ceiling
        if "daily_call_quota" in body:
            quota = _quota(body["daily_call_quota"])
            _check_quota(deps.toolbox.limits, current, principal, quota)
            if _org_owner(principal):
                ceiling = quota  # what the project's owners may not exceed
        changed = store.ProjectToolSettings(
            enabled_tools=_enabled(body["enabled_tools"])
            if "enabled_tools" in body
            else current.enabled_tools,
            daily_call_quota=quota,
            daily_call_quota_ceiling=ceiling,
        )
        await store.put_settings(
            conn,
            organization_id=principal.organization_id,
            project_id=project_id,
            settings=changed,
        )
        asked = {k: body[k] for k in ("enabled_tools", "daily_call_quota") if k in body}
        await audit.record(
            conn,
            organization_id=principal.organization_id,
            actor=deps.audit.actor(principal, request),
            type="tool_settings.updated",
            resource_id=project_id,
            project_id=project_id,
            payload={"changes_requested": asked},
        )
        return JSON(await _render(conn, deps, principal, project_id, changed))


def _enabled(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(
            "enabled_tools must be a list of strings or null.", param="enabled_tools"
        )
    unknown = sorted(set(value) - set(FAMILIES))
    if unknown:
        raise InvalidRequest(
            f"Unknown tool family {unknown[0]!r}; expected {', '.join(FAMILIES)}.",
            param="enabled_tools",
        )
    return frozenset(value)


def _quota(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUOTA:
        raise InvalidRequest(
            f"daily_call_quota must be an integer from 0 to {MAX_QUOTA}, or null.",
            param="daily_call_quota",
        )
    return value


def _org_owner(principal: Principal) -> bool:
    return principal.org_role == "owner" and not principal.is_guest


def _check_quota(
    limits: ToolLimits,
    current: store.ProjectToolSettings,
    principal: Principal,
    quota: int | None,
) -> None:
    """Refuse a quota this caller may not set: 400 if nobody may, 403 if someone may."""
    if quota is None:
        return  # back to the organization owner's value or the default, both bounded
    server_max = limits.max_daily_calls
    if quota == 0:
        if server_max:
            raise InvalidRequest(
                f"daily_call_quota cannot be 0 (unlimited) on this server; the most is "
                f"{server_max}.",
                param="daily_call_quota",
            )
        if not _org_owner(principal):
            raise Forbidden(
                "Only organization owners may make the daily tool-call quota unlimited (0).",
                param="daily_call_quota",
            )
        return
    if server_max and quota > server_max:
        raise InvalidRequest(
            f"daily_call_quota may be at most {server_max} on this server.",
            param="daily_call_quota",
        )
    guest_max = limits.guest_daily_calls
    if principal.is_guest and guest_max and quota > guest_max:
        raise Forbidden(
            f"Guests may lower their daily tool-call quota but not raise it above "
            f"{guest_max}; sign in for more.",
            param="daily_call_quota",
        )
    ceiling = current.daily_call_quota_ceiling
    if not _org_owner(principal) and ceiling and quota > ceiling:
        raise Forbidden(
            f"Project owners may set daily_call_quota up to {ceiling}, the ceiling an "
            "organization owner set; ask one to raise it.",
            param="daily_call_quota",
        )


async def _render(
    conn: Executor,
    deps: MCPDeps,
    principal: Principal,
    project_id: str,
    saved: store.ProjectToolSettings,
) -> dict[str, Any]:
    used = await store.calls_today(
        conn, organization_id=principal.organization_id, project_id=project_id
    )
    enabled = FAMILIES if saved.enabled_tools is None else sorted(saved.enabled_tools)
    return {
        "object": "project.tool_settings",
        "project_id": project_id,
        "enabled_tools": list(enabled),
        "daily_call_quota": saved.daily_call_quota,
        "effective_daily_call_quota": daily_quota(
            deps.toolbox.limits, saved, guest=principal.is_guest
        ),
        "calls_today": used,
        "tools": [spec.name for spec in enabled_specs(saved)],
    }
