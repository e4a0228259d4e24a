"""The resource vocabulary: type tokens, label keys, and which service a resource is of.

One module owns these strings. The program writes its resources with them (infra/), and
everything that reads resources back asks this module: the offline plan, docs, diff, the
policy rules and the tests. It lives in the policy pack's package because the pack must
stay self-contained; it imports nothing but the standard library and names no service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# ---- type tokens --------------------------------------------------------------------

TIER = "optiinfra:platform:Tier"
"""The ComponentResource of one tier (its children are the tier's resources)."""
STACK = "pulumi:pulumi:Stack"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"

DOCKER_CONTAINER = "docker:index/container:Container"
DOCKER_NETWORK = "docker:index/network:Network"
DOCKER_VOLUME = "docker:index/volume:Volume"
DOCKER_IMAGE = "docker:index/remoteImage:RemoteImage"

K8S_PROVIDER = "pulumi:providers:kubernetes"
K8S_NAMESPACE = "kubernetes:core/v1:Namespace"
K8S_SERVICE = "kubernetes:core/v1:Service"
K8S_SECRET = "kubernetes:core/v1:Secret"
K8S_EXTERNAL_SECRET = "kubernetes:external-secrets.io/v1:ExternalSecret"
"""The External Secrets Operator's object (apiextensions.CustomResource): it writes a Secret."""
K8S_CONFIGMAP = "kubernetes:core/v1:ConfigMap"
K8S_PVC = "kubernetes:core/v1:PersistentVolumeClaim"
K8S_POD = "kubernetes:core/v1:Pod"
K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
K8S_STATEFULSET = "kubernetes:apps/v1:StatefulSet"
K8S_DAEMONSET = "kubernetes:apps/v1:DaemonSet"
K8S_REPLICASET = "kubernetes:apps/v1:ReplicaSet"
K8S_JOB = "kubernetes:batch/v1:Job"
K8S_CRONJOB = "kubernetes:batch/v1:CronJob"
K8S_NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
K8S_INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
K8S_PDB = "kubernetes:policy/v1:PodDisruptionBudget"
K8S_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
K8S_CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
K8S_STORAGE_CLASS = "kubernetes:storage.k8s.io/v1:StorageClass"

K8S_POD_SPEC_PATH: Mapping[str, tuple[str, ...]] = {
    K8S_DEPLOYMENT: ("spec", "template", "spec"),
    K8S_STATEFULSET: ("spec", "template", "spec"),
    K8S_DAEMONSET: ("spec", "template", "spec"),
    K8S_REPLICASET: ("spec", "template", "spec"),
    K8S_JOB: ("spec", "template", "spec"),
    K8S_CRONJOB: ("spec", "jobTemplate", "spec", "template", "spec"),
    K8S_POD: ("spec",),
}
"""Where each workload kind keeps its pod spec."""
K8S_WORKLOADS = frozenset(K8S_POD_SPEC_PATH)
SERVICE_WORKLOADS = frozenset({DOCKER_CONTAINER, K8S_DEPLOYMENT, K8S_STATEFULSET})
"""What runs a service's processes: a container on Docker, a Deployment or StatefulSet on Kubernetes."""


def is_kubernetes(type_: str) -> bool:
    return type_.startswith("kubernetes:")


def kind(type_: str) -> str:
    """`kubernetes:apps/v1:Deployment` -> `Deployment`, `docker:index/container:Container` -> `Container`."""
    return type_.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


# ---- names and labels -----------------------------------------------------------------

PROJECT = "optiinfra"
CONFIG_NAMESPACE = "optiinfra"
"""The stack config namespace (`optiinfra:<key>`), which the rules' fix hints name."""
CONTAINER_PREFIX = "optiinfra-"
"""Docker names: the seed's `optiinfra-<service>` containers (and `optiinfra-<service>-<volume>` volumes)."""



def docker_volume_name(service: str, volume: str) -> str:
    """The Docker volume the program creates for a catalog Volume: `optiinfra-<service>-<volume>`."""
    return f"{CONTAINER_PREFIX}{service}-{volume}"


DOCKER_LABEL = "io.optiinfra"
DOCKER_SERVICE = f"{DOCKER_LABEL}.service"
DOCKER_TIER = f"{DOCKER_LABEL}.tier"
DOCKER_IMAGE_LABEL = f"{DOCKER_LABEL}.image"
DOCKER_PUBLIC = f"{DOCKER_LABEL}.public"

K8S_NAME = "app.kubernetes.io/name"
K8S_PART_OF = "app.kubernetes.io/part-of"
K8S_COMPONENT = "app.kubernetes.io/component"
"""Carries the tier on every object the program makes."""
K8S_MANAGED_BY = "app.kubernetes.io/managed-by"
K8S_CLOUD_PROVIDER = "optiinfra.io/cloud-provider"
K8S_SECRET_KEYS = "optiinfra.io/secret-keys"
"""Annotation on a Secret: its key names (never the values), so offline renders show its shape."""
PULUMI_SKIP_AWAIT = "pulumi.com/skipAwait"
"""pulumi-kubernetes' annotation: create the object without waiting on its own readiness."""
K8S_NAMESPACE_NAME = "kubernetes.io/metadata.name"
"""Set by Kubernetes on every namespace (immutable): what namespace selectors match."""
PSS = "pod-security.kubernetes.io"
PSS_ENFORCE = f"{PSS}/enforce"

# ---- facts the program stamps from the catalog, for the policy pack -----------------------
# The pack judges resources without the program's model, so what it needs from the catalog
# travels on the resources (Docker labels, Kubernetes annotations: never labels, so no
# selector changes). Absent means "the program said nothing" (see optiinfra_policies.rules).

DOCKER_NETWORKS = f"{DOCKER_LABEL}.networks"
"""Container label: the names of the networks its connections need (`joined(...)`)."""
DOCKER_PORT_PREFIX = f"{DOCKER_LABEL}.port."
"""Container label per catalog port, `io.optiinfra.port.<container port>` = `port_stamp(...)`."""
DOCKER_DATA_PATHS = f"{DOCKER_LABEL}.data-paths"
"""Container label: the catalog's volume paths (`joined(...)`), only for services with volumes."""
DOCKER_NO_HEALTHCHECK = f"{DOCKER_LABEL}.no-healthcheck"
"""Container label: the catalog's reason why the image cannot run a Docker health check."""

K8S_ANNOTATION = "optiinfra.io"
K8S_PUBLIC = f"{K8S_ANNOTATION}/public"
"""Annotation on a Service and an Ingress: `"true"` when the stack marks the service public."""
K8S_UI = f"{K8S_ANNOTATION}/ui"
"""Annotation on a Service and an Ingress: `"true"` when the service is a web UI people use
(the catalog's `ui`): public only with a sign-in in front of it."""
K8S_AUTHENTICATOR = f"{K8S_ANNOTATION}/authenticator"
"""Annotation on a Service: `"true"` for the sign-in proxy (the catalog's `authenticator`)."""
K8S_FRONTS = f"{K8S_ANNOTATION}/fronts"
"""Annotation on an Ingress that routes to the sign-in proxy: the UI it serves."""
K8S_PORT_PREFIX = f"{K8S_ANNOTATION}/port."
"""Service annotation per catalog port, `optiinfra.io/port.<port name>` = `port_stamp(...)`."""
K8S_SLOW_START = f"{K8S_ANNOTATION}/slow-start"
"""Workload annotation `"true"`: the catalog marks the service a slow starter (startup probe)."""
K8S_DATA_PATHS = f"{K8S_ANNOTATION}/data-paths"
"""Workload annotation: the catalog's volume paths (`joined(...)`)."""
K8S_REQUIRE_DIGEST = f"{K8S_ANNOTATION}/require-digest"
"""Workload annotation `"true"` when the stack sets kubernetes.requireDigest."""
K8S_CREDENTIALS_ROLLOUT = f"{K8S_ANNOTATION}/credentials"
"""Pod template annotation: a keyed hash of the credentials the pod uses, so changing one rolls
exactly the pods that read it (a Secret's change alone restarts nothing)."""
K8S_SECRET_ENV = f"{K8S_ANNOTATION}/secret-env"
"""Workload annotation: why its image takes secrets as environment variables (the catalog's
reason: the image reads no file); absent when every secret reaches it as a mounted file."""

K8S_BACKUP_OF = f"{K8S_ANNOTATION}/backup-of"
"""CronJob annotation: the service whose data this job backs up."""
K8S_BACKUP_TARGET = f"{K8S_ANNOTATION}/backup-target"
"""CronJob annotation: the mount path of the job's backup target (a volume of the job)."""
K8S_BACKUP_STORE = f"{K8S_ANNOTATION}/backup-store"
"""CronJob annotation: the endpoint of the off-site store its backups go to (with a target
`s3://<bucket>/...`: the store is the target itself, no volume of the job)."""
K8S_DRILL_OF = f"{K8S_ANNOTATION}/drill-of"
"""CronJob annotation: the service whose newest off-site backup this job restores as a drill
(its pods have a name of their own; it writes no backup, so stateful-backups ignores it)."""
K8S_CREDENTIALS_OF = f"{K8S_ANNOTATION}/credentials-of"
"""On a store's credential-rotation Job: the store whose running server it applies the clients'
credentials to (the Job's pods have a name of their own)."""
NO_BACKUP_REASON = "no-backup"
"""Stamp (Kubernetes annotation `optiinfra.io/no-backup`, Docker label `io.optiinfra.no-backup`)
on a stateful workload: the catalog's reason why its data is not backed up."""
K8S_NO_BACKUP = f"{K8S_ANNOTATION}/{NO_BACKUP_REASON}"
DOCKER_NO_BACKUP = f"{DOCKER_LABEL}.{NO_BACKUP_REASON}"
DOCKER_BACKUP_TARGET = f"{DOCKER_LABEL}.backup-target"
"""Container label: the host directory its backups go to (`python -m infra backup`)."""
DOCKER_BACKUP_SCHEDULE = f"{DOCKER_LABEL}.backup-schedule"
"""Container label: the stack's backup schedule (cron, UTC) for the host's scheduler."""

K8S_KUBE_SCORE_IGNORE = "kube-score/ignore"
"""kube-score's own annotation on an object: the checks it skips there (comma-separated)."""
K8S_KUBE_SCORE_REASON = f"{K8S_ANNOTATION}/kube-score."
"""`optiinfra.io/kube-score.<check>`: why kube-score's `<check>` is ignored on this object
(kube-score's own annotation takes only the check names)."""
K8S_CHECKOV_SKIP = "checkov.io/skip"
"""`checkov.io/skip<N>: CKV_K8S_<id>=<reason>`, checkov's own skip annotation."""

TRUE = "true"

SECRET_MARK = "[secret]"
"""How the offline render shows a secret value (a Docker env entry as `NAME=[secret]`)."""
UNKNOWN_MARK = "[unknown]"
"""How a value not known yet (preview) reaches the rules, offline and under the engine."""

TIERS = ("databases", "monitoring", "core", "agents", "frontend")
"""The tier names, in startup order: the values of the tier labels (infra.model.Tier)."""


def tier_scoped_name(prefix: str, tier: str) -> str:
    """A per-tier Docker network or Kubernetes namespace: `<prefix>-<tier>`."""
    return f"{prefix}-{tier}"


def tier_of_name(name: str) -> str | None:
    """The tier of a `<prefix>-<tier>` network or namespace name, None for any other name."""
    prefix, sep, tier = name.rpartition("-")
    return tier if sep and prefix and tier in TIERS else None


def joined(items: Iterable[str]) -> str:
    """A list stamped into one label or annotation value: comma-separated."""
    return ",".join(items)


def split(value: Any) -> list[str]:
    return [v for v in value.split(",") if v] if isinstance(value, str) else []


def docker_port_key(container_port: int) -> str:
    return f"{DOCKER_PORT_PREFIX}{container_port}"


def k8s_port_key(port_name: str) -> str:
    return f"{K8S_PORT_PREFIX}{port_name}"


@dataclass(frozen=True)
class PortStamp:
    """A catalog port as stamped: its name and allocation band (None: the port has none)."""

    name: str
    band: str | None = None
    low: int = 0
    high: int = 0
    outside_band: str = ""
    """Why the port lies outside its band, as the catalog writes it beside the Port (the
    one place such an exception lives); empty: it must be inside."""
    excused: tuple[int, ...] = ()
    """The numbers that exception covers: the catalog Port's own (container and default
    host port), never a number the stack config picks."""

    def allows(self, port: int) -> bool:
        return self.contains(port) or (bool(self.outside_band) and port in self.excused)

    def contains(self, port: int) -> bool:
        return self.low <= port <= self.high


def port_stamp(name: str, band: Any = None, outside_band: str = "", excused: Iterable[int] = ()) -> str:
    """`<port name>:<band>:<low>-<high>` (e.g. `http:metrics:9000-9999`), then
    `:<excused numbers>:<reason>` for a port the catalog places outside its band; `http::`
    without a band. `band` is anything with `name`, `low` and `high` (infra.model.Band)."""
    if band is None:
        return f"{name}::"
    stamp = f"{name}:{band.name}:{band.low}-{band.high}"
    return f"{stamp}:{joined(str(n) for n in sorted(set(excused)))}:{outside_band}" if outside_band else stamp


def parse_port_stamp(value: Any) -> PortStamp | None:
    """The inverse of `port_stamp`; None for a malformed value."""
    if not isinstance(value, str):
        return None
    name, sep, rest = value.partition(":")
    band, sep2, span = rest.partition(":")
    if not (name and sep and sep2):
        return None
    if not band and not span:
        return PortStamp(name)
    span, _, exception = span.partition(":")
    numbers, _, reason = exception.partition(":")
    low, dash, high = span.partition("-")
    if not (band and dash and low.isdigit() and high.isdigit()) or not all(n.isdigit() for n in split(numbers)):
        return None
    return PortStamp(name, band, int(low), int(high), reason, tuple(int(n) for n in split(numbers)))


def annotations_of(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A Kubernetes object's own annotations."""
    return _as_dict(_as_dict(inputs.get("metadata")).get("annotations"))


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def docker_labels(inputs: Mapping[str, Any]) -> dict[str, str]:
    """A Docker resource's `labels` ([{label, value}, ...]) as a dict."""
    items = inputs.get("labels")
    return {str(i.get("label")): str(i.get("value")) for i in (items if isinstance(items, list) else [])
            if isinstance(i, Mapping)}


def k8s_labels(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A Kubernetes object's labels, with its pod template's (the object's own win)."""
    template = _as_dict(_as_dict(_as_dict(inputs.get("spec")).get("template")).get("metadata")).get("labels")
    return {**_as_dict(template), **_as_dict(_as_dict(inputs.get("metadata")).get("labels"))}


def labels_of(type_: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    return k8s_labels(inputs) if is_kubernetes(type_) else docker_labels(inputs)


def service_of(type_: str, inputs: Mapping[str, Any]) -> str | None:
    """The catalog service a resource belongs to, from the label the program writes
    (`io.optiinfra.service` on Docker, `app.kubernetes.io/name` on Kubernetes), else a
    Docker container's `optiinfra-<service>` name; None for shared resources (networks,
    namespaces, a tier's Secret, generated credentials)."""
    if is_kubernetes(type_):
        value = k8s_labels(inputs).get(K8S_NAME)
        return value if isinstance(value, str) and value else None
    label = docker_labels(inputs).get(DOCKER_SERVICE)
    if label:
        return label
    name = inputs.get("name")
    if type_ == DOCKER_CONTAINER and isinstance(name, str) and name.startswith(CONTAINER_PREFIX):
        return name[len(CONTAINER_PREFIX):]
    return None


def tier_of(type_: str, inputs: Mapping[str, Any]) -> str | None:
    """The tier label the program writes (`io.optiinfra.tier` / `app.kubernetes.io/component`)."""
    value = labels_of(type_, inputs).get(K8S_COMPONENT if is_kubernetes(type_) else DOCKER_TIER)
    return value if isinstance(value, str) and value else None


NO_RECEIVER_MARK = "optiinfra-no-receiver"
"""The comment line (`# optiinfra-no-receiver: <reason>`) with which a notifier's rendered config
states why its stack sends alerts nowhere (stack config `alerting.noReceiver`); the policy
`alerts-reach-a-receiver` accepts a config without a receiver only with it."""
