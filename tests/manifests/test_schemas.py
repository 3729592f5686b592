"""Every rendered object is checked against a schema for its kind.

- Kubernetes' own kinds and Knative Serving: cloudcoil's typed (pydantic) models.
- CloudNativePG and Gateway API: the CRDs' openAPIV3Schema, copied into
  tests/manifests/schemas/crds/ (sources in each file's header and in SOURCES.md there).
- KServe: the ``kserve`` SDK's models, in kserve/.venv (see kserve_models.py).

The typed models ignore unknown keys, as the API server prunes them; a misspelt field would
pass unnoticed, so each check also fails on any key the model does not know.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml
from cloudcoil.models.knative_serving.serving import v1 as knative_serving_v1
from cloudcoil.models.kubernetes.apps import v1 as apps_v1
from cloudcoil.models.kubernetes.batch import v1 as batch_v1
from cloudcoil.models.kubernetes.core import v1 as core_v1
from cloudcoil.models.kubernetes.networking import v1 as networking_v1

from tests.manifests.support import (
    KSERVE_PYTHON,
    OVERLAYS,
    SCHEMAS,
    Obj,
    group_of,
    one,
    render,
)

TYPED_MODELS: dict[tuple[str, str], type[pydantic.BaseModel]] = {
    ("v1", "Namespace"): core_v1.Namespace,
    ("v1", "ServiceAccount"): core_v1.ServiceAccount,
    ("v1", "ConfigMap"): core_v1.ConfigMap,
    ("v1", "Service"): core_v1.Service,
    ("v1", "PersistentVolumeClaim"): core_v1.PersistentVolumeClaim,
    ("apps/v1", "Deployment"): apps_v1.Deployment,
    ("batch/v1", "Job"): batch_v1.Job,
    ("networking.k8s.io/v1", "NetworkPolicy"): networking_v1.NetworkPolicy,
    ("serving.knative.dev/v1", "Service"): knative_serving_v1.Service,
}
CRD_SCHEMA_DIR = SCHEMAS / "crds"
CRD_SCHEMAS: dict[tuple[str, str], str] = {
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_v1_cluster.yaml",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateway.networking.k8s.io_v1_gateway.yaml",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_v1_httproute.yaml",
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): (
        "gateway.networking.k8s.io_v1beta1_referencegrant.yaml"
    ),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): "postgresql.cnpg.io_v1_scheduledbackup.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.yaml",
}
KSERVE_KINDS = frozenset(
    {
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    }
)


def key_of(obj: Obj) -> tuple[str, str]:
    return obj["apiVersion"], obj["kind"]


def dropped_keys(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in ``given`` but missing from ``kept`` (the model's dump of it)."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        missing: list[str] = []
        for key, value in given.items():
            if key not in kept:
                missing.append(f"{path}.{key}")
            else:
                missing += dropped_keys(value, kept[key], f"{path}.{key}")
        return missing
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [path]
        return [
            p
            for i, (g, k) in enumerate(zip(given, kept, strict=True))
            for p in dropped_keys(g, k, f"{path}[{i}]")
        ]
    return []


def typed_model_problems(obj: Obj) -> list[str]:
    model = TYPED_MODELS[key_of(obj)]
    try:
        parsed = model.model_validate(obj)
    except pydantic.ValidationError as exc:
        return [str(exc)]
    except TypeError as exc:
        # cloudcoil's quantity type cannot take a plain number ("1"): write "1000m".
        return [f"{exc} (write CPU quantities in millicores, e.g. 1000m)"]
    kept = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
    return [f"unknown field {path}" for path in dropped_keys(obj, kept)]


def as_api_server_prunes(schema: Any) -> Any:
    """The schema, made to reject fields the API server would silently prune.

    A structural CRD schema drops unknown fields instead of rejecting them, so a misspelt
    field would pass unnoticed: every object that lists its properties (and neither keeps
    unknown fields nor declares a map) gets additionalProperties: false here.
    """
    if isinstance(schema, list):
        return [as_api_server_prunes(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: as_api_server_prunes(v) for k, v in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _pruned(validator: Any, pruned: Any, instance: Any, schema: Any) -> Any:
    """A rendered value inside a subtree the copy left out: it cannot be checked."""
    if pruned:
        yield jsonschema.ValidationError(
            "this field's schema was not copied from the CRD (x-jan-pruned): copy that "
            "subtree from the source named in the schema file before setting it"
        )


@functools.cache
def crd_validator(file: str) -> Callable[[Obj], list[str]]:
    schema = as_api_server_prunes(yaml.safe_load((CRD_SCHEMA_DIR / file).read_text()))
    base = jsonschema.validators.Draft7Validator
    base.check_schema(schema)
    # types-jsonschema leaves extend() untyped.
    cls = jsonschema.validators.extend(base, {"x-jan-pruned": _pruned})  # type: ignore[no-untyped-call]
    validator = cls(schema)

    def problems(obj: Obj) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]

    return problems


def crd_schema_problems(obj: Obj) -> list[str]:
    return crd_validator(CRD_SCHEMAS[key_of(obj)])(obj)


@functools.cache
def _kserve_report(cases_json: str) -> dict[str, list[str]]:
    assert KSERVE_PYTHON.exists(), (
        f"{KSERVE_PYTHON} is missing: the KServe SDK checks run in the predictor's own "
        "environment (`make -C kserve env`)"
    )
    result = subprocess.run(
        [str(KSERVE_PYTHON), str(Path(__file__).with_name("kserve_models.py"))],
        input=cases_json,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kserve_models.py failed:\n{result.stdout}\n{result.stderr}"
    report: dict[str, list[str]] = json.loads(result.stdout)
    return report


def kserve_problems(cases: dict[str, list[Obj]]) -> dict[str, list[str]]:
    """Problems per case, from one run of the SDK (importing it takes seconds)."""
    return _kserve_report(json.dumps(cases, sort_keys=True))


def kserve_objects(overlay: str) -> list[Obj]:
    return [o for o in render(overlay) if group_of(o) == "serving.kserve.io"]


def all_kserve_cases() -> dict[str, list[Obj]]:
    """Every overlay's KServe objects plus a deliberately broken copy, checked in one run."""
    cases = {overlay: kserve_objects(overlay) for overlay in OVERLAYS}
    broken = copy.deepcopy(one(render("prod"), "InferenceService", "jan-llm"))
    broken["spec"]["predictor"]["model"]["stroageUri"] = "hf://x/y"
    broken["spec"]["predictor"]["minReplicas"] = "one"
    cases["broken"] = [broken]
    return cases


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kind_has_a_validator(overlay: str) -> None:
    known = set(TYPED_MODELS) | set(CRD_SCHEMAS) | KSERVE_KINDS
    unvalidated = sorted({key_of(o) for o in render(overlay)} - known)
    assert not unvalidated, f"no schema for {unvalidated}: add one to test_schemas.py"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_and_knative_objects_match_typed_models(overlay: str) -> None:
    checked = [o for o in render(overlay) if key_of(o) in TYPED_MODELS]
    assert any(o["apiVersion"] == "serving.knative.dev/v1" for o in checked)
    problems = {f"{o['kind']}/{o['metadata']['name']}": typed_model_problems(o) for o in checked}
    assert not {k: v for k, v in problems.items() if v}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cnpg_and_gateway_objects_match_their_crd_schemas(overlay: str) -> None:
    checked = [o for o in render(overlay) if key_of(o) in CRD_SCHEMAS]
    assert {o["kind"] for o in checked} >= {"Cluster", "Gateway", "HTTPRoute", "ReferenceGrant"}
    problems = {f"{o['kind']}/{o['metadata']['name']}": crd_schema_problems(o) for o in checked}
    assert not {k: v for k, v in problems.items() if v}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kserve_objects_match_the_kserve_sdk_models(overlay: str) -> None:
    assert kserve_objects(overlay), "each overlay serves a model"
    assert kserve_problems(all_kserve_cases())[overlay] == []


