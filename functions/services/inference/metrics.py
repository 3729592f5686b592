"""Prometheus metrics of the inference router, in the process-wide default registry.

Endpoints are named by provider and place, never by URL (a URL may carry a tenant's
host or, in rows stored before user-info was refused, a credential): ``prov_…/0`` for the
first base URL of a stored provider, ``builtin`` for ``JAN_INFERENCE_MODEL_URL``.

    jan_upstream_requests_total{model, endpoint, outcome}
        every attempt on a model server; outcome is ``ok``, the failure's fault from
        ``failures`` (``caller``, ``upstream``, ``ours``), or ``cancelled`` (the client
        left a stream)
    jan_upstream_failures_total{endpoint, fault, reason}
        the same failures with their short reason (connect, timeout, status_503, cut, …)
    jan_upstream_ejections_total{endpoint, reason}
        endpoints taken out of rotation: ``failures`` (consecutive failures), ``slow``
        (latency outlier), ``probe`` (its probe failed: kept out longer)
    jan_upstream_time_to_first_token_seconds{model}
        from sending a streamed request to its first event
    jan_upstream_tokens_total{model, kind}
        prompt and completion tokens as the model servers reported them
    jan_model_fallbacks_total{model, fallback, reason, outcome}
        a request that ``model`` could not serve tried on ``fallback`` (a Jan model
        fallback list); reason ``unavailable`` (every endpoint of ``model`` failed before
        the first byte: 502, 503, 504, or cold past the wake time) or ``context_window``
        (``model`` refused the request as too long for its context window); outcome ``ok``
        or ``failed``
    jan_model_wake_seconds{model}
        a model that scaled to zero, from its first cold answer (503, or a refused
        connection to a provider that scales to zero) to its first success (``waking``)
    jan_model_requests_held{model}
        requests held now while their model wakes
    jan_model_wake_gave_up_total{model}
        held requests whose wait reached ``JAN_UPSTREAM_WARMUP_SECONDS`` (they got the 503)
    jan_upstream_endpoint_healthy{endpoint}, jan_upstream_outstanding_requests{endpoint}
        gauges read from the health book at scrape time (nothing on the request path)

The request path pays one dict lookup per metric: label children are made once per label
values and kept (``functions.common.metrics.LabelCache``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from functions.common.metrics import LabelCache

if TYPE_CHECKING:
    from functions.services.inference.health import HealthBook

REQUESTS = Counter(
    "jan_upstream_requests_total",
    "Attempts on model servers, by model, endpoint and outcome (ok or the failure's fault).",
    ["model", "endpoint", "outcome"],
)
FAILURES = Counter(
    "jan_upstream_failures_total",
    "Failed attempts on model servers, by endpoint, fault and reason.",
    ["endpoint", "fault", "reason"],
)
EJECTIONS = Counter(
    "jan_upstream_ejections_total",
    "Endpoints taken out of rotation, by endpoint and reason (failures, slow, probe).",
    ["endpoint", "reason"],
)
TTFT = Histogram(
    "jan_upstream_time_to_first_token_seconds",
    "Time from sending a streamed request to its first event, by model.",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TOKENS = Counter(
    "jan_upstream_tokens_total",
    "Tokens reported by model servers, by model and kind (prompt, completion).",
    ["model", "kind"],
)
FALLBACKS = Counter(
    "jan_model_fallbacks_total",
    "Requests tried on a fallback model, by the model that failed, the fallback, why "
    "(unavailable, context_window) and outcome.",
    ["model", "fallback", "reason", "outcome"],
)
WAKE = Histogram(
    "jan_model_wake_seconds",
    "Time from a sleeping model's first cold answer to its first success, by model.",
    ["model"],
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 300),
)
HELD = Gauge(
    "jan_model_requests_held",
    "Requests held while their model wakes (scales from zero, loads), by model.",
    ["model"],
)
GAVE_UP = Counter(
    "jan_model_wake_gave_up_total",
    "Requests held for a waking model that reached the wake time and got a 503, by model.",
    ["model"],
)

OK = "ok"
CANCELLED = "cancelled"
# Why a request went on to a fallback model (``jan_model_fallbacks_total``'s reason).
UNAVAILABLE = "unavailable"
CONTEXT_WINDOW = "context_window"

_requests = LabelCache(REQUESTS)
_ttft = LabelCache(TTFT)
_tokens = LabelCache(TOKENS)


def count_request(model: str, endpoint: str, outcome: str) -> None:
    _requests[model, endpoint, outcome].inc()


def count_failure(endpoint: str, fault: str, reason: str) -> None:
    FAILURES.labels(endpoint, fault, reason).inc()  # rare: no cache needed


def count_ejection(endpoint: str, reason: str) -> None:
    EJECTIONS.labels(endpoint or "unknown", reason).inc()  # rare: no cache needed


def count_fallback(model: str, fallback: str, reason: str, outcome: str) -> None:
    FALLBACKS.labels(model, fallback, reason, outcome).inc()  # rare: no cache needed


def observe_wake(model: str, seconds: float) -> None:
    WAKE.labels(model).observe(seconds)  # rare: no cache needed


def held(model: str, change: int) -> None:
    HELD.labels(model).inc(change)  # only while a model wakes: no cache needed


def count_gave_up(model: str) -> None:
    GAVE_UP.labels(model).inc()


def observe_ttft(model: str, seconds: float) -> None:
    _ttft[model].observe(seconds)


def count_tokens(model: str, prompt: int, completion: int) -> None:
    # Both series exist from a model's first report, zero or not.
    prompt_child = _tokens[model, "prompt"]
    completion_child = _tokens[model, "completion"]
    if prompt:
        prompt_child.inc(prompt)
    if completion:
        completion_child.inc(completion)


class _HealthCollector:
    """Endpoint gauges from every live health book (one per process outside tests)."""

    def __init__(self) -> None:
        self.books: weakref.WeakSet[HealthBook] = weakref.WeakSet()

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        healthy: dict[str, int] = {}
        outstanding: dict[str, int] = {}
        for book in list(self.books):
            for ep in book.endpoints():
                label = ep.label
                if not label:  # known only from shared health: not routed to here
                    continue
                healthy[label] = min(healthy.get(label, 1), 0 if ep.ejected else 1)
                outstanding[label] = outstanding.get(label, 0) + ep.outstanding
        up, busy = self._families()
        for label, value in healthy.items():
            up.add_metric([label], value)
            busy.add_metric([label], outstanding[label])
        return [up, busy]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "jan_upstream_endpoint_healthy",
                "1 while an endpoint is in rotation, 0 while it is ejected.",
                labels=["endpoint"],
            ),
            GaugeMetricFamily(
                "jan_upstream_outstanding_requests",
                "Requests in flight to an endpoint (what least-outstanding balancing reads).",
                labels=["endpoint"],
            ),
        )


_collector = _HealthCollector()
REGISTRY.register(_collector)


def track(book: HealthBook) -> None:
    """Report this health book's endpoints in the gauges while it lives."""
    _collector.books.add(book)


def untrack(book: HealthBook) -> None:
    """Stop reporting a health book (its service stopped; labels such as ``builtin`` are
    the same in every book, so a stopped one must not blend into the live one's gauges)."""
    _collector.books.discard(book)
