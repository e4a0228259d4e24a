"""What a port change sets off, and the risks a diff carries.

For every changed port, `impact()` derives from the resolved model (the graph, not a text
search) what follows from it: the service's own container or Service, its health check
or probe, the connection URLs of its dependents, the scraper's targets and the
datasource that points at the scraper, NetworkPolicy rules, Ingress backends and stack
outputs; each item is checked against what the render shows. `warnings_for()` turns port
facts and the typed notes of the resource changes into typed alerts (`WarningKind`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from policies.optiinfra_policies import vocabulary as v

from ..graph import EdgeKind
from ..model import Dsn, Generated, HttpCheck, TcpCheck, Url
from .compare import NoteKind, Op, ResourceChange, namespace, object_name
from .replace import head
from .snapshot import RUNS_A_SERVICE, PortFact, Snapshot, State

if TYPE_CHECKING:
    from ..graph import Resolved


class EffectKind(enum.StrEnum):
    CONTAINER = "container"
    HEALTH = "health"
    DEPENDENT = "dependent"
    SCRAPE = "scrape"
    DATASOURCE = "datasource"
    NETWORK_POLICY = "network-policy"
    INGRESS = "ingress"
    OUTPUT = "output"


class WarningKind(enum.StrEnum):
    STATEFUL_REPLACE = "stateful-replace"
    DATA_AT_RISK = "data-at-risk"
    HOST_PORT_TAKEN = "host-port-taken"
    BAND = "band"
    UNREACHABLE = "unreachable"
    STALE_PORT = "stale-port"
    NO_DELETE_FIRST = "no-delete-first"
    DORMANT_UPDATE = "dormant-update"
    STATEFUL_RESTART = "stateful-restart"
    PROTECTED_REPLACE = "protected-replace"
    NOT_RESTARTED = "not-restarted"


@dataclass(frozen=True)
class PortChange:
    service: str
    port: str
    old: PortFact | None
    new: PortFact | None

    @property
    def container_changed(self) -> bool:
        return (self.old.container if self.old else None) != (self.new.container if self.new else None)

    @property
    def host_changed(self) -> bool:
        a, b = self.old, self.new
        return (a.host if a else None, a.bind if a else None) != (b.host if b else None, b.bind if b else None)

    def text(self) -> str:
        a, b = self.old, self.new
        parts = []
        if a and b and self.container_changed:
            parts.append(f"container port {a.container} -> {b.container}")
        if a and b and self.host_changed:
            parts.append(f"host {a.host_text()} -> {b.host_text()}")
        if a and b and not self.container_changed:
            parts[-1] += f" (container port {b.container} unchanged)"
        if a is None and b is not None:
            parts.append(f"new port {b.container}, host {b.host_text()}")
        if b is None and a is not None:
            parts.append(f"port {a.container} removed")
        return f"{self.service} {self.port}: " + ", ".join(parts)


def port_changes(old: Snapshot, new: Snapshot) -> list[PortChange]:
    a = {p.key: p for p in old.ports}
    b = {p.key: p for p in new.ports}
    services_a = {p.service for p in old.ports}
    services_b = {p.service for p in new.ports}
    out = []
    for key in sorted(set(a) | set(b)):
        if key[0] not in services_a or key[0] not in services_b:
            continue  # a service added or removed: its resources say it all
        pa, pb = a.get(key), b.get(key)
        if pa is not None and pb is not None and (pa.container, pa.host, pa.bind) == (pb.container, pb.host, pb.bind):
            continue
        out.append(PortChange(key[0], key[1], pa, pb))
    return out


@dataclass
class Effect:
    """One thing that follows from a port change (or, with `follows=False`, one that a
    reviewer might expect to and that does not, with the reason)."""

    kind: EffectKind
    subject: str
    detail: str
    follows: bool
    urns: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    seen: str = ""
    """What the render shows for `urns`/`outputs` (filled by `impact`)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "subject": self.subject, "detail": self.detail, "follows": self.follows,
                "resources": self.urns, "outputs": self.outputs, "seen": self.seen}


