"""Kubernetes backend (prod): one namespace per tier, hardened workloads, policies from the graph.

Derived from the model, nothing restated:
- a Namespace per tier, `<namespacePrefix>-<tier>`, enforcing the Pod Security Standard
  `restricted`;
- a StatefulSet (volume claim templates, claims retained, protected) for every service with
  volumes, a Deployment for the rest; the cost agent runs one Deployment per configured
  cloud provider, `cost-agent-<provider>` (env CLOUD_PROVIDER), behind one Service
  `cost-agent`;
- a ClusterIP Service named after every service with ports, so connection URLs are
  `<service>.<namespace>.svc.cluster.local` across namespaces; a headless one
  (`<service>-headless`) for StatefulSets and scraped services, so Prometheus scrapes
  every pod;
- probes from the catalog's HealthCheck, requests and limits from the effective
  resources, a restricted security context, read-only root with emptyDirs for the
  catalog's writable paths;
- credentials in one Secret per namespace that needs them, consumed via secretKeyRef;
- generated Prometheus and Grafana files as ConfigMaps (named with a content hash, so a
  change rolls the pods);
- NetworkPolicies: default deny in every namespace, one allow policy per service admitting
  exactly the sources of its edges (dependencies and Prometheus scraping) on the edge's
  port, plus the ingress controller for public services;
- a PodDisruptionBudget per workload with more than one replica, an Ingress per public
  service, never a hostPort.
Every derivation is linear in services + edges.

The package, one module per job:
- objects: names (namespaces, DNS names, claims), labels and metadata, the provider;
- credentials: the Secret per namespace, External Secrets, how containers read them;
- network: the NetworkPolicies;
- pod: the container, probes, volumes and security context;
- workloads: Deployments, StatefulSets and PodDisruptionBudgets;
- exposure: Services and Ingresses;
- backup_jobs: the backup CronJobs;
- drill_jobs: the restore drill CronJobs (with `backups.store`);
- reviews: the reviewer exceptions written as annotations.
This module drives them in the tiers' order; it reads only the resolved model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.networking import v1 as net

from ... import external_secrets as eso
from ... import rotation
from ...graph import Effective, Resolved
from ...model import Tier, backup_job, drill_job
from ...monitoring import GeneratedFiles
from ...tiers import TierComponent
from ...wiring import Wiring
from .. import StackOutputs
from .backup_jobs import BACKUP_DEADLINE_S, BACKUP_RESOURCES, BACKUP_SCRATCH_MIB, backup_cronjob
from .credentials import k8s_env, rollout_hash, secret_value, secrets_in_env, tier_secret
from .drill_jobs import drill_cronjob, gateway_ingress
from .exposure import cluster_service, headless, ingress, needs_headless
from .network import tier_policies
from .objects import (
    CREDENTIALS_SECRET,
    K8S_VERSION,
    Objects,
    backup_claim,
    host_resolver,
    literal,
    namespace,
    namespace_name,
    own_claim,
    pods_resolver,
    pods_service,
    quantity_cpu,
    quantity_mib,
)
from .pod import config_volumes
from .rbac import reader_account, tier_access
from .reviews import CHECKOV_SKIP, KUBE_SCORE_IGNORE, KUBE_SCORE_REASON, review_exceptions
from .rotation_jobs import rotation_job
from .workloads import workloads

__all__ = [  # what other modules, the docs and the tests use
    "BACKUP_DEADLINE_S", "BACKUP_RESOURCES", "BACKUP_SCRATCH_MIB", "CHECKOV_SKIP", "CREDENTIALS_SECRET",
    "K8S_VERSION", "KUBE_SCORE_IGNORE", "KUBE_SCORE_REASON", "KubernetesBackend", "backup_claim",
    "host_resolver", "k8s_env", "literal", "namespace_name", "own_claim", "pods_resolver", "pods_service",
    "quantity_cpu", "quantity_mib", "review_exceptions", "rollout_hash", "secret_value", "secrets_in_env",
]


class KubernetesBackend:
    def __init__(self, model: Resolved, tiers: Mapping[Tier, TierComponent],
                 credentials: Mapping[str, pulumi.Output[str]]) -> None:
        self.model, self.tiers = model, tiers
        self.host_of = host_resolver(model)
        self.wiring = Wiring(model.catalog, self.host_of, dict(credentials))
        self.files = GeneratedFiles(model, self.host_of, pods_resolver(model))
        self.scraped = frozenset(e.target for e in model.scrape_edges())
        """Services the scraper reaches (computed once: `service` runs per service)."""
        self.remotes = eso.remotes(model, model.catalog.credentials.values(), pulumi.get_stack())
        """With `kubernetes.externalSecrets`: where each credential lives (else empty)."""
        self.objects = Objects(model)
        self.phases = rotation.phases(model.catalog, model.settings)
        """Per store, per client: the rotation phase its Job applies (the `rotation` setting)."""
        self.namespaces: dict[Tier, core.Namespace] = {}
        self.ready: dict[Tier, list[pulumi.Resource]] = {}
        """Per tier: what a workload needs first (namespace, default deny, credentials)."""
        self.allow: dict[str, net.NetworkPolicy] = {}
        self.reads: dict[Tier, list[pulumi.Resource]] = {}
        """Per tier: the API readers' Roles and RoleBindings in its namespace (rbac.py)."""
        """Per service or backup job: its allow policy, which its pods start behind."""
        self.ingress_urls: dict[str, str] = {}
        self.drills = {e.name: d for e in model.drilled() for d in model.drill_edges() if d.source == drill_job(e.name)}
        """Per drilled service: its drill edge to the push gateway (backups.store set)."""
        for tier, comp in tiers.items():
            self._tier(tier, comp)

    def _tier(self, tier: Tier, comp: TierComponent) -> None:
        members = self.model.in_tier(tier)
        ns = namespace(self.objects, tier, comp, members)
        self.namespaces[tier] = ns
        ready: list[pulumi.Resource] = [ns]
        ready.extend(tier_policies(self.objects, tier, comp, ns, members, self.allow))
        secret = tier_secret(self.objects, self.wiring, self.remotes, tier, comp, ns, members)
        if secret is not None:
            ready.append(secret)
        self.ready[tier] = ready
        self.reads[tier] = tier_access(self.objects, tier, comp, ns)

    def service(self, eff: Effective, after: Sequence[pulumi.Resource]) -> pulumi.Resource:
        svc, tier = eff.service, eff.tier
        comp, ns = self.tiers[tier], self.namespaces[tier]
        volumes, mounts, configs = config_volumes(self.objects, self.files, eff, comp, ns)
        # Only what this workload itself needs: a constant number, plus its waits (see Objects.opts).
        own = [self.allow[svc.name]] if svc.name in self.allow else []
        needs = [*self.ready[tier], *own, *configs, *after]
        if svc.cluster_reads is not None:  # its account, and its Role where it runs (later tiers' come later)
            needs += [reader_account(self.objects, eff, comp, ns), *self.reads[tier]]
        made = workloads(self.objects, self.wiring, self.remotes, eff, comp, ns, needs, volumes, mounts)
        handle = made[0]
        if svc.grants is not None:  # its clients' credentials applied live, before they roll
            job = rotation_job(self.objects, self.wiring, self.host_of, eff, comp, ns, [*self.ready[tier], *made],
                               self.phases.get(svc.name, {}), self.remotes)
            if job is not None and len(made) == 1:
                handle = job
        if eff.backed_up:
            backup_cronjob(self.objects, self.host_of, eff, comp, ns, self.ready[tier], made[0],
                           self.allow.get(backup_job(svc.name)))
        if (edge := self.drills.get(eff.name)) is not None and (gateway := self.model.push_gateway()) is not None:
            drill_cronjob(self.objects, self.host_of, eff, edge, gateway, comp, ns, self.ready[tier])
        if svc.push_gateway:  # its side of the drill edges
            gateway_ingress(self.objects, eff, comp, ns)
        if needs_headless(eff, self.scraped):
            headless(self.objects, eff, comp, ns)
        if svc.ports:
            service = cluster_service(self.objects, eff, comp, ns, made)
            if len(made) > 1:
                handle = service
            if eff.public and (url := ingress(self.objects, eff, comp, service)) is not None:
                self.ingress_urls[eff.name] = url
        return handle

    def outputs(self) -> StackOutputs:
        model = self.model
        endpoints: dict[str, str] = {}
        for eff in model.services.values():
            first = eff.service.primary_port
            if first is not None:
                endpoints[eff.name] = f"{self.host_of(eff.name)}:{first.container}"
        # Only the Ingress hosts are reachable from outside; nothing has a host port.
        return StackOutputs(urls=self.ingress_urls, ports={}, extra={
            "namespaces": {t.value: namespace_name(model, t) for t in self.namespaces},
            "endpoints": endpoints})
