"""Every area's basics: health, readiness, version, metrics, request IDs and the error path."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from functions.app import _http_exception, _unexpected
from functions.common import errors
from functions.common.http import JSON, json_body
from functions.common.logs import JSONFormatter
from functions.common.middleware import RequestContext
from tests.conftest import METRICS_AUTH


async def test_healthcheck_readyz_version(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthcheck")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    version = (await client.get("/v1/version")).json()
    assert set(version) >= {"version", "commit", "python_version"}
    assert version["python_version"].startswith("3.11")


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/version")
    await client.get("/no/such/route")
    text = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert 'jan_http_requests_total{method="GET",route="/v1/version",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "jan_http_request_duration_seconds_bucket" in text


async def test_metrics_lump_made_up_methods_together(client: httpx.AsyncClient) -> None:
    for n in range(3):
        assert (await client.request(f"MADEUP{n}", "/v1/version")).status_code == 405
    text = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert "MADEUP" not in text
    assert 'jan_http_requests_total{method="OTHER",route="/v1/version",status="405"}' in text


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthcheck", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthcheck")
    assert generated.headers["x-request-id"].startswith("req_")
    hostile = await client.get("/healthcheck", headers={"X-Request-ID": "a b\x7f" * 3})
    assert hostile.headers["x-request-id"].startswith("req_")


async def test_unknown_route_and_wrong_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    wrong = await client.delete("/healthcheck")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


# A small app through the same middleware and handlers, with routes that fail on purpose.
async def _echo(request: Request) -> Response:
    return JSON(await json_body(request))


async def _boom(request: Request) -> Response:
    raise RuntimeError("secret internal detail sk-proj-ABCDEFGHIJKLMNOP")


async def _conflict(request: Request) -> Response:
    raise errors.Conflict("already exists", param="name")


def _test_app(limit: int = 64) -> RequestContext:
    app = Starlette(
        routes=[
            Route("/echo", _echo, methods=["POST"]),
            Route("/boom", _boom),
            Route("/conflict", _conflict),
        ],
        exception_handlers={
            errors.APIError: errors.render,
            Exception: _unexpected,
            404: _http_exception,
        },
    )
    return RequestContext(app, max_body_bytes=limit)


@pytest.fixture
async def small() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_test_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_body_limit_by_header_and_by_stream(small: httpx.AsyncClient) -> None:
    declared = await small.post("/echo", content=b"x" * 100)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b'{"a": "' + b"y" * 20

    streamed = await small.post("/echo", content=chunks())
    assert streamed.status_code == 413
    ok = await small.post("/echo", json={"a": 1})
    assert ok.json() == {"a": 1}


async def test_bad_json_is_a_400_not_a_500(small: httpx.AsyncClient) -> None:
    for body in (b"{not json", b"[1,2]", b""):
        r = await small.post("/echo", content=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["type"] == "invalid_request_error"


async def test_api_errors_carry_status_type_param(small: httpx.AsyncClient) -> None:
    r = await small.get("/conflict")
    assert r.status_code == 409
    assert r.json() == {
        "error": {
            "message": "already exists",
            "type": "invalid_request_error",
            "param": "name",
            "code": "conflict",
        }
    }


async def test_unexpected_exception_is_a_generic_500_logged_without_secrets(
    small: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        r = await small.get("/boom", headers={"Authorization": "Bearer sk-proj-SHOULDNOTLEAK123"})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    assert "secret internal detail" not in r.text
    lines = [JSONFormatter().format(rec) for rec in caplog.records]
    joined = "\n".join(lines)
    assert "unhandled error" in joined  # the cause is logged ...
    assert "sk-proj-ABCDEFGHIJKLMNOP" not in joined  # ... with key-like strings redacted
    assert "SHOULDNOTLEAK" not in joined  # and headers are never logged
    access = [json.loads(line) for line in lines if '"message":"request"' in line]
    assert access and access[-1]["status"] == 500 and "request_id" in access[-1]
