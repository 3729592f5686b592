"""Every answer of every implemented OpenAI operation, success and error, against OpenAI's
published OpenAPI document (``contract.py``; the subset and its source in README.md).

Each scenario drives a group of operations through the real app (every area, real
PostgreSQL) with a fake model server whose own answers conform, checks every JSON body
and every event of every stream it gets, and must see each operation it names answer with
success. ``test_every_operation_has_a_scenario`` keeps the list whole: an OpenAI operation
the app serves without a scenario fails it, as does a route that is neither OpenAI's nor
listed as a Jan extension. Deliberate differences are ``EXCEPTIONS``, each with its reason
(README.md, "OpenAI conformance", says the same).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from functions.app import create_app, starlette_app
from functions.common.runtime import Runtime
from tests.chat.fakes import FakeUpstream
from tests.conformance.contract import Checker, Finding, operation_of
from tests.factories import Tenant, bearer, create_member, create_tenant


@dataclass(frozen=True, slots=True)
class Deliberate:
    """A known difference: the findings of ``operation`` whose place (``where`` and JSON
    path) and message match these patterns are ours on purpose, for ``reason``."""

    operation: str
    where: str
    location: str
    message: str
    reason: str

    def covers(self, finding: Finding) -> bool:
        return all(
            re.fullmatch(pattern, value)
            for pattern, value in (
                (self.operation, finding.operation),
                (self.where, finding.where),
                (self.location, finding.location),
                (self.message, finding.message),
            )
        )


EXCEPTIONS: tuple[Deliberate, ...] = (
    Deliberate(
        r"(GET|POST) /organization(/projects/\{project_id\})?/data_retention",
        "body",
        r"\$\.type",
        r"'none' is not one of .*",
        "An organization or project without a retention control reads `type: none` (and "
        "`POST {retention_type: none}` removes one); the document's enum names only the "
        "controls OpenAI grants, and has no value for the default.",
    ),
    Deliberate(
        re.escape("DELETE /responses/{response_id}"),
        "body",
        r"\$",
        "the document gives this answer no body",
        "The document gives this 200 no body; we send what OpenAI's API sends, "
        "{id, object: response.deleted, deleted: true}.",
    ),
    Deliberate(
        re.escape("POST /chat/completions"),
        r"event \d+ \(None\)",
        r"\$",
        "an error event",
        "A stream that breaks after its first event ends with one event in OpenAI's error "
        "envelope ({error: {message, type, param, code}}, itself checked against "
        "ErrorResponse), as OpenAI's own streams do and its SDKs raise; the document "
        "describes only chunks.",
    ),
    Deliberate(
        r"GET /chat/completions(/\{completion_id\}/messages)?",
        "body",
        r"\$\.(first|last)_id",
        "None is not of type 'string'",
        "An empty list has no first or last ID: null, as in OpenAI's other lists (whose "
        "schemas allow it); these two type them as strings only.",
    ),
    Deliberate(
        re.escape("GET /chat/completions/{completion_id}/messages"),
        "body",
        r"\$\.data\[\d+\]\.role",
        r"'(system|developer|user|tool)' is not one of \['assistant'\]",
        "The stored request's messages keep their own roles, as OpenAI's API answers them "
        "(its reference's example lists a `user` message); the document reuses the "
        "assistant message's schema, whose role can only be `assistant`.",
    ),
)


# Routes that are not OpenAI's (Jan extensions and operations of our own); their error
# answers are still checked against OpenAI's error envelope.
JAN_ROUTES = {
    "/v1/auth/",
    "/v1/mcp",
    "/v1/organization/models/providers",
    "/v1/organization/projects/{project_id}/models/providers",
    "/v1/organization/rate_limits",
    "/v1/organization/rate_limit_policy",
    "/v1/organization/token_budgets",
    "/v1/organization/model_prices",
    "/v1/organization/projects/{project_id}/model_prices",
    "/v1/organization/projects/{project_id}/token_budgets",
    "/v1/organization/model_aliases",
    "/v1/organization/projects/{project_id}/model_aliases",
    "/v1/organization/model_fallbacks",
    "/v1/organization/projects/{project_id}/model_fallbacks",
    "/v1/organization/projects/{project_id}/priority",
    "/console/",
    "/v1/organization/invites/verification",
    "POST /v1/organization/projects/{project_id}/api_keys",
    "POST /v1/organization/projects/{project_id}/api_keys/{key_id}/rate_limits",
    "POST /v1/organization/projects/{project_id}/api_keys/{key_id}/token_budgets",
    "POST /v1/organization/projects/{project_id}/service_accounts/{service_account_id}/rate_limits",
    "POST /v1/organization/users/{user_id}/rate_limits",
    "POST /v1/organization/users/{user_id}/token_budgets",
    "GET /v1/organization/spend_alerts/{alert_id}/events",
    "GET /v1/organization/projects/{project_id}/spend_alerts/{alert_id}/events",
    "GET /v1/conversations",
    "/v1/rerank",
    "/v1/score",
    "/healthcheck",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/api/swagger/",
    "/v1/version",
}


def _is_jan(method: str, path: str) -> bool:
    return any(
        f"{method} {path}".startswith(entry) if " " in entry else path.startswith(entry)
        for entry in JAN_ROUTES
    )


@dataclass
class Api:
    """The app, every answer checked against the document."""

    client: httpx.AsyncClient
    checker: Checker
    tenant: Tenant
    runtime: Runtime
    upstream: FakeUpstream

    async def __call__(
        self, method: str, path: str, expect: int, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        if headers is None:
            headers = (
                self.tenant.admin_headers
                if path.startswith("/v1/organization")
                else self.tenant.project_headers
            )
        r = await self.client.request(method, path, headers=headers, **kw)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text[:800]}"
        self.checker.check(method, path, r)
        return r


Scenario = Callable[[Api], Awaitable[None]]
SCENARIOS: dict[str, tuple[tuple[str, ...], Scenario]] = {}


def scenario(*operations: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario and the operations it must see succeed."""

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[fn.__name__] = (operations, fn)
        return fn

    return register


