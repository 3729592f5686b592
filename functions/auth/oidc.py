"""OpenID Connect sign-in (Google by default; any issuer with a discovery document).

Authorization-code flow with PKCE (S256), ``state`` and ``nonce``, built on authlib's
OAuth2 client. The state is stored hashed with its PKCE verifier and nonce and used once.
It is bound to the browser that started the sign-in: login sets a random ``__Host-`` cookie
whose hash is stored with the state, and the callback refuses a browser without that cookie
(login CSRF: an attacker's callback link opened in a victim's browser). The ID token is
verified against the issuer's JWKS (signature, configured issuer, audience, expiry, nonce).
A guest who starts signing in (proving itself with its refresh cookie or access token) is
upgraded in place at the callback; which guest is decided at the start, never from a cookie
at the callback. E-mails in ORGANIZATION_ADMIN_EMAILS become owners of the default
organization when the account is first signed in.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.auth import store
from functions.auth.deps import AuthDeps
from functions.auth.oidc_provider import STATE_TTL, OIDCIdentity, OIDCSignIn
from functions.auth.sessions import COOKIE, record_for_user, start_session
from functions.common import tokens
from functions.common.db import AnyConnection, Executor
from functions.common.errors import APIError, Conflict, InvalidRequest
from functions.common.http import JSON, json_body
from functions.common.settings import Settings
from functions.services import audit, tenancy
from functions.services.identity import bearer_credential

# Binds a sign-in to the browser that started it. `__Host-`: Secure, Path=/, no Domain, so
# neither plain HTTP nor a sibling subdomain can plant one. SameSite=Lax: the issuer's
# redirect back is a top-level navigation from another site and must carry it.
LOGIN_COOKIE = "__Host-jan_oidc_login"
_LOGIN_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")


async def sign_in(
    conn: AnyConnection, settings: Settings, who: OIDCIdentity, guest_id: str | None
) -> str:
    """The user for this identity: known, linked by verified e-mail, an upgraded guest,
    or new. Returns the user ID."""
    user_id = await store.user_id_by_oidc(conn, issuer=who.issuer, subject=who.subject)
    if user_id is not None:
        return user_id
    if who.email is not None:
        user_id = await store.link_oidc_by_email(
            conn, email=who.email, issuer=who.issuer, subject=who.subject
        )
        if user_id is None and await store.email_in_use(conn, email=who.email):
            # Linked to another identity already: never merge accounts on an e-mail alone.
            raise Conflict(
                "This e-mail address belongs to an account that signs in another way.",
                param="email",
            )
    org_id = await tenancy.ensure_default_organization(conn)
    if user_id is None and guest_id is not None:
        user_id = await store.upgrade_guest(
            conn,
            user_id=guest_id,
            email=who.email,
            name=who.name,
            issuer=who.issuer,
            subject=who.subject,
        )
    if user_id is None:
        user = await tenancy.create_user(
            conn,
            email=who.email,
            name=who.name,
            oidc_issuer=who.issuer,
            oidc_subject=who.subject,
        )
        user_id = user["id"]
        await tenancy.create_personal_project(conn, organization_id=org_id, user_id=user_id)
    if who.email is not None and who.email in settings.organization_admin_emails:
        await tenancy.set_organization_role(
            conn, organization_id=org_id, user_id=user_id, role="owner"
        )
    return user_id


def _browser_of(request: Request) -> str:
    """This browser's sign-in cookie value: the one it has (so sign-ins started in two tabs
    both finish) or a new random one."""
    value = request.cookies.get(LOGIN_COOKIE, "")
    return value if _LOGIN_COOKIE_VALUE.fullmatch(value) else secrets.token_urlsafe(32)


async def _guest_of(request: Request, conn: Executor, jwt_secret: str) -> str | None:
    """A guest starting to sign in: from its refresh cookie (browser) or access token (API)."""
    token = request.cookies.get(COOKIE)
    if token:
        found = await store.guest_id_by_refresh_token(
            conn, token_hash=tokens.hash_refresh_token(token)
        )
        if found is not None:
            return found
    credential = bearer_credential(request)
    if credential is not None:
        try:  # an API key, or any other non-JWT, is simply not a guest
            user_id = tokens.verify_access_token(jwt_secret, credential)
        except APIError:
            return None
        return await store.guest_id(conn, user_id=user_id)
    return None


# --- handlers ------------------------------------------------------------------------------
async def login(deps: AuthDeps, request: Request) -> Response:
    """
    summary: Start signing in with the identity provider (Google by default)
    tags: [auth]
    security: []
    responses:
      200:
        description: >-
          `url`: where to send the browser. Sets the `__Host-jan_oidc_login` cookie the
          callback requires (the sign-in must finish in the browser that started it). A
          guest's refresh cookie or access token on this request names the guest to upgrade.
      429: {description: Too many sign-in attempts from this address.}
      503: {description: "Sign-in is not configured, or the provider is unreachable."}
    """
    runtime = deps.runtime
    await deps.limiter.check(request)
    deps.oidc.require_configured()
    browser = _browser_of(request)
    guest_id = await _guest_of(request, runtime.db.writer, deps.identity.jwt_secret)
    url = await deps.oidc.authorization_url(runtime.db.writer, browser=browser, guest_id=guest_id)
    response = JSON({"object": "auth.authorization_url", "url": url})
    response.set_cookie(
        LOGIN_COOKIE,
        browser,
        max_age=int(STATE_TTL.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )
    return response


async def callback(deps: AuthDeps, request: Request) -> Response:
    """
    summary: Finish signing in (code and state from the query, or a JSON body)
    tags: [auth]
    security: []
    requestBody:
      required: false
      content:
        application/json:
          schema:
            type: object
            properties: {code: {type: string}, state: {type: string}}
    responses:
      200: {description: "An auth.session."}
      400:
        description: >-
          Missing, unknown or expired code or state, or a sign-in started in another browser
          (no or another `__Host-jan_oidc_login` cookie; code `oidc_browser_mismatch`).
      401: {description: The ID token failed verification.}
      409: {description: The e-mail belongs to an account linked to another identity.}
      429: {description: Too many sign-in attempts from this address.}
    """
    await deps.limiter.check(request)
    runtime = deps.runtime
    try:
        done = await _exchange(deps, request)
    except APIError as exc:
        await _record_failure(deps, request, exc, email=None)
        raise
    try:
        async with runtime.db.writer.acquire() as conn, conn.transaction():
            user_id = await sign_in(conn, runtime.settings, done.identity, done.guest_id)
            await record_for_user(deps, request, conn, "login.succeeded", user_id, method="oidc")
            response = await start_session(deps, conn, user_id)
    except APIError as exc:
        await _record_failure(deps, request, exc, email=done.identity.email)
        raise
    if done.guest_id is not None:
        await deps.identity.revoke_all()  # the upgraded guest's cached principal is stale
    return response


async def _exchange(deps: AuthDeps, request: Request) -> OIDCSignIn:
    """The verified identity of this callback's code and state."""
    params: dict[str, Any] = dict(request.query_params)
    if request.method == "POST" and await request.body():
        params.update(await json_body(request))
    if params.get("error"):
        raise InvalidRequest("The identity provider refused the sign-in.", param="error")
    code, state = params.get("code"), params.get("state")
    if not isinstance(code, str) or not code or not isinstance(state, str) or not state:
        raise InvalidRequest("Both 'code' and 'state' are required.", param="code")
    # Only the cookie set at login proves the browser: never a value from the query or body,
    # which whoever crafted the link chose.
    return await deps.oidc.exchange(
        deps.runtime.db.writer,
        code=code,
        state=state,
        browser=request.cookies.get(LOGIN_COOKIE),
    )


async def _record_failure(
    deps: AuthDeps, request: Request, exc: APIError, *, email: str | None
) -> None:
    """A sign-in refused for the caller's reason (a 4xx; not an outage), in the default
    organization (where sign-ins land), in a transaction of its own: the sign-in's was
    rolled back."""
    if exc.status >= 500:
        return
    async with deps.runtime.db.writer.acquire() as conn, conn.transaction():
        await audit.record(
            conn,
            organization_id=await tenancy.ensure_default_organization(conn),
            actor=deps.audit.session(request, email=email),
            type="login.failed",
            payload={"error_code": exc.code or exc.type, "error_message": exc.message},
        )
