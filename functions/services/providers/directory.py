"""Model providers, the layer below the areas that admin and chat both use.

A provider is an OpenAI-compatible server (KServe, vLLM, llama.cpp, Ollama, SGLang,
OpenAI) stored per organization or per project (``store``), with its credential
encrypted under MODEL_PROVIDER_SECRET. ``Providers`` turns stored rows into ``Provider``
values (decrypting, leaving out endpoints the guard refuses), and discovers which models
an endpoint serves by polling its ``/models`` (answers stored, so every instance routes
at once). Admin calls ``discover`` after a change and then ``changed()``, which tells the
subscribers in this process (the inference catalog, when this process serves models).

A ``/models`` answer is a tenant's server talking: it is read uncompressed, up to
``max_discovery_bytes`` (``JAN_UPSTREAM_MAX_DISCOVERY_BYTES``) and within
``discovery_timeout`` for the whole exchange, so a huge or dripping answer costs the
gateway neither memory nor its upkeep loop's time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson

from functions.common.crypto import DecryptError, SecretBox
from functions.common.netguard import AddressRefused
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.common.upstream import ProviderGuard, Upstream, retry_after_seconds
from functions.common.upstream import timeout as upstream_timeout
from functions.services.providers import store

log = logging.getLogger(__name__)

KINDS = ("kserve", "vllm", "llamacpp", "ollama", "sglang", "openai")
BUILTIN_ID = "builtin"
# The path a bare host gets, per kind (KServe's OpenAI runtimes answer under /openai/v1).
_DEFAULT_PATH = {"kserve": "/openai/v1", "openai": "/v1"}
DISCOVERY_TIMEOUT_SECONDS = 5.0
_USERINFO = re.compile(r"^([a-z][a-z0-9+.\-]*://)[^/@]*@", re.IGNORECASE)
MAX_DISCOVERY_BYTES = 4 * 1024 * 1024  # JAN_UPSTREAM_MAX_DISCOVERY_BYTES' default


class BadAnswer(ValueError):
    """A ``/models`` answer that is not a model list we take (status, encoding, time)."""


class Warming(BadAnswer):
    """A 503: the endpoint is starting (scaling from zero, loading its model) or full."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("/models answered 503")
        self.retry_after = retry_after


class AnswerTooLarge(BadAnswer):
    """A ``/models`` answer longer than the limit (reading stopped there)."""


# What a discovery or probe may fail with: the connection (aiohttp's errors, the address
# guard's refusals, which are OSErrors), or the answer (not JSON, no list, too large).
DISCOVERY_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
    KeyError,
)