NOBODY = {"Authorization": "Bearer sk-proj-nope"}
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


# --- models and inference ------------------------------------------------------------
@scenario("GET /models", "GET /models/{model}")
async def models(api: Api) -> None:
    await api("GET", "/v1/models", 200)
    await api("GET", "/v1/models/m1", 200)
    await api("GET", "/v1/models/nope", 404)
    await api("GET", "/v1/models", 401, headers=NOBODY)


@scenario("POST /chat/completions")
async def chat_completions(api: Api) -> None:
    await api("POST", "/v1/chat/completions", 200, json=CHAT)
    await api("POST", "/v1/chat/completions", 200, json={**CHAT, "stream": True})
    usage = {"stream": True, "stream_options": {"include_usage": True}}
    await api("POST", "/v1/chat/completions", 200, json={**CHAT, **usage})
    await api("POST", "/v1/chat/completions", 400, json={"model": "m1", "messages": []})
    await api("POST", "/v1/chat/completions", 404, json={**CHAT, "model": "nope"})
    await api("POST", "/v1/chat/completions", 401, json=CHAT, headers=NOBODY)
    api.upstream.mode = "cut"  # broken mid-stream: an error event, then the end
    cut = await api("POST", "/v1/chat/completions", 200, json={**CHAT, "stream": True})
    assert b'"error"' in cut.content
    api.upstream.mode = "fail500"
    await api("POST", "/v1/chat/completions", 502, json=CHAT)
    api.upstream.mode = "ok"
    url = f"/v1/organization/projects/{api.tenant.project_id}/rate_limits/rl-m1"
    limit = {"max_requests_per_1_minute": 1}
    await api("POST", url, 200, json=limit, headers=api.tenant.admin_headers)
    await api("POST", "/v1/chat/completions", 200, json=CHAT)
    await api("POST", "/v1/chat/completions", 429, json=CHAT)


