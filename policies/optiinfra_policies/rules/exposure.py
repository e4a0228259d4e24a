"""Exposure: what a stack opens to the host and beyond the cluster, and on which ports."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .. import vocabulary as v
from ..core import Resource, Rule, as_dict, as_list, get_in, is_unknown
from ..standards import ANONYMOUS_ACCESS_ENV
from .common import (
    CONTAINER,
    INGRESS,
    K8S_SERVICE,
    NAMESPACE,
    WORKLOADS,
    annotation,
    docker_labels,
    docker_service,
    k8s_service,
    pod_containers,
    pod_spec,
    service_hint,
    stamped_true,
)

WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})


# ---- unique host ports (stack) -----------------------------------------------------

def _bindings(resources: Sequence[Resource]) -> Iterator[tuple[int, str, str, str, str]]:
    """(host port, protocol, address, owner, urn) of every host port the stack binds."""
    for res in resources:
        if res.type == CONTAINER:
            owner = docker_service(res)
            for p in as_list(res.props.get("ports")):
                port = as_dict(p).get("external")
                if isinstance(port, int):
                    ip = as_dict(p).get("ip")
                    yield port, str(as_dict(p).get("protocol") or "tcp"), str(ip or ""), owner, res.urn
        elif res.type in WORKLOADS:
            spec = pod_spec(res) or {}
            for _, c in pod_containers(spec):
                for p in as_list(c.get("ports")):
                    port = as_dict(p).get("hostPort")
                    if isinstance(port, int) and port:
                        yield (port, str(as_dict(p).get("protocol") or "TCP").lower(),
                               str(as_dict(p).get("hostIP") or ""), k8s_service(res), res.urn)
        elif res.type == K8S_SERVICE:
            for p in as_list(get_in(res.props, "spec", "ports")):
                port = as_dict(p).get("nodePort")
                if isinstance(port, int) and port:
                    yield port, str(as_dict(p).get("protocol") or "TCP").lower(), "", k8s_service(res), res.urn


def _overlap(a: str, b: str) -> bool:
    return a == b or a in WILDCARD_ADDRESSES or b in WILDCARD_ADDRESSES


def check_unique_host_ports(resources: Sequence[Resource], cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    seen: dict[tuple[int, str], list[tuple[str, str, str]]] = {}
    for port, proto, ip, owner, urn in _bindings(resources):
        for other_ip, other_owner, other_urn in seen.get((port, proto), []):
            if _overlap(ip, other_ip):
                for who, whose_urn, peer in ((owner, urn, other_owner), (other_owner, other_urn, owner)):
                    yield whose_urn, (f"host port {port}/{proto} is bound by both {who} and {peer}; the second one "
                                      f"cannot start. Fix: give one of them another host port "
                                      f"({service_hint(who, 'hostPort')}).")
        seen.setdefault((port, proto), []).append((ip, owner, urn))


UNIQUE_HOST_PORTS = Rule(
    name="unique-host-ports",
    description="No two services bind the same host port.",
    severity="high",
    config={},
    remediation="Give one of the services another host port (optiinfra:services.<name>.hostPort).",
    check_stack=check_unique_host_ports,
    tags=("exposure",),
)


# ---- host port bind address ----------------------------------------------------------

def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def check_bind_address(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    if res.type == CONTAINER:
        service = docker_service(res)
        public = stamped_true(docker_labels(res.props).get(v.DOCKER_PUBLIC))
        for p in as_list(res.props.get("ports")):
            ip = as_dict(p).get("ip")
            host = as_dict(p).get("external")
            if is_unknown(ip):
                continue
            ip = str(ip or "")
            where = f"host port {host}" if host else f"container port {as_dict(p).get('internal')}"
            if ip in WILDCARD_ADDRESSES and not public:
                shown = ip or "every interface (no ip given)"
                yield (f"{service}: {where} binds to {shown}, but {service} is not public. Fix: bind it to "
                       f"127.0.0.1 ({service_hint(service, 'bindAddress')}), or add {service} to "
                       f"{NAMESPACE}:public if it must be reachable from other machines.")
            elif cfg.get("requireLoopback") and not public and not _is_loopback(ip):
                yield (f"{service}: {where} binds to {ip}, not a loopback address. Fix: bind it to 127.0.0.1 "
                       f"({service_hint(service, 'bindAddress')}).")
        return
    if res.type in WORKLOADS:
        spec = pod_spec(res) or {}
        for cname, c in pod_containers(spec):
            for p in as_list(c.get("ports")):
                if as_dict(p).get("hostPort"):
                    yield (f"container {cname} publishes hostPort {as_dict(p).get('hostPort')}: on Kubernetes nothing "
                           "binds a node port directly. Fix: remove hostPort; reach the service through its "
                           "Service (and an Ingress if it is public).")
        return
    if res.type == K8S_SERVICE:
        service = k8s_service(res)
        kind = get_in(res.props, "spec", "type")
        if kind in ("NodePort", "LoadBalancer") and not stamped_true(annotation(res, v.K8S_PUBLIC)):
            yield (f"Service of {service} has type {kind}, which opens it outside the cluster, but {service} is not "
                   f"public. Fix: use ClusterIP, or add {service} to {NAMESPACE}:public and route it through an "
                   "Ingress.")
        return
    if res.type == INGRESS:
        # An Ingress vouches only for the service it is labelled for, and only when it is
        # stamped public; any other backend is not known to be public.
        own = v.service_of(res.type, res.props)
        vouched = own if stamped_true(annotation(res, v.K8S_PUBLIC)) else None
        for backend in _ingress_backends(res.props):
            service = backend[len(v.CONTAINER_PREFIX):] if backend.startswith(v.CONTAINER_PREFIX) else backend
            if service != vouched:
                yield (f"Ingress routes to {service}, which is not public. Fix: remove the route, or add {service} "
                       f"to {NAMESPACE}:public.")


def _ingress_backends(props: Mapping[str, Any]) -> Iterator[str]:
    default = get_in(props, "spec", "defaultBackend", "service", "name")
    if isinstance(default, str):
        yield default
    for rule in as_list(get_in(props, "spec", "rules")):
        for path in as_list(get_in(rule, "http", "paths")):
            name = get_in(path, "backend", "service", "name")
            if isinstance(name, str):
                yield name


BIND_ADDRESS = Rule(
    name="host-port-bind-address",
    description=("A published host port binds to a specific address; 0.0.0.0 only for a service the stack "
                 "marks public (optiinfra:public). On Kubernetes nothing uses hostPort, and only public "
                 "services get a NodePort/LoadBalancer or an Ingress."),
    severity="high",
    config={"requireLoopback": {"type": "boolean", "default": False,
                                "description": "Non-public services must bind a loopback address."}},
    remediation="Bind to 127.0.0.1 (optiinfra:services.<name>.bindAddress) or mark the service public.",
    check=check_bind_address,
    types=frozenset({CONTAINER, K8S_SERVICE, INGRESS}) | WORKLOADS,
    tags=("exposure", "CIS-5.13"),
)


# ---- port allocation bands -----------------------------------------------------------

def _band_problem(service: str, stamp: v.PortStamp, number: int, what: str) -> str | None:
    if stamp.band is None:
        return (f"{service}: {what} {number} ({stamp.name}) has no allocation band in the catalog. Fix: give the "
                "Port a band in infra/catalog.py.")
    if stamp.allows(number):
        return None
    return (f"{service}: {what} {number} ({stamp.name}) is outside the {stamp.band} band {stamp.low}-{stamp.high}. "
            f"Fix: pick a free port in {stamp.low}-{stamp.high} ({service_hint(service, 'hostPort')}), or write "
            "why beside the Port in infra/catalog.py (Port(..., outside_band=\"<reason>\")).")



def check_port_bands(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """Judged against the band the program stamps on each catalog port (Docker label
    io.optiinfra.port.<container port>, Service annotation optiinfra.io/port.<name>)."""
    if res.type == CONTAINER:
        service = docker_service(res)
        labels = docker_labels(res.props)
        for p in as_list(res.props.get("ports")):
            internal, external = as_dict(p).get("internal"), as_dict(p).get("external")
            if not isinstance(external, int):
                continue
            stamp = v.parse_port_stamp(labels.get(v.docker_port_key(internal))) if isinstance(internal, int) else None
            if stamp is None:
                yield (f"{service}: host port {external} publishes container port {internal}, which the catalog "
                       "does not declare. Fix: declare the port (with its band) in infra/catalog.py.")
                continue
            problem = _band_problem(service, stamp, external, "host port")
            if problem:
                yield problem
        return
    if res.type == K8S_SERVICE:
        if get_in(res.props, "spec", "clusterIP") == "None":
            return  # headless: a DNS name for the pods, no port of its own to allocate
        service = k8s_service(res)
        annotations = v.annotations_of(res.props)
        for p in as_list(get_in(res.props, "spec", "ports")):
            number = as_dict(p).get("port")
            if not isinstance(number, int):
                continue
            target = as_dict(p).get("targetPort")
            name = as_dict(p).get("name")
            stamp = next((s for s in (v.parse_port_stamp(annotations.get(v.k8s_port_key(str(k))))
                                      for k in (name, target) if k is not None) if s is not None), None)
            if stamp is None:
                yield (f"{service}: Service port {number} targets {target!r}, which the catalog does not declare. "
                       "Fix: declare the port (with its band) in infra/catalog.py.")
                continue
            problem = _band_problem(service, stamp, number, "Service port")
            if problem:
                yield problem


PORT_BANDS = Rule(
    name="port-allocation-bands",
    description=("Host ports (Docker) and Service ports (Kubernetes) lie inside the seed's allocation band "
                 "of their catalog Port, unless the catalog writes why beside that Port."),
    severity="low",
    config={},
    remediation="Pick a free port in the band, or write the reason beside the Port in infra/catalog.py.",
    check=check_port_bands,
    types=frozenset({CONTAINER, K8S_SERVICE}),
    tags=("ports",),
)


# ---- sign-in in front of every public UI, TLS on every Ingress ------------------------------

def _auth_url_to(res: Resource, authenticators: set[tuple[str, str]]) -> bool:
    """The Ingress asks the sign-in proxy before every request (ingress-nginx external auth)."""
    url = annotation(res, _AUTH_URL)
    return isinstance(url, str) and any(url.startswith(f"http://{name}.{ns}.svc") or
                                        url.startswith(f"https://{name}.{ns}.svc") for ns, name in authenticators)


_AUTH_URL = "nginx.ingress.kubernetes.io/auth-url"
_REDIRECTS = ("nginx.ingress.kubernetes.io/force-ssl-redirect", "nginx.ingress.kubernetes.io/ssl-redirect")
"""Either one, "true" on the Ingress itself, sends plain HTTP to HTTPS whatever the controller's
ConfigMap says. HSTS has no per-Ingress switch in ingress-nginx (only its ConfigMap's `hsts`, on
by default, or a `custom-headers` ConfigMap the controller must allow-list in
`global-allowed-response-headers`), so the pack checks what an Ingress can carry: TLS and the
redirect; docs/access.md states the controller requirement."""


def _redirects_to_https(res: Resource) -> bool:
    return any(str(annotation(res, key)).strip().lower() == "true" for key in _REDIRECTS)


def _namespace(res: Resource) -> str:
    return str(get_in(res.props, "metadata", "namespace") or "")


def check_signed_in(resources: Sequence[Resource], cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    services = {(_namespace(r), str(get_in(r.props, "metadata", "name") or "")): r
                for r in resources if r.type == K8S_SERVICE}
    authenticators = {key for key, r in services.items() if stamped_true(annotation(r, v.K8S_AUTHENTICATOR))}
    for res in resources:
        if res.type == INGRESS:
            name = str(get_in(res.props, "metadata", "name") or res.name)
            covered = {h for t in as_list(get_in(res.props, "spec", "tls")) for h in as_list(as_dict(t).get("hosts"))
                       if as_dict(t).get("secretName")}
            for rule in as_list(get_in(res.props, "spec", "rules")):
                host = as_dict(rule).get("host")
                if host not in covered:
                    yield res.urn, (f"Ingress {name} serves {host or 'every host'} over plain HTTP (no TLS). Fix: set "
                                    f"{NAMESPACE}:kubernetes.ingress.tlsSecretName to a TLS Secret, or "
                                    f"{NAMESPACE}:kubernetes.ingress.certManagerIssuer (docs/access.md).")
            if covered and not _redirects_to_https(res):
                yield res.urn, (f"Ingress {name} answers plain HTTP without redirecting it to HTTPS (neither "
                                f"{_REDIRECTS[0]} nor {_REDIRECTS[1]} is \"true\" on it), so a first visit can be "
                                "read and altered on the way and HSTS is never learnt. Fix: annotate the Ingress "
                                f"{_REDIRECTS[0]}: \"true\" (the program renders it and {_REDIRECTS[1]} on "
                                "every Ingress: restore what changed them after the render).")
            for backend in _ingress_backends(res.props):
                svc = services.get((_namespace(res), backend))
                if svc is None or not stamped_true(annotation(svc, v.K8S_UI)):
                    continue
                if stamped_true(annotation(svc, v.K8S_AUTHENTICATOR)) or _auth_url_to(res, authenticators):
                    continue
                yield res.urn, (f"Ingress {name} routes to the UI {backend} with no sign-in in front of it: anyone "
                                f"on the internet can use it. Fix: route it through the sign-in proxy (set "
                                f"{NAMESPACE}:sso, docs/access.md), or remove {backend} from {NAMESPACE}:public.")
        elif res.type in WORKLOADS:
            for cname, c in pod_containers(pod_spec(res) or {}):
                for e in as_list(c.get("env")):
                    key, value = as_dict(e).get("name"), as_dict(e).get("value")
                    if key in ANONYMOUS_ACCESS_ENV and str(value).strip().lower() == "true":
                        yield res.urn, (f"{k8s_service(res)}: container {cname} sets {key}=true, so it answers "
                                        "anyone without a sign-in. Fix: remove it; on Kubernetes users sign in "
                                        f"through the sign-in proxy ({NAMESPACE}:sso, docs/access.md).")


SIGNED_IN = Rule(
    name="public-ui-signed-in",
    description=("On Kubernetes every public UI has a sign-in in front of it (its Ingress routes to the sign-in "
                 "proxy, or asks it first), every Ingress has TLS and redirects plain HTTP to HTTPS, and no "
                 "workload turns on anonymous access."),
    severity="critical",
    config={},
    remediation="Set optiinfra:sso and a TLS Secret or cert-manager issuer (docs/access.md).",
    check_stack=check_signed_in,
    tags=("exposure", "authentication"),
)


RULES: tuple[Rule, ...] = (UNIQUE_HOST_PORTS, BIND_ADDRESS, PORT_BANDS, SIGNED_IN)