def normalize_base_url(kind: str, url: str) -> str:
    """An endpoint's OpenAI base: a bare host gets its kind's usual path; others are kept.

    User-info (``http://user:password@host``) is refused: a credential belongs in the
    provider's ``api_key``, which is stored encrypted, while a URL is shown in answers and
    kept in health state and logs."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials in the URL (user:password@) are not accepted; give the key as "
            "'api_key', which is stored encrypted"
        )
    try:
        port = parts.port  # raises for a port out of range or not a number
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"invalid port in {url!r}")
    if not parts.path:
        url += _DEFAULT_PATH.get(kind, "/v1")
    return url


def redact_url(url: str) -> str:
    """A URL fit for a log line or an answer: any user-info replaced (rows stored before
    user-info was refused may still carry some)."""
    return _USERINFO.sub(r"\1***@", url)


def _weights(stored: list[int] | None, served: list[int]) -> tuple[int, ...]:
    """The stored weights of the base URLs served (``served``: their places); none when
    none are stored, or when every one left has weight 0 (nothing to split)."""
    if stored is None:
        return ()
    weights = tuple(stored[i] for i in served)
    return weights if any(weights) else ()


def endpoint_label(provider_id: str, index: int) -> str:
    """How metrics and logs name an endpoint: its provider and its place in the provider's
    list (``prov_…/0``), never its URL; the built-in provider's one endpoint is ``builtin``."""
    return BUILTIN_ID if provider_id == BUILTIN_ID else f"{provider_id}/{index}"


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """How much one tenant may make every instance hold in memory (see the settings)."""

    base_urls: int = 16
    models: int = 1000
    discovered_models: int = 1000
    model_name_chars: int = 256
    per_organization: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderLimits:
        return cls(
            base_urls=settings.jan_provider_max_base_urls,
            models=settings.jan_provider_max_models,
            discovered_models=settings.jan_provider_max_discovered_models,
            model_name_chars=settings.jan_model_name_max_chars,
            per_organization=settings.jan_providers_per_organization,
        )


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """What a provider declares about its engines (a Jan extension, ``options`` in the
    admin API): whether they take vLLM's ``priority`` and ``prompt_cache_key`` in a request
    body (the gateway forwards the project's priority and the request's affinity key only
    then), and their context window in tokens (``context_window`` for every model,
    ``context_windows`` per model), which context-window fallbacks compare."""

    priority: bool = False
    prompt_cache_key: bool = False
    context_window: int | None = None
    context_windows: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_json(cls, raw: Any) -> ProviderOptions:
        """As stored (validated by the admin API when written) or configured
        (``JAN_INFERENCE_MODEL_OPTIONS``); what is not of its type is left out."""
        if not isinstance(raw, dict) or not raw:
            return NO_OPTIONS
        windows = raw.get("context_windows")
        return cls(
            priority=raw.get("priority") is True,
            prompt_cache_key=raw.get("prompt_cache_key") is True,
            context_window=_tokens(raw.get("context_window")),
            context_windows=tuple(
                sorted(
                    (model, tokens)
                    for model, value in (windows.items() if isinstance(windows, dict) else ())
                    if (tokens := _tokens(value)) is not None
                )
            ),
        )

    def window(self, model: str) -> int | None:
        """The declared context window of ``model`` (None: not declared)."""
        for name, tokens in self.context_windows:
            if name == model:
                return tokens
        return self.context_window


NO_OPTIONS = ProviderOptions()


