"""Spend alerts in the Administration API: OpenAI's ``/v1/organization/spend_alerts`` and
``…/projects/{project_id}/spend_alerts`` (``organization.spend_alert``,
``project.spend_alert``: a threshold in cents a calendar month, UTC, and a notification
channel).

OpenAI's channel, ``{type: email, recipients, subject_prefix}``, is recorded and shown;
no mail is sent. Jan's ``{type: webhook, url}`` gets crossings POSTed, signed like
OpenAI's webhooks: the signing secret (``whsec_…``) is in the create answer's channel
once, kept encrypted (MODEL_PROVIDER_SECRET) and never shown again. A webhook URL must be
public unless the operator allows its host (``JAN_PROVIDER_ALLOWED_HOSTS``, as for model
providers): checked here and again at each delivery. Jan extensions: ``last_triggered_at``
on the alert, and ``…/{alert_id}/events``, the crossings with their delivery state.

Who: organization owners write the organization's alerts, readers read them; a
project's alerts are written by organization owners and the project's owners, read by
readers and the project's members. ``functions.services.spend_alerts`` records crossings
and delivers them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin.budgets import MAX_CENTS
from functions.admin.call import Admin, AdminDeps, admin_call, project_call, ts
from functions.common.crypto import SecretBox
from functions.common.errors import InvalidRequest, NotFound
from functions.common.http import JSON, json_body
from functions.common.netguard import AddressError
from functions.common.pagination import limit_param, list_page, order_param
from functions.common.routing import Operation
from functions.services.spend_alerts import event_data, webhooks
from functions.services.spend_alerts import store as alerts_store

_FIELDS = ("threshold_amount", "currency", "interval", "notification_channel")
MAX_RECIPIENTS = 20
MAX_URL_CHARS = 2048


# --- input ---------------------------------------------------------------------------------
def _channel(value: Any) -> dict[str, Any]:
    """OpenAI's email channel, or Jan's webhook channel, as stored and shown."""
    param = "notification_channel"
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    kind = value.get("type")
    allowed = {"email": {"type", "recipients", "subject_prefix"}, "webhook": {"type", "url"}}
    if kind not in allowed:
        raise InvalidRequest(f"'{param}.type' must be 'email' or 'webhook'.", param=param)
    unknown = sorted(set(value) - allowed[kind])
    if unknown:
        raise InvalidRequest(f"Unrecognized field in '{param}': {unknown[0]}", param=param)
    if kind == "webhook":
        return {"type": "webhook", "url": _webhook_url(value.get("url"))}
    recipients = value.get("recipients")
    if (
        not isinstance(recipients, list)
        or not 1 <= len(recipients) <= MAX_RECIPIENTS
        or not all(isinstance(r, str) and "@" in r and len(r) <= 320 for r in recipients)
    ):
        raise InvalidRequest(
            f"'{param}.recipients' must list 1 to {MAX_RECIPIENTS} email addresses.", param=param
        )
    prefix = value.get("subject_prefix")
    if prefix is not None and (not isinstance(prefix, str) or len(prefix) > 200):
        raise InvalidRequest(
            f"'{param}.subject_prefix' must be a string of at most 200 characters.", param=param
        )
    return {"type": "email", "recipients": recipients, "subject_prefix": prefix}


def _webhook_url(value: Any) -> str:
    param = "notification_channel"
    if not isinstance(value, str) or not value or len(value) > MAX_URL_CHARS:
        raise InvalidRequest(
            f"'{param}.url' must be a URL of at most {MAX_URL_CHARS} characters.", param=param
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018  (raises for a bad port)
    except ValueError:
        raise InvalidRequest(f"'{param}.url' is not a valid URL.", param=param) from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRequest(f"'{param}.url' must be an http or https URL.", param=param)
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(f"'{param}.url' must not carry credentials.", param=param)
    return value


def _alert_body(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """OpenAI's ``CreateSpendAlertBody`` (create and update): every field required."""
    for name in body:
        if name not in _FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    for name in _FIELDS:
        if name not in body:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    cents = body["threshold_amount"]
    if not isinstance(cents, int) or isinstance(cents, bool) or not 0 <= cents <= MAX_CENTS:
        raise InvalidRequest(
            f"'threshold_amount' must be a whole number of cents from 0 to {MAX_CENTS}.",
            param="threshold_amount",
        )
    if body["currency"] != "USD":
        raise InvalidRequest("'currency' must be 'USD'.", param="currency")
    if body["interval"] != "month":
        raise InvalidRequest("'interval' must be 'month'.", param="interval")
    return cents, _channel(body["notification_channel"])


