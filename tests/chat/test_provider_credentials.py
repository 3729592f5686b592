"""Provider credentials stay out of URLs, metrics and logs: a base URL with user-info is
refused (the key belongs in the encrypted ``api_key``), one stored before is shown
redacted, and the router's metrics and log lines name endpoints by provider, never by URL."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest

from functions.common.logs import JSONFormatter
from functions.common.runtime import Runtime
from functions.services.providers import store
from tests.chat.fakes import FakeUpstream
from tests.conftest import METRICS_AUTH
from tests.factories import create_tenant

Start = Callable[..., Awaitable[FakeUpstream]]
ORG = "/v1/organization/models/providers"


def _with_userinfo(fake: FakeUpstream) -> str:
    return f"http://admin:hunter2secret@127.0.0.1:{fake.port}/v1"


async def test_a_base_url_with_user_info_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("up")
    tenant = await create_tenant(runtime)
    h = tenant.admin_headers
    for body in (
        {"name": "p", "kind": "vllm", "base_url": _with_userinfo(up)},
        {"name": "p", "kind": "vllm", "base_urls": [up.base_url, _with_userinfo(up)]},
        {"name": "p", "kind": "vllm", "base_url": f"http://user@127.0.0.1:{up.port}"},
    ):
        r = await client.post(ORG, json=body, headers=h)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == ("base_url" if "base_url" in body else "base_urls")
        assert "api_key" in error["message"] and "hunter2" not in r.text
    assert (await client.get(ORG, headers=h)).json()["data"] == []

    created = await client.post(
        ORG, json={"name": "p", "kind": "vllm", "base_url": up.base_url}, headers=h
    )
    url = f"{ORG}/{created.json()['id']}"
    r = await client.post(url, json={"base_url": _with_userinfo(up)}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "base_url"
    kept = (await client.get(url, headers=h)).json()
    assert [e["base_url"] for e in kept["endpoints"]] == [up.base_url]


async def test_a_stored_url_with_user_info_is_shown_redacted(
    client: httpx.AsyncClient, runtime: Runtime, upstreams: Start
) -> None:
    up = await upstreams("legacy")
    tenant = await create_tenant(runtime)
    await store.insert_provider(  # a row written before user-info was refused
        runtime.db.writer,
        id="prov_legacy",
        organization_id=tenant.organization_id,
        project_id=None,
        name="legacy",
        kind="vllm",
        base_urls=[_with_userinfo(up)],
        api_key_ciphertext=None,
        static_models=[],
        active=True,
    )
    r = await client.get(f"{ORG}/prov_legacy", headers=tenant.admin_headers)
    assert r.status_code == 200 and "hunter2secret" not in r.text
    assert r.json()["endpoints"][0]["base_url"] == f"http://***@127.0.0.1:{up.port}/v1"


async def test_metrics_and_logs_name_tenant_endpoints_by_provider_not_url(
    client: httpx.AsyncClient,
    runtime: Runtime,
    upstreams: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    up = await upstreams("tenant", models=("tenant-model",))
    tenant = await create_tenant(runtime)
    created = await client.post(
        ORG,
        json={"name": "t", "kind": "vllm", "base_url": up.base_url},
        headers=tenant.admin_headers,
    )
    provider_id = created.json()["id"]
    chat = {"model": "tenant-model", "messages": [{"role": "user", "content": "hi"}]}
    h = tenant.project_headers
    with caplog.at_level(logging.INFO):
        assert (await client.post("/v1/chat/completions", json=chat, headers=h)).status_code == 200
        streamed = await client.post(
            "/v1/chat/completions", json=chat | {"stream": True}, headers=h
        )
        assert streamed.status_code == 200
        up.mode = "fail500"  # failures, then an ejection: counted and logged
        for _ in range(3):
            await client.post("/v1/chat/completions", json=chat, headers=h)
    scraped = await client.get("/metrics", headers=METRICS_AUTH)
    assert scraped.status_code == 200
    text = scraped.text
    where = f"127.0.0.1:{up.port}"
    assert where not in text
    label = f'endpoint="{provider_id}/0"'
    assert f'jan_upstream_requests_total{{{label},model="tenant-model",outcome="ok"}} 2.0' in text
    assert f'jan_upstream_failures_total{{{label},fault="upstream",reason="status_500"}}' in text
    assert f"jan_upstream_endpoint_healthy{{{label}}} 0.0" in text

    formatter = JSONFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    assert any('"upstream call failed"' in line and provider_id in line for line in lines)
    assert any('"endpoint ejected"' in line and provider_id in line for line in lines)
    assert not [line for line in lines if where in line]


def test_log_lines_redact_user_info_in_any_url() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    record.url = "http://admin:hunter2secret@10.0.0.1/v1"
    line = JSONFormatter().format(record)
    assert "hunter2secret" not in line and "http://[redacted]@10.0.0.1/v1" in line
