"""The model catalog: which endpoints serve which model for whom, held in memory.

Providers are stored per organization (``project_id`` NULL) or per project; the built-in
provider comes from ``JAN_INFERENCE_MODEL_URL``. A model name resolves project first,
then organization, then built-in, so a tenant can shadow a built-in model with its own.
Each endpoint's ``/models`` is polled (discovery); the answers are stored in the database
so any instance, a fresh one included, routes at once. An endpoint that may scale to zero
(a KServe provider, the built-in model) is never polled just to stay current, which would
keep it awake: in the background only while this process is calling it, otherwise on
demand — when a caller names a model its catalog lacks, or lists models while such an
endpoint has never answered (``discover_on_demand``); a cold one is waited for then, within
``JAN_UPSTREAM_WARMUP_SECONDS``. The request path only reads the
in-memory indexes built here, one per scope (organization or project); they are reloaded
from the database every few seconds and right away when a request names a model we do
not know (rate-limited). A reload compares cheap stamps and rebuilds only the scopes whose
providers changed (``Catalog.refresh``): one tenant's change, or a thousand unchanged
tenants, cost the others next to nothing.

A stored endpoint the provider guard refuses without a lookup (an IP literal outside
``JAN_PROVIDER_ALLOWED_HOSTS``: rows written before the guard, or before the operator
narrowed the list) is left out on every load; names are vetted when connected to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from functions.common.db import Executor
from functions.common.upstream import timeout as upstream_timeout
from functions.services.inference.health import Endpoint, HealthBook
from functions.services.providers import store
from functions.services.providers.directory import BUILTIN_ID, DISCOVERY_ERRORS, Provider, Providers

log = logging.getLogger(__name__)

MISS_RELOAD_SECONDS = 2.0
DISCOVERY_CONCURRENCY = 4
LOAD_BATCH = 100  # providers read in full per query when a reload finds them changed
PROBE_MESSAGES = [{"role": "user", "content": "ping"}]  # a returning endpoint's trial


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
    # Each endpoint's weight when the provider sets weights (the router splits traffic by
    # them); empty: least outstanding requests.
    weights: dict[Endpoint, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.labels:
            index = {url: n for n, url in enumerate(self.provider.base_urls)}
            for ep in self.endpoints:
                self.labels[ep] = self.provider.label(index[ep.base_url])
        if self.provider.weights and not self.weights:
            by_url = dict(zip(self.provider.base_urls, self.provider.weights, strict=True))
            for ep in self.endpoints:
                self.weights[ep] = by_url[ep.base_url]

    def card(self, name: str | None = None) -> dict[str, Any]:
        """The model object; under an alias's ``name``, with ``jan_alias_of`` naming this
        model (a Jan extension)."""
        card = {
            "id": name or self.model,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }
        if name is not None and name != self.model:
            card["jan_alias_of"] = self.model
        return card


Scope = tuple[str, str | None]  # (organization_id, project_id or None)


@dataclass
class _Discovered:
    models: list[tuple[str, str | None]]
    at: float


@dataclass(slots=True)
class _Stored:
    """A stored provider as the catalog last loaded it."""

    updated_at: datetime
    rank: tuple[datetime, str]  # (created_at, id): the oldest wins a name two share
    scope: Scope
    provider: Provider | None  # None: its credential does not decrypt here
    base_urls: tuple[str, ...]  # as stored: the keys of its answers in ``_discovered``
    digest: frozenset[tuple[str, int, int]] = frozenset()  # (base_url, models, checksum)
    routes: dict[str, ModelRoute] | None = None  # its models' routes; None: to be made


@dataclass
class Catalog:
    health: HealthBook
    providers: Providers
    reload_seconds: float = 10.0
    discover_seconds: float = 60.0
    load_batch: int = LOAD_BATCH
    _scopes: dict[Scope, dict[str, ModelRoute]] = field(default_factory=dict)
    _builtin: dict[str, ModelRoute] = field(default_factory=dict)
    _stored: dict[str, _Stored] = field(default_factory=dict)
    _members: dict[Scope, dict[str, _Stored]] = field(default_factory=dict)
    _discovered: dict[tuple[str, str], _Discovered] = field(default_factory=dict)
    _aliases: dict[Scope, dict[str, str]] = field(default_factory=dict)
    _fallbacks: dict[Scope, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    _routing_stamp: Any = None
    _last_reload: float = 0.0
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # On-demand polls: the one in flight per (provider, URL), shared by every caller that
    # asks meanwhile, and when each was last started (at most once per MISS_RELOAD_SECONDS).
    _polls: dict[tuple[str, str], asyncio.Task[bool]] = field(default_factory=dict)
    _asked_at: dict[tuple[str, str], float] = field(default_factory=dict)
    # What reloads cost so far (tests and benchmarks read them): provider rows loaded,
    # providers whose routes were made, scope indexes rebuilt.
    loaded_providers: int = 0
    routed_providers: int = 0
    rebuilt_scopes: int = 0

    # --- the request path -------------------------------------------------------------
    def target(self, organization_id: str, project_id: str | None, name: str) -> str:
        """The model an alias names (the project's first, then the organization's), or
        ``name`` itself when it is no alias. One step: an alias's target is never an alias
        again, so an alias may take over the name of the model it replaces."""
        if project_id is not None:
            found = self._aliases.get((organization_id, project_id))
            if found is not None and name in found:
                return found[name]
        found = self._aliases.get((organization_id, None))
        if found is not None and name in found:
            return found[name]
        return name

    async def target_fresh(self, organization_id: str, project_id: str | None, name: str) -> str:
        """``target``; a name that is neither an alias nor a model reloads first, as
        ``resolve_fresh`` does (an alias just made elsewhere applies at once)."""
        model = self.target(organization_id, project_id, name)
        if (
            model == name
            and self.resolve(organization_id, project_id, name) is None
            and time.monotonic() - self._last_reload > MISS_RELOAD_SECONDS
        ):
            await self.refresh()
            model = self.target(organization_id, project_id, name)
        return model

    def fallbacks(self, organization_id: str, project_id: str | None, name: str) -> tuple[str, ...]:
        """The models to try in turn when ``name`` (a model or an alias) cannot serve:
        the project's list for it, else the organization's."""
        for scope in ((organization_id, project_id), (organization_id, None)):
            found = self._fallbacks.get(scope)
            if found is not None and name in found:
                return found[name]
        return ()

    def aliases(self, organization_id: str, project_id: str | None) -> dict[str, str]:
        """The aliases a principal sees: its organization's, overridden by its project's."""
        merged = dict(self._aliases.get((organization_id, None), {}))
        if project_id is not None:
            merged.update(self._aliases.get((organization_id, project_id), {}))
        return merged

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
        if route is None and await self.discover_on_demand(organization_id, project_id):
            route = self.resolve(organization_id, project_id, model)
        return route

    def visible(self, organization_id: str, project_id: str | None) -> dict[str, ModelRoute]:
        merged = dict(self._builtin)
        merged.update(self._scopes.get((organization_id, None), {}))
        if project_id is not None:
            merged.update(self._scopes.get((organization_id, project_id), {}))
        return merged

    def provider(self, provider_id: str) -> Provider | None:
        stored = self._stored.get(provider_id)
        return stored.provider if stored is not None else None

    # --- loading ----------------------------------------------------------------------
    async def refresh(self) -> None:
        """Reload what changed: providers, their discovered models, and shared health.

        A reload reads each active provider's ``updated_at`` and, per endpoint, a count and
        checksum of its stored ``/models`` answer (``store.discovery_digests``); only the
        providers where one of those moved are read in full, ``load_batch`` at a time, and
        only their routes are made again and their scopes' indexes rebuilt (``_rebuild``).
        A reload that finds nothing changed reads a few numbers per provider and endpoint
        and rebuilds nothing."""
        async with self._reload_lock:
            self._last_reload = time.monotonic()
            db = self.providers.runtime.db
            stamps = await db.read(store.provider_stamps)
            digests: dict[str, set[tuple[str, int, int]]] = {}
            fresh: dict[tuple[str, str], float] = {}
            for d in await db.read(store.discovery_digests):
                digests.setdefault(d.provider_id, set()).add((d.base_url, d.models, d.checksum))
                fresh[(d.provider_id, d.base_url)] = d.discovered_at.timestamp()
            dirty: set[Scope] = set()
            for provider_id in [p for p in self._stored if p not in stamps]:
                dirty.add(self._forget(provider_id))
            changed = [
                provider_id
                for provider_id, updated_at in stamps.items()
                if (known := self._stored.get(provider_id)) is None
                or known.updated_at != updated_at
                or known.digest != digests.get(provider_id, frozenset())
            ]
            for n in range(0, len(changed), self.load_batch):
                batch = changed[n : n + self.load_batch]
                dirty |= await self._load(batch, digests)
            # Stored answers that did not change may still have been polled again since.
            for key, at in fresh.items():
                entry = self._discovered.get(key)
                if entry is not None and at > entry.at:
                    entry.at = at
            await self._load_routing()
            await self.health.pull()
            await self._rebuild(dirty)

    async def _load_routing(self) -> None:
        """Read the model aliases and fallback lists again when a count or last change
        moved (all from one server, the rows after the stamp, so never older than it)."""
        known = self._routing_stamp

        async def read(ex: Executor) -> tuple[Any, list[Any] | None, list[Any] | None]:
            stamp = await store.routing_stamp(ex)
            if stamp == known:
                return stamp, None, None
            return stamp, await store.model_aliases(ex), await store.model_fallbacks(ex)

        stamp, alias_rows, fallback_rows = await self.providers.runtime.db.read(read)
        if alias_rows is None or fallback_rows is None:
            return
        aliases: dict[Scope, dict[str, str]] = {}
        for row in alias_rows:
            scope = (row["organization_id"], row["project_id"])
            aliases.setdefault(scope, {})[row["alias"]] = row["model"]
        fallbacks: dict[Scope, dict[str, tuple[str, ...]]] = {}
        for row in fallback_rows:
            scope = (row["organization_id"], row["project_id"])
            fallbacks.setdefault(scope, {})[row["model"]] = tuple(row["fallbacks"])
        self._aliases, self._fallbacks, self._routing_stamp = aliases, fallbacks, stamp

    async def _load(
        self, provider_ids: list[str], digests: dict[str, set[tuple[str, int, int]]]
    ) -> set[Scope]:
        """Read these providers and their discovered models; the scopes they touch."""
        db = self.providers.runtime.db
        rows = await db.read(lambda ex: store.active_providers(ex, provider_ids=provider_ids))
        found = await db.read(lambda ex: store.discovered_models(ex, provider_ids=provider_ids))
        self.loaded_providers += len(rows)
        answers: dict[tuple[str, str], _Discovered] = {}
        for d in found:
            key = (d.provider_id, d.base_url)
            entry = answers.get(key)
            if entry is None:
                entry = answers[key] = _Discovered([], d.discovered_at.timestamp())
            entry.models.append((d.model, d.owned_by))
        dirty: set[Scope] = set()
        # A provider not read (a replica behind the one that listed it, or gone meanwhile)
        # keeps what we had and is compared again at the next reload.
        for row in rows:
            provider_id = row["id"]
            if provider_id in self._stored:
                dirty.add(self._forget(provider_id))
            stored = _Stored(
                updated_at=row["updated_at"],
                rank=(row["created_at"], provider_id),
                scope=(row["organization_id"], row["project_id"]),
                provider=self.providers.from_row(row),
                base_urls=tuple(row["base_urls"]),
                digest=frozenset(digests.get(provider_id, ())),
            )
            self._stored[provider_id] = stored
            self._members.setdefault(stored.scope, {})[provider_id] = stored
            for url in row["base_urls"]:
                answer = answers.get((provider_id, url))
                if answer is not None:
                    self._discovered[(provider_id, url)] = answer
            dirty.add(stored.scope)
        return dirty

    def _forget(self, provider_id: str) -> Scope:
        stored = self._stored.pop(provider_id)
        members = self._members.get(stored.scope)
        if members is not None:
            members.pop(provider_id, None)
            if not members:
                del self._members[stored.scope]
        for url in stored.base_urls:
            self._discovered.pop((provider_id, url), None)
        return stored.scope

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

    async def _rebuild(self, scopes: set[Scope]) -> None:
        """Rebuild these scopes' indexes (the caller holds the reload lock).

        Each provider's routes are kept and made again only when it changed, one provider
        at a time with the event loop let go in between (a provider's are bounded by the
        provider limits); a scope's index is then a merge of its providers' routes, the
        oldest provider winning a name two of them list."""
        for scope in scopes:
            members = sorted(self._members.get(scope, {}).values(), key=lambda s: s.rank)
            served: list[dict[str, ModelRoute]] = []
            for stored in members:
                routes = stored.routes
                if routes is None:
                    provider = stored.provider
                    routes = self._routes_for(provider) if provider is not None else {}
                    stored.routes = routes
                    self.routed_providers += 1
                    await asyncio.sleep(0)
                if routes:
                    served.append(routes)
            self.rebuilt_scopes += 1
            if not served:
                self._scopes.pop(scope, None)
            elif len(served) == 1:
                self._scopes[scope] = served[0]  # never changed in place: shared as is
            else:
                merged: dict[str, ModelRoute] = {}
                for routes in reversed(served):  # newest first; older ones overwrite
                    merged.update(routes)
                self._scopes[scope] = merged

    def _rebuild_builtin(self) -> None:
        builtin = self.providers.builtin()
        if builtin is not None:
            self._builtin = self._routes_for(builtin)

    # --- discovery --------------------------------------------------------------------
    async def discover_builtin(self, *, warmup: float = 0.0) -> bool:
        """Poll the built-in endpoint; True when its answer differs from what we held."""
        builtin = self.providers.builtin()
        if builtin is None:
            return False
        url = builtin.base_urls[0]
        try:
            models = await self.providers.list_models(
                url, builtin.headers, label=BUILTIN_ID, warmup=warmup
            )
        except DISCOVERY_ERRORS as exc:
            log.warning("built-in model discovery failed", extra={"error": type(exc).__name__})
            return False
        known = self._discovered.get((BUILTIN_ID, url))
        self._discovered[(BUILTIN_ID, url)] = _Discovered(models, time.time())
        if known is not None and set(known.models) == set(models):
            return False
        self._rebuild_builtin()
        return True

    async def discover_provider(
        self, provider: Provider, *, urls: Collection[str] | None = None, warmup: float = 0.0
    ) -> bool:
        """Poll a stored provider's endpoints (or those of ``urls``); what answered counts
        from now on. True when an answer differs from what the catalog held (its scope
        needs rebuilding)."""
        now = time.time()
        changed = False
        found_by_url = await self.providers.discover(provider, urls=urls, warmup=warmup)
        for url, found in found_by_url.items():
            if isinstance(found, str):
                continue
            known = self._discovered.get((provider.id, url))
            changed = changed or known is None or set(known.models) != set(found)
            self._discovered[(provider.id, url)] = _Discovered(found, now)
        if changed and (stored := self._stored.get(provider.id)) is not None:
            stored.routes = None
        return changed

    def _due(self, provider: Provider, url: str, now: float) -> bool:
        """Whether the background should poll this endpoint now: its answer is older than
        ``discover_seconds`` and, for one that may scale to zero, this process called it
        since that answer (a poll then finds it awake; an idle one is left asleep)."""
        found = self._discovered.get((provider.id, url))
        if found is not None and now - found.at <= self.discover_seconds:
            return False
        if not provider.scales_to_zero:
            return True
        return found is not None and self.health.used_at(url) > found.at

    async def discover_stale(self) -> None:
        now = time.time()
        stale = [
            (provider, urls)
            for stored in self._stored.values()
            if (provider := stored.provider) is not None
            and (urls := [u for u in provider.base_urls if self._due(provider, u, now)])
        ]
        # A few at a time: one by one, every tenant's dead endpoint cost its full timeout
        # in turn while the upkeep loop (probes, reloads) waited; all at once would take
        # the writer pool from the request path.
        limit = asyncio.Semaphore(DISCOVERY_CONCURRENCY)

        async def discover(provider: Provider, urls: list[str]) -> bool:
            async with limit:
                return await self.discover_provider(provider, urls=urls)

        outcomes = await asyncio.gather(*(discover(*s) for s in stale), return_exceptions=True)
        dirty: set[Scope] = set()
        for (provider, _), outcome in zip(stale, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error(
                    "model discovery failed", extra={"provider": provider.id}, exc_info=outcome
                )
            elif outcome and (stored := self._stored.get(provider.id)) is not None:
                dirty.add(stored.scope)
        builtin = self.providers.builtin()
        if builtin is not None and self._due(builtin, builtin.base_urls[0], now):
            await self.discover_builtin()
        if dirty:
            async with self._reload_lock:  # never interleaved with a reload's rebuild
                await self._rebuild(dirty)

    async def discover_on_demand(
        self, organization_id: str, project_id: str | None, *, missing_only: bool = False
    ) -> bool:
        """Someone asks: poll the endpoints this caller can reach that may scale to zero
        and whose answer is missing (or, unless ``missing_only``, older than
        ``discover_seconds``), each at most once per ``MISS_RELOAD_SECONDS`` and once at a
        time, waiting for a cold one within the providers' ``warmup_seconds``. True when
        the caller's view changed."""
        now, clock = time.time(), time.monotonic()
        scopes: list[Scope] = [(organization_id, None)]
        if project_id is not None:
            scopes.append((organization_id, project_id))
        providers = [s.provider for scope in scopes for s in self._members.get(scope, {}).values()]
        providers.append(self.providers.builtin())
        wanted: list[tuple[Provider, str]] = []
        for provider in providers:
            if provider is None or not provider.scales_to_zero:
                continue
            for url in provider.base_urls:
                key = (provider.id, url)
                found = self._discovered.get(key)
                if found is not None and (missing_only or now - found.at <= self.discover_seconds):
                    continue
                recently = (
                    clock - self._asked_at.get(key, -MISS_RELOAD_SECONDS) <= MISS_RELOAD_SECONDS
                )
                if key in self._polls or not recently:
                    wanted.append((provider, url))
        if not wanted:
            return False
        changed = await asyncio.gather(*(self._poll_on_demand(p, u) for p, u in wanted))
        dirty = {
            stored.scope
            for (provider, _), moved in zip(wanted, changed, strict=True)
            if moved and (stored := self._stored.get(provider.id)) is not None
        }
        if dirty:
            async with self._reload_lock:
                await self._rebuild(dirty)
        return any(changed)

    async def _poll(self, provider: Provider, url: str, warmup: float) -> bool:
        try:
            if provider.id == BUILTIN_ID:
                return await self.discover_builtin(warmup=warmup)
            return await self.discover_provider(provider, urls=(url,), warmup=warmup)
        except Exception:  # the caller gets a 404 for its model, never this
            log.exception("model discovery failed", extra={"provider": provider.id})
            return False

    async def _poll_on_demand(self, provider: Provider, url: str) -> bool:
        key = (provider.id, url)
        task = self._polls.get(key)
        if task is None:
            self._asked_at[key] = time.monotonic()
            warmup = self.providers.warmup_seconds
            task = asyncio.get_running_loop().create_task(self._poll(provider, url, warmup))
            self._polls[key] = task
            task.add_done_callback(lambda _: self._polls.pop(key, None))
        # Shared: a caller that goes away must not cancel the poll the others wait for.
        return await asyncio.shield(task)

    def _headers_for(self, base_url: str) -> dict[str, str]:
        """The credentials of a provider that lists this URL (the oldest), for probing."""
        builtin = self.providers.builtin()
        if builtin is not None and base_url in builtin.base_urls:
            return builtin.headers
        listing = [
            s for s in self._stored.values() if s.provider and base_url in s.provider.base_urls
        ]
        oldest = min(listing, key=lambda s: s.rank, default=None)
        return oldest.provider.headers if oldest is not None and oldest.provider else {}

    async def probe(self, base_url: str) -> bool:
        """Health probe before an ejected endpoint returns: it must prove it serves. Its
        ``/models`` answers, and a one-token chat completion for the first model it lists
        is answered: a success, or a refusal of the request itself (400/404/422: e.g. an
        embeddings model; the engine answered). A 5xx, 429, redirect or no answer fails."""
        headers = self._headers_for(base_url)
        try:
            models = await self.providers.list_models(base_url, headers)
        except DISCOVERY_ERRORS:
            return False
        if not models:
            return True  # nothing to ask for; it answers
        body = {"model": models[0][0], "messages": PROBE_MESSAGES, "max_tokens": 1}
        timeout = upstream_timeout(
            connect=self.providers.discovery_timeout, idle=self.providers.discovery_timeout
        )
        try:
            async with self.providers.upstream.session.post(
                f"{base_url}/chat/completions",
                json=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                return response.status < 300 or response.status in (400, 404, 422)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

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
                    next_discovery = now + self.discover_seconds / 2
                    await self.discover_stale()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("catalog upkeep failed")