async def _check_url(deps: AdminDeps, channel: dict[str, Any]) -> None:
    """400 when a webhook's host is, or resolves to, an address we may not POST to."""
    guard = deps.providers.guard
    if channel["type"] != "webhook" or guard is None:
        return
    try:
        await guard.check(channel["url"])
    except AddressError as exc:
        raise InvalidRequest(
            f"Webhook URL not allowed: {exc.message.rstrip('.')}. Webhooks must be reachable "
            "at a public address unless the operator allows the host "
            "(JAN_PROVIDER_ALLOWED_HOSTS).",
            param="notification_channel",
            code="url_not_allowed",
        ) from None


# --- output --------------------------------------------------------------------------------
def _object(project_id: str | None) -> str:
    return "project.spend_alert" if project_id else "organization.spend_alert"


def render(row: asyncpg.Record, secret: str | None = None) -> dict[str, Any]:
    channel = dict(row["notification_channel"])
    if secret is not None:
        channel["secret"] = secret
    return {
        "id": row["id"],
        "object": _object(row["project_id"]),
        "threshold_amount": row["threshold_amount"],
        "currency": row["currency"],
        "interval": row["period"],
        "notification_channel": channel,
        "last_triggered_at": ts(row["last_triggered_at"]),
    }


def _audited(row: asyncpg.Record) -> dict[str, Any]:
    """An alert as the audit log shows it: a webhook by its origin alone (a webhook URL's
    path or query is often its secret, as Slack's and Discord's are)."""
    channel = dict(row["notification_channel"])
    if channel["type"] == "webhook":
        parts = urlsplit(channel["url"])
        channel["url"] = f"{parts.scheme}://{parts.netloc}/…"
    return {
        "threshold_amount": row["threshold_amount"],
        "currency": row["currency"],
        "interval": row["period"],
        "notification_channel": channel,
    }


def render_event(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "spend_alert.event",
        "created_at": ts(row["crossed_at"]),
        **event_data(row),
        "delivery": {
            "status": row["delivery"],
            "attempts": row["attempts"],
            "next_attempt_at": ts(row["next_attempt_at"]),
            "delivered_at": ts(row["delivered_at"]),
            "last_error": row["last_error"],
        },
    }


def _page_params(request: Request) -> dict[str, Any]:
    """OpenAI's list query: ``limit`` 0 to 100 (20), ``order`` (asc), ``after``, ``before``."""
    return {
        "limit": limit_param(request, minimum=0),
        "order": order_param(request, default="asc"),
        "after": request.query_params.get("after") or None,
        "before": request.query_params.get("before") or None,
    }


def _answer(rows: list[asyncpg.Record], limit: int, render_row: Any) -> dict[str, Any]:
    return list_page([render_row(r) for r in rows[:limit]], has_more=len(rows) > limit)


# --- the operations, for one scope ---------------------------------------------------------------
async def _load(call: Admin, project_id: str | None, alert_id: str) -> asyncpg.Record:
    row = await alerts_store.get_alert(
        call.db, organization_id=call.organization_id, project_id=project_id, alert_id=alert_id
    )
    if row is None:
        raise NotFound(f"No spend alert found with id '{alert_id}'.")
    return row


async def _list(call: Admin, project_id: str | None, request: Request) -> Response:
    page = _page_params(request)
    rows = await alerts_store.list_alerts(
        call.db, organization_id=call.organization_id, project_id=project_id, **page
    )
    return JSON(_answer(rows, page["limit"], render))


def _box(deps: AdminDeps) -> SecretBox:
    assert deps.providers.box is not None, "local.prepare or require_secrets guarantees it"
    return deps.providers.box


