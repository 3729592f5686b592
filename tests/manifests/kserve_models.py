"""Check InferenceService and ServingRuntime objects against the KServe SDK's typed models.

Runs under kserve/.venv/bin/python, never the main environment: the ``kserve`` SDK pins a
``cloudevents`` that func-python rejects. tests/manifests/test_schemas.py starts it.

Input on stdin: a JSON object mapping a case name to a list of Kubernetes objects.
Output on stdout: a JSON object mapping each case name to its list of problems.
Every key must be a field of the SDK model at that place (the SDK, like the API server,
would otherwise drop a misspelt field silently), every value must have the model's type,
and every model must construct (the SDK's own required-field checks).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import kserve.models as kserve_models  # type: ignore[import-not-found,import-untyped,unused-ignore]
import kubernetes.client.models as k8s_models  # type: ignore[import-not-found,import-untyped,unused-ignore]

MODELS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
}
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "date": (str,),
    "datetime": (str,),
    "bytes": (str,),
}


def model_class(name: str) -> Any:
    """The generated class for an OpenAPI type name: KServe's own, else Kubernetes'."""
    found = getattr(kserve_models, name, None) or getattr(k8s_models, name, None)
    # The SDK names some Kubernetes types by their Go package: K8sIoApiAppsV1DeploymentStrategy
    # is the Kubernetes client's V1DeploymentStrategy.
    go_name = re.match(r"K8sIoApi[A-Z][a-z]*(V\d.*)$", name)
    if found is None and go_name:
        found = getattr(k8s_models, go_name.group(1), None)
    if found is None:
        raise LookupError(f"no SDK model named {name}")
    return found


def split_generic(type_name: str) -> tuple[str, str]:
    """("list", item type) or ("dict", value type) for the generators' spellings, else ("", "")."""
    for prefix in ("list[", "List["):
        if type_name.startswith(prefix):
            return "list", type_name[len(prefix) : -1]
    for prefix in ("dict(", "Dict["):
        if type_name.startswith(prefix):
            return "dict", type_name[len(prefix) : -1].split(", ", 1)[1]
    return "", ""


def check(value: Any, type_name: str, path: str, problems: list[str]) -> Any:
    """Build the SDK value for ``value`` of OpenAPI type ``type_name``, noting problems."""
    container, inner = split_generic(type_name)
    if container == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list for {type_name}")
            return None
        return [check(item, inner, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    if container == "dict":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping for {type_name}")
            return None
        return {key: check(item, inner, f"{path}.{key}", problems) for key, item in value.items()}
    if type_name in PRIMITIVES:
        expected = PRIMITIVES[type_name]
        wrong_bool = isinstance(value, bool) and type_name in ("int", "float")
        if wrong_bool or not isinstance(value, expected):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__}")
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object for {type_name}")
        return None
    attribute_of = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        attr = attribute_of.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        kwargs[attr] = check(item, cls.openapi_types[attr], f"{path}.{key}", problems)
    try:
        cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{path}: {type_name} rejected it: {exc}")
    return kwargs


def problems_of(obj: dict[str, Any]) -> list[str]:
    """Everything the SDK's models object to in one Kubernetes object."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    name = obj.get("metadata", {}).get("name", "?")
    label = f"{key[1]}/{name}"
    if key not in MODELS:
        return [f"{label}: no KServe SDK model for {key}"]
    problems: list[str] = []
    check(obj, MODELS[key], label, problems)
    return problems


def main() -> int:
    cases: dict[str, list[dict[str, Any]]] = json.load(sys.stdin)
    report = {case: [p for obj in objs for p in problems_of(obj)] for case, objs in cases.items()}
    json.dump(report, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
