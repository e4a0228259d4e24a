"""What every NetworkPolicy of a Kubernetes stack allows, together, equals the catalog's edges.

The evaluator below applies Kubernetes' NetworkPolicy semantics to the rendered manifests: a
connection from pod A to pod B on a port is allowed when B's ingress admits it and A's egress
admits it (a direction no policy selects is open; where policies select a pod, the union of
their rules). It is evaluated over every pair of rendered pods and every container port, plus
pods and addresses the stack does not own: a pod of an unrelated namespace carrying a catalog
service's labels, the cluster DNS pods, another kube-system pod, a public address, the cloud
metadata address and a private address (where the API server lives). The expected sets come
from the model (edges, declared outside egress), never from the manifests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from infra import offline
from infra import stack as infra_stack
from infra.commands import render as render_cmd
from infra.graph import Resolved
from infra.model import backup_job, drill_job

from .conftest import render

NAME = "app.kubernetes.io/name"
PUBLIC_IP, METADATA_IP, PRIVATE_IP = "203.0.113.10", "169.254.169.254", "10.96.0.1"


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: tuple[tuple[str, str], ...]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


Peer = Pod | str  # a pod, or an address outside the cluster


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    assert not selector.get("matchExpressions")  # not rendered; the evaluator would need them
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


class Policies:
    def __init__(self, manifests: list[dict[str, Any]]) -> None:
        self.nps = [m for m in manifests if m["kind"] == "NetworkPolicy"]
        self.ns_labels = {m["metadata"]["name"]: m["metadata"].get("labels") or {}
                          for m in manifests if m["kind"] == "Namespace"}

    def _peer_matches(self, peer: dict[str, Any], other: Peer, policy_ns: str) -> bool:
        if isinstance(other, str):
            block = peer.get("ipBlock")
            if block is None:
                return False
            ip = ipaddress.ip_address(other)
            return (ip in ipaddress.ip_network(block["cidr"])
                    and not any(ip in ipaddress.ip_network(x) for x in block.get("except") or []))
        if "ipBlock" in peer:  # pod addresses are private, which every rendered ipBlock excepts
            return False
        if "namespaceSelector" in peer:
            labels = {**self.ns_labels.get(other.namespace, {}), "kubernetes.io/metadata.name": other.namespace}
            if not _matches(peer["namespaceSelector"], labels):
                return False
        elif other.namespace != policy_ns:
            return False
        return _matches(peer.get("podSelector"), other.label_map)

    def _admits(self, direction: str, subject: Peer, other: Peer, port: int, proto: str) -> bool:
        if isinstance(subject, str):  # outside the cluster: no NetworkPolicy applies
            return True
        side = "from" if direction == "ingress" else "to"
        selecting = [np for np in self.nps if np["metadata"]["namespace"] == subject.namespace
                     and direction.capitalize() in np["spec"]["policyTypes"]
                     and _matches(np["spec"]["podSelector"], subject.label_map)]
        if not selecting:
            return True
        for np in selecting:
            for rule in np["spec"].get(direction) or []:
                peers = rule.get(side)
                if peers and not any(self._peer_matches(p, other, np["metadata"]["namespace"]) for p in peers):
                    continue
                ports = rule.get("ports")
                if not ports or any(p["port"] == port and p.get("protocol", "TCP") == proto for p in ports):
                    return True
        return False

    def allows(self, src: Peer, dst: Peer, port: int, proto: str = "TCP") -> bool:
        return self._admits("egress", src, dst, port, proto) and self._admits("ingress", dst, src, port, proto)


@dataclass(frozen=True)
class Rendered:
    pods: dict[str, list[Pod]]
    """Per catalog service, one pod per workload (every provider's cost agent)."""
    ports: dict[str, list[tuple[int, str]]]
    policies: Policies


def rendered(r: offline.Render, jobs: bool = False) -> Rendered:
    """jobs: also the one-off Jobs' pods (the credential rotation Jobs), which the model
    declares no edges for (tests/test_seed_edges.py writes their paths out)."""
    kinds = ("Deployment", "StatefulSet", "CronJob", *(("Job",) if jobs else ()))
    manifests = [m for docs in render_cmd.by_file(r).values() for m in docs]
    pods: dict[str, list[Pod]] = {}
    ports: dict[str, list[tuple[int, str]]] = {}
    for w in manifests:
        if w["kind"] not in kinds:
            continue
        template = w["spec"]["jobTemplate"]["spec"]["template"] if w["kind"] == "CronJob" else w["spec"]["template"]
        labels = template["metadata"]["labels"]
        name = labels[NAME]
        pods.setdefault(name, []).append(Pod(w["metadata"]["namespace"], tuple(sorted(labels.items()))))
        c = template["spec"]["containers"][0]
        ports[name] = [(p["containerPort"], p["protocol"]) for p in c.get("ports") or []]
    return Rendered(pods, ports, Policies(manifests))


def allowed_edges(x: Rendered) -> set[tuple[str, str, int]]:
    """(source, target, port) between the stack's pods that the policies allow."""
    out = set()
    for src, src_pods in x.pods.items():
        for dst, dst_pods in x.pods.items():
            if src == dst:
                continue
            for port, proto in x.ports[dst]:
                verdicts = {x.policies.allows(s, d, port, proto) for s in src_pods for d in dst_pods}
                assert len(verdicts) == 1, (src, dst, port)  # every instance alike
                if verdicts.pop():
                    out.add((src, dst, port))
    return out


def declared_edges(model: Resolved) -> set[tuple[str, str, int]]:
    return {(e.source, e.target, model.services[e.target].service.port(e.port).container)
            for e in [*model.edges, *model.backup_edges(), *model.drill_edges()] if e.port}


STACKS = [
    ("prod", ()),
    ("staging", ()),
    # An edge added by config, and one inside the databases tier.
    ("prod", ("services.portal.dependsOn=[redis]", "services.postgres.dependsOn=[redis]")),
]


@pytest.mark.parametrize(("stack", "sets"), STACKS, ids=["prod", "staging", "prod-extra-edges"])
def test_pod_to_pod_reachability_equals_the_declared_edges(stack: str, sets: tuple[str, ...]) -> None:
    x, model = rendered(render(stack, *sets)), infra_stack.model_of(stack, sets)
    allowed, declared = allowed_edges(x), declared_edges(model)
    assert allowed - declared == set(), "allowed but not declared"
    assert declared - allowed == set(), "declared but not allowed"
    assert len(declared) > 30  # the figure in docs/production.md (prod: 39 declared, 39 allowed)


RECEIVER = ('alerting.receivers={"webhook": {}}',)
NO_RECEIVER = ("alerting.receivers={}", "alerting.noReceiver=a lab cluster")


@pytest.mark.parametrize(("stack", "sets"), [*STACKS[:2], ("prod", RECEIVER), ("prod", NO_RECEIVER)],
                         ids=["prod", "staging", "prod-with-a-webhook-only", "prod-without-a-receiver"])
def test_nothing_else_in_or_out(stack: str, sets: tuple[str, ...]) -> None:
    secrets = ("alertWebhookUrl=https://hooks.example.com/optiinfra",) if sets == RECEIVER else ()
    x, model = rendered(render(stack, *sets, secrets=secrets)), infra_stack.model_of(stack, sets)
    k = model.settings.kubernetes
    ours = [(name, pod) for name, pods in x.pods.items() for pod in pods]
    # The committed staging and prod back up off-site (issue 25): the backup jobs (their upload,
    # the base backup, ClickHouse's plan and expiry) and the restore drills reach the store's
    # endpoint, on its port (the URL's, else the scheme's default), and nothing else outside.
    store = model.settings.backups.store
    assert store is not None
    endpoint = urlsplit(store.endpoint)
    store_port = endpoint.port or {"https": 443, "http": 80}[endpoint.scheme]
    jobs = {backup_job(e.name) for e in model.backed_up()} | {drill_job(e.name) for e in model.drilled()}
    assert {drill_job("postgres"), drill_job("redis")} <= jobs  # docs/backups.md: the drilled stores
    all_ports = {p for ports in x.ports.values() for p in ports} | {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    for name, pod in ours:
        # A pod of an unrelated namespace, even one wearing this service's labels, reaches
        # nothing of the stack and is reached by nothing.
        intruder = Pod("default", pod.labels)
        for port, proto in all_ports:
            assert not x.policies.allows(intruder, pod, port, proto), (name, port)
            assert not x.policies.allows(pod, intruder, port, proto), (name, port)
        # DNS only to the cluster DNS pods (settings: namespace and labels).
        dns = Pod(k.dns.namespace, tuple(k.dns.pod_labels.items()))
        other = Pod(k.dns.namespace, (("k8s-app", "metrics-server"),))
        for proto in ("UDP", "TCP"):
            assert x.policies.allows(pod, dns, 53, proto), name
            assert not x.policies.allows(pod, other, 53, proto), name
        # Outside the cluster: only what the catalog declares, never the metadata address
        # or a private address (the API server, node ports).
        owner = model.services.get(name)  # None: a backup or drill job (the store only)
        assert owner is not None or name in jobs, name
        outs = model.outside(owner) if owner else ()
        declared = {p for o in outs if not o.api_server for p in o.ports} if owner else {store_port}
        # The API server (a private address) only for a service that reads it, on its ports.
        api = {p for o in outs if o.api_server for p in o.ports}
        for port in (25, 80, 443, 587, 6443, 8443):
            assert x.policies.allows(pod, PUBLIC_IP, port) == (port in declared), (name, port)
            assert not x.policies.allows(pod, METADATA_IP, port), name
            assert x.policies.allows(pod, PRIVATE_IP, port) == (port in api), (name, port)
        # Nothing from outside the cluster reaches a pod directly (the Ingress controller does).
        for port, proto in x.ports[name]:
            assert not x.policies.allows(PUBLIC_IP, pod, port, proto), name
    leaving = {name for name, _ in ours if x.policies.allows(x.pods[name][0], PUBLIC_IP, 443)}
    # The cost agent (the providers' billing APIs), the sign-in proxy (the identity provider),
    # the prober (the TLS handshake with the stack's public hosts, at the ingress controller's
    # load balancer) and Alertmanager (the receivers: the committed staging and prod name theirs):
    # the exceptions; Alertmanager's only while a receiver is set (with none, nothing would use it).
    # With the store on 443: the servers that write it themselves (PostgreSQL's WAL archive,
    # ClickHouse's BACKUP ... TO S3: docs/backups.md), and every backup and drill job.
    writers = {"postgres", "clickhouse"}
    assert store_port == 443 and leaving - set(model.services) == jobs
    assert leaving & set(model.services) == {n for n, e in model.services.items()
                                             if any(not o.api_server for o in model.outside(e))} == writers | (
        {"cost-agent", "oauth2-proxy", "blackbox-exporter"} if sets == NO_RECEIVER
        else {"cost-agent", "oauth2-proxy", "blackbox-exporter", "alertmanager"})
    # The prober leaves on 443 only (the loop above: nothing but the declared ports).
    prober = model.prober()
    assert prober is not None and [o.ports for o in model.outside(prober)] == [(443,)]
    # The API server: only the service that reads it (catalog ClusterReads), kube-state-metrics.
    to_api = {name for name, _ in ours if x.policies.allows(x.pods[name][0], PRIVATE_IP, 6443)}
    assert to_api == {n for n, e in model.services.items() if e.service.cluster_reads} == {"kube-state-metrics"}


def test_the_prober_leaves_only_for_the_public_hosts_tls() -> None:
    """Its one exception (443 at the public hosts' load balancer) exists while the stack serves a
    public host; without one it leaves on no port, as before."""
    for sets, leaves in (((), True), (("public=[]", "kubernetes.ingress.hosts={}"), False)):
        x = rendered(render("prod", *sets))
        pod = x.pods["blackbox-exporter"][0]
        for port in (25, 80, 443, 587, 6443, 8443):
            assert x.policies.allows(pod, PUBLIC_IP, port) == (leaves and port == 443), (sets, port)
            assert not x.policies.allows(pod, METADATA_IP, port), sets
            assert not x.policies.allows(pod, PRIVATE_IP, port), sets


def test_outside_ranges_come_from_settings() -> None:
    sets = ("kubernetes.outsideCidrs=[198.51.100.0/24]", "kubernetes.outsideExcept=[]")
    x = rendered(render("prod", *sets))
    cost = x.pods["cost-agent"][0]
    assert x.policies.allows(cost, "198.51.100.7", 443)
    assert not x.policies.allows(cost, PUBLIC_IP, 443)
    dns_sets = ("kubernetes.dns.namespace=dns", "kubernetes.dns.podLabels={app: coredns}")
    y = rendered(render("prod", *dns_sets))
    pod = y.pods["portal"][0]
    assert y.policies.allows(pod, Pod("dns", (("app", "coredns"),)), 53, "UDP")
    assert not y.policies.allows(pod, Pod("kube-system", (("k8s-app", "kube-dns"),)), 53, "UDP")


NODELOCAL_DNS, CLOUD_DNS = "169.254.20.10", "169.254.169.254"


def test_dns_by_address_block_renders_and_admits_exactly_it() -> None:
    """`kubernetes.dns.cidrs`: NodeLocal DNSCache and GKE Cloud DNS answer on a link-local
    address, no pod; every pod may reach exactly those addresses on port 53 beside the pods."""
    sets = ("kubernetes.dns.cidrs=[169.254.20.10/32, 169.254.169.254/32]",)
    r = render("prod", *sets)
    x = rendered(r)
    dns_policies = [np for np in x.policies.nps if np["metadata"]["name"] == "allow-dns-egress"]
    assert dns_policies
    for np in dns_policies:
        (rule,) = np["spec"]["egress"]
        blocks = [p["ipBlock"] for p in rule["to"] if "ipBlock" in p]
        assert blocks == [{"cidr": "169.254.20.10/32"}, {"cidr": "169.254.169.254/32"}]
    for name, (pod, *_) in x.pods.items():
        for proto in ("UDP", "TCP"):
            assert x.policies.allows(pod, NODELOCAL_DNS, 53, proto), name
            assert x.policies.allows(pod, CLOUD_DNS, 53, proto), name
        # Exactly those: not the address beside it, not another port of the same address.
        assert not x.policies.allows(pod, "169.254.20.11", 53, "UDP"), name
        assert not x.policies.allows(pod, CLOUD_DNS, 80, "TCP"), name
    # The pod form still holds beside the blocks, and without blocks no address answers.
    assert x.policies.allows(x.pods["portal"][0], Pod("kube-system", (("k8s-app", "kube-dns"),)), 53, "UDP")
    plain = rendered(render("prod"))
    assert not plain.policies.allows(plain.pods["portal"][0], NODELOCAL_DNS, 53, "UDP")


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_grafanas_web_port_admits_only_the_sign_in_proxy_and_prometheus(stack: str) -> None:
    """Grafana trusts the identity header of whoever reaches its web port: the proxy sets it, so
    nothing else may reach that port (the scraper reads /metrics). The ingress controller reaches
    the proxy, and the portal (external auth), but not Grafana."""
    x, model = rendered(render(stack)), infra_stack.model_of(stack)
    proxy = next(e.name for e in model.services.values() if e.service.authenticator)
    ui = next(e.name for e in model.services.values() if e.via == proxy)
    port = model.services[ui].service.port("web").container
    reaching = {src for src, pods in x.pods.items() if src != ui
                and any(x.policies.allows(p, d, port) for p in pods for d in x.pods[ui])}
    assert reaching == {proxy, "prometheus"}
    controller = Pod(model.settings.kubernetes.ingress.controller_namespace, (("app", "ingress-nginx"),))
    assert not x.policies.allows(controller, x.pods[ui][0], port)
    assert x.policies.allows(controller, x.pods[proxy][0], model.services[proxy].service.port("http").container)
    assert not x.policies.allows(PUBLIC_IP, x.pods[proxy][0], 4180)
