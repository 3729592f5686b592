"""Session tokens: short-lived JWT access tokens and opaque refresh tokens.

Access tokens are HS256 JWTs under ``JWT_SECRET`` with ``typ: "access"``; only HS256 is
accepted (so ``alg: none`` and key-confusion tricks fail). Refresh tokens are not JWTs at
all: random strings stored hashed, so one can never pass as an access token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Final

import jwt

from functions.common.errors import Unauthorized

ACCESS_TOKEN_TTL_SECONDS: Final = 15 * 60
REFRESH_TOKEN_TTL_SECONDS: Final = 30 * 24 * 3600
ISSUER: Final = "jan-server"
ACCESS: Final = "access"
REFRESH_PREFIX: Final = "jrt_"
_ALGORITHMS: Final = ["HS256"]


def issue_access_token(
    secret: str, *, user_id: str, ttl: int = ACCESS_TOKEN_TTL_SECONDS, now: float | None = None
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "typ": ACCESS, "iss": ISSUER, "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_access_token(secret: str, token: str) -> str:
    """The user ID of a valid access token; 401 for anything else."""
    return decode_access_token(secret, token)[0]


def decode_access_token(secret: str, token: str) -> tuple[str, float]:
    """The user ID and expiry (epoch seconds) of a valid access token; 401 otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=_ALGORITHMS,
            issuer=ISSUER,
            options={"require": ["sub", "typ", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Access token expired; refresh it.", code="token_expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid access token.", code="invalid_token") from None
    if claims.get("typ") != ACCESS or not isinstance(claims.get("sub"), str):
        raise Unauthorized("Invalid access token.", code="invalid_token")
    return claims["sub"], float(claims["exp"])


def new_refresh_token() -> tuple[str, bytes]:
    """A refresh token and the hash stored for it."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> bytes:
    # 256 random bits: a plain hash is enough (no dictionary to guess from).
    return hashlib.sha256(token.encode()).digest()
