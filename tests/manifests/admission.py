"""The admission rules that the controllers receiving our manifests apply, written from their
sources: what `kubectl apply` (or the controller behind it) would refuse, found without a
cluster. Schemas (test_schemas.py) check shapes; these check what the webhooks check.

Each rule names its source as ``repository: file: function``. Read at these commits:

- knative/serving ``98e5ef90aa7033797aa0a61ef97f3ff7e49a3944``
- kserve/kserve ``aaac4e294dae2c7b1aa1886447793f3aa1c30912``
- cloudnative-pg/cloudnative-pg ``a95a534dbe0854495b863bbc1b7651f74d310916``
- kubernetes-sigs/gateway-api ``4564255ac2c35d582249b3cdf261bdf51c8bca32`` (the CRDs' CEL
  rules, ``x-kubernetes-validations``, which the schema copies leave out)

Only the rules that bear on fields these manifests can set are written here; each is checked
on every rendered object of every overlay (test_admission.py), and each has a test showing
that it catches a violation.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable

from tests.manifests.support import Obj, group_of, install_outline, of_kind

SERVING = "knative/serving"
KSERVE = "kserve/kserve"
CNPG = "cloudnative-pg/cloudnative-pg"
GATEWAY = "kubernetes-sigs/gateway-api"

# --- Knative Serving ---------------------------------------------------------------------
# knative/serving: pkg/apis/serving/k8s_validation.go: reservedEnvVars
KNATIVE_RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
# knative/serving: pkg/apis/serving/k8s_validation.go: reservedPorts (pkg/networking/
# constants.go: BackendHTTPPort, BackendHTTP2Port, QueueAdminPort,
# AutoscalingQueueMetricsPort, UserQueueMetricsPort; knative.dev/pkg: ProfilingDefaultPort)
KNATIVE_RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091, 8008})
# knative/serving: pkg/apis/serving/k8s_validation.go: reservedPaths
KNATIVE_RESERVED_PATHS = frozenset({"/", "/dev", "/dev/log"})
# knative/serving: pkg/apis/serving/k8s_validation.go: validPortNames
KNATIVE_PORT_NAMES = frozenset({"", "h2c", "http1"})
# knative/serving: pkg/apis/serving/fieldmask.go: ContainerMask (allowed fields)
KNATIVE_CONTAINER_FIELDS = frozenset(
    {
        "name", "args", "command", "env", "workingDir", "envFrom", "image", "imagePullPolicy",
        "livenessProbe", "ports", "readinessProbe", "resources", "securityContext",
        "startupProbe", "terminationMessagePath", "terminationMessagePolicy", "volumeMounts",
    }
)  # fmt: skip
# knative/serving: pkg/apis/serving/fieldmask.go: ProbeMask, HandlerMask, HTTPGetActionMask
KNATIVE_PROBE_FIELDS = frozenset(
    {
        "initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold",
        "failureThreshold", "terminationGracePeriodSeconds",
        "exec", "httpGet", "tcpSocket", "grpc",
    }
)  # fmt: skip
KNATIVE_HTTP_GET_FIELDS = frozenset({"host", "path", "scheme", "httpHeaders", "port"})
# knative/serving: pkg/apis/serving/fieldmask.go: SecurityContextMask (privileged: false only)
KNATIVE_SECURITY_CONTEXT_FIELDS = frozenset(
    {
        "capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "runAsNonRoot",
        "allowPrivilegeEscalation", "seccompProfile", "privileged",
    }
)  # fmt: skip
# knative/serving: pkg/apis/serving/fieldmask.go: VolumeMountMask
KNATIVE_VOLUME_MOUNT_FIELDS = frozenset({"name", "readOnly", "mountPath", "subPath"})
# knative/serving: pkg/apis/serving/fieldmask.go: PodSpecMask: always allowed, then the
# fields each feature flag of config-features allows (pkg/apis/config/features.go)
KNATIVE_POD_FIELDS = frozenset(
    {"serviceAccountName", "containers", "volumes", "imagePullSecrets", "enableServiceLinks"}
)
KNATIVE_POD_FEATURE_FIELDS = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
}
# knative/serving: pkg/apis/config/features.go: defaultFeaturesConfig (the flags read here)
KNATIVE_FEATURE_DEFAULTS = {
    "multi-container": "enabled",
    "kubernetes.podspec-volumes-emptydir": "enabled",
    "secure-pod-defaults": "disabled",
    "kubernetes.containerspec-addcapabilities": "disabled",
    "kubernetes.podspec-fieldref": "disabled",
    "kubernetes.podspec-persistent-volume-claim": "disabled",
    **{flag: "disabled" for flag in KNATIVE_POD_FEATURE_FIELDS.values()},
}
# knative/serving: pkg/apis/config/defaults.go: DefaultMaxRevisionTimeoutSeconds,
# ContainerConcurrencyMaxLimit (defaultDefaultsConfig)
KNATIVE_MAX_REVISION_TIMEOUT_SECONDS = 600
KNATIVE_CONTAINER_CONCURRENCY_MAX = 1000
AUTOSCALING = "autoscaling.knative.dev/"


def knative_features() -> dict[str, str]:
    """config-features as the README's install outline patches it, over Knative's defaults.

    A key Knative does not read (a misspelt flag) is a problem of its own: the patch would
    be accepted and do nothing.
    """
    features = dict(KNATIVE_FEATURE_DEFAULTS)
    for line in install_outline():
        if "configmap/config-features" in line:
            patch = json.loads(line.split("-p ", 1)[1].strip().strip("'"))
            features.update(patch["data"])
    return features


def knative_feature_problems(features: dict[str, str]) -> list[str]:
    known = set(KNATIVE_FEATURE_DEFAULTS) | {
        # pkg/apis/config/features.go: NewFeaturesConfigFromMap (others it reads)
        "autodetect-http2", "kubernetes.podspec-persistent-volume-write",
        "multi-container-probing", "queueproxy.mount-podinfo", "queueproxy.resource-defaults",
        "tag-header-based-routing", "kubernetes.podspec-hostipc",
        "kubernetes.podspec-hostnetwork", "kubernetes.podspec-hostpid",
        "kubernetes.podspec-volumes-hostpath", "kubernetes.podspec-volumes-csi",
        "kubernetes.podspec-volumes-mount-propagation", "kubernetes.podspec-volumes-ephemeral",
        "kubernetes.podspec-volumes-image",
    }  # fmt: skip
    return [
        f"{SERVING}: pkg/apis/config/features.go: config-features has no flag {key!r}"
        for key in features
        if key not in known
    ]


def _enabled(features: dict[str, str], flag: str) -> bool:
    return features.get(flag, "disabled") != "disabled"


def knative_pod_spec(spec: Obj, features: dict[str, str]) -> list[str]:
    """A revision's pod spec (a Knative Service's template, or what KServe makes of a
    Knative-mode predictor)."""
    out: list[str] = []
    # knative/serving: pkg/apis/serving/k8s_validation.go: ValidatePodSpec (PodSpecMask)
    for key in spec:
        flag = KNATIVE_POD_FEATURE_FIELDS.get(key)
        if key not in KNATIVE_POD_FIELDS and not (flag and _enabled(features, flag)):
            if key == "automountServiceAccountToken" and spec[key] is False:
                continue  # PodSpecMask: only false may be set
            out.append(f"{SERVING}: k8s_validation.go: ValidatePodSpec: field {key!r} not allowed")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    containers: list[Obj] = spec.get("containers", [])
    mounted = {m["name"] for c in containers for m in c.get("volumeMounts", [])}
    # knative/serving: k8s_validation.go: ValidateVolumes, validateVolume
    for name, volume in volumes.items():
        if name not in mounted:
            out.append(
                f"{SERVING}: k8s_validation.go: ValidateVolumes: volume {name!r} not mounted"
            )
        if "emptyDir" in volume:
            if not _enabled(features, "kubernetes.podspec-volumes-emptydir"):
                out.append(f"{SERVING}: k8s_validation.go: validateVolume: emptyDir disabled")
            if volume["emptyDir"].get("medium", "") not in ("", "Memory"):
                out.append(f"{SERVING}: k8s_validation.go: validateEmptyDirFields: medium")
        if "persistentVolumeClaim" in volume and not _enabled(
            features, "kubernetes.podspec-persistent-volume-claim"
        ):
            out.append(f"{SERVING}: k8s_validation.go: validatePersistentVolumeClaims: disabled")
    # knative/serving: k8s_validation.go: validateContainersPorts: one port in all containers
    ports = [p for c in containers for p in c.get("ports", [])]
    if len(ports) > 1:
        out.append(
            f"{SERVING}: k8s_validation.go: validateContainersPorts: more than one container "
            "port is set"
        )
    if not containers:
        out.append(f"{SERVING}: k8s_validation.go: ValidatePodSpec: no containers")
    if len(containers) > 1 and not _enabled(features, "multi-container"):
        out.append(f"{SERVING}: k8s_validation.go: validateContainers: multi-container is off")
    port = ports[0] if ports else {"containerPort": 8080}
    for c in containers:
        serving = bool(c.get("ports")) or len(containers) == 1
        out += [
            f"container {c.get('name')}: {p}"
            for p in _container(c, volumes, port, serving, features)
        ]
    return out


def _container(
    c: Obj, volumes: dict[str, Obj], port: Obj, serving: bool, features: dict[str, str]
) -> list[str]:
    out: list[str] = []
    src = f"{SERVING}: k8s_validation.go"
    # validate (ContainerMask)
    out += [
        f"{src}: validate: field {k!r} not allowed" for k in c if k not in KNATIVE_CONTAINER_FIELDS
    ]
    if c.get("name") == "queue-proxy":  # reservedContainerNames
        out.append(f"{src}: validate: 'queue-proxy' is a reserved container name")
    # validateEnvVar: reservedEnvVars (a sidecar may set PORT: reservedSidecarEnvVars)
    reserved = KNATIVE_RESERVED_ENV if serving else KNATIVE_RESERVED_ENV - {"PORT"}
    for env in c.get("env", []):
        if env["name"] in reserved:
            out.append(f"{src}: validateEnvVar: {env['name']!r} is a reserved environment variable")
        source = env.get("valueFrom", {})
        if "fieldRef" in source and not _enabled(features, "kubernetes.podspec-fieldref"):
            out.append(f"{src}: validateEnvValueFrom: fieldRef needs kubernetes.podspec-fieldref")
    # validateContainerPorts, validateContainerPortBasic
    for p in c.get("ports", [])[:1]:
        if p["containerPort"] in KNATIVE_RESERVED_PORTS:
            out.append(
                f"{src}: validateContainerPortBasic: {p['containerPort']} is a reserved port"
            )
        if p.get("name", "") not in KNATIVE_PORT_NAMES:
            out.append(f"{src}: validateContainerPorts: port name {p['name']!r} is not allowed")
        if p.get("protocol", "TCP") != "TCP":
            out.append(f"{src}: validateContainerPorts: protocol must be TCP")
    # ValidateUserContainer: validateProbe, validateReadinessProbe
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if kind in c:
            out += [
                f"{src}: validateProbe: {kind}: {p}" for p in _probe(c[kind], port, serving, kind)
            ]
    # validateSecurityContext (SecurityContextMask, CapabilitiesMask)
    sc = c.get("securityContext", {})
    for key in sc:
        if key not in KNATIVE_SECURITY_CONTEXT_FIELDS or (key == "privileged" and sc[key]):
            out.append(f"{src}: validateSecurityContext: field {key!r} not allowed")
    add = sc.get("capabilities", {}).get("add")
    # (with secure-pod-defaults, NET_BIND_SERVICE alone may be added)
    bind_only = _enabled(features, "secure-pod-defaults") and add == ["NET_BIND_SERVICE"]
    if add and not _enabled(features, "kubernetes.containerspec-addcapabilities") and not bind_only:
        out.append(f"{src}: validateCapabilities: capabilities.add not allowed")
    # validateVolumeMounts
    seen: set[str] = set()
    for m in c.get("volumeMounts", []):
        path = re.sub(r"/+$", "", m["mountPath"]) or "/"
        out += [
            f"{src}: validateVolumeMounts: field {k!r} not allowed"
            for k in m
            if k not in KNATIVE_VOLUME_MOUNT_FIELDS
        ]
        if path in KNATIVE_RESERVED_PATHS:
            out.append(f"{src}: validateVolumeMounts: mountPath {path!r} is a reserved path")
        elif not path.startswith("/") or path in seen:
            out.append(f"{src}: validateVolumeMounts: mountPath {path!r} invalid or repeated")
        seen.add(path)
        volume = volumes.get(m["name"])
        if volume is None:
            out.append(f"{src}: validateVolumeMounts: volumeMount has no matching volume")
        elif not ({"emptyDir", "persistentVolumeClaim", "ephemeral"} & set(volume)) and not m.get(
            "readOnly"
        ):
            out.append(f"{src}: validateVolumeMounts: mount of {m['name']!r} must be readOnly")
    return out


def _probe(probe: Obj, port: Obj, serving: bool, kind: str) -> list[str]:
    out = [f"field {k!r} not allowed" for k in probe if k not in KNATIVE_PROBE_FIELDS]
    handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
    if len(handlers) != 1:
        out.append(f"exactly one handler, found {handlers}")
    http = probe.get("httpGet", {})
    out += [f"httpGet field {k!r} not allowed" for k in http if k not in KNATIVE_HTTP_GET_FIELDS]
    for handler in ("httpGet", "tcpSocket"):
        probe_port = probe.get(handler, {}).get("port")
        if serving and isinstance(probe_port, str) and probe_port != port.get("name", "http"):
            out.append(f"{handler}.port must match the container port")
    if kind == "readinessProbe":  # validateReadinessProbe
        if probe.get("periodSeconds", 0) == 0:
            # Knative's own aggressive probing; it takes neither threshold nor timeout
            out += [
                f"{k} is disallowed when periodSeconds is zero"
                for k in ("failureThreshold", "timeoutSeconds")
                if probe.get(k, 0) != 0
            ]
        elif probe.get("timeoutSeconds", 1) < 1 or probe.get("failureThreshold", 3) < 1:
            out.append("timeoutSeconds and failureThreshold must be at least 1")
        if probe.get("successThreshold", 1) < 1:
            out.append("successThreshold must be at least 1")
    return out


def knative_service(svc: Obj, features: dict[str, str]) -> list[str]:
    template = svc["spec"]["template"]
    spec = template["spec"]
    out = knative_pod_spec(
        {k: v for k, v in spec.items() if k not in ("containerConcurrency", "timeoutSeconds")},
        features,
    )
    # knative/serving: pkg/apis/serving/v1/revision_validation.go: RevisionSpec.Validate
    # (timeoutSeconds up to config-defaults' max-revision-timeout-seconds) and
    # pkg/apis/serving/metadata_validation.go: ValidateContainerConcurrency
    if not 0 <= spec.get("timeoutSeconds", 300) <= KNATIVE_MAX_REVISION_TIMEOUT_SECONDS:
        out.append(f"{SERVING}: revision_validation.go: timeoutSeconds above the maximum")
    if not 1 <= spec.get("containerConcurrency", 1) <= KNATIVE_CONTAINER_CONCURRENCY_MAX:
        out.append(f"{SERVING}: metadata_validation.go: ValidateContainerConcurrency")
    out += knative_autoscaling(template.get("metadata", {}).get("annotations", {}))
    return out


def _duration_seconds(value: str) -> float | None:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
    if not value or parts is None:
        return None
    h, m, s = (int(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


def knative_autoscaling(annotations: dict[str, str]) -> list[str]:
    """knative/serving: pkg/apis/autoscaling/annotation_validation.go: ValidateAnnotations."""
    src = f"{SERVING}: annotation_validation.go"
    a = {
        k.removeprefix(AUTOSCALING): v for k, v in annotations.items() if k.startswith(AUTOSCALING)
    }
    out: list[str] = []
    cls = a.get("class", "kpa.autoscaling.knative.dev")
    if cls not in ("kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"):
        out.append(f"{src}: validateClass: {cls!r}")  # other classes are left alone upstream
    low, high = (a.get(k, "0") for k in ("min-scale", "max-scale"))
    if not (low.isdigit() and high.isdigit()):
        out.append(f"{src}: validateMinMaxScale: min-scale and max-scale are integers >= 0")
    elif int(high) != 0 and int(high) < int(low):
        out.append(f"{src}: validateMinMaxScale: max-scale={high} is less than min-scale={low}")
    if "target" in a and not float(a["target"]) >= 0.01:  # validateFloats: TargetMin
        out.append(f"{src}: validateFloats: target should be at least 0.01")
    if (
        "target-utilization-percentage" in a
        and not 1 <= float(a["target-utilization-percentage"]) <= 100
    ):
        out.append(f"{src}: validateFloats: target-utilization-percentage in [1, 100]")
    if "target-burst-capacity" in a:
        tbc = float(a["target-burst-capacity"])
        if tbc < 0 and tbc != -1:
            out.append(f"{src}: validateFloats: target-burst-capacity is >= 0 or -1")
    if "scale-down-delay" in a:  # validateScaleDownDelay: 0 to WindowMax (1h)
        delay = _duration_seconds(a["scale-down-delay"])
        if delay is None or not 0 <= delay <= 3600:
            out.append(f"{src}: validateScaleDownDelay: {a['scale-down-delay']!r}")
    if cls.startswith("kpa") and a.get("metric", "concurrency") not in ("concurrency", "rps"):
        out.append(f"{src}: validateMetric: KPA scales on concurrency or rps")
    return out


# --- KServe ------------------------------------------------------------------------------
# kserve/kserve: pkg/validation/env_policy.go: DefaultBlockedEnvVars
KSERVE_BLOCKED_ENV = frozenset({"PYTHONPATH"})
# kserve/kserve: pkg/apis/serving/v1beta1/inference_service_validation.go: IsvcNameFmt
KSERVE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"


def kserve_serving_runtime(runtime: Obj, others: list[Obj]) -> list[str]:
    out: list[str] = []
    spec = runtime["spec"]
    # kserve/kserve: pkg/webhook/admission/servingruntime/servingruntime_webhook.go:
    # validateBlockedEnvVars (pkg/validation/env_policy.go: ValidateBlockedEnvVars)
    for c in spec["containers"]:
        out += [
            f"{KSERVE}: servingruntime_webhook.go: validateBlockedEnvVars: {e['name']}"
            for e in c.get("env", [])
            if e["name"] in KSERVE_BLOCKED_ENV
        ]
    # servingruntime_webhook.go: validateServingRuntimePriority: two auto-selected runtimes
    # for one model format and protocol may not share a priority
    for other in others:
        if other is runtime or other["metadata"]["name"] == runtime["metadata"]["name"]:
            continue
        if not set(spec.get("protocolVersions", [])) & set(
            other["spec"].get("protocolVersions", [])
        ):
            continue
        for mine in spec.get("supportedModelFormats", []):
            for theirs in other["spec"].get("supportedModelFormats", []):
                same = mine["name"].lower() == theirs["name"].lower() and mine.get(
                    "version"
                ) == theirs.get("version")
                auto = mine.get("autoSelect") and theirs.get("autoSelect")
                if (
                    same
                    and auto
                    and mine.get("priority") is not None
                    and mine.get("priority") == theirs.get("priority")
                ):
                    out.append(
                        f"{KSERVE}: servingruntime_webhook.go: validateServingRuntimePriority"
                    )
    return out


def kserve_inference_service(isvc: Obj) -> list[str]:
    """kserve/kserve: pkg/apis/serving/v1beta1/inference_service_validation.go:
    validateInferenceService."""
    src = f"{KSERVE}: inference_service_validation.go"
    out: list[str] = []
    if not KSERVE_NAME.match(isvc["metadata"]["name"]):  # validateInferenceServiceName
        out.append(f"{src}: validateInferenceServiceName")
    annotations = isvc["metadata"].get("annotations", {})
    mode = annotations.get(DEPLOYMENT_MODE, "Standard")
    predictor = isvc["spec"]["predictor"]
    # validateBlockedEnvVars
    containers = [predictor["model"]] if "model" in predictor else predictor.get("containers", [])
    out += [
        f"{src}: validateBlockedEnvVars: {e['name']}"
        for c in containers
        for e in c.get("env", [])
        if e["name"] in KSERVE_BLOCKED_ENV
    ]
    # validateExactlyOneImplementation (component.go)
    implementations = [k for k in ("model", "containers") if k in predictor]
    if len(implementations) != 1:
        out.append(f"{KSERVE}: component.go: validateExactlyOneImplementation")
    # component.go: ComponentExtensionSpec.Validate: validateReplicas, validateContainerConcurrency
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if low < 0 or high < 0 or (high != 0 and low > high):
        out.append(f"{KSERVE}: component.go: validateReplicas: minReplicas > maxReplicas")
    if predictor.get("containerConcurrency", 0) < 0:
        out.append(f"{KSERVE}: component.go: validateContainerConcurrency")
    # validateAutoScalingCompExtension: in Knative mode (KPA) validateScalingKPACompExtension
    if mode == "Knative":
        if "deploymentStrategy" in predictor:
            out.append(
                f"{src}: validateScalingKPACompExtension: customizing deploymentStrategy is "
                "only supported for raw deployment mode"
            )
        if predictor.get("scaleMetric", "concurrency") not in ("concurrency", "rps"):
            out.append(f"{src}: validateKPAMetrics: {predictor['scaleMetric']}")
    return out


def kserve_predictor_container(isvc: Obj, runtimes: list[Obj]) -> Obj:
    """The container KServe runs for a model predictor: the runtime's kserve-container,
    strategic-merged with the model spec, args concatenated (kserve/kserve:
    pkg/controller/v1beta1/inferenceservice/utils/utils.go: MergeRuntimeContainers), with
    {{.Name}} replaced by the InferenceService's name."""
    model = isvc["spec"]["predictor"]["model"]
    (runtime,) = [r for r in runtimes if r["metadata"]["name"] == model["runtime"]]
    (base,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    merged: Obj = copy.deepcopy(base)
    env = {e["name"]: e for e in merged.get("env", [])}
    env.update({e["name"]: e for e in model.get("env", [])})
    if env:
        merged["env"] = list(env.values())
    for key in ("resources", "image", "command", "securityContext"):
        if key in model:
            merged[key] = copy.deepcopy(model[key])
    name = isvc["metadata"]["name"]
    args = [a.replace("{{.Name}}", name) for a in [*base.get("args", []), *model.get("args", [])]]
    merged.pop("args", None)
    if args:
        merged["args"] = args
    return merged


def kserve_knative_pod_spec(isvc: Obj, runtimes: list[Obj]) -> Obj:
    """The pod spec of the Knative revision KServe makes of a Knative-mode predictor (the
    runtime's volumes and the merged container)."""
    model_runtime = isvc["spec"]["predictor"]["model"]["runtime"]
    (runtime,) = [r for r in runtimes if r["metadata"]["name"] == model_runtime]
    spec: Obj = {"containers": [kserve_predictor_container(isvc, runtimes)]}
    if runtime["spec"].get("volumes"):
        spec["volumes"] = runtime["spec"]["volumes"]
    return spec


# --- CloudNativePG -----------------------------------------------------------------------
# cloudnative-pg/cloudnative-pg: pkg/postgres/configuration.go: FixedConfigurationParameters
CNPG_FIXED_PARAMETERS = frozenset(
    {
        "allow_system_table_mods", "archive_mode", "bonjour", "bonjour_name", "cluster_name",
        "config_file", "data_directory", "data_sync_retry", "event_source",
        "external_pid_file", "hba_file", "hot_standby", "ident_file", "jit_provider",
        "listen_addresses", "logging_collector", "port", "primary_conninfo",
        "primary_slot_name", "recovery_target", "recovery_target_action",
        "recovery_target_inclusive", "recovery_target_lsn", "recovery_target_name",
        "recovery_target_time", "recovery_target_timeline", "recovery_target_xid",
        "restore_command", "shared_preload_libraries", "temp_tablespaces",
        "unix_socket_directories", "unix_socket_group", "unix_socket_permissions",
        "archive_cleanup_command", "archive_command", "log_destination", "log_directory",
        "log_file_mode", "log_filename", "log_rotation_age", "log_rotation_size",
        "log_truncate_on_rotation", "pg_failover_slots.primary_dsn",
        "pg_failover_slots.standby_slot_names", "promote_trigger_file",
        "recovery_end_command", "recovery_min_apply_delay", "restart_after_crash", "ssl",
        "ssl_ca_file", "ssl_cert_file", "ssl_crl_file", "ssl_dh_params_file", "ssl_key_file",
        "ssl_passphrase_command", "ssl_passphrase_command_supports_reload",
        "ssl_prefer_server_ciphers", "stats_temp_directory", "synchronous_standby_names",
        "synchronized_standby_slots", "syslog_facility", "syslog_ident",
        "syslog_sequence_numbers", "syslog_split_messages",
    }
)  # fmt: skip
# cloudnative-pg/cloudnative-pg: internal/webhook/v1/pooler_webhook.go:
# AllowedPgbouncerGenericConfigurationParameters
CNPG_PGBOUNCER_PARAMETERS = frozenset(
    {
        "application_name_add_host", "auth_type", "auth_user", "autodb_idle_timeout",
        "cancel_wait_timeout", "client_idle_timeout", "client_login_timeout",
        "client_tls_ciphers", "client_tls_sslmode", "client_tls13_ciphers", "default_pool_size",
        "disable_pqexec", "dns_max_ttl", "dns_nxdomain_ttl", "idle_transaction_timeout",
        "ignore_startup_parameters", "listen_backlog", "log_connections", "log_disconnections",
        "log_pooler_errors", "log_stats", "max_client_conn", "max_db_connections",
        "max_packet_size", "max_prepared_statements", "max_user_connections", "min_pool_size",
        "pkt_buf", "query_timeout", "query_wait_timeout", "reserve_pool_size",
        "reserve_pool_timeout", "sbuf_loopcnt", "server_check_delay", "server_check_query",
        "server_connect_timeout", "server_fast_close", "server_idle_timeout", "server_lifetime",
        "server_login_retry", "server_reset_query", "server_reset_query_always",
        "server_round_robin", "server_tls_ciphers", "server_tls13_ciphers",
        "server_tls_protocols", "server_tls_sslmode", "stats_period", "suspend_timeout",
        "tcp_defer_accept", "tcp_socket_buffer", "tcp_keepalive", "tcp_keepcnt",
        "tcp_keepidle", "tcp_keepintvl", "tcp_user_timeout", "track_extra_parameters",
        "verbose",
    }
)  # fmt: skip
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {
    None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (``500m``, ``4Gi``) as a number."""
    match = _QUANTITY.match(str(value))
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _postgres_bytes(value: str) -> float:
    """A PostgreSQL memory setting (``256MB``, ``1GB``) in bytes."""
    match = re.fullmatch(r"(\d+)\s*(kB|MB|GB|TB)?", value)
    if match is None:
        raise ValueError(value)
    return (
        int(match.group(1))
        * {None: 8192, "kB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[match.group(2)]
    )


def cnpg_cluster(cluster: Obj) -> list[str]:
    """cloudnative-pg/cloudnative-pg: internal/webhook/v1/cluster_webhook.go:
    ClusterCustomValidator.validate (the rules that bear on what we set)."""
    src = f"{CNPG}: cluster_webhook.go"
    out: list[str] = []
    spec = cluster["spec"]
    name = cluster["metadata"]["name"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 50:
        out.append(f"{src}: validateName: a DNS-1035 label of at most 50 characters")
    # api/v1/cluster_types.go: ClusterSpec's XValidation (a CEL rule of the CRD)
    if "imageName" in spec and "imageCatalogRef" in spec:
        out.append(
            f"{CNPG}: cluster_types.go: imageName and imageCatalogRef are mutually exclusive"
        )
    image = spec.get("imageName", "")
    if image:  # validateImageName: a version tag, never latest or a bare digest
        tag = (
            image.rpartition("/")[2].partition("@")[0].rpartition(":")[2]
            if ":" in image.rpartition("/")[2]
            else ""
        )
        if tag in ("", "latest") or not re.match(r"^\d+(\.\d+)?", tag):
            out.append(f"{src}: validateImageName: {image!r} needs a PostgreSQL version tag")
    initdb = spec.get("bootstrap", {}).get("initdb", {})
    if bool(initdb.get("database")) != bool(initdb.get("owner")):  # validateApplicationDatabase
        out.append(f"{src}: validateInitDB: database and owner go together")
    parameters: dict[str, str] = spec.get("postgresql", {}).get("parameters", {})
    out += [
        f"{src}: validateConfiguration: can't set fixed configuration parameter {k!r}"
        for k in parameters
        if k in CNPG_FIXED_PARAMETERS
    ]
    if parameters.get("wal_level") == "minimal" and spec.get("instances", 1) > 1:
        out.append(f"{src}: validateConfiguration: wal_level minimal with replicas")
    strategy = spec.get("primaryUpdateStrategy", "")
    if strategy not in ("", "supervised", "unsupervised") or (
        strategy == "supervised" and spec.get("instances", 1) == 1
    ):
        out.append(f"{src}: validatePrimaryUpdateStrategy: {strategy!r}")
    anti = spec.get("affinity", {}).get("podAntiAffinityType", "")
    if anti not in ("", "preferred", "required"):
        out.append(f"{src}: validateAntiAffinity: {anti!r}")
    resources = spec.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    for key in ("cpu", "memory"):  # validateResources
        if key in requests and key in limits and quantity(requests[key]) > quantity(limits[key]):
            out.append(f"{src}: validateResources: {key} request is greater than the limit")
    buffers = parameters.get("shared_buffers")
    if buffers and "memory" in requests and _postgres_bytes(buffers) > quantity(requests["memory"]):
        out.append(f"{src}: validateResources: memory request lower than shared_buffers")
    return out


def cnpg_pooler(pooler: Obj) -> list[str]:
    """cloudnative-pg/cloudnative-pg: internal/webhook/v1/pooler_webhook.go: validate."""
    src = f"{CNPG}: pooler_webhook.go"
    out: list[str] = []
    pgbouncer = pooler["spec"].get("pgbouncer")
    if pgbouncer is None:
        return [f"{src}: validatePgBouncer: required pgbouncer configuration"]
    out += [
        f"{src}: validatePgbouncerGenericParameters: {k!r} is not allowed"
        for k in pgbouncer.get("parameters", {})
        if k not in CNPG_PGBOUNCER_PARAMETERS
    ]
    cluster = pooler["spec"].get("cluster", {}).get("name", "")
    if not cluster or cluster == pooler["metadata"]["name"]:
        out.append(f"{src}: validateCluster: a cluster name other than the pooler's")
    return out


# --- Gateway API (the CRDs' x-kubernetes-validations) ------------------------------------
_FILTER_FIELDS = {
    "CORS": "cors", "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier", "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
}  # fmt: skip
_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$")


def _filter_rules(filters: list[Obj], where: str) -> list[str]:
    src = f"{GATEWAY}: gateway.networking.k8s.io_httproutes.yaml: {where}"
    out: list[str] = []
    types = [f["type"] for f in filters]
    if "RequestRedirect" in types and "URLRewrite" in types:
        out.append(f"{src}: May specify either RequestRedirect or URLRewrite, but not both")
    for kind in (
        "CORS",
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestRedirect",
        "URLRewrite",
    ):
        if types.count(kind) > 1:
            out.append(f"{src}: {kind} filter cannot be repeated")
    for f in filters:
        field = _FILTER_FIELDS.get(f["type"], "")
        present = [k for k in f if k != "type"]
        if present != [field]:
            out.append(f"{src}: filter.{field} must be specified for, and only for, its type")
        for key in ("requestRedirect", "urlRewrite"):
            path = f.get(key, {}).get("path")
            if path is not None:
                kind = path["type"]
                wanted = {
                    "ReplaceFullPath": "replaceFullPath",
                    "ReplacePrefixMatch": "replacePrefixMatch",
                }
                if wanted[kind] not in path or set(path) - {"type", wanted[kind]}:
                    out.append(f"{src}: {key}.path: type and value disagree")
    return out


def http_route(route: Obj) -> list[str]:
    src = f"{GATEWAY}: gateway.networking.k8s.io_httproutes.yaml"
    out: list[str] = []
    spec = route["spec"]
    refs = [
        (
            p.get("group", ""),
            p.get("kind", "Gateway"),
            p["name"],
            p.get("namespace", ""),
            p.get("sectionName", ""),
        )
        for p in spec.get("parentRefs", [])
    ]
    if len(refs) != len(set(refs)):
        out.append(f"{src}: spec.parentRefs: sectionName must be unique per parent")
    parents: dict[tuple[str, ...], set[bool]] = {}
    for g, k, n, ns, section in refs:
        parents.setdefault((g, k, n, ns), set()).add(bool(section))
    if any(len(v) > 1 for v in parents.values()):
        out.append(
            f"{src}: spec.parentRefs: sectionName must be set on all references to a parent or none"
        )
    rules = spec.get("rules", [])
    if sum(len(r.get("matches", [])) for r in rules) >= 128:
        out.append(f"{src}: spec.rules: fewer than 128 matches in all")
    for i, rule in enumerate(rules):
        filters = rule.get("filters", [])
        backends = rule.get("backendRefs", [])
        if backends and any(f["type"] == "RequestRedirect" for f in filters):
            out.append(
                f"{src}: rules[{i}]: RequestRedirect filter must not be used together with "
                "backendRefs"
            )
        out += _filter_rules(filters, f"rules[{i}].filters")
        prefix_rewrites = [
            f
            for f in filters
            for key in ("requestRedirect", "urlRewrite")
            if f.get(key, {}).get("path", {}).get("type") == "ReplacePrefixMatch"
        ]
        matches = rule.get("matches", [])
        if prefix_rewrites and (
            len(matches) != 1 or matches[0].get("path", {}).get("type") != "PathPrefix"
        ):
            out.append(f"{src}: rules[{i}]: replacePrefixMatch needs exactly one PathPrefix match")
        for j, backend in enumerate(backends):
            if (
                backend.get("group", "") == ""
                and backend.get("kind", "Service") == "Service"
                and "port" not in backend
            ):
                out.append(
                    f"{src}: rules[{i}].backendRefs[{j}]: Must have port for Service reference"
                )
            out += _filter_rules(backend.get("filters", []), f"rules[{i}].backendRefs[{j}].filters")
        for match in matches:
            path = match.get("path", {"type": "PathPrefix", "value": "/"})
            value = path.get("value", "/")
            if path["type"] not in ("Exact", "PathPrefix", "RegularExpression"):
                out.append(f"{src}: path type {path['type']!r}")
            elif path["type"] != "RegularExpression":
                bad = (
                    not value.startswith("/")
                    or any(s in value for s in ("//", "/./", "/../", "%2f", "%2F", "#"))
                    or value.endswith(("/..", "/."))
                    or not _PATH_CHARS.match(value)
                )
                if bad:
                    out.append(f"{src}: rules[{i}]: path {value!r} is not a clean absolute path")
        timeouts = rule.get("timeouts", {})
        if "request" in timeouts and "backendRequest" in timeouts:
            request, backend_request = (
                _duration_seconds(timeouts[k]) for k in ("request", "backendRequest")
            )
            if request and backend_request and backend_request > request:
                out.append(f"{src}: rules[{i}]: backendRequest timeout longer than request timeout")
    return out


def gateway(gw: Obj) -> list[str]:
    src = f"{GATEWAY}: gateway.networking.k8s.io_gateways.yaml: spec.listeners"
    out: list[str] = []
    listeners = gw["spec"]["listeners"]
    names = [lst["name"] for lst in listeners]
    if len(names) != len(set(names)):
        out.append(f"{src}: Listener name must be unique within the Gateway")
    keys = [(lst["port"], lst["protocol"], lst.get("hostname")) for lst in listeners]
    if len(keys) != len(set(keys)):
        out.append(f"{src}: Combination of port, protocol and hostname must be unique")
    for lst in listeners:
        tls = lst.get("tls")
        if lst["protocol"] in ("HTTP", "TCP", "UDP") and tls is not None:
            out.append(f"{src}: tls must not be specified for protocol {lst['protocol']}")
        if (
            lst["protocol"] == "HTTPS"
            and tls is not None
            and tls.get("mode", "Terminate") != "Terminate"
        ):
            out.append(f"{src}: tls mode must be Terminate for protocol HTTPS")
        if (
            tls
            and tls.get("mode", "Terminate") == "Terminate"
            and not (tls.get("certificateRefs") or tls.get("options"))
        ):
            out.append(
                f"{src}: certificateRefs or options must be specified when mode is Terminate"
            )
    return out


# --- every object ------------------------------------------------------------------------
def problems(objs: list[Obj], features: dict[str, str] | None = None) -> dict[str, list[str]]:
    """What each admission rule finds, per object (``Kind/name``); empty lists left out."""
    features = knative_features() if features is None else features
    runtimes = of_kind(objs, "ServingRuntime")
    found: dict[str, list[str]] = {"config-features": knative_feature_problems(features)}
    checks: dict[tuple[str, str], Callable[[Obj], list[str]]] = {
        ("serving.knative.dev", "Service"): lambda o: knative_service(o, features),
        ("serving.kserve.io", "ServingRuntime"): lambda o: kserve_serving_runtime(o, runtimes),
        ("serving.kserve.io", "InferenceService"): lambda o: _isvc(o, runtimes, features),
        ("postgresql.cnpg.io", "Cluster"): cnpg_cluster,
        ("postgresql.cnpg.io", "Pooler"): cnpg_pooler,
        ("gateway.networking.k8s.io", "HTTPRoute"): http_route,
        ("gateway.networking.k8s.io", "Gateway"): gateway,
    }
    for obj in objs:
        check = checks.get((group_of(obj), obj["kind"]))
        if check is not None:
            found[f"{obj['kind']}/{obj['metadata']['name']}"] = check(obj)
    return {where: p for where, p in found.items() if p}


def _isvc(isvc: Obj, runtimes: list[Obj], features: dict[str, str]) -> list[str]:
    out = kserve_inference_service(isvc)
    annotations = isvc["metadata"].get("annotations", {})
    if annotations.get(DEPLOYMENT_MODE) == "Knative" and "model" in isvc["spec"]["predictor"]:
        # KServe creates a Knative Service from it: Knative's rules apply to that revision.
        out += [
            f"its Knative revision: {p}"
            for p in knative_pod_spec(kserve_knative_pod_spec(isvc, runtimes), features)
        ]
    return out
