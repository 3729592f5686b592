"""Prometheus metrics shared by every area, in the process-wide default registry, and the
cache of label children that every metric on the request path uses (``LabelCache``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

# Far more label sets than one process sees in practice (routes x methods x statuses;
# models x endpoints x outcomes), few enough that a full cache is a few MB at most.
LABEL_CACHE_MAX_ENTRIES = 10_000


class LabelCache(dict[Hashable, M]):
    """A metric's label children by label values: ``cache[a, b]`` is ``metric.labels(a, b)``
    (``cache[a]`` for one label), made on first use and kept.

    ``labels()`` takes a lock and builds a tuple of strings on every call; a hit here is
    one dict lookup, in C. Values may be anything ``labels()`` turns into the same string
    every time (an int status: the key stays the int, the label is "200").

    Bounded: at ``max_entries`` distinct label values the cache starts over, so values
    that keep changing cost a ``labels()`` call each rather than memory. The metric itself
    keeps a child for every label values it has seen, for good: callers still keep their
    values few (a route template rather than a path; a known method or OTHER).
    """

    __slots__ = ("_labels", "_max_entries")

    def __init__(self, metric: M, *, max_entries: int = LABEL_CACHE_MAX_ENTRIES) -> None:
        super().__init__()
        self._labels: Callable[..., M] = metric.labels
        self._max_entries = max_entries

    def __missing__(self, key: Hashable) -> M:
        if len(self) >= self._max_entries:
            self.clear()
        child = self[key] = self._labels(*key) if type(key) is tuple else self._labels(key)
        return child


HTTP_REQUESTS = Counter(
    "jan_http_requests_total",
    "HTTP requests served, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "jan_http_request_duration_seconds",
    "Time to the end of the response, by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
