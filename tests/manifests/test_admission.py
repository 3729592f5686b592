"""The controllers' admission rules (admission.py) hold for every rendered object of every
overlay, and each rule catches what it is written for."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.manifests import admission
from tests.manifests.support import OVERLAYS, Obj, one, render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_admission(overlay: str) -> None:
    assert admission.problems(render(overlay)) == {}


def test_the_install_outline_sets_only_flags_knative_reads() -> None:
    features = admission.knative_features()
    assert admission.knative_feature_problems(features) == []
    features["kubernetes.podspec-emptydir"] = "enabled"  # the real flag: ...-volumes-emptydir
    assert admission.knative_feature_problems(features)


def container_of(obj: Obj) -> Obj:
    spec = obj["spec"]
    found: Obj = (spec["template"]["spec"] if "template" in spec else spec)["containers"][0]
    return found


def set_env(name: str, value: str) -> Callable[[Obj], None]:
    return lambda o: container_of(o).setdefault("env", []).append({"name": name, "value": value})


def annotate(key: str, value: str) -> Callable[[Obj], None]:
    def change(o: Obj) -> None:
        o["spec"]["template"]["metadata"]["annotations"][f"autoscaling.knative.dev/{key}"] = value

    return change


def two_ports(o: Obj) -> None:
    container_of(o)["ports"].append({"containerPort": 8081})


def _mount_dev(o: Obj) -> None:
    container_of(o)["volumeMounts"][0]["mountPath"] = "/dev"


def _probe_fields(o: Obj) -> None:
    container_of(o)["readinessProbe"] = {"httpGet": {"path": "/readyz"}, "failureThreshold": 3}


def _two_handlers(o: Obj) -> None:
    container_of(o)["livenessProbe"]["tcpSocket"] = {"port": 8080}


def _probe_named_port(o: Obj) -> None:
    container_of(o)["livenessProbe"]["httpGet"]["port"] = "metrics"


def _port(number: int) -> Callable[[Obj], None]:
    return lambda o: container_of(o)["ports"][0].update(containerPort=number)


def _lifecycle(o: Obj) -> None:
    container_of(o)["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}}}


def _node_selector(o: Obj) -> None:
    o["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}


def _timeout(o: Obj) -> None:
    o["spec"]["template"]["spec"]["timeoutSeconds"] = 900


def _strategy_in_knative_mode(o: Obj) -> None:
    o["spec"]["predictor"]["deploymentStrategy"] = {"type": "Recreate"}


def _replicas(o: Obj) -> None:
    o["spec"]["predictor"]["minReplicas"] = 4


def _cnpg(path: tuple[str, ...], value: object) -> Callable[[Obj], None]:
    def change(o: Obj) -> None:
        target = o
        for step in path[:-1]:
            target = target.setdefault(step, {})
        target[path[-1]] = value

    return change


def _redirect_with_backend(o: Obj) -> None:
    o["spec"]["rules"][0]["filters"].append(
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}
    )


def _double_slash(o: Obj) -> None:
    o["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/v1//auth"


def _no_port(o: Obj) -> None:
    del o["spec"]["rules"][0]["backendRefs"][0]["port"]


def _long_backend_timeout(o: Obj) -> None:
    o["spec"]["rules"][2]["timeouts"]["backendRequest"] = "900s"


def _same_listener(o: Obj) -> None:
    o["spec"]["listeners"][1]["name"] = "http"


def _tls_on_http(o: Obj) -> None:
    o["spec"]["listeners"][0]["tls"] = {"mode": "Terminate"}


PARAMETERS = ("spec", "postgresql", "parameters")
CASES: list[tuple[str, str, str, Callable[[Obj], None], str]] = [
    # knative/serving k8s_validation.go
    ("Service", "jan-chat", "PORT", set_env("PORT", "8080"), "'PORT' is a reserved"),
    ("Service", "jan-chat", "K_SERVICE", set_env("K_SERVICE", "x"), "'K_SERVICE' is a reserved"),
    ("Service", "jan-chat", "queue port", _port(8012), "8012 is a reserved port"),
    ("Service", "jan-chat", "metrics port", _port(9091), "9091 is a reserved port"),
    ("Service", "jan-chat", "two ports", two_ports, "more than one container port"),
    ("Service", "jan-chat", "/dev", _mount_dev, "'/dev' is a reserved path"),
    ("Service", "jan-chat", "probe", _probe_fields, "disallowed when periodSeconds is zero"),
    ("Service", "jan-chat", "handlers", _two_handlers, "exactly one handler"),
    ("Service", "jan-chat", "probe port", _probe_named_port, "must match the container port"),
    ("Service", "jan-chat", "lifecycle", _lifecycle, "field 'lifecycle' not allowed"),
    ("Service", "jan-chat", "nodeSelector", _node_selector, "field 'nodeSelector' not allowed"),
    ("Service", "jan-chat", "timeout", _timeout, "timeoutSeconds above the maximum"),
    # knative/serving annotation_validation.go
    ("Service", "jan-chat", "scale", annotate("min-scale", "30"), "is less than min-scale"),
    ("Service", "jan-chat", "burst", annotate("target-burst-capacity", "-2"), "burst"),
    ("Service", "jan-chat", "delay", annotate("scale-down-delay", "2h"), "ScaleDownDelay"),
    ("Service", "jan-chat", "metric", annotate("metric", "cpu"), "validateMetric"),
    # kserve/kserve
    ("ServingRuntime", "jan-vllm", "PYTHONPATH", set_env("PYTHONPATH", "/x"), "PYTHONPATH"),
    ("InferenceService", "jan-llm", "replicas", _replicas, "validateReplicas"),
    # cloudnative-pg/cloudnative-pg cluster_webhook.go, pooler_webhook.go
    ("Cluster", "jan-db", "fixed", _cnpg((*PARAMETERS, "port"), "1"), "fixed"),
    ("Cluster", "jan-db", "latest", _cnpg(("spec", "imageName"), "postgres:latest"), "version tag"),
    ("Cluster", "jan-db", "memory", _cnpg((*PARAMETERS, "shared_buffers"), "8GB"), "shared_buf"),
    ("Cluster", "jan-db", "catalog", _cnpg(("spec", "imageCatalogRef"), {}), "mutually exclusive"),
    ("Cluster", "jan-db", "owner", _cnpg(("spec", "bootstrap", "initdb", "owner"), ""), "owner"),
    # kubernetes-sigs/gateway-api CEL rules
    ("HTTPRoute", "jan-api", "redirect", _redirect_with_backend, "together with backendRefs"),
    ("HTTPRoute", "jan-api", "path", _double_slash, "not a clean absolute path"),
    ("HTTPRoute", "jan-api", "port", _no_port, "Must have port for Service reference"),
    ("HTTPRoute", "jan-api", "timeouts", _long_backend_timeout, "backendRequest timeout"),
    ("Gateway", "jan", "listener", _same_listener, "Listener name must be unique"),
    ("Gateway", "jan", "tls", _tls_on_http, "tls must not be specified for protocol HTTP"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "name", "change", "expected"),
    [pytest.param(k, n, c, e, id=f"{k}-{label}") for k, n, label, c, e in CASES],
)
def test_each_rule_catches_a_violation(
    kind: str, name: str, change: Callable[[Obj], None], expected: str
) -> None:
    objs = [copy.deepcopy(o) for o in render("prod")]
    target = one(objs, kind, name)
    change(target)
    found = admission.problems(objs).get(f"{kind}/{name}", [])
    assert any(expected in p for p in found), found


def test_a_knative_mode_predictor_is_held_to_knatives_rules() -> None:
    """KServe makes a Knative Service of a Knative-mode predictor from its runtime."""
    objs = [copy.deepcopy(o) for o in render("dev")]
    runtime = one(objs, "ServingRuntime", "jan-llamacpp")
    runtime["spec"]["containers"][0]["env"].append({"name": "PORT", "value": "8080"})
    found = admission.problems(objs)["InferenceService/jan-cpu"]
    assert any("its Knative revision" in p and "'PORT' is a reserved" in p for p in found)
    isvc = one(objs, "InferenceService", "jan-cpu")
    _strategy_in_knative_mode(isvc)
    assert any(
        "only supported for raw deployment mode" in p
        for p in admission.problems(objs)["InferenceService/jan-cpu"]
    )


def test_pooler_rules() -> None:
    pooler: Obj = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Pooler",
        "metadata": {"name": "jan-db-pooler-rw"},
        "spec": {
            "cluster": {"name": "jan-db"},
            "type": "rw",
            "pgbouncer": {"poolMode": "transaction", "parameters": {"max_client_conn": "1000"}},
        },
    }
    assert admission.cnpg_pooler(pooler) == []
    pooler["spec"]["pgbouncer"]["parameters"]["listen_port"] = "6543"
    pooler["metadata"]["name"] = "jan-db"
    found = admission.cnpg_pooler(pooler)
    assert any("'listen_port' is not allowed" in p for p in found)
    assert any("other than the pooler's" in p for p in found)