@scenario(
    "GET /chat/completions",
    "GET /chat/completions/{completion_id}",
    "POST /chat/completions/{completion_id}",
    "DELETE /chat/completions/{completion_id}",
    "GET /chat/completions/{completion_id}/messages",
)
async def stored_chat_completions(api: Api) -> None:
    url = "/v1/chat/completions"
    await api("GET", url, 200)  # none yet
    parts = [{"type": "text", "text": "look"}]
    messages = [{"role": "system", "content": "brief"}, {"role": "user", "content": parts}]
    body = {**CHAT, "messages": messages, "store": True, "metadata": {"k": "v"}}
    made = (await api("POST", url, 200, json=body)).json()
    await api("POST", url, 200, json={**body, "stream": True})
    await api("GET", url, 200)
    await api("GET", f"{url}?model=m1&metadata[k]=v&limit=1&order=desc", 200)
    await api("GET", f"{url}/{made['id']}", 200)
    await api("GET", f"{url}/{made['id']}/messages", 200)
    await api("POST", f"{url}/{made['id']}", 200, json={"metadata": {"k": "w"}})
    await api("POST", f"{url}/{made['id']}", 400, json={"metadata": {"k": 1}})
    await api("DELETE", f"{url}/{made['id']}", 200)
    await api("GET", f"{url}/{made['id']}", 404)
    await api("GET", f"{url}/{made['id']}/messages", 404)
    await api("GET", f"{url}?after=nope", 400)


@scenario("POST /completions")
async def completions(api: Api) -> None:
    body = {"model": "m1", "prompt": "Say"}
    await api("POST", "/v1/completions", 200, json=body)
    await api("POST", "/v1/completions", 400, json={"model": "m1"})


@scenario("POST /embeddings")
async def embeddings(api: Api) -> None:
    await api("POST", "/v1/embeddings", 200, json={"model": "m1", "input": "a"})
    await api("POST", "/v1/embeddings", 400, json={"model": "m1"})


def upload(fields: dict[str, str], file: bytes) -> dict[str, Any]:
    """A multipart body (fields first, as the SDKs send them)."""
    return {"files": {"file": ("a.wav", file, "audio/wav")}, "data": fields}


@scenario(
    "POST /audio/speech",
    "POST /audio/transcriptions",
    "POST /audio/translations",
    "POST /images/generations",
    "POST /images/edits",
    "POST /moderations",
)
async def passed_through(api: Api) -> None:
    await api("POST", "/v1/audio/speech", 200, json={"model": "m1", "input": "hi", "voice": "x"})
    await api("POST", "/v1/audio/speech", 400, json={"model": "m1"})
    for fields in ({"model": "m1"}, {"model": "m1", "stream": "true"}):
        await api("POST", "/v1/audio/transcriptions", 200, **upload(fields, b"RIFF"))
    await api("POST", "/v1/audio/transcriptions", 400, **upload({}, b"RIFF"))
    await api("POST", "/v1/audio/translations", 200, **upload({"model": "m1"}, b"RIFF"))
    await api("POST", "/v1/audio/translations", 404, **upload({"model": "nope"}, b"RIFF"))
    await api("POST", "/v1/images/generations", 200, json={"model": "m1", "prompt": "cat"})
    await api("POST", "/v1/images/generations", 400, json={"model": "m1"})
    await api("POST", "/v1/images/edits", 200, **upload({"model": "m1", "prompt": "x"}, b"PNG"))
    await api("POST", "/v1/moderations", 200, json={"model": "m1", "input": ["kill", "hug"]})
    await api("POST", "/v1/moderations", 400, json={"model": "m1"})
    await api("POST", "/v1/moderations", 401, json={"model": "m1", "input": "x"}, headers=NOBODY)
    rerank = {"model": "m1", "query": "a", "documents": ["a", "b"]}
    await api("POST", "/v1/rerank", 200, json=rerank)
    await api("POST", "/v1/score", 200, json={"model": "m1", "text_1": "a", "text_2": "b"})


