"""`/v1/organization/models/providers` and `/v1/organization/projects/{id}/models/providers`:
the OpenAI-compatible servers (KServe, vLLM, llama.cpp, Ollama, SGLang, OpenAI) an
organization or one project routes models to.

Base URLs must point at public addresses unless the operator allows the host
(``JAN_PROVIDER_ALLOWED_HOSTS``): an owner could otherwise aim the gateway at cloud metadata
or the cluster's own services. Checked here when a URL is set, so the owner hears why at
once, and again whenever a connection is made (``common.upstream.ProviderGuard``).

Credentials are encrypted at rest (AES-GCM under MODEL_PROVIDER_SECRET) and never returned:
responses say only whether a key is set. Creating or changing a provider polls each
endpoint's ``/models`` once, so the answer shows what was discovered and the router in
this process knows at once; other instances pick it up within seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from functions.admin.call import (
    Admin,
    AdminDeps,
    admin_call,
    choice_field,
    deleted,
    load_project,
    string_field,
    ts,
)
from functions.common import ids
from functions.common.crypto import SecretBox
from functions.common.db import is_unique_violation
from functions.common.errors import Conflict, InvalidRequest, NotFound
from functions.common.http import JSON, json_body
from functions.common.netguard import AddressError
from functions.common.pagination import Page, list_page
from functions.common.routing import Operation
from functions.services.providers import store as provider_store
from functions.services.providers.directory import (
    KINDS,
    ProviderLimits,
    Providers,
    normalize_base_url,
    redact_url,
)

PREFIX = "prov_"
MAX_ENDPOINTS = 16  # what the table allows (a CHECK); JAN_PROVIDER_MAX_BASE_URLS may lower it
MAX_URL_CHARS = 2048
MAX_WEIGHT = 10_000  # what the table allows (a CHECK)
OBJECT = "organization.model_provider"


# --- input ---------------------------------------------------------------------------------
def _base_urls(
    body: dict[str, Any], kind: str, limits: ProviderLimits, *, required: bool
) -> list[str] | None:
    raw: Any = body.get("base_urls")
    param = "base_urls"
    if raw is None and body.get("base_url") is not None:
        raw, param = [body["base_url"]], "base_url"
    if raw is None:
        if required:
            raise InvalidRequest("Missing required parameter: 'base_url'.", param="base_url")
        return None
    most = min(limits.base_urls, MAX_ENDPOINTS)
    if not isinstance(raw, list) or not raw or len(raw) > most:
        raise InvalidRequest(f"'base_urls' must be a list of 1 to {most} URLs.", param=param)
    urls: list[str] = []
    for value in raw:
        if not isinstance(value, str):
            raise InvalidRequest("Each base URL must be a string.", param=param)
        if len(value) > MAX_URL_CHARS:
            raise InvalidRequest(
                f"A base URL must be at most {MAX_URL_CHARS} characters.", param=param
            )
        try:
            url = normalize_base_url(kind, value)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid base URL: {exc}.", param=param) from None
        if url not in urls:
            urls.append(url)
    return urls


async def _check_addresses(providers: Providers, body: dict[str, Any], urls: list[str]) -> None:
    """400 when a base URL's host is, or resolves to, an address providers may not use."""
    guard = providers.guard
    if guard is None:
        return
    outcomes = await asyncio.gather(*map(guard.check, urls), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, AddressError):
            raise InvalidRequest(
                f"Base URL not allowed: {outcome.message.rstrip('.')}. Model providers must "
                "be reachable at a public address unless the operator allows the host "
                "(JAN_PROVIDER_ALLOWED_HOSTS).",
                param="base_urls" if "base_urls" in body else "base_url",
                code="base_url_not_allowed",
            )
        if isinstance(outcome, BaseException):
            raise outcome


def _models(body: dict[str, Any], limits: ProviderLimits) -> list[str] | None:
    value = body.get("models")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) and m for m in value):
        raise InvalidRequest("'models' must be a list of model names.", param="models")
    if len(value) > limits.models:
        raise InvalidRequest(
            f"'models' may list at most {limits.models} models.",
            param="models",
            code="too_many_models",
        )
    if any(len(m) > limits.model_name_chars for m in value):
        raise InvalidRequest(
            f"A model name must be at most {limits.model_name_chars} characters.",
            param="models",
        )
    return list(dict.fromkeys(value))


def _weights(body: dict[str, Any], count: int) -> list[int] | None:
    """``weights``: one integer per base URL, in their order (0 to ``MAX_WEIGHT``, not all
    0); None when absent or null (no weights: least outstanding requests)."""
    value = body.get("weights")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != count
        or not all(type(w) is int and 0 <= w <= MAX_WEIGHT for w in value)
        or not any(value)
    ):
        raise InvalidRequest(
            f"'weights' must list one integer from 0 to {MAX_WEIGHT} per base URL, in their "
            "order, not all 0.",
            param="weights",
        )
    return value


