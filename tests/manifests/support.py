"""Rendering the kustomize overlays once per session, and small lookups over the result."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("dev", "prod")
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KSERVE_PYTHON = REPO / "kserve" / ".venv" / "bin" / "python"

# API areas: the paths each one owns (functions/<area>) and its autoscaling policy.
AREAS: dict[str, tuple[str, ...]] = {
    "auth": ("/v1/auth",),
    "admin": ("/v1/organization",),
    "chat": (
        "/v1/chat",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/audio",
        "/v1/images",
        "/v1/moderations",
        "/v1/rerank",
        "/v1/score",
    ),
    "conversations": ("/v1/conversations",),
    "responses": ("/v1/responses",),
    "mcp": ("/v1/mcp",),
    "console": ("/console",),
}
# The OpenAPI document and Swagger UI (functions/ops/docs.py), routed in prod to this area.
DOCS_AREA = "admin"
DOCS_PATHS = ("/openapi.json", "/api/swagger")
SCALE_TO_ZERO = frozenset({"auth", "admin", "conversations", "mcp", "console"})
HOT_PATH = frozenset({"chat", "responses"})

Obj = dict[str, Any]


def tool(name: str) -> str:
    """A command-line tool from this environment's bin/ (PyPI wheels), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the dev dependencies")
    return found


def kustomize(path: Path) -> list[Obj]:
    """`kubectl kustomize` of one kustomization directory, parsed."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def _rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(kustomize(MANIFESTS / "overlays" / overlay))


def render(overlay: str) -> list[Obj]:
    """The overlay's objects (cached; callers must not modify them)."""
    return list(_rendered(overlay))


@functools.cache
def render_with(overlay: str, component: str) -> tuple[Obj, ...]:
    """The overlay with one more component added, as manifests/README.md has operators do
    (in a copy of manifests/; cached, callers must not modify the objects)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "manifests"
        shutil.copytree(MANIFESTS, copy)
        path = copy / "overlays" / overlay / "kustomization.yaml"
        kustomization = yaml.safe_load(path.read_text())
        kustomization.setdefault("components", []).append(f"../../components/{component}")
        path.write_text(yaml.safe_dump(kustomization))
        return tuple(kustomize(path.parent))


def group_of(obj: Obj) -> str:
    api_version: str = obj["apiVersion"]
    return api_version.rpartition("/")[0]


def of_kind(objs: list[Obj], kind: str, group: str | None = None) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind and (group is None or group_of(o) == group)]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def knative_services(objs: list[Obj]) -> list[Obj]:
    return of_kind(objs, "Service", "serving.knative.dev")


def functions(objs: list[Obj]) -> list[Obj]:
    """The Knative Services that run the jan-server image, one per API area."""
    return [
        s
        for s in knative_services(objs)
        if s["metadata"]["labels"].get("app.kubernetes.io/component") == "function"
    ]


def pod_specs(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """(where, pod-like spec with containers) for every place an object defines containers."""
    kind = obj["kind"]
    spec = obj.get("spec", {})
    if kind in ("Service", "Job", "Deployment", "StatefulSet") and "template" in spec:
        yield f"{kind}/{obj['metadata']['name']}", spec["template"]["spec"]
    elif kind in ("ServingRuntime", "ClusterServingRuntime"):
        yield f"{kind}/{obj['metadata']['name']}", spec
    elif kind == "InferenceService":
        predictor = spec["predictor"]
        model = predictor.get("model")
        where = f"{kind}/{obj['metadata']['name']}"
        yield where, {"containers": [model] if model else predictor.get("containers", [])}


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def final_stage(dockerfile: str) -> list[str]:
    """The instructions of the last FROM stage, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [
        ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def install_outline() -> list[str]:
    """The commands of manifests/README.md's install outline (the ```sh block after
    "Install outline"), continuation lines joined, comments dropped."""
    text = (MANIFESTS / "README.md").read_text()
    block = text.split("Install outline", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]


def config_data(objs: list[Obj], name: str = "jan-config") -> dict[str, str]:
    data: dict[str, str] = one(objs, "ConfigMap", name)["data"]
    return data
