"""A rendered overlay, run on this machine the way a cluster would run it.

What the cluster would do is done here from the rendered objects, not from a second copy of
the configuration:

- **Secrets** are what their makers would create: CloudNativePG's ``<cluster>-app`` (its
  ``specs.CreateSecret``: the owner, a password, ``uri`` on ``<cluster>-rw.<namespace>``) and
  the ones manifests/README.md tells the operator to create (``jan-secrets``: the keys of
  its ``kubectl create secret`` line, random values). ConfigMaps are the rendered ones.
- **Environment** as the kubelet builds it: the image's, then ``envFrom``, then ``env`` in
  order with ``$(VAR)`` references to earlier variables expanded; a missing Secret, ConfigMap
  or key fails the container (``CreateContainerConfigError``) unless marked optional. Knative
  adds ``PORT`` (the container port) and ``K_SERVICE``/``K_CONFIGURATION``/``K_REVISION``;
  KServe builds a predictor's container from its runtime (admission.kserve_predictor_container).
- **Commands** as the images run them (``Images``): each image's final Dockerfile stage
  (the functions' ``Dockerfile``, ``kserve/Dockerfile``): its ENTRYPOINT and CMD when the
  manifest gives no command, its ENV (PATH above all: a command must be found on the
  image's PATH, where its virtualenv ``/opt/venv`` stands for this machine's).
- **Network**: each pod gets its own port on 127.0.0.1 in place of its container port (which
  stands in for its own network namespace: Knative's ``PORT`` is that port). Cluster DNS names
  of rendered Services (Knative Services, predictors, Services, CloudNativePG's ``-rw``,
  ``-ro``, ``-r``) in environment values are pointed at those ports, and the database at the
  local PostgreSQL, in a fresh database owned by the Cluster's owner role. Names of nothing
  rendered (an OpenTelemetry collector) are left alone, unreachable, as in a cluster without it.
- **Gateway**: the rendered HTTPRoutes in front (gateway.py).

Stood in for, because they cannot run here: vLLM on a GPU (``kserve/huggingfaceserver``) by
the CPU predictor, served under the model name the InferenceService's args give; TLS on the
HTTPS listener (plain HTTP on its local port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml

from tests.manifests.admission import kserve_predictor_container
from tests.manifests.support import (
    MANIFESTS,
    REPO,
    SCHEMAS,
    Obj,
    final_stage,
    install_outline,
    of_kind,
)

ADMIN_DSN = os.environ.get("JAN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
VENV_BIN = Path(sys.executable).parent
PREDICTOR_BIN = REPO / "kserve" / ".venv" / "bin"
CLUSTER_DOMAIN = "svc.cluster.local"
# What the install outline applies, where a route or a pod depends on it.
INSTALLED = {
    "net-gateway-api/releases/download/knative-v1.23.0/istio-gateway.yaml": (
        SCHEMAS / "installed" / "net-gateway-api-istio-gateway.yaml"
    ),
}
# istio manifests/profiles: the profiles that install istio-ingressgateway
ISTIO_PROFILES_WITH_INGRESS = frozenset({"default", "demo"})


class ClusterError(AssertionError):
    """What the cluster would refuse or fail at, in one line."""


def installed_objects() -> list[Obj]:
    """The objects the README's install outline creates that ours depend on."""
    objs: list[Obj] = []
    for line in install_outline():
        for url, path in INSTALLED.items():
            if line.startswith("kubectl apply") and line.endswith(url):
                objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
        if line.startswith("istioctl install"):
            match = re.search(r"profile=(\S+)", line)
            profile = match.group(1) if match else "default"
            if profile in ISTIO_PROFILES_WITH_INGRESS:
                # The ingress gateway pods that the local gateway Service selects.
                objs.append({"kind": "Pod", "metadata": {"labels": {"istio": "ingressgateway"}}})
    return objs


# --- secrets and configuration ------------------------------------------------------------
def operator_secrets() -> dict[str, dict[str, str]]:
    """The Secrets manifests/README.md has the operator create (generic ones), keys as its
    ``kubectl create secret generic NAME --from-literal=KEY=...`` lines give them."""
    text = (MANIFESTS / "README.md").read_text()
    found: dict[str, dict[str, str]] = {}
    for command in re.findall(r"create secret generic \S+(?:[^\n]*\\\n)*[^\n]*", text):
        name = command.split()[3]
        keys = re.findall(r"--from-literal=([a-z0-9-]+)=", command)
        found[name] = {key: secrets.token_hex(32) for key in keys}
    return found


