"""`GET /v1/organization/audit_logs`: who changed what in the organization, in OpenAI's shape.

Events are written by the handlers that make the changes, in the same transaction
(``functions.services.audit``); this is the read side. Only organization owners (and
their admin keys, and operator keys) read it: it names members' e-mails and addresses.
Newest first; ``after`` pages to older events, ``before`` to newer ones.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin.call import AdminDeps, admin_call, ts
from functions.common.errors import Forbidden, InvalidRequest
from functions.common.http import JSON, query_list
from functions.common.pagination import limit_param, list_page
from functions.common.routing import Operation
from functions.services.audit import store

MAX_UNIX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
MAX_VALUES = 100  # per list filter
_EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")
_OPERATORS = ("gt", "gte", "lt", "lte")


def _actor(row: asyncpg.Record) -> dict[str, Any] | None:
    user = (
        {"id": row["actor_user_id"], "email": row["actor_email"]}
        if row["actor_user_id"] is not None or row["actor_email"] is not None
        else None
    )
    where = {"ip_address": row["ip_address"], "user_agent": row["user_agent"]}
    if row["actor_type"] == "session":
        return {"type": "session", "session": {"user": user, **where}}
    if row["actor_type"] == "api_key":
        key: dict[str, Any] = {"id": row["actor_api_key_id"]}
        if row["actor_service_account_id"] is not None:
            key |= {
                "type": "service_account",
                "service_account": {"id": row["actor_service_account_id"]},
            }
        else:  # an operator's key (`jan-server admin`) has no user
            key |= {"type": "user", "user": user}
        return {"type": "api_key", "api_key": key | where}
    return None


def render(row: asyncpg.Record) -> dict[str, Any]:
    """OpenAI's audit log object: the type's payload under a key named after the type."""
    out: dict[str, Any] = {
        "id": row["id"],
        "type": row["type"],
        "effective_at": ts(row["effective_at"]),
        "actor": _actor(row),
        row["type"]: row["details"],
    }
    if row["project_id"] is not None:
        out["project"] = {"id": row["project_id"], "name": row["project_name"]}
    return out


def _time(request: Request, op: str) -> datetime | None:
    name = f"effective_at[{op}]"
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer (Unix seconds).", param=name) from None
    if not 0 <= value <= MAX_UNIX_SECONDS:
        raise InvalidRequest(f"'{name}' must be from 0 to {MAX_UNIX_SECONDS}.", param=name)
    return datetime.fromtimestamp(value, UTC)


def _values(request: Request, name: str) -> list[str]:
    values = query_list(request, name)
    if len(values) > MAX_VALUES or any(len(v) > 320 for v in values):
        raise InvalidRequest(
            f"'{name}' takes at most {MAX_VALUES} values of at most 320 characters.",
            param=f"{name}[]",
        )
    return values


def query_filter(request: Request, organization_id: str) -> store.Filter:
    """OpenAI's filters from the query string; 400 for a malformed one."""
    types = _values(request, "event_types")
    for value in types:
        if not _EVENT_TYPE.fullmatch(value):
            raise InvalidRequest(f"'{value}' is not an event type.", param="event_types[]")
    gt, gte, lt, lte = (_time(request, op) for op in _OPERATORS)
    return store.Filter(
        organization_id=organization_id,
        effective_gt=gt,
        effective_gte=gte,
        effective_lt=lt,
        effective_lte=lte,
        project_ids=_values(request, "project_ids"),
        types=types,
        actor_ids=_values(request, "actor_ids"),
        actor_emails=_values(request, "actor_emails"),
        resource_ids=_values(request, "resource_ids"),
    )


async def list_audit_logs(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List the organization's audit log (organization owners)
    description: >
      OpenAI's audit log: changes made through the Administration API, sign-ins and
      sign-outs, newest first, each with its actor (`session`: the user, `ip_address`
      and `user_agent`; `api_key`: the key and its owner, and, a Jan extension, the
      `ip_address` and `user_agent` it was used from) and the type's payload under a key
      named after the type (the object's `id` and its `data` or `changes_requested`;
      never a secret). Event types are OpenAI's where one exists (`api_key.created`,
      `api_key.deleted`, `invite.sent`, `invite.accepted`, `invite.deleted`,
      `login.succeeded`, `login.failed`, `logout.succeeded`, `project.created`,
      `project.updated`, `project.archived`, `rate_limit.updated`,
      `service_account.created`, `service_account.deleted`, `user.added`,
      `user.updated`, `user.deleted`) and Jan's own otherwise: `data_retention.updated`,
      `model_alias.updated`, `model_alias.deleted`, `model_fallbacks.updated`,
      `model_fallbacks.deleted`, `model_permissions.updated`, `model_permissions.deleted`,
      `model_price.updated`
      (prices as decimal strings, USD per 1M tokens), `model_price.deleted`,
      `model_provider.created`, `model_provider.updated`, `model_provider.deleted`,
      `rate_limit_policy.updated`, `spend_alert.created`, `spend_alert.updated`,
      `spend_alert.deleted` (a webhook named by its origin alone: its path is often its
      secret), `spend_limit.updated`, `spend_limit.deleted`,
      `token_budget.updated`, `tool_settings.updated`. `rate_limit.updated` also
      covers Jan's defaults and the limits of keys, service accounts and users (`subject`
      names which). Events are written in the transaction of the change and cannot be
      changed or deleted through any API; they are kept for the organization's audit-log
      retention period (`/v1/organization/data_retention`). Organization readers get 403.
    tags: [admin]
    parameters:
      - {name: "effective_at[gt]", in: query, schema: {type: integer}}
      - {name: "effective_at[gte]", in: query, schema: {type: integer}}
      - {name: "effective_at[lt]", in: query, schema: {type: integer}}
      - {name: "effective_at[lte]", in: query, schema: {type: integer}}
      - {name: "project_ids[]", in: query, schema: {type: array, items: {type: string}}}
      - {name: "event_types[]", in: query, schema: {type: array, items: {type: string}}}
      - {name: "actor_ids[]", in: query, schema: {type: array, items: {type: string}}}
      - {name: "actor_emails[]", in: query, schema: {type: array, items: {type: string}}}
      - {name: "resource_ids[]", in: query, schema: {type: array, items: {type: string}}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: after, in: query, schema: {type: string}}
      - {name: before, in: query, schema: {type: string}}
    responses:
      200: {description: "A list of audit log objects."}
      400: {description: "A malformed filter or limit, or a cursor naming no event."}
      403: {description: Not an organization owner.}
    """
    call = await admin_call(deps, request, write=False)
    if call.principal.org_role != "owner":
        raise Forbidden("Only organization owners can read the audit log.")
    where = query_filter(request, call.organization_id)
    limit = limit_param(request)
    after = request.query_params.get("after") or None
    before = request.query_params.get("before") or None
    db = call.db
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and not await store.exists(
            db, organization_id=call.organization_id, event_id=cursor
        ):
            raise InvalidRequest(f"No audit log event '{cursor}' to list {name}.", param=name)
    rows = await store.list_events(db, where=where, after=after, before=before, limit=limit + 1)
    more = len(rows) > limit
    # Paging back (`before` alone), the newer end is cut: the ones next to `before` stay.
    rows = rows[-limit:] if before is not None and after is None else rows[:limit]
    return JSON(list_page([render(r) for r in rows], has_more=more))


ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", "/v1/organization/audit_logs", list_audit_logs),
]
