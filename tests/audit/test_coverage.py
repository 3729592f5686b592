"""Every route that changes something writes an audit event, and one added later must too.

The walk reads the route tables of the administration, sign-in and tool-settings areas,
takes every mutating route (POST, PUT, PATCH, DELETE; and the GET of the OIDC callback,
which signs in), calls each validly in a fresh tenant and checks that the call answered 2xx
and wrote the events ``CALLS`` expects. A route without an entry in ``CALLS`` fails the
test: add the call (and make the handler record its change with ``call.record`` in its
transaction) — or, for a route that changes nothing an audit log is for, add it to
``EXEMPT`` with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from functions import admin, auth, mcp
from functions.admin.audit_logs import list_audit_logs
from functions.app import create_app
from functions.common.routing import Operation, RawOperation
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.services.audit import EVENT_TYPES, JAN_EVENT_TYPES
from tests.audit.support import rows
from tests.conftest import make_settings
from tests.factories import Tenant, bearer, create_member, create_tenant
from tests.identity.oidc_issuer import CLIENT_ID, CLIENT_SECRET, Issuer

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# GET routes that change something all the same.
ALSO_WALKED = {("GET", "/v1/auth/google/callback")}
# Routes that change nothing an audit log is for, and why.
EXEMPT = {
    ("POST", "/v1/auth/refresh-token"): (
        "rotates a session's refresh token every 15 minutes: the sign-in that started the "
        "session is recorded (login.succeeded), and a replayed token, the sign of a stolen "
        "one, is recorded as login.failed (refresh_token_reused)"
    ),
    ("POST", "/v1/mcp"): "MCP tool calls: model and tool traffic, not administration",
}
CLOSED_UPSTREAM = "http://127.0.0.1:9/v1"
MODEL = "m1"


@dataclass
class World:
    client: httpx.AsyncClient
    runtime: Runtime
    issuer: Issuer
    tenant: Tenant

    @property
    def admin(self) -> dict[str, str]:
        return self.tenant.admin_headers

    @property
    def p(self) -> str:
        return f"/v1/organization/projects/{self.tenant.project_id}"

    async def post(self, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.client.post(url, json=body or {}, headers=self.admin)

    async def made(self, url: str, body: dict[str, Any]) -> str:
        """Create something through the API; its ID."""
        r = await self.post(url, body)
        assert r.status_code == 200, r.text
        made_id: str = r.json()["id"]
        return made_id

    async def made_then_delete(self, url: str, body: dict[str, Any]) -> httpx.Response:
        made_id = await self.made(url, body)
        return await self.client.delete(f"{url}/{made_id}", headers=self.admin)

    async def reader(self) -> str:
        """A new organization reader's user ID."""
        user_id, _ = await create_member(self.runtime, self.tenant, org_role="reader")
        return user_id

    async def key_id(self) -> str:
        """The ID of the project's key."""
        keys = await self.client.get(self.p + "/api_keys", headers=self.admin)
        key_id: str = keys.json()["data"][0]["id"]
        return key_id

    async def provider(self, base: str) -> str:
        body = {"name": "p", "kind": "openai", "base_url": CLOSED_UPSTREAM, "models": [MODEL]}
        return await self.made(base, body)


Call = Callable[[World], Awaitable[httpx.Response]]
P = "/v1/organization/projects/{project_id}"
ORG_PROVIDERS = "/v1/organization/models/providers"
LIMITS = {"max_requests_per_1_minute": 10}


# (method, path) → (the event types the call writes, a valid call): filled by @walks.
CALLS: dict[tuple[str, str], tuple[tuple[str, ...], Call]] = {}


def walks(method: str, path: str, *expected: str) -> Callable[[Call], Call]:
    def register(call: Call) -> Call:
        CALLS[(method, path)] = (expected, call)
        return call

    return register


# --- admin keys, users, invites
@walks("POST", "/v1/organization/admin_api_keys", "api_key.created")
async def create_admin_key(w: World) -> httpx.Response:
    return await w.post("/v1/organization/admin_api_keys", {"name": "k"})


@walks("DELETE", "/v1/organization/admin_api_keys/{key_id}", "api_key.created", "api_key.deleted")
async def delete_admin_key(w: World) -> httpx.Response:
    return await w.made_then_delete("/v1/organization/admin_api_keys", {"name": "k"})


@walks("POST", "/v1/organization/users/{user_id}", "user.updated")
async def modify_user(w: World) -> httpx.Response:
    return await w.post(f"/v1/organization/users/{await w.reader()}", {"role": "owner"})