async def _create(
    deps: AdminDeps, call: Admin, project_id: str | None, request: Request
) -> Response:
    cents, channel = _alert_body(await json_body(request))
    await _check_url(deps, channel)
    alert_id = alerts_store.new_alert_id()
    secret = webhooks.new_secret() if channel["type"] == "webhook" else None
    async with call.db.acquire() as conn, conn.transaction():
        row = await alerts_store.create_alert(
            conn,
            alert_id=alert_id,
            organization_id=call.organization_id,
            project_id=project_id,
            threshold_amount=cents,
            channel=channel,
            secret_ciphertext=(
                _box(deps).encrypt(secret, associated=alert_id) if secret is not None else None
            ),
        )
        await call.record(
            conn, "spend_alert.created", alert_id, project_id=project_id, data=_audited(row)
        )
    return JSON(render(row, secret))


async def _update(
    deps: AdminDeps, call: Admin, project_id: str | None, request: Request
) -> Response:
    alert_id = request.path_params["alert_id"]
    cents, channel = _alert_body(await json_body(request))
    current = await _load(call, project_id, alert_id)
    await _check_url(deps, channel)
    # A webhook keeps its secret; an alert given a webhook now gets one, shown this once.
    secret = None
    ciphertext = None
    if channel["type"] == "webhook":
        ciphertext = current["secret_ciphertext"]
        if ciphertext is None:
            secret = webhooks.new_secret()
            ciphertext = _box(deps).encrypt(secret, associated=alert_id)
    async with call.db.acquire() as conn, conn.transaction():
        row = await alerts_store.update_alert(
            conn,
            organization_id=call.organization_id,
            project_id=project_id,
            alert_id=alert_id,
            threshold_amount=cents,
            channel=channel,
            secret_ciphertext=ciphertext,
        )
        if row is None:  # deleted meanwhile
            raise NotFound(f"No spend alert found with id '{alert_id}'.")
        await call.record(
            conn,
            "spend_alert.updated",
            alert_id,
            project_id=project_id,
            changes_requested=_audited(row),
        )
    return JSON(render(row, secret))


async def _delete(call: Admin, project_id: str | None, request: Request) -> Response:
    alert_id = request.path_params["alert_id"]
    async with call.db.acquire() as conn, conn.transaction():
        done = await alerts_store.delete_alert(
            conn, organization_id=call.organization_id, project_id=project_id, alert_id=alert_id
        )
        if not done:
            raise NotFound(f"No spend alert found with id '{alert_id}'.")
        await call.record(conn, "spend_alert.deleted", alert_id, project_id=project_id)
    return JSON({"id": alert_id, "object": f"{_object(project_id)}.deleted", "deleted": True})


async def _events(call: Admin, project_id: str | None, request: Request) -> Response:
    alert = await _load(call, project_id, request.path_params["alert_id"])
    page = _page_params(request)
    rows = await alerts_store.list_events(call.db, alert_id=alert["id"], **page)
    return JSON(_answer(rows, page["limit"], render_event))


# --- the organization's alerts -----------------------------------------------------------------
async def list_organization_spend_alerts(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List the organization's spend alerts
    description: >-
      OpenAI's `organization.spend_alert` objects, with Jan's `last_triggered_at` (Unix
      seconds of the latest crossing, or null). Organization owners and readers.
    tags: [admin]
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 0, maximum: 100, default: 20}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc], default: asc}}
      - {name: after, in: query, schema: {type: string}}
      - {name: before, in: query, schema: {type: string}}
    responses:
      200: {description: "A list of organization.spend_alert objects."}
    """
    call = await admin_call(deps, request, write=False)
    return await _list(call, None, request)


async def create_organization_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create a spend alert for the organization
    description: >-
      Organization owners. Crossed when the organization's spend this calendar month (UTC,
      the usage ledger's cost of every call) reaches `threshold_amount` cents; recorded once
      a month per alert, checked every `JAN_SPEND_ALERT_INTERVAL_SECONDS`.
      `notification_channel` is OpenAI's `{type: email, recipients, subject_prefix}`
      (recorded; Jan sends no mail) or Jan's `{type: webhook, url}`: each crossing is POSTed
      to `url` as an event `spend_alert.triggered`, signed like OpenAI's webhooks
      (`webhook-id`, `webhook-timestamp`, `webhook-signature`; the official SDKs'
      `webhooks.unwrap` verifies it), retried with backoff. The answer's channel carries the
      signing `secret` (`whsec_…`) this once; it is never shown again. The URL must be public
      unless the operator allows its host (`JAN_PROVIDER_ALLOWED_HOSTS`).
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [threshold_amount, currency, interval, notification_channel]
            properties:
              threshold_amount: {type: integer, minimum: 0, description: Cents.}
              currency: {type: string, enum: [USD]}
              interval: {type: string, enum: [month]}
              notification_channel:
                type: object
                required: [type]
                properties:
                  type: {type: string, enum: [email, webhook]}
                  recipients: {type: array, items: {type: string}, description: "email: who."}
                  subject_prefix: {type: string, nullable: true}
                  url: {type: string, description: "webhook (Jan extension): where to POST."}
    responses:
      200: {description: "The organization.spend_alert (with the webhook's secret, once)."}
      400: {description: "A field missing or invalid, or a webhook URL that is not allowed."}
    """
    call = await admin_call(deps, request, write=True)
    return await _create(deps, call, None, request)


