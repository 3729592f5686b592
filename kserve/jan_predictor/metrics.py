"""Prometheus metrics, on a registry owned by one app (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RATE_BUCKETS = (1, 5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 1000)


class Metrics:
    """The predictor's metrics; ``jan_predictor_`` prefixed."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.model_name = model_name
        self.queue_depth = Gauge(
            "jan_predictor_queue_depth", "Requests waiting for a model instance.", registry=r
        )
        self.busy_instances = Gauge(
            "jan_predictor_busy_instances", "Model instances generating now.", registry=r
        )
        self.instances = Gauge(
            "jan_predictor_instances", "Model instances loaded and ready.", registry=r
        )
        self.ready = Gauge("jan_predictor_ready", "1 once the model is loaded.", registry=r)
        self.requests = Counter(
            "jan_predictor_requests",
            "Inference requests by endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.rejected = Counter(
            "jan_predictor_rejected",
            "Requests refused with 503 because the wait queue was full.",
            ["model"],
            registry=r,
        )
        self.cancelled = Counter(
            "jan_predictor_generations_cancelled",
            "Generations stopped early because the client went away.",
            ["model"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "jan_predictor_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "jan_predictor_completion_tokens", "Completion tokens generated.", ["model"], registry=r
        )
        self.time_to_first_token = Histogram(
            "jan_predictor_time_to_first_token_seconds",
            "From the request's arrival to its first generated token, queueing included.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "jan_predictor_tokens_per_second",
            "Decode speed of one generation: completion tokens over time after the first.",
            ["model"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "jan_predictor_request_duration_seconds",
            "Time to answer an inference request, queueing included (streams: to the first chunk).",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        # Show every per-model series from the start, zero until something happens.
        for metric in (
            self.rejected,
            self.cancelled,
            self.prompt_tokens,
            self.completion_tokens,
            self.time_to_first_token,
            self.tokens_per_second,
        ):
            metric.labels(model_name)

    def observe_generation(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        ttft: float | None,
        decode_seconds: float | None,
        cancelled: bool,
    ) -> None:
        """Record one finished generation."""
        model = self.model_name
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.completion_tokens.labels(model).inc(completion_tokens)
        if ttft is not None:
            self.time_to_first_token.labels(model).observe(ttft)
        if decode_seconds and completion_tokens > 1:
            self.tokens_per_second.labels(model).observe((completion_tokens - 1) / decode_seconds)
        if cancelled:
            self.cancelled.labels(model).inc()

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics`` in Prometheus' text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