@walks("DELETE", "/v1/organization/users/{user_id}", "user.deleted")
async def delete_user(w: World) -> httpx.Response:
    return await w.client.delete(f"/v1/organization/users/{await w.reader()}", headers=w.admin)


@walks("POST", "/v1/organization/users/{user_id}/rate_limits", "rate_limit.updated")
async def user_rate_limits(w: World) -> httpx.Response:
    return await w.post(f"/v1/organization/users/{await w.reader()}/rate_limits", LIMITS)


@walks("POST", "/v1/organization/invites", "invite.sent")
async def invite(w: World) -> httpx.Response:
    return await w.post("/v1/organization/invites", {"email": "new@x.test", "role": "reader"})


@walks("POST", "/v1/organization/invites/verification", "invite.sent", "invite.accepted")
async def accept_invite(w: World) -> httpx.Response:
    user_id, token = await create_member(w.runtime, w.tenant, project_role="member")
    email = await w.runtime.db.writer.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    invite = await w.post("/v1/organization/invites", {"email": email, "role": "reader"})
    return await w.client.post(
        "/v1/organization/invites/verification",
        json={"code": invite.json()["code"]},
        headers=bearer(token),
    )


@walks("DELETE", "/v1/organization/invites/{invite_id}", "invite.sent", "invite.deleted")
async def delete_invite(w: World) -> httpx.Response:
    body = {"email": "gone@x.test", "role": "reader"}
    return await w.made_then_delete("/v1/organization/invites", body)


# --- projects and what is in them
@walks("POST", "/v1/organization/projects", "project.created")
async def create_project(w: World) -> httpx.Response:
    return await w.post("/v1/organization/projects", {"name": "new"})


@walks("POST", P, "project.updated")
async def rename_project(w: World) -> httpx.Response:
    return await w.post(w.p, {"name": "renamed"})


@walks("POST", P + "/archive", "project.archived")
async def archive_project(w: World) -> httpx.Response:
    return await w.post(w.p + "/archive")


@walks("POST", P + "/users", "user.added")
async def add_project_user(w: World) -> httpx.Response:
    return await w.post(w.p + "/users", {"user_id": await w.reader(), "role": "member"})


@walks("POST", P + "/users/{user_id}", "user.updated")
async def modify_project_user(w: World) -> httpx.Response:
    return await w.post(f"{w.p}/users/{w.tenant.owner_user_id}", {"role": "member"})


@walks("DELETE", P + "/users/{user_id}", "user.deleted")
async def remove_project_user(w: World) -> httpx.Response:
    return await w.client.delete(f"{w.p}/users/{w.tenant.owner_user_id}", headers=w.admin)


@walks("POST", P + "/service_accounts", "service_account.created", "api_key.created")
async def create_service_account(w: World) -> httpx.Response:
    return await w.post(w.p + "/service_accounts", {"name": "bot"})


@walks(
    "DELETE",
    P + "/service_accounts/{service_account_id}",
    "service_account.created",
    "api_key.created",
    "service_account.deleted",
)
async def delete_service_account(w: World) -> httpx.Response:
    return await w.made_then_delete(w.p + "/service_accounts", {"name": "bot"})


@walks(
    "POST",
    P + "/service_accounts/{service_account_id}/rate_limits",
    "service_account.created",
    "api_key.created",
    "rate_limit.updated",
)
async def service_account_rate_limits(w: World) -> httpx.Response:
    account_id = await w.made(w.p + "/service_accounts", {"name": "bot"})
    return await w.post(f"{w.p}/service_accounts/{account_id}/rate_limits", LIMITS)


@walks("POST", P + "/api_keys", "api_key.created")
async def create_project_key(w: World) -> httpx.Response:
    return await w.post(w.p + "/api_keys", {})


@walks("DELETE", P + "/api_keys/{key_id}", "api_key.deleted")
async def delete_project_key(w: World) -> httpx.Response:
    return await w.client.delete(f"{w.p}/api_keys/{await w.key_id()}", headers=w.admin)


@walks("POST", P + "/api_keys/{key_id}/rate_limits", "rate_limit.updated")
async def key_rate_limits(w: World) -> httpx.Response:
    return await w.post(f"{w.p}/api_keys/{await w.key_id()}/rate_limits", LIMITS)


@walks("POST", P + "/model_permissions", "model_permissions.updated")
async def set_permissions(w: World) -> httpx.Response:
    return await w.post(w.p + "/model_permissions", {"mode": "deny_list", "model_ids": ["x"]})


