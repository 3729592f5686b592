"""OpenID Connect sign-in (Google by default; any issuer with a discovery document).

Authorization-code flow with PKCE (S256), ``state`` and ``nonce``, built on authlib's
OAuth2 client. The state is stored hashed with its PKCE verifier and nonce and used once.
The ID token is verified against the issuer's JWKS (signature, issuer, audience, expiry,
nonce). A guest who signs in is upgraded in place; e-mails in ORGANIZATION_ADMIN_EMAILS
become owners of the default organization when the account is first signed in.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from authlib.integrations.httpx_client import AsyncOAuth2Client
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from functions.auth.ratelimit import LoginRateLimiter
from functions.auth.sessions import COOKIE, start_session
from functions.common import tokens
from functions.common.db import AnyConnection, Executor
from functions.common.errors import (
    APIError,
    Conflict,
    InvalidRequest,
    ServiceUnavailable,
    Unauthorized,
)
from functions.common.http import JSON, json_body, runtime_of
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services import tenancy
from functions.services.identity import bearer_credential, identity_of

log = logging.getLogger(__name__)

STATE_TTL = timedelta(minutes=10)
METADATA_TTL_SECONDS = 3600.0
_ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


@dataclass(frozen=True)
class OIDCIdentity:
    issuer: str
    subject: str
    email: str | None  # only when the issuer says it is verified
    name: str


class OIDCProvider:
    """Discovery document and JWKS of one issuer, cached in process."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.issuer = settings.oauth2_google_issuer.rstrip("/")
        self.client_id = settings.oauth2_google_client_id
        secret = settings.oauth2_google_client_secret
        self.client_secret = secret.get_secret_value() if secret is not None else None
        self.redirect_uri = settings.oauth_redirect_url
        self.http = http
        # Built once: each new client would otherwise load the CA bundle again (~17 ms CPU
        # per sign-in step, on endpoints anyone can call).
        self._tls = httpx.create_ssl_context()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: jwt.PyJWKSet | None = None

    def _require_configured(self) -> None:
        if not (self.client_id and self.client_secret and self.redirect_uri):
            raise ServiceUnavailable(
                "Sign-in with an identity provider is not configured on this server.",
                code="oidc_not_configured",
            )

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            self.client_id,
            self.client_secret,
            redirect_uri=self.redirect_uri,
            scope="openid email profile",
            code_challenge_method="S256",
            timeout=10,
            verify=self._tls,
        )

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL_SECONDS:
            url = f"{self.issuer}/.well-known/openid-configuration"
            self._metadata = await self._get_json(url)
            self._metadata_at = time.monotonic()
            self._jwks = None
        return self._metadata

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self.http.get(url, timeout=10)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("identity provider unreachable", extra={"error": type(exc).__name__})
            raise ServiceUnavailable("The identity provider is not reachable.") from None
        if not isinstance(data, dict):
            raise ServiceUnavailable("The identity provider answered nonsense.")
        return data

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        for attempt in range(2):
            if self._jwks is None or attempt == 1:  # unknown kid: keys may have rotated
                meta = await self.metadata()
                self._jwks = jwt.PyJWKSet.from_dict(await self._get_json(meta["jwks_uri"]))
            for key in self._jwks.keys:
                if kid is None or key.key_id == kid:
                    return key
        raise Unauthorized("The ID token is signed with an unknown key.", code="invalid_id_token")

    async def authorization_url(self, ex: Executor) -> str:
        self._require_configured()
        meta = await self.metadata()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(16)
        verifier = secrets.token_urlsafe(48)
        # Abandoned sign-ins are swept here, so anyone calling login cannot grow the table.
        await ex.execute(
            "WITH swept AS (DELETE FROM oidc_login_states WHERE expires_at <= now())"
            " INSERT INTO oidc_login_states (state_hash, code_verifier, nonce, expires_at)"
            " VALUES ($1, $2, $3, $4)",
            _hash(state),
            verifier,
            nonce,
            datetime.now(UTC) + STATE_TTL,
        )
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        return str(url)

    async def exchange(self, ex: Executor, *, code: str, state: str) -> OIDCIdentity:
        self._require_configured()
        login = await ex.fetchrow(
            "DELETE FROM oidc_login_states WHERE state_hash = $1 RETURNING *", _hash(state)
        )
        if login is None or login["expires_at"] <= datetime.now(UTC):
            raise InvalidRequest("Unknown or expired sign-in state; start again.", param="state")
        meta = await self.metadata()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    meta["token_endpoint"], code=code, code_verifier=login["code_verifier"]
                )
        except Exception as exc:  # authlib raises OAuthError, httpx errors, ValueError …
            log.warning("code exchange failed", extra={"error": type(exc).__name__})
            raise InvalidRequest("The identity provider refused the code.", param="code") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise InvalidRequest("The identity provider sent no ID token.", param="code")
        return await self.verify_id_token(id_token, nonce=login["nonce"])

    async def verify_id_token(self, id_token: str, *, nonce: str) -> OIDCIdentity:
        try:
            header = jwt.get_unverified_header(id_token)
            key = await self._signing_key(header.get("kid"))
            claims = jwt.decode(
                id_token,
                key,
                algorithms=_ID_TOKEN_ALGORITHMS,
                audience=self.client_id,
                issuer=(await self.metadata()).get("issuer", self.issuer),
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.InvalidTokenError:
            raise Unauthorized("The ID token is invalid.", code="invalid_id_token") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise Unauthorized("The ID token's nonce does not match.", code="invalid_id_token")
        email = claims.get("email")
        verified = claims.get("email_verified") in (True, "true")
        return OIDCIdentity(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            email=email.lower() if isinstance(email, str) and verified else None,
            name=str(claims.get("name") or ""),
        )


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def provider_of(runtime: Runtime) -> OIDCProvider:
    found = runtime.services.get(OIDCProvider)
    if found is None:
        found = runtime.services[OIDCProvider] = OIDCProvider(runtime.settings, runtime.http)
    assert isinstance(found, OIDCProvider)
    return found


# --- accounts ------------------------------------------------------------------------------
async def sign_in(
    conn: AnyConnection, settings: Settings, who: OIDCIdentity, guest_id: str | None
) -> str:
    """The user for this identity: known, linked by verified e-mail, an upgraded guest,
    or new. Returns the user ID."""
    user_id: str | None = await conn.fetchval(
        "SELECT id FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2",
        who.issuer,
        who.subject,
    )
    if user_id is not None:
        return user_id
    if who.email is not None:
        user_id = await conn.fetchval(
            "UPDATE users SET oidc_issuer = $2, oidc_subject = $3, is_guest = false,"
            " updated_at = now() WHERE lower(email) = $1 AND oidc_subject IS NULL RETURNING id",
            who.email,
            who.issuer,
            who.subject,
        )
        if user_id is None and await conn.fetchval(
            "SELECT 1 FROM users WHERE lower(email) = $1", who.email
        ):
            # Linked to another identity already: never merge accounts on an e-mail alone.
            raise Conflict(
                "This e-mail address belongs to an account that signs in another way.",
                param="email",
            )
    org_id = await tenancy.ensure_default_organization(conn)
    if user_id is None and guest_id is not None:
        user_id = await conn.fetchval(
            "UPDATE users SET email = $2, name = $3, is_guest = false, oidc_issuer = $4,"
            " oidc_subject = $5, updated_at = now() WHERE id = $1 AND is_guest RETURNING id",
            guest_id,
            who.email,
            who.name,
            who.issuer,
            who.subject,
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


async def _guest_of(request: Request, conn: Executor, jwt_secret: str) -> str | None:
    """A guest signing in: from its refresh cookie (browser) or access token (API)."""
    token = request.cookies.get(COOKIE)
    if token:
        found: str | None = await conn.fetchval(
            "SELECT u.id FROM refresh_tokens r JOIN users u ON u.id = r.user_id"
            " WHERE r.token_hash = $1 AND r.revoked_at IS NULL AND r.used_at IS NULL"
            " AND r.expires_at > now() AND u.is_guest",
            tokens.hash_refresh_token(token),
        )
        if found is not None:
            return found
    credential = bearer_credential(request)
    if credential is not None:
        try:  # an API key, or any other non-JWT, is simply not a guest
            user_id = tokens.verify_access_token(jwt_secret, credential)
        except APIError:
            return None
        guest: str | None = await conn.fetchval(
            "SELECT id FROM users WHERE id = $1 AND is_guest", user_id
        )
        return guest
    return None


# --- handlers ------------------------------------------------------------------------------
async def login(request: Request) -> Response:
    """
    summary: Start signing in with the identity provider (Google by default)
    tags: [auth]
    security: []
    responses:
      200: {description: "`url`: where to send the browser."}
      429: {description: Too many sign-in attempts from this address.}
      503: {description: "Sign-in is not configured, or the provider is unreachable."}
    """
    runtime = runtime_of(request)
    await runtime.service(LoginRateLimiter).check(request)
    url = await provider_of(runtime).authorization_url(runtime.db.writer)
    return JSON({"object": "auth.authorization_url", "url": url})


async def callback(request: Request) -> Response:
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
      400: {description: "Missing, unknown or expired code or state."}
      401: {description: The ID token failed verification.}
      409: {description: The e-mail belongs to an account linked to another identity.}
      429: {description: Too many sign-in attempts from this address.}
    """
    runtime = runtime_of(request)
    await runtime.service(LoginRateLimiter).check(request)
    params: dict[str, Any] = dict(request.query_params)
    if request.method == "POST" and await request.body():
        params.update(await json_body(request))
    if params.get("error"):
        raise InvalidRequest("The identity provider refused the sign-in.", param="error")
    code, state = params.get("code"), params.get("state")
    if not isinstance(code, str) or not code or not isinstance(state, str) or not state:
        raise InvalidRequest("Both 'code' and 'state' are required.", param="code")
    provider = provider_of(runtime)
    who = await provider.exchange(runtime.db.writer, code=code, state=state)
    identity = identity_of(runtime)
    async with runtime.db.writer.acquire() as conn, conn.transaction():
        guest_id = await _guest_of(request, conn, identity.jwt_secret)
        user_id = await sign_in(conn, runtime.settings, who, guest_id)
        response = await start_session(request, conn, user_id)
    if guest_id is not None:
        await identity.revoke_all()  # the upgraded guest's cached principal is stale
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/auth/google/login", login, methods=["GET"]),
        Route("/v1/auth/google/callback", callback, methods=["GET", "POST"]),
    ]
