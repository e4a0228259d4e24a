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
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import posixpath
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps import v1 as apps
from pulumi_kubernetes.batch import v1 as batch
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.networking import v1 as net
from pulumi_kubernetes.policy import v1 as policy

from policies.optiinfra_policies.vocabulary import (
    K8S_ANNOTATION,
    K8S_BACKUP_OF,
    K8S_BACKUP_TARGET,
    K8S_CREDENTIALS_ROLLOUT,
    K8S_DATA_PATHS,
    K8S_NO_BACKUP,
    K8S_PUBLIC,
    K8S_REQUIRE_DIGEST,
    K8S_SECRET_ENV,
    K8S_SLOW_START,
    PROJECT,
    PSS,
    PULUMI_SKIP_AWAIT,
    TRUE,
    joined,
    k8s_port_key,
    tier_scoped_name,
)
from policies.optiinfra_policies.vocabulary import K8S_CLOUD_PROVIDER as PROVIDER
from policies.optiinfra_policies.vocabulary import K8S_COMPONENT as COMPONENT
from policies.optiinfra_policies.vocabulary import K8S_MANAGED_BY as MANAGED_BY
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_NAMESPACE_NAME as NAMESPACE_NAME
from policies.optiinfra_policies.vocabulary import K8S_PART_OF as PART_OF
from policies.optiinfra_policies.vocabulary import K8S_SECRET_KEYS as SECRET_KEYS

from .. import backup as backups
from .. import external_secrets as eso
from ..graph import Edge, Effective, Model
from ..model import (
    LOG_MIB,
    SECRET_DIR,
    Dsn,
    EnvValue,
    Resources,
    Secret,
    Service,
    Tier,
    Url,
    backup_job,
)
from ..monitoring import GeneratedFiles
from ..tiers import TierComponent
from ..wiring import PASSWORD, Embedded, Wiring, credential_refs, login
from . import StackOutputs

K8S_VERSION = "1.31"
"""The Kubernetes version the manifests are written for: the OpenAPI schema the tests
validate them against, and the Pod Security Standard version the namespaces enforce."""

CREDENTIALS_SECRET = "credentials"
SERVICE_AWAIT = {PULUMI_SKIP_AWAIT: "true"}
"""A Service proves nothing its pods' readiness has not: the workload's own await (which
the next tier waits for) already covers it. Awaiting each Service costs about 10 s, five
times in a row along the tier chain (`up` of prod: 57 s -> 14 s on a live cluster)."""
TARGET = "kubernetes"


def _distinct(edges: list[Edge]) -> list[Edge]:
    """One edge per (source, target, port): a service the scraper both scrapes and talks to
    (the notifier) is one NetworkPolicy rule, not two identical ones."""
    return list({(e.source, e.target, e.port): e for e in edges}.values())


def k8s_env(service: Service) -> list[tuple[str, EnvValue]]:
    """The catalog's environment as Kubernetes sets it: what a SecretFile replaces gives way
    to the file's path variable and the file's own variables."""
    replaced = {name for f in service.secret_files for name in f.replaces}
    env: list[tuple[str, EnvValue]] = [(k, v) for k, v in service.env if k not in replaced]
    for f in service.secret_files:
        env.extend(f.env)
        if f.file_env:
            env.append((f.file_env, f.path))
    return env


def secret_value(model: Model, value: EnvValue) -> bool:
    """Whether an environment value carries a credential (a Secret, or a URL or DSN that
    embeds a password)."""
    if isinstance(value, Secret):
        return True
    if isinstance(value, Url | Dsn):
        conn = model.catalog.services[value.service].connection
        template = value.template if isinstance(value, Dsn) else conn.template if conn else ""
        return "{password}" in template and login(conn, value)[1] is not None
    return False


def secrets_in_env(model: Model, service: Service) -> bool:
    """Whether the container still takes a credential from an environment variable on
    Kubernetes (the image reads no file for it): the catalog must say why (`secret_env_reason`)."""
    if not any(isinstance(v, Secret | Url | Dsn) and secret_value(model, v) for _, v in k8s_env(service)):
        return False
    if not service.secret_env_reason:
        raise ValueError(f"{service.name}: takes a secret from the environment on Kubernetes; mount it as a file "
                         "(catalog SecretFile) or write why the image cannot read one (secret_env_reason)")
    return True


ROLLOUT_CONTEXT = b"optiinfra.io/credentials-rollout/v1"


def rollout_hash(service: str, values: Mapping[str, str]) -> str:
    """HMAC-SHA256 keyed by the credentials themselves (length-prefixed, by id), over the
    service's name, truncated to 64 bits. It changes when any of them changes; without the
    values it is a random string, and no single value can be read or tested from it apart
    from the others (each generated credential has ~190 bits; supplied ones are at least
    12 characters and no known default)."""
    key = b"".join(len(v.encode()).to_bytes(4, "big") + v.encode() for _, v in sorted(values.items()))
    return hmac.new(key, ROLLOUT_CONTEXT + b"\0" + service.encode(), hashlib.sha256).hexdigest()[:16]


HIGH_UID = 10000
"""checkov CKV_K8S_40 and kube-score want UIDs and GIDs of at least this (no host user clash)."""

KUBE_SCORE_IGNORE = "kube-score/ignore"
KUBE_SCORE_REASON = f"{K8S_ANNOTATION}/kube-score."
"""`optiinfra.io/kube-score.<check>`: why kube-score's `<check>` is ignored on this object
(kube-score's own annotation takes only the check names)."""
CHECKOV_SKIP = "checkov.io/skip"
"""`checkov.io/skip<N>: CKV_K8S_<id>=<reason>`, checkov's own skip annotation."""


@dataclass(frozen=True)
class Exception_:
    """A reviewer finding accepted on one object, with the catalog fact that justifies it."""

    checkov: tuple[str, ...]
    kube_score: tuple[str, ...]
    reason: str