# --- responses and conversations -----------------------------------------------------
@scenario("POST /responses/input_tokens")
async def input_tokens(api: Api) -> None:
    url = "/v1/responses/input_tokens"
    counted = await api("POST", url, 200, json={"model": "m1", "input": "Tell me a joke."})
    assert counted.json() == {"object": "response.input_tokens", "input_tokens": 7}
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    body = {"model": "m1", "input": "x", "instructions": "y", "tools": tools}
    await api("POST", url, 200, json={**body, "truncation": "auto"})
    estimated = await api("POST", url, 200, json={"input": "Tell me a joke."})  # no model
    assert estimated.json()["jan_estimated"] is True
    await api("POST", url, 404, json={"model": "nope", "input": "x"})
    await api("POST", url, 400, json={"model": "m1", "input": "x", "truncation": "no"})
    await api("POST", url, 401, json={"model": "m1", "input": "x"}, headers=NOBODY)


@scenario(
    "POST /responses",
    "GET /responses/{response_id}",
    "GET /responses/{response_id}/input_items",
    "DELETE /responses/{response_id}",
    "POST /responses/{response_id}/cancel",
)
async def responses(api: Api) -> None:
    made = (await api("POST", "/v1/responses", 200, json={"model": "m1", "input": "hi"})).json()
    await api("POST", "/v1/responses", 200, json={"model": "m1", "input": "hi", "stream": True})
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    await api("POST", "/v1/responses", 200, json={"model": "m1", "input": "x", "tools": tools})
    fitted = {"model": "m1", "input": "hi", "truncation": "auto", "top_logprobs": 2}
    logprobs = {**fitted, "include": ["message.output_text.logprobs"]}
    made_with = (await api("POST", "/v1/responses", 200, json=logprobs)).json()
    assert made_with["output"][0]["content"][0]["logprobs"][0]["top_logprobs"]
    streamed = await api("POST", "/v1/responses", 200, json={**logprobs, "stream": True})
    assert b'"top_logprobs":[{"token":"t0"' in streamed.content
    encrypted = {"model": "m1", "input": "hi", "include": ["reasoning.encrypted_content"]}
    await api("POST", "/v1/responses", 400, json=encrypted)
    await api("GET", f"/v1/responses/{made['id']}", 200)
    await api("GET", f"/v1/responses/{made['id']}/input_items", 200)
    background = {"model": "m1", "input": "later", "background": True}
    queued = (await api("POST", "/v1/responses", 200, json=background)).json()
    await api("POST", f"/v1/responses/{queued['id']}/cancel", 200)
    await api("POST", f"/v1/responses/{made['id']}/cancel", 400)
    await api("DELETE", f"/v1/responses/{made['id']}", 200)
    await api("GET", f"/v1/responses/{made['id']}", 404)
    await api("POST", "/v1/responses", 400, json={"model": "m1"})
    await api("POST", "/v1/responses", 404, json={"model": "nope", "input": "x"})
    missing = {"model": "m1", "input": "x", "previous_response_id": "resp_nope"}
    await api("POST", "/v1/responses", 404, json=missing)
    api.upstream.mode = "cut"  # broken mid-stream: response.failed
    failed = {"model": "m1", "input": "hi", "stream": True}
    cut = await api("POST", "/v1/responses", 200, json=failed)
    assert b"response.failed" in cut.content
    api.upstream.mode = "fail500"  # broken before the first event
    await api("POST", "/v1/responses", 502, json=failed)


@scenario(
    "POST /conversations",
    "GET /conversations/{conversation_id}",
    "POST /conversations/{conversation_id}",
    "DELETE /conversations/{conversation_id}",
    "POST /conversations/{conversation_id}/items",
    "GET /conversations/{conversation_id}/items",
    "GET /conversations/{conversation_id}/items/{item_id}",
    "DELETE /conversations/{conversation_id}/items/{item_id}",
)
async def conversations(api: Api) -> None:
    items = [{"type": "message", "role": "user", "content": "hello"}]
    conv = (await api("POST", "/v1/conversations", 200, json={"items": items})).json()
    url = f"/v1/conversations/{conv['id']}"
    await api("GET", url, 200)
    await api("POST", url, 200, json={"metadata": {"topic": "x"}})
    added = await api("POST", f"{url}/items", 200, json={"items": items})
    listed = (await api("GET", f"{url}/items", 200)).json()
    item_id = added.json()["data"][0]["id"]
    assert listed["data"]
    await api("GET", f"{url}/items/{item_id}", 200)
    await api("DELETE", f"{url}/items/{item_id}", 200)
    await api("GET", f"{url}/items/{item_id}", 404)
    await api("DELETE", url, 200)
    await api("GET", url, 404)
    await api("POST", "/v1/conversations", 400, json={"items": "x"})


