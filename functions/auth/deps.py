"""What the auth area uses."""

from __future__ import annotations

from dataclasses import dataclass

from functions.auth.oidc_provider import OIDCProvider
from functions.auth.ratelimit import LoginRateLimiter
from functions.common.runtime import Runtime
from functions.services.audit import Audit
from functions.services.identity import Identity


@dataclass(frozen=True, slots=True)
class AuthDeps:
    runtime: Runtime
    identity: Identity
    limiter: LoginRateLimiter
    oidc: OIDCProvider
    audit: Audit