def _api_key(body: dict[str, Any]) -> str | None:
    value = body.get("api_key")
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidRequest("'api_key' must be a non-empty string or null.", param="api_key")
    return value


def _active(body: dict[str, Any]) -> bool | None:
    value = body.get("active")
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest("'active' must be a boolean.", param="active")
    return value


MAX_CONTEXT_WINDOW = 100_000_000
_OPTION_FLAGS = ("priority", "prompt_cache_key")


def _window(value: Any, param: str) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 1 <= value <= MAX_CONTEXT_WINDOW
    ):
        raise InvalidRequest(
            f"'{param}' must be a number of tokens from 1 to {MAX_CONTEXT_WINDOW}.", param=param
        )
    return value


def _options(body: dict[str, Any], limits: ProviderLimits) -> dict[str, Any] | None:
    """The ``options`` object (a Jan extension; see ``ProviderOptions``), as stored."""
    value = body.get("options")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'options' must be an object.", param="options")
    out: dict[str, Any] = {}
    for key, item in value.items():
        param = f"options.{key}"
        if key in _OPTION_FLAGS:
            if not isinstance(item, bool):
                raise InvalidRequest(f"'{param}' must be a boolean.", param=param)
            out[key] = item
        elif key == "context_window":
            if item is not None:
                out[key] = _window(item, param)
        elif key == "context_windows":
            if not isinstance(item, dict) or len(item) > limits.models:
                raise InvalidRequest(
                    f"'{param}' must be an object of at most {limits.models} models.",
                    param=param,
                )
            for model, tokens in item.items():
                if not model or len(model) > limits.model_name_chars:
                    raise InvalidRequest(f"'{param}' names an invalid model.", param=param)
                _window(tokens, f"{param}.{model}")
            if item:
                out[key] = dict(item)
        else:
            raise InvalidRequest(
                "'options' takes priority, prompt_cache_key, context_window and context_windows.",
                param=param,
            )
    return out


def _box(providers: Providers) -> SecretBox:
    assert providers.box is not None, "local.prepare or require_secrets guarantees it"
    return providers.box


# --- output --------------------------------------------------------------------------------
def _audited(fields: dict[str, Any]) -> dict[str, Any]:
    """A provider's stored fields as the audit log shows them: base URLs without
    user-info, and whether an API key is set (``has_api_key``), never the key."""
    out = {k: v for k, v in fields.items() if k != "api_key_ciphertext"}
    if "base_urls" in out:
        out["base_urls"] = [redact_url(u) for u in out["base_urls"]]
    if "api_key_ciphertext" in fields:
        out["has_api_key"] = fields["api_key_ciphertext"] is not None
    return out


async def render(
    call: Admin, row: asyncpg.Record, found: list[provider_store.DiscoveredModel] | None = None
) -> dict[str, Any]:
    if found is None:
        found = await provider_store.discovered_models(call.db, provider_ids=[row["id"]])
    by_url: dict[str, list[str]] = {}
    for d in found:
        by_url.setdefault(d.base_url, []).append(d.model)
    models = sorted({*row["static_models"], *(d.model for d in found)})
    weights = row["endpoint_weights"]
    endpoints: list[dict[str, Any]] = [
        {"base_url": redact_url(u), "models": by_url.get(u, [])} for u in row["base_urls"]
    ]
    if weights is not None:  # (Jan's weighted endpoints)
        for endpoint, weight in zip(endpoints, weights, strict=True):
            endpoint["weight"] = weight
    return {
        "object": OBJECT,
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "project_id": row["project_id"],
        "endpoints": endpoints,
        "models": models,
        "static_models": list(row["static_models"]),
        "weights": list(weights) if weights is not None else None,
        "has_api_key": row["api_key_ciphertext"] is not None,
        "active": row["active"],
        "options": row["options"],
        "created_at": ts(row["created_at"]),
        "updated_at": ts(row["updated_at"]),
    }


# --- scope ---------------------------------------------------------------------------------
async def _scope(deps: AdminDeps, request: Request, *, write: bool) -> tuple[Admin, str | None]:
    call = await admin_call(deps, request, write=write)
    project_id = request.path_params.get("project_id")
    if project_id is not None:
        await load_project(
            call.db, organization_id=call.organization_id, project_id=project_id, for_write=write
        )
    return call, project_id


async def _sync_router(call: Admin, provider_id: str) -> None:
    """Discover the provider's models now, and tell this process's router (if it runs one)."""
    providers = call.deps.providers
    provider = await providers.load(provider_id)
    if provider is not None:
        await providers.discover(provider)
    await providers.changed()