def cnpg_app_secret(cluster: Obj) -> dict[str, str]:
    """cloudnative-pg/cloudnative-pg pkg/specs/secrets.go: CreateSecret, for the app user
    (internal/controller/cluster_create.go: reconcileAppUserSecret)."""
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    owner, dbname = initdb["owner"], initdb["database"]
    password = secrets.token_urlsafe(48)
    host = f"{name}-rw"

    def uri(at: str) -> str:
        user = f"{urllib.parse.quote(owner)}:{urllib.parse.quote(password, safe='')}"
        return f"postgresql://{user}@{at}:5432/{dbname}"

    return {
        "username": owner,
        "user": owner,
        "password": password,
        "dbname": dbname,
        "host": host,
        "port": "5432",
        "uri": uri(f"{host}.{namespace}"),
        "fqdn-uri": uri(f"{host}.{namespace}.{CLUSTER_DOMAIN}"),
    }


@dataclass
class Store:
    """Secrets and ConfigMaps by (namespace, name)."""

    secrets: dict[tuple[str, str], dict[str, str]]
    configmaps: dict[tuple[str, str], dict[str, str]]

    @classmethod
    def of(cls, objs: list[Obj], namespace: str) -> Store:
        found: dict[tuple[str, str], dict[str, str]] = {
            (namespace, name): data for name, data in operator_secrets().items()
        }
        for cluster in of_kind(objs, "Cluster", "postgresql.cnpg.io"):
            found[(cluster["metadata"]["namespace"], f"{cluster['metadata']['name']}-app")] = (
                cnpg_app_secret(cluster)
            )
        configmaps = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): dict(o.get("data", {}))
            for o in of_kind(objs, "ConfigMap")
        }
        return cls(found, configmaps)

    def lookup(self, kind: str, namespace: str, ref: Obj, key: str | None) -> Any:
        data = (self.secrets if kind == "Secret" else self.configmaps).get((namespace, ref["name"]))
        optional = bool(ref.get("optional"))
        if data is None:
            if optional:
                return None
            raise ClusterError(
                f"CreateContainerConfigError: {kind.lower()} {ref['name']!r} not found"
            )
        if key is None:
            return data
        if key not in data:
            if optional:
                return None
            raise ClusterError(
                f"CreateContainerConfigError: couldn't find key {key} in {kind} "
                f"{namespace}/{ref['name']}"
            )
        return data[key]


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: earlier variables only, $$ escapes, unknown kept."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return defined.get(m.group(1), m.group(0))

    return _VAR_REF.sub(one, value)


