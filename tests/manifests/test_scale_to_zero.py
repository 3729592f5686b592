"""What scaling to zero needs from the rendered manifests.

Knative's queue-proxy probes a starting pod's readiness every 50 ms (for up to 10 s) only
while the container's readinessProbe has no period: knative/serving
``pkg/queue/readiness/probe.go`` (``shouldProbeAggressively``: ``PeriodSeconds == 0``;
``retryInterval = 50 * time.Millisecond``), at commit
98e5ef90aa7033797aa0a61ef97f3ff7e49a3944. With a period, the kubelet's probe decides and a
cold start waits up to that period more. Its webhook then also refuses ``failureThreshold``
and ``timeoutSeconds`` (``pkg/apis/serving/k8s_validation.go``, ``validateReadinessProbe``:
"failureThreshold is disallowed when periodSeconds is zero", likewise timeoutSeconds).

The background-response queue is worked by the processes that serve ``responses`` (or
``all``), and no request wakes them for it: each keeps at least one pod.
"""

from __future__ import annotations

import pytest

from tests.manifests.support import OVERLAYS, Obj, env_of, functions, of_kind, render

AGGRESSIVE_PROBING_REFUSES = ("periodSeconds", "failureThreshold", "timeoutSeconds")
BACKGROUND_WORKERS = frozenset({"responses", "all"})


def knative_containers(objs: list[Obj]) -> list[tuple[str, Obj]]:
    """(where, container) for every container Knative serves: the functions, and the
    predictors of InferenceServices in KServe's Knative mode (their runtime's containers)."""
    found = [
        (f"Service/{s['metadata']['name']}", c)
        for s in functions(objs)
        for c in s["spec"]["template"]["spec"]["containers"]
    ]
    runtimes = {r["metadata"]["name"]: r for r in of_kind(objs, "ServingRuntime")}
    for isvc in of_kind(objs, "InferenceService"):
        mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
        if mode == "Knative":
            runtime = runtimes[isvc["spec"]["predictor"]["model"]["runtime"]]
            where = f"ServingRuntime/{runtime['metadata']['name']}"
            found += [(where, c) for c in runtime["spec"]["containers"]]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_readiness_probes_keep_knatives_fast_cold_start_probing(overlay: str) -> None:
    containers = knative_containers(render(overlay))
    assert any(where.startswith("ServingRuntime/") for where, _ in containers) == (
        overlay == "dev"  # jan-cpu scales to zero; prod's vLLM runs in Standard mode
    )
    for where, c in containers:
        probe = c["readinessProbe"]
        assert probe["httpGet"]["path"], where
        assert not [k for k in AGGRESSIVE_PROBING_REFUSES if probe.get(k)], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_background_queue_has_a_pod_to_run_on(overlay: str) -> None:
    workers = [
        s
        for s in functions(render(overlay))
        if env_of(s["spec"]["template"]["spec"]["containers"][0])["JAN_FUNCTION"]["value"]
        in BACKGROUND_WORKERS
    ]
    assert len(workers) == 1
    annotations = workers[0]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/min-scale"]) >= 1