def test_kserve_check_catches_a_misspelt_field_and_a_wrong_type() -> None:
    found = kserve_problems(all_kserve_cases())["broken"]
    assert any("stroageUri: not a field of V1beta1ModelSpec" in p for p in found), found
    assert any("minReplicas: expected int" in p for p in found), found


def test_typed_model_check_catches_a_misspelt_field() -> None:
    service = copy.deepcopy(one(render("prod"), "Service", "jan-chat"))
    service["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert typed_model_problems(service) == [
        "unknown field .spec.template.spec.containers[0].readinesProbe"
    ]


@pytest.mark.parametrize(
    ("kind", "name", "path", "bad"),
    [
        ("Cluster", "jan-db", ("spec", "instance"), 3),
        ("Cluster", "jan-db", ("spec", "primaryUpdateStrategy"), "automatic"),
        ("HTTPRoute", "jan-api", ("spec", "rules", 2, "timeouts", "request"), "15 minutes"),
        ("HTTPRoute", "jan-api", ("spec", "rules", 0, "backendRefs", 0, "prot"), 80),
        ("ReferenceGrant", "jan-to-knative-local-gateway", ("spec", "from", 0, "namespace"), ""),
    ],
)
def test_crd_schema_check_catches_mistakes(
    kind: str, name: str, path: tuple[str | int, ...], bad: object
) -> None:
    obj = copy.deepcopy(one(render("prod"), kind, name))
    target: Any = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = bad
    assert crd_schema_problems(obj)


def test_crd_schema_check_rejects_a_field_the_api_server_would_prune() -> None:
    cluster = copy.deepcopy(one(render("prod"), "Cluster", "jan-db"))
    cluster["spec"]["storage"]["sizee"] = "1Gi"
    assert any("sizee" in p for p in crd_schema_problems(cluster))


def test_crd_schema_check_refuses_fields_whose_schema_was_not_copied() -> None:
    cluster = copy.deepcopy(one(render("prod"), "Cluster", "jan-db"))
    cluster["spec"]["certificates"] = {"serverCASecret": "jan-ca"}
    assert any("x-jan-pruned" in p for p in crd_schema_problems(cluster))