@dataclass(frozen=True)
class DiffWarning:
    """Something a reviewer of the diff should know before deploying it (`diff` prints it with `!`)."""

    kind: WarningKind
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "message": self.message}


@dataclass
class Impact:
    change: PortChange
    effects: list[Effect]

    def to_json(self) -> dict[str, Any]:
        def fact(p: PortFact | None) -> dict[str, Any] | None:
            return None if p is None else {"container": p.container, "host": p.host, "bind": p.bind}
        return {"service": self.change.service, "port": self.change.port, "old": fact(self.change.old),
                "new": fact(self.change.new), "summary": self.change.text(),
                "effects": [e.to_json() for e in self.effects]}


# ---- what follows from a port change ---------------------------------------------------------------

def _urns(snap: Snapshot, service: str, types: Collection[str] = RUNS_A_SERVICE) -> list[str]:
    return sorted(s.urn for s in snap.of_service(service) if s.type in types)


def _refs(model: Resolved, target: str, port_name: str) -> dict[str, list[str]]:
    """Services whose environment or arguments carry `target`'s address with this port:
    {service: [env names / 'command']}, from the catalog's Url/Dsn values."""
    out: dict[str, list[str]] = {}
    conn = model.services[target].service.connection if target in model.services else None
    for eff in model.services.values():
        items = [(name, x) for name, x in eff.service.env] + [("command", x) for x in eff.service.command]
        for name, value in items:
            if not isinstance(value, (Url, Dsn)) or value.service != target or not conn:
                continue
            if (value.port if isinstance(value, Dsn) and value.port else conn.port) != port_name:
                continue
            template = conn.template if isinstance(value, Url) else value.template
            if "{port}" in template:
                out.setdefault(eff.name, []).append(name)
    return out


def _stale(model: Resolved, change: PortChange) -> list[DiffWarning]:
    """Values in the catalog that restate the old container port instead of following it."""
    if not (change.old and change.new and change.container_changed):
        return []
    old, warnings = str(change.old.container), []
    for eff in model.services.values():
        for name, value in [*eff.service.env, *(("command", x) for x in eff.service.command)]:
            if eff.name == change.service and isinstance(value, str) and re.search(rf"(?<!\d){old}(?!\d)", value):
                warnings.append(DiffWarning(WarningKind.STALE_PORT,
                                            f"{eff.name} sets {name}={value}: it still names port "
                                            f"{old}, so the process would not listen on {change.new.container}"))
            if isinstance(value, Dsn) and value.service == change.service and "{port}" not in value.template \
                    and re.search(rf"(?<!\d){old}(?!\d)", value.template):
                warnings.append(DiffWarning(WarningKind.STALE_PORT, f"{eff.name} {name} writes port {old} of "
                                            f"{change.service} literally ({value.template!r}): it will not follow"))
    return warnings


def _scrape_file(model: Resolved, scraper: str) -> str:
    """The file name of the scraper's generated scrape config."""
    files = model.services[scraper].service.files
    return next((PurePosixPath(f.path).name for f in files if f.generator is Generated.SCRAPE_CONFIG), "its config")