def review_exceptions(model: Model, eff: Effective, kind: str, replicas: int) -> list[Exception_]:
    """The checkov and kube-score findings this workload keeps, each with its reason, from
    the catalog and the stack (docs/production.md lists them)."""
    svc, out = eff.service, []
    if "@sha256:" not in eff.image:
        out.append(Exception_(("CKV_K8S_43",), (), (
            f"pinned to a version tag ({eff.image.rsplit(':', 1)[-1]}); pin a digest with "
            f"services.{svc.name}.image and kubernetes.requireDigest")))
    if svc.uid < HIGH_UID:
        out.append(Exception_(("CKV_K8S_40",), ("container-security-context-user-group-id",), (
            f"runs as UID {svc.uid}, the image's own user, which owns the image's directories")))
    if not svc.read_only_root:
        out.append(Exception_(("CKV_K8S_22",), ("container-security-context-readonlyrootfilesystem",),
                              f"writable root: {svc.read_only_reason}"))
    if secrets_in_env(model, svc):
        out.append(Exception_(("CKV_K8S_35",), (), f"secrets in env: {svc.secret_env_reason}"))
    h = svc.health
    if h is not None and h.live is None and not svc.ports:
        out.append(Exception_((), ("pod-probes-identical",), (
            "no Service routes to it, so readiness only paces a rollout; the one check that "
            "proves it works also proves it alive")))
    if kind == "Deployment" and replicas < 2:
        why = (f"one instance: {svc.exclusive}" if svc.exclusive else
               "one instance per cloud provider in this stack" if svc.per_cloud_provider else
               "the catalog runs one instance; a rolling update with surge keeps it available"
               if not svc.scalable else "this stack's replicas: 1")
        out.append(Exception_((), ("deployment-replicas",), why))
    # A Service targets it: kube-score wants a rolling update.
    if kind == "Deployment" and eff.rollout.strategy == "Recreate" and svc.ports:
        out.append(Exception_((), ("deployment-strategy",), (
            f"Recreate, never two at once: {svc.exclusive}; a short gap in its Service while it restarts")))
    if replicas > 1:
        out.append(Exception_((), (f"{kind.lower()}-has-host-podantiaffinity",), (
            "topologySpreadConstraints spread the replicas over zones and hosts (ScheduleAnyway, "
            "so a full node never blocks a rollout)")))
    return out


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


def backup_exceptions(image: str, uid: int) -> list[Exception_]:
    """The reviewer findings a backup CronJob keeps, each with its reason."""
    out = []
    if "@sha256:" not in image:
        out.append(Exception_(("CKV_K8S_43",), (), (
            f"pinned to a version tag ({image.rsplit(':', 1)[-1]}), the image of the service it backs up "
            "or the catalog's client image")))
    if uid < HIGH_UID:
        out.append(Exception_(("CKV_K8S_40",), ("container-security-context-user-group-id",), (
            f"runs as UID {uid}, the image's own user, so the files it writes belong to the service's user")))
    return out


def exception_annotations(exceptions: Sequence[Exception_]) -> dict[str, str]:
    out: dict[str, str] = {}
    skips = [(c, x.reason) for x in exceptions for c in x.checkov]
    for i, (check, reason) in enumerate(skips, start=1):
        out[f"{CHECKOV_SKIP}{i}"] = f"{check}={reason}"
    ignored = [(c, x.reason) for x in exceptions for c in x.kube_score]
    if ignored:
        out[KUBE_SCORE_IGNORE] = ",".join(c for c, _ in ignored)
        out.update({f"{KUBE_SCORE_REASON}{c}": reason for c, reason in ignored})
    return out


STARTUP_GRACE = 10
"""A startup probe allows this many times the catalog's start period before liveness
takes over (slow first starts: initdb, ClickHouse on a fresh volume)."""


def pods_service(service: str) -> str:
    """Name of a service's headless Service: a StatefulSet's governing Service, and the DNS
    name Prometheus discovers every pod of a scraped service by (one A record per pod)."""
    return f"{service}-headless"


def namespace_name(model: Model, tier: Tier) -> str:
    return tier_scoped_name(model.settings.kubernetes.namespace_prefix, tier.value)


def _service_dns(model: Model, service: str, name: str) -> str:
    """`<name>.<prefix>-<tier>.svc.cluster.local`: a Service `name` in `service`'s namespace."""
    return f"{name}.{namespace_name(model, model.catalog.services[service].tier)}.svc.cluster.local"


def host_resolver(model: Model) -> Callable[[str], str]:
    """Service DNS name of a catalog service: `<service>.<prefix>-<tier>.svc.cluster.local`."""
    return lambda service: _service_dns(model, service, service)


def pods_resolver(model: Model) -> Callable[[str], str]:
    """DNS name of every pod of a service (its headless Service), for per-pod scraping."""
    return lambda service: _service_dns(model, service, pods_service(service))


def needs_headless(eff: Effective, scraped: Set[str]) -> bool:
    """A StatefulSet (its pods' stable names) and every scraped service with ports (the
    scraper reaches each pod: replicas and per-provider instances are separate series)."""
    return bool(eff.service.ports) and (eff.service.stateful or eff.name in scraped)


@dataclass(frozen=True)
class Instance:
    """One workload of a service: its name, the labels selecting its pods, extra env."""

    name: str
    selector: dict[str, str]
    env: tuple[tuple[str, str], ...] = ()


def instances(model: Model, eff: Effective) -> list[Instance]:
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


SECCOMP = core.SeccompProfileArgs(type="RuntimeDefault")


def container_security(read_only: bool, cap_add: Sequence[str] = ()) -> core.SecurityContextArgs:
    """The restricted container security context every pod of the stack runs under."""
    return core.SecurityContextArgs(
        allow_privilege_escalation=False, privileged=False, run_as_non_root=True,
        read_only_root_filesystem=read_only, seccomp_profile=SECCOMP,
        capabilities=core.CapabilitiesArgs(drop=["ALL"], add=list(cap_add) or None))


