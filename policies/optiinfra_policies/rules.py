"""The rules of OptiInfra's policy pack, over Docker (dev) and Kubernetes (prod) resources.

Every rule is a pure function of what the resources carry (type token + camelCase inputs,
see core.py) and the policy's config; stack policies also see the stack's other
resources. Nothing is restated here that the catalog says: the program stamps the catalog
facts a rule needs onto the resources (see the package docstring and vocabulary.py). A
port outside its band is written once, with its reason, beside the Port in the catalog
(stamped with the port); per-service exemptions of other rules live in the policy config
(policies/config/<stack>.json), each with its reason.

References: CIS Docker Benchmark section 5, Kubernetes Pod Security Standards
"restricted", docs design SECURITY.md.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from . import vocabulary as v
from .core import Resource, Rule, as_dict, as_list, get_in, is_secret, is_unknown
from .standards import KNOWN_DEFAULT_CREDENTIALS, has_digest, image_problem

# ---- type tokens (the vocabulary's; short names for the rules and their tests) ----------

CONTAINER = v.DOCKER_CONTAINER
REMOTE_IMAGE = v.DOCKER_IMAGE
VOLUME = v.DOCKER_VOLUME

DEPLOYMENT = v.K8S_DEPLOYMENT
STATEFULSET = v.K8S_STATEFULSET
DAEMONSET = v.K8S_DAEMONSET
REPLICASET = v.K8S_REPLICASET
JOB = v.K8S_JOB
CRONJOB = v.K8S_CRONJOB
POD = v.K8S_POD
K8S_SERVICE = v.K8S_SERVICE
PVC = v.K8S_PVC
NAMESPACE_T = v.K8S_NAMESPACE
K8S_SECRET = v.K8S_SECRET
EXTERNAL_SECRET = v.K8S_EXTERNAL_SECRET
CONFIGMAP = v.K8S_CONFIGMAP
NETWORK_POLICY = v.K8S_NETWORK_POLICY
INGRESS = v.K8S_INGRESS

POD_SPEC_PATH = v.K8S_POD_SPEC_PATH
WORKLOADS = v.K8S_WORKLOADS
LONG_RUNNING = frozenset({DEPLOYMENT, STATEFULSET, DAEMONSET, REPLICASET, POD})

WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
CONFIG_FILE = "policies/config/<stack>.json"
NAMESPACE = v.CONFIG_NAMESPACE
LABEL = v.DOCKER_LABEL


# ---- shared helpers -----------------------------------------------------------------

def docker_labels(props: Mapping[str, Any]) -> dict[str, str]:
    return v.docker_labels(props)


def docker_service(res: Resource) -> str:
    """The catalog service a container runs: its io.optiinfra.service label, else its name."""
    return v.service_of(res.type, res.props) or res.name


def docker_envs(props: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(name, value, entry) of each `NAME=value` entry; a whole-secret entry gives name ''."""
    for entry in as_list(props.get("envs")):
        if not isinstance(entry, str):
            continue
        name, sep, value = entry.partition("=")
        yield (name, value, entry) if sep else ("", entry, entry)


def k8s_labels(props: Mapping[str, Any]) -> dict[str, Any]:
    return v.k8s_labels(props)


def k8s_service(res: Resource) -> str:
    """The catalog service a Kubernetes resource belongs to (its app.kubernetes.io/name
    label, else its name)."""
    service = v.service_of(res.type, res.props)
    if service:
        return service
    meta_name = get_in(res.props, "metadata", "name")
    name = meta_name if isinstance(meta_name, str) else res.name
    return name[len(v.CONTAINER_PREFIX):] if name.startswith(v.CONTAINER_PREFIX) else name


def annotation(res: Resource, key: str) -> Any:
    return v.annotations_of(res.props).get(key)


def stamped_true(value: Any) -> bool:
    return value == v.TRUE


def pod_spec(res: Resource) -> dict[str, Any] | None:
    path = POD_SPEC_PATH.get(res.type)
    spec = get_in(res.props, *path) if path else None
    return as_dict(spec) if isinstance(spec, Mapping) else None


