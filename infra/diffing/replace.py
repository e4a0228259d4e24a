"""What a provider does with a changed field: replace the resource or update it in place.

Written once per resource type the program creates, with the reason, from the providers'
own schemas. `rule_for(type, path)` answers for one changed field (a dotted path, `[key]`
for list items).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policies.optiinfra_policies import vocabulary as v


@dataclass(frozen=True)
class Rule:
    replaces: bool
    reason: str


def _group(replaces: bool, fields: str, reason: str) -> dict[str, Rule]:
    return dict.fromkeys(fields.split(), Rule(replaces, reason))


# pulumi-docker is bridged from kreuzwerker/terraform-provider-docker; a field marked
# `ForceNew: true` in its schema (internal/provider/resource_docker_container.go) makes
# Pulumi replace the container. Its update function applies only the resource fields in
# `DOCKER_LIVE` to the running container (`docker update`); every other non-ForceNew
# field is only recorded in Pulumi's state.
DOCKER_LIVE = frozenset({"restart", "maxRetryCount", "memory", "memoryReservation", "memorySwap", "cpuShares",
                         "cpuSet"})
DOCKER_CONTAINER: dict[str, Rule] = {
    **_group(True, "name", "the container's fixed name is its identity (ForceNew)"),
    **_group(True, "image", "a container cannot change its image (ForceNew)"),
    **_group(True, "command entrypoints envs user workingDir hostname domainname",
             "the process and its environment are fixed when Docker creates the container (ForceNew)"),
    **_group(True, "ports publishAllPorts",
             "Docker cannot change the published ports of an existing container (ForceNew)"),
    **_group(True, "networksAdvanced networkMode dns dnsOpts dnsSearches hosts",
             "networks and aliases are attached when the container is created (ForceNew)"),
    **_group(True, "volumes mounts", "mounts are fixed at creation (ForceNew); named volumes survive it"),
    **_group(True, "uploads", "files are uploaded once, before the container first starts (ForceNew)"),
    **_group(True, "labels", "labels are fixed at creation (ForceNew)"),
    **_group(True, "capabilities securityOpts privileged readOnly devices deviceRequests ulimits sysctls "
                   "groupAdds pidMode ipcMode usernsMode cgroupnsMode cgroupParent runtime platform shmSize "
                   "storageOpts gpus cpus logDriver logOpts stopSignal stopTimeout tty stdinOpen",
             "runtime and security settings are fixed at creation (ForceNew)"),
    **_group(False, " ".join(sorted(DOCKER_LIVE)), "applied to the running container with `docker update`"),
    **_group(False, "healthcheck wait waitTimeout mustRun rm start attach logs destroyGraceSeconds removeVolumes "
                    "tmpfs init containerReadRefreshTimeoutMilliseconds",
             "not ForceNew: recorded in Pulumi's state only; the running container keeps its old "
             "setting until it is next replaced"),
}
DOCKER_IMAGE: dict[str, Rule] = {
    **_group(True, "name pullTriggers triggers build", "another image reference is another image (ForceNew)"),
    **_group(False, "keepLocally forceRemove platform", "only used when the image is removed"),
}
WHOLE: dict[str, Rule] = {
    v.DOCKER_NETWORK: Rule(True, "the docker provider has no update for networks: every field is ForceNew"),
    v.DOCKER_VOLUME: Rule(True, "the docker provider has no update for volumes: every field is ForceNew"),
    v.RANDOM_PASSWORD: Rule(True, "every argument of a generated password makes a new one (RequiresReplace)"),
}
"""Types whose every field replaces."""

# pulumi-kubernetes patches an object in place unless a changed field is in its forceNew
# table (provider/pkg/provider/diff.go): the fields the API server treats as immutable,
# plus ConfigMap data (replaced so that dependents roll; Secret data too, unless the provider
# sets enableSecretMutable, as the program's does). A replaced object that
# keeps its explicit name is deleted before its replacement is created (the provider says
# so in its Diff response).
_K8S_NAME = _group(True, "metadata.name metadata.namespace",
                   "an object's name and namespace are its identity: another is another object")
_ROLL = "patched in place: the controller replaces the pods with a rolling update"
K8S: dict[str, dict[str, Rule]] = {
    v.K8S_STATEFULSET: {
        **_K8S_NAME,
        **_group(True, "spec.selector spec.serviceName spec.volumeClaimTemplates spec.podManagementPolicy "
                       "spec.revisionHistoryLimit", "immutable in a StatefulSet (forceNew in pulumi-kubernetes)"),
        **_group(False, "spec.template", _ROLL + " (one pod at a time; each keeps its claim)"),
    },
    v.K8S_DEPLOYMENT: {
        **_K8S_NAME,
        **_group(True, "spec.selector", "immutable in an apps/v1 Deployment (forceNew in pulumi-kubernetes)"),
        **_group(False, "spec.template", _ROLL),
    },
    v.K8S_SERVICE: {
        **_K8S_NAME,
        **_group(True, "spec.clusterIP", "a Service's clusterIP is immutable"),
        **_group(True, "spec.type", "forceNew in pulumi-kubernetes: another type is another Service"),
        **_group(False, "spec.ports spec.selector",
                 "patched in place: clients keep the Service's name and cluster IP"),
    },
    v.K8S_JOB: {
        **_K8S_NAME,
        **_group(True, "spec.selector spec.template",
                 "a Job's pod template and selector are immutable (forceNew in pulumi-kubernetes): it is deleted "
                 "and created again, which runs it again"),
        # The program's rotation Jobs (the only Jobs) also set replace_on_changes=["spec"].
        **_group(True, "spec", "the rotation Job is replaced on any spec change (its replace_on_changes)"),
    },
    v.K8S_ROLE_BINDING: {
        **_K8S_NAME,
        **_group(True, "roleRef", "a RoleBinding's roleRef is immutable (forceNew in pulumi-kubernetes)"),
    },
    v.K8S_CLUSTER_ROLE_BINDING: {
        **_K8S_NAME,
        **_group(True, "roleRef", "a ClusterRoleBinding's roleRef is immutable (forceNew in pulumi-kubernetes)"),
    },
    v.K8S_PVC: {  # the program makes claims through StatefulSet templates; kept for claims made directly
        **_K8S_NAME,
        **_group(True, "spec.accessModes spec.selector spec.storageClassName spec.volumeName",
                 "immutable in a PersistentVolumeClaim (forceNew in pulumi-kubernetes)"),
        **_group(False, "spec.resources", "patched in place: a claim's storage request grows by volume expansion "
                                          "(the StorageClass must allow it; a request never shrinks)"),
    },
    v.K8S_CONFIGMAP: {
        **_K8S_NAME,
        **_group(True, "data binaryData", "pulumi-kubernetes replaces a ConfigMap whose data changes"),
    },
    v.K8S_SECRET: {
        **_K8S_NAME,
        **_group(True, "type", "a Secret's type is immutable"),
        # The program's provider sets enableSecretMutable: data is patched under the same name
        # (a replace would delete the fixed-name Secret under its pods); the pods that read a
        # changed credential roll through their credentials hash (vocabulary.K8S_CREDENTIALS_ROLLOUT).
        **_group(False, "data stringData", "patched in place (the provider's enableSecretMutable)"),
    },
}
"""Kubernetes kinds with immutable fields beyond name and namespace (every other kind:
name and namespace replace, the rest is patched)."""
_K8S_DEFAULT = Rule(False, "patched in place")
_DEFAULT = Rule(False, "updated in place (not in the replace table)")
_TABLES: dict[str, dict[str, Rule]] = {v.DOCKER_CONTAINER: DOCKER_CONTAINER, v.DOCKER_IMAGE: DOCKER_IMAGE, **K8S}


def rule_for(type_: str, path: str) -> Rule:
    """The replace rule of a changed field (dotted path) of a resource type."""
    if type_ in WHOLE:
        return WHOLE[type_]
    kube = v.is_kubernetes(type_)
    table = _TABLES.get(type_)
    if table is None:
        return _K8S_NAME.get(head(path, 2), _K8S_DEFAULT) if kube else _DEFAULT
    best: tuple[int, Rule] | None = None
    for key, rule in table.items():
        covers = path == key or path.startswith(key + ".") or path.startswith(key + "[")
        if covers and (best is None or len(key) > best[0]):
            best = (len(key), rule)
    if best:
        return best[1]
    return _K8S_DEFAULT if kube else _DEFAULT


def head(path: str, parts: int) -> str:
    """The first `parts` steps of a changed field's path (`spec.template.x[0]`, 2 -> `spec.template`)."""
    return ".".join(re.split(r"[.\[]", path)[:parts])
