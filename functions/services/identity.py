"""Principal resolution: ``Authorization: Bearer …`` → ``Principal``, and role checks.

Areas call ``await authenticate(request)`` and then ``require_project(principal)`` (model
APIs) or ``require_admin(principal, write=…)`` (Administration API). Credentials:

- ``sk-proj-…`` / ``sk-svcacct-…``: a project key or service-account key, model APIs only;
- ``sk-admin-…``: an organization admin key, Administration API only;
- a JWT access token: a user, acting in the project named by ``OpenAI-Project`` (else their
  default project) and in the organization named by ``OpenAI-Organization`` (else that
  project's organization).

The hot path is a dict lookup plus one HMAC (keys), or two dict lookups (JWTs: a token is
HS256-verified once, then remembered until it expires); the database is asked only when
the in-process cache misses (see ``functions.services.keys`` for the staleness bound).
Membership, role and project-status changes drop every cached grant (``revoke_all``) the
same way deletions do; a lookup still reading when a revocation arrives answers its own
request but is not cached. An admin key carries its owner's current organization role
(operator keys, owned by no user: owner), so a demotion or removal reaches it too.

A principal carries the models it may use: a key's own ``allowed_models`` intersected with
its project's model permissions (``project_model_permissions``, read in the same query), so
the model APIs check them in O(1) without a query. Changing a project's permissions calls
``revoke_all``: at once on that instance, everywhere at once with Redis, else within the
cache's 5 s. Its project's data retention (zero data retention or not) travels the same way.

**When the database cannot be reached** (refused, reset, or — when a cached answer exists
to fall back on — slower than ``STALE_LOOKUP_TIMEOUT_SECONDS``), a credential verified here
at most ``JAN_AUTH_MAX_STALE_SECONDS`` ago is accepted as it was then (counted in
``jan_auth_stale_credentials_total``); any other gets a 503 with ``Retry-After``. After a
failed lookup the database is not asked again for ``UNREACHABLE_RETRY_SECONDS``, so an
outage costs a request no wait. Revocations that arrive meanwhile still evict, and expiry
is checked against the cached expiry as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TypeVar

from prometheus_client import Counter
from starlette.requests import Request

from functions.common import tokens
from functions.common.db import CONNECTION_ERRORS, AnyConnection, Executor
from functions.common.errors import Forbidden, NotFound, Unauthorized, database_unavailable
from functions.common.principal import OrgRole, Owner, Principal, ProjectRole, model_grants
from functions.common.runtime import Component, Runtime
from functions.services import keys
from functions.services.revocations import EVERYTHING, RevocationBus

log = logging.getLogger(__name__)

_UserCacheKey = tuple[str, str | None, str | None]
T = TypeVar("T")

# A lookup with a cached answer to fall back on waits at most this long for the database.
STALE_LOOKUP_TIMEOUT_SECONDS = 1.0
# After a lookup found the database unreachable, it is not asked again for this long.
UNREACHABLE_RETRY_SECONDS = 1.0

STALE_CREDENTIALS = Counter(
    "jan_auth_stale_credentials_total",
    "Requests accepted on a credential verified longer ago than the cache's 5 s, because "
    "the database could not be reached.",
)


class _Unreachable(Exception):
    """A credential lookup could not reach the database."""


class Identity(Component):
    """Per-process credential verification state: caches, revocations, last-used batches."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        assert settings.apikey_secret is not None and settings.jwt_secret is not None
        self.runtime = runtime
        self.apikey_secret = settings.apikey_secret.get_secret_value().encode()
        self.jwt_secret = settings.jwt_secret.get_secret_value()
        self.max_stale = settings.jan_auth_max_stale_seconds
        self.keys = keys.KeyCache(max_stale=self.max_stale)
        self.users: dict[_UserCacheKey, tuple[Principal, float]] = {}
        # Access token → (user ID, its expiry): an HS256 check costs ~25 µs, the lookup ~0.1.
        # The same bytes verify the same way until they expire, which is checked on each hit.
        self.verified_tokens: dict[str, tuple[str, float]] = {}
        self.last_used = keys.LastUsed()
        # Bumped by every revocation: a lookup that started before one does not cache its
        # answer, which may predate the change (a demotion committed while it was reading).
        self.generation = 0
        self.bus: RevocationBus | None = None
        if settings.redis_url is not None:
            self.bus = RevocationBus(settings.redis_url.get_secret_value(), self._on_revocation)
        self._flusher: asyncio.Task[None] | None = None
        # The database outage lookups last saw (monotonic seconds): since when, and until
        # when it is not asked again; None / 0 while it answers.
        self.unreachable_since: float | None = None
        self._unreachable_until = 0.0

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        if self.bus is not None:
            self.bus.start()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(keys.LAST_USED_FLUSH_SECONDS)
            try:
                await self.last_used.flush(self.runtime.db.writer)
            except Exception:
                log.warning("last_used_at flush failed; will retry", exc_info=True)

    async def drain(self, conn: AnyConnection) -> None:
        await self.last_used.flush(conn)

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self.bus is not None:
            await self.bus.close()

    async def authenticate(self, request: Request) -> Principal:
        """Resolve the caller; 401 for missing, malformed, unknown, expired or revoked creds."""
        credential = bearer_credential(request)
        if credential is None:
            if not request.headers.get("authorization"):
                raise Unauthorized(
                    "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
                    code="missing_api_key",
                )
            raise Unauthorized("Expected 'Authorization: Bearer YOUR_KEY'.")
        if credential.startswith(keys.KEY_PREFIXES):
            return await self.verify_key(credential)
        return await self.verify_user_token(
            credential,
            project_id=request.headers.get("openai-project") or None,
            organization_id=request.headers.get("openai-organization") or None,
        )

    async def owner(self, request: Request) -> Owner:
        """Authenticate the request and return the scope its stored objects live in."""
        return Owner.of(await self.authenticate(request))

    # --- revocation ----------------------------------------------------------------------
    def _on_revocation(self, message: bytes) -> None:
        self.generation += 1
        if message == EVERYTHING:
            self.keys.clear()
            self.users.clear()
            return
        with contextlib.suppress(ValueError):
            self.keys.evict(bytes.fromhex(h) for h in message.decode().split(",") if h)

    async def revoke_keys(self, secret_hashes: Iterable[bytes]) -> None:
        """Call after deleting keys: evict here at once, and everywhere with Redis."""
        hashes = list(secret_hashes)
        if not hashes:
            return
        self.generation += 1
        self.keys.evict(hashes)
        if self.bus is not None:
            await self.bus.publish(",".join(h.hex() for h in hashes).encode())

    async def revoke_all(self) -> None:
        """Call after membership, role or project-status changes: drop every cached grant."""
        self._on_revocation(EVERYTHING)
        if self.bus is not None:
            await self.bus.publish(EVERYTHING)

    # --- verification --------------------------------------------------------------------
    async def verify_key(self, plaintext: str) -> Principal:
        secret_hash = keys.hash_key(self.apikey_secret, plaintext)
        now = time.time()
        cached = self.keys.get(secret_hash, now)
        if cached is keys.MISSING:
            stale = self.keys.stale(secret_hash, now)
            generation = self.generation
            try:
                found = await self._ask(
                    lambda: load_key(self.runtime.db.writer, secret_hash=secret_hash),
                    fallback=stale is not None,
                )
            except _Unreachable:
                if stale is None:
                    raise database_unavailable() from None
                STALE_CREDENTIALS.inc()
                found = stale
            else:
                if generation == self.generation:
                    self.keys.put(secret_hash, found, now)
            cached = found
        if not isinstance(cached, keys.CachedKey):
            raise Unauthorized("Incorrect API key provided.")
        if cached.expires_at is not None and cached.expires_at <= now:
            raise Unauthorized("This API key has expired.", code="api_key_expired")
        if cached.project_archived:
            raise Forbidden("This API key's project is archived.", code="project_archived")
        self.last_used.touch(cached.id, now)
        return cached.principal

    async def verify_user_token(
        self, token: str, *, project_id: str | None, organization_id: str | None
    ) -> Principal:
        now = time.time()
        verified = self.verified_tokens.get(token)
        if verified is None or verified[1] <= now:
            verified = tokens.decode_access_token(self.jwt_secret, token)
            if len(self.verified_tokens) >= keys.KEY_CACHE_MAX_ENTRIES:
                self.verified_tokens.clear()
            self.verified_tokens[token] = verified
        user_id = verified[0]
        cache_key = (user_id, project_id, organization_id)
        hit = self.users.get(cache_key)
        if hit is not None and now - hit[1] <= keys.KEY_CACHE_TTL_SECONDS:
            return hit[0]
        stale = hit[0] if hit is not None and now - hit[1] <= self.max_stale else None
        generation = self.generation
        try:
            principal = await self._ask(
                lambda: resolve_user(
                    self.runtime.db.writer,
                    user_id=user_id,
                    project_id=project_id,
                    organization_id=organization_id,
                ),
                fallback=stale is not None,
            )
        except _Unreachable:
            if stale is None:
                raise database_unavailable() from None
            STALE_CREDENTIALS.inc()
            return stale
        if generation == self.generation:  # else revoked meanwhile: answer, do not cache
            if len(self.users) >= keys.KEY_CACHE_MAX_ENTRIES:
                self.users.clear()
            self.users[cache_key] = (principal, now)
        return principal

    async def _ask(self, lookup: Callable[[], Awaitable[T]], *, fallback: bool) -> T:
        """Run a credential lookup, or raise ``_Unreachable``: at once while a recent
        lookup found the database unreachable, else when this one does (with a cached
        answer to fall back on, also when it takes over STALE_LOOKUP_TIMEOUT_SECONDS)."""
        clock = time.monotonic()
        if clock < self._unreachable_until:
            raise _Unreachable
        try:
            if fallback:
                async with asyncio.timeout(STALE_LOOKUP_TIMEOUT_SECONDS):
                    found = await lookup()
            else:
                found = await lookup()
        except CONNECTION_ERRORS as exc:
            clock = time.monotonic()
            self._unreachable_until = clock + UNREACHABLE_RETRY_SECONDS
            if self.unreachable_since is None:
                self.unreachable_since = clock
                log.warning(
                    "credential lookups cannot reach the database; serving cached credentials",
                    extra={"error": type(exc).__name__},
                )
            raise _Unreachable from exc
        if self.unreachable_since is not None:
            log.info(
                "credential lookups reach the database again",
                extra={"outage_seconds": round(time.monotonic() - self.unreachable_since, 1)},
            )
            self.unreachable_since = None
        return found


