"""Sessions: guest login, refresh-token rotation, logout and `me`.

A session is a short-lived JWT access token plus an opaque refresh token. Refresh tokens
are stored hashed, grouped in a family per sign-in, and rotated on every use; presenting
an already-rotated token means it leaked, so the whole family is revoked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from functions.auth import store
from functions.auth.deps import AuthDeps
from functions.common import ids, tokens
from functions.common.db import AnyConnection, Executor
from functions.common.errors import Forbidden, InvalidRequest, Unauthorized
from functions.common.http import JSON
from functions.services import audit, tenancy

COOKIE = "jan_refresh_token"
COOKIE_PATH = "/v1/auth"


# --- issuing ------------------------------------------------------------------------------
async def new_refresh_token(ex: Executor, *, user_id: str, family_id: str | None = None) -> str:
    """A new refresh token for the user, in ``family_id`` or a new family; only its hash
    is stored."""
    token, token_hash = tokens.new_refresh_token()
    await store.insert_refresh_token(
        ex,
        user_id=user_id,
        family_id=family_id or ids.new_id(ids.TOKEN_FAMILY),
        token_hash=token_hash,
        expires_at=datetime.now(UTC) + timedelta(seconds=tokens.REFRESH_TOKEN_TTL_SECONDS),
    )
    return token


async def user_object(ex: Executor, user_id: str) -> dict[str, Any]:
    user = await store.get_user(ex, user_id=user_id)
    if user is None:
        raise Unauthorized("This account no longer exists.", code="invalid_token")
    orgs = await store.list_memberships(ex, user_id=user_id)
    return {
        "object": "user",
        "id": user["id"],
        "email": user["email"],
        "name": user["name"],
        "is_guest": user["is_guest"],
        "default_project_id": user["default_project_id"],
        "organizations": [dict(o) for o in orgs],
        "created_at": int(user["created_at"].timestamp()),
    }


def session_response(*, access: str, refresh: str, user: dict[str, Any]) -> Response:
    response = JSON(
        {
            "object": "auth.session",
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": tokens.ACCESS_TOKEN_TTL_SECONDS,
            # Also in the body for non-browser clients; browsers use the cookie.
            "refresh_token": refresh,
            "user": user,
        }
    )
    response.set_cookie(
        COOKIE,
        refresh,
        max_age=tokens.REFRESH_TOKEN_TTL_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        secure=True,
        # Lax, not Strict: a guest may start signing in (GET /v1/auth/google/login) from a
        # top-level navigation, which must carry its cookie so the guest is upgraded in
        # place. The callback never reads it (see oidc.py).
        samesite="lax",
    )
    return response


async def record_for_user(
    deps: AuthDeps,
    request: Request,
    conn: Executor,
    type: str,
    user_id: str,
    **payload: Any,
) -> None:
    """An audit event of the user's own (signing in or out), in each organization they
    are in, in the caller's transaction."""
    actor = deps.audit.session(request, user_id=user_id)
    for organization_id in await store.organizations_of(conn, user_id=user_id):
        await audit.record(
            conn, organization_id=organization_id, actor=actor, type=type, payload=payload
        )


async def start_session(deps: AuthDeps, conn: Executor, user_id: str) -> Response:
    identity = deps.identity
    refresh = await new_refresh_token(conn, user_id=user_id)
    access = tokens.issue_access_token(identity.jwt_secret, user_id=user_id)
    return session_response(access=access, refresh=refresh, user=await user_object(conn, user_id))


async def refresh_token_of(request: Request) -> str | None:
    """The refresh token from the JSON body (non-browser clients) or the cookie."""
    raw = await request.body()
    if raw:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("Request body is not valid JSON.") from None
        value = body.get("refresh_token") if isinstance(body, dict) else None
        if value is not None and not isinstance(value, str):
            raise InvalidRequest("'refresh_token' must be a string.", param="refresh_token")
        if value:
            return value
    return request.cookies.get(COOKIE) or None