def container_env(container: Obj, namespace: str, store: Store) -> dict[str, str]:
    """The variables the kubelet gives a container (without the image's own)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                data = store.lookup(kind, namespace, source[key], None) or {}
                env.update({prefix + k: v for k, v in data.items()})
    for entry in container.get("env", []):
        if "value" in entry or "valueFrom" not in entry:
            env[entry["name"]] = expand(entry.get("value", ""), env)
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = store.lookup("Secret", namespace, ref, ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            value = store.lookup("ConfigMap", namespace, ref, ref["key"])
        else:
            raise ClusterError(f"{entry['name']}: valueFrom {sorted(source)} not emulated")
        if value is not None:
            env[entry["name"]] = value
    return env


# --- images --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]  # the image's environment, as this machine runs it
    cwd: Path


class Images:
    """What each image of the manifests runs, on this machine (``resolve``)."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir

    def resolve(self, image: str, command: list[str] | None, args: list[str] | None) -> Launch:
        repository = image.rsplit("@", 1)[0]
        repository = (
            repository.rsplit(":", 1)[0] if ":" in repository.rsplit("/", 1)[-1] else repository
        )
        if repository.endswith("/jan-server"):
            # The code under test: this run's own PYTHONPATH, when it has one (a worktree).
            code = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
            return self._dockerfile(REPO / "Dockerfile", VENV_BIN.parent, command, args, code)
        if repository.endswith("/jan-predictor"):
            return self._dockerfile(
                REPO / "kserve" / "Dockerfile", PREDICTOR_BIN.parent, command, args, {}
            )
        if repository in ("redis", "docker.io/library/redis"):
            return self._redis(command, args)
        raise ClusterError(f"no image model for {image!r}: add one to tests/manifests/cluster.py")

    def _dockerfile(
        self,
        dockerfile: Path,
        venv: Path,
        command: list[str] | None,
        args: list[str] | None,
        extra: dict[str, str],
    ) -> Launch:
        """A Dockerfile's final stage: ENTRYPOINT/CMD (Kubernetes: ``command`` replaces the
        ENTRYPOINT and drops CMD, ``args`` replaces CMD), ENV, with ``/opt/venv`` (the
        image's virtualenv) standing for ``venv``."""
        stage = final_stage(dockerfile.read_text())
        entrypoint: list[str] = []
        cmd: list[str] = []
        env: dict[str, str] = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        }
        for line in stage:
            word, _, rest = line.partition(" ")
            if word.upper() == "ENTRYPOINT":
                entrypoint = list(yaml.safe_load(rest))
            elif word.upper() == "CMD":
                cmd = list(yaml.safe_load(rest))
            elif word.upper() == "ENV":
                for item in shlex.split(rest):
                    key, _, value = item.partition("=")
                    env[key] = expand_shell(value, env)
        env = {k: v.replace("/opt/venv", str(venv)) for k, v in env.items()}
        if command:
            argv = [*command, *(args or [])]
        else:
            argv = [*entrypoint, *(args if args is not None else cmd)]
        if not argv:
            raise ClusterError(f"{dockerfile}: nothing to run")
        found = argv[0] if "/" in argv[0] else _which(argv[0], env["PATH"])
        if found is None or not Path(found).is_file():
            raise ClusterError(
                f"{argv[0]!r}: not found on the image's PATH ({env['PATH']}), {dockerfile}"
            )
        return Launch([found, *argv[1:]], {**env, **extra}, self.root)

    # redis's official image: docker-entrypoint.sh runs redis-server when the first argument
    # is an option
    def _redis(self, command: list[str] | None, args: list[str] | None) -> Launch:
        argv = [*(command or []), *(args or ["redis-server"])]
        if argv[0].startswith("-"):
            argv = ["redis-server", *argv]
        found = _which(argv[0], os.environ.get("PATH", ""))
        if found is None:
            raise ClusterError("redis-server is not installed on this machine")
        return Launch([found, *argv[1:]], {}, self.root)


def _which(program: str, path: str) -> str | None:
    for directory in path.split(":"):
        candidate = Path(directory) / program
        if directory and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def expand_shell(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)