def impact(changes: list[PortChange], model: Resolved, old: Snapshot, new: Snapshot,
           resource_changes: list[ResourceChange], outputs: list[tuple[str, Any, Any]]) -> list[Impact]:
    """What follows from each port change, from the new model's graph; each item is
    checked against the render (`Effect.seen`)."""
    ops = {c.urn: c for c in resource_changes}
    changed_outputs = {p for p, _, _ in outputs}
    kube = new.target == "kubernetes"
    scraper = model.scraper()
    urls = {**(old.outputs.get("urls") or {}), **(new.outputs.get("urls") or {})}
    result = []
    for ch in changes:
        if ch.service not in model.services:
            continue
        eff = model.services[ch.service]
        svc = eff.service
        is_scraper = scraper is not None and scraper.name == ch.service
        cport = ch.new.container if ch.new else None
        effects: list[Effect] = []
        moved = ch.container_changed
        # The service's own resources.
        if kube:  # only container ports change on Kubernetes (there are no host ports)
            effects.append(Effect(EffectKind.CONTAINER, ch.service, "container port of its workload and its "
                                  "Service port", True, _urns(new, ch.service)))
        elif (ch.old and ch.old.host) or (ch.new and ch.new.host):
            effects.append(Effect(EffectKind.CONTAINER, ch.service, "published port mapping of its container", True,
                                  _urns(new, ch.service, (v.DOCKER_CONTAINER,))))
        else:
            effects.append(Effect(EffectKind.CONTAINER, ch.service, "not published: its container has no port "
                                  "mapping to change", False))
        # Health check / probe.
        probe = svc.health.probe if svc.health else None
        probe_port = probe.port if isinstance(probe, (HttpCheck, TcpCheck)) else None
        if probe_port == ch.port:
            kind = "probe" if kube else "health check"
            what = f"{probe.path} on" if isinstance(probe, HttpCheck) else "TCP connect to"
            if moved:
                old_port = ch.old.container if ch.old else "-"
                effects.append(Effect(EffectKind.HEALTH, ch.service, f"{kind} {what} port {old_port} -> {cport}",
                                      True, _urns(new, ch.service, v.SERVICE_WORKLOADS)))
            else:
                effects.append(Effect(EffectKind.HEALTH, ch.service, f"unaffected: the {kind} ({what} {cport}) "
                                      "runs against the container port, not the host port", False))
        # Dependents that carry its address.
        refs = _refs(model, ch.service, ch.port)
        edges = sorted({e.source for e in model.in_edges(ch.service)
                        if e.kind is EdgeKind.DEPENDS and e.port == ch.port})
        readers = _file_readers(model, ch.service, ch.port)
        for dep in sorted(set(refs) | set(edges)):
            names = ", ".join(refs.get(dep, [])) or "no URL with this port"
            if dep == ch.service or (dep in readers and dep not in refs):
                continue  # itself, or covered below (a generated config file carries the address)
            if moved and dep in refs:
                effects.append(Effect(EffectKind.DEPENDENT, dep, f"{names} -> {ch.service}:{cport}", True,
                                      _urns(new, dep) + _env_secrets(new, dep, refs[dep])))
            else:
                why = ("dependents dial the container port over the tier network, not the host port" if not moved
                       else "it holds no URL with this port")
                effects.append(Effect(EffectKind.DEPENDENT, dep, f"unaffected ({names}): {why}", False))
        # The scraper scraping it (its scrape config is uploaded into its container / ConfigMap).
        scrapers = sorted({e.source for e in model.in_edges(ch.service) if e.kind is EdgeKind.SCRAPE})
        metrics_port = svc.metrics[0] if svc.metrics else None
        if is_scraper and metrics_port == ch.port:
            scrapers = [ch.service]  # it scrapes itself on localhost
        for who in scrapers:
            if svc.metrics is None or metrics_port != ch.port:
                continue
            if moved:
                effects.append(Effect(EffectKind.SCRAPE, who, f"scrape target {ch.service}:{cport}{svc.metrics[1]} "
                                      f"in {_scrape_file(model, who)}", True, _config_holders(new, who)))
            else:
                effects.append(Effect(EffectKind.SCRAPE, who, f"unaffected: scraped at {ch.service}:{cport} "
                                      "(container port)", False))
        # A generated datasource is the scraper's connection.
        conn = svc.connection
        if is_scraper and conn and conn.port == ch.port:
            for holder in sorted(e.name for e in model.services.values()
                                 if any(f.generator is Generated.DATASOURCES for f in e.service.files)):
                if moved:
                    effects.append(Effect(EffectKind.DATASOURCE, holder, f"datasource url http://{ch.service}:{cport}",
                                          True, _config_holders(new, holder)))
                else:
                    effects.append(Effect(EffectKind.DATASOURCE, holder, "unaffected: the datasource uses the "
                                          "container port", False))
        # Kubernetes: NetworkPolicies and Ingresses that name the old port.
        if kube and ch.old and moved:
            effects.extend(_k8s_port_users(old, ch))
        # Stack outputs: the port map and quick-access URLs carry host ports (Docker); the
        # in-cluster endpoints carry the Service port of a service's first port (Kubernetes).
        keys = []
        primary = svc.primary_port.name if svc.primary_port else None
        if ch.host_changed and not kube:
            keys.append(f"ports.{ch.service}.{ch.port}")
            if ch.port == primary and ch.service in urls:
                keys.append(f"urls.{ch.service}")
        if moved and kube and ch.port == primary and ch.service in (old.outputs.get("endpoints") or {}):
            keys.append(f"endpoints.{ch.service}")
        if keys:
            effects.append(Effect(EffectKind.OUTPUT, "stack outputs", ", ".join(keys), True, outputs=keys))
        else:
            effects.append(Effect(EffectKind.OUTPUT, "stack outputs", "unaffected: " + (
                "the endpoints carry the first port's Service port" if kube else
                "outputs carry host ports only"), False))
        for e in effects:
            if e.urns:
                seen = sorted({ops[u].op.value for u in e.urns if u in ops}) or ["no change"]
                e.seen = "/".join(seen)
            elif e.outputs:
                e.seen = "changed" if all(_output_seen(k, changed_outputs) for k in e.outputs) else "NOT changed"
        result.append(Impact(ch, effects))
    return result