def pod_security(uid: int) -> core.PodSecurityContextArgs:
    """The pod side of it: non-root as `uid` (user, group, volume group)."""
    return core.PodSecurityContextArgs(
        run_as_non_root=True, run_as_user=uid, run_as_group=uid, fs_group=uid,
        fs_group_change_policy="OnRootMismatch", seccomp_profile=SECCOMP)


BACKUP_RESOURCES = Resources(memory_mib=128, cpu=0.05, memory_limit_mib=512, cpu_limit=0.5)
"""What a backup job's client asks for: it streams, so memory stays flat whatever the data size."""
BACKUP_SCRATCH_MIB = 64
"""The job's /tmp (a client's temporary files; the backup itself goes to the target)."""
BACKUP_DEADLINE_S = 3600
"""A backup run that takes longer is killed (the next schedule tries again)."""


def backup_claim(service: str) -> str:
    """The claim a service's backups go to: in its namespace, never one of its own."""
    return f"{service}-backups"


def own_claim(volume: str, workload: str) -> str:
    """The claim a StatefulSet's pod 0 owns for a claim template (`<template>-<set>-0`)."""
    return f"{volume}-{workload}-0"


def _literal(text: str) -> str:
    """Kubernetes expands `$(VAR)` in args and env values; `$$` escapes a `$`."""
    return text.replace("$", "$$") if "$(" in text or "$$" in text else text


def _secret_key(service: Service, env_name: str, value: object) -> str:
    """Key in the namespace's Secret: shared where the value is the same for every
    consumer (a credential, a connection URL), per service otherwise."""
    if isinstance(value, Secret):
        return value.credential
    if isinstance(value, Url):  # one key per role a URL logs in as
        return f"{value.credential or value.service}-url"
    return f"{service.name}.{env_name}"


class _ProbeAction:
    """A check as a Kubernetes probe's action (the keyword of core.ProbeArgs it sets)."""

    def http(self, path: str, port: int, expect: str | None) -> dict[str, object]:
        # A probe can check the status only; the body match (`expect`) is Docker's.
        return {"http_get": core.HTTPGetActionArgs(path=path, port=port)}

    def tcp(self, port: int) -> dict[str, object]:
        return {"tcp_socket": core.TCPSocketActionArgs(port=port)}

    def command(self, argv: tuple[str, ...]) -> dict[str, object]:
        return {"exec_": core.ExecActionArgs(command=list(argv))}


