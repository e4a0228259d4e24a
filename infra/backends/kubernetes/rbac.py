"""Read access to the Kubernetes API for a service whose catalog entry has `ClusterReads`
(kube-state-metrics): its own ServiceAccount, and in every tier namespace of the stack a
Role granting only list and watch of the kinds it names, bound to that account.

Never a ClusterRole: everything the reader reports lives in the stack's namespaces, and
`--namespaces` makes it list and watch per namespace, which a Role per namespace allows.

Each namespace's Role and RoleBinding are children of that namespace's tier and created with
it (`tier_access`), not dependencies of the reader: the tiers start in order, so a later
tier's namespace does not exist yet when the monitoring tier starts, and waiting for it
would be a cycle. The reader meanwhile gets 403 there and retries until the Role exists."""

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

API_READS = "optiinfra.io/api-reads"
"""The annotation beside the ServiceAccount and each Role: why the service reads the API."""


def account_name(svc: Service) -> str:
    return svc.name


def readers(model: Resolved) -> list[Effective]:
    """The enabled services that read the API (catalog `cluster_reads`)."""
    return [e for e in model.services.values() if e.service.cluster_reads is not None]


def stack_namespaces(model: Resolved) -> list[str]:
    """The tier namespaces this stack deploys (those with at least one service)."""
    return [namespace_name(model, t) for t in model.tiers()]


def cluster_read_args(model: Resolved, svc: Service) -> list[str]:
    """The reader's arguments: the stack's namespaces and the resources it may list, both
    from the catalog's `ClusterReads` (so the flags and the Roles cannot disagree)."""
    reads = svc.cluster_reads
    if reads is None:
        return []
    resources = ",".join(r for _, kinds in reads.kinds for r in kinds)
    return [reads.namespaces_flag + ",".join(stack_namespaces(model)), reads.resources_flag + resources]


def tier_access(objs: Objects, tier: Tier, comp: TierComponent, ns: core.Namespace) -> list[pulumi.Resource]:
    """In one tier's namespace: each reader's Role (list/watch of its kinds) and RoleBinding."""
    made: list[pulumi.Resource] = []
    for eff in readers(objs.model):
        svc, reads = eff.service, eff.service.cluster_reads
        assert reads is not None
        name = f"{account_name(svc)}-read"
        rules = [rbac.PolicyRuleArgs(api_groups=[group], resources=list(kinds), verbs=list(READ_VERBS))
                 for group, kinds in reads.kinds]
        role = rbac.Role(f"{name}-{tier.value}", rbac.RoleInitArgs(
            metadata=objs.metadata(name, tier, {NAME: svc.name}, {API_READS: reads.reason}), rules=rules),
            opts=objs.opts(comp, depends_on=[ns]))
        binding = rbac.RoleBinding(f"{name}-{tier.value}", rbac.RoleBindingInitArgs(
            metadata=objs.metadata(name, tier, {NAME: svc.name}),
            role_ref=rbac.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
            subjects=[rbac.SubjectArgs(kind="ServiceAccount", name=account_name(svc),
                                       namespace=namespace_name(objs.model, eff.tier))]),
            opts=objs.opts(comp, depends_on=[role]))
        made += [role, binding]
    return made


def reader_account(objs: Objects, eff: Effective, comp: TierComponent, ns: core.Namespace) -> core.ServiceAccount:
    """The reader's own ServiceAccount, in its own namespace (its token is mounted: pod.py)."""
    reads = eff.service.cluster_reads
    assert reads is not None
    account = account_name(eff.service)
    return core.ServiceAccount(f"{account}-sa", core.ServiceAccountInitArgs(
        metadata=objs.metadata(account, eff.tier, {NAME: eff.name}, {API_READS: reads.reason}),
        automount_service_account_token=True), opts=objs.opts(comp, depends_on=[ns]))
