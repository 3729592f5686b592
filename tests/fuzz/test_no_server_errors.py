"""Fuzz every operation of the app's own /openapi.json: bad input gets a clear OpenAI error.

Schemathesis generates the requests (schema-conforming and schema-violating, derandomized
so a run is repeatable); they are sent through the ``client`` fixture on the test's event
loop, because the app's database pool lives there (schemathesis's own ASGI client would
run the app on another loop). Each operation gets a fresh tenant, so a case that archives
the project or revokes a key cannot starve the cases after it, and the credential of the
kind its area expects; half the cases of each operation name real objects (the project,
a member, a conversation, a provider, the routable model) so they get past the 404 into
the handler. The data plane is fuzzed again with the owner's user token (the OpenAI-Project
header naming the project), and every operation once more with no credential at all.

Every answer must be below 500 (except a 502/503 upstream envelope from the operations that
call another server: the model, whose upstream here is a closed port, and Google sign-in,
unconfigured here), every 4xx body OpenAI's error envelope (a JSON-RPC error on /v1/mcp),
and no body may carry a Python traceback.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from functions.common import settings as jan_settings
from functions.common.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import Tenant, bearer, create_member, create_tenant

Operation = APIOperation[Any, Any, Any, Any]

# Per operation and mode; the whole file stays well under a minute on two cores.
# JAN_FUZZ_EXAMPLES raises it for a deeper run by hand.
PER_MODE = int(os.environ.get("JAN_FUZZ_EXAMPLES", "12"))
EXAMPLES = {GenerationMode.POSITIVE: PER_MODE, GenerationMode.NEGATIVE: PER_MODE}
EXAMPLES_WITHOUT_CREDENTIALS = max(3, PER_MODE // 4)
MODEL = "fuzz-model"
# Port 9 (discard) has no listener here: the model upstream refuses every connection.
CLOSED_UPSTREAM = "http://127.0.0.1:9/v1"


@pytest.fixture(name="settings")
def loopback_providers_allowed(database_dsn: str) -> jan_settings.Settings:
    """The closed upstream is on loopback, which providers may use only when allowed."""
    return make_settings(database_dsn, jan_provider_allowed_hosts=("127.0.0.1",))


MODEL_CALLS = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
}
MODEL_PATHS = {path for _, path in MODEL_CALLS}
# Operations that depend on another server may answer 502/503, in the envelope, with one of
# these codes: the model routes (their upstream is a closed port here) and Google sign-in,
# whose identity provider is not configured here (a documented 503, like an unreachable one).
UPSTREAM_CODES = {
    **{call: {"upstream_error", "service_unavailable"} for call in MODEL_CALLS},
    **{
        call: {"oidc_not_configured", "service_unavailable"}
        for call in (
            ("GET", "/v1/auth/google/login"),
            ("GET", "/v1/auth/google/callback"),
            ("POST", "/v1/auth/google/callback"),
        )
    },
}
# MCP speaks JSON-RPC: a malformed message is a 400 carrying a JSON-RPC error (the
# transport's contract with MCP clients); failed authentication is still OpenAI's envelope.
JSON_RPC_PATHS = {"/v1/mcp"}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")


@dataclass
class Finding:
    operation: str
    request: str
    status: int
    body: str
    problem: str

    def __str__(self) -> str:
        return f"{self.operation}: {self.problem} ({self.status})\n  {self.request}\n  {self.body}"


@dataclass
class Report:
    sent: int = 0
    findings: list[Finding] = field(default_factory=list)

    def check(self) -> None:
        # One line per distinct (operation, problem, status): the first request reproduces it.
        seen: dict[tuple[str, str, int], Finding] = {}
        for f in self.findings:
            seen.setdefault((f.operation, f.problem, f.status), f)
        assert not seen, f"{len(seen)} distinct failures in {self.sent} requests:\n" + "\n".join(
            str(f) for f in seen.values()
        )


def generate(operation: Operation, mode: GenerationMode, count: int) -> list[Any]:
    """Up to ``count`` cases, the same ones every run (derandomized, no example database)."""
    cases: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def collect(case: Any) -> None:
        cases.append(case)

    try:
        collect()
    except Unsatisfiable:  # nothing to negate (no parameters, no body): no negative cases
        if mode is not GenerationMode.NEGATIVE:
            raise
        return []
    return cases


def credentials(identity: str, path: str, tenant: Tenant, member_token: str) -> dict[str, str]:
    """``key``: the API key of the area's kind (admin key for the Administration API, project
    key elsewhere; a member's token where only a user makes sense); ``owner``: the owner's
    token acting in the project; ``none``: nothing (the generator's garbage bearer tokens)."""
    if identity == "none":
        return {}
    if path == "/v1/organization/invites/verification" or path.startswith("/v1/auth/"):
        return bearer(member_token)
    if identity == "owner":
        return tenant.user_headers
    return tenant.admin_headers if path.startswith("/v1/organization/") else tenant.project_headers


async def prepare_tenant(
    client: httpx.AsyncClient, runtime: Runtime, path: str
) -> tuple[Tenant, dict[str, str], str]:
    """A fresh tenant, the real IDs its operation's path may name, and a member's token."""
    tenant = await create_tenant(runtime)
    member_id, member_token = await create_member(runtime, tenant, org_role="reader")
    ids = {"project_id": tenant.project_id, "user_id": member_id}
    if path.startswith(("/v1/organization/models/", "/v1/models", "/v1/responses")) or (
        path in MODEL_PATHS or "/rate_limits" in path
    ):
        provider = await client.post(
            "/v1/organization/models/providers",
            headers=tenant.admin_headers,
            json={
                "name": "closed",
                "kind": "openai",
                "base_url": CLOSED_UPSTREAM,
                "models": [MODEL],
            },
        )
        assert provider.status_code == 200, provider.text
        ids["provider_id"] = provider.json()["id"]
        ids["model"] = MODEL
        ids["rate_limit_id"] = f"rl-{MODEL}"
    if "/api_keys/{key_id}" in path:
        keys = await client.get(
            f"/v1/organization/projects/{tenant.project_id}/api_keys", headers=tenant.admin_headers
        )
        ids["key_id"] = keys.json()["data"][0]["id"]
    if "/service_accounts/{service_account_id}" in path:
        account = await client.post(
            f"/v1/organization/projects/{tenant.project_id}/service_accounts",
            headers=tenant.admin_headers,
            json={"name": "fuzz"},
        )
        ids["service_account_id"] = account.json()["id"]
    if path.startswith("/v1/conversations/") or path == "/v1/responses":
        conv = await client.post(
            "/v1/conversations",
            headers=tenant.project_headers,
            json={"items": [{"type": "message", "role": "user", "content": "hello"}]},
        )
        assert conv.status_code == 200, conv.text
        ids["conversation_id"] = conv.json()["id"]
        items = await client.get(
            f"/v1/conversations/{ids['conversation_id']}/items", headers=tenant.project_headers
        )
        ids["item_id"] = items.json()["data"][0]["id"]
    if path.startswith("/v1/responses/"):
        # A background response is stored at once (its run then fails on the closed port).
        queued = await client.post(
            "/v1/responses",
            headers=tenant.project_headers,
            json={"model": MODEL, "input": "hello", "background": True},
        )
        assert queued.status_code == 200, queued.text
        ids["response_id"] = queued.json()["id"]
    return tenant, ids, member_token


def aim(case: Any, ids: dict[str, str]) -> None:
    """Point a case at real objects: path parameters, and the body's model name."""
    for name in case.path_parameters:
        if name in ids:
            case.path_parameters[name] = ids[name]
    if isinstance(case.body, dict):
        for name, value in (
            ("model", ids.get("model")),
            ("conversation", ids.get("conversation_id")),
        ):
            if name in case.body and value is not None:
                case.body[name] = value


async def send(client: httpx.AsyncClient, case: Any, headers: dict[str, str]) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    # Negative cases may drop or garble Authorization; the area's credential is what this
    # pass is about. The pass without one keeps the generated garbage bearer tokens.
    sent_headers = {
        k: str(v)
        for k, v in kwargs["headers"].items()
        if not (headers and k.lower() == "authorization")
    }
    sent_headers.update(headers)
    content: bytes | None = kwargs.get("data") if isinstance(kwargs.get("data"), bytes) else None
    if "json" in kwargs:
        # The stdlib encoder: generated integers may exceed 64 bits, still valid JSON.
        content = json.dumps(kwargs["json"]).encode()
    elif isinstance(kwargs.get("data"), (dict, str)):
        data = kwargs["data"]
        content = data.encode() if isinstance(data, str) else None
    return await client.request(
        kwargs["method"],
        kwargs["url"],
        headers=sent_headers,
        params=kwargs.get("params") or None,
        content=content,
    )


def problems(operation: Operation, response: httpx.Response) -> list[str]:
    found: list[str] = []
    if TRACEBACK.search(response.text):
        found.append("traceback in the body")
    status = response.status_code
    if status < 400:
        return found
    error = _envelope(response)
    if error is None and operation.path in JSON_RPC_PATHS and status < 500:
        error = _json_rpc_error(response)
    if error is None:
        found.append("error body is not OpenAI's error envelope")
    elif status >= 500:
        allowed = UPSTREAM_CODES.get((operation.method.upper(), operation.path), set())
        if status not in (502, 503) or error.get("code") not in allowed:
            found.append("server error")
    return found


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return None
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        return None
    if not all(error[k] is None or isinstance(error[k], str) for k in ("param", "code")):
        return None
    return error


def _json_rpc_error(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if body.get("jsonrpc") != "2.0" or not isinstance(error, dict):
        return None
    if not isinstance(error.get("code"), int) or not isinstance(error.get("message"), str):
        return None
    return error


def describe(case: Any) -> str:
    body = "" if case.body is None or type(case.body).__name__ == "NotSet" else repr(case.body)
    return f"{case.method} {case.formatted_path} query={case.query!r} body={body[:300]}"


async def fuzz(
    client: httpx.AsyncClient,
    runtime: Runtime,
    keep: Callable[[Operation], bool],
    identity: str,
) -> Report:
    """Every kept operation of /openapi.json, called as ``identity`` (see ``credentials``)."""
    document = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    report = Report()
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert operations
    for operation in filter(keep, operations):
        tenant, ids, member_token = await prepare_tenant(client, runtime, operation.path)
        headers = credentials(identity, operation.path, tenant, member_token)
        modes = EXAMPLES if headers else {GenerationMode.POSITIVE: EXAMPLES_WITHOUT_CREDENTIALS}
        for mode, count in modes.items():
            for i, case in enumerate(generate(operation, mode, count)):
                if i % 2:
                    aim(case, ids)
                response = await send(client, case, headers)
                report.sent += 1
                report.findings.extend(
                    Finding(
                        operation.label,
                        describe(case),
                        response.status_code,
                        response.text[:300],
                        problem,
                    )
                    for problem in problems(operation, response)
                )
    return report


def _organization(op: Operation) -> bool:
    return op.path.startswith("/v1/organization/")


def _data_plane(op: Operation) -> bool:
    return not _organization(op) and not op.path.startswith("/v1/auth/")


@pytest.mark.parametrize(
    ("area", "identity"),
    [
        pytest.param(_organization, "key", id="organization-admin-key"),
        pytest.param(lambda op: not _organization(op), "key", id="data-plane-auth-ops-key"),
        pytest.param(_data_plane, "owner", id="data-plane-owner-token"),
        pytest.param(lambda op: True, "none", id="everything-without-credentials"),
    ],
)
async def test_every_operation_answers_below_500_with_error_envelopes(
    client: httpx.AsyncClient,
    runtime: Runtime,
    area: Callable[[Operation], bool],
    identity: str,
) -> None:
    report = await fuzz(client, runtime, area, identity)
    report.check()


async def test_openapi_document_is_valid_openapi_3_0(client: httpx.AsyncClient) -> None:
    """What is fuzzed is what clients and SDK generators read: it must be valid. (A YAML
    flow mapping such as ``{description: A, or B.}`` splits at the comma into bogus keys.)"""
    document = (await client.get("/openapi.json")).json()
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in OPENAPI_30_VALIDATOR.iter_errors(document)
    ]
    assert not errors, "\n".join(errors)
