"""Objects and names: what every Kubernetes object of the stack shares (namespace,
labels, the provider, the tier as parent) and the DNS names services reach each other by."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta

from policies.optiinfra_policies.vocabulary import K8S_CLOUD_PROVIDER as PROVIDER
from policies.optiinfra_policies.vocabulary import K8S_COMPONENT as COMPONENT
from policies.optiinfra_policies.vocabulary import K8S_MANAGED_BY as MANAGED_BY
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_PART_OF as PART_OF
from policies.optiinfra_policies.vocabulary import (
    PROJECT,
    PSS,
    PULUMI_SKIP_AWAIT,
    tier_scoped_name,
)

from ...graph import Effective, Resolved
from ...model import Tier
from ...tiers import TierComponent

K8S_VERSION = "1.31"
"""The Kubernetes version the manifests are written for: the OpenAPI schema the tests
validate them against, and the Pod Security Standard version the namespaces enforce."""

CREDENTIALS_SECRET = "credentials"
SERVICE_AWAIT = {PULUMI_SKIP_AWAIT: "true"}
"""A Service proves nothing its pods' readiness has not: the workload's own await (which
the next tier waits for) already covers it. Awaiting each Service costs about 10 s, five
times in a row along the tier chain (`up` of prod: 57 s -> 14 s on a live cluster)."""
TARGET = "kubernetes"


def pods_service(service: str) -> str:
    """Name of a service's headless Service: a StatefulSet's governing Service, and the DNS
    name Prometheus discovers every pod of a scraped service by (one A record per pod)."""
    return f"{service}-headless"


def namespace_name(model: Resolved, tier: Tier) -> str:
    return tier_scoped_name(model.settings.kubernetes.namespace_prefix, tier.value)


def _service_dns(model: Resolved, service: str, name: str) -> str:
    """`<name>.<prefix>-<tier>.svc.cluster.local`: a Service `name` in `service`'s namespace."""
    return f"{name}.{namespace_name(model, model.catalog.services[service].tier)}.svc.cluster.local"


def host_resolver(model: Resolved) -> Callable[[str], str]:
    """Service DNS name of a catalog service: `<service>.<prefix>-<tier>.svc.cluster.local`."""
    return lambda service: _service_dns(model, service, service)


def pods_resolver(model: Resolved) -> Callable[[str], str]:
    """DNS name of every pod of a service (its headless Service), for per-pod scraping."""
    return lambda service: _service_dns(model, service, pods_service(service))


@dataclass(frozen=True)
class Instance:
    """One workload of a service: its name, the labels selecting its pods, extra env."""

    name: str
    selector: dict[str, str]
    env: tuple[tuple[str, str], ...] = ()


def instances(model: Resolved, eff: Effective) -> list[Instance]:
    """A `per_cloud_provider` service runs once per provider (`<name>-<provider>`, named
    so even for a single provider: adding one never renames another); every other once."""
    name = eff.name
    providers = eff.providers
    if providers:
        return [Instance(f"{name}-{p}", {NAME: name, PROVIDER: p}, (("CLOUD_PROVIDER", p),)) for p in providers]
    return [Instance(name, {NAME: name})]


def quantity_cpu(cores: float) -> str:
    """CPU in the canonical form the provider stores (whole cores as `2`, else `250m`),
    so the offline render equals what the engine keeps and a second preview is empty."""
    milli = max(1, round(cores * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def quantity_mib(mib: int) -> str:
    """A Kubernetes quantity in canonical form (config sizes such as `300M` or `1GB` are
    not all valid ones, and the provider stores `1Gi` for `1024Mi`)."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def backup_claim(service: str) -> str:
    """The claim a service's backups go to: in its namespace, never one of its own."""
    return f"{service}-backups"


def own_claim(volume: str, workload: str) -> str:
    """The claim a StatefulSet's pod 0 owns for a claim template (`<template>-<set>-0`)."""
    return f"{volume}-{workload}-0"


def literal(text: str) -> str:
    """Kubernetes expands `$(VAR)` in args and env values; `$$` escapes a `$`."""
    return text.replace("$", "$$") if "$(" in text or "$$" in text else text


class Objects:
    """The provider and the metadata every object of the stack is created with."""

    def __init__(self, model: Resolved) -> None:
        self.model = model
        k = model.settings.kubernetes
        self.provider = k8s.Provider("kubernetes", k8s.ProviderArgs(
            context=k.context, render_yaml_to_directory=k.render_yaml_to_directory,
            # A changed credential updates its Secret in place instead of replacing it (the
            # pods read it by name; a replace would delete it under them).
            enable_secret_mutable=True))

    def opts(self, comp: TierComponent, *, depends_on: list[pulumi.Resource] | None = None,
             protect: bool = False) -> pulumi.ResourceOptions:
        """A child of the tier, through the stack's provider, depending on exactly `depends_on`.

        No explicit edge to the tier before: the tier component carries it (see TierComponent)."""
        return pulumi.ResourceOptions.merge(
            comp.child_opts(depends_on=depends_on, protect=protect),
            pulumi.ResourceOptions(provider=self.provider))

    def metadata(self, name: str, tier: Tier, labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None) -> meta.ObjectMetaArgs:
        return meta.ObjectMetaArgs(
            name=name, namespace=namespace_name(self.model, tier),
            labels={PART_OF: PROJECT, COMPONENT: tier.value, MANAGED_BY: "pulumi", **(labels or {})},
            annotations=dict(annotations) if annotations else None)


def namespace(objs: Objects, tier: Tier, comp: TierComponent, members: list[Effective]) -> core.Namespace:
    """The tier's namespace, `<namespacePrefix>-<tier>`, enforcing the Pod Security
    Standard `restricted`."""
    ns_name = namespace_name(objs.model, tier)
    return core.Namespace(f"{tier.value}-namespace", core.NamespaceInitArgs(
        metadata=meta.ObjectMetaArgs(name=ns_name, labels={
            PART_OF: PROJECT, COMPONENT: tier.value, MANAGED_BY: "pulumi",
            f"{PSS}/enforce": "restricted", f"{PSS}/enforce-version": f"v{K8S_VERSION}",
            f"{PSS}/audit": "restricted", f"{PSS}/warn": "restricted"})),
        # Deleting a namespace deletes its claims whatever their retention policy, so a
        # namespace holding data is protected like the StatefulSets in it.
        opts=objs.opts(comp, protect=any(e.service.stateful for e in members)))