# --- handlers ------------------------------------------------------------------------------
async def guest_login(deps: AuthDeps, request: Request) -> Response:
    """
    summary: Sign in as a new guest (a user with its own default project)
    tags: [auth]
    security: []
    responses:
      200: {description: "An auth.session: access token, refresh token (also as a cookie), user."}
      429: {description: Too many sign-in attempts from this address.}
    """
    runtime = deps.runtime
    await deps.limiter.check(request)
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        org_id = await tenancy.ensure_default_organization(conn)
        user = await tenancy.create_user(conn, email=None, name="Guest", is_guest=True)
        await tenancy.create_personal_project(conn, organization_id=org_id, user_id=user["id"])
        await record_for_user(deps, request, conn, "login.succeeded", user["id"], method="guest")
        return await start_session(deps, conn, user["id"])


async def _rotate(conn: AnyConnection, token: str) -> tuple[str, str | None]:
    """(user ID, new refresh token); no new token when a spent token came back (the
    family is revoked then, and the caller must let that commit before refusing)."""
    row = await store.lock_refresh_token(conn, token_hash=tokens.hash_refresh_token(token))
    if row is None or row["revoked_at"] is not None or row["expires_at"] <= datetime.now(UTC):
        raise Unauthorized("Invalid or expired refresh token; sign in again.", code="invalid_token")
    if row["used_at"] is not None:
        await store.revoke_token_family(conn, family_id=row["family_id"])
        return row["user_id"], None
    await store.mark_refresh_token_used(conn, token_id=row["id"])
    new = await new_refresh_token(conn, user_id=row["user_id"], family_id=row["family_id"])
    return row["user_id"], new


async def refresh(deps: AuthDeps, request: Request) -> Response:
    """
    summary: Exchange a refresh token (cookie or body) for a new session; rotates it
    tags: [auth]
    security: []
    requestBody:
      required: false
      content:
        application/json:
          schema: {type: object, properties: {refresh_token: {type: string}}}
    responses:
      200: {description: "A new auth.session; the old refresh token is spent."}
      401: {description: "Missing, unknown, expired, revoked or reused refresh token."}
    """
    runtime = deps.runtime
    await deps.limiter.check(request)
    token = await refresh_token_of(request)
    if token is None:
        raise Unauthorized("No refresh token: send the cookie or 'refresh_token'.")
    identity = deps.identity
    reused = Unauthorized(
        "This refresh token was already used; every session of this sign-in is revoked.",
        code="refresh_token_reused",
    )
    async with runtime.db.writer.acquire() as conn:
        async with conn.transaction():
            user_id, new = await _rotate(conn, token)
            if new is None:  # a stolen token, or a replay: recorded with the revocation
                await record_for_user(
                    deps,
                    request,
                    conn,
                    "login.failed",
                    user_id,
                    error_code=reused.code,
                    error_message=reused.message,
                )
        if new is None:
            raise reused
        user = await user_object(conn, user_id)
    access = tokens.issue_access_token(identity.jwt_secret, user_id=user_id)
    return session_response(access=access, refresh=new, user=user)


async def logout(deps: AuthDeps, request: Request) -> Response:
    """
    summary: Sign out, revoking the refresh token's whole family
    tags: [auth]
    security: []
    requestBody:
      required: false
      content:
        application/json:
          schema:
            type: object
            properties:
              refresh_token: {type: string, description: "When there is no cookie."}
    responses:
      200: {description: Signed out; the cookie is cleared.}
    """
    token = await refresh_token_of(request)
    if token is not None:
        async with deps.runtime.db.writer.acquire() as conn, conn.transaction():
            user_id = await store.revoke_token_family_of(
                conn, token_hash=tokens.hash_refresh_token(token)
            )
            if user_id is not None:
                await record_for_user(deps, request, conn, "logout.succeeded", user_id)
    response = JSON({"object": "auth.logout", "revoked": token is not None})
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="lax")
    return response


async def me(deps: AuthDeps, request: Request) -> Response:
    """
    summary: The signed-in user
    tags: [auth]
    responses:
      200: {description: "The user, with organization memberships."}
      401: {description: Not signed in.}
      403: {description: "An API key, not a user session."}
    """
    principal = await deps.identity.authenticate(request)
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden("This endpoint needs a user access token, not an API key.")
    return JSON(await user_object(deps.runtime.db.writer, principal.user_id))