def pod_containers(spec: Mapping[str, Any], *, init: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, container) of the containers, and (with `init`) the init and ephemeral ones."""
    kinds = ("containers", "initContainers", "ephemeralContainers") if init else ("containers",)
    for kind in kinds:
        for c in as_list(spec.get(kind)):
            if isinstance(c, Mapping):
                yield str(c.get("name", "?")), dict(c)


def _service_hint(service: str, key: str) -> str:
    return f"{NAMESPACE}:services.{service}.{key}"


def _secret_ok(res: Resource, value: Any) -> bool:
    """Offline: marked secret (or not known yet). Under the engine secrets arrive unwrapped,
    so only an unknown value is known to be fine; callers skip what they cannot judge."""
    return is_unknown(value) or (res.secrets_marked and is_secret(value))


URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<password>[^/\s@]*)@", re.IGNORECASE)


def _plaintext_url_password(value: str) -> str | None:
    """The password inside a URL of a plain (non-secret) string, if any."""
    m = URL_PASSWORD.search(value)
    return m.group("password") if m else None


# ---- 1. unique host ports (stack) -----------------------------------------------------

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
                                      f"({_service_hint(who, 'hostPort')}).")
        seen.setdefault((port, proto), []).append((ip, owner, urn))


# ---- 2. host port bind address ----------------------------------------------------------

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
                       f"127.0.0.1 ({_service_hint(service, 'bindAddress')}), or add {service} to "
                       f"{NAMESPACE}:public if it must be reachable from other machines.")
            elif cfg.get("requireLoopback") and not public and not _is_loopback(ip):
                yield (f"{service}: {where} binds to {ip}, not a loopback address. Fix: bind it to 127.0.0.1 "
                       f"({_service_hint(service, 'bindAddress')}).")
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


# ---- 3. port allocation bands -----------------------------------------------------------

def _band_problem(service: str, stamp: v.PortStamp, number: int, what: str) -> str | None:
    if stamp.band is None:
        return (f"{service}: {what} {number} ({stamp.name}) has no allocation band in the catalog. Fix: give the "
                "Port a band in infra/catalog.py.")
    if stamp.allows(number):
        return None
    return (f"{service}: {what} {number} ({stamp.name}) is outside the {stamp.band} band {stamp.low}-{stamp.high}. "
            f"Fix: pick a free port in {stamp.low}-{stamp.high} ({_service_hint(service, 'hostPort')}), or write "
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


# ---- 4. images pinned --------------------------------------------------------------------

def _digest_required(res: Resource, cfg: Mapping[str, Any]) -> bool:
    """The policy config, or the stack's kubernetes.requireDigest as the program stamps it."""
    return bool(cfg.get("requireDigest")) or stamped_true(annotation(res, v.K8S_REQUIRE_DIGEST))


def _image_problem(res: Resource, ref: Any, cfg: Mapping[str, Any]) -> str | None:
    if not isinstance(ref, str) or is_unknown(ref) or ref.startswith("sha256:"):
        return None  # an image ID from the RemoteImage (pinned by the RemoteImage's reference)
    problem = image_problem(ref)
    if problem:
        return f"image '{ref}' {problem}"
    if _digest_required(res, cfg) and not has_digest(ref):
        return f"image '{ref}' has no digest, and this stack requires one"
    return None


