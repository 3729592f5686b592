"""OpenTelemetry tracing, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

from starlette.types import ASGIApp

from functions import __version__
from functions.common.settings import Settings


def instrument(app: ASGIApp, settings: Settings) -> ASGIApp:
    """Wrap the app in OTel's ASGI middleware when an exporter is configured; else no cost."""
    if not settings.otel_exporter_otlp_endpoint:
        return app
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(
            resource=Resource.create(
                {
                    "service.name": f"jan-server-{settings.jan_function}",
                    "service.version": __version__,
                }
            )
        )
        # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; traces go to its /v1/traces. Headers and
        # timeouts still come from the other OTEL_EXPORTER_OTLP_* variables.
        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
    return OpenTelemetryMiddleware(app)