@walks("DELETE", P + "/model_permissions", "model_permissions.updated", "model_permissions.deleted")
async def delete_permissions(w: World) -> httpx.Response:
    await w.post(w.p + "/model_permissions", {"mode": "allow_list", "model_ids": [MODEL]})
    return await w.client.delete(w.p + "/model_permissions", headers=w.admin)


# --- rate limits
@walks("POST", P + "/rate_limits/{rate_limit_id}", "model_provider.created", "rate_limit.updated")
async def project_rate_limit(w: World) -> httpx.Response:
    await w.provider(ORG_PROVIDERS)  # the project can use MODEL
    return await w.post(f"{w.p}/rate_limits/rl-{MODEL}", LIMITS)


@walks("POST", "/v1/organization/rate_limits/{rate_limit_id}", "rate_limit.updated")
async def default_rate_limit(w: World) -> httpx.Response:
    return await w.post(f"/v1/organization/rate_limits/rl-{MODEL}", LIMITS)


@walks("POST", "/v1/organization/rate_limit_policy", "rate_limit_policy.updated")
async def rate_limit_policy(w: World) -> httpx.Response:
    return await w.post("/v1/organization/rate_limit_policy", {"failure_mode": "closed"})


# --- budgets
SPEND = {"threshold_amount": 1000, "currency": "USD", "interval": "month"}
TOKENS = {"tokens_per_day": 1000}


@walks("POST", "/v1/organization/spend_limit", "spend_limit.updated")
async def organization_spend_limit(w: World) -> httpx.Response:
    return await w.post("/v1/organization/spend_limit", SPEND)


@walks("DELETE", "/v1/organization/spend_limit", "spend_limit.updated", "spend_limit.deleted")
async def delete_organization_spend_limit(w: World) -> httpx.Response:
    await w.post("/v1/organization/spend_limit", SPEND)
    return await w.client.delete("/v1/organization/spend_limit", headers=w.admin)


@walks("POST", P + "/spend_limit", "spend_limit.updated")
async def project_spend_limit(w: World) -> httpx.Response:
    return await w.post(w.p + "/spend_limit", SPEND)


@walks("DELETE", P + "/spend_limit", "spend_limit.updated", "spend_limit.deleted")
async def delete_project_spend_limit(w: World) -> httpx.Response:
    await w.post(w.p + "/spend_limit", SPEND)
    return await w.client.delete(w.p + "/spend_limit", headers=w.admin)


@walks("POST", "/v1/organization/token_budgets", "token_budget.updated")
async def organization_token_budget(w: World) -> httpx.Response:
    return await w.post("/v1/organization/token_budgets", TOKENS)


@walks("POST", P + "/token_budgets", "token_budget.updated")
async def project_token_budget(w: World) -> httpx.Response:
    return await w.post(w.p + "/token_budgets", TOKENS)


@walks("POST", P + "/api_keys/{key_id}/token_budgets", "token_budget.updated")
async def key_token_budget(w: World) -> httpx.Response:
    return await w.post(f"{w.p}/api_keys/{await w.key_id()}/token_budgets", TOKENS)


@walks("POST", "/v1/organization/users/{user_id}/token_budgets", "token_budget.updated")
async def user_token_budget(w: World) -> httpx.Response:
    return await w.post(f"/v1/organization/users/{await w.reader()}/token_budgets", TOKENS)


# --- spend alerts, organization-wide and per project
ALERT = {
    "threshold_amount": 5000,
    "currency": "USD",
    "interval": "month",
    "notification_channel": {"type": "email", "recipients": ["ops@x.test"]},
}
for _alerts in ("/v1/organization/spend_alerts", P + "/spend_alerts"):

    def _alerts_url(w: World, base: str = _alerts) -> str:
        return base.format(project_id=w.tenant.project_id)

    @walks("POST", _alerts, "spend_alert.created")
    async def create_alert(w: World, url: Callable[[World], str] = _alerts_url) -> httpx.Response:
        return await w.post(url(w), ALERT)

    @walks("POST", _alerts + "/{alert_id}", "spend_alert.created", "spend_alert.updated")
    async def update_alert(w: World, url: Callable[[World], str] = _alerts_url) -> httpx.Response:
        alert_id = await w.made(url(w), ALERT)
        return await w.post(f"{url(w)}/{alert_id}", ALERT | {"threshold_amount": 9000})

    @walks("DELETE", _alerts + "/{alert_id}", "spend_alert.created", "spend_alert.deleted")
    async def delete_alert(w: World, url: Callable[[World], str] = _alerts_url) -> httpx.Response:
        return await w.made_then_delete(url(w), ALERT)