def check_images(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    fix = ("Fix: pin a version tag, e.g. repo/name:1.2.3 (optiinfra:services.<name>.image, or images.tag for "
           "OptiInfra's own images)")
    if _digest_required(res, cfg):
        fix += ", with its digest (repo/name:1.2.3@sha256:...)"
    refs: list[tuple[str, Any]] = []
    if res.type == REMOTE_IMAGE:
        refs.append((res.name, res.props.get("name")))
    elif res.type == CONTAINER:
        service = docker_service(res)
        refs.append((service, docker_labels(res.props).get(v.DOCKER_IMAGE_LABEL)))
        refs.append((service, res.props.get("image")))
    elif res.type in WORKLOADS:
        for cname, c in pod_containers(pod_spec(res) or {}):
            refs.append((cname, c.get("image")))
    reported: set[str] = set()
    for who, ref in refs:
        problem = _image_problem(res, ref, cfg)
        if problem and problem not in reported:
            reported.add(problem)
            yield f"{who}: {problem}. {fix}."


# ---- 5. health checks ----------------------------------------------------------------------

def _exempt(cfg: Mapping[str, Any], service: str) -> bool:
    return any(e.get("service") == service for e in as_list(cfg.get("exemptions")))


def check_health(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    if res.type == CONTAINER:
        if res.props.get("rm") is True:
            return  # a one-shot container
        service = docker_service(res)
        tests = as_list(get_in(res.props, "healthcheck", "tests"))
        if tests and tests[0] != "NONE":
            return
        if _exempt(cfg, service):
            return
        reason = docker_labels(res.props).get(v.DOCKER_NO_HEALTHCHECK)
        why = f" The catalog says: {reason}." if reason else ""
        yield (f"{service}: long-running container without a health check.{why} Fix: declare a HealthCheck the "
               "image can run (infra/catalog.py), or exempt the service with its reason in "
               f"health-checks.exemptions ({CONFIG_FILE}).")
        return
    if res.type in LONG_RUNNING:
        service = k8s_service(res)
        if _exempt(cfg, service):
            return
        slow = stamped_true(annotation(res, v.K8S_SLOW_START))
        for cname, c in pod_containers(pod_spec(res) or {}, init=False):
            missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
            if slow and cfg.get("requireStartupProbe") and not c.get("startupProbe"):
                missing.append("startupProbe (the catalog marks it a slow starter)")
            if missing:
                yield (f"{service}: container {cname} has no {' and no '.join(missing)}. Fix: render the "
                       "catalog's HealthCheck as probes.")


# ---- 6. resource limits ---------------------------------------------------------------------

def _positive(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value > 0
    if isinstance(value, str):
        if is_unknown(value):
            return True
        try:
            return float(value) > 0
        except ValueError:
            return bool(value.strip())
    return False


def check_limits(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    if res.type == CONTAINER:
        service = docker_service(res)
        missing = []
        if not _positive(res.props.get("memory")):
            missing.append("memory limit (memory)")
        if not (_positive(res.props.get("cpus")) or _positive(res.props.get("cpuQuota"))):
            missing.append("CPU limit (cpus)")
        if cfg.get("requirePidsLimit") and not _positive(res.props.get("pidsLimit")):
            missing.append("PIDs limit (pidsLimit, CIS 5.28)")
        if missing:
            yield (f"{service}: the container has no {', no '.join(missing)}. Fix: set the service's Resources "
                   f"in infra/catalog.py or {_service_hint(service, 'memory')}/cpu.")
        return
    if res.type in WORKLOADS:
        service = k8s_service(res)
        for cname, c in pod_containers(pod_spec(res) or {}):
            limits = as_dict(get_in(c, "resources", "limits"))
            missing = [k for k in ("memory", "cpu") if not _positive(limits.get(k))]
            if missing:
                yield (f"{service}: container {cname} has no {' and no '.join(missing)} limit "
                       "(resources.limits). Fix: render the catalog's Resources as limits.")


# ---- 7. no host access ------------------------------------------------------------------------

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


# ---- 8. no plaintext credential ------------------------------------------------------------------

def _credential_name(cfg: Mapping[str, Any], name: str) -> bool:
    return bool(name) and re.search(str(cfg["namePattern"]), name) is not None


def secret_mounts(spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """Mount paths of the container's read-only volumes that come from a Secret."""
    secret_volumes = {str(as_dict(vol).get("name")) for vol in as_list(spec.get("volumes"))
                      if as_dict(vol).get("secret") is not None}
    return [str(m["mountPath"]) for m in map(as_dict, as_list(container.get("volumeMounts")))
            if m.get("name") in secret_volumes and m.get("readOnly") is True and m.get("mountPath")]


def _secret_file(spec: Mapping[str, Any], container: Mapping[str, Any], value: Any) -> bool:
    """Whether `value` is the path of a file inside one of the container's Secret mounts."""
    if not isinstance(value, str) or not value.startswith("/"):
        return False
    return any(value.startswith(path.rstrip("/") + "/") for path in secret_mounts(spec, container))


def check_plaintext(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """Structural where the resource shows it (Kubernetes: a credential comes through
    secretKeyRef; no URL with a password in a pod spec, a command line or a ConfigMap);
    by the secret mark where only the mark tells (a Docker env value, a Secret's data):
    offline only, as the engine hands the pack secrets unwrapped (package docstring)."""
    if res.type == CONTAINER:
        service = docker_service(res)
        for name, value, entry in docker_envs(res.props) if res.secrets_marked else ():
            if _secret_ok(res, entry):
                continue
            if _credential_name(cfg, name):
                yield (f"{service}: environment variable {name} looks like a credential but is not a secret. Fix: "
                       "deliver it as a secret Output (a catalog Secret/Url value, set with "
                       "`pulumi config set --secret`).")
            elif _plaintext_url_password(value) is not None:
                yield (f"{service}: environment variable {name} holds a URL with a password in plaintext. Fix: "
                       "build it from the catalog (infra/wiring.py makes such URLs secret).")
        args = [("command", a) for a in as_list(res.props.get("command"))]
        args += [("entrypoints", a) for a in as_list(res.props.get("entrypoints"))]
        args += [("healthcheck", a) for a in as_list(get_in(res.props, "healthcheck", "tests"))]
        for where, arg in args:
            # A process's arguments are readable by anyone on the host, secret Output or not.
            if isinstance(arg, str) and not is_unknown(arg) and _plaintext_url_password(arg) is not None:
                yield (f"{service}: the {where} carries a URL with a password in plaintext (and in the process "
                       "list). Fix: pass it through a secret environment variable.")
        return
    if res.type in WORKLOADS:
        service, spec = k8s_service(res), pod_spec(res) or {}
        for cname, c in pod_containers(spec):
            for env in as_list(c.get("env")):
                name, literal = str(as_dict(env).get("name", "")), as_dict(env).get("value")
                if literal is None or is_unknown(literal):
                    continue  # valueFrom (secretKeyRef, configMapKeyRef, fieldRef)
                if _credential_name(cfg, name) and _secret_file(spec, c, literal):
                    continue  # names a file the container reads from a mounted Secret (`*_FILE`)
                if _credential_name(cfg, name):
                    # A literal is stored in the pod spec as it is, whatever the program marked it.
                    if cfg.get("kubernetesRequireSecretRef") or (res.secrets_marked and not is_secret(literal)):
                        yield (f"{service}: container {cname} sets {name} as a literal value; the pod spec stores "
                               "it in plaintext. Fix: put it in a Secret and use valueFrom.secretKeyRef.")
                elif isinstance(literal, str) and _plaintext_url_password(literal) is not None:
                    yield (f"{service}: container {cname} sets {name} to a URL with a password in plaintext. Fix: "
                           "put it in a Secret and use valueFrom.secretKeyRef.")
        return
    if res.type == K8S_SECRET:
        if not res.secrets_marked:
            return  # the engine unwraps the marks (pulumi-kubernetes keeps a Secret's data secret itself)
        for key in ("data", "stringData"):
            data = res.props.get(key)
            if data is None or _secret_ok(res, data):
                continue
            plain = sorted(k for k, val in as_dict(data).items() if not _secret_ok(res, val))
            if plain:
                yield (f"Secret {res.name}: {key} {', '.join(plain)} is not marked secret in the program, so Pulumi "
                       "keeps it in plaintext in the state and the plan. Fix: pass pulumi.Output.secret(...).")
        return
    if res.type == EXTERNAL_SECRET:
        yield from _external_secret_plaintext(res)
        return
    if res.type == CONFIGMAP:
        # A ConfigMap is plaintext in the cluster: no credential belongs there, marked or not.
        for key, value in as_dict(res.props.get("data")).items():
            if is_unknown(value):
                continue
            if _credential_name(cfg, key) or (isinstance(value, str) and _plaintext_url_password(value)):
                yield f"ConfigMap {res.name}: {key} holds a credential in plaintext. Fix: move it into a Secret."


def _external_secret_plaintext(res: Resource) -> Iterator[str]:
    """An ExternalSecret's spec is plain in Pulumi state and in the cluster: every key of the
    Secret it writes is a credential, so each template entry must take its value from the
    store (a `{{ ... }}` action), and no literal text of it may be a URL's password."""
    template = as_dict(get_in(res.props, "spec", "target", "template"))
    entries = [(f"template.data.{k}", val) for k, val in as_dict(template.get("data")).items()]
    entries += [(f"templateFrom[{i}].literal", get_in(t, "literal"))
                for i, t in enumerate(as_list(template.get("templateFrom")))]
    for where, value in entries:
        if not isinstance(value, str) or is_unknown(value):
            continue
        if _plaintext_url_password(value) is not None:
            yield (f"ExternalSecret {res.name}: {where} carries a URL with a password in plaintext. Fix: put the "
                   "password in the store and template it in ('{{ index . \"<secretKey>\" | urlquery }}').")
        elif "{{" not in value and where.startswith("template.data."):
            yield (f"ExternalSecret {res.name}: {where} is a literal, so the credential it holds is stored in "
                   "plaintext (Pulumi state, the cluster). Fix: take it from the store with spec.data and "
                   "'{{ index . \"<secretKey>\" }}' (infra/external_secrets.py builds these).")


# ---- 9. no known default credential ----------------------------------------------------------------

def _defaults(cfg: Mapping[str, Any]) -> set[str]:
    return {d.lower() for d in KNOWN_DEFAULT_CREDENTIALS} | {str(d).lower() for d in as_list(cfg.get("extraDefaults"))}


def _default_problem(cfg: Mapping[str, Any], name: str, value: Any) -> str | None:
    """Judged on the value wherever it is visible: secret or not under the engine (which
    unwraps secrets); offline a secret shows only its mark (the settings refuse a supplied
    default before anything renders). Messages never carry a value that is not a default."""
    if not isinstance(value, str) or is_unknown(value) or is_secret(value):
        return None
    if _credential_name(cfg, name) and value.strip().lower() in _defaults(cfg):
        return f"{name} is a well-known default credential" + (" (empty)" if not value.strip() else "")
    if re.search(str(cfg["userPattern"]), name) and value.strip().lower() in {
            str(u).lower() for u in as_list(cfg.get("defaultUsers"))}:
        return f"{name} is a well-known default account name ('{value}')"
    password = _plaintext_url_password(value)
    if password is not None and password.lower() in _defaults(cfg):
        return f"{name} embeds a well-known default password in its URL"
    return None


def check_default_credentials(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    fix = ("Fix: leave the credential to the stack (generated, or `pulumi config set --secret <key> <strong "
           "value>`), and use a non-default account name.")
    if res.type == CONTAINER:
        service = docker_service(res)
        for name, value, _ in docker_envs(res.props):
            problem = _default_problem(cfg, name, value)
            if problem:
                yield f"{service}: {problem}. {fix}"
        return
    if res.type in WORKLOADS:
        service = k8s_service(res)
        for cname, c in pod_containers(pod_spec(res) or {}):
            for env in as_list(c.get("env")):
                problem = _default_problem(cfg, str(as_dict(env).get("name", "")), as_dict(env).get("value"))
                if problem:
                    yield f"{service}: container {cname}: {problem}. {fix}"
        return
    if res.type == K8S_SECRET:
        for key in ("data", "stringData"):
            for name, value in as_dict(res.props.get(key)).items():
                # A Secret's keys are credentials by construction; base64 `data` is decoded by nobody here.
                if key == "stringData" and isinstance(value, str) and not is_unknown(value) and \
                        not is_secret(value) and value.strip().lower() in _defaults(cfg):
                    yield f"Secret {res.name}: {name} is a well-known default credential. {fix}"


# ---- 10. tier isolation ------------------------------------------------------------------------------

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
                   f"there ({_service_hint(service, 'dependsOn')}) and go through the tier in between.")
        elif v.DOCKER_NETWORKS in labels and net not in needed:
            yield (f"{service} ({tier}) joins {net}, but its connections only need "
                   f"{', '.join(sorted(needed)) or 'none'} (infra.graph networks_of). Fix: remove the network, or "
                   "declare the dependency that needs it.")


# ---- 11. default-deny NetworkPolicy per tier namespace (stack) -------------------------------------

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


# ---- 12. Pod Security Standard restricted ------------------------------------------------------------

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


# ---- 13. stateful resources protected ----------------------------------------------------------------

def check_stateful(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """Volumes, claims and StatefulSets protected; every data path the program stamps
    (the catalog's volumes) on a named volume / a PersistentVolumeClaim."""
    fix = "Fix: create it with ResourceOptions(protect=True)."
    if res.type in (VOLUME, PVC, STATEFULSET) and not res.protect:
        what = {VOLUME: "Docker volume", PVC: "PersistentVolumeClaim", STATEFULSET: "StatefulSet"}[res.type]
        yield f"{what} {res.name} holds data but is not protected from deletion. {fix}"
    retention = get_in(res.props, "spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted")
    if res.type == STATEFULSET and cfg.get("requireRetainPolicy") and retention == "Delete":
        yield (f"StatefulSet {res.name} deletes its PersistentVolumeClaims with it. Fix: whenDeleted: Retain "
                   "(the default).")
    if res.type == CONTAINER:
        service = docker_service(res)
        named = {as_dict(m).get("containerPath") for m in as_list(res.props.get("volumes"))
                 if as_dict(m).get("volumeName")}
        for path in v.split(docker_labels(res.props).get(v.DOCKER_DATA_PATHS)):
            if path not in named:
                yield (f"{service}: {path} is not on a named volume, so replacing the container loses its "
                       "data. Fix: mount the catalog's Volume.")
    elif res.type in (DEPLOYMENT, STATEFULSET):
        service = k8s_service(res)
        spec = pod_spec(res) or {}
        paths = v.split(annotation(res, v.K8S_DATA_PATHS))
        if not paths:
            return
        templates = as_list(get_in(res.props, "spec", "volumeClaimTemplates"))
        claims = {str(get_in(t, "metadata", "name")) for t in templates}
        claims |= {str(as_dict(vol).get("name")) for vol in as_list(spec.get("volumes"))
                   if as_dict(vol).get("persistentVolumeClaim")}
        mounts = {str(get_in(m, "mountPath")): str(get_in(m, "name")) for _, c in pod_containers(spec, init=False)
                  for m in as_list(c.get("volumeMounts"))}
        for path in paths:
            if mounts.get(path) not in claims:
                yield (f"{service}: {path} is not on a PersistentVolumeClaim, so a new pod loses its data. "
                       "Fix: mount a PVC (or a volumeClaimTemplate) there.")


# ---- 14. secrets as files where the image reads them ------------------------------------------------------

def check_secret_files(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    """A Kubernetes container takes a Secret through an environment variable only where the
    catalog writes why its image reads no file (stamp `optiinfra.io/secret-env`): anything in
    the environment leaks into `kubectl describe`, crash dumps and child processes."""
    if res.type not in WORKLOADS:
        return
    if str(annotation(res, v.K8S_SECRET_ENV) or "").strip():
        return
    service = k8s_service(res)
    for cname, c in pod_containers(pod_spec(res) or {}):
        names = sorted(str(as_dict(env).get("name")) for env in as_list(c.get("env"))
                       if get_in(env, "valueFrom", "secretKeyRef") is not None)
        if names:
            yield (f"{service}: container {cname} takes {', '.join(names)} from a Secret as environment "
                   f"variables. Fix: mount the Secret read-only and point the image's *_FILE option at it "
                   f"(catalog SecretFile), or write why the image reads no file (Service.secret_env_reason, "
                   f"stamped as {v.K8S_SECRET_ENV}).")


# ---- 15. every stateful service backed up, elsewhere -----------------------------------------------------

def _own_claim(claim: str, templates: set[str], workload: str) -> bool:
    """A claim a StatefulSet's pods own: `<template>-<set>-<ordinal>`."""
    return any(claim.startswith(f"{t}-{workload}-") and claim.rsplit("-", 1)[-1].isdigit() for t in templates)


def _backup_problems(job: Resource, workload: Resource, templates: set[str]) -> Iterator[str]:
    name = str(get_in(job.props, "metadata", "name"))
    if not str(get_in(job.props, "spec", "schedule") or "").strip():
        yield f"backup CronJob {name} has no schedule"
    target = str(annotation(job, v.K8S_BACKUP_TARGET) or "")
    spec = pod_spec(job) or {}
    mounts = [as_dict(m) for _, c in pod_containers(spec, init=False) for m in as_list(c.get("volumeMounts"))]
    mount = next((m for m in mounts if m.get("mountPath") == target), None)
    volume = next((as_dict(x) for x in as_list(spec.get("volumes"))
                   if mount is not None and as_dict(x).get("name") == mount.get("name")), None)
    if mount is None or volume is None:
        yield f"backup CronJob {name} mounts nothing at its target ({v.K8S_BACKUP_TARGET}: {target or 'unset'})"
        return
    if mount.get("readOnly"):
        yield f"backup CronJob {name} mounts its target {target} read-only"
    if "emptyDir" in volume:
        yield f"backup CronJob {name} writes to an emptyDir, which is gone when the job's pod is"
    claim = str(get_in(volume, "persistentVolumeClaim", "claimName") or "")
    if claim and _own_claim(claim, templates, str(get_in(workload.props, "metadata", "name"))):
        yield f"backup CronJob {name} writes to {claim}, the service's own volume (lost with it)"


def check_backups(resources: Sequence[Resource], cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every stateful workload (a StatefulSet, a Docker container with data paths) has a
    backup schedule whose target is not its own volume, or the catalog's stamped reason why
    its data is not worth one."""
    jobs: dict[tuple[str, str], list[Resource]] = {}
    for r in resources:
        if r.type == CRONJOB and annotation(r, v.K8S_BACKUP_OF):
            key = (str(get_in(r.props, "metadata", "namespace")), str(annotation(r, v.K8S_BACKUP_OF)))
            jobs.setdefault(key, []).append(r)
    fix = ("Fix: set optiinfra:backups.enabled=true (schedule and retention in optiinfra:backups), or declare in "
           "the catalog why the service needs none (Backup.none_reason).")
    for r in resources:
        if r.type == STATEFULSET:
            if str(annotation(r, v.K8S_NO_BACKUP) or "").strip():
                continue
            service = k8s_service(r)
            ns = str(get_in(r.props, "metadata", "namespace"))
            templates = {str(get_in(t, "metadata", "name")) for t in as_list(get_in(r.props, "spec",
                                                                                    "volumeClaimTemplates"))}
            found = jobs.get((ns, service), [])
            if not found:
                yield r.urn, f"{service}: stateful, but no backup CronJob backs it up. {fix}"
            for job in found:
                for problem in _backup_problems(job, r, templates):
                    yield r.urn, f"{service}: {problem}. Fix: write backups to a claim of their own."
        elif r.type == CONTAINER:
            labels = docker_labels(r.props)
            if not v.split(labels.get(v.DOCKER_DATA_PATHS)) or str(labels.get(v.DOCKER_NO_BACKUP) or "").strip():
                continue
            service = docker_service(r)
            target = str(labels.get(v.DOCKER_BACKUP_TARGET) or "")
            if not target or not str(labels.get(v.DOCKER_BACKUP_SCHEDULE) or "").strip():
                yield r.urn, f"{service}: stateful, but no backup target and schedule are stamped. {fix}"
                continue
            own = {str(as_dict(m).get("volumeName")) for m in as_list(r.props.get("volumes"))}
            if target in own or "/" not in target:
                yield r.urn, (f"{service}: backups go to {target}, not a host directory apart from its volumes. "
                              "Fix: set optiinfra:backups.hostDir to a directory.")


# ---- 16. every Secret a workload reads is one the stack writes ------------------------------------------

def _secret_keys(res: Resource) -> set[str] | None:
    """The keys of the Secret a Secret or an ExternalSecret makes (None: cannot tell)."""
    if res.type == K8S_SECRET:
        keys = {k for k in str(annotation(res, v.K8S_SECRET_KEYS) or "").split(",") if k}
        for field in ("data", "stringData"):
            keys |= set(as_dict(res.props.get(field)))
        return keys or None
    template = as_dict(get_in(res.props, "spec", "target", "template"))
    if template.get("templateFrom"):
        return None  # keys rendered from another object
    data = {str(get_in(d, "secretKey")) for d in as_list(get_in(res.props, "spec", "data"))}
    if template.get("data") is None:
        return data
    templated = set(as_dict(template.get("data")))
    return templated | data if template.get("mergePolicy") == "Merge" else templated


def _written_secrets(resources: Sequence[Resource]) -> dict[tuple[str, str], tuple[Resource, set[str] | None]]:
    """(namespace, Secret name) -> what writes it: a Secret, or an ExternalSecret's target."""
    out: dict[tuple[str, str], tuple[Resource, set[str] | None]] = {}
    for r in resources:
        ns, name = str(get_in(r.props, "metadata", "namespace") or ""), get_in(r.props, "metadata", "name")
        if r.type == EXTERNAL_SECRET:
            name = get_in(r.props, "spec", "target", "name") or name
        elif r.type != K8S_SECRET:
            continue
        if isinstance(name, str) and not is_unknown(name):
            out[(ns, name)] = (r, _secret_keys(r))
    return out


def _secret_reads(spec: Mapping[str, Any]) -> Iterator[tuple[str, str | None, str]]:
    """(Secret name, key or None for the whole Secret, where) of everything a pod reads from a
    Secret that it does not mark optional."""
    for cname, c in pod_containers(spec):
        for env in as_list(c.get("env")):
            ref = as_dict(get_in(env, "valueFrom", "secretKeyRef"))
            if ref and not ref.get("optional"):
                yield str(ref.get("name")), str(ref.get("key")), f"container {cname} env {as_dict(env).get('name')}"
        for src in as_list(c.get("envFrom")):
            ref = as_dict(get_in(src, "secretRef"))
            if ref and not ref.get("optional"):
                yield str(ref.get("name")), None, f"container {cname} envFrom"
    for vol in as_list(spec.get("volumes")):
        sec = as_dict(get_in(vol, "secret"))
        if not sec or sec.get("optional"):
            continue
        items = [as_dict(i).get("key") for i in as_list(sec.get("items"))]
        for key in items or [None]:
            yield str(sec.get("secretName")), None if key is None else str(key), f"volume {as_dict(vol).get('name')}"


def check_secret_references(resources: Sequence[Resource], cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Whichever source writes a Secret (the program's Secret, or the External Secrets
    Operator from an ExternalSecret's target), a pod that reads it finds it, with the key."""
    written = _written_secrets(resources)
    for res in resources:
        if res.type not in WORKLOADS:
            continue
        ns = str(get_in(res.props, "metadata", "namespace") or "")
        for name, key, where in _secret_reads(pod_spec(res) or {}):
            if is_unknown(name) or (key is not None and is_unknown(key)):
                continue
            source = written.get((ns, name))
            if source is None:
                others = sorted(n for (n_ns, n) in written if n_ns == ns)
                yield res.urn, (f"{res.name}: {where} reads Secret {name}, which nothing in the stack writes in "
                                f"namespace {ns} (written there: {', '.join(others) or 'none'}). Fix: read the tier's "
                                "credentials Secret, or make the ExternalSecret's spec.target.name that name.")
                continue
            writer, keys = source
            if key is not None and keys is not None and key not in keys:
                kind = "ExternalSecret" if writer.type == EXTERNAL_SECRET else "Secret"
                yield res.urn, (f"{res.name}: {where} reads key {key} of Secret {name}, but the {kind} "
                                f"{writer.name} writes only {', '.join(sorted(keys)) or 'no keys'}. Fix: render "
                                "both from the catalog (the backend writes every key its workloads read).")


# ---- the pack ------------------------------------------------------------------------------------------

def _list_of(item: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object", "properties": item, "required": required,
                                       "additionalProperties": False}}


CREDENTIAL_NAME = r"(?i)(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|(^|_)KEY$|CREDENTIAL|AUTH$)"
USER_NAME = r"(?i)(^|_)(USER|USERNAME|LOGIN)$"
TIERS = list(v.TIERS)
DOCKER = frozenset({CONTAINER})

RULES: tuple[Rule, ...] = (
    Rule(
        name="unique-host-ports",
        description="No two services bind the same host port.",
        severity="high",
        config={},
        remediation="Give one of the services another host port (optiinfra:services.<name>.hostPort).",
        check_stack=check_unique_host_ports,
        tags=("exposure",),
    ),
    Rule(
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
    ),
    Rule(
        name="port-allocation-bands",
        description=("Host ports (Docker) and Service ports (Kubernetes) lie inside the seed's allocation band "
                     "of their catalog Port, unless the catalog writes why beside that Port."),
        severity="low",
        config={},
        remediation="Pick a free port in the band, or write the reason beside the Port in infra/catalog.py.",
        check=check_port_bands,
        types=frozenset({CONTAINER, K8S_SERVICE}),
        tags=("ports",),
    ),
    Rule(
        name="images-pinned",
        description="Images are pinned to a version tag (never latest, never untagged); a stack may require digests.",
        severity="high",
        config={"requireDigest": {"type": "boolean", "default": False,
                                  "description": "Every image must carry @sha256:... (also on when the stack sets "
                                                 "optiinfra:kubernetes.requireDigest)."}},
        remediation="Pin a version tag (and a digest where required).",
        check=check_images,
        types=frozenset({REMOTE_IMAGE, CONTAINER}) | WORKLOADS,
        tags=("supply-chain",),
    ),
    Rule(
        name="health-checks",
        description=("Every long-running container has a health check (Docker) or readiness and liveness probes, "
                     "plus a startup probe for slow starters (Kubernetes)."),
        severity="medium",
        config={
            "exemptions": {**_list_of({"service": {"type": "string"}, "reason": {"type": "string"}},
                                      ["service", "reason"]), "default": [],
                           "description": "Services without an in-container check, each with what watches it instead."},
            "requireStartupProbe": {"type": "boolean", "default": True,
                                    "description": "Slow starters (catalog HealthCheck.slow_start) need a "
                                                   "startupProbe."},
        },
        remediation="Declare a HealthCheck the image can run, or exempt the service with its reason.",
        check=check_health,
        types=DOCKER | LONG_RUNNING,
        tags=("reliability",),
    ),
    Rule(
        name="resource-limits",
        description="Every container has a memory and a CPU limit.",
        severity="medium",
        config={"requirePidsLimit": {"type": "boolean", "default": False,
                                     "description": "Docker containers also need pidsLimit (CIS 5.28)."}},
        remediation="Set the service's Resources in the catalog or memory/cpu in stack config.",
        check=check_limits,
        types=DOCKER | WORKLOADS,
        tags=("reliability", "CIS-5.10", "CIS-5.11"),
    ),
    Rule(
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
    ),
    Rule(
        name="no-plaintext-credentials",
        description=("An environment value whose name looks like a password, token, key or secret is a secret "
                     "(on Kubernetes: a secretKeyRef); no URL carries a password in plaintext; an ExternalSecret "
                     "takes every value from its store."),
        severity="critical",
        config={
            "namePattern": {"type": "string", "default": CREDENTIAL_NAME,
                            "description": "Regular expression for names of credential-bearing variables."},
            "kubernetesRequireSecretRef": {"type": "boolean", "default": True,
                                           "description": "On Kubernetes a credential comes from a Secret "
                                                          "(valueFrom.secretKeyRef), never a literal env value."},
        },
        remediation="Deliver the value as a secret Output / Kubernetes Secret.",
        check=check_plaintext,
        types=DOCKER | WORKLOADS | frozenset({K8S_SECRET, EXTERNAL_SECRET, CONFIGMAP}),
        tags=("credentials",),
    ),
    Rule(
        name="no-default-credentials",
        description=("No credential is a well-known default (admin, password, postgres, changeme, empty, ...), "
                     "and no admin account keeps its default name."),
        severity="critical",
        config={
            "namePattern": {"type": "string", "default": CREDENTIAL_NAME,
                            "description": "Regular expression for names of credential-bearing variables."},
            "extraDefaults": {"type": "array", "items": {"type": "string"}, "default": [],
                              "description": "Values refused on top of the known defaults "
                                             "(optiinfra_policies/known_defaults.json)."},
            "userPattern": {"type": "string", "default": USER_NAME,
                            "description": "Regular expression for names of account-name variables."},
            "defaultUsers": {"type": "array", "items": {"type": "string"}, "default": ["admin", "root"],
                             "description": "Account names refused (the seed's Grafana admin/admin)."},
        },
        remediation="Let the stack generate the credential, or set a strong one as a stack secret.",
        check=check_default_credentials,
        types=DOCKER | WORKLOADS | frozenset({K8S_SECRET}),
        tags=("credentials",),
    ),
    Rule(
        name="tier-isolation",
        description=("A container joins only the networks its connections need (infra.graph networks_of), never "
                     "the default bridge; forbidden tier pairs (a database and the frontend) never share a network; "
                     "on Kubernetes a workload runs in its tier's namespace."),
        severity="high",
        config={"forbidden": {**_list_of({"tier": {"type": "string", "enum": TIERS},
                                          "network": {"type": "string", "enum": TIERS},
                                          "reason": {"type": "string"}}, ["tier", "network"]),
                              "default": [{"tier": "databases", "network": "frontend"},
                                          {"tier": "frontend", "network": "databases"}],
                              "description": "Tier pairs that never share a network or a NetworkPolicy peer."}},
        remediation="Remove the network (or the dependency that adds it).",
        check=check_tier_isolation,
        types=DOCKER | WORKLOADS | frozenset({NETWORK_POLICY}),
        tags=("isolation", "CIS-5.29"),
    ),
    Rule(
        name="namespace-default-deny",
        description="Every Kubernetes tier namespace has a default-deny NetworkPolicy.",
        severity="high",
        config={"policyTypes": {"type": "array", "items": {"type": "string", "enum": ["Ingress", "Egress"]},
                                "default": ["Ingress"],
                                "description": "Directions the default-deny policy must cover."}},
        remediation="Add a NetworkPolicy with podSelector {} and no rules to each tier namespace.",
        check_stack=check_default_deny,
        tags=("isolation",),
    ),
    Rule(
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
    ),
    Rule(
        name="stateful-resources-protected",
        description=("Data volumes, PersistentVolumeClaims and StatefulSets are protected from deletion, and every "
                     "stateful service keeps its data on them."),
        severity="high",
        config={"requireRetainPolicy": {"type": "boolean", "default": True,
                                        "description": "StatefulSets keep their PVCs when deleted."}},
        remediation="Create them with protect=True and mount the catalog's volumes.",
        check=check_stateful,
        types=frozenset({VOLUME, PVC, STATEFULSET, DEPLOYMENT, CONTAINER}),
        tags=("data",),
    ),
    Rule(
        name="stateful-backups",
        description=("Every stateful service has a backup schedule whose target is not its own volume (a claim of "
                     "its own on Kubernetes, a host directory on Docker), or the catalog's reason it needs none."),
        severity="high",
        config={},
        remediation="Keep optiinfra:backups enabled; declare a Backup for the service in infra/catalog.py.",
        check_stack=check_backups,
        tags=("data", "backup"),
    ),
    Rule(
        name="secrets-as-files",
        description=("On Kubernetes a credential reaches a container as a file from a mounted Secret; an "
                     "environment variable only where the catalog writes why the image reads no file."),
        severity="medium",
        config={},
        remediation="Declare a SecretFile for the credential in infra/catalog.py, or the image's reason "
                    "(secret_env_reason).",
        check=check_secret_files,
        types=WORKLOADS,
        tags=("credentials",),
    ),
    Rule(
        name="secret-references",
        description=("Every Secret key a Kubernetes pod reads (env secretKeyRef, envFrom, a secret volume) is "
                     "written by the stack: a Secret, or the target of an ExternalSecret (External Secrets "
                     "Operator) that writes that key."),
        severity="high",
        config={},
        remediation="Read the tier's credentials Secret; keep an ExternalSecret's spec.target.name and template "
                    "keys as the backend renders them.",
        check_stack=check_secret_references,
        tags=("credentials",),
    ),
)


def by_name(name: str) -> Rule:
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(name)


def names() -> list[str]:
    return [r.name for r in RULES]
