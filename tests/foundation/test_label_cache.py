"""``LabelCache``: a metric's label children made once and looked up by label values, in
bounded memory."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from functions.common.metrics import LabelCache


def test_children_are_made_once_and_are_the_metrics_own() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_total", "t", ["route", "status"], registry=registry)
    cache = LabelCache(counter)
    child = cache["/v1/x", 200]
    assert cache["/v1/x", 200] is child is counter.labels("/v1/x", "200")
    child.inc()
    assert registry.get_sample_value("t_total", {"route": "/v1/x", "status": "200"}) == 1
    assert len(cache) == 1


def test_one_label_is_looked_up_by_its_value() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["model"], registry=registry)
    cache = LabelCache(histogram)
    cache["m1"].observe(0.5)
    assert cache["m1"] is histogram.labels("m1")
    assert registry.get_sample_value("t_seconds_count", {"model": "m1"}) == 1


def test_the_cache_starts_over_when_full_and_series_keep_counting() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_total", "t", ["key"], registry=registry)
    cache = LabelCache(counter, max_entries=3)
    for n in range(10):
        cache[f"k{n}"].inc()
        assert len(cache) <= 3
    cache["k0"].inc()  # made again after a clear: the metric's same child
    assert registry.get_sample_value("t_total", {"key": "k0"}) == 2
    assert registry.get_sample_value("t_total", {"key": "k9"}) == 1
