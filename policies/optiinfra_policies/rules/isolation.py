"""Isolation: from the host, between tiers, and per Pod Security Standard."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .. import vocabulary as v
from ..core import Resource, Rule, as_dict, as_list, get_in, is_unknown
from .common import (
    CONTAINER,
    DOCKER,
    NAMESPACE_T,
    NETWORK_POLICY,
    WORKLOADS,
    docker_labels,
    docker_service,
    k8s_service,
    list_of,
    pod_containers,
    pod_spec,
    service_hint,
)

TIERS = list(v.TIERS)


# ---- no host access ------------------------------------------------------------------------

def check_host_access(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    allowed = {str(p) for p in as_list(cfg.get("allowedHostPaths"))}
    if res.type == CONTAINER:
        service = docker_service(res)
        p = res.props
        if p.get("privileged") is True:
            yield f"{service}: privileged container (CIS 5.4). Fix: remove privileged; add single capabilities."
        for key, cis in (("networkMode", "5.9"), ("pidMode", "5.15"), ("ipcMode", "5.16"), ("utsMode", "5.20"),
                         ("usernsMode", "5.30")):
            if p.get(key) == "host":
                yield f"{service}: {key} is host, sharing the host's namespace (CIS {cis}). Fix: remove {key}."
        if as_list(p.get("devices")):
            yield f"{service}: host devices are mapped into the container (CIS 5.17). Fix: remove devices."
        mounts = [(as_dict(v).get("hostPath"), as_dict(v).get("containerPath")) for v in as_list(p.get("volumes"))]
        mounts += [(as_dict(m).get("source"), as_dict(m).get("target")) for m in as_list(p.get("mounts"))
                   if as_dict(m).get("type") == "bind"]
        for source, target in mounts:
            if not isinstance(source, str) or not source or source in allowed:
                continue
            if source.endswith("docker.sock"):
                yield (f"{service}: mounts the Docker socket {source} (CIS 5.31): that is root on the host. "
                       "Fix: remove the mount.")
            else:
                yield (f"{service}: mounts the host path {source} at {target}. Fix: use a named volume or an "
                       "upload, or list the path with its reason in no-host-access.allowedHostPaths.")
        return
    if res.type in WORKLOADS:
        service = k8s_service(res)
        spec = pod_spec(res) or {}
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key) is True:
                yield f"{service}: pod spec sets {key}: true. Fix: remove it."
        for v in as_list(spec.get("volumes")):
            path = get_in(v, "hostPath", "path")
            if path is not None and path not in allowed:
                what = "the Docker socket" if str(path).endswith("docker.sock") else "the host path"
                yield (f"{service}: volume {as_dict(v).get('name')} mounts {what} {path}. Fix: use a "
                       "PersistentVolumeClaim, emptyDir, ConfigMap or Secret.")
        for cname, c in pod_containers(spec):
            if get_in(c, "securityContext", "privileged") is True:
                yield f"{service}: container {cname} is privileged. Fix: remove privileged."


NO_HOST_ACCESS = Rule(
    name="no-host-access",
    description=("No privileged container, host network, host PID/IPC/UTS/user namespace, host device, "
                 "docker.sock or hostPath mount."),
    severity="critical",
    config={"allowedHostPaths": {"type": "array", "items": {"type": "string"}, "default": [],
                                 "description": "Host paths that may be mounted (none by default)."}},
    remediation="Remove the host access; use named volumes, PVCs or single capabilities.",
    check=check_host_access,
    types=DOCKER | WORKLOADS,
    tags=("isolation", "CIS-5.4", "CIS-5.9", "CIS-5.15", "CIS-5.16", "CIS-5.31"),
)


# ---- tier isolation ------------------------------------------------------------------------------

def _forbidden(cfg: Mapping[str, Any], a: str, b: str) -> bool:
    return any(f.get("tier") == a and f.get("network") == b for f in as_list(cfg.get("forbidden")))


def check_tier_isolation(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """Judged against the tier labels, the `<prefix>-<tier>` names of networks and
    namespaces, the networks the program stamps as needed, and the forbidden pairs in the
    config: a dependency the stack config adds (services.<name>.dependsOn) changes what the
    program stamps, never what the config forbids."""
    if res.type == CONTAINER:
        yield from _docker_isolation(res, cfg)
    elif res.type in WORKLOADS:
        service = k8s_service(res)
        tier = v.tier_of(res.type, res.props)
        ns = get_in(res.props, "metadata", "namespace")
        if tier is None or not isinstance(ns, str) or is_unknown(ns):
            return
        if v.tier_of_name(ns) != tier:
            prefix = ns.rpartition("-")[0] if v.tier_of_name(ns) else v.PROJECT
            yield (f"{service} ({tier}) runs in namespace {ns}; its tier's namespace is "
                   f"{v.tier_scoped_name(prefix, tier)}. Fix: deploy it into its tier's namespace.")
    elif res.type == NETWORK_POLICY:
        ns = get_in(res.props, "metadata", "namespace")
        own = v.tier_of_name(ns) if isinstance(ns, str) else None
        if own is None:
            return
        for direction, peer_key in (("ingress", "from"), ("egress", "to")):
            for rule in as_list(get_in(res.props, "spec", direction)):
                for peer in as_list(as_dict(rule).get(peer_key)):
                    for other in _selected_tiers(as_dict(peer).get("namespaceSelector")):
                        if _forbidden(cfg, own, other) or _forbidden(cfg, other, own):
                            yield (f"NetworkPolicy {res.name} in {ns} admits {direction} traffic with the "
                                   f"{other} namespace; {own} and {other} never talk directly. "
                                   "Fix: remove that peer.")


def _selected_tiers(selector: Any) -> Iterator[str]:
    labels = as_dict(as_dict(selector).get("matchLabels"))
    name = labels.get(v.K8S_NAMESPACE_NAME)
    tier = v.tier_of_name(name) if isinstance(name, str) else None
    if tier is not None:
        yield tier
    label = labels.get(v.DOCKER_TIER) or labels.get(v.K8S_COMPONENT)
    if label in v.TIERS:
        yield str(label)


def _docker_isolation(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    service = v.service_of(res.type, res.props)
    tier = v.tier_of(res.type, res.props)
    if service is None or tier is None:
        yield (f"container {res.props.get('name', res.name)} carries no service and tier labels "
               f"({v.DOCKER_SERVICE}, {v.DOCKER_TIER}), so its tier and networks cannot be checked.")
        return
    labels = docker_labels(res.props)
    joined = [as_dict(n).get("name") for n in as_list(res.props.get("networksAdvanced"))]
    mode = res.props.get("networkMode")
    if not joined and mode in (None, "", "bridge", "default"):
        yield (f"{service}: joins Docker's default bridge, shared by every container on the host (CIS 5.29). "
               "Fix: attach it to its tier networks.")
    needed = v.split(labels.get(v.DOCKER_NETWORKS))
    if v.DOCKER_NETWORKS not in labels:
        yield (f"{service}: carries no {v.DOCKER_NETWORKS} label, so the networks its connections need are "
               "unknown. Fix: render the container with the program (infra/backends/docker.py stamps it).")
    for net in joined:
        if not isinstance(net, str) or is_unknown(net):
            continue
        other = v.tier_of_name(net)
        if other is None:
            yield f"{service}: joins {net}, which is none of the stack's tier networks."
            continue
        if _forbidden(cfg, tier, other):
            yield (f"{service} ({tier}) joins the {other} network {net}: a {tier} container "
                   f"never shares a network with the {other} tier. Fix: remove the dependency that puts it "
                   f"there ({service_hint(service, 'dependsOn')}) and go through the tier in between.")
        elif v.DOCKER_NETWORKS in labels and net not in needed:
            yield (f"{service} ({tier}) joins {net}, but its connections only need "
                   f"{', '.join(sorted(needed)) or 'none'} (infra.graph networks_of). Fix: remove the network, or "
                   "declare the dependency that needs it.")


TIER_ISOLATION = Rule(
    name="tier-isolation",
    description=("A container joins only the networks its connections need (infra.graph networks_of), never "
                 "the default bridge; forbidden tier pairs (a database and the frontend) never share a network; "
                 "on Kubernetes a workload runs in its tier's namespace."),
    severity="high",
    config={"forbidden": {**list_of({"tier": {"type": "string", "enum": TIERS},
                                     "network": {"type": "string", "enum": TIERS},
                                     "reason": {"type": "string"}}, ["tier", "network"]),
                          "default": [{"tier": "databases", "network": "frontend"},
                                      {"tier": "frontend", "network": "databases"}],
                          "description": "Tier pairs that never share a network or a NetworkPolicy peer."}},
    remediation="Remove the network (or the dependency that adds it).",
    check=check_tier_isolation,
    types=DOCKER | WORKLOADS | frozenset({NETWORK_POLICY}),
    tags=("isolation", "CIS-5.29"),
)


# ---- default-deny NetworkPolicy per tier namespace (stack) -------------------------------------

def _denies(policy: Resource, types: set[str]) -> bool:
    spec = as_dict(policy.props.get("spec"))
    selector = spec.get("podSelector")
    if as_dict(selector).get("matchLabels") or as_dict(selector).get("matchExpressions"):
        return False
    declared = {str(t) for t in as_list(spec.get("policyTypes"))} or {"Ingress"}
    if not types <= declared:
        return False
    return all(not as_list(spec.get(t.lower())) for t in types)


def check_default_deny(resources: Sequence[Resource], cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """The stack's tier namespaces: the Namespaces it creates and those its workloads run in,
    named `<prefix>-<tier>` (or labelled with their tier)."""
    namespaces = {str(get_in(r.props, "metadata", "name")): r for r in resources if r.type == NAMESPACE_T}
    used = {str(get_in(r.props, "metadata", "namespace")) for r in resources if r.type in WORKLOADS}
    types = {str(t) for t in as_list(cfg.get("policyTypes"))}
    tiers: dict[str, str] = {}
    for ns in sorted(set(namespaces) | used):
        tier = v.tier_of_name(ns) or (v.tier_of(NAMESPACE_T, namespaces[ns].props) if ns in namespaces else None)
        if tier is not None:
            tiers[ns] = tier
    for ns, tier in tiers.items():
        policies = [r for r in resources if r.type == NETWORK_POLICY and get_in(r.props, "metadata", "namespace") == ns]
        if not any(_denies(p, types) for p in policies):
            urn = namespaces[ns].urn if ns in namespaces else ""
            yield urn, (f"namespace {ns} ({tier}) has no default-deny NetworkPolicy (podSelector {{}}, "
                        f"policyTypes {sorted(types)}, no rules). Fix: add one; allow rules then open exactly the "
                        "catalog's connections.")


NAMESPACE_DEFAULT_DENY = Rule(
    name="namespace-default-deny",
    description="Every Kubernetes tier namespace has a default-deny NetworkPolicy.",
    severity="high",
    config={"policyTypes": {"type": "array", "items": {"type": "string", "enum": ["Ingress", "Egress"]},
                            "default": ["Ingress"],
                            "description": "Directions the default-deny policy must cover."}},
    remediation="Add a NetworkPolicy with podSelector {} and no rules to each tier namespace.",
    check_stack=check_default_deny,
    tags=("isolation",),
)


# ---- Pod Security Standard restricted ------------------------------------------------------------

PSS_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                         "projected", "secret"})
PSS_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
PSS_SELINUX = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
PSS_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                         "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
                         "net.ipv4.ip_local_reserved_ports",
                         "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                         "net.ipv4.tcp_keepalive_probes"})
PSS_LABEL = v.PSS_ENFORCE


def _pss_pod(spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> Iterator[str]:
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            yield f"pod sets {key}"
    for vol in as_list(spec.get("volumes")):
        kinds = set(as_dict(vol)) - {"name"}
        bad = kinds - PSS_VOLUMES
        if bad:
            yield f"volume {as_dict(vol).get('name')} is of type {', '.join(sorted(bad))}"
    psc = as_dict(spec.get("securityContext"))
    for sysctl in as_list(psc.get("sysctls")):
        if as_dict(sysctl).get("name") not in PSS_SYSCTLS:
            yield f"sysctl {as_dict(sysctl).get('name')} is not in the safe set"
    if psc.get("runAsUser") == 0:
        yield "pod runs as user 0"
    yield from _selinux("pod", psc)
    allowed_caps = {str(c) for c in as_list(cfg.get("allowedCapabilities"))}
    for cname, c in pod_containers(spec):
        sc = as_dict(c.get("securityContext"))
        where = f"container {cname}"
        if sc.get("privileged") is True:
            yield f"{where} is privileged"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{where} does not set allowPrivilegeEscalation: false"
        caps = as_dict(sc.get("capabilities"))
        if "ALL" not in {str(x) for x in as_list(caps.get("drop"))}:
            yield f"{where} does not drop ALL capabilities"
        added = {str(x) for x in as_list(caps.get("add"))} - allowed_caps
        if added:
            yield f"{where} adds capabilities {', '.join(sorted(added))}"
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            yield f"{where} does not set runAsNonRoot: true (pod or container)"
        if sc.get("runAsUser") == 0:
            yield f"{where} runs as user 0"
        seccomp = get_in(sc, "seccompProfile", "type") or get_in(psc, "seccompProfile", "type")
        if seccomp not in PSS_SECCOMP:
            yield f"{where} has no seccompProfile RuntimeDefault or Localhost (pod or container)"
        if sc.get("procMount") not in (None, "Default"):
            yield f"{where} sets procMount {sc.get('procMount')}"
        if get_in(sc, "appArmorProfile", "type") == "Unconfined":
            yield f"{where} runs AppArmor unconfined"
        yield from _selinux(where, sc)
        for p in as_list(c.get("ports")):
            if as_dict(p).get("hostPort"):
                yield f"{where} uses hostPort {as_dict(p).get('hostPort')}"


def _selinux(where: str, sc: Mapping[str, Any]) -> Iterator[str]:
    opts = as_dict(sc.get("seLinuxOptions"))
    if opts.get("type", "") not in PSS_SELINUX or opts.get("user") or opts.get("role"):
        yield f"{where} sets SELinux options outside the restricted set"


def check_pss(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    if res.type == NAMESPACE_T:
        name = get_in(res.props, "metadata", "name")
        if cfg.get("requireNamespaceLabel") and isinstance(name, str) and v.tier_of_name(name):
            label = get_in(res.props, "metadata", "labels", PSS_LABEL)
            if label != "restricted":
                yield (f"namespace {name} is not labelled {PSS_LABEL}=restricted, so the cluster does not enforce "
                       "the standard. Fix: add the label.")
        return
    spec = pod_spec(res)
    if spec is None:
        return
    service = k8s_service(res)
    problems = list(_pss_pod(spec, cfg))
    if problems:
        yield (f"{service}: the pod spec breaks Pod Security Standard restricted: {'; '.join(problems)}. Fix: "
               "render the catalog's secure defaults (non-root uid, seccomp RuntimeDefault, drop ALL, no privilege "
               "escalation).")


POD_SECURITY_RESTRICTED = Rule(
    name="pod-security-restricted",
    description=("Kubernetes pod specs meet the Pod Security Standard restricted, and tier namespaces "
                 "enforce it (pod-security.kubernetes.io/enforce=restricted)."),
    severity="high",
    config={
        "allowedCapabilities": {"type": "array", "items": {"type": "string"}, "default": ["NET_BIND_SERVICE"],
                                "description": "Capabilities a container may add (the standard allows only "
                                               "NET_BIND_SERVICE)."},
        "requireNamespaceLabel": {"type": "boolean", "default": True,
                                  "description": "Tier namespaces carry the enforce=restricted label."},
    },
    remediation="Render the catalog's secure defaults into the pod spec.",
    check=check_pss,
    types=WORKLOADS | frozenset({NAMESPACE_T}),
    tags=("isolation", "pss-restricted"),
)


RULES: tuple[Rule, ...] = (NO_HOST_ACCESS, TIER_ISOLATION, NAMESPACE_DEFAULT_DENY, POD_SECURITY_RESTRICTED)
