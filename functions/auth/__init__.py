"""The `auth` area: sessions under `/v1/auth/*` (guest, OIDC sign-in, refresh, logout, me)."""

from __future__ import annotations

from functions.auth import oidc, sessions, store
from functions.auth.deps import AuthDeps
from functions.auth.oidc_provider import OIDCProvider
from functions.auth.ratelimit import LoginRateLimiter
from functions.common.housekeeping import Housekeeping
from functions.common.outbound import Outbound
from functions.common.routing import Operation
from functions.common.runtime import Runtime
from functions.services.audit import Audit
from functions.services.identity import Identity

__all__ = ["ROUTES", "AuthDeps", "build"]

ROUTES: list[Operation[AuthDeps]] = [
    Operation("POST", "/v1/auth/guest-login", sessions.guest_login),
    Operation("POST", "/v1/auth/refresh-token", sessions.refresh),
    Operation("POST", "/v1/auth/logout", sessions.logout),
    Operation("GET", "/v1/auth/me", sessions.me),
    Operation("GET", "/v1/auth/google/login", oidc.login),
    Operation("GET", "/v1/auth/google/callback", oidc.callback),
    Operation("POST", "/v1/auth/google/callback", oidc.callback),
]


def build(
    runtime: Runtime, identity: Identity, outbound: Outbound, keeper: Housekeeping, audit: Audit
) -> AuthDeps:
    settings = runtime.settings
    redis_url = settings.redis_url
    limiter = LoginRateLimiter(
        redis_url=redis_url.get_secret_value() if redis_url else None,
        trusted_proxies=settings.jan_trusted_proxies,
    )
    keeper.add("auth.refresh_tokens", store.sweep_refresh_tokens)
    return AuthDeps(runtime, identity, limiter, OIDCProvider(settings, outbound), audit)
