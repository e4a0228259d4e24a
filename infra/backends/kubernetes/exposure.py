"""Exposure: the ClusterIP Service named after every service with ports (so connection
URLs are `<service>.<namespace>.svc.cluster.local`), the headless one for StatefulSets and
scraped services, and the Ingress of a public service; never a hostPort."""

from __future__ import annotations

from collections.abc import Sequence, Set

import pulumi
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.networking import v1 as net

from policies.optiinfra_policies.vocabulary import K8S_AUTHENTICATOR, K8S_FRONTS, K8S_PUBLIC, K8S_UI, k8s_port_key
from policies.optiinfra_policies.vocabulary import K8S_NAME as NAME

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
            **SERVICE_AWAIT, K8S_PUBLIC: "true" if eff.public else "false", **sign_in_stamps(eff),
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


def sign_in_stamps(eff: Effective) -> dict[str, str]:
    """What the policy pack reads of sign-in on a Service: a UI, the sign-in proxy."""
    return {**({K8S_UI: "true"} if eff.service.ui is not None else {}),
            **({K8S_AUTHENTICATOR: "true"} if eff.service.authenticator else {})}


CERT_MANAGER_ISSUER = "cert-manager.io/cluster-issuer"
TLS_ANNOTATIONS = {"nginx.ingress.kubernetes.io/ssl-redirect": "true",
                   "nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}
"""Plain HTTP is redirected to HTTPS on every Ingress, after the stack's own annotations so
none overrides them (the pack's `public-ui-signed-in` checks it). HSTS has no per-Ingress
switch in ingress-nginx: the controller sends it (max-age one year) on every TLS host by
default (its ConfigMap's `hsts`); docs/access.md states that requirement."""


def ingress(objs: Objects, eff: Effective, comp: TierComponent, service: core.Service) -> str | None:
    """The Ingress of a public service, TLS always (a named Secret, or cert-manager's), to the
    sign-in proxy for a UI that trusts its header (`via`), with external auth for the other
    UIs; returns the URL users reach it at (None: it has no host of its own, the proxy)."""
    ing = objs.model.settings.kubernetes.ingress
    host, url = eff.ingress_host, eff.external_url
    if host is None or url is None:
        return None  # the sign-in proxy: reached through the Ingresses of the UIs it fronts
    model = objs.model
    backend = model.services[eff.via] if eff.via else eff
    port = backend.service.primary_port
    assert port is not None
    issuer = {CERT_MANAGER_ISSUER: ing.cert_manager_issuer} if ing.cert_manager_issuer else {}
    secret = ing.tls_secret_name or (f"{eff.name}-tls" if issuer else None)
    stamps = {K8S_PUBLIC: "true", **({K8S_UI: "true"} if eff.service.ui is not None else {}),
              **({K8S_FRONTS: eff.name} if eff.via else {})}
    net.Ingress(eff.name, net.IngressInitArgs(
        metadata=objs.metadata(eff.name, eff.tier, {NAME: backend.name},
                               {**ing.annotations, **issuer, **TLS_ANNOTATIONS, **dict(eff.auth), **stamps}),
        spec=net.IngressSpecArgs(
            ingress_class_name=ing.class_name,
            tls=[net.IngressTLSArgs(hosts=[host], secret_name=secret)] if secret else None,
            rules=[net.IngressRuleArgs(host=host, http=net.HTTPIngressRuleValueArgs(
                paths=[net.HTTPIngressPathArgs(
                    path="/", path_type="Prefix",
                    backend=net.IngressBackendArgs(service=net.IngressServiceBackendArgs(
                        name=backend.name, port=net.ServiceBackendPortArgs(number=port.container))))]))])),
        opts=objs.opts(comp, depends_on=[service]))
    return url
