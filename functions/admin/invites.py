"""`/v1/organization/invites`: invite someone by e-mail; they accept with the invite code.

There is no mail server, so the create response carries the ``code`` once (like a key);
the inviter passes it on. Only its hash is stored. Accepting requires a signed-in,
non-guest user whose e-mail is the invited one; it joins the organization and the listed
projects in one transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin import store
from functions.admin.call import (
    AdminDeps,
    admin_call,
    choice_field,
    deleted,
    found,
    load_project,
    string_field,
    ts,
)
from functions.admin.project_users import PROJECT_ROLES
from functions.admin.users import ORG_ROLES
from functions.common import tokens
from functions.common.db import Executor
from functions.common.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from functions.common.http import JSON, json_body
from functions.common.pagination import Page
from functions.common.routing import Operation
from functions.services import audit, tenancy
from functions.services.identity import bearer_credential

INVITE_TTL = timedelta(days=7)


def _hash(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


def render(row: asyncpg.Record, *, code: str | None = None) -> dict[str, Any]:
    status = row["status"]
    if status == "pending" and row["expires_at"] <= datetime.now(UTC):
        status = "expired"
    out = {
        "object": "organization.invite",
        "id": row["id"],
        "email": row["email"],
        "role": row["role"],
        "status": status,
        "created_at": ts(row["invited_at"]),
        "invited_at": ts(row["invited_at"]),  # the older name of created_at
        "expires_at": ts(row["expires_at"]),
        "accepted_at": ts(row["accepted_at"]),
        "projects": row["projects"],
    }
    if code is not None:
        out["code"] = code  # only in the create response
    return out


async def _get(ex: Executor, org_id: str, invite_id: str) -> asyncpg.Record:
    return found(
        await store.get_invite(ex, organization_id=org_id, invite_id=invite_id),
        missing=f"No invite found with id '{invite_id}'.",
    )


def _projects(body: dict[str, Any]) -> list[dict[str, str]]:
    value = body.get("projects", [])
    if not isinstance(value, list) or len(value) > 100:
        raise InvalidRequest("'projects' must be a list of {id, role}.", param="projects")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise InvalidRequest("'projects' must be a list of {id, role}.", param="projects")
        out.append({"id": item["id"], "role": choice_field(item, "role", PROJECT_ROLES)})
    return out


async def list_invites(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List invites
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
    responses:
      200: {description: "A list of organization.invite objects."}
    """
    call = await admin_call(deps, request, write=False)
    page = Page.of(request, default_order="asc")
    rows = await store.list_invites(call.db, organization_id=call.organization_id, page=page)
    return JSON(page.answer(rows, render))