# --- pods ---------------------------------------------------------------------------------
@dataclass
class Pod:
    """One container of the overlay, as this machine runs it."""

    name: str  # the object it comes from, Kind/name
    launch: Launch
    env: dict[str, str]  # what the kubelet adds to the image's
    port: int | None = None  # the local port standing in for its container port
    ready_path: str | None = None
    hosts: tuple[tuple[str, int], ...] = ()  # (cluster DNS name, service port) it answers
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log: Path | None = None

    def start(self, logs: Path, localize: Callable[[str], str]) -> None:
        env = {**self.launch.env, **{k: localize(v) for k, v in self.env.items()}}
        self.log = logs / (re.sub(r"[^a-z0-9-]+", "_", self.name.lower()) + ".log")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.launch.argv, env=env, cwd=self.launch.cwd, stdout=out, stderr=subprocess.STDOUT
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log else ""

    def wait_ready(self, deadline: float) -> None:
        assert self.process is not None and self.port is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClusterError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.tail()}"
                )
            with contextlib.suppress(OSError, httpx.HTTPError):
                if self.ready_path is None:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                url = f"http://127.0.0.1:{self.port}{self.ready_path}"
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise ClusterError(f"{self.name} not ready in time:\n{self.tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dns_names(name: str, namespace: str) -> tuple[str, ...]:
    return (
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.{CLUSTER_DOMAIN}",
    )


def knative_pod(name: str, namespace: str, container: Obj, images: Images, store: Store) -> Pod:
    """A Knative revision's user container: Knative appends PORT (its container port) and
    the K_* variables (knative/serving pkg/reconciler/revision/resources/deploy.go:
    makeServingContainer, makeContainer)."""
    port = free_port()
    env = container_env(container, namespace, store)
    env.update(PORT=str(port), K_SERVICE=name, K_CONFIGURATION=name, K_REVISION=f"{name}-00001")
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    return Pod(
        f"Service/{name}",
        images.resolve(container["image"], container.get("command"), container.get("args")),
        env,
        port,
        probe.get("path", "/"),
        tuple((host, 80) for host in dns_names(name, namespace)),
    )


@dataclass
class Overlay:
    """The pods of one rendered overlay, the routes in front and the database behind."""

    objs: list[Obj]
    workdir: Path
    namespace: str = "jan"
    database: str = field(default_factory=lambda: f"jan_rendered_{uuid.uuid4().hex[:10]}")
    pods: list[Pod] = field(default_factory=list)
    job: Pod | None = None
    endpoints: dict[tuple[str, int], int] = field(default_factory=dict)
    db_hosts: frozenset[str] = frozenset()
    db_names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = Images(self.workdir)
        self.store = Store.of(self.objs, self.namespace)
        self._plan()

    # --- what runs ---------------------------------------------------------------------
    def _plan(self) -> None:
        ns = self.namespace
        (job,) = of_kind(self.objs, "Job")
        (c,) = job["spec"]["template"]["spec"]["containers"]
        self.job = Pod(
            f"Job/{job['metadata']['name']}",
            self.images.resolve(c["image"], c.get("command"), c.get("args")),
            container_env(c, ns, self.store),
        )
        for svc in of_kind(self.objs, "Service", "serving.knative.dev"):
            spec = svc["spec"]["template"]["spec"]
            (container,) = spec["containers"]
            self.pods.append(
                knative_pod(svc["metadata"]["name"], ns, container, self.images, self.store)
            )
        runtimes = of_kind(self.objs, "ServingRuntime")
        for isvc in of_kind(self.objs, "InferenceService"):
            self.pods.append(self._predictor(isvc, runtimes))
        for deployment in of_kind(self.objs, "Deployment"):
            self.pods.append(self._deployment(deployment))
        for cluster in of_kind(self.objs, "Cluster", "postgresql.cnpg.io"):
            name = cluster["metadata"]["name"]
            self.db_hosts = frozenset(
                h for suffix in ("-rw", "-ro", "-r") for h in dns_names(name + suffix, ns)
            )
            initdb = cluster["spec"]["bootstrap"]["initdb"]
            self.db_names[initdb["database"]] = self.database
            self.db_owner = initdb["owner"]
        for pod in self.pods:
            for host in pod.hosts:
                assert pod.port is not None
                self.endpoints[host] = pod.port

    def _predictor(self, isvc: Obj, runtimes: list[Obj]) -> Pod:
        name = f"{isvc['metadata']['name']}-predictor"
        container = kserve_predictor_container(isvc, runtimes)
        mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
        if container["image"].split(":")[0].endswith("huggingfaceserver"):
            # vLLM needs a GPU: the CPU predictor stands in, under the name KServe's
            # huggingfaceserver would serve (its last --model_name wins, argparse-style).
            names = [
                a.split("=", 1)[1]
                for a in container.get("args", [])
                if a.startswith("--model_name=")
            ]
            port = free_port()
            launch = self.images.resolve(
                "ghcr.io/janhq/jan-predictor", None, [f"--model_name={names[-1]}"]
            )
            env = {"PORT": str(port), "PREDICTOR_INSTANCES": "1"}
            return Pod(
                f"InferenceService/{isvc['metadata']['name']}",
                launch,
                env,
                port,
                "/v2/health/ready",
                tuple((h, 80) for h in dns_names(name, self.namespace)),
            )
        if mode != "Knative":
            raise ClusterError(f"{name}: only Knative-mode custom predictors are emulated")
        pod = knative_pod(name, self.namespace, container, self.images, self.store)
        pod.name = f"InferenceService/{isvc['metadata']['name']}"
        return pod

    def _deployment(self, deployment: Obj) -> Pod:
        """A Deployment behind a Service (Redis): its container on a port of its own."""
        template = deployment["spec"]["template"]
        (c,) = template["spec"]["containers"]
        labels = template["metadata"]["labels"]
        port = free_port()
        hosts: list[tuple[str, int]] = []
        for svc in of_kind(self.objs, "Service", ""):
            selector = svc["spec"].get("selector", {})
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                for p in svc["spec"]["ports"]:
                    hosts += [
                        (h, p["port"]) for h in dns_names(svc["metadata"]["name"], self.namespace)
                    ]
        launch = self.images.resolve(c["image"], c.get("command"), c.get("args"))
        if Path(launch.argv[0]).name == "redis-server":
            launch = Launch(
                [*launch.argv, "--port", str(port), "--bind", "127.0.0.1"], launch.env, launch.cwd
            )
        return Pod(
            f"Deployment/{deployment['metadata']['name']}",
            launch,
            container_env(c, self.namespace, self.store),
            port,
            None,
            tuple(hosts),
        )

    # --- network ---------------------------------------------------------------------------
    def localize(self, value: str) -> str:
        """Cluster DNS names in a URL pointed at this machine (see the module docstring)."""

        def one(m: re.Match[str]) -> str:
            scheme, userinfo, host, port, path = m.group(
                "scheme", "userinfo", "host", "port", "path"
            )
            if host in self.db_hosts:
                admin = urllib.parse.urlsplit(ADMIN_DSN)
                db = path.lstrip("/") if path else ""
                local_db = self.db_names.get(db, db)
                return (
                    f"{scheme}://{userinfo or ''}{admin.hostname}:{admin.port or 5432}/{local_db}"
                )
            default = {"http": 80, "https": 443, "redis": 6379}.get(scheme, 0)
            target = self.endpoints.get((host, int(port) if port else default))
            if target is None:
                return m.group(0)
            return f"{scheme}://{userinfo or ''}127.0.0.1:{target}{path or ''}"

        return _URL.sub(one, value)

    # --- lifecycle -------------------------------------------------------------------------
    async def _create_database(self) -> None:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await admin.execute(f'CREATE ROLE "{self.db_owner}" LOGIN')
            await admin.execute(f'CREATE DATABASE "{self.database}" OWNER "{self.db_owner}"')
        finally:
            await admin.close()

    async def _drop_database(self) -> None:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()

    @contextlib.contextmanager
    def running(self, ready_seconds: float = 90) -> Iterator[Overlay]:
        """Install as manifests/README.md's "Install" does: everything but the functions,
        the migration Job to completion, then the functions; yields once all are ready."""
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        asyncio.run(self._create_database())
        try:
            first = [p for p in self.pods if not p.name.startswith("Service/")]
            functions = [p for p in self.pods if p.name.startswith("Service/")]
            for pod in first:
                pod.start(logs, self.localize)
            assert self.job is not None
            self.run_job(self.job, logs)
            for pod in functions:
                pod.start(logs, self.localize)
            deadline = time.monotonic() + ready_seconds
            for pod in self.pods:
                pod.wait_ready(deadline)
            yield self
        finally:
            for pod in self.pods:
                pod.stop()
            asyncio.run(self._drop_database())

    def run_job(self, job: Pod, logs: Path, timeout: float = 60) -> None:
        job.start(logs, self.localize)
        assert job.process is not None
        try:
            code = job.process.wait(timeout)
        except subprocess.TimeoutExpired:
            job.stop()
            raise ClusterError(f"{job.name} did not finish in {timeout}s:\n{job.tail()}") from None
        if code != 0:
            raise ClusterError(f"{job.name} failed ({code}):\n{job.tail()}")

    def exec(self, service: str, argv: list[str]) -> str:
        """``kubectl exec`` into a Knative Service's pod: the command through the image's
        resolution, with the pod's environment; its standard output."""
        (pod,) = [p for p in self.pods if p.name == f"Service/{service}"]
        svc = next(
            s
            for s in of_kind(self.objs, "Service", "serving.knative.dev")
            if s["metadata"]["name"] == service
        )
        image = svc["spec"]["template"]["spec"]["containers"][0]["image"]
        launch = self.images.resolve(image, argv, None)
        env = {**launch.env, **{k: self.localize(v) for k, v in pod.env.items()}}
        done = subprocess.run(
            launch.argv,
            env=env,
            cwd=launch.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(
                f"exec {argv} in {service} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return done.stdout

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.tail()}" for p in [*([self.job] if self.job else []), *self.pods]
        )


_URL = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<userinfo>[^@/\s]*@)?(?P<host>[A-Za-z0-9.-]+)"
    r"(?::(?P<port>\d+))?(?P<path>/[^\s,]*)?"
)
