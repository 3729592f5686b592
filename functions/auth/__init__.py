"""The `auth` area: sessions under `/v1/auth/*` (guest, OIDC sign-in, refresh, logout, me)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from functions.auth import oidc, sessions
from functions.auth.ratelimit import LoginRateLimiter
from functions.common import housekeeping
from functions.common.runtime import Runtime
from functions.services import bootstrap


def routes(runtime: Runtime) -> list[BaseRoute]:
    bootstrap.install(runtime)
    redis_url = runtime.settings.redis_url
    limiter = LoginRateLimiter(
        redis_url=redis_url.get_secret_value() if redis_url else None,
        trusted_proxies=runtime.settings.jan_trusted_proxies,
    )
    runtime.services[LoginRateLimiter] = limiter
    runtime.on_stop(limiter.close)
    housekeeping.register(runtime, "auth.refresh_tokens", sessions.sweep_refresh_tokens)
    return [*sessions.routes(), *oidc.routes()]