def probes(service: Service) -> dict[str, core.ProbeArgs]:
    """readiness from the catalog's HealthCheck `probe`, liveness from its `live` check;
    a slow starter's startup probe waits for readiness before liveness takes over."""
    h = service.health
    if h is None:
        return {}
    ready, live = h.probe.render(service, _ProbeAction()), h.liveness.render(service, _ProbeAction())

    def probe(action: dict[str, object], *, failures: int, delay: int | None = None) -> core.ProbeArgs:
        return core.ProbeArgs(**action, period_seconds=h.interval_s,  # type: ignore[arg-type]
                              timeout_seconds=h.timeout_s, failure_threshold=failures,
                              initial_delay_seconds=delay)

    out = {"readiness_probe": probe(ready, failures=h.retries),
           "liveness_probe": probe(live, failures=h.retries, delay=None if h.slow_start else h.start_period_s)}
    if h.slow_start:
        out["startup_probe"] = probe(
            ready, failures=max(h.retries, -(-h.start_period_s * STARTUP_GRACE // h.interval_s)))
    return out


def _peer(model: Model, service: str) -> net.NetworkPolicyPeerArgs:
    """The pods of one service (every instance) in its namespace; a backup job's pods in
    the namespace of the service it backs up."""
    owner = service if service in model.services else next(
        e.target for e in model.backup_edges() if e.source == service)
    ns = namespace_name(model, model.services[owner].tier)
    return net.NetworkPolicyPeerArgs(
        pod_selector=meta.LabelSelectorArgs(match_labels={NAME: service}),
        namespace_selector=meta.LabelSelectorArgs(match_labels={NAMESPACE_NAME: ns}))


def _inside(cidr: str, excepted: Sequence[str]) -> list[str]:
    """The excepted ranges that lie inside `cidr` (an ipBlock's `except` must)."""
    block = ipaddress.ip_network(cidr)
    out = []
    for x in excepted:
        net_x = ipaddress.ip_network(x)
        if net_x.version == block.version and net_x.subnet_of(block):  # type: ignore[arg-type]
            out.append(x)
    return out


def _edge_port(model: Model, e: Edge) -> net.NetworkPolicyPortArgs | None:
    if not e.port:  # a dependency on a service without ports carries no traffic
        return None
    port = model.services[e.target].service.port(e.port)
    return net.NetworkPolicyPortArgs(port=port.container, protocol=port.protocol.upper())


class KubernetesBackend:
    def __init__(self, model: Model, tiers: Mapping[Tier, TierComponent],
                 credentials: Mapping[str, pulumi.Output[str]]) -> None:
        self.model, self.tiers = model, tiers
        self.host_of = host_resolver(model)
        self.wiring = Wiring(model.catalog, self.host_of, dict(credentials))
        self.files = GeneratedFiles(model, self.host_of, pods_resolver(model))
        self.scraped = frozenset(e.target for e in model.scrape_edges())
        """Services the scraper reaches (computed once: `service` runs per service)."""
        self.remotes = eso.remotes(model, model.catalog.credentials.values(), pulumi.get_stack())
        """With `kubernetes.externalSecrets`: where each credential lives (else empty)."""
        k = model.settings.kubernetes
        self.provider = k8s.Provider("kubernetes", k8s.ProviderArgs(
            context=k.context, render_yaml_to_directory=k.render_yaml_to_directory,
            # A changed credential updates its Secret in place instead of replacing it (the
            # pods read it by name; a replace would delete it under them).
            enable_secret_mutable=True))
        self.namespaces: dict[Tier, core.Namespace] = {}
        self.ready: dict[Tier, list[pulumi.Resource]] = {}
        """Per tier: what a workload needs first (namespace, default deny, credentials)."""
        self.env: dict[str, list[core.EnvVarArgs]] = {}
        self.args: dict[str, list[str]] = {}
        self.allow: dict[str, net.NetworkPolicy] = {}
        self.ingress_urls: dict[str, str] = {}
        for tier, comp in tiers.items():
            self._tier(tier, comp)

    # ---- per tier -----------------------------------------------------------------
    def _opts(self, comp: TierComponent, *, depends_on: list[pulumi.Resource] | None = None,
              protect: bool = False) -> pulumi.ResourceOptions:
        """A child of the tier, through the stack's provider, depending on exactly `depends_on`.

        No explicit edge to the tier before: the tier component carries it (see TierComponent)."""
        return pulumi.ResourceOptions.merge(
            comp.child_opts(depends_on=depends_on, protect=protect),
            pulumi.ResourceOptions(provider=self.provider))

    def _meta(self, name: str, tier: Tier, labels: Mapping[str, str] | None = None,
              annotations: Mapping[str, str] | None = None) -> meta.ObjectMetaArgs:
        return meta.ObjectMetaArgs(
            name=name, namespace=namespace_name(self.model, tier),
            labels={PART_OF: PROJECT, COMPONENT: tier.value, MANAGED_BY: "pulumi", **(labels or {})},
            annotations=dict(annotations) if annotations else None)

    def _tier(self, tier: Tier, comp: TierComponent) -> None:
        model = self.model
        members = model.in_tier(tier)
        ns_name = namespace_name(model, tier)
        ns = core.Namespace(f"{tier.value}-namespace", core.NamespaceInitArgs(
            metadata=meta.ObjectMetaArgs(name=ns_name, labels={
                PART_OF: PROJECT, COMPONENT: tier.value, MANAGED_BY: "pulumi",
                f"{PSS}/enforce": "restricted", f"{PSS}/enforce-version": f"v{K8S_VERSION}",
                f"{PSS}/audit": "restricted", f"{PSS}/warn": "restricted"})),
            # Deleting a namespace deletes its claims whatever their retention policy, so a
            # namespace holding data is protected like the StatefulSets in it.
            opts=self._opts(comp, protect=any(e.service.stateful for e in members)))
        self.namespaces[tier] = ns
        ready: list[pulumi.Resource] = [ns]
        ready.extend(self._policies(tier, comp, ns, members))
        secret = self._credentials(tier, comp, ns, members)
        if secret is not None:
            ready.append(secret)
        self.ready[tier] = ready

    def _policies(self, tier: Tier, comp: TierComponent, ns: core.Namespace,
                  members: list[Effective]) -> list[pulumi.Resource]:
        """Default deny both ways, DNS to the cluster DNS pods, then one allow policy per
        service: exactly its edges, both ways, and the outside egress the catalog declares.
        Returns the tier-wide ones (what every pod of the tier starts behind)."""
        model, k = self.model, self.model.settings.kubernetes
        opts = self._opts(comp, depends_on=[ns])
        NP, spec = net.NetworkPolicy, net.NetworkPolicySpecArgs
        everything = meta.LabelSelectorArgs()
        deny = NP(f"{tier.value}-default-deny", net.NetworkPolicyInitArgs(
            metadata=self._meta("default-deny", tier),
            spec=spec(pod_selector=everything, policy_types=["Ingress", "Egress"])),
            opts=opts)
        dns_ports = [net.NetworkPolicyPortArgs(port=53, protocol=p) for p in ("UDP", "TCP")]
        dns = NP(f"{tier.value}-allow-dns", net.NetworkPolicyInitArgs(
            metadata=self._meta("allow-dns-egress", tier),
            spec=spec(pod_selector=everything, policy_types=["Egress"], egress=[
                net.NetworkPolicyEgressRuleArgs(ports=dns_ports, to=[net.NetworkPolicyPeerArgs(
                    namespace_selector=meta.LabelSelectorArgs(match_labels={NAMESPACE_NAME: k.dns.namespace}),
                    pod_selector=meta.LabelSelectorArgs(match_labels=dict(k.dns.pod_labels)))])])),
            opts=opts)
        made: list[pulumi.Resource] = [deny, dns]
        ingress_ns = k.ingress.controller_namespace
        backup_edges = [e for e in model.backup_edges() if model.services[e.target].tier is tier]
        for eff in members:
            rules: list[net.NetworkPolicyIngressRuleArgs] = []
            for e in _distinct([*model.in_edges(eff.name), *(b for b in backup_edges if b.target == eff.name)]):
                port = _edge_port(model, e)
                if port is not None:
                    rules.append(net.NetworkPolicyIngressRuleArgs(
                        from_=[_peer(model, e.source)], ports=[port]))
            primary = eff.service.primary_port
            if eff.public and primary is not None:
                rules.append(net.NetworkPolicyIngressRuleArgs(
                    from_=[net.NetworkPolicyPeerArgs(namespace_selector=meta.LabelSelectorArgs(
                        match_labels={NAMESPACE_NAME: ingress_ns}))],
                    ports=[net.NetworkPolicyPortArgs(port=primary.container, protocol=primary.protocol.upper())]))
            egress: list[net.NetworkPolicyEgressRuleArgs] = []
            for e in _distinct(model.out_edges(eff.name)):
                port = _edge_port(model, e)
                if port is not None:
                    egress.append(net.NetworkPolicyEgressRuleArgs(to=[_peer(model, e.target)], ports=[port]))
            for out in model.outside(eff):
                egress.append(net.NetworkPolicyEgressRuleArgs(
                    to=[net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=cidr, except_=list(
                        _inside(cidr, k.outside_except)) or None)) for cidr in k.outside_cidrs],
                    ports=[net.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in out.ports]))
            types = (["Ingress"] if rules else []) + (["Egress"] if egress else [])
            if not types:
                continue
            self.allow[eff.name] = NP(f"allow-{eff.name}", net.NetworkPolicyInitArgs(
                metadata=self._meta(f"allow-{eff.name}", tier, {NAME: eff.name}),
                spec=spec(pod_selector=meta.LabelSelectorArgs(match_labels={NAME: eff.name}),
                          policy_types=types, ingress=rules or None, egress=egress or None)),
                opts=opts)
        for e in backup_edges:  # a backup job reaches its service's port, nothing else
            port = _edge_port(model, e)
            assert port is not None
            self.allow[e.source] = NP(f"allow-{e.source}", net.NetworkPolicyInitArgs(
                metadata=self._meta(f"allow-{e.source}", tier, {NAME: e.source}),
                spec=spec(pod_selector=meta.LabelSelectorArgs(match_labels={NAME: e.source}),
                          policy_types=["Egress"],
                          egress=[net.NetworkPolicyEgressRuleArgs(to=[_peer(model, e.target)], ports=[port])])),
                opts=opts)
        return made

    def _credentials(self, tier: Tier, comp: TierComponent, ns: core.Namespace,
                     members: list[Effective]) -> pulumi.Resource | None:
        """Every secret value of the tier's containers goes into one Secret; a container
        reads it through secretKeyRef (an argument through `$(VAR)` of such an env var).
        With `kubernetes.externalSecrets` the operator writes that Secret (same name, same
        keys) from an ExternalSecret, and no value passes through the program."""
        shapes: dict[str, Embedded] = {}
        for eff in members:
            svc = eff.service
            env: list[core.EnvVarArgs] = []
            for name, raw in k8s_env(svc):
                value = self.wiring.shape(raw, svc)
                if isinstance(value, str):
                    env.append(core.EnvVarArgs(name=name, value=_literal(value)))
                    continue
                key = _secret_key(svc, name, raw)
                shapes.setdefault(key, value)
                env.append(self._secret_env(name, key))
            args: list[str] = []
            for i, raw_arg in enumerate(svc.command):
                arg = self.wiring.shape(raw_arg, svc)
                if isinstance(arg, str):
                    args.append(_literal(arg))
                    continue
                var, key = f"OPTIINFRA_ARG_{i}", f"{svc.name}.arg{i}"
                shapes.setdefault(key, arg)
                env.append(self._secret_env(var, key))
                args.append(f"$({var})")
            args.extend(_literal(a) for a in eff.sized_args)
            for f in svc.secret_files:  # mounted from the same Secret (see _pod)
                shapes.setdefault(f.credential, Embedded(PASSWORD, f.credential))
            b = svc.backup
            if eff.backed_up and b is not None and b.credential:  # the backup job's file
                shapes.setdefault(b.credential, Embedded(PASSWORD, b.credential))
            self.env[svc.name], self.args[svc.name] = env, args
        if not shapes:
            return None
        # The key names (never the values) also as an annotation: the whole of stringData
        # is secret, so offline renders show the Secret's shape from this.
        metadata = self._meta(CREDENTIALS_SECRET, tier, annotations={SECRET_KEYS: ",".join(sorted(shapes))})
        es = eso.settings_of(self.model)
        if es is not None:
            return k8s.apiextensions.CustomResource(
                f"{tier.value}-credentials", api_version=eso.API_VERSION, kind=eso.KIND, metadata=metadata,
                spec=eso.spec(CREDENTIALS_SECRET, shapes, self.remotes, es.refresh_interval),
                opts=self._opts(comp, depends_on=[ns]))
        data: dict[str, pulumi.Input[str]] = {key: self.wiring.fill(shape) for key, shape in shapes.items()}
        return core.Secret(f"{tier.value}-credentials", core.SecretInitArgs(
            metadata=metadata, type="Opaque", string_data=data),
            opts=self._opts(comp, depends_on=[ns]))

    @staticmethod
    def _secret_env(name: str, key: str) -> core.EnvVarArgs:
        return core.EnvVarArgs(name=name, value_from=core.EnvVarSourceArgs(
            secret_key_ref=core.SecretKeySelectorArgs(name=CREDENTIALS_SECRET, key=key)))

    # ---- per service ----------------------------------------------------------------
    def _config_volumes(self, eff: Effective, comp: TierComponent
                        ) -> tuple[list[core.VolumeArgs], list[core.VolumeMountArgs],
                                   list[pulumi.Resource]]:
        """The catalog's generated files in one ConfigMap, mounted per directory."""
        svc = eff.service
        if not svc.files:
            return [], [], []
        data: dict[str, str] = {}
        dirs: dict[str, list[core.KeyToPathArgs]] = {}
        for f in svc.files:
            directory, base = posixpath.split(f.path)
            if base in data:
                raise ValueError(f"{svc.name}: two generated files are named {base}")
            data[base] = self.files.content(f)
            dirs.setdefault(directory, []).append(core.KeyToPathArgs(key=base, path=base))
        digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(data.items())).encode()).hexdigest()[:10]
        name = f"{svc.name}-config-{digest}"
        cm = core.ConfigMap(f"{svc.name}-config", core.ConfigMapInitArgs(
            metadata=self._meta(name, eff.tier, {NAME: svc.name}), data=data),
            opts=self._opts(comp, depends_on=[self.namespaces[eff.tier]]))
        volumes, mounts = [], []
        for i, (directory, items) in enumerate(sorted(dirs.items())):
            vol = f"config-{i}"
            volumes.append(core.VolumeArgs(name=vol, config_map=core.ConfigMapVolumeSourceArgs(
                name=name, items=items)))
            mounts.append(core.VolumeMountArgs(name=vol, mount_path=directory, read_only=True))
        return volumes, mounts, [cm]

    def _pod(self, eff: Effective, inst: Instance, volumes: list[core.VolumeArgs],
             mounts: list[core.VolumeMountArgs]) -> core.PodTemplateSpecArgs:
        svc, res = eff.service, eff.resources
        volumes, mounts = list(volumes), list(mounts)
        if svc.read_only_root:
            for i, path in enumerate(svc.writable_paths):
                volumes.append(core.VolumeArgs(name=f"writable-{i}", empty_dir=core.EmptyDirVolumeSourceArgs(
                    size_limit=quantity_mib(svc.scratch_mib))))
                mounts.append(core.VolumeMountArgs(name=f"writable-{i}", mount_path=path))
        mounts.extend(core.VolumeMountArgs(name=v.name, mount_path=v.path) for v in svc.volumes)
        if svc.secret_files:
            # Read-only files, readable by the pod's group (fsGroup) only.
            volumes.append(core.VolumeArgs(name="credentials", secret=core.SecretVolumeSourceArgs(
                secret_name=CREDENTIALS_SECRET, default_mode=0o440,
                items=[core.KeyToPathArgs(key=f.credential, path=f.credential)
                       for f in {f.credential: f for f in svc.secret_files}.values()])))
            mounts.append(core.VolumeMountArgs(name="credentials", mount_path=SECRET_DIR, read_only=True))
        env = [core.EnvVarArgs(name=k, value=v) for k, v in inst.env] + self.env[svc.name]
        if svc.external_url_env and eff.external_url:
            env.append(core.EnvVarArgs(name=svc.external_url_env, value=eff.external_url + "/"))
        container = core.ContainerArgs(
            name=svc.name,
            image=eff.image,
            # Always: the kubelet checks the registry credentials on every start, so a pod on a
            # node that cached a private image cannot run it without imagePullSecrets.
            image_pull_policy="Always",
            # The catalog's command is the image's CMD (Docker `command`): Kubernetes `args`.
            args=self.args[svc.name] or None,
            env=env or None,
            ports=[core.ContainerPortArgs(name=p.name, container_port=p.container, protocol=p.protocol.upper())
                   for p in svc.ports] or None,
            resources=core.ResourceRequirementsArgs(
                requests={"cpu": quantity_cpu(res.cpu), "memory": quantity_mib(res.memory_mib),
                          "ephemeral-storage": quantity_mib(svc.ephemeral_mib)},
                limits={"cpu": quantity_cpu(res.limits(TARGET)[1]), "memory": quantity_mib(res.limits(TARGET)[0]),
                        "ephemeral-storage": quantity_mib(2 * svc.ephemeral_mib)}),
            security_context=container_security(svc.read_only_root, [c for c, _ in svc.cap_add]),
            volume_mounts=mounts or None,
            **probes(svc),  # type: ignore[arg-type]
        )
        spread = None
        if eff.replicas > 1:
            # Over zones, then hosts: one zone or node lost takes at most its share of replicas.
            spread = [core.TopologySpreadConstraintArgs(
                max_skew=1, topology_key=key, when_unsatisfiable="ScheduleAnyway",
                label_selector=meta.LabelSelectorArgs(match_labels=inst.selector))
                for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]
        pull_secrets = [core.LocalObjectReferenceArgs(name=n) for n in eff.pull_secrets] or None
        return core.PodTemplateSpecArgs(
            metadata=meta.ObjectMetaArgs(labels={PART_OF: PROJECT, COMPONENT: eff.tier.value, **inst.selector},
                                         annotations=self._rollout(svc)),
            spec=core.PodSpecArgs(
                containers=[container],
                volumes=volumes or None,
                automount_service_account_token=False,
                enable_service_links=False,
                security_context=pod_security(svc.uid),
                topology_spread_constraints=spread,
                image_pull_secrets=pull_secrets,
            ))

    def _rollout(self, svc: Service) -> dict[str, pulumi.Input[str]] | None:
        """The pod template's credentials hash (K8S_CREDENTIALS_ROLLOUT), plain: it reveals nothing."""
        refs = sorted(credential_refs(self.model.catalog, svc) | {f.credential for f in svc.secret_files})
        if not refs:
            return None
        if self.remotes:  # the values never reach the program: key it by where they live
            return {K8S_CREDENTIALS_ROLLOUT: eso.rollout_digest(svc.name, {r: self.remotes[r] for r in refs})}
        values = pulumi.Output.all(*(self.wiring.credentials[r] for r in refs))
        digest = values.apply(lambda vs: rollout_hash(svc.name, dict(zip(refs, vs, strict=True))))
        return {K8S_CREDENTIALS_ROLLOUT: pulumi.Output.unsecret(digest)}

    def _workload_stamps(self, eff: Effective) -> dict[str, str]:
        """What the policy pack needs from the catalog to judge a workload without the model."""
        svc, stamps = eff.service, {}
        if svc.health is not None and svc.health.slow_start:
            stamps[K8S_SLOW_START] = TRUE
        if svc.volumes:
            stamps[K8S_DATA_PATHS] = joined(v.path for v in svc.volumes)
        if self.model.settings.kubernetes.require_digest:
            stamps[K8S_REQUIRE_DIGEST] = TRUE
        if secrets_in_env(self.model, svc):
            stamps[K8S_SECRET_ENV] = svc.secret_env_reason
        if svc.backup is not None and svc.backup.none_reason:
            stamps[K8S_NO_BACKUP] = svc.backup.none_reason
        return stamps

    def _claims(self, eff: Effective) -> list[core.PersistentVolumeClaimArgs]:
        return [core.PersistentVolumeClaimArgs(
            metadata=meta.ObjectMetaArgs(name=v.name, labels={NAME: eff.name}),
            spec=core.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"], storage_class_name=self.model.settings.kubernetes.storage_class,
                resources=core.VolumeResourceRequirementsArgs(
                    requests={"storage": quantity_mib(eff.volume_mib(v.name))})))
            for v in eff.service.volumes]

    def service(self, eff: Effective, after: Sequence[pulumi.Resource]) -> pulumi.Resource:
        svc, tier = eff.service, eff.tier
        comp = self.tiers[tier]
        volumes, mounts, configs = self._config_volumes(eff, comp)
        # Only what this workload itself needs: a constant number, plus its waits (see _opts).
        own = [self.allow[svc.name]] if svc.name in self.allow else []
        needs = [*self.ready[tier], *own, *configs, *after]
        workloads: list[pulumi.Resource] = []
        for inst in instances(self.model, eff):
            kind = "StatefulSet" if svc.stateful else "Deployment"
            notes = {**self._workload_stamps(eff),
                     **exception_annotations(review_exceptions(self.model, eff, kind, eff.replicas))}
            metadata = self._meta(inst.name, tier, inst.selector, notes or None)
            selector = meta.LabelSelectorArgs(match_labels=inst.selector)
            template = self._pod(eff, inst, volumes, mounts)
            workload: pulumi.Resource
            if svc.stateful:
                statefulset_rollout(eff)
                workload = apps.StatefulSet(inst.name, apps.StatefulSetInitArgs(
                    metadata=metadata,
                    spec=apps.StatefulSetSpecArgs(
                        service_name=pods_service(svc.name), replicas=eff.replicas, selector=selector,
                        template=template,
                        volume_claim_templates=self._claims(eff),
                        persistent_volume_claim_retention_policy=(
                            apps.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                                when_deleted="Retain", when_scaled="Retain")))),
                    opts=self._opts(comp, depends_on=needs, protect=True))
            else:
                workload = apps.Deployment(inst.name, apps.DeploymentInitArgs(
                    metadata=metadata,
                    spec=apps.DeploymentSpecArgs(
                        replicas=eff.replicas, selector=selector, template=template,
                        strategy=deployment_strategy(eff))),
                    opts=self._opts(comp, depends_on=needs))
            workloads.append(workload)
            budget = eff.rollout.budget
            if budget is not None:
                policy.PodDisruptionBudget(inst.name, policy.PodDisruptionBudgetInitArgs(
                    metadata=self._meta(inst.name, tier, inst.selector),
                    spec=policy.PodDisruptionBudgetSpecArgs(
                        max_unavailable=budget.max_unavailable, min_available=budget.min_available,
                        selector=selector)),
                    opts=self._opts(comp, depends_on=[self.namespaces[tier]]))
        handle = workloads[0]
        if eff.backed_up:
            self._backup(eff, comp, workloads[0])
        if needs_headless(eff, self.scraped):
            self._headless(eff, comp)
        if svc.ports:
            service = core.Service(svc.name, core.ServiceInitArgs(
                metadata=self._meta(svc.name, tier, {NAME: svc.name}, {
                    **SERVICE_AWAIT, K8S_PUBLIC: "true" if eff.public else "false",
                    **{k8s_port_key(p.name): self.model.catalog.port_stamp(p)
                       for p in svc.ports}}),
                spec=core.ServiceSpecArgs(
                    type="ClusterIP", selector={NAME: svc.name},
                    ports=[core.ServicePortArgs(name=p.name, port=p.container, target_port=p.name,
                                                protocol=p.protocol.upper()) for p in svc.ports])),
                # With several workloads (one per provider), the Service is what dependents
                # wait for: it is created once all of them are ready.
                opts=self._opts(comp, depends_on=[self.namespaces[tier],
                                                  *(workloads if len(workloads) > 1 else [])]))
            if len(workloads) > 1:
                handle = service
            if eff.public:
                self._ingress(eff, comp, service)
        return handle

    def _backup(self, eff: Effective, comp: TierComponent, workload: pulumi.Resource) -> batch.CronJob:
        """A CronJob that runs the catalog's backup of a service into a claim of its own (not
        the service's), under the same restricted pod security as the workloads, reaching the
        service only along its backup edge and reading the credential from a mounted file."""
        model, svc, tier = self.model, eff.service, eff.tier
        b, cfg = backups.backup_of(svc), model.settings.backups
        comp_opts = self._opts(comp, depends_on=[self.namespaces[tier]], protect=True)
        job = backup_job(svc.name)
        labels = {NAME: job}
        size = eff.backup_mib
        # The backups' claim outlives the job and the service: protected like their data.
        # Not awaited: with a WaitForFirstConsumer StorageClass it binds only when the first
        # backup runs, and nothing of the stack waits for it.
        claim = core.PersistentVolumeClaim(backup_claim(svc.name), core.PersistentVolumeClaimInitArgs(
            metadata=self._meta(backup_claim(svc.name), tier, labels, SERVICE_AWAIT),
            spec=core.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"], storage_class_name=model.settings.kubernetes.storage_class,
                resources=core.VolumeResourceRequirementsArgs(requests={"storage": quantity_mib(size)}))),
            opts=comp_opts)
        volumes = [core.VolumeArgs(name="backups", persistent_volume_claim=core.PersistentVolumeClaimVolumeSourceArgs(
                       claim_name=backup_claim(svc.name))),
                   core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(
                       size_limit=quantity_mib(BACKUP_SCRATCH_MIB)))]
        mounts = [core.VolumeMountArgs(name="backups", mount_path=backups.BACKUP_DIR),
                  core.VolumeMountArgs(name="tmp", mount_path="/tmp")]
        secret_file = None
        if b.credential:
            volumes.append(core.VolumeArgs(name="credentials", secret=core.SecretVolumeSourceArgs(
                secret_name=CREDENTIALS_SECRET, default_mode=0o440,
                items=[core.KeyToPathArgs(key=b.credential, path=b.credential)])))
            mounts.append(core.VolumeMountArgs(name="credentials", mount_path=SECRET_DIR, read_only=True))
            secret_file = f"{SECRET_DIR}/{b.credential}"
        affinity, data = None, ""
        if b.reads_volume:
            # The service's own claim, read-only, beside its running pod (a ReadWriteOnce
            # volume is shared only on one node).
            volume = next(v for v in svc.volumes if v.name == b.volume)
            volumes.append(core.VolumeArgs(name="source", persistent_volume_claim=(
                core.PersistentVolumeClaimVolumeSourceArgs(claim_name=own_claim(volume.name, eff.name),
                                                           read_only=True))))
            mounts.append(core.VolumeMountArgs(name="source", mount_path=volume.path, read_only=True))
            data = volume.path
            affinity = core.AffinityArgs(pod_affinity=core.PodAffinityArgs(
                required_during_scheduling_ignored_during_execution=[core.PodAffinityTermArgs(
                    topology_key="kubernetes.io/hostname",
                    label_selector=meta.LabelSelectorArgs(match_labels={NAME: svc.name}))]))
        port = svc.port(b.port).container if b.port else None
        where = backups.Where(self.host_of(svc.name), port, backups.BACKUP_DIR, secret_file, data)
        script = backups.backup_script(svc, where, cfg.retention)
        image = b.image or eff.image
        uid = b.uid if b.uid is not None else svc.uid
        res = BACKUP_RESOURCES
        ephemeral = BACKUP_SCRATCH_MIB + LOG_MIB
        container = core.ContainerArgs(
            name="backup", image=image, image_pull_policy="Always",
            # `command`, not `args`: the image's entrypoint would start the server.
            command=[_literal(a) for a in backups.command(script)],
            resources=core.ResourceRequirementsArgs(
                requests={"cpu": quantity_cpu(res.cpu), "memory": quantity_mib(res.memory_mib),
                          "ephemeral-storage": quantity_mib(ephemeral)},
                limits={"cpu": quantity_cpu(res.limit_cpu), "memory": quantity_mib(res.limit_mib),
                        "ephemeral-storage": quantity_mib(2 * ephemeral)}),
            security_context=container_security(True),
            volume_mounts=mounts)
        notes = {K8S_BACKUP_OF: svc.name, K8S_BACKUP_TARGET: backups.BACKUP_DIR,
                 **({K8S_REQUIRE_DIGEST: TRUE} if model.settings.kubernetes.require_digest else {}),
                 **exception_annotations(backup_exceptions(image, uid))}
        pod = core.PodTemplateSpecArgs(
            metadata=meta.ObjectMetaArgs(labels={PART_OF: PROJECT, COMPONENT: tier.value, **labels}),
            spec=core.PodSpecArgs(
                containers=[container], volumes=volumes, restart_policy="Never",
                automount_service_account_token=False, enable_service_links=False,
                security_context=pod_security(uid), affinity=affinity))
        needs: list[pulumi.Resource] = [*self.ready[tier], claim, workload]
        if job in self.allow:
            needs.append(self.allow[job])
        return batch.CronJob(job, batch.CronJobInitArgs(
            metadata=self._meta(job, tier, labels, notes),
            spec=batch.CronJobSpecArgs(
                schedule=cfg.schedule, time_zone="Etc/UTC", concurrency_policy="Forbid",
                # A run missed by more than an hour (cluster down) waits for the next one.
                starting_deadline_seconds=BACKUP_DEADLINE_S,
                successful_jobs_history_limit=3, failed_jobs_history_limit=3,
                job_template=batch.JobTemplateSpecArgs(
                    metadata=meta.ObjectMetaArgs(labels=labels),
                    spec=batch.JobSpecArgs(backoff_limit=2, active_deadline_seconds=BACKUP_DEADLINE_S,
                                           template=pod)))),
            opts=self._opts(comp, depends_on=needs))

    def _headless(self, eff: Effective, comp: TierComponent) -> core.Service:
        """The headless Service a StatefulSet's pods get their stable DNS names from
        (`<pod>.<service>-headless.<namespace>.svc`) and the scraper finds every pod by, ready
        or not (peers find a starting pod; a pod failing readiness is still scraped)."""
        svc = eff.service
        name = pods_service(svc.name)
        return core.Service(name, core.ServiceInitArgs(
            metadata=self._meta(name, eff.tier, {NAME: svc.name}, {
                **SERVICE_AWAIT, K8S_PUBLIC: "false",
                **{k8s_port_key(p.name): self.model.catalog.port_stamp(p) for p in svc.ports}}),
            spec=core.ServiceSpecArgs(
                cluster_ip="None", publish_not_ready_addresses=True, selector={NAME: svc.name},
                ports=[core.ServicePortArgs(name=p.name, port=p.container, target_port=p.name,
                                            protocol=p.protocol.upper()) for p in svc.ports] or None)),
            opts=self._opts(comp, depends_on=[self.namespaces[eff.tier]]))

    def _ingress(self, eff: Effective, comp: TierComponent, service: core.Service) -> None:
        ing = self.model.settings.kubernetes.ingress
        port = eff.service.primary_port
        assert port is not None
        host, url = eff.ingress_host, eff.external_url
        assert host is not None and url is not None  # settings require a host for every public service
        net.Ingress(eff.name, net.IngressInitArgs(
            metadata=self._meta(eff.name, eff.tier, {NAME: eff.name}, {**ing.annotations, K8S_PUBLIC: "true"}),
            spec=net.IngressSpecArgs(
                ingress_class_name=ing.class_name,
                tls=[net.IngressTLSArgs(hosts=[host], secret_name=ing.tls_secret_name)]
                if ing.tls_secret_name else None,
                rules=[net.IngressRuleArgs(host=host, http=net.HTTPIngressRuleValueArgs(
                    paths=[net.HTTPIngressPathArgs(
                        path="/", path_type="Prefix",
                        backend=net.IngressBackendArgs(service=net.IngressServiceBackendArgs(
                            name=eff.name, port=net.ServiceBackendPortArgs(number=port.container))))]))])),
            opts=self._opts(comp, depends_on=[service]))
        self.ingress_urls[eff.name] = url

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
