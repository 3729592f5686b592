"""An OpenID Connect issuer as the sign-in flow sees it: discovery document and JWKS
(cached in process), the authorization URL with PKCE, state and nonce (the state bound to
the starting browser and to the guest it upgrades), and the code exchange with ID-token
verification. Built once per process by the auth area."""

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

from functions.auth import store
from functions.common.db import Executor
from functions.common.errors import (
    InvalidRequest,
    ServiceUnavailable,
    Unauthorized,
)
from functions.common.outbound import Outbound
from functions.common.settings import Settings

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


@dataclass(frozen=True)
class OIDCSignIn:
    """A finished sign-in: who signed in, and the guest that proved itself when this
    sign-in started (None when none did)."""

    identity: OIDCIdentity
    guest_id: str | None


class OIDCProvider:
    """Discovery document and JWKS of one issuer, cached in process."""

    def __init__(self, settings: Settings, outbound: Outbound) -> None:
        self.issuer = settings.oauth2_google_issuer.rstrip("/")
        # The ID token's `iss` must name the configured issuer (as written, or without its
        # trailing slash), whatever the discovery document says.
        self.issuers = frozenset({settings.oauth2_google_issuer, self.issuer})
        self.client_id = settings.oauth2_google_client_id
        secret = settings.oauth2_google_client_secret
        self.client_secret = secret.get_secret_value() if secret is not None else None
        self.redirect_uri = settings.oauth_redirect_url
        self.outbound = outbound
        # Built once: each new client would otherwise load the CA bundle again (~17 ms CPU
        # per sign-in step, on endpoints anyone can call).
        self._tls = httpx.create_ssl_context()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: jwt.PyJWKSet | None = None

    def require_configured(self) -> None:
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
            response = await self.outbound.client.get(url, timeout=10)
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

    async def authorization_url(self, ex: Executor, *, browser: str, guest_id: str | None) -> str:
        """Start a sign-in for the browser holding the cookie value ``browser`` (stored
        hashed), upgrading ``guest_id`` (a guest that proved itself on this request) if set."""
        self.require_configured()
        meta = await self.metadata()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(16)
        verifier = secrets.token_urlsafe(48)
        # Abandoned sign-ins are swept here, so anyone calling login cannot grow the table.
        await store.insert_login_state(
            ex,
            state_hash=_hash(state),
            code_verifier=verifier,
            nonce=nonce,
            browser_hash=_hash(browser),
            guest_user_id=guest_id,
            expires_at=datetime.now(UTC) + STATE_TTL,
        )
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        return str(url)

    async def exchange(
        self, ex: Executor, *, code: str, state: str, browser: str | None
    ) -> OIDCSignIn:
        """Finish the sign-in of ``state`` in the browser whose cookie value is ``browser``.
        The state is consumed first, so a refused attempt cannot be replayed; a browser
        other than the one that started it is refused before the code is redeemed."""
        self.require_configured()
        login = await store.consume_login_state(ex, state_hash=_hash(state))
        if login is None or login["expires_at"] <= datetime.now(UTC):
            raise InvalidRequest("Unknown or expired sign-in state; start again.", param="state")
        bound: bytes | None = login["browser_hash"]
        if bound is None or browser is None or not secrets.compare_digest(bound, _hash(browser)):
            log.warning("sign-in finished in another browser than it started in")
            raise InvalidRequest(
                "This sign-in was started in another browser, or this browser did not send its"
                " sign-in cookie; start signing in again from this browser.",
                param="state",
                code="oidc_browser_mismatch",
            )
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
        who = await self.verify_id_token(id_token, nonce=login["nonce"])
        return OIDCSignIn(identity=who, guest_id=login["guest_user_id"])

    async def verify_id_token(self, id_token: str, *, nonce: str) -> OIDCIdentity:
        try:
            header = jwt.get_unverified_header(id_token)
            key = await self._signing_key(header.get("kid"))
            claims = jwt.decode(
                id_token,
                key,
                algorithms=_ID_TOKEN_ALGORITHMS,
                audience=self.client_id,
                issuer=self.issuers,
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
