"""Model providers may not point the gateway at private addresses (cloud metadata, the
cluster's services, loopback) unless the operator allows them: refused when a base URL is
set, left out when a stored one is an IP literal, refused when a name resolves privately
at connection time, and never followed through a redirect. The built-in provider is the
operator's and exempt (here it is a fake on 127.0.0.1 with nothing allowed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from functions.common.netguard import AddressPolicy
from functions.common.runtime import Runtime
from functions.common.settings import Settings
from functions.common.upstream import ProviderGuard
from functions.services.inference.service import Inference
from functions.services.providers import store
from tests.chat.fakes import FakeUpstream
from tests.conftest import component, make_settings
from tests.factories import Tenant, create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
ORG = "/v1/organization/models/providers"


@pytest.fixture
def allowed() -> tuple[str, ...]:
    return ()


@pytest.fixture
def settings(database_dsn: str, builtin: FakeUpstream, allowed: tuple[str, ...]) -> Settings:
    return make_settings(
        database_dsn,
        jan_inference_model_url=builtin.base_url,
        jan_provider_allowed_hosts=allowed,
    )


async def _stored(runtime: Runtime, tenant: Tenant, url: str, model: str) -> None:
    """A provider row as one written before the guard existed (or before a DNS change)."""
    await store.insert_provider(
        runtime.db.writer,
        id=f"prov_{model}",
        organization_id=tenant.organization_id,
        project_id=None,
        name=model,
        kind="vllm",
        base_urls=[url],
        api_key_ciphertext=None,
        static_models=[model],
        active=True,
    )
    await component(runtime, Inference).catalog.refresh()


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest", "private or reserved address (169.254.169.254)"),
        ("http://10.0.0.1:8000/v1", "private or reserved address (10.0.0.1)"),
        ("http://[::1]:8000/v1", "private or reserved address (::1)"),
        ("http://[::ffff:169.254.169.254]/v1", "private or reserved address"),
        ("http://localhost:8000/v1", "localhost resolves to a private or reserved address"),
        ("http://no-such-host.invalid/v1", "Could not resolve host no-such-host.invalid"),
    ],
)
async def test_private_base_urls_are_refused_when_created(
    client: httpx.AsyncClient, runtime: Runtime, url: str, reason: str
) -> None:
    tenant = await create_tenant(runtime)
    body = {"name": "p", "kind": "vllm", "base_url": url}
    r = await client.post(ORG, json=body, headers=tenant.admin_headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "base_url" and error["code"] == "base_url_not_allowed"
    assert error["type"] == "invalid_request_error"
    assert reason in error["message"] and "JAN_PROVIDER_ALLOWED_HOSTS" in error["message"]
    assert (await client.get(ORG, headers=tenant.admin_headers)).json()["data"] == []


async def test_the_built_in_upstream_is_exempt_for_the_operator_only(
    client: httpx.AsyncClient, runtime: Runtime, builtin: FakeUpstream
) -> None:
    tenant = await create_tenant(runtime)
    served = await client.post(
        "/v1/chat/completions", json=_chat("m1"), headers=tenant.project_headers
    )
    assert served.status_code == 200 and builtin.calls == 1
    body = {"name": "mine", "kind": "vllm", "base_urls": [builtin.base_url]}
    r = await client.post(ORG, json=body, headers=tenant.admin_headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "base_urls"


async def test_a_modified_base_url_is_checked_and_the_provider_kept(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    tenant = await create_tenant(runtime)
    await _stored(runtime, tenant, "http://93.184.216.34/v1", "public")  # not connected to
    url = f"{ORG}/prov_public"
    r = await client.post(
        url, json={"base_url": "http://169.254.169.254"}, headers=tenant.admin_headers
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "base_url"
    kept = (await client.get(url, headers=tenant.admin_headers)).json()
    assert [e["base_url"] for e in kept["endpoints"]] == ["http://93.184.216.34/v1"]


async def test_a_stored_endpoint_at_a_private_literal_is_left_out(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    inside = await upstreams("inside", models=("secret",))
    tenant = await create_tenant(runtime)
    await _stored(runtime, tenant, inside.base_url, "secret")
    models = await client.get("/v1/models", headers=tenant.project_headers)
    assert "secret" not in {m["id"] for m in models.json()["data"]}
    r = await client.post(
        "/v1/chat/completions", json=_chat("secret"), headers=tenant.project_headers
    )
    assert r.status_code == 404 and inside.calls == 0


async def test_a_name_resolving_to_a_private_address_is_refused_at_connection(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    # Checked when set, a name can later resolve elsewhere (DNS rebinding): the resolver
    # the connections go through refuses it then, and the request never leaves.
    inside = await upstreams("inside", models=("rebound",))
    tenant = await create_tenant(runtime)
    await _stored(runtime, tenant, f"http://localhost:{inside.port}/v1", "rebound")
    r = await client.post(
        "/v1/chat/completions", json=_chat("rebound"), headers=tenant.project_headers
    )
    assert r.status_code == 502, r.text
    assert "may not be used" in r.json()["error"]["message"]
    assert inside.calls == 0


@pytest.mark.parametrize("allowed", [(".localhost",)])
async def test_hosts_the_operator_allows_may_be_used(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("in-cluster", models=("local-model",))
    tenant = await create_tenant(runtime)
    body = {"name": "ok", "kind": "vllm", "base_url": f"http://localhost:{up.port}/v1"}
    created = await client.post(ORG, json=body, headers=tenant.admin_headers)
    assert created.status_code == 200, created.text
    assert created.json()["models"] == ["local-model"]
    r = await client.post(
        "/v1/chat/completions", json=_chat("local-model"), headers=tenant.project_headers
    )
    assert r.status_code == 200 and up.calls == 1
    # A name on the list does not open the addresses it resolves to for literals.
    literal = {**body, "name": "literal", "base_url": up.base_url}
    assert (await client.post(ORG, json=literal, headers=tenant.admin_headers)).status_code == 400


@pytest.mark.parametrize("allowed", [("127.0.0.1",)])
@pytest.mark.parametrize("stream", [False, True])
async def test_redirects_are_not_followed(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start, stream: bool
) -> None:
    bouncer = await upstreams("bouncer", models=("bounce",))
    target = await upstreams("target", models=("bounce",))
    bouncer.mode, bouncer.redirect_to = "redirect", f"http://127.0.0.1:{target.port}"
    tenant = await create_tenant(runtime)
    body = {"name": "b", "kind": "vllm", "base_url": bouncer.base_url}
    assert (await client.post(ORG, json=body, headers=tenant.admin_headers)).status_code == 200
    r = await client.post(
        "/v1/chat/completions",
        json={**_chat("bounce"), "stream": stream},
        headers=tenant.project_headers,
    )
    assert r.status_code == 502 and bouncer.calls == 1 and target.calls == 0


def test_the_guard_exempts_the_built_in_host_for_connections_only() -> None:
    guard = ProviderGuard(AddressPolicy.from_entries(()), ["Predictor.Jan.svc.cluster.local."])
    assert guard.trusts("predictor.jan.svc.cluster.local")
    assert guard.refusal("http://predictor.jan.svc.cluster.local/openai/v1") is not None
    assert guard.refusal("http://models.example.com/v1") is None  # vetted when connected
    assert guard.refusal("http://8.8.8.8/v1") is None
    assert "169.254.169.254" in (guard.refusal("http://169.254.169.254/") or "")
    allowed = ProviderGuard(AddressPolicy.from_entries((".jan.svc.cluster.local",)), [])
    assert allowed.refusal("http://predictor.jan.svc.cluster.local/openai/v1") is None


@pytest.mark.parametrize("url", ["http://models.example.com:99999/v1", "http://h:0", "http://h:x/"])
async def test_an_invalid_port_is_a_400(
    client: httpx.AsyncClient, runtime: Runtime, url: str
) -> None:
    tenant = await create_tenant(runtime)
    body = {"name": "p", "kind": "vllm", "base_url": url}
    r = await client.post(ORG, json=body, headers=tenant.admin_headers)
    assert r.status_code == 400 and "invalid port" in r.json()["error"]["message"]