def _file_readers(model: Resolved, service: str, port: str) -> set[str]:
    """Services whose generated config files carry `service`'s address on `port`
    (monitoring.py: the scrape config lists every scrape target, the datasource is the
    scraper's connection)."""
    svc = model.services[service].service
    out = set()
    for eff in model.services.values():
        for f in eff.service.files:
            if f.generator is Generated.SCRAPE_CONFIG and svc.metrics and svc.metrics[0] == port:
                out.add(eff.name)
            if f.generator is Generated.DATASOURCES and svc.scraper and svc.connection \
                    and svc.connection.port == port:
                out.add(eff.name)
    return out


def _output_seen(key: str, changed: set[str]) -> bool:
    return any(p == key or p.startswith(key + ".") or key.startswith(p + ".") for p in changed)


def _config_holders(snap: Snapshot, service: str) -> list[str]:
    """Resources that carry a generated config file of `service`: its container (Docker
    upload) or its workload and ConfigMap (Kubernetes)."""
    return _urns(snap, service, v.SERVICE_WORKLOADS) + sorted(
        s.urn for s in snap.resources.values()
        if s.type == v.K8S_CONFIGMAP and v.service_of(s.type, s.inputs) == service)


def _k8s_port_users(old: Snapshot, ch: PortChange) -> list[Effect]:
    """NetworkPolicies and Ingresses whose rules or backends name the service's old port."""
    assert ch.old is not None
    effects = []
    for s in sorted(old.resources.values(), key=lambda s: s.urn):
        if s.type == v.K8S_NETWORK_POLICY and _names_port(s.inputs, ch.old.container) \
                and _mentions_service(s.inputs, ch.service):
            effects.append(Effect(EffectKind.NETWORK_POLICY, object_name(s), f"allows port {ch.old.container}",
                                  True, [s.urn]))
        if s.type == v.K8S_INGRESS and ch.service in _ingress_backends(s.inputs):
            effects.append(Effect(EffectKind.INGRESS, object_name(s), "backend service port", True, [s.urn]))
    return effects


def _names_port(value: Any, port: int) -> bool:
    if isinstance(value, dict):
        return value.get("port") == port or any(_names_port(x, port) for x in value.values())
    if isinstance(value, list):
        return any(_names_port(x, port) for x in value)
    return False


def _ingress_backends(inputs: dict[str, Any]) -> set[str]:
    """The Services an Ingress routes to (an Ingress named after a UI may route to the sign-in proxy)."""
    spec = inputs.get("spec") or {}
    names = {((spec.get("defaultBackend") or {}).get("service") or {}).get("name")}
    for rule in spec.get("rules") or []:
        for path in ((rule or {}).get("http") or {}).get("paths") or []:
            names.add((((path or {}).get("backend") or {}).get("service") or {}).get("name"))
    return {n for n in names if isinstance(n, str)}


def _mentions_service(value: Any, service: str) -> bool:
    if isinstance(value, dict):
        return any(_mentions_service(x, service) for x in value.values())
    if isinstance(value, list):
        return any(_mentions_service(x, service) for x in value)
    return value == service