def bearer_credential(request: Request) -> str | None:
    """The credential of an ``Authorization: Bearer …`` header; None if absent or malformed."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


# --- lookups -------------------------------------------------------------------------------
def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


async def load_key(ex: Executor, *, secret_hash: bytes) -> keys.CachedKey | None:
    row = await ex.fetchrow(
        """
        SELECT k.id, k.kind, k.organization_id, k.project_id, k.owner_user_id,
               k.allowed_models, k.expires_at, p.status AS project_status,
               sa.role AS service_account_role, pm.role AS owner_project_role,
               om.role AS owner_org_role,
               mp.mode AS model_mode, mp.model_ids, p.priority,
               coalesce(pdr.retention_type, odr.retention_type, 'none')
                   IN ('zero_data_retention', 'enhanced_zero_data_retention')
                   AS zero_data_retention
        FROM api_keys k
        LEFT JOIN projects p ON p.id = k.project_id AND p.organization_id = k.organization_id
        LEFT JOIN service_accounts sa
               ON sa.id = k.service_account_id AND sa.organization_id = k.organization_id
        LEFT JOIN project_members pm
               ON pm.project_id = k.project_id AND pm.user_id = k.owner_user_id
        LEFT JOIN organization_members om
               ON k.kind = 'admin' AND om.organization_id = k.organization_id
              AND om.user_id = k.owner_user_id
        LEFT JOIN project_model_permissions mp
               ON mp.project_id = k.project_id AND mp.organization_id = k.organization_id
        LEFT JOIN organization_data_retention odr ON odr.organization_id = k.organization_id
        LEFT JOIN project_data_retention pdr
               ON pdr.project_id = k.project_id AND pdr.organization_id = k.organization_id
        WHERE k.secret_hash = $1
        """,
        secret_hash,
    )
    if row is None:
        return None
    if row["kind"] == "admin":
        # A user's admin key acts with its owner's current organization role (a demoted
        # owner's keys only read); once the owner has left the organization it grants
        # nothing. Operator keys (`jan-server admin`, no owner user) are owners.
        org_role: OrgRole | None = (
            row["owner_org_role"] if row["owner_user_id"] is not None else "owner"
        )
        if org_role is None:
            return None
        principal = Principal(
            kind="admin_key",
            organization_id=row["organization_id"],
            project_id=None,
            user_id=row["owner_user_id"],
            api_key_id=row["id"],
            org_role=org_role,
        )
    else:
        role: ProjectRole = row["service_account_role"] or row["owner_project_role"] or "member"
        allowed, denied = model_grants(row["allowed_models"], row["model_mode"], row["model_ids"])
        principal = Principal(
            kind="service_account" if row["kind"] == "service_account" else "project_key",
            organization_id=row["organization_id"],
            project_id=row["project_id"],
            user_id=row["owner_user_id"],
            api_key_id=row["id"],
            project_role=role,
            allowed_models=allowed,
            denied_models=denied,
            zero_data_retention=row["zero_data_retention"],
            priority=row["priority"],
        )
    return keys.CachedKey(
        id=row["id"],
        principal=principal,
        expires_at=_epoch(row["expires_at"]),
        project_archived=row["project_status"] == "archived",
    )


# The user, the project the request acts in and both memberships, in one round trip: the
# project named by OpenAI-Project, else the user's default project (which, when only
# OpenAI-Organization is named, counts only if it belongs to that organization).
_USER_GRANTS = """
SELECT u.is_guest,
       p.id AS project_id, p.organization_id AS project_organization_id,
       p.status AS project_status, pm.role AS member_role, om.role AS org_role,
       mp.mode AS model_mode, mp.model_ids, p.priority,
       coalesce(pdr.retention_type, odr.retention_type, 'none')
           IN ('zero_data_retention', 'enhanced_zero_data_retention') AS zero_data_retention