# --- model prices, organization-wide and per project
PRICE = {"model": MODEL, "input": 1.25, "output": 10}
for _prices in ("/v1/organization/model_prices", P + "/model_prices"):

    def _prices_url(w: World, base: str = _prices) -> str:
        return base.format(project_id=w.tenant.project_id)

    @walks("POST", _prices, "model_price.updated")
    async def set_price(w: World, url: Callable[[World], str] = _prices_url) -> httpx.Response:
        return await w.post(url(w), PRICE)

    @walks("DELETE", _prices + "/{model}", "model_price.updated", "model_price.deleted")
    async def delete_price(w: World, url: Callable[[World], str] = _prices_url) -> httpx.Response:
        await w.post(url(w), PRICE)
        return await w.client.delete(f"{url(w)}/{MODEL}", headers=w.admin)


# --- model aliases and fallbacks, organization-wide and per project
for _routing in ("/v1/organization", P):

    def _routing_url(w: World, what: str, base: str = _routing) -> str:
        return base.format(project_id=w.tenant.project_id) + what

    @walks("POST", _routing + "/model_aliases", "model_alias.updated")
    async def set_alias(w: World, url: Callable[..., str] = _routing_url) -> httpx.Response:
        return await w.post(url(w, "/model_aliases"), {"alias": "fast", "model": MODEL})

    @walks(
        "DELETE", _routing + "/model_aliases/{alias}", "model_alias.updated", "model_alias.deleted"
    )
    async def delete_alias(w: World, url: Callable[..., str] = _routing_url) -> httpx.Response:
        await w.post(url(w, "/model_aliases"), {"alias": "fast", "model": MODEL})
        return await w.client.delete(url(w, "/model_aliases/fast"), headers=w.admin)

    @walks("POST", _routing + "/model_fallbacks", "model_fallbacks.updated")
    async def set_fallbacks(w: World, url: Callable[..., str] = _routing_url) -> httpx.Response:
        return await w.post(url(w, "/model_fallbacks"), {"model": MODEL, "fallbacks": ["m2"]})

    @walks(
        "DELETE",
        _routing + "/model_fallbacks/{model}",
        "model_fallbacks.updated",
        "model_fallbacks.deleted",
    )
    async def delete_fallbacks(w: World, url: Callable[..., str] = _routing_url) -> httpx.Response:
        await w.post(url(w, "/model_fallbacks"), {"model": MODEL, "fallbacks": ["m2"]})
        return await w.client.delete(url(w, f"/model_fallbacks/{MODEL}"), headers=w.admin)


# --- data retention
@walks("POST", "/v1/organization/data_retention", "data_retention.updated")
async def organization_retention(w: World) -> httpx.Response:
    body = {"retention_type": "zero_data_retention", "retention_days": {"responses": 7}}
    return await w.post("/v1/organization/data_retention", body)


@walks("POST", P + "/data_retention", "data_retention.updated")
async def project_retention(w: World) -> httpx.Response:
    return await w.post(w.p + "/data_retention", {"retention_type": "zero_data_retention"})


@walks("POST", P + "/priority", "project.updated")
async def project_priority(w: World) -> httpx.Response:
    return await w.post(w.p + "/priority", {"priority": -5})


# --- model providers, organization-wide and per project
for _base in (ORG_PROVIDERS, P + "/models/providers"):

    def _url(w: World, base: str = _base) -> str:
        return base.format(project_id=w.tenant.project_id)

    @walks("POST", _base, "model_provider.created")
    async def create_provider(w: World, url: Callable[[World], str] = _url) -> httpx.Response:
        return await w.post(url(w), {"name": "p", "kind": "openai", "base_url": CLOSED_UPSTREAM})

    @walks("POST", _base + "/{provider_id}", "model_provider.created", "model_provider.updated")
    async def modify_provider(w: World, url: Callable[[World], str] = _url) -> httpx.Response:
        return await w.post(f"{url(w)}/{await w.provider(url(w))}", {"active": False})

    @walks("DELETE", _base + "/{provider_id}", "model_provider.created", "model_provider.deleted")
    async def delete_provider(w: World, url: Callable[[World], str] = _url) -> httpx.Response:
        return await w.client.delete(f"{url(w)}/{await w.provider(url(w))}", headers=w.admin)


