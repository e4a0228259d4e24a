"""What every family of rules shares: short names for the vocabulary's type tokens, and
reading a resource the way the program renders it (its catalog service, labels and
annotations, pod spec and containers), and the fix hint that names a stack setting."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .. import vocabulary as v
from ..core import Resource, as_dict, as_list, get_in

# ---- type tokens (the vocabulary's; short names for the rules and their tests) ----------

CONTAINER = v.DOCKER_CONTAINER
REMOTE_IMAGE = v.DOCKER_IMAGE
VOLUME = v.DOCKER_VOLUME

DEPLOYMENT = v.K8S_DEPLOYMENT
STATEFULSET = v.K8S_STATEFULSET
DAEMONSET = v.K8S_DAEMONSET
REPLICASET = v.K8S_REPLICASET
JOB = v.K8S_JOB
CRONJOB = v.K8S_CRONJOB
POD = v.K8S_POD
K8S_SERVICE = v.K8S_SERVICE
PVC = v.K8S_PVC
NAMESPACE_T = v.K8S_NAMESPACE
K8S_SECRET = v.K8S_SECRET
EXTERNAL_SECRET = v.K8S_EXTERNAL_SECRET
CONFIGMAP = v.K8S_CONFIGMAP
NETWORK_POLICY = v.K8S_NETWORK_POLICY
INGRESS = v.K8S_INGRESS

POD_SPEC_PATH = v.K8S_POD_SPEC_PATH
WORKLOADS = v.K8S_WORKLOADS
LONG_RUNNING = frozenset({DEPLOYMENT, STATEFULSET, DAEMONSET, REPLICASET, POD})
DOCKER = frozenset({CONTAINER})

CONFIG_FILE = "policies/config/<stack>.json"
NAMESPACE = v.CONFIG_NAMESPACE
LABEL = v.DOCKER_LABEL


# ---- shared helpers -----------------------------------------------------------------

def docker_labels(props: Mapping[str, Any]) -> dict[str, str]:
    return v.docker_labels(props)


def docker_service(res: Resource) -> str:
    """The catalog service a container runs: its io.optiinfra.service label, else its name."""
    return v.service_of(res.type, res.props) or res.name


def docker_envs(props: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(name, value, entry) of each `NAME=value` entry; a whole-secret entry gives name ''."""
    for entry in as_list(props.get("envs")):
        if not isinstance(entry, str):
            continue
        name, sep, value = entry.partition("=")
        yield (name, value, entry) if sep else ("", entry, entry)


def k8s_labels(props: Mapping[str, Any]) -> dict[str, Any]:
    return v.k8s_labels(props)


def k8s_service(res: Resource) -> str:
    """The catalog service a Kubernetes resource belongs to (its app.kubernetes.io/name
    label, else its name)."""
    service = v.service_of(res.type, res.props)
    if service:
        return service
    meta_name = get_in(res.props, "metadata", "name")
    name = meta_name if isinstance(meta_name, str) else res.name
    return name[len(v.CONTAINER_PREFIX):] if name.startswith(v.CONTAINER_PREFIX) else name


def annotation(res: Resource, key: str) -> Any:
    return v.annotations_of(res.props).get(key)


def stamped_true(value: Any) -> bool:
    return value == v.TRUE


def pod_spec(res: Resource) -> dict[str, Any] | None:
    path = POD_SPEC_PATH.get(res.type)
    spec = get_in(res.props, *path) if path else None
    return as_dict(spec) if isinstance(spec, Mapping) else None


def pod_containers(spec: Mapping[str, Any], *, init: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, container) of the containers, and (with `init`) the init and ephemeral ones."""
    kinds = ("containers", "initContainers", "ephemeralContainers") if init else ("containers",)
    for kind in kinds:
        for c in as_list(spec.get(kind)):
            if isinstance(c, Mapping):
                yield str(c.get("name", "?")), dict(c)


def service_hint(service: str, key: str) -> str:
    return f"{NAMESPACE}:services.{service}.{key}"


def list_of(item: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object", "properties": item, "required": required,
                                       "additionalProperties": False}}