# --- administration ------------------------------------------------------------------
@scenario(
    "GET /organization/admin_api_keys",
    "POST /organization/admin_api_keys",
    "GET /organization/admin_api_keys/{key_id}",
    "DELETE /organization/admin_api_keys/{key_id}",
)
async def admin_api_keys(api: Api) -> None:
    url = "/v1/organization/admin_api_keys"
    made = (await api("POST", url, 200, json={"name": "ops"})).json()
    await api("GET", url, 200)
    await api("GET", f"{url}/{made['id']}", 200)
    await api("DELETE", f"{url}/{made['id']}", 200)
    await api("GET", f"{url}/{made['id']}", 404)
    await api("POST", url, 400, json={})
    await api("GET", url, 401, headers=NOBODY)


@scenario(
    "GET /organization/users",
    "GET /organization/users/{user_id}",
    "POST /organization/users/{user_id}",
    "DELETE /organization/users/{user_id}",
)
async def users(api: Api) -> None:
    user_id, token = await create_member(api.runtime, api.tenant, org_role="reader")
    url = "/v1/organization/users"
    await api("GET", url, 200)
    await api("GET", f"{url}/{user_id}", 200)
    projects = "/v1/organization/projects"
    await api("POST", projects, 403, headers=bearer(token), json={"name": "x"})
    await api("POST", f"{url}/{user_id}", 200, json={"role": "owner"})
    await api("POST", f"{url}/{user_id}", 400, json={"role": "god"})
    await api("DELETE", f"{url}/{user_id}", 200)
    await api("GET", f"{url}/{user_id}", 404)


@scenario(
    "GET /organization/invites",
    "POST /organization/invites",
    "GET /organization/invites/{invite_id}",
    "DELETE /organization/invites/{invite_id}",
)
async def invites(api: Api) -> None:
    url = "/v1/organization/invites"
    projects = [{"id": api.tenant.project_id, "role": "member"}]
    body = {"email": "new@example.com", "role": "reader", "projects": projects}
    made = (await api("POST", url, 200, json=body)).json()
    await api("GET", url, 200)
    await api("GET", f"{url}/{made['id']}", 200)
    await api("POST", url, 409, json=body)
    await api("DELETE", f"{url}/{made['id']}", 200)
    await api("GET", f"{url}/{made['id']}", 404)
    await api("POST", url, 400, json={"email": "nope", "role": "reader"})


@scenario(
    "GET /organization/projects",
    "POST /organization/projects",
    "GET /organization/projects/{project_id}",
    "POST /organization/projects/{project_id}",
    "POST /organization/projects/{project_id}/archive",
)
async def projects(api: Api) -> None:
    url = "/v1/organization/projects"
    made = (await api("POST", url, 200, json={"name": "p"})).json()
    await api("GET", url, 200)
    await api("GET", f"{url}/{made['id']}", 200)
    await api("POST", f"{url}/{made['id']}", 200, json={"name": "q"})
    await api("POST", f"{url}/{made['id']}/archive", 200)
    await api("POST", f"{url}/{made['id']}", 400, json={"name": "r"})
    await api("GET", f"{url}/proj_nope", 404)
    await api("GET", f"{url}?limit=0", 400)


@scenario(
    "GET /organization/projects/{project_id}/users",
    "POST /organization/projects/{project_id}/users",
    "GET /organization/projects/{project_id}/users/{user_id}",
    "POST /organization/projects/{project_id}/users/{user_id}",
    "DELETE /organization/projects/{project_id}/users/{user_id}",
)
async def project_users(api: Api) -> None:
    user_id, _ = await create_member(api.runtime, api.tenant, org_role="reader", project_role=None)
    url = f"/v1/organization/projects/{api.tenant.project_id}/users"
    await api("POST", url, 200, json={"user_id": user_id, "role": "member"})
    await api("GET", url, 200)
    await api("GET", f"{url}/{user_id}", 200)
    await api("POST", f"{url}/{user_id}", 200, json={"role": "owner"})
    await api("DELETE", f"{url}/{user_id}", 200)
    await api("GET", f"{url}/{user_id}", 404)
    await api("POST", url, 400, json={"user_id": user_id, "role": "god"})