# --- sign-in
@walks("POST", "/v1/auth/guest-login", "login.succeeded")
async def guest_login(w: World) -> httpx.Response:
    return await w.client.post("/v1/auth/guest-login")


@walks("POST", "/v1/auth/logout", "login.succeeded", "logout.succeeded")
async def logout(w: World) -> httpx.Response:
    guest = (await w.client.post("/v1/auth/guest-login")).json()
    return await w.client.post("/v1/auth/logout", json={"refresh_token": guest["refresh_token"]})


async def _sign_in(w: World, method: str) -> httpx.Response:
    login = await w.client.get("/v1/auth/google/login")
    params = dict(parse_qsl(urlsplit(login.json()["url"]).query))
    code = w.issuer.authorize(params, {"sub": f"sub-{method}", "email": f"{method}@x.test"})
    link = {"code": code, "state": params["state"]}
    if method == "GET":
        return await w.client.get("/v1/auth/google/callback", params=link)
    return await w.client.post("/v1/auth/google/callback", json=link)


@walks("POST", "/v1/auth/google/callback", "login.succeeded")
async def sign_in_posted(w: World) -> httpx.Response:
    return await _sign_in(w, "POST")


@walks("GET", "/v1/auth/google/callback", "login.succeeded")
async def sign_in_redirected(w: World) -> httpx.Response:
    return await _sign_in(w, "GET")


# --- tool settings
@walks("POST", "/v1/mcp/settings", "tool_settings.updated")
async def tool_settings(w: World) -> httpx.Response:
    body = {"enabled_tools": ["fetch"]}
    return await w.client.post("/v1/mcp/settings", json=body, headers=w.tenant.user_headers)


def walked_routes() -> list[tuple[str, str]]:
    """Every route of the tables the walk covers that changes something."""
    tables: list[Operation[Any] | RawOperation[Any]] = [*admin.ROUTES, *auth.ROUTES, *mcp.ROUTES]
    return [
        (op.method, op.path)
        for op in tables
        if op.method in MUTATING or (op.method, op.path) in ALSO_WALKED
    ]


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    server = Issuer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(name="settings")
def with_sign_in(database_dsn: str, issuer: Issuer) -> Settings:
    return make_settings(
        database_dsn,
        oauth2_google_client_id=CLIENT_ID,
        oauth2_google_client_secret=CLIENT_SECRET,
        oauth2_google_redirect_url="https://testserver/v1/auth/google/callback",
        oauth2_google_issuer=issuer.url,
        jan_provider_allowed_hosts=("127.0.0.1",),
    )


def test_every_mutating_route_has_a_call_or_a_reason() -> None:
    routes = walked_routes()
    missing = [r for r in routes if r not in CALLS and r not in EXEMPT]
    assert not missing, (
        "Routes that change something but are not walked: record their change in the audit "
        f"log (call.record) and add a call to CALLS, or a reason to EXEMPT: {missing}"
    )
    stale = [r for r in [*CALLS, *EXEMPT] if r not in routes]
    assert not stale, f"CALLS or EXEMPT name routes that no longer exist: {stale}"


def test_every_event_type_written_is_declared_and_documented() -> None:
    written = {t for expected, _ in CALLS.values() for t in expected} | {"login.failed"}
    declared = set(EVENT_TYPES) | set(JAN_EVENT_TYPES)
    assert written == declared
    doc = list_audit_logs.__doc__ or ""
    assert not [t for t in declared if f"`{t}`" not in doc], "undocumented event types"
    assert not set(EVENT_TYPES) & set(JAN_EVENT_TYPES)


async def test_every_mutating_route_writes_an_audit_event(runtime: Runtime, issuer: Issuer) -> None:
    app = create_app(runtime)
    await runtime.open()
    transport = httpx.ASGITransport(app=app)
    silent, wrong = [], []
    # https: the sign-in cookies are Secure.
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        for route in walked_routes():
            if route in EXEMPT:
                continue
            expected, call = CALLS[route]
            client.cookies.clear()
            world = World(client, runtime, issuer, await create_tenant(runtime))
            before = len(await rows(runtime))
            r = await call(world)
            assert r.status_code < 300, f"{route}: {r.status_code} {r.text}"
            written = tuple(row["type"] for row in (await rows(runtime))[before:])
            if not written:
                silent.append(route)
            elif sorted(written) != sorted(expected):
                wrong.append((route, written))
    assert not silent, f"Routes that changed something and wrote no audit event: {silent}"
    assert not wrong, f"Routes that wrote other events than expected: {wrong}"
