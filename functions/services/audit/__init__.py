"""The audit log's write side: who changed what, recorded in the transaction of the change.

A handler that changes something calls ``record(conn, …)`` on the connection of its own
transaction, so the event commits with the change or not at all. The actor is read off
the request once (``Audit.actor``): a signed-in user (OpenAI's ``session``: the user, the
client's address behind ``JAN_TRUSTED_PROXIES`` and its user agent) or an API key (its
owner, or its service account). Details are the event type's payload as OpenAI shows it
(the object's ``id`` and ``data`` or ``changes_requested``): callers put in names and
values that changed, never a secret. The table refuses UPDATE and DELETE (a trigger);
``store.expire`` is the retention sweep's only way out.

Event types are OpenAI's where one exists (``EVENT_TYPES``) and Jan's own for what
OpenAI's API lacks (``JAN_EVENT_TYPES``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from functions.common.clients import request_ip, trusted_networks
from functions.common.db import Executor
from functions.common.principal import Principal
from functions.common.settings import Settings
from functions.services.audit import store

ActorType = Literal["session", "api_key"]
USER_AGENT_MAX_CHARS = 512

# OpenAI's event types that Jan Server writes.
EVENT_TYPES = (
    "api_key.created",
    "api_key.deleted",
    "invite.sent",
    "invite.accepted",
    "invite.deleted",
    "login.succeeded",
    "login.failed",
    "logout.succeeded",
    "project.created",
    "project.updated",
    "project.archived",
    "rate_limit.updated",
    "service_account.created",
    "service_account.deleted",
    "user.added",
    "user.updated",
    "user.deleted",
)
# Jan's own, for what OpenAI's Administration API does not have.
JAN_EVENT_TYPES = (
    "data_retention.updated",
    "model_alias.updated",
    "model_alias.deleted",
    "model_fallbacks.updated",
    "model_fallbacks.deleted",
    "model_permissions.updated",
    "model_permissions.deleted",
    "model_price.updated",
    "model_price.deleted",
    "model_provider.created",
    "model_provider.updated",
    "model_provider.deleted",
    "rate_limit_policy.updated",
    "spend_alert.created",
    "spend_alert.updated",
    "spend_alert.deleted",
    "spend_limit.updated",
    "spend_limit.deleted",
    "token_budget.updated",
    "tool_settings.updated",
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it. ``type`` None: nobody known (a failed sign-in before any user)."""

    type: ActorType | None
    user_id: str | None = None
    api_key_id: str | None = None
    service_account_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    email: str | None = None  # else the user's, looked up when the event is written


class Audit:
    """Built once per process: reads actors off requests."""

    def __init__(self, settings: Settings) -> None:
        self.trusted = trusted_networks(settings.jan_trusted_proxies)

    def _where(self, request: Request) -> dict[str, str | None]:
        agent = request.headers.get("user-agent")
        return {
            "ip_address": request_ip(request, self.trusted),
            "user_agent": agent[:USER_AGENT_MAX_CHARS] if agent else None,
        }

    def actor(self, principal: Principal, request: Request) -> Actor:
        """The caller of an authenticated request."""
        if principal.kind == "user":
            return Actor("session", user_id=principal.user_id, **self._where(request))
        return Actor(
            "api_key",
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
            **self._where(request),
        )

    def session(
        self, request: Request, *, user_id: str | None = None, email: str | None = None
    ) -> Actor:
        """A user signing in or out (``user_id`` None: not known to be anyone yet)."""
        return Actor("session", user_id=user_id, email=email, **self._where(request))


async def record(
    ex: Executor,
    *,
    organization_id: str,
    actor: Actor,
    type: str,
    resource_id: str | None = None,
    project_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> None:
    """Write one event in the caller's transaction. Its details are ``{"id": resource_id}``
    (when there is one) and ``payload``."""
    details = ({"id": resource_id} if resource_id is not None else {}) | dict(payload or {})
    await store.insert(
        ex,
        organization_id=organization_id,
        type=type,
        project_id=project_id,
        actor_type=actor.type,
        actor_user_id=actor.user_id,
        actor_email=actor.email,
        actor_api_key_id=actor.api_key_id,
        actor_service_account_id=actor.service_account_id,
        ip_address=actor.ip_address,
        user_agent=actor.user_agent,
        resource_id=resource_id,
        details=details,
    )