def _pod_spec(state: State) -> dict[str, Any]:
    """A workload's pod spec ({} for anything else)."""
    path = v.K8S_POD_SPEC_PATH.get(state.type)
    if path is None:
        return {}
    node: Any = state.inputs
    for step in path:
        node = node.get(step) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _env_secrets(snap: Snapshot, service: str, names: list[str]) -> list[str]:
    """Kubernetes: the Secrets a service's workload reads these env variables from (a URL
    that embeds a password lives in the tier's Secret, not in the workload)."""
    found = set()
    for w in snap.of_service(service):
        for c in _pod_spec(w).get("containers") or []:
            for e in c.get("env") or []:
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}) if isinstance(e, dict) else {}
                if e.get("name") in names and ref.get("name"):
                    found.add((namespace(w), str(ref["name"])))
    return sorted(s.urn for s in snap.resources.values()
                  if s.type == v.K8S_SECRET and (namespace(s), object_name(s)) in found)


_REFS = ((v.K8S_SECRET, "secretKeyRef", "name"), (v.K8S_SECRET, "secretRef", "name"),
         (v.K8S_SECRET, "secret", "secretName"), (v.K8S_CONFIGMAP, "configMapKeyRef", "name"),
         (v.K8S_CONFIGMAP, "configMapRef", "name"), (v.K8S_CONFIGMAP, "configMap", "name"))
"""How a pod spec refers to a Secret or ConfigMap: (type, key, field holding the name)."""


def _reads(state: State) -> set[tuple[str, str]]:
    """(type, name) of every Secret and ConfigMap a workload's pods read."""
    out: set[tuple[str, str]] = set()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for type_, key, field_ in _REFS:
                ref = x.get(key)
                if isinstance(ref, dict) and ref.get(field_):
                    out.add((type_, str(ref[field_])))
            for y in x.values():
                walk(y)
        elif isinstance(x, list):
            for y in x:
                walk(y)
    walk(_pod_spec(state))
    return out


# ---- warnings ----------------------------------------------------------------------------------------

def _template_annotations(state: State) -> dict[str, Any]:
    """A workload's pod template annotations."""
    template = (state.inputs.get("spec") or {}).get("template") or {}
    return dict((template.get("metadata") or {}).get("annotations") or {})


def not_restarted(new: Snapshot, changes: list[ResourceChange]) -> list[DiffWarning]:
    """A Secret or ConfigMap whose content changes under the same name does not restart the
    pods that read it: they keep the old values until something rolls them."""
    by_urn = {c.urn: c for c in changes}
    out = []
    for c in changes:
        if c.op not in (Op.UPDATE, Op.REPLACE) or c.type not in (v.K8S_SECRET, v.K8S_CONFIGMAP) \
                or any(f.path == "metadata.name" for f in c.changes):
            continue
        kind = v.kind(c.type)
        obj = new.resources[c.urn]
        ns = namespace(obj)
        stale = []
        for w in new.resources.values():
            if w.type not in (v.K8S_DEPLOYMENT, v.K8S_STATEFULSET) or namespace(w) != ns \
                    or (c.type, object_name(obj)) not in _reads(w):
                continue
            if c.type == v.K8S_SECRET and v.K8S_CREDENTIALS_ROLLOUT in _template_annotations(w):
                continue  # its credentials hash changes exactly when a credential it reads does
            wc = by_urn.get(w.urn)
            if wc is None or not any(f.path.startswith("spec.template") for f in wc.changes):
                stale.append(f"{v.kind(w.type).lower()}/{object_name(w)}")
        if stale:
            out.append(DiffWarning(WarningKind.NOT_RESTARTED,
                                   f"{kind} {object_name(obj)} ({ns}) changes, but nothing in the pod templates of "
                                   f"{', '.join(sorted(stale))} does: their pods keep the old values until restarted "
                                   f"(`kubectl -n {ns} rollout restart {' '.join(sorted(stale))}`)"))
    return out