@scenario(
    "GET /organization/projects/{project_id}/service_accounts",
    "POST /organization/projects/{project_id}/service_accounts",
    "GET /organization/projects/{project_id}/service_accounts/{service_account_id}",
    "DELETE /organization/projects/{project_id}/service_accounts/{service_account_id}",
)
async def service_accounts(api: Api) -> None:
    url = f"/v1/organization/projects/{api.tenant.project_id}/service_accounts"
    made = (await api("POST", url, 200, json={"name": "bot"})).json()
    await api("GET", url, 200)
    await api("GET", f"{url}/{made['id']}", 200)
    await api("DELETE", f"{url}/{made['id']}", 200)
    await api("GET", f"{url}/{made['id']}", 404)
    await api("POST", url, 400, json={})


@scenario(
    "GET /organization/projects/{project_id}/api_keys",
    "GET /organization/projects/{project_id}/api_keys/{api_key_id}",
    "DELETE /organization/projects/{project_id}/api_keys/{api_key_id}",
)
async def project_api_keys(api: Api) -> None:
    url = f"/v1/organization/projects/{api.tenant.project_id}/api_keys"
    made = (await api("POST", url, 200, json={"name": "k"})).json()
    account = f"/v1/organization/projects/{api.tenant.project_id}/service_accounts"
    await api("POST", account, 200, json={"name": "bot"})
    await api("GET", url, 200)
    await api("GET", f"{url}/{made['id']}", 200)
    await api("DELETE", f"{url}/{made['id']}", 200)
    await api("GET", f"{url}/{made['id']}", 404)


@scenario(
    "GET /organization/projects/{project_id}/model_permissions",
    "POST /organization/projects/{project_id}/model_permissions",
    "DELETE /organization/projects/{project_id}/model_permissions",
)
async def model_permissions(api: Api) -> None:
    url = f"/v1/organization/projects/{api.tenant.project_id}/model_permissions"
    await api("GET", url, 200)
    await api("POST", url, 200, json={"mode": "allow_list", "model_ids": ["m1"]})
    await api("GET", url, 200)
    await api("DELETE", url, 200)
    await api("POST", url, 400, json={"mode": "maybe"})


@scenario(
    "GET /organization/projects/{project_id}/rate_limits",
    "POST /organization/projects/{project_id}/rate_limits/{rate_limit_id}",
)
async def rate_limits(api: Api) -> None:
    url = f"/v1/organization/projects/{api.tenant.project_id}/rate_limits"
    await api("GET", url, 200)
    await api("POST", f"{url}/rl-m1", 200, json={"max_requests_per_1_minute": 500})
    await api("POST", f"{url}/rl-m1", 400, json={"max_requests_per_1_minute": -1})
    await api("POST", f"{url}/rl-nope", 404, json={"max_requests_per_1_minute": 5})


@scenario(
    "GET /organization/spend_limit",
    "POST /organization/spend_limit",
    "DELETE /organization/spend_limit",
    "GET /organization/projects/{project_id}/spend_limit",
    "POST /organization/projects/{project_id}/spend_limit",
    "DELETE /organization/projects/{project_id}/spend_limit",
)
async def spend_limits(api: Api) -> None:
    body = {"threshold_amount": 5000, "currency": "USD", "interval": "month"}
    for url in (
        "/v1/organization/spend_limit",
        f"/v1/organization/projects/{api.tenant.project_id}/spend_limit",
    ):
        await api("GET", url, 404)
        await api("POST", url, 200, json=body)
        await api("GET", url, 200)
        await api("POST", url, 400, json={**body, "currency": "EUR"})
        await api("DELETE", url, 200)


