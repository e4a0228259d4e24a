"""Workloads: a StatefulSet (claim templates, claims retained, protected) for a service
with volumes, a Deployment for the rest, one per instance, rolled out as the model's
`Rollout` says, with its PodDisruptionBudget; the annotations the policy pack judges
them by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
from pulumi_kubernetes.apps import v1 as apps
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.policy import v1 as policy

from policies.optiinfra_policies.vocabulary import (
    K8S_DATA_PATHS,
    K8S_NO_BACKUP,
    K8S_REQUIRE_DIGEST,
    K8S_SECRET_ENV,
    K8S_SLOW_START,
    TRUE,
    joined,
)
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME

from ... import external_secrets as eso
from ...graph import Effective, Resolved
from ...tiers import TierComponent
from ...wiring import Wiring
from .credentials import secrets_in_env
from .objects import Objects, instances, pods_service, quantity_mib
from .pod import pod
from .reviews import exception_annotations, review_exceptions


def deployment_strategy(eff: Effective) -> apps.DeploymentStrategyArgs:
    """The model's rollout as a Deployment's strategy."""
    r = eff.rollout
    if r.strategy == "Recreate":
        return apps.DeploymentStrategyArgs(type="Recreate")
    return apps.DeploymentStrategyArgs(type="RollingUpdate", rolling_update=apps.RollingUpdateDeploymentArgs(
        max_surge=r.surge, max_unavailable=r.unavailable))


def statefulset_rollout(eff: Effective) -> None:
    """A StatefulSet keeps Kubernetes' default update strategy, which is the model's rollout
    for it (one pod at a time, no surge); any other rollout is refused, never dropped."""
    r = eff.rollout
    if (r.strategy, r.surge, r.unavailable) != ("RollingUpdate", 0, 1):
        raise ValueError(f"{eff.name}: a StatefulSet rolls one pod at a time; rollout {r} is not expressible")


def workload_stamps(model: Resolved, eff: Effective) -> dict[str, str]:
    """What the policy pack needs from the catalog to judge a workload without the model."""
    svc, stamps = eff.service, {}
    if svc.health is not None and svc.health.slow_start:
        stamps[K8S_SLOW_START] = TRUE
    if svc.volumes:
        stamps[K8S_DATA_PATHS] = joined(v.path for v in svc.volumes)
    if model.settings.kubernetes.require_digest:
        stamps[K8S_REQUIRE_DIGEST] = TRUE
    if secrets_in_env(model, svc):
        stamps[K8S_SECRET_ENV] = svc.secret_env_reason
    if svc.backup is not None and svc.backup.none_reason:
        stamps[K8S_NO_BACKUP] = svc.backup.none_reason
    return stamps


def claims(model: Resolved, eff: Effective) -> list[core.PersistentVolumeClaimArgs]:
    return [core.PersistentVolumeClaimArgs(
        metadata=meta.ObjectMetaArgs(name=v.name, labels={NAME: eff.name}),
        spec=core.PersistentVolumeClaimSpecArgs(
            access_modes=["ReadWriteOnce"], storage_class_name=model.settings.kubernetes.storage_class,
            resources=core.VolumeResourceRequirementsArgs(
                requests={"storage": quantity_mib(eff.volume_mib(v.name))})))
        for v in eff.service.volumes]


def workloads(objs: Objects, wiring: Wiring, remotes: Mapping[str, eso.Remote], eff: Effective, comp: TierComponent,
              ns: core.Namespace, needs: Sequence[pulumi.Resource], volumes: Sequence[core.VolumeArgs],
              mounts: Sequence[core.VolumeMountArgs]) -> list[pulumi.Resource]:
    """One workload per instance of the service, each created after `needs`, with its
    PodDisruptionBudget when the rollout has one."""
    model, svc, tier = objs.model, eff.service, eff.tier
    made: list[pulumi.Resource] = []
    for inst in instances(model, eff):
        kind = "StatefulSet" if svc.stateful else "Deployment"
        notes = {**workload_stamps(model, eff),
                 **exception_annotations(review_exceptions(model, eff, kind, eff.replicas))}
        metadata = objs.metadata(inst.name, tier, inst.selector, notes or None)
        selector = meta.LabelSelectorArgs(match_labels=inst.selector)
        template = pod(objs, wiring, remotes, eff, inst, volumes, mounts)
        workload: pulumi.Resource
        if svc.stateful:
            statefulset_rollout(eff)
            workload = apps.StatefulSet(inst.name, apps.StatefulSetInitArgs(
                metadata=metadata,
                spec=apps.StatefulSetSpecArgs(
                    service_name=pods_service(svc.name), replicas=eff.replicas, selector=selector,
                    template=template,
                    volume_claim_templates=claims(model, eff),
                    persistent_volume_claim_retention_policy=(
                        apps.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                            when_deleted="Retain", when_scaled="Retain")))),
                opts=objs.opts(comp, depends_on=list(needs), protect=True))
        else:
            workload = apps.Deployment(inst.name, apps.DeploymentInitArgs(
                metadata=metadata,
                spec=apps.DeploymentSpecArgs(
                    replicas=eff.replicas, selector=selector, template=template,
                    strategy=deployment_strategy(eff))),
                opts=objs.opts(comp, depends_on=list(needs)))
        made.append(workload)
        budget = eff.rollout.budget
        if budget is not None:
            policy.PodDisruptionBudget(inst.name, policy.PodDisruptionBudgetInitArgs(
                metadata=objs.metadata(inst.name, tier, inst.selector),
                spec=policy.PodDisruptionBudgetSpecArgs(
                    max_unavailable=budget.max_unavailable, min_available=budget.min_available,
                    selector=selector)),
                opts=objs.opts(comp, depends_on=[ns]))
    return made