def _tokens(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else None


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    organization_id: str | None
    project_id: str | None
    name: str
    kind: str
    base_urls: tuple[str, ...]
    api_key: str | None
    static_models: tuple[str, ...] = ()
    created: int = 0
    # Per base URL, how metrics and logs name it (its place in the stored list, which
    # stays put when the guard leaves an earlier one out); empty: by place in base_urls.
    labels: tuple[str, ...] = ()
    # Per base URL, its relative share of the traffic (a canary's 5 beside 95); empty: no
    # weights, the router balances by least outstanding requests.
    weights: tuple[int, ...] = ()
    options: ProviderOptions = NO_OPTIONS

    def label(self, index: int) -> str:
        return self.labels[index] if self.labels else endpoint_label(self.id, index)

    @property
    def scales_to_zero(self) -> bool:
        """KServe's InferenceServices (and the built-in model, one of them in the manifests)
        may scale to zero: a poll would wake them, so discovery asks them only on demand or
        while they are in use (``Catalog``)."""
        return self.kind == "kserve"

    @property
    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


Discovered = list[tuple[str, str | None]]  # (model id, owned_by) as an endpoint lists them
Subscriber = Callable[[], Awaitable[None]]


class Providers:
    def __init__(
        self,
        runtime: Runtime,
        upstream: Upstream,
        *,
        box: SecretBox | None,
        guard: ProviderGuard | None,
        builtin_url: str | None = None,
        discovery_timeout: float = DISCOVERY_TIMEOUT_SECONDS,
        limits: ProviderLimits | None = None,
        max_discovery_bytes: int = MAX_DISCOVERY_BYTES,
        warmup_seconds: float = 0.0,
        builtin_options: ProviderOptions = NO_OPTIONS,
    ) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.box = box
        self.guard = guard
        self.builtin_url = builtin_url.rstrip("/") if builtin_url else None
        self.builtin_options = builtin_options  # JAN_INFERENCE_MODEL_OPTIONS
        self.discovery_timeout = discovery_timeout
        self.max_discovery_bytes = max_discovery_bytes
        self.warmup_seconds = warmup_seconds  # JAN_UPSTREAM_WARMUP_SECONDS
        self.subscribers: list[Subscriber] = []
        self.limits = limits or ProviderLimits()
        self._refused: set[tuple[str, str]] = set()  # (provider, URL) logged once
        self._cut: set[str] = set()  # endpoints whose /models was cut, logged once

    # --- stored rows ------------------------------------------------------------------
    def from_row(self, row: asyncpg.Record) -> Provider | None:
        """A stored provider, or None when its credential cannot be decrypted here."""
        api_key = None
        if row["api_key_ciphertext"] is not None:
            if self.box is None:
                return None
            try:
                api_key = self.box.decrypt(row["api_key_ciphertext"], associated=row["id"])
            except DecryptError:
                log.error("provider credentials do not decrypt", extra={"provider": row["id"]})
                return None
        served = [(i, u) for i, u in enumerate(row["base_urls"]) if self._permitted(row["id"], u)]
        return Provider(
            id=row["id"],
            organization_id=row["organization_id"],
            project_id=row["project_id"],
            name=row["name"],
            kind=row["kind"],
            base_urls=tuple(u for _, u in served),
            api_key=api_key,
            static_models=tuple(row["static_models"]),
            created=int(row["created_at"].timestamp()),
            labels=tuple(endpoint_label(row["id"], i) for i, _ in served),
            weights=_weights(row["endpoint_weights"], [i for i, _ in served]),
            options=ProviderOptions.from_json(row["options"]),
        )

    def _permitted(self, provider_id: str, url: str) -> bool:
        reason = self.guard.refusal(url) if self.guard is not None else None
        if reason is None:
            return True
        if (provider_id, url) not in self._refused:  # once per process, not every reload
            self._refused.add((provider_id, url))
            log.warning(
                "model provider endpoint refused", extra={"provider": provider_id, "reason": reason}
            )
        return False

    def builtin(self) -> Provider | None:
        """The provider of ``JAN_INFERENCE_MODEL_URL`` (never stored, exempt from the guard)."""
        if not self.builtin_url:
            return None
        return Provider(
            BUILTIN_ID,
            None,
            None,
            "built-in",
            "kserve",
            (self.builtin_url,),
            None,
            options=self.builtin_options,
        )

    async def load(self, provider_id: str) -> Provider | None:
        """One active stored provider, by ID."""
        row = await store.active_provider(self.runtime.db.writer, provider_id=provider_id)
        return self.from_row(row) if row is not None else None

    # --- discovery --------------------------------------------------------------------
    async def list_models(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        label: str | None = None,
        warmup: float = 0.0,
    ) -> Discovered:
        """An endpoint's ``/models`` answer as (id, owned_by) pairs; raises on failure
        (one of ``DISCOVERY_ERRORS``: the connection failed, or the answer is no model list
        of a size we read).

        ``warmup``: how much longer than the discovery timeout a cold endpoint may take
        (a request held while it scales from zero is waited for, and a 503 or a refused
        connection, its revision starting, asked again).

        At most ``limits.discovered_models`` of them, in the endpoint's order; names longer
        than ``limits.model_name_chars`` are left out (an ``owned_by`` that long is dropped).
        What is left out is logged once per endpoint and process, under ``label`` (not
        at all without one: a health probe only wants to know that it answers)."""
        loop = asyncio.get_running_loop()
        seconds = self.discovery_timeout + warmup
        deadline = loop.time() + seconds
        refused = 0  # connections refused so far (a revision starting): the back-off
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    body = await self._models_answer(base_url, headers, seconds)
                break
            except TimeoutError:
                raise BadAnswer("the /models answer took too long") from None
            except Warming as exc:
                delay = min(exc.retry_after or 0.5, 2.0)
                if not warmup or loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
            except aiohttp.ClientConnectorError as exc:
                # Refused while the revision starts (the only endpoints that get a warmup
                # may scale to zero): asked again with back-off, within the warmup.
                delay = min(0.25 * 2**refused, 2.0)
                refused += 1
                if not warmup or isinstance(exc.os_error, AddressRefused):
                    raise
                if loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
        answer = orjson.loads(body)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise ValueError("no data list in /models")
        most, longest = self.limits.discovered_models, self.limits.model_name_chars
        found: dict[str, str | None] = {}
        skipped = 0
        for m in data:
            if not isinstance(m, dict) or not isinstance(name := m.get("id"), str):
                continue
            if not name or len(name) > longest:
                skipped += 1
            elif name not in found:
                if len(found) == most:
                    skipped += 1
                    continue
                owner = m.get("owned_by")
                found[name] = owner if isinstance(owner, str) and len(owner) <= longest else None
        if skipped and label is not None and base_url not in self._cut:
            self._cut.add(base_url)
            log.warning(
                "models listed by an endpoint left out",
                extra={"endpoint": label, "kept": len(found), "left_out": skipped, "most": most},
            )
        return list(found.items())

    async def model_windows(self, base_url: str, headers: dict[str, str]) -> dict[str, int]:
        """The context windows an endpoint's ``/models`` states, by model: vLLM's
        ``max_model_len`` (or a ``context_length`` / ``context_window``); raises as
        ``list_models`` does."""
        seconds = self.discovery_timeout
        try:
            async with asyncio.timeout(seconds):
                body = await self._models_answer(base_url, headers, seconds)
        except TimeoutError:
            raise BadAnswer("the /models answer took too long") from None
        answer = orjson.loads(body)
        data = answer.get("data") if isinstance(answer, dict) else None
        windows: dict[str, int] = {}
        for m in data if isinstance(data, list) else ():
            if not isinstance(m, dict) or not isinstance(name := m.get("id"), str):
                continue
            for key in ("max_model_len", "context_length", "context_window"):
                size = m.get(key)
                if isinstance(size, int) and not isinstance(size, bool) and size > 0:
                    windows[name] = size
                    break
        return windows

    async def _models_answer(self, base_url: str, headers: dict[str, str], idle: float) -> bytes:
        limit = self.max_discovery_bytes
        async with self.upstream.session.get(
            f"{base_url}/models",
            headers={**headers, "accept-encoding": "identity"},
            timeout=upstream_timeout(connect=self.discovery_timeout, idle=idle),
            allow_redirects=False,  # a redirect could point past the address guard
        ) as response:
            if response.status == 503:
                raise Warming(retry_after_seconds(response.headers.get("retry-after")))
            if response.status >= 300:
                raise BadAnswer(f"/models answered {response.status}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise BadAnswer("a compressed /models answer, although identity was asked")
            if response.content_length is not None and response.content_length > limit:
                raise AnswerTooLarge(f"/models answer over {limit} bytes")
            parts: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise AnswerTooLarge(f"/models answer over {limit} bytes")
                parts.append(chunk)
        return b"".join(parts)

    async def discover(
        self, provider: Provider, *, urls: Collection[str] | None = None, warmup: float = 0.0
    ) -> dict[str, Discovered | str]:
        """Poll each endpoint of a stored provider (or those of ``urls``) and store the
        answers; ``warmup`` as for ``list_models``.

        Returns, per base URL, the models it listed, or the error's name."""
        assert provider.organization_id is not None
        outcome: dict[str, Discovered | str] = {}
        for index, url in enumerate(provider.base_urls):
            if urls is not None and url not in urls:
                continue
            try:
                label = provider.label(index)
                models = await self.list_models(url, provider.headers, label=label, warmup=warmup)
            except DISCOVERY_ERRORS as exc:
                outcome[url] = type(exc).__name__
                continue
            async with self.runtime.db.writer.acquire() as conn:
                await store.replace_discovered_models(
                    conn,
                    provider_id=provider.id,
                    organization_id=provider.organization_id,
                    base_url=url,
                    models=models,
                )
            outcome[url] = models
        return outcome

    # --- change notification ----------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> None:
        """Be told when providers change in this process (other instances reload on their
        own clock)."""
        self.subscribers.append(subscriber)

    async def changed(self) -> None:
        for subscriber in self.subscribers:
            await subscriber()