@scenario(
    "GET /organization/spend_alerts",
    "POST /organization/spend_alerts",
    "GET /organization/spend_alerts/{alert_id}",
    "POST /organization/spend_alerts/{alert_id}",
    "DELETE /organization/spend_alerts/{alert_id}",
    "GET /organization/projects/{project_id}/spend_alerts",
    "POST /organization/projects/{project_id}/spend_alerts",
    "GET /organization/projects/{project_id}/spend_alerts/{alert_id}",
    "POST /organization/projects/{project_id}/spend_alerts/{alert_id}",
    "DELETE /organization/projects/{project_id}/spend_alerts/{alert_id}",
)
async def spend_alerts(api: Api) -> None:
    channel = {"type": "email", "recipients": ["finance@example.com"]}
    body = {
        "threshold_amount": 10000,
        "currency": "USD",
        "interval": "month",
        "notification_channel": channel,
    }
    for url in (
        "/v1/organization/spend_alerts",
        f"/v1/organization/projects/{api.tenant.project_id}/spend_alerts",
    ):
        made = (await api("POST", url, 200, json=body)).json()
        await api("GET", url, 200)
        await api("GET", f"{url}/{made['id']}", 200)
        await api("POST", f"{url}/{made['id']}", 200, json={**body, "threshold_amount": 20000})
        await api("DELETE", f"{url}/{made['id']}", 200)
        await api("GET", f"{url}/{made['id']}", 404)
        await api("POST", url, 400, json={**body, "interval": "day"})


@scenario("GET /organization/usage/completions", "GET /organization/costs")
async def usage_and_costs(api: Api) -> None:
    await api("POST", "/v1/chat/completions", 200, json=CHAT)
    day = int(time.time()) // 86400 * 86400
    await api("GET", f"/v1/organization/usage/completions?start_time={day}", 200)
    query = "group_by=project_id&group_by=model"
    await api("GET", f"/v1/organization/usage/completions?start_time={day}&{query}", 200)
    await api("GET", f"/v1/organization/costs?start_time={day}", 200)
    await api("GET", f"/v1/organization/costs?start_time={day}&group_by=line_item", 200)
    await api("GET", "/v1/organization/costs", 400)


@scenario("GET /organization/audit_logs")
async def audit_logs(api: Api) -> None:
    await api("POST", "/v1/organization/projects", 200, json={"name": "audited"})
    await api("GET", "/v1/organization/audit_logs", 200)
    await api("GET", "/v1/organization/audit_logs?event_types[]=project.created&limit=1", 200)
    await api("GET", "/v1/organization/audit_logs?limit=0", 400)


@scenario(
    "GET /organization/data_retention",
    "POST /organization/data_retention",
    "GET /organization/projects/{project_id}/data_retention",
    "POST /organization/projects/{project_id}/data_retention",
)
async def data_retention(api: Api) -> None:
    for url in (
        "/v1/organization/data_retention",
        f"/v1/organization/projects/{api.tenant.project_id}/data_retention",
    ):
        await api("GET", url, 200)
        await api("POST", url, 200, json={"retention_type": "zero_data_retention"})
        await api("POST", url, 400, json={"retention_type": "forever"})
        await api("POST", url, 200, json={"retention_type": "none"})


# --- the tests -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_answers_match_openais_document(
    name: str, client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    operations, run = SCENARIOS[name]
    checker = Checker()
    tenant = await create_tenant(runtime)
    await run(Api(client, checker, tenant, runtime, builtin))
    unexplained = [f for f in checker.findings if not any(e.covers(f) for e in EXCEPTIONS)]
    assert not unexplained, "\n".join(map(str, unexplained))
    for operation in operations:
        statuses = checker.seen.get(operation, set())
        assert any(s < 300 for s in statuses), f"{operation}: no success seen ({statuses})"


async def test_every_operation_has_a_scenario(runtime: Runtime) -> None:
    covered = {op for operations, _ in SCENARIOS.values() for op in operations}
    unclassified, missing = [], []
    for route in starlette_app(create_app(runtime)).routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation = operation_of(method, route.path)
            if operation is not None and not _is_jan(method, route.path):
                if operation not in covered:
                    missing.append(operation)
            elif not _is_jan(method, route.path):
                unclassified.append(f"{method} {route.path}")
    assert not missing, f"OpenAI operations without a scenario: {missing}"
    assert not unclassified, f"neither OpenAI's nor a listed Jan route: {unclassified}"