FROM users u
LEFT JOIN projects p
       ON p.id = coalesce($2::text, u.default_project_id)
      AND ($2::text IS NOT NULL OR $3::text IS NULL OR p.organization_id = $3::text)
LEFT JOIN project_members pm ON pm.project_id = p.id AND pm.user_id = u.id
LEFT JOIN project_model_permissions mp ON mp.project_id = p.id
LEFT JOIN organization_data_retention odr ON odr.organization_id = p.organization_id
LEFT JOIN project_data_retention pdr ON pdr.project_id = p.id
LEFT JOIN organization_members om
       ON om.user_id = u.id AND om.organization_id = coalesce($3::text, p.organization_id)
WHERE u.id = $1
"""


async def resolve_user(
    ex: Executor, *, user_id: str, project_id: str | None, organization_id: str | None
) -> Principal:
    """A signed-in user's principal for the requested project / organization."""
    row = await ex.fetchrow(_USER_GRANTS, user_id, project_id, organization_id)
    if row is None:
        raise Unauthorized("This account no longer exists.", code="invalid_token")
    org_id: str | None = organization_id or row["project_organization_id"]
    org_role: OrgRole | None = row["org_role"]
    if org_id is None:
        # No project to go by: a user in exactly one organization acts in it.
        orgs = await ex.fetch(
            "SELECT organization_id, role FROM organization_members WHERE user_id = $1 LIMIT 2",
            user_id,
        )
        if len(orgs) == 1:
            org_id, org_role = orgs[0]["organization_id"], orgs[0]["role"]
    if org_id is None:
        raise Forbidden(
            "No project or organization selected: send an OpenAI-Project or "
            "OpenAI-Organization header."
        )
    project_role: ProjectRole | None = None
    if row["project_id"] is not None and row["project_organization_id"] == org_id:
        # Organization owners may act in every project of their organization.
        project_role = row["member_role"] or ("owner" if org_role == "owner" else None)
    if project_id is not None and project_role is None:
        raise NotFound(f"No project found with id '{project_id}'.", param="OpenAI-Project")
    if project_role is None and org_role is None:
        raise NotFound(f"No organization found with id '{org_id}'.", param="OpenAI-Organization")
    if project_role is not None and row["project_status"] == "archived":
        if project_id is not None:
            raise Forbidden(f"Project '{project_id}' is archived.", code="project_archived")
        project_role = None  # an archived default project: act at organization level only
    # The project's model permissions, when the user acts in that project.
    mode = row["model_mode"] if project_role is not None else None
    allowed, denied = model_grants(None, mode, row["model_ids"])
    return Principal(
        kind="user",
        organization_id=org_id,
        project_id=row["project_id"] if project_role is not None else None,
        user_id=user_id,
        org_role=org_role,
        project_role=project_role,
        is_guest=row["is_guest"],
        allowed_models=allowed,
        denied_models=denied,
        zero_data_retention=project_role is not None and row["zero_data_retention"],
        priority=row["priority"] if project_role is not None else None,
    )