async def _load(call: Admin, project_id: str | None, provider_id: str) -> asyncpg.Record:
    row = await provider_store.get_provider(
        call.db,
        organization_id=call.organization_id,
        project_id=project_id,
        provider_id=provider_id,
    )
    if row is None:
        raise NotFound(f"No model provider found with id '{provider_id}'.")
    return row


# --- handlers ------------------------------------------------------------------------------
async def create_provider(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Create a model provider (organization-wide, or for one project)
    tags: [admin]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [name, kind, base_url]
            properties:
              name: {type: string}
              kind: {type: string, enum: [kserve, vllm, llamacpp, ollama, sglang, openai]}
              base_url: {type: string, description: "OpenAI base, or a bare host"}
              base_urls: {type: array, items: {type: string}, description: "Several replicas"}
              api_key: {type: string, description: "Stored encrypted; never returned"}
              models: {type: array, items: {type: string}, description: "Served even if not listed"}
              weights:
                type: array
                nullable: true
                items: {type: integer, minimum: 0, maximum: 10000}
                description: >-
                  Jan extension: one relative weight per base URL, in their order (a canary's
                  5 beside 95); the router splits the model's traffic by them instead of
                  least outstanding requests. 0: a standby, used only when no weighted
                  endpoint is in rotation. Absent or null: no weights.
              active: {type: boolean}
              options: {$ref: "#/components/schemas/JanProviderOptions"}
    responses:
      200: {description: "The organization.model_provider object."}
      400: {description: "Invalid body, or a base URL at a private address."}
      404: {description: No such project.}
      409: {description: A provider with this name exists in this scope.}
    """
    call, project_id = await _scope(deps, request, write=True)
    body = await json_body(request)
    limits = call.deps.providers.limits
    name = string_field(body, "name", required=True)
    kind = choice_field(body, "kind", KINDS)
    urls = _base_urls(body, kind, limits, required=True)
    assert urls is not None
    models = _models(body, limits) or []
    weights = _weights(body, len(urls))
    await _check_addresses(call.deps.providers, body, urls)
    api_key = _api_key(body)
    active = _active(body)
    options = _options(body, limits) or {}
    provider_id = ids.new_id(PREFIX)
    try:
        async with call.db.acquire() as conn, conn.transaction():
            row = await provider_store.insert_provider_within(
                conn,
                limit=limits.per_organization,
                id=provider_id,
                organization_id=call.organization_id,
                project_id=project_id,
                name=name,
                kind=kind,
                base_urls=urls,
                api_key_ciphertext=_box(call.deps.providers).encrypt(
                    api_key, associated=provider_id
                )
                if api_key
                else None,
                static_models=models,
                active=True if active is None else active,
                endpoint_weights=weights,
                options=options,
            )
            if row is None:
                raise InvalidRequest(
                    f"An organization may have at most {limits.per_organization} model "
                    "providers (its projects' included); delete one first.",
                    code="too_many_providers",
                )
            await call.record(
                conn,
                "model_provider.created",
                provider_id,
                project_id=project_id,
                data=_audited({"name": name, "kind": kind, "base_urls": urls,
                               "static_models": models, "active": row["active"],
                               "endpoint_weights": weights,
                               "options": options,
                               "api_key_ciphertext": row["api_key_ciphertext"]}),
            )  # fmt: skip
    except asyncpg.PostgresError as exc:
        if is_unique_violation(exc):
            raise Conflict(f"A model provider named '{name}' already exists.") from None
        raise
    await _sync_router(call, provider_id)
    return JSON(await render(call, row))


async def list_providers(deps: AdminDeps, request: Request) -> Response:
    """
    summary: List model providers
    tags: [admin]
    parameters:
      - {name: after, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
      - {name: order, in: query, schema: {type: string, enum: [asc, desc]}}
    responses:
      200: {description: "A list of organization.model_provider objects."}
    """
    call, project_id = await _scope(deps, request, write=False)
    page = Page.of(request, default_order="asc")
    rows, more = page.split(
        await provider_store.list_providers(
            call.db,
            organization_id=call.organization_id,
            project_id=project_id,
            page=page,
        )
    )
    found = await provider_store.discovered_models(call.db, provider_ids=[r["id"] for r in rows])
    data = [await render(call, r, [d for d in found if d.provider_id == r["id"]]) for r in rows]
    return JSON(list_page(data, has_more=more))


async def get_provider(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Retrieve a model provider
    tags: [admin]
    parameters:
      - {name: provider_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "The organization.model_provider object."}
      404: {description: No such provider in this scope.}
    """
    call, project_id = await _scope(deps, request, write=False)
    row = await _load(call, project_id, request.path_params["provider_id"])
    return JSON(await render(call, row))


async def modify_provider(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Modify a model provider (fields given are changed; `api_key` null clears it)
    tags: [admin]
    parameters:
      - {name: provider_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            properties:
              name: {type: string}
              kind: {type: string}
              base_url: {type: string}
              base_urls: {type: array, items: {type: string}}
              api_key: {type: string, nullable: true}
              models: {type: array, items: {type: string}}
              weights:
                type: array
                nullable: true
                items: {type: integer, minimum: 0, maximum: 10000}
                description: >-
                  Jan extension: one relative weight per base URL, in their order (a canary's
                  5 beside 95); the router splits the model's traffic by them instead of
                  least outstanding requests. 0: a standby, used only when no weighted
                  endpoint is in rotation. Null: drops them; required when base_urls change
                  in number while weights are set.
              active: {type: boolean}
              options: {$ref: "#/components/schemas/JanProviderOptions"}
    responses:
      200: {description: "The updated organization.model_provider object."}
      400: {description: "Invalid body, or a base URL at a private address."}
      404: {description: No such provider in this scope.}
      409: {description: The new name is taken.}
    """
    call, project_id = await _scope(deps, request, write=True)
    provider_id = request.path_params["provider_id"]
    current = await _load(call, project_id, provider_id)
    body = await json_body(request)
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = string_field(body, "name", required=True)
    kind = current["kind"]
    if "kind" in body:
        kind = changes["kind"] = choice_field(body, "kind", KINDS)
    limits = call.deps.providers.limits
    urls = _base_urls(body, kind, limits, required=False)
    if urls is not None:
        await _check_addresses(call.deps.providers, body, urls)
        changes["base_urls"] = urls
    if "api_key" in body:
        api_key = _api_key(body)
        box = _box(call.deps.providers)
        changes["api_key_ciphertext"] = (
            box.encrypt(api_key, associated=provider_id) if api_key else None
        )
    models = _models(body, limits)
    if models is not None:
        changes["static_models"] = models
    count = len(urls if urls is not None else current["base_urls"])
    if "weights" in body:
        changes["endpoint_weights"] = _weights(body, count)
    elif current["endpoint_weights"] is not None and len(current["endpoint_weights"]) != count:
        raise InvalidRequest(
            "The provider's endpoints have weights: give 'weights' for the new base URLs "
            "(or null to drop them).",
            param="weights",
        )
    active = _active(body)
    if active is not None:
        changes["active"] = active
    options = _options(body, limits)
    if options is not None:
        changes["options"] = options
    if not changes:
        return JSON(await render(call, current))
    try:
        async with call.db.acquire() as conn, conn.transaction():
            row = await provider_store.update_provider(
                conn,
                organization_id=call.organization_id,
                project_id=project_id,
                provider_id=provider_id,
                changes=changes,
            )
            if row is None:
                raise NotFound(f"No model provider found with id '{provider_id}'.")
            await call.record(
                conn,
                "model_provider.updated",
                provider_id,
                project_id=project_id,
                changes_requested=_audited(changes),
            )
    except asyncpg.PostgresError as exc:
        if is_unique_violation(exc):
            raise Conflict("A model provider with this name already exists.") from None
        raise
    await _sync_router(call, provider_id)
    return JSON(await render(call, row))


async def delete_provider(deps: AdminDeps, request: Request) -> Response:
    """
    summary: Delete a model provider
    tags: [admin]
    parameters:
      - {name: provider_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "`{object: organization.model_provider.deleted, id, deleted: true}`"}
      404: {description: No such provider in this scope.}
    """
    call, project_id = await _scope(deps, request, write=True)
    provider_id = request.path_params["provider_id"]
    async with call.db.acquire() as conn, conn.transaction():
        gone = await provider_store.delete_provider(
            conn,
            organization_id=call.organization_id,
            project_id=project_id,
            provider_id=provider_id,
        )
        if not gone:
            raise NotFound(f"No model provider found with id '{provider_id}'.")
        await call.record(conn, "model_provider.deleted", provider_id, project_id=project_id)
    await call.deps.providers.changed()
    return JSON(deleted(OBJECT, provider_id))


# --- routes ---------------------------------------------------------------------------------
# The same handlers serve both scopes; `_scope` reads the path's project_id, and the
# OpenAPI document declares that parameter for every path that has it.
ROUTES: list[Operation[AdminDeps]] = [
    e
    for base in (
        "/v1/organization/models/providers",
        "/v1/organization/projects/{project_id}/models/providers",
    )
    for e in (
        Operation("GET", base, list_providers),
        Operation("POST", base, create_provider),
        Operation("GET", base + "/{provider_id}", get_provider),
        Operation("POST", base + "/{provider_id}", modify_provider),
        Operation("DELETE", base + "/{provider_id}", delete_provider),
    )
]
