"""Exposure: the ClusterIP Service named after every service with ports (so connection
URLs are `<service>.<namespace>.svc.cluster.local`), the headless one for StatefulSets and
scraped services, and the Ingress of a public service; never a hostPort."""

from __future__ import annotations

from collections.abc import Sequence, Set

import pulumi
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.networking import v1 as net

from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME
from policies.optiinfra_policies.vocabulary import K8S_PUBLIC, k8s_port_key

from ...graph import Effective
from ...tiers import TierComponent
from .objects import SERVICE_AWAIT, Objects, pods_service


def needs_headless(eff: Effective, scraped: Set[str]) -> bool:
    """A StatefulSet (its pods' stable names) and every scraped service with ports (the
    scraper reaches each pod: replicas and per-provider instances are separate series)."""
    return bool(eff.service.ports) and (eff.service.stateful or eff.name in scraped)


def cluster_service(objs: Objects, eff: Effective, comp: TierComponent, ns: core.Namespace,
                    workloads: Sequence[pulumi.Resource]) -> core.Service:
    """The Service named after the service, selecting every instance's pods."""
    svc, tier = eff.service, eff.tier
    return core.Service(svc.name, core.ServiceInitArgs(
        metadata=objs.metadata(svc.name, tier, {NAME: svc.name}, {
            **SERVICE_AWAIT, K8S_PUBLIC: "true" if eff.public else "false",
            **{k8s_port_key(p.name): objs.model.catalog.port_stamp(p)
               for p in svc.ports}}),
        spec=core.ServiceSpecArgs(
            type="ClusterIP", selector={NAME: svc.name},
            ports=[core.ServicePortArgs(name=p.name, port=p.container, target_port=p.name,
                                        protocol=p.protocol.upper()) for p in svc.ports])),
        # With several workloads (one per provider), the Service is what dependents
        # wait for: it is created once all of them are ready.
        opts=objs.opts(comp, depends_on=[ns, *(workloads if len(workloads) > 1 else [])]))


def headless(objs: Objects, eff: Effective, comp: TierComponent, ns: core.Namespace) -> core.Service:
    """The headless Service a StatefulSet's pods get their stable DNS names from
    (`<pod>.<service>-headless.<namespace>.svc`) and the scraper finds every pod by, ready
    or not (peers find a starting pod; a pod failing readiness is still scraped)."""
    svc = eff.service
    name = pods_service(svc.name)
    return core.Service(name, core.ServiceInitArgs(
        metadata=objs.metadata(name, eff.tier, {NAME: svc.name}, {
            **SERVICE_AWAIT, K8S_PUBLIC: "false",
            **{k8s_port_key(p.name): objs.model.catalog.port_stamp(p) for p in svc.ports}}),
        spec=core.ServiceSpecArgs(
            cluster_ip="None", publish_not_ready_addresses=True, selector={NAME: svc.name},
            ports=[core.ServicePortArgs(name=p.name, port=p.container, target_port=p.name,
                                        protocol=p.protocol.upper()) for p in svc.ports] or None)),
        opts=objs.opts(comp, depends_on=[ns]))


def ingress(objs: Objects, eff: Effective, comp: TierComponent, service: core.Service) -> str:
    """The Ingress of a public service; returns the URL users reach it at."""
    ing = objs.model.settings.kubernetes.ingress
    port = eff.service.primary_port
    assert port is not None
    host, url = eff.ingress_host, eff.external_url
    assert host is not None and url is not None  # settings require a host for every public service
    net.Ingress(eff.name, net.IngressInitArgs(
        metadata=objs.metadata(eff.name, eff.tier, {NAME: eff.name}, {**ing.annotations, K8S_PUBLIC: "true"}),
        spec=net.IngressSpecArgs(
            ingress_class_name=ing.class_name,
            tls=[net.IngressTLSArgs(hosts=[host], secret_name=ing.tls_secret_name)]
            if ing.tls_secret_name else None,
            rules=[net.IngressRuleArgs(host=host, http=net.HTTPIngressRuleValueArgs(
                paths=[net.HTTPIngressPathArgs(
                    path="/", path_type="Prefix",
                    backend=net.IngressBackendArgs(service=net.IngressServiceBackendArgs(
                        name=eff.name, port=net.ServiceBackendPortArgs(number=port.container))))]))])),
        opts=objs.opts(comp, depends_on=[service]))
    return url
