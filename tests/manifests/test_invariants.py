"""What must hold in the rendered manifests, whatever is changed in them."""

from __future__ import annotations

import json
import re

import pytest

from functions.common.settings import DATABASE_FREE_AREAS, Settings
from functions.common.shutdown import CUT_SECONDS
from tests.manifests.support import (
    AREAS,
    DOCS_AREA,
    DOCS_PATHS,
    HOT_PATH,
    MANIFESTS,
    OVERLAYS,
    SCALE_TO_ZERO,
    Obj,
    config_data,
    env_of,
    functions,
    kustomize,
    of_kind,
    one,
    pod_specs,
    render,
    render_with,
)

NAMESPACE = "jan"
SECRET_LIKE = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|DSN|CREDENTIAL", re.IGNORECASE)
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
AUTOSCALING = "autoscaling.knative.dev/"


def area_of(service: Obj) -> str:
    area: str = service["metadata"]["labels"]["jan.ai/area"]
    return area


def container(service: Obj) -> Obj:
    containers = service["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    first: Obj = containers[0]
    return first


def template_annotations(service: Obj) -> dict[str, str]:
    found: dict[str, str] = service["spec"]["template"]["metadata"]["annotations"]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_unique_objects_in_the_namespace(overlay: str) -> None:
    objs = render(overlay)
    ids = [
        (o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in objs
    ]
    assert len(ids) == len(set(ids))
    for o in objs:
        if o["kind"] == "Namespace":
            assert o["metadata"]["name"] == NAMESPACE
        elif o["kind"] == "ReferenceGrant":
            # It grants access to the Knative gateway's Service, so it lives beside it.
            assert o["metadata"]["namespace"] == "istio-system"
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]["name"]


@pytest.mark.parametrize(
    "path",
    [
        "base",
        "base/function",
        "base/postgres",
        "base/gateway",
        "base/inference/cpu",
        "base/inference/vllm",
    ],
)
def test_each_building_block_renders_alone(path: str) -> None:
    assert kustomize(MANIFESTS / path)


def test_dev_runs_one_all_in_one_function() -> None:
    (service,) = functions(render("dev"))
    assert service["metadata"]["name"] == "jan-all"
    assert env_of(container(service))["JAN_FUNCTION"]["value"] == "all"


def test_prod_runs_one_function_per_area_from_one_image() -> None:
    objs = render("prod")
    services = {s["metadata"]["name"]: s for s in functions(objs)}
    assert set(services) == {f"jan-{area}" for area in AREAS}
    for name, service in services.items():
        area = name.removeprefix("jan-")
        assert area_of(service) == area
        assert env_of(container(service))["JAN_FUNCTION"]["value"] == area
        assert service["spec"]["template"]["metadata"]["labels"]["jan.ai/area"] == area
    images = {container(s)["image"] for s in services.values()}
    migrate = one(objs, "Job", "jan-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert images == {migrate["image"]}
    assert ":" in migrate["image"] and not migrate["image"].endswith(":latest")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_functions_probe_health_and_readiness(overlay: str) -> None:
    for service in functions(render(overlay)):
        c = container(service)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # Knative routes to the one declared port; probes must not name another.
        assert "port" not in c["livenessProbe"]["httpGet"]
        assert "port" not in c["readinessProbe"]["httpGet"]
        assert c["ports"] == [{"name": "http1", "containerPort": 8080}]


# knative/serving: pkg/queue/sharedmain/main.go, drainSleepDuration: the user container's
# preStop hook (the queue-proxy's /wait-for-drain) returns after it.
KNATIVE_DRAIN_SECONDS = 30


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_graceful_shutdown_fits_the_termination_grace_period(overlay: str) -> None:
    """Knative makes a revision's timeoutSeconds its pods' terminationGracePeriodSeconds
    (pkg/reconciler/revision/resources/deploy.go, BuildPodSpec): the queue-proxy's drain,
    then the function's own drain, grace and cut must fit in it, or the kubelet kills the
    process before it has ended the streams it cut."""
    settings = Settings.model_fields
    for service in functions(render(overlay)):
        env = {k: v.get("value") for k, v in env_of(container(service)).items()}
        drain = float(
            env.get("JAN_SHUTDOWN_DRAIN_SECONDS") or settings["jan_shutdown_drain_seconds"].default
        )
        grace = float(
            env.get("JAN_SHUTDOWN_GRACE_SECONDS") or settings["jan_shutdown_grace_seconds"].default
        )
        period = service["spec"]["template"]["spec"].get("timeoutSeconds", 300)
        assert KNATIVE_DRAIN_SECONDS + drain + grace + CUT_SECONDS <= period, (
            service["metadata"]["name"], drain, grace, period,
        )  # fmt: skip
        # The queue-proxy drains the pod before SIGTERM: a drain of our own only delays.
        assert drain == 0, service["metadata"]["name"]
        assert grace >= period / 2, service["metadata"]["name"]  # streams run for minutes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for obj in render(overlay):
        for where, spec in pod_specs(obj):
            for c in spec["containers"]:
                resources = c.get("resources", {})
                if obj["kind"] == "InferenceService" or where.startswith("ServingRuntime"):
                    # KServe merges the model's resources into the runtime's container.
                    assert resources.get("requests") or obj["kind"] == "ServingRuntime"
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(kind, {})), (where, kind)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_our_containers_are_locked_down(overlay: str) -> None:
    """Functions, the migration Job, the CPU predictor and Redis: non-root, read-only root."""
    for obj in render(overlay):
        for where, spec in pod_specs(obj):
            if obj["kind"] == "InferenceService" or "vllm" in where:
                continue  # the model spec inherits its runtime's securityContext
            for c in spec["containers"]:
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True, where
                assert sc.get("runAsUser", 1) != 0, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
                assert sc["readOnlyRootFilesystem"] is True, where
                if obj["kind"] != "ServingRuntime":
                    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                    volumes = {v["name"]: v for v in spec.get("volumes", [])}
                    writable = mounts.get("/tmp") or mounts.get("/data")
                    assert writable and "emptyDir" in volumes[writable], where


def test_gpu_runtime_drops_privileges() -> None:
    runtime = one(render("prod"), "ServingRuntime", "jan-vllm")
    sc = runtime["spec"]["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_never_inlined(overlay: str) -> None:
    objs = render(overlay)
    assert not of_kind(objs, "Secret"), "Secrets are created out of band (README)"
    for cm in of_kind(objs, "ConfigMap"):
        assert not [k for k in cm.get("data", {}) if SECRET_LIKE.search(k)], cm["metadata"]["name"]
    for obj in objs:
        for where, spec in pod_specs(obj):
            for c in spec["containers"]:
                env = env_of(c)
                for name, entry in env.items():
                    if not SECRET_LIKE.search(name):
                        continue
                    if "valueFrom" in entry:
                        assert "secretKeyRef" in entry["valueFrom"], (where, name)
                        continue
                    # Only a composition of variables that themselves come from Secrets or
                    # ConfigMaps, with no credential left once they are taken out.
                    value = entry["value"]
                    refs = VAR_REF.findall(value)
                    assert refs, (where, name, "inline secret value")
                    for ref in refs:
                        assert "valueFrom" in env.get(ref, {}), (where, name, ref)
                        if SECRET_LIKE.search(ref):
                            assert "secretKeyRef" in env[ref]["valueFrom"], (where, name, ref)
                    assert not re.search(r"//[^/@$]*[^/@:$]@", VAR_REF.sub("", value)), (
                        where,
                        name,
                    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_database_dsns_point_at_the_cnpg_cluster(overlay: str) -> None:
    objs = render(overlay)
    (cluster,) = of_kind(objs, "Cluster", "postgresql.cnpg.io")
    name = cluster["metadata"]["name"]
    config = config_data(objs)
    replicas = cluster["spec"]["instances"] > 1
    # -ro only has endpoints when there are replicas; -r is every instance.
    assert config["DB_READ_HOST"] == (f"{name}-ro" if replicas else f"{name}-r")
    assert config["DB_NAME"] == cluster["spec"]["bootstrap"]["initdb"]["database"]
    pods = [c for s in functions(objs) for c in [container(s)]]
    pods.append(one(objs, "Job", "jan-migrate")["spec"]["template"]["spec"]["containers"][0])
    for c in pods:
        write = env_of(c)["DB_POSTGRESQL_WRITE_DSN"]["valueFrom"]["secretKeyRef"]
        # CloudNativePG's generated app secret: its uri names <cluster>-rw.
        assert write == {"name": f"{name}-app", "key": "uri"}
    for service in functions(objs):
        env = env_of(container(service))
        assert "$(DB_READ_HOST)" in env["DB_POSTGRESQL_READ1_DSN"]["value"]
        assert env["DB_READ_HOST"]["valueFrom"]["configMapKeyRef"]["name"] == "jan-config"


def test_prod_database_has_a_primary_and_read_replicas() -> None:
    (cluster,) = of_kind(render("prod"), "Cluster", "postgresql.cnpg.io")
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["affinity"]["enablePodAntiAffinity"] is True
    (dev,) = of_kind(render("dev"), "Cluster", "postgresql.cnpg.io")
    assert dev["spec"]["instances"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_runs_before_the_functions(overlay: str) -> None:
    objs = render(overlay)
    job = one(objs, "Job", "jan-migrate")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-2:] == ["migrate", "apply"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 3
    assert config_data(objs)["JAN_MIGRATE_ON_START"] == "false"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_is_explicit_and_consistent(overlay: str) -> None:
    for service in functions(render(overlay)):
        a = template_annotations(service)
        for key in ("min-scale", "max-scale", "target", "metric"):
            assert AUTOSCALING + key in a, (service["metadata"]["name"], key)
        low, high = int(a[AUTOSCALING + "min-scale"]), int(a[AUTOSCALING + "max-scale"])
        assert 0 <= low <= high and high >= 1
        concurrency = service["spec"]["template"]["spec"]["containerConcurrency"]
        assert 0 < int(a[AUTOSCALING + "target"]) <= concurrency
        assert a[AUTOSCALING + "metric"] == "concurrency"


def test_prod_scales_cold_areas_to_zero_and_keeps_the_hot_path_warm() -> None:
    for service in functions(render("prod")):
        area = area_of(service)
        low = int(template_annotations(service)[AUTOSCALING + "min-scale"])
        if area in SCALE_TO_ZERO:
            assert low == 0, area
        else:
            assert area in HOT_PATH and low >= 1, area


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_functions_are_reached_only_through_the_route(overlay: str) -> None:
    for service in functions(render(overlay)):
        labels = service["metadata"]["labels"]
        assert labels["networking.knative.dev/visibility"] == "cluster-local"


def routed_hosts(objs: list[Obj]) -> dict[str, set[str]]:
    """Cluster-local host each path prefix is rewritten to, from the overlay's HTTPRoutes."""
    grants = [
        (g["metadata"]["namespace"], to["name"])
        for g in of_kind(objs, "ReferenceGrant")
        for to in g["spec"]["to"]
    ]
    hosts: dict[str, set[str]] = {}
    for route in of_kind(objs, "HTTPRoute"):
        assert {ref["name"] for ref in route["spec"]["parentRefs"]} == {"jan"}
        for rule in route["spec"]["rules"]:
            filters = {f["type"]: f for f in rule.get("filters", [])}
            if "RequestRedirect" in filters:
                assert "backendRefs" not in rule
                continue
            rewrite = filters["URLRewrite"]["urlRewrite"]
            for ref in rule["backendRefs"]:
                assert (ref["namespace"], ref["name"]) in grants, ref
            for match in rule["matches"]:
                exact = match["path"]["value"] == "/openapi.json"
                assert match["path"]["type"] == ("Exact" if exact else "PathPrefix")
                hosts.setdefault(rewrite["hostname"], set()).add(match["path"]["value"])
    return hosts


def test_prod_serves_the_api_over_https_only() -> None:
    routes = {r["metadata"]["name"]: r for r in of_kind(render("prod"), "HTTPRoute")}
    assert routes["jan-api"]["spec"]["parentRefs"] == [{"name": "jan", "sectionName": "https"}]
    redirect = routes["jan-https-redirect"]["spec"]
    assert redirect["parentRefs"] == [{"name": "jan", "sectionName": "http"}]
    (rule,) = redirect["rules"]
    assert rule["filters"][0]["requestRedirect"]["scheme"] == "https"


def test_prod_routes_every_area_to_its_service() -> None:
    objs = render("prod")
    hosts = routed_hosts(objs)
    names = {s["metadata"]["name"] for s in functions(objs)}
    assert {h.split(".")[0] for h in hosts} == names
    for area, paths in AREAS.items():
        docs = set(DOCS_PATHS) if area == DOCS_AREA else set()
        assert hosts[f"jan-{area}.{NAMESPACE}.svc.cluster.local"] == set(paths) | docs, area


def test_prod_routes_the_api_description_and_swagger_ui() -> None:
    hosts = routed_hosts(render("prod"))
    owners = [h for h, paths in hosts.items() if set(DOCS_PATHS) <= paths]
    assert owners == [f"jan-{DOCS_AREA}.{NAMESPACE}.svc.cluster.local"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_every_function_and_predictor(overlay: str) -> None:
    """Annotation-based scraping: prometheus.io/* on each pod template (KServe adds them to
    predictor pods from its runtime's prometheus.kserve.io/* when asked to)."""
    objs = render(overlay)
    for service in functions(objs):
        a = template_annotations(service)
        assert a["prometheus.io/scrape"] == "true", service["metadata"]["name"]
        assert a["prometheus.io/path"] == "/metrics"
        assert a["prometheus.io/port"] == str(container(service)["ports"][0]["containerPort"])
    isvcs = of_kind(objs, "InferenceService")
    assert isvcs
    for isvc in isvcs:
        annotations = isvc["metadata"]["annotations"]
        assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
        runtime = one(objs, "ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
        scrape = runtime["spec"]["annotations"]
        assert scrape["prometheus.kserve.io/path"] == "/metrics"
        ports = [p["containerPort"] for c in runtime["spec"]["containers"] for p in c["ports"]]
        assert int(scrape["prometheus.kserve.io/port"]) in ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_require_the_token_from_the_secret(overlay: str) -> None:
    """/metrics names every tenant's models: each function gets JAN_METRICS_TOKEN from
    jan-secrets (required, so a pod never starts with metrics off by mistake)."""
    for service in functions(render(overlay)):
        ref = env_of(container(service))["JAN_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "jan-secrets" and ref["key"] == "metrics-token"
        assert not ref.get("optional", False), service["metadata"]["name"]


def test_dev_routes_everything_to_the_all_in_one_function() -> None:
    assert routed_hosts(render("dev")) == {f"jan-all.{NAMESPACE}.svc.cluster.local": {"/"}}


@pytest.mark.parametrize(("overlay", "isvc"), [("dev", "jan-cpu"), ("prod", "jan-llm")])
def test_functions_call_the_overlays_inference_service(overlay: str, isvc: str) -> None:
    objs = render(overlay)
    service = one(objs, "InferenceService", isvc)
    url = config_data(objs)["JAN_INFERENCE_MODEL_URL"]
    assert url == f"http://{isvc}-predictor.{NAMESPACE}.svc.cluster.local/openai/v1"
    runtime = service["spec"]["predictor"]["model"]["runtime"]
    assert one(objs, "ServingRuntime", runtime)


def test_prod_serves_a_gpu_model_with_vllm_tool_calling() -> None:
    isvc = one(render("prod"), "InferenceService", "jan-llm")
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["resources"]["requests"]["nvidia.com/gpu"] == "1"
    args = " ".join(model["args"])
    for flag in ("--enable-auto-tool-choice", "--tool-call-parser=", "--max-model-len="):
        assert flag in args
    assert model["storageUri"].startswith(("hf://", "pvc://", "s3://", "gs://"))


def test_dev_serves_the_cpu_predictor_image() -> None:
    objs = render("dev")
    runtime = one(objs, "ServingRuntime", "jan-llamacpp")
    (c,) = runtime["spec"]["containers"]
    assert c["name"] == "kserve-container"
    assert c["image"].startswith("ghcr.io/janhq/jan-predictor:")
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_prod_shares_limits_through_redis() -> None:
    objs = render("prod")
    assert config_data(objs)["REDIS_URL"] == "redis://jan-redis:6379/0"
    assert one(objs, "Service", "jan-redis")
    assert "REDIS_URL" not in config_data(render("dev"))


def test_prod_public_url_is_the_routes_hostname() -> None:
    objs = render("prod")
    route = one(objs, "HTTPRoute", "jan-api")
    assert config_data(objs)["JAN_PUBLIC_URL"] == f"https://{route['spec']['hostnames'][0]}"


def test_cpu_predictor_threads_fit_its_cpu_limit() -> None:
    objs = render("dev")
    env = env_of(one(objs, "ServingRuntime", "jan-llamacpp")["spec"]["containers"][0])
    threads = int(env["PREDICTOR_INSTANCES"]["value"]) * int(
        env["PREDICTOR_THREADS_PER_INSTANCE"]["value"]
    )
    model = one(objs, "InferenceService", "jan-cpu")["spec"]["predictor"]["model"]
    assert threads == int(model["resources"]["limits"]["cpu"])


# PostgreSQL's default superuser_reserved_connections (CloudNativePG does not change it);
# reserved_connections (PostgreSQL 16+) defaults to 0.
SUPERUSER_RESERVED = 3
# Left for what is not a function pod: the migration Job, `jan-server admin` sessions,
# CloudNativePG's instance manager and metrics exporter, an operator's psql.
OPERATOR_HEADROOM = 10


def pool_size(c: Obj, config: dict[str, str]) -> int:
    value = env_of(c).get("DB_POOL_MAX_SIZE", {}).get("value") or config.get("DB_POOL_MAX_SIZE")
    return int(value or 10)  # functions/common/settings.py: db_pool_max_size


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_area_at_max_scale_fits_the_databases_connections(overlay: str) -> None:
    """The sum over areas of max-scale x pool size stays under max_connections less the
    reserved connections, on every instance.

    Each pod holds one pool on the primary (-rw), plus one connection to drain its usage
    records at shutdown (functions/common/runtime.py: stop_sync), and one pool on its read
    host: -ro spreads over the replicas, but one replica may have to take them all; -r
    (dev: one instance) is the primary itself.
    """
    objs = render(overlay)
    (cluster,) = of_kind(objs, "Cluster", "postgresql.cnpg.io")
    config = config_data(objs)
    name = cluster["metadata"]["name"]
    limit = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
    budget = limit - SUPERUSER_RESERVED - OPERATOR_HEADROOM
    primary, replica = 1, 0  # the migration Job's connection
    for service in functions(objs):
        if env_of(container(service))["JAN_FUNCTION"]["value"] in DATABASE_FREE_AREAS:
            continue  # never opens a pool (the console)
        pods = int(template_annotations(service)[AUTOSCALING + "max-scale"])
        pool = pool_size(container(service), config)
        primary += pods * (pool + 1)
        if config["DB_READ_HOST"] in (f"{name}-rw", f"{name}-r"):
            primary += pods * pool
        else:
            assert config["DB_READ_HOST"] == f"{name}-ro"
            replica += pods * pool
    assert primary <= budget, f"{overlay}: {primary} connections on the primary, {budget} allowed"
    assert replica <= budget, f"{overlay}: {replica} connections on one replica, {budget} allowed"


def test_a_one_gpu_model_is_replaced_not_rolled() -> None:
    """A rolling update starts the new pod before the old one stops: with every GPU taken,
    it waits for a GPU forever. Recreate (or maxSurge 0) frees the GPU first."""
    for isvc in of_kind(render("prod"), "InferenceService"):
        predictor = isvc["spec"]["predictor"]
        gpus = int(predictor["model"]["resources"]["limits"].get("nvidia.com/gpu", 0))
        if not gpus:
            continue
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        strategy = predictor["deploymentStrategy"]
        rolling = strategy.get("rollingUpdate", {})
        assert strategy["type"] == "Recreate" or str(rolling.get("maxSurge")) in ("0", "0%")


def test_the_hot_path_keeps_the_activator_out_of_the_request_path() -> None:
    """Areas that never scale to zero set target-burst-capacity 0: Knative's activator then
    stays out of their request path (it only buffers requests for a revision at zero)."""
    for service in functions(render("prod")):
        a = template_annotations(service)
        if int(a[AUTOSCALING + "min-scale"]) >= 1:
            assert a[AUTOSCALING + "target-burst-capacity"] == "0", service["metadata"]["name"]


def test_prod_archives_wal_and_backs_up_daily() -> None:
    """Point-in-time recovery needs both: WAL archived continuously and base backups
    (restore procedure: tests/foundation/test_backup_restore.py, manifests/README.md)."""
    objs = render("prod")
    backup = one(objs, "Cluster", "jan-db")["spec"]["backup"]
    store = backup["barmanObjectStore"]
    assert store["destinationPath"].startswith(("s3://", "gs://", "https://"))
    credentials = store["s3Credentials"]
    assert {c["name"] for c in credentials.values()} == {"jan-backup-s3"}  # Secret references
    assert store["wal"]["compression"] and store["data"]["compression"]
    assert backup["retentionPolicy"].endswith("d")
    (scheduled,) = of_kind(objs, "ScheduledBackup")
    assert scheduled["spec"]["cluster"]["name"] == "jan-db"
    assert scheduled["spec"]["method"] == "barmanObjectStore" and scheduled["spec"]["immediate"]
    assert len(scheduled["spec"]["schedule"].split()) == 6  # CloudNativePG's cron has seconds
    assert "backup" not in one(render("dev"), "Cluster", "jan-db")["spec"]
    assert not of_kind(render("dev"), "ScheduledBackup")


def test_the_restore_component_recovers_from_the_archive_into_a_new_one() -> None:
    from tests.manifests.test_schemas import crd_schema_problems

    (cluster,) = of_kind(list(render_with("prod", "restore")), "Cluster")
    # kustomize writes the target time unquoted; the API server reads it as a string.
    cluster = json.loads(json.dumps(cluster, default=str))
    assert crd_schema_problems(cluster) == []
    spec = cluster["spec"]
    assert list(spec["bootstrap"]) == ["recovery"]  # initdb removed
    recovery = spec["bootstrap"]["recovery"]
    assert (recovery["database"], recovery["owner"]) == ("jan", "jan")
    (source,) = [c for c in spec["externalClusters"] if c["name"] == recovery["source"]]
    archive, backup = source["barmanObjectStore"], spec["backup"]["barmanObjectStore"]
    assert archive["destinationPath"] == backup["destinationPath"]
    assert archive["s3Credentials"] == backup["s3Credentials"]
    # Reads the archive components/backup writes, and writes to a new one.
    assert archive["serverName"] == "jan-db" != backup["serverName"]
