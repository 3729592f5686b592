"""The model catalog: which endpoints serve which model for whom, held in memory.

Providers are stored per organization (``project_id`` NULL) or per project; the built-in
provider comes from ``JAN_INFERENCE_MODEL_URL``. A model name resolves project first,
then organization, then built-in, so a tenant can shadow a built-in model with its own.
Each endpoint's ``/models`` is polled (discovery); the answers are stored in the database
so any instance, a fresh one included, routes at once. The request path only reads the
in-memory indexes built here; they are rebuilt from the database every few seconds and
right away when a request names a model we do not know (rate-limited).

A stored endpoint the provider guard refuses without a lookup (an IP literal outside
``JAN_PROVIDER_ALLOWED_HOSTS``: rows written before the guard, or before the operator
narrowed the list) is left out on every load; names are vetted when connected to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from functions.services.inference.health import Endpoint, HealthBook
from functions.services.providers import store
from functions.services.providers.directory import BUILTIN_ID, Provider, Providers

log = logging.getLogger(__name__)

MISS_RELOAD_SECONDS = 2.0
DISCOVERY_CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A model as one principal sees it: the provider and the endpoints that serve it."""

    model: str
    provider: Provider
    endpoints: tuple[Endpoint, ...]
    headers: dict[str, str]
    owned_by: str
    created: int
    # How metrics and logs name each endpoint (``prov_…/0``): one dict lookup per use.
    labels: dict[Endpoint, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.labels:
            index = {url: n for n, url in enumerate(self.provider.base_urls)}
            for ep in self.endpoints:
                self.labels[ep] = self.provider.label(index[ep.base_url])

    def card(self) -> dict[str, Any]:
        return {
            "id": self.model,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }


Scope = tuple[str, str | None]  # (organization_id, project_id or None)


@dataclass
class _Discovered:
    models: list[tuple[str, str | None]]
    at: float


@dataclass
class Catalog:
    health: HealthBook
    providers: Providers
    reload_seconds: float = 10.0
    discover_seconds: float = 60.0
    _scopes: dict[Scope, dict[str, ModelRoute]] = field(default_factory=dict)
    _builtin: dict[str, ModelRoute] = field(default_factory=dict)
    _providers: list[Provider] = field(default_factory=list)
    _discovered: dict[tuple[str, str], _Discovered] = field(default_factory=dict)
    _headers_by_url: dict[str, dict[str, str]] = field(default_factory=dict)
    _last_reload: float = 0.0
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # --- the request path -------------------------------------------------------------
    def resolve(
        self, organization_id: str, project_id: str | None, model: str
    ) -> ModelRoute | None:
        if project_id is not None:
            found = self._scopes.get((organization_id, project_id))
            if found is not None and model in found:
                return found[model]
        found = self._scopes.get((organization_id, None))
        if found is not None and model in found:
            return found[model]
        return self._builtin.get(model)

    async def resolve_fresh(
        self, organization_id: str, project_id: str | None, model: str
    ) -> ModelRoute | None:
        """Resolve; on a miss reload once (at most every couple of seconds) and retry."""
        route = self.resolve(organization_id, project_id, model)
        if route is None and time.monotonic() - self._last_reload > MISS_RELOAD_SECONDS:
            await self.refresh()
            route = self.resolve(organization_id, project_id, model)
        return route

    def visible(self, organization_id: str, project_id: str | None) -> dict[str, ModelRoute]:
        merged = dict(self._builtin)
        merged.update(self._scopes.get((organization_id, None), {}))
        if project_id is not None:
            merged.update(self._scopes.get((organization_id, project_id), {}))
        return merged

    def provider(self, provider_id: str) -> Provider | None:
        return next((p for p in self._providers if p.id == provider_id), None)

    # --- loading ----------------------------------------------------------------------
    async def refresh(self) -> None:
        """Reload providers, discovered models and shared health; rebuild the indexes."""
        async with self._reload_lock:
            self._last_reload = time.monotonic()
            db = self.providers.runtime.db
            rows = await db.read(store.active_providers)
            found = await db.read(store.discovered_models)
            self._providers = [p for p in map(self.providers.from_row, rows) if p is not None]
            # Stored answers are authoritative for stored providers; the built-in
            # provider's answer lives only in memory.
            discovered = {k: v for k, v in self._discovered.items() if k[0] == BUILTIN_ID}
            for d in found:
                entry = discovered.get((d.provider_id, d.base_url))
                if entry is None:
                    entry = discovered[(d.provider_id, d.base_url)] = _Discovered(
                        [], d.discovered_at.timestamp()
                    )
                entry.models.append((d.model, d.owned_by))
            self._discovered = discovered
            await self.health.pull()
            self._rebuild()

    def _routes_for(self, provider: Provider) -> dict[str, ModelRoute]:
        serving: dict[str, list[Endpoint]] = {}
        owners: dict[str, str] = {}
        labels: dict[Endpoint, str] = {}
        for index, url in enumerate(provider.base_urls):
            label = provider.label(index)
            ep = self.health.endpoint(url, label=label)
            labels[ep] = label
            found = self._discovered.get((provider.id, url))
            names = [(m, o) for m, o in found.models] if found else []
            names += [(m, None) for m in provider.static_models]
            for model, owned_by in names:
                eps = serving.setdefault(model, [])
                if ep not in eps:
                    eps.append(ep)
                owners.setdefault(model, owned_by or provider.name)
        headers = provider.headers
        return {
            model: ModelRoute(
                model, provider, tuple(eps), headers, owners[model], provider.created, labels
            )
            for model, eps in serving.items()
        }

    def _rebuild(self) -> None:
        scopes: dict[Scope, dict[str, ModelRoute]] = {}
        headers_by_url: dict[str, dict[str, str]] = {}
        for provider in self._providers:
            assert provider.organization_id is not None
            scope = scopes.setdefault((provider.organization_id, provider.project_id), {})
            for model, route in self._routes_for(provider).items():
                scope.setdefault(model, route)  # the oldest provider wins a name clash
            for url in provider.base_urls:
                headers_by_url.setdefault(url, provider.headers)
        builtin = self.providers.builtin()
        if builtin is not None:
            self._builtin = self._routes_for(builtin)
            headers_by_url.setdefault(builtin.base_urls[0], builtin.headers)
        self._scopes = scopes
        self._headers_by_url = headers_by_url

    # --- discovery --------------------------------------------------------------------
    async def discover_builtin(self) -> None:
        builtin = self.providers.builtin()
        if builtin is None:
            return
        url = builtin.base_urls[0]
        try:
            models = await self.providers.list_models(url, builtin.headers, label=BUILTIN_ID)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("built-in model discovery failed", extra={"error": type(exc).__name__})
            return
        self._discovered[(BUILTIN_ID, url)] = _Discovered(models, time.time())
        self._rebuild()

    async def discover_provider(self, provider: Provider) -> None:
        """Poll a stored provider's endpoints; what answered counts from now on."""
        now = time.time()
        for url, found in (await self.providers.discover(provider)).items():
            if not isinstance(found, str):
                self._discovered[(provider.id, url)] = _Discovered(found, now)

    async def discover_stale(self) -> None:
        now = time.time()
        stale = [
            provider
            for provider in self._providers
            if any(
                (d := self._discovered.get((provider.id, url))) is None
                or now - d.at > self.discover_seconds
                for url in provider.base_urls
            )
        ]
        # A few at a time: one by one, every tenant's dead endpoint cost its full timeout
        # in turn while the upkeep loop (probes, reloads) waited; all at once would take
        # the writer pool from the request path.
        limit = asyncio.Semaphore(DISCOVERY_CONCURRENCY)

        async def discover(provider: Provider) -> None:
            async with limit:
                await self.discover_provider(provider)

        outcomes = await asyncio.gather(*map(discover, stale), return_exceptions=True)
        for provider, outcome in zip(stale, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error(
                    "model discovery failed", extra={"provider": provider.id}, exc_info=outcome
                )
        builtin_url = self.providers.builtin_url
        found = self._discovered.get((BUILTIN_ID, builtin_url or ""))
        if builtin_url and (found is None or now - found.at > self.discover_seconds):
            await self.discover_builtin()
        self._rebuild()

    async def probe(self, base_url: str) -> bool:
        """Health probe before an ejected endpoint returns: its ``/models`` answers."""
        headers = self._headers_by_url.get(base_url, {})
        try:
            await self.providers.list_models(base_url, headers)
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return True

    async def run(self, *, probe_seconds: float = 1.0) -> None:
        """Background upkeep: probes every second, reloads and discovery on their clocks."""
        next_reload = time.monotonic() + self.reload_seconds
        next_discovery = time.monotonic()
        while True:
            await asyncio.sleep(probe_seconds)
            try:
                await self.health.probe_due(self.probe)
                now = time.monotonic()
                if now >= next_reload:
                    next_reload = now + self.reload_seconds
                    await self.refresh()
                if now >= next_discovery:
                    # Retry soon while the built-in upstream has not answered yet.
                    empty = bool(self.providers.builtin_url) and not self._builtin
                    next_discovery = now + (2.0 if empty else self.discover_seconds / 2)
                    await self.discover_stale()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("catalog upkeep failed")
