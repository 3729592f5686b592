"""OpenTelemetry: spans reach an OTLP/HTTP collector when configured; nothing otherwise."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from opentelemetry import trace

from functions.app import create_app
from functions.common.middleware import RequestContext
from functions.common.runtime import Runtime
from functions.common.settings import Settings


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, len(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


@pytest.fixture
def collector() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_no_tracing_middleware_without_an_endpoint(settings: Settings) -> None:
    assert isinstance(create_app(Runtime(settings)), RequestContext)


async def test_spans_are_exported_to_the_collector(settings: Settings, collector: str) -> None:
    traced = settings.model_copy(update={"otel_exporter_otlp_endpoint": collector})
    app = create_app(Runtime(traced))
    assert not isinstance(app, RequestContext)  # wrapped by OTel's ASGI middleware
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/healthcheck")).status_code == 200
    provider = trace.get_tracer_provider()
    assert provider.force_flush(5000)  # type: ignore[attr-defined]
    assert any(path == "/v1/traces" and size > 0 for path, size in _Collector.received)
    provider.shutdown()  # type: ignore[attr-defined]  # stop its export thread
