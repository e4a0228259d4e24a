"""Data: stateful resources are protected, and backed up somewhere else."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .. import vocabulary as v
from ..core import Resource, Rule, as_dict, as_list, get_in
from .common import (
    CONTAINER,
    CRONJOB,
    DEPLOYMENT,
    PVC,
    STATEFULSET,
    VOLUME,
    annotation,
    docker_labels,
    docker_service,
    k8s_service,
    pod_containers,
    pod_spec,
)

# ---- stateful resources protected ----------------------------------------------------------------

def check_stateful(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """Volumes, claims and StatefulSets protected; every data path the program stamps
    (the catalog's volumes) on a named volume / a PersistentVolumeClaim."""
    fix = "Fix: create it with ResourceOptions(protect=True)."
    if res.type in (VOLUME, PVC, STATEFULSET) and not res.protect:
        what = {VOLUME: "Docker volume", PVC: "PersistentVolumeClaim", STATEFULSET: "StatefulSet"}[res.type]
        yield f"{what} {res.name} holds data but is not protected from deletion. {fix}"
    retention = get_in(res.props, "spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted")
    if res.type == STATEFULSET and cfg.get("requireRetainPolicy") and retention == "Delete":
        yield (f"StatefulSet {res.name} deletes its PersistentVolumeClaims with it. Fix: whenDeleted: Retain "
                   "(the default).")
    if res.type == CONTAINER:
        service = docker_service(res)
        named = {as_dict(m).get("containerPath") for m in as_list(res.props.get("volumes"))
                 if as_dict(m).get("volumeName")}
        for path in v.split(docker_labels(res.props).get(v.DOCKER_DATA_PATHS)):
            if path not in named:
                yield (f"{service}: {path} is not on a named volume, so replacing the container loses its "
                       "data. Fix: mount the catalog's Volume.")
    elif res.type in (DEPLOYMENT, STATEFULSET):
        service = k8s_service(res)
        spec = pod_spec(res) or {}
        paths = v.split(annotation(res, v.K8S_DATA_PATHS))
        if not paths:
            return
        templates = as_list(get_in(res.props, "spec", "volumeClaimTemplates"))
        claims = {str(get_in(t, "metadata", "name")) for t in templates}
        claims |= {str(as_dict(vol).get("name")) for vol in as_list(spec.get("volumes"))
                   if as_dict(vol).get("persistentVolumeClaim")}
        mounts = {str(get_in(m, "mountPath")): str(get_in(m, "name")) for _, c in pod_containers(spec, init=False)
                  for m in as_list(c.get("volumeMounts"))}
        for path in paths:
            if mounts.get(path) not in claims:
                yield (f"{service}: {path} is not on a PersistentVolumeClaim, so a new pod loses its data. "
                       "Fix: mount a PVC (or a volumeClaimTemplate) there.")


STATEFUL_RESOURCES_PROTECTED = Rule(
    name="stateful-resources-protected",
    description=("Data volumes, PersistentVolumeClaims and StatefulSets are protected from deletion, and every "
                 "stateful service keeps its data on them."),
    severity="high",
    config={"requireRetainPolicy": {"type": "boolean", "default": True,
                                    "description": "StatefulSets keep their PVCs when deleted."}},
    remediation="Create them with protect=True and mount the catalog's volumes.",
    check=check_stateful,
    types=frozenset({VOLUME, PVC, STATEFULSET, DEPLOYMENT, CONTAINER}),
    tags=("data",),
)


# ---- every stateful service backed up, elsewhere -----------------------------------------------------

def _own_claim(claim: str, templates: set[str], workload: str) -> bool:
    """A claim a StatefulSet's pods own: `<template>-<set>-<ordinal>`."""
    return any(claim.startswith(f"{t}-{workload}-") and claim.rsplit("-", 1)[-1].isdigit() for t in templates)


def _backup_problems(job: Resource, workload: Resource, templates: set[str]) -> Iterator[str]:
    name = str(get_in(job.props, "metadata", "name"))
    if not str(get_in(job.props, "spec", "schedule") or "").strip():
        yield f"backup CronJob {name} has no schedule"
    target = str(annotation(job, v.K8S_BACKUP_TARGET) or "")
    if target.startswith("s3://"):  # the server writes an off-site store: its endpoint stamped
        store = str(annotation(job, v.K8S_BACKUP_STORE) or "")
        if not store.startswith(("https://", "http://")) or not target.removeprefix("s3://").strip("/"):
            yield (f"backup CronJob {name} names the store target {target} without its bucket or the store's endpoint "
                   f"({v.K8S_BACKUP_STORE}: {store or 'unset'})")
        return
    spec = pod_spec(job) or {}
    # Init containers too: with an off-site store the backup itself is the init step (the upload follows).
    mounts = [as_dict(m) for _, c in pod_containers(spec) for m in as_list(c.get("volumeMounts"))]
    at_target = [m for m in mounts if m.get("mountPath") == target]
    mount = next((m for m in at_target if m.get("readOnly")), at_target[0] if at_target else None)
    volume = next((as_dict(x) for x in as_list(spec.get("volumes"))
                   if mount is not None and as_dict(x).get("name") == mount.get("name")), None)
    if mount is None or volume is None:
        yield f"backup CronJob {name} mounts nothing at its target ({v.K8S_BACKUP_TARGET}: {target or 'unset'})"
        return
    if mount.get("readOnly"):
        yield f"backup CronJob {name} mounts its target {target} read-only"
    if "emptyDir" in volume:
        yield f"backup CronJob {name} writes to an emptyDir, which is gone when the job's pod is"
    claim = str(get_in(volume, "persistentVolumeClaim", "claimName") or "")
    if claim and _own_claim(claim, templates, str(get_in(workload.props, "metadata", "name"))):
        yield f"backup CronJob {name} writes to {claim}, the service's own volume (lost with it)"


def check_backups(resources: Sequence[Resource], cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every stateful workload (a StatefulSet, a Docker container with data paths) has a
    backup schedule whose target is not its own volume, or the catalog's stamped reason why
    its data is not worth one."""
    jobs: dict[tuple[str, str], list[Resource]] = {}
    for r in resources:
        if r.type == CRONJOB and annotation(r, v.K8S_BACKUP_OF):
            key = (str(get_in(r.props, "metadata", "namespace")), str(annotation(r, v.K8S_BACKUP_OF)))
            jobs.setdefault(key, []).append(r)
    fix = ("Fix: set optiinfra:backups.enabled=true (schedule and retention in optiinfra:backups), or declare in "
           "the catalog why the service needs none (Backup.none_reason).")
    for r in resources:
        if r.type == STATEFULSET:
            if str(annotation(r, v.K8S_NO_BACKUP) or "").strip():
                continue
            service = k8s_service(r)
            ns = str(get_in(r.props, "metadata", "namespace"))
            templates = {str(get_in(t, "metadata", "name")) for t in as_list(get_in(r.props, "spec",
                                                                                    "volumeClaimTemplates"))}
            found = jobs.get((ns, service), [])
            if not found:
                yield r.urn, f"{service}: stateful, but no backup CronJob backs it up. {fix}"
            for job in found:
                for problem in _backup_problems(job, r, templates):
                    yield r.urn, f"{service}: {problem}. Fix: write backups to a claim of their own."
        elif r.type == CONTAINER:
            labels = docker_labels(r.props)
            if not v.split(labels.get(v.DOCKER_DATA_PATHS)) or str(labels.get(v.DOCKER_NO_BACKUP) or "").strip():
                continue
            service = docker_service(r)
            target = str(labels.get(v.DOCKER_BACKUP_TARGET) or "")
            if not target or not str(labels.get(v.DOCKER_BACKUP_SCHEDULE) or "").strip():
                yield r.urn, f"{service}: stateful, but no backup target and schedule are stamped. {fix}"
                continue
            own = {str(as_dict(m).get("volumeName")) for m in as_list(r.props.get("volumes"))}
            if target in own or "/" not in target:
                yield r.urn, (f"{service}: backups go to {target}, not a host directory apart from its volumes. "
                              "Fix: set optiinfra:backups.hostDir to a directory.")


STATEFUL_BACKUPS = Rule(
    name="stateful-backups",
    description=("Every stateful service has a backup schedule whose target is not its own volume (a claim of "
                 "its own on Kubernetes, a host directory on Docker), or the catalog's reason it needs none."),
    severity="high",
    config={},
    remediation="Keep optiinfra:backups enabled; declare a Backup for the service in infra/catalog.py.",
    check_stack=check_backups,
    tags=("data", "backup"),
)


RULES: tuple[Rule, ...] = (STATEFUL_RESOURCES_PROTECTED, STATEFUL_BACKUPS)
