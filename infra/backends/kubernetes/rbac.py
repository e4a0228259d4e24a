"""Read access to the Kubernetes API for a service whose catalog entry has `ClusterReads`:
its own ServiceAccount, and in every tier namespace of the stack a Role granting only list
and watch of the kinds it names, bound to that account. Never a ClusterRole."""

from __future__ import annotations

import pulumi
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.rbac import v1 as rbac

from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME

from ...graph import Effective, Resolved
from ...model import Service, Tier
from ...tiers import TierComponent
from .objects import Objects, namespace_name

READ_VERBS = ("list", "watch")
"""All a reader gets: no get of a single object by name, no create, update, patch or delete."""


def account_name(svc: Service) -> str:
    return svc.name


def stack_namespaces(model: Resolved) -> list[str]:
    """The tier namespaces this stack deploys (those with at least one service)."""
    return [namespace_name(model, t) for t in Tier if model.in_tier(t)]


def cluster_read_args(model: Resolved, svc: Service) -> list[str]:
    """The reader's namespaces argument (`ClusterReads.namespaces_flag`): the stack's namespaces."""
    if svc.cluster_reads is None:
        return []
    return [svc.cluster_reads.namespaces_flag + ",".join(stack_namespaces(model))]


def cluster_reader(objs: Objects, eff: Effective, comp: TierComponent, ns: core.Namespace,
                   namespaces: dict[Tier, core.Namespace]) -> list[pulumi.Resource]:
    """The reader's ServiceAccount in its own namespace and a Role + RoleBinding in each tier namespace."""
    svc = eff.service
    reads = svc.cluster_reads
    assert reads is not None
    account = account_name(svc)
    sa = core.ServiceAccount(f"{account}-sa", core.ServiceAccountInitArgs(
        metadata=objs.metadata(account, eff.tier, {NAME: svc.name}, {"optiinfra.io/api-reads": reads.reason}),
        automount_service_account_token=True), opts=objs.opts(comp, depends_on=[ns]))
    made: list[pulumi.Resource] = [sa]
    rules = [rbac.PolicyRuleArgs(api_groups=[group], resources=list(kinds), verbs=list(READ_VERBS))
             for group, kinds in reads.kinds]
    for tier, tier_ns in namespaces.items():
        name = f"{account}-read"
        role = rbac.Role(f"{account}-read-{tier.value}", rbac.RoleInitArgs(
            metadata=objs.metadata(name, tier, {NAME: svc.name}), rules=rules),
            opts=objs.opts(comp, depends_on=[tier_ns]))
        binding = rbac.RoleBinding(f"{account}-read-{tier.value}", rbac.RoleBindingInitArgs(
            metadata=objs.metadata(name, tier, {NAME: svc.name}),
            role_ref=rbac.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
            subjects=[rbac.SubjectArgs(kind="ServiceAccount", name=account,
                                       namespace=namespace_name(objs.model, eff.tier))]),
            opts=objs.opts(comp, depends_on=[role, sa]))
        made += [role, binding]
    return made