async def retrieve_organization_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve one of the organization's spend alerts
    tags: [admin]
    parameters:
      - {name: alert_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "The organization.spend_alert, with Jan's last_triggered_at."}
      404: {description: No such alert of the organization.}
    """
    call = await admin_call(deps, request, write=False)
    return JSON(render(await _load(call, None, request.path_params["alert_id"])))


async def update_organization_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Update one of the organization's spend alerts
    description: >-
      Organization owners. The whole alert is replaced (every field required, as for
      create). A webhook keeps its secret; an alert that gets a webhook now gets a secret,
      shown in this answer once. A crossing already recorded this month stays recorded.
    tags: [admin]
    parameters:
      - {name: alert_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [threshold_amount, currency, interval, notification_channel]
            properties:
              threshold_amount: {type: integer, minimum: 0}
              currency: {type: string, enum: [USD]}
              interval: {type: string, enum: [month]}
              notification_channel: {type: object}
    responses:
      200: {description: "The organization.spend_alert."}
      400: {description: "A field missing or invalid, or a webhook URL that is not allowed."}
      404: {description: No such alert of the organization.}
    """
    call = await admin_call(deps, request, write=True)
    return await _update(deps, call, None, request)


async def delete_organization_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete one of the organization's spend alerts
    description: Organization owners. Its crossings go with it.
    tags: [admin]
    parameters:
      - {name: alert_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "organization.spend_alert.deleted"}
      404: {description: No such alert of the organization.}
    """
    call = await admin_call(deps, request, write=True)
    return await _delete(call, None, request)


async def list_organization_spend_alert_events(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "List a spend alert's crossings (Jan extension)"
    description: >-
      One `spend_alert.event` per month the alert was crossed: `threshold_amount` and
      `spend_amount` (cents, rounded down) when it was, `period_start` (the month, Unix
      seconds), `created_at`, and `delivery`: `status` (`none` for an email channel,
      `pending`, `delivered` or `failed` after the last attempt), `attempts`,
      `next_attempt_at`, `delivered_at`, `last_error`. The `id` is the webhook's
      `webhook-id`. Organization owners and readers.
    tags: [admin]
    parameters:
      - {name: alert_id, in: path, required: true, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 0, maximum: 100, default: 20}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc], default: asc}}
      - {name: after, in: query, schema: {type: string}}
      - {name: before, in: query, schema: {type: string}}
    responses:
      200: {description: "A list of spend_alert.event objects."}
      404: {description: No such alert of the organization.}
    """
    call = await admin_call(deps, request, write=False)
    return await _events(call, None, request)