def warnings_for(changes: list[PortChange], model: Resolved, new: Snapshot,
                 resource_changes: list[ResourceChange]) -> list[DiffWarning]:
    out: list[DiffWarning] = []
    by_service: dict[int, list[PortFact]] = {}
    for p in new.ports:
        if p.host is not None:
            by_service.setdefault(p.host, []).append(p)
    for ch in changes:
        b = ch.new
        if b is None or b.host is None or not ch.host_changed:
            out.extend(_stale(model, ch))
            continue
        others = [p for p in by_service.get(b.host, []) if p.key != b.key]
        for p in others:
            out.append(DiffWarning(WarningKind.HOST_PORT_TAKEN, f"host port {b.host} of {b.service} {b.port} is also "
                                   f"published by {p.service} {p.port}"))
        allocated = [p for p in new.ports if p.allocated == b.host and p.key != b.key and p.host != b.host]
        for p in allocated:
            out.append(DiffWarning(WarningKind.HOST_PORT_TAKEN, f"host port {b.host} of {b.service} {b.port} is the "
                                   f"catalog's allocation of {p.service} {p.port} (not published in this stack): "
                                   f"publishing {p.service} would clash"))
        if b.band and b.band_low is not None and b.band_high is not None and not b.band_low <= b.host <= b.band_high:
            was = ch.old.host if ch.old and ch.old.host is not None else ch.old.allocated if ch.old else None
            before = (f" (so was {was})" if was is not None and not b.band_low <= was <= b.band_high else
                      f" ({was} was inside)" if was is not None else "")
            out.append(DiffWarning(WarningKind.BAND,
                                   f"host port {b.host} of {b.service} {b.port} leaves its allocation "
                                   f"band {b.band} {b.band_low}-{b.band_high}{before}"))
        out.extend(_unreachable(new, b))
        out.extend(_stale(model, ch))
    for c in resource_changes:
        if c.op is not Op.REPLACE:
            continue
        who = c.service or c.name
        for note in c.notes:
            if note.kind is NoteKind.DATA_KEPT:
                depth = 2 if v.is_kubernetes(c.type) else 1
                why = ", ".join(sorted({head(f.path, depth) for f in c.changes if f.replaces}))
                out.append(DiffWarning(WarningKind.STATEFUL_REPLACE, f"{who} is stateful and will be replaced ({why}); "
                                       f"{note.text}"))
            elif note.kind is NoteKind.DATA_AT_RISK:
                out.append(DiffWarning(WarningKind.DATA_AT_RISK, f"{who}: {note.text}"))
            elif note.kind is NoteKind.PROTECTED:
                out.append(DiffWarning(WarningKind.PROTECTED_REPLACE, f"{who}: {note.detail}"))
            elif note.kind is NoteKind.NAME_CLASH:
                out.append(DiffWarning(WarningKind.NO_DELETE_FIRST, f"{who}: {note.text}"))
    out.extend(not_restarted(new, resource_changes))
    for c in resource_changes:
        who = c.service or c.name
        for note in c.notes:
            if note.kind is NoteKind.ROLLING_UPDATE and note.detail:
                out.append(DiffWarning(WarningKind.STATEFUL_RESTART, f"{who} is stateful and its pod is recreated "
                                       f"(rolling update); {note.detail}"))
            if note.kind is NoteKind.DORMANT:
                out.append(DiffWarning(WarningKind.DORMANT_UPDATE, f"{who}: {note.detail}"))
    return out


def _unreachable(new: Snapshot, b: PortFact) -> list[DiffWarning]:
    """Docker does not forward published ports of a container that is only on internal networks."""
    internal = {str(s.inputs.get("name")) for s in new.resources.values()
                if s.type == v.DOCKER_NETWORK and s.inputs.get("internal")}
    for s in new.of_service(b.service):
        if s.type != v.DOCKER_CONTAINER:
            continue
        nets = [str(n.get("name")) for n in s.inputs.get("networksAdvanced") or [] if isinstance(n, dict)]
        if nets and all(n in internal for n in nets):
            return [DiffWarning(WarningKind.UNREACHABLE, f"{b.service} is only on the internal network(s) "
                                f"{', '.join(nets)}: Docker does not forward its published port {b.host_text()}")]
    return []
