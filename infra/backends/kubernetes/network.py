"""Network policies: default deny in every namespace, DNS to the cluster DNS pods, then one
allow policy per service admitting exactly its edges (dependencies, Prometheus scraping,
its backup job) on the edge's port, the ingress controller for a public service, and the
outside egress the catalog declares."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pulumi
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta import v1 as meta
from pulumi_kubernetes.networking import v1 as net

from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_NAMESPACE_NAME as NAMESPACE_NAME

from ... import objectstore
from ...graph import Edge, Effective, Resolved
from ...model import Tier, backup_job
from ...tiers import TierComponent
from .objects import Objects, namespace_name


def _distinct(edges: list[Edge]) -> list[Edge]:
    """One edge per (source, target, port): a service the scraper both scrapes and talks to
    (the notifier) is one NetworkPolicy rule, not two identical ones."""
    return list({(e.source, e.target, e.port): e for e in edges}.values())


def _peer(model: Resolved, service: str) -> net.NetworkPolicyPeerArgs:
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


def _edge_port(model: Resolved, e: Edge) -> net.NetworkPolicyPortArgs | None:
    if not e.port:  # a dependency on a service without ports carries no traffic
        return None
    port = model.services[e.target].service.port(e.port)
    return net.NetworkPolicyPortArgs(port=port.container, protocol=port.protocol.upper())


def tier_policies(objs: Objects, tier: Tier, comp: TierComponent, ns: core.Namespace, members: list[Effective],
                  allow: dict[str, net.NetworkPolicy]) -> list[pulumi.Resource]:
    """Default deny both ways, DNS to the cluster DNS pods, then one allow policy per
    service: exactly its edges, both ways, and the outside egress the catalog declares.
    Returns the tier-wide ones (what every pod of the tier starts behind)."""
    model = objs.model
    k = model.settings.kubernetes
    opts = objs.opts(comp, depends_on=[ns])
    NP, spec = net.NetworkPolicy, net.NetworkPolicySpecArgs
    everything = meta.LabelSelectorArgs()
    deny = NP(f"{tier.value}-default-deny", net.NetworkPolicyInitArgs(
        metadata=objs.metadata("default-deny", tier),
        spec=spec(pod_selector=everything, policy_types=["Ingress", "Egress"])),
        opts=opts)
    dns_ports = [net.NetworkPolicyPortArgs(port=53, protocol=p) for p in ("UDP", "TCP")]
    dns = NP(f"{tier.value}-allow-dns", net.NetworkPolicyInitArgs(
        metadata=objs.metadata("allow-dns-egress", tier),
        spec=spec(pod_selector=everything, policy_types=["Egress"], egress=[
            net.NetworkPolicyEgressRuleArgs(ports=dns_ports, to=[net.NetworkPolicyPeerArgs(
                namespace_selector=meta.LabelSelectorArgs(match_labels={NAMESPACE_NAME: k.dns.namespace}),
                pod_selector=meta.LabelSelectorArgs(match_labels=dict(k.dns.pod_labels))),
                # A resolver that is no pod (NodeLocal DNSCache, GKE Cloud DNS): by address.
                *(net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=c)) for c in k.dns.cidrs)])])),
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
        if eff.public and primary is not None and eff.via is None:  # behind the proxy: only the proxy
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
            if out.backup_store:  # the server itself writes the off-site store
                egress += store_egress(model)
                continue
            # The API server is the one private destination, at exactly its addresses and ports.
            to = ([net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=cidr)) for cidr in k.api_server.cidrs]
                  if out.api_server else
                  [net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(cidr=cidr, except_=list(
                      _inside(cidr, k.outside_except)) or None)) for cidr in k.outside_cidrs])
            egress.append(net.NetworkPolicyEgressRuleArgs(
                to=to, ports=[net.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in out.ports]))
        types = (["Ingress"] if rules else []) + (["Egress"] if egress else [])
        if not types:
            continue
        allow[eff.name] = NP(f"allow-{eff.name}", net.NetworkPolicyInitArgs(
            metadata=objs.metadata(f"allow-{eff.name}", tier, {NAME: eff.name}),
            spec=spec(pod_selector=meta.LabelSelectorArgs(match_labels={NAME: eff.name}),
                      policy_types=types, ingress=rules or None, egress=egress or None)),
            opts=opts)
    for e in backup_edges:  # a backup job reaches its service's port, nothing else
        port = _edge_port(model, e)
        assert port is not None
        allow[e.source] = NP(f"allow-{e.source}", net.NetworkPolicyInitArgs(
            metadata=objs.metadata(f"allow-{e.source}", tier, {NAME: e.source}),
            spec=spec(pod_selector=meta.LabelSelectorArgs(match_labels={NAME: e.source}),
                      policy_types=["Egress"],
                      egress=[net.NetworkPolicyEgressRuleArgs(to=[_peer(model, e.target)], ports=[port]),
                              *store_egress(model)])),
            opts=opts)
    _store_only_policies(objs, tier, members, {e.source for e in backup_edges}, allow, opts)
    return made


def store_egress(model: Resolved) -> list[net.NetworkPolicyEgressRuleArgs]:
    """With `backups.store`: a backup pod's one way out, to the store's endpoint port (its
    address alone when the endpoint is an IP, else the stack's outside ranges minus
    `outsideExcept`: a NetworkPolicy cannot name a host). Nothing without a store."""
    store, k = model.settings.backups.store, model.settings.kubernetes
    if store is None:
        return []
    _, port = objectstore.endpoint_host_port(store)
    cidrs = objectstore.endpoint_cidrs(store, tuple(k.outside_cidrs))
    return [net.NetworkPolicyEgressRuleArgs(
        to=[net.NetworkPolicyPeerArgs(ip_block=net.IPBlockArgs(
            cidr=cidr, except_=list(_inside(cidr, k.outside_except)) or None)) for cidr in cidrs],
        ports=[net.NetworkPolicyPortArgs(port=port, protocol="TCP")])]


def _store_only_policies(objs: Objects, tier: Tier, members: list[Effective], done: set[str],
                         allow: dict[str, net.NetworkPolicy], opts: pulumi.ResourceOptions) -> None:
    """A backup job without an edge to its service (it reads the volume) still uploads:
    its policy allows the store's endpoint and nothing else."""
    rules = store_egress(objs.model)
    if not rules:
        return
    for eff in members:
        job = backup_job(eff.name)
        if not eff.backed_up or job in done:
            continue
        allow[job] = net.NetworkPolicy(f"allow-{job}", net.NetworkPolicyInitArgs(
            metadata=objs.metadata(f"allow-{job}", tier, {NAME: job}),
            spec=net.NetworkPolicySpecArgs(pod_selector=meta.LabelSelectorArgs(match_labels={NAME: job}),
                                           policy_types=["Egress"], egress=rules)),
            opts=opts)