async def create_invite(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Invite a user by e-mail (the response carries the invite code once)
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [email, role]
            properties:
              email: {type: string}
              role: {enum: [owner, reader]}
              projects:
                type: array
                items: {type: object, properties: {id: {type: string}, role: {type: string}}}
    responses:
      200: {description: "The organization.invite, with `code`."}
      409: {description: "Already a member, or already invited."}
    """
    call = await admin_call(deps, request, write=True)
    body = await json_body(request)
    email = string_field(body, "email", required=True, max_length=320)
    assert email is not None
    if "@" not in email:
        raise InvalidRequest("'email' must be an e-mail address.", param="email")
    role = choice_field(body, "role", ORG_ROLES)
    projects = _projects(body)
    code = secrets.token_urlsafe(24)
    async with call.db.acquire() as conn, conn.transaction():
        for p in projects:
            await load_project(
                conn, organization_id=call.organization_id, project_id=p["id"], for_write=True
            )
        if await store.is_member_by_email(conn, organization_id=call.organization_id, email=email):
            raise Conflict(f"{email} is already a member of this organization.", param="email")
        # A stale pending invite for the same address makes way for the new one.
        await store.expire_stale_invites(conn, organization_id=call.organization_id, email=email)
        try:
            row = await store.insert_invite(
                conn,
                organization_id=call.organization_id,
                email=email,
                role=role,
                projects=projects,
                code_hash=_hash(code),
                expires_at=datetime.now(UTC) + INVITE_TTL,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"{email} already has a pending invite.", param="email") from None
        await call.record(
            conn,
            "invite.sent",
            row["id"],
            data={"email": email, "role": role, "projects": projects},
        )
    return JSON(render(row, code=code))


async def get_invite(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve an invite
    tags: [admin]
    responses:
      200: {description: "The organization.invite."}
      404: {description: No such invite in this organization.}
    """
    call = await admin_call(deps, request, write=False)
    return JSON(render(await _get(call.db, call.organization_id, request.path_params["invite_id"])))


async def delete_invite(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete a pending invite
    tags: [admin]
    responses:
      200: {description: "organization.invite.deleted"}
      400: {description: The invite was already accepted.}
      404: {description: No such invite in this organization.}
    """
    call = await admin_call(deps, request, write=True)
    invite_id = request.path_params["invite_id"]
    async with call.db.acquire() as conn, conn.transaction():
        row = await _get(conn, call.organization_id, invite_id)
        if row["status"] == "accepted":
            raise InvalidRequest("An accepted invite cannot be deleted.", code="invite_accepted")
        await store.delete_invite(conn, organization_id=call.organization_id, invite_id=invite_id)
        await call.record(conn, "invite.deleted", invite_id)
    return JSON(deleted("organization.invite", invite_id))


async def accept_invite(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Accept an invite by its code (signed-in user with the invited e-mail)
    tags: [admin]
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [code], properties: {code: {type: string}}}
    responses:
      200: {description: "The accepted organization.invite."}
      401: {description: Not signed in.}
      403: {description: "Signed in with another e-mail, or as a guest."}
      404: {description: "Unknown, used or expired code."}
    """
    runtime = deps.runtime
    identity = deps.identity
    token = bearer_credential(request)
    if token is None:
        raise Unauthorized("Sign in first: accepting an invite needs a user access token.")
    user_id = tokens.verify_access_token(identity.jwt_secret, token)
    code = string_field(await json_body(request), "code", required=True)
    assert code is not None
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        user = await store.get_user_email(conn, user_id=user_id)
        if user is None:
            raise Unauthorized("This account no longer exists.", code="invalid_token")
        invite = await store.lock_pending_invite(conn, code_hash=_hash(code))
        if invite is None:
            raise NotFound("No pending invite matches this code.", param="code")
        if user["is_guest"] or (user["email"] or "").lower() != invite["email"].lower():
            raise Forbidden("This invite was sent to another e-mail address.")
        await _join(conn, invite, user_id)
        row = await store.mark_invite_accepted(conn, invite_id=invite["id"])
        await audit.record(
            conn,
            organization_id=invite["organization_id"],
            actor=deps.audit.session(request, user_id=user_id),
            type="invite.accepted",
            resource_id=invite["id"],
        )
    await identity.revoke_all()
    return JSON(render(row))


async def _join(conn: Executor, invite: asyncpg.Record, user_id: str) -> None:
    org_id = invite["organization_id"]
    current = await store.organization_role(conn, organization_id=org_id, user_id=user_id)
    if current != "owner":  # never demote an existing owner by accepting a reader invite
        await tenancy.set_organization_role(
            conn, organization_id=org_id, user_id=user_id, role=invite["role"]
        )
    for project in invite["projects"]:
        if await store.is_active_project(conn, organization_id=org_id, project_id=project["id"]):
            await tenancy.set_project_role(
                conn,
                organization_id=org_id,
                project_id=project["id"],
                user_id=user_id,
                role=project["role"],
            )


_BASE = "/v1/organization/invites"
ROUTES: list[Operation[AdminDeps]] = [
    Operation("GET", _BASE, list_invites),
    Operation("POST", _BASE, create_invite),
    Operation("POST", _BASE + "/verification", accept_invite),
    Operation("GET", _BASE + "/{invite_id}", get_invite),
    Operation("DELETE", _BASE + "/{invite_id}", delete_invite),
]