# --- a project's alerts ------------------------------------------------------------------------
async def list_project_spend_alerts(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List a project's spend alerts
    description: >-
      OpenAI's `project.spend_alert` objects, with Jan's `last_triggered_at`. Organization
      owners and readers, and the project's members.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 0, maximum: 100, default: 20}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc], default: asc}}
      - {name: after, in: query, schema: {type: string}}
      - {name: before, in: query, schema: {type: string}}
    responses:
      200: {description: "A list of project.spend_alert objects."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=False)
    return await _list(call, call.project_id, request)


async def create_project_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create a spend alert for a project
    description: >-
      Organization owners and the project's owners. As the organization's alerts, over the
      project's spend this calendar month; the same channels (Jan's webhook, its secret
      shown once).
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [threshold_amount, currency, interval, notification_channel]
            properties:
              threshold_amount: {type: integer, minimum: 0, description: Cents.}
              currency: {type: string, enum: [USD]}
              interval: {type: string, enum: [month]}
              notification_channel:
                type: object
                required: [type]
                properties:
                  type: {type: string, enum: [email, webhook]}
                  recipients: {type: array, items: {type: string}}
                  subject_prefix: {type: string, nullable: true}
                  url: {type: string, description: "webhook (Jan extension): where to POST."}
    responses:
      200: {description: "The project.spend_alert (with the webhook's secret, once)."}
      400: {description: "A field invalid, a URL not allowed, or the project archived."}
      404: {description: No such project.}
    """
    call = await project_call(deps, request, write=True)
    return await _create(deps, call, call.project_id, request)


async def retrieve_project_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve one of a project's spend alerts
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: alert_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "The project.spend_alert, with Jan's last_triggered_at."}
      404: {description: No such project or alert.}
    """
    call = await project_call(deps, request, write=False)
    return JSON(render(await _load(call, call.project_id, request.path_params["alert_id"])))


async def update_project_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Update one of a project's spend alerts
    description: >-
      Organization owners and the project's owners; the whole alert is replaced, as for
      the organization's.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: alert_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [threshold_amount, currency, interval, notification_channel]
            properties:
              threshold_amount: {type: integer, minimum: 0}
              currency: {type: string, enum: [USD]}
              interval: {type: string, enum: [month]}
              notification_channel: {type: object}
    responses:
      200: {description: "The project.spend_alert."}
      400: {description: "A field invalid, a URL not allowed, or the project archived."}
      404: {description: No such project or alert.}
    """
    call = await project_call(deps, request, write=True)
    return await _update(deps, call, call.project_id, request)


async def delete_project_spend_alert(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete one of a project's spend alerts
    description: Organization owners and the project's owners.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: alert_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "project.spend_alert.deleted"}
      404: {description: No such project or alert.}
    """
    call = await project_call(deps, request, write=True)
    return await _delete(call, call.project_id, request)


async def list_project_spend_alert_events(deps: AdminDeps, request: Request) -> Response:
    """
    summary: "List a project spend alert's crossings (Jan extension)"
    description: >-
      The `spend_alert.event` objects of the organization's alerts' list, for a project's
      alert. Organization owners and readers, and the project's members.
    tags: [admin]
    parameters:
      - {name: project_id, in: path, required: true, schema: {type: string}}
      - {name: alert_id, in: path, required: true, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 0, maximum: 100, default: 20}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc], default: asc}}
      - {name: after, in: query, schema: {type: string}}
      - {name: before, in: query, schema: {type: string}}
    responses:
      200: {description: "A list of spend_alert.event objects."}
      404: {description: No such project or alert.}
    """
    call = await project_call(deps, request, write=False)
    return await _events(call, call.project_id, request)


_ORG = "/v1/organization/spend_alerts"
_PROJECT = "/v1/organization/projects/{project_id}/spend_alerts"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _ORG, list_organization_spend_alerts),
    Operation("POST", _ORG, create_organization_spend_alert),
    Operation("GET", _ORG + "/{alert_id}", retrieve_organization_spend_alert),
    Operation("POST", _ORG + "/{alert_id}", update_organization_spend_alert),
    Operation("DELETE", _ORG + "/{alert_id}", delete_organization_spend_alert),
    Operation("GET", _ORG + "/{alert_id}/events", list_organization_spend_alert_events),
    Operation("GET", _PROJECT, list_project_spend_alerts),
    Operation("POST", _PROJECT, create_project_spend_alert),
    Operation("GET", _PROJECT + "/{alert_id}", retrieve_project_spend_alert),
    Operation("POST", _PROJECT + "/{alert_id}", update_project_spend_alert),
    Operation("DELETE", _PROJECT + "/{alert_id}", delete_project_spend_alert),
    Operation("GET", _PROJECT + "/{alert_id}/events", list_project_spend_alert_events),
]
