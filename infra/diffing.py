"""Offline diff of two renders of one stack, and what a port change sets off.

Two snapshots are compared resource by resource (matched by URN):

* the working tree against the working tree with `--set`/`--secret` overrides, or
* a git revision (rendered by that revision's own code, in a subprocess) against the
  working tree.

A changed resource is a *replace* when the provider replaces it on one of the changed
fields (the tables below, written once with the reason), otherwise an *update*.
Secret values never appear: they are compared through a keyed fingerprint (HMAC with a
key made for this one run, never printed) and shown as `[secret]`.

For every changed port, `impact()` derives from the resolved model (the graph, not a text
search) what follows from it: the service's own container or Service, its health check
or probe, the connection URLs of its dependents, Prometheus scrape targets, the Grafana
datasource, NetworkPolicy rules, Ingress backends and stack outputs; and each item is
checked against what the render shows. Warnings name stateful replacements (and whether
their volume is kept), host ports already taken, and ports that leave their band.

This module is also copied into a checkout of the base revision and run there
(`_snapshot_main`); so at import time it needs nothing but `offline` and
`settings.ConfigError`, which every revision has. Everything else is imported where used.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import secrets as random_secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import offline
from .model import Generated
from .settings import ConfigError
from . import stack as stack_config

if TYPE_CHECKING:
    from .graph import Model
    from .model import Catalog

SECRET = "[secret]"
_FP = re.compile(r"\[secret\]#[0-9a-f]{16}")
_ENV_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
KEY_ENV = "OPTIINFRA_DIFF_KEY"
"""Environment variable that hands the fingerprint key to the base revision's renderer."""

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"


# ---- what the providers replace on ----------------------------------------------------

@dataclass(frozen=True)
class Rule:
    replaces: bool
    reason: str


def _group(replaces: bool, fields: str, reason: str) -> dict[str, Rule]:
    return dict.fromkeys(fields.split(), Rule(replaces, reason))


# pulumi-docker is bridged from kreuzwerker/terraform-provider-docker; a field marked
# `ForceNew: true` in its schema (internal/provider/resource_docker_container.go) makes
# Pulumi replace the container. Its update function applies only the resource fields in
# `_DOCKER_LIVE` to the running container (`docker update`); every other non-ForceNew
# field is only recorded in Pulumi's state.
_DOCKER_LIVE = "restart maxRetryCount memory memoryReservation memorySwap cpuShares cpuSet"
DOCKER_CONTAINER: dict[str, Rule] = {
    **_group(True, "name", "the container's fixed name is its identity (ForceNew)"),
    **_group(True, "image", "a container cannot change its image (ForceNew)"),
    **_group(True, "command entrypoints envs user workingDir hostname domainname",
             "the process and its environment are fixed when Docker creates the container (ForceNew)"),
    **_group(True, "ports publishAllPorts",
             "Docker cannot change the published ports of an existing container (ForceNew)"),
    **_group(True, "networksAdvanced networkMode dns dnsOpts dnsSearches hosts",
             "networks and aliases are attached when the container is created (ForceNew)"),
    **_group(True, "volumes mounts", "mounts are fixed at creation (ForceNew); named volumes survive it"),
    **_group(True, "uploads", "files are uploaded once, before the container first starts (ForceNew)"),
    **_group(True, "labels", "labels are fixed at creation (ForceNew)"),
    **_group(True, "capabilities securityOpts privileged readOnly devices deviceRequests ulimits sysctls "
                   "groupAdds pidMode ipcMode usernsMode cgroupnsMode cgroupParent runtime platform shmSize "
                   "storageOpts gpus cpus logDriver logOpts stopSignal stopTimeout tty stdinOpen",
             "runtime and security settings are fixed at creation (ForceNew)"),
    **_group(False, _DOCKER_LIVE, "applied to the running container with `docker update`"),
    **_group(False, "healthcheck wait waitTimeout mustRun rm start attach logs destroyGraceSeconds removeVolumes "
                    "tmpfs init containerReadRefreshTimeoutMilliseconds",
             "not ForceNew: recorded in Pulumi's state only; the running container keeps its old "
             "setting until it is next replaced"),
}
DOCKER_ALL = {
    NETWORK: Rule(True, "the docker provider has no update for networks: every field is ForceNew"),
    VOLUME: Rule(True, "the docker provider has no update for volumes: every field is ForceNew"),
    "random:index/randomPassword:RandomPassword": Rule(
        True, "every argument of a generated password makes a new one (RequiresReplace)"),
}
DOCKER_IMAGE: dict[str, Rule] = {
    **_group(True, "name pullTriggers triggers build", "another image reference is another image (ForceNew)"),
    **_group(False, "keepLocally forceRemove platform", "only used when the image is removed"),
}

# pulumi-kubernetes patches an object in place unless a changed field is in its forceNew
# table (provider/pkg/provider/diff.go): the fields the API server treats as immutable,
# plus ConfigMap/Secret data (replaced so that dependents roll). A replaced object that
# keeps its explicit name is deleted before its replacement is created (the provider says
# so in its Diff response).
_K8S_NAME = _group(True, "metadata.name metadata.namespace",
                   "an object's name and namespace are its identity: another is another object")
_ROLL = "patched in place: the controller replaces the pods with a rolling update"
K8S: dict[str, dict[str, Rule]] = {
    "kubernetes:apps/v1:StatefulSet": {
        **_K8S_NAME,
        **_group(True, "spec.selector spec.serviceName spec.volumeClaimTemplates spec.podManagementPolicy "
                       "spec.revisionHistoryLimit", "immutable in a StatefulSet (forceNew in pulumi-kubernetes)"),
        **_group(False, "spec.template", _ROLL + " (one pod at a time; each keeps its claim)"),
    },
    "kubernetes:apps/v1:Deployment": {
        **_K8S_NAME,
        **_group(True, "spec.selector", "immutable in an apps/v1 Deployment (forceNew in pulumi-kubernetes)"),
        **_group(False, "spec.template", _ROLL),
    },
    "kubernetes:apps/v1:DaemonSet": {
        **_K8S_NAME,
        **_group(True, "spec.selector", "immutable in an apps/v1 DaemonSet (forceNew in pulumi-kubernetes)"),
    },
    "kubernetes:core/v1:Service": {
        **_K8S_NAME,
        **_group(True, "spec.clusterIP", "a Service's clusterIP is immutable"),
        **_group(False, "spec.ports spec.selector spec.type",
                 "patched in place: clients keep the Service's name and cluster IP"),
    },
    PVC: {
        **_K8S_NAME,
        **_group(True, "spec", "a PersistentVolumeClaim's spec is forceNew in pulumi-kubernetes"),
    },
    "kubernetes:core/v1:ConfigMap": {
        **_K8S_NAME,
        **_group(True, "data binaryData", "pulumi-kubernetes replaces a ConfigMap whose data changes"),
    },
    "kubernetes:core/v1:Secret": {
        **_K8S_NAME,
        **_group(True, "type data stringData", "pulumi-kubernetes replaces a Secret whose data or type changes"),
    },
    "kubernetes:batch/v1:Job": {
        **_K8S_NAME,
        **_group(True, "spec.completions spec.parallelism spec.selector spec.template",
                 "immutable in a Job (forceNew in pulumi-kubernetes)"),
    },
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding": {
        **_K8S_NAME, **_group(True, "roleRef", "a binding's roleRef is immutable")},
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding": {
        **_K8S_NAME, **_group(True, "roleRef", "a binding's roleRef is immutable")},
    "kubernetes:storage.k8s.io/v1:StorageClass": {
        **_K8S_NAME, **_group(True, "parameters provisioner", "a StorageClass's provisioner and parameters are "
                                                              "immutable")},
}
_K8S_DEFAULT = Rule(False, "patched in place")
_DEFAULT = Rule(False, "updated in place (not in the replace table)")


def rule_for(type_: str, path: str) -> Rule:
    """The replace rule of a changed field (dotted path) of a resource type."""
    if type_ in DOCKER_ALL:
        return DOCKER_ALL[type_]
    table = DOCKER_CONTAINER if type_ == CONTAINER else DOCKER_IMAGE \
        if type_ == "docker:index/remoteImage:RemoteImage" else K8S.get(type_)
    if table is None:
        if type_.startswith("kubernetes:"):
            return _K8S_NAME.get(_top(path, 2), _K8S_DEFAULT)
        return _DEFAULT
    best: tuple[int, Rule] | None = None
    for key, rule in table.items():
        covers = path == key or path.startswith(key + ".") or path.startswith(key + "[")
        if covers and (best is None or len(key) > best[0]):
            best = (len(key), rule)
    if best:
        return best[1]
    return _K8S_DEFAULT if type_.startswith("kubernetes:") else _DEFAULT


def _top(path: str, parts: int) -> str:
    return ".".join(re.split(r"[.\[]", path)[:parts])


# ---- snapshots --------------------------------------------------------------------------

@dataclass(frozen=True)
class PortFact:
    """One container port of one service as a stack deploys it."""

    service: str
    tier: str
    port: str
    container: int
    protocol: str
    host: int | None
    """Published host port (None: not published)."""
    bind: str | None
    allocated: int | None
    """The catalog's host port for it (its allocation, published or not)."""
    band: str | None
    band_low: int | None
    band_high: int | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.port)

    def host_text(self) -> str:
        return f"{self.bind}:{self.host}" if self.host is not None else "not published"


@dataclass
class State:
    urn: str
    type: str
    name: str
    parent: str
    inputs: dict[str, Any]
    """Inputs with each secret as `[secret]#<fingerprint>` (use `shown()` to print)."""
    protect: bool
    delete_before_replace: bool
    dependencies: list[str]


@dataclass
class Snapshot:
    stack: str
    label: str
    target: str
    resources: dict[str, State]
    outputs: dict[str, Any]
    ports: list[PortFact] | None
    fingerprinted: bool = True
    model: Model | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "label": self.label, "target": self.target,
                "resources": [asdict(s) for s in self.resources.values()], "outputs": self.outputs,
                "ports": None if self.ports is None else [asdict(p) for p in self.ports],
                "fingerprinted": self.fingerprinted}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Snapshot:
        return Snapshot(stack=data["stack"], label=data["label"], target=data["target"],
                        resources={s["urn"]: State(**s) for s in data["resources"]}, outputs=data["outputs"],
                        ports=None if data["ports"] is None else [PortFact(**p) for p in data["ports"]],
                        fingerprinted=data["fingerprinted"])

    def of_service(self, service: str) -> list[State]:
        """The resources that run a service: its container (Docker), or its workload and
        Service (Kubernetes), found by the service label both backends set."""
        return [s for s in self.resources.values() if _service_label(s) == service]


_SERVICE_LABELS = ("io.optiinfra.service", "app.kubernetes.io/name", "io.optiinfra/service")
_WORKLOAD_TYPES = (CONTAINER, "kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet",
                   "kubernetes:core/v1:Service")


def _service_label(s: State) -> str | None:
    if s.type not in _WORKLOAD_TYPES:
        return None
    labels = s.inputs.get("labels")
    if isinstance(labels, list):
        for item in labels:
            if isinstance(item, dict) and item.get("label") == _SERVICE_LABELS[0]:
                return str(item.get("value"))
    meta = s.inputs.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("labels"), dict):
        for key in _SERVICE_LABELS[1:]:
            if key in meta["labels"]:
                return str(meta["labels"][key])
    return None


def _fingerprint(key: bytes, value: Any) -> str:
    from google.protobuf import json_format, message

    text = json_format.MessageToJson(value, sort_keys=True) if isinstance(value, message.Message) else repr(value)
    return "#" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:16]


def _fp_plain(value: Any, key: bytes) -> Any:
    """offline._plain, with each secret as `[secret]#<keyed fingerprint>` so that two
    renders can tell a changed secret from an unchanged one without showing either."""
    from google.protobuf import struct_pb2
    from pulumi.runtime import rpc

    if isinstance(value, struct_pb2.Struct):
        if rpc._special_sig_key in value and value[rpc._special_sig_key] == rpc._special_secret_sig:
            inner = value["value"]
            fp = SECRET + _fingerprint(key, inner)
            m = _ENV_ENTRY.match(inner) if isinstance(inner, str) else None
            return f"{m.group(1)}={fp}" if m else fp
        return {k: _fp_plain(v, key) for k, v in sorted(value.items()) if k != rpc._special_sig_key}
    if isinstance(value, struct_pb2.ListValue):
        return [_fp_plain(v, key) for v in value]
    if value == rpc.UNKNOWN:
        return offline.UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@contextmanager
def _fingerprinting(key: bytes) -> Iterator[dict[str, Any] | None]:
    """While active, offline.render also records fingerprinted inputs (by URN)."""
    base = getattr(offline, "_Recorder", None)
    if base is None:  # a revision whose renderer records differently: no fingerprints
        yield None
        return
    seen: dict[str, Any] = {}

    class Recorder(base):  # type: ignore[misc, valid-type]
        def RegisterResource(self, request: Any) -> Any:
            response = super().RegisterResource(request)
            seen[response.urn] = _fp_plain(request.object, key)
            return response

    setattr(offline, "_Recorder", Recorder)  # noqa: B010 (offline.render looks it up at call time)
    try:
        yield seen
    finally:
        setattr(offline, "_Recorder", base)  # noqa: B010


def port_facts(model: Any) -> list[PortFact]:
    """Every container port of every enabled service (duck-typed: also runs against the
    model of an older revision)."""
    facts = []
    kube = getattr(model.settings, "target", "docker") == "kubernetes"  # nothing has a host port there
    for eff in model.services.values():
        svc = eff.service
        published = {p.port.name: p for p in eff.published}
        for p in svc.ports:
            band = None
            if p.band:
                try:
                    band = model.catalog.band(p.band)
                except KeyError:
                    band = None
            pub = None if kube else published.get(p.name)
            facts.append(PortFact(service=svc.name, tier=svc.tier.value, port=p.name, container=p.container,
                                  protocol=p.protocol, host=pub.host if pub else None, bind=pub.bind if pub else None,
                                  allocated=p.host, band=p.band, band_low=band.low if band else None,
                                  band_high=band.high if band else None))
    return facts


def take(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (), *, key: bytes,
         catalog: Catalog | None = None, label: str = "working tree") -> Snapshot:
    """Render a stack offline (this checkout's code) into a snapshot. Raises ConfigError."""
    with _fingerprinting(key) as fps:
        r = offline.render(stack, list(sets), list(secrets), catalog=catalog)
    model = r.model
    states = {}
    for res in r.resources:
        inputs = fps[res.urn] if fps is not None and res.urn in fps else res.inputs
        states[_urn(res.urn)] = State(urn=_urn(res.urn), type=res.type, name=res.name, parent=_urn(res.parent),
                                      inputs=inputs, protect=res.protect,
                                      delete_before_replace=res.delete_before_replace,
                                      dependencies=[_urn(d) for d in res.dependencies])
    try:
        facts: list[PortFact] | None = port_facts(model)
    except (AttributeError, KeyError, TypeError):
        facts = None
    return Snapshot(stack=stack, label=label, target=str(model.settings.target), resources=states,
                    outputs=r.outputs, ports=facts, fingerprinted=fps is not None, model=model)


def _urn(urn: str) -> str:
    """URNs as the engine writes them: older renderers kept the root stack's type in the
    type chain of its children; the engine leaves it out."""
    return urn.replace("::pulumi:pulumi:Stack$", "::")


def _snapshot_main() -> int:
    """Entry point inside a checkout of the base revision: `stack out.json` in argv."""
    stack, out = sys.argv[1], sys.argv[2]
    key = bytes.fromhex(os.environ[KEY_ENV])
    try:
        data = take(stack, key=key).to_json()
    except ConfigError as err:
        data = {"error": {"key": err.key, "problem": err.problem, "fix": err.fix}}
    Path(out).write_text(json.dumps(data))
    return 0


def _git(*args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(stack_config.ROOT), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ConfigError("--base", "git is not installed", "install git, or diff against --set overrides") from None
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, args, proc.stdout, proc.stderr)
    return proc.stdout.strip()


def merge_base() -> str:
    """`git merge-base HEAD main` (or origin/main, as in a CI checkout)."""
    for branch in ("main", "origin/main"):
        try:
            return _git("merge-base", "HEAD", branch)
        except subprocess.CalledProcessError:
            continue
    raise ConfigError("--base", "found no branch main or origin/main to take the merge base with",
                      "name the revision, e.g. --base HEAD~1 or --base origin/<branch>")


def at_revision(stack: str, rev: str | None, *, key: bytes) -> Snapshot:
    """Render `stack` as it was at a git revision, with that revision's code and stack
    file, in a subprocess on this interpreter. `rev=None`: the merge base with main."""
    shown = rev or "merge base with main"
    sha = merge_base() if rev is None else None
    try:
        sha = sha or _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ConfigError("--base", f"'{rev}' is not a commit of this repository",
                          "use a branch, tag or commit, e.g. --base main or --base HEAD~1") from None
    label = f"{shown} ({sha[:12]})" if rev != sha else sha[:12]
    archive = subprocess.run(["git", "-C", str(stack_config.ROOT), "archive", "--format=tar", sha],
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="optiinfra-base-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        tree = Path(tmp)
        if not (tree / "infra" / "offline.py").exists():
            raise ConfigError("--base", f"{label} has no offline renderer (infra/offline.py)",
                              "pick a later revision")
        if not (tree / f"Pulumi.{stack}.yaml").exists():
            return Snapshot(stack=stack, label=f"{label}: no Pulumi.{stack}.yaml", target="", resources={},
                            outputs={}, ports=[])
        shutil.copyfile(Path(__file__), tree / "infra" / "_diff_snapshot.py")
        out = tree / "snapshot.json"
        env = {**os.environ, KEY_ENV: key.hex(), "PYTHONDONTWRITEBYTECODE": "1"}
        boot = "import sys; from infra._diff_snapshot import _snapshot_main; sys.exit(_snapshot_main())"
        proc = subprocess.run([sys.executable, "-c", boot, stack, str(out)], cwd=tree, env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError("--base", f"rendering {stack} at {label} failed: {last}",
                              "fix or skip that revision (see its `python -m infra plan`)")
        data = json.loads(out.read_text())
    if "error" in data:
        e = data["error"]
        raise ConfigError("--base", f"the stack does not render at {label}: {e['key']}: {e['problem']}",
                          "diff against a revision whose config is valid")
    snap = Snapshot.from_json(data)
    snap.label = label
    return snap


# ---- comparing ----------------------------------------------------------------------------

_ABSENT = object()
_KEY_FIELDS = ("name", "label", "file", "containerPath", "mountPath", "key")


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """A list Docker or Kubernetes treats as a set/map, keyed by its natural key:
    `NAME=value` env entries by NAME; objects by name/label/file/path."""
    if not items:
        return None
    if all(isinstance(i, str) and _ENV_ENTRY.match(i) for i in items):
        pairs = [(str(i).split("=", 1)[0], str(i).split("=", 1)[1]) for i in items]
        names = [k for k, _ in pairs]
        return dict(pairs) if len(set(names)) == len(names) else None
    if all(isinstance(i, dict) for i in items):
        for kf in _KEY_FIELDS:
            keys = [i.get(kf) for i in items]
            if all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys):
                return {str(i[kf]): i for i in items}
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(old: Any, new: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            _walk(old.get(k, _ABSENT), new.get(k, _ABSENT), _join(path, k), out)
        return
    if isinstance(old, list) and isinstance(new, list):
        ko, kn = _keyed(old), _keyed(new)
        if ko is not None and kn is not None:
            order = list(ko) + [k for k in kn if k not in ko]
            for k in order:
                _walk(ko.get(k, _ABSENT), kn.get(k, _ABSENT), f"{path}[{k}]", out)
            return
        if len(old) == len(new):
            for i, (a, b) in enumerate(zip(old, new, strict=True)):
                _walk(a, b, f"{path}[{i}]", out)
            return
    out.append((path, old, new))


def shown(value: Any) -> Any:
    """A value as printed: secrets as `[secret]`, absence as None."""
    if value is _ABSENT:
        return None
    if isinstance(value, str):
        return _FP.sub(SECRET, value)
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any
    replaces: bool
    reason: str
    secret: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "old": shown(self.old), "new": shown(self.new), "replaces": self.replaces,
                "reason": self.reason, "secret": self.secret}


@dataclass
class ResourceChange:
    urn: str
    type: str
    name: str
    op: str
    """create, update, replace or delete."""
    changes: list[FieldChange]
    protect: bool
    delete_before_replace: bool
    service: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.type.split(":")[-1].split("/")[-1]

    def to_json(self) -> dict[str, Any]:
        return {"urn": self.urn, "type": self.type, "name": self.name, "op": self.op, "service": self.service,
                "protect": self.protect, "deleteBeforeReplace": self.delete_before_replace,
                "changes": [c.to_json() for c in self.changes], "notes": self.notes}


def _field_changes(type_: str, old: dict[str, Any], new: dict[str, Any], fingerprinted: bool) -> list[FieldChange]:
    if not fingerprinted:  # compare secrets as plain markers: all that one side has
        old, new = shown(old), shown(new)
    raw: list[tuple[str, Any, Any]] = []
    _walk(old, new, "", raw)
    out = []
    for path, a, b in raw:
        rule = rule_for(type_, path)
        secret = SECRET in json.dumps(shown(a), default=str) + json.dumps(shown(b), default=str)
        out.append(FieldChange(path, a, b, rule.replaces, rule.reason, secret))
    return out


_OPS = ("replace", "update", "create", "delete")


def compare(old: Snapshot, new: Snapshot) -> list[ResourceChange]:
    """Per resource (by URN): what `pulumi up` would do to go from `old` to `new`."""
    both_fp = old.fingerprinted and new.fingerprinted
    changes: list[ResourceChange] = []
    for urn in sorted(set(old.resources) | set(new.resources)):
        a, b = old.resources.get(urn), new.resources.get(urn)
        cur = b or a
        assert cur is not None
        service = _service_label(cur)
        if a is None or b is None:
            op = "create" if a is None else "delete"
            changes.append(ResourceChange(urn, cur.type, cur.name, op, [], cur.protect, cur.delete_before_replace,
                                          service))
            continue
        fields = _field_changes(b.type, a.inputs, b.inputs, both_fp)
        for opt, x, y in (("protect", a.protect, b.protect),
                          ("deleteBeforeReplace", a.delete_before_replace, b.delete_before_replace)):
            if x != y:
                fields.append(FieldChange(f"(options).{opt}", x, y, False, "a resource option: no provider call"))
        if not fields:
            continue
        op = "replace" if any(f.replaces for f in fields) else "update"
        changes.append(ResourceChange(urn, b.type, b.name, op, fields, b.protect, b.delete_before_replace, service))
    changes.sort(key=lambda c: (_OPS.index(c.op), c.type, c.name))
    _annotate(changes, old, new)
    return changes


def _volume_names(state: State) -> list[tuple[str, str]]:
    """(named volume, mount path) a Docker container mounts."""
    return [(str(v["volumeName"]), str(v.get("containerPath", ""))) for v in state.inputs.get("volumes") or []
            if isinstance(v, dict) and v.get("volumeName")]


def _annotate(changes: list[ResourceChange], old: Snapshot, new: Snapshot) -> None:
    """Notes a reviewer needs on replacements: the order of delete and create, and what
    happens to the data of a stateful service."""
    by_urn = {c.urn: c for c in changes}
    for c in changes:
        if c.op == "update" and c.type == "kubernetes:apps/v1:StatefulSet" \
                and any(f.path.startswith("spec.template") for f in c.changes):
            claims = _claims(new.resources[c.urn])
            c.notes.append("rolling update: its pods are recreated one at a time" + (
                f"; each keeps its claim ({claims})" if claims else ""))
        if c.op == "update" and c.type == CONTAINER:
            dormant = sorted({_top(f.path, 1) for f in c.changes
                              if _top(f.path, 1) not in _DOCKER_LIVE.split() and not f.path.startswith("(")})
            if dormant:
                c.notes.append(f"the running container keeps its old {', '.join(dormant)}: the provider only "
                               "records it; it takes effect when the container is next replaced "
                               f"(`pulumi up --replace {c.urn}`)")
        if c.op != "replace":
            continue
        prev = old.resources[c.urn]
        if c.type == CONTAINER:
            host = ", ".join(f"{p.get('ip')}:{p.get('external')}" for p in prev.inputs.get("ports") or []
                             if isinstance(p, dict))
            if c.delete_before_replace:
                freed = f" and host port {host}" if host else ""
                c.notes.append(f"will be deleted before its replacement is created (delete_before_replace: "
                               f"frees its fixed name {prev.inputs.get('name')}{freed}); a short outage")
            else:
                c.notes.append(f"RISK: the replacement is created before the old container is deleted, but the "
                               f"name {prev.inputs.get('name')} is fixed: `pulumi up` would fail on the name"
                               + (f" and on host port {host} ('port is already allocated')" if host else ""))
        if c.type.startswith("kubernetes:"):
            renamed = any(f.path == "metadata.name" for f in c.changes)
            c.notes.append("a new object under a new name is created first, then the old one is deleted"
                           if renamed else "will be deleted before its replacement is created: its name is "
                           "fixed, so pulumi-kubernetes deletes first (expect a short outage of what it serves)")
        if prev.protect:
            c.notes.append("RISK: protected: `pulumi up` refuses to replace it until it is unprotected "
                           f"(`pulumi state unprotect '{c.urn}'`)")
        claims = _claims(prev) if c.type == "kubernetes:apps/v1:StatefulSet" else ""
        if claims and any(f.path.startswith("spec.volumeClaimTemplates") and "storage" in f.path for f in c.changes):
            c.notes.append("the existing claims keep their size: a claim template only applies to new claims; "
                           "resize the claim itself (kubectl patch pvc) where the StorageClass allows expansion")
        if claims:
            kept = "whenDeleted=Retain" in claims
            c.notes.append(f"data kept: its claims ({claims}) outlive the StatefulSet and are bound again by the "
                           "replacement (same name and claim templates)" if kept else
                           f"DATA AT RISK: its claims ({claims}) are deleted with the StatefulSet")
        for vol, path in _volume_names(prev):
            holder = next((s for s in new.resources.values() if s.type in (VOLUME, PVC)
                           and _object_name(s) == vol), None)
            if holder is None:
                c.notes.append(f"DATA AT RISK: volume {vol} is not in the new render")
                continue
            vchange = by_urn.get(holder.urn)
            if vchange is None and holder.protect:
                c.notes.append(f"data kept: volume {vol} is protected and not in the replace set; the new "
                               f"container mounts it again at {path}")
            elif vchange is None:
                c.notes.append(f"data kept: volume {vol} is not in the replace set (but not protected)")
            else:
                c.notes.append(f"DATA AT RISK: volume {vol} will be {vchange.op}d")


def _claims(state: State) -> str:
    """The PersistentVolumeClaims of a StatefulSet and whether they outlive it."""
    spec = state.inputs.get("spec") if isinstance(state.inputs.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    names = [str((t.get("metadata") or {}).get("name")) for t in spec.get("volumeClaimTemplates") or []
             if isinstance(t, dict)]
    if not names:
        return ""
    policy = (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenDeleted", "Retain")
    claims = ", ".join(f"{n}-{_object_name(state)}-0" for n in names)
    return f"{claims}; persistentVolumeClaimRetentionPolicy.whenDeleted={policy}"


def _object_name(s: State) -> str:
    meta = s.inputs.get("metadata")
    if isinstance(meta, dict) and meta.get("name"):
        return str(meta["name"])
    return str(s.inputs.get("name", s.name))


def output_changes(old: Snapshot, new: Snapshot) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []
    _walk(old.outputs, new.outputs, "", out)
    return [(p, shown(a), shown(b)) for p, a, b in out]


# ---- what a port change sets off ------------------------------------------------------------

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
    if old.ports is None or new.ports is None:
        return []
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

    kind: str
    """container, health, dependent, scrape, datasource, network-policy, ingress, output."""
    subject: str
    detail: str
    follows: bool
    urns: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    seen: str = ""
    """What the render shows for `urns`/`outputs` (filled by `impact`)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail, "follows": self.follows,
                "resources": self.urns, "outputs": self.outputs, "seen": self.seen}


@dataclass
class Alert:
    kind: str
    """stateful-replace, data-at-risk, host-port-taken, band, unreachable, stale-port, no-delete-first."""
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


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


def _urns(snap: Snapshot, service: str, types: Sequence[str] = _WORKLOAD_TYPES) -> list[str]:
    return sorted(s.urn for s in snap.of_service(service) if s.type in types)


def _refs(model: Model, target: str, port_name: str) -> dict[str, list[str]]:
    """Services whose environment or arguments carry `target`'s address with this port:
    {service: [env names / 'command']}, from the catalog's Url/Dsn values."""
    from .model import Dsn, Url

    out: dict[str, list[str]] = {}
    conn = model.services[target].service.connection if target in model.services else None
    for eff in model.services.values():
        items = [(name, v) for name, v in eff.service.env] + [("command", v) for v in eff.service.command]
        for name, value in items:
            if not isinstance(value, (Url, Dsn)) or value.service != target or not conn:
                continue
            if (value.port if isinstance(value, Dsn) and value.port else conn.port) != port_name:
                continue
            template = conn.template if isinstance(value, Url) else value.template
            if "{port}" in template:
                out.setdefault(eff.name, []).append(name)
    return out


def _stale(model: Model, change: PortChange) -> list[Alert]:
    """Values in the catalog that restate the old container port instead of following it."""
    from .model import Dsn

    if not (change.old and change.new and change.container_changed):
        return []
    old, warnings = str(change.old.container), []
    for eff in model.services.values():
        for name, value in [*eff.service.env, *(("command", v) for v in eff.service.command)]:
            if eff.name == change.service and isinstance(value, str) and re.search(rf"(?<!\d){old}(?!\d)", value):
                warnings.append(Alert("stale-port", f"{eff.name} sets {name}={value}: it still names port {old}, "
                                                      f"so the process would not listen on {change.new.container}"))
            if isinstance(value, Dsn) and value.service == change.service and "{port}" not in value.template \
                    and re.search(rf"(?<!\d){old}(?!\d)", value.template):
                warnings.append(Alert("stale-port", f"{eff.name} {name} writes port {old} of {change.service} "
                                                      f"literally ({value.template!r}): it will not follow"))
    return warnings


def impact(changes: list[PortChange], model: Model, old: Snapshot, new: Snapshot,
           resource_changes: list[ResourceChange], outputs: list[tuple[str, Any, Any]]) -> list[Impact]:
    """What follows from each port change, from the new model's graph; each item is
    checked against the render (`Effect.seen`)."""
    from .model import HttpCheck, TcpCheck

    ops = {c.urn: c for c in resource_changes}
    changed_outputs = {p for p, _, _ in outputs}
    kube = new.target == "kubernetes"
    result = []
    for ch in changes:
        if ch.service not in model.services:
            continue
        eff = model.services[ch.service]
        svc = eff.service
        cport = ch.new.container if ch.new else None
        effects: list[Effect] = []
        moved = ch.container_changed
        # The service's own resources.
        if kube:  # only container ports change on Kubernetes (there are no host ports)
            effects.append(Effect("container", ch.service, "container port of its workload and its Service port",
                                  True, _urns(new, ch.service)))
        elif (ch.old and ch.old.host) or (ch.new and ch.new.host):
            effects.append(Effect("container", ch.service, "published port mapping of its container", True,
                                  _urns(new, ch.service, (CONTAINER,))))
        else:
            effects.append(Effect("container", ch.service, "not published: its container has no port mapping "
                                  "to change", False))
        # Health check / probe.
        probe = svc.health.probe if svc.health else None
        probe_port = probe.port if isinstance(probe, (HttpCheck, TcpCheck)) else None
        if probe_port == ch.port:
            kind = "probe" if kube else "health check"
            what = f"{probe.path} on" if isinstance(probe, HttpCheck) else "TCP connect to"
            if moved:
                old_port = ch.old.container if ch.old else "-"
                effects.append(Effect("health", ch.service, f"{kind} {what} port {old_port} -> {cport}", True,
                                      _urns(new, ch.service, (CONTAINER, "kubernetes:apps/v1:Deployment",
                                                              "kubernetes:apps/v1:StatefulSet"))))
            else:
                effects.append(Effect("health", ch.service, f"unaffected: the {kind} ({what} {cport}) runs "
                                      "against the container port, not the host port", False))
        # Dependents that carry its address.
        refs = _refs(model, ch.service, ch.port)
        edges = sorted({e.source for e in model.in_edges(ch.service) if e.kind == "depends" and e.port == ch.port})
        readers = _file_readers(model, ch.service, ch.port)
        for dep in sorted(set(refs) | set(edges)):
            names = ", ".join(refs.get(dep, [])) or "no URL with this port"
            if dep == ch.service or (dep in readers and dep not in refs):
                continue  # itself, or covered below (a generated config file carries the address)
            if moved and dep in refs:
                effects.append(Effect("dependent", dep, f"{names} -> {ch.service}:{cport}", True,
                                      _urns(new, dep) + _env_secrets(new, dep, refs[dep])))
            else:
                why = ("dependents dial the container port over the tier network, not the host port" if not moved
                       else "it holds no URL with this port")
                effects.append(Effect("dependent", dep, f"unaffected ({names}): {why}", False))
        # Prometheus scraping it (the scrape config is uploaded into Prometheus' container / ConfigMap).
        scrapers = sorted({e.source for e in model.in_edges(ch.service) if e.kind == "scrape"})
        metrics_port = svc.metrics[0] if svc.metrics else None
        if ch.service == "prometheus" and metrics_port == ch.port:
            scrapers = ["prometheus"]  # it scrapes itself on localhost
        for scraper in scrapers:
            if svc.metrics is None or metrics_port != ch.port:
                continue
            if moved:
                effects.append(Effect("scrape", scraper, f"scrape target {ch.service}:{cport}{svc.metrics[1]} in "
                                      "prometheus.yml", True, _config_holders(new, model, scraper)))
            else:
                effects.append(Effect("scrape", scraper, f"unaffected: scraped at {ch.service}:{cport} "
                                      "(container port)", False))
        # Grafana's datasource is Prometheus' connection.
        conn = svc.connection
        if ch.service == "prometheus" and conn and conn.port == ch.port:
            for holder in sorted(e.name for e in model.services.values()
                                 if any(f.generator is Generated.DATASOURCES for f in e.service.files)):
                if moved:
                    effects.append(Effect("datasource", holder, f"datasource url http://prometheus:{cport}", True,
                                          _config_holders(new, model, holder)))
                else:
                    effects.append(Effect("datasource", holder, "unaffected: the datasource uses the container port",
                                          False))
        # Kubernetes: NetworkPolicies and Ingresses that name the old port.
        if kube and ch.old and moved:
            effects.extend(_k8s_port_users(old, new, ch))
        # Stack outputs: the port map and quick-access URLs carry host ports (Docker); the
        # in-cluster endpoints carry the Service port of a service's first port (Kubernetes).
        keys = []
        primary = svc.primary_port.name if svc.primary_port else None
        if ch.host_changed and not kube:
            keys.append(f"ports.{ch.service}.{ch.port}")
            if ch.port == primary and ch.port in ("http", "web"):
                keys.append(f"urls.{ch.service}")
        if moved and kube and ch.port == primary and ch.service in (old.outputs.get("endpoints") or {}):
            keys.append(f"endpoints.{ch.service}")
        if keys:
            effects.append(Effect("output", "stack outputs", ", ".join(keys), True, outputs=keys))
        else:
            effects.append(Effect("output", "stack outputs", "unaffected: " + (
                "the endpoints carry the first port's Service port" if kube else
                "outputs carry host ports only"), False))
        for e in effects:
            if e.urns:
                seen = sorted({ops[u].op for u in e.urns if u in ops}) or ["no change"]
                e.seen = "/".join(seen)
            elif e.outputs:
                e.seen = "changed" if all(_output_seen(k, changed_outputs) for k in e.outputs) else "NOT changed"
        result.append(Impact(ch, effects))
    return result


def _file_readers(model: Model, service: str, port: str) -> set[str]:
    """Services whose generated config files carry `service`'s address on `port`
    (monitoring.py: prometheus.yml lists every scrape target, Grafana's datasource
    is Prometheus' connection)."""
    svc = model.services[service].service
    out = set()
    for eff in model.services.values():
        for f in eff.service.files:
            if f.generator is Generated.SCRAPE_CONFIG and svc.metrics and svc.metrics[0] == port:
                out.add(eff.name)
            if f.generator is Generated.DATASOURCES and service == "prometheus" and svc.connection \
                    and svc.connection.port == port:
                out.add(eff.name)
    return out


def _pod_spec(state: State) -> dict[str, Any]:
    spec = state.inputs.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    return pod if isinstance(pod, dict) else {}


def _namespace(state: State) -> str:
    meta = state.inputs.get("metadata")
    return str(meta.get("namespace", "")) if isinstance(meta, dict) else ""


def _env_secrets(snap: Snapshot, service: str, names: list[str]) -> list[str]:
    """Kubernetes: the Secrets a service's workload reads these env variables from (a URL
    that embeds a password lives in the tier's Secret, not in the workload)."""
    found = set()
    for w in snap.of_service(service):
        for c in _pod_spec(w).get("containers") or []:
            for e in c.get("env") or []:
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}) if isinstance(e, dict) else {}
                if e.get("name") in names and ref.get("name"):
                    found.add((_namespace(w), str(ref["name"])))
    return sorted(s.urn for s in snap.resources.values()
                  if s.type == "kubernetes:core/v1:Secret" and (_namespace(s), _object_name(s)) in found)


def _reads(state: State) -> set[tuple[str, str]]:
    """(kind, name) of every Secret and ConfigMap a workload's pods read."""
    out: set[tuple[str, str]] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for kind, key, field_ in (("Secret", "secretKeyRef", "name"), ("Secret", "secretRef", "name"),
                                      ("Secret", "secret", "secretName"), ("ConfigMap", "configMapKeyRef", "name"),
                                      ("ConfigMap", "configMapRef", "name"), ("ConfigMap", "configMap", "name")):
                ref = v.get(key)
                if isinstance(ref, dict) and ref.get(field_):
                    out.add((kind, str(ref[field_])))
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(_pod_spec(state))
    return out


def not_restarted(new: Snapshot, changes: list[ResourceChange]) -> list[Alert]:
    """A Secret or ConfigMap whose content changes under the same name does not restart the
    pods that read it: they keep the old values until something rolls them."""
    by_urn = {c.urn: c for c in changes}
    out = []
    for c in changes:
        kind = c.type.rsplit(":", 1)[-1]
        if c.op not in ("update", "replace") or kind not in ("Secret", "ConfigMap") \
                or any(f.path == "metadata.name" for f in c.changes):
            continue
        obj = new.resources[c.urn]
        stale = []
        for w in new.resources.values():
            if w.type not in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet") \
                    or _namespace(w) != _namespace(obj) or (kind, _object_name(obj)) not in _reads(w):
                continue
            wc = by_urn.get(w.urn)
            if wc is None or not any(f.path.startswith("spec.template") for f in wc.changes):
                stale.append(f"{w.type.rsplit(':', 1)[-1].lower()}/{_object_name(w)}")
        if stale:
            out.append(Alert("not-restarted", f"{kind} {_object_name(obj)} ({_namespace(obj)}) changes, but nothing in "
                                              f"the pod templates of {', '.join(sorted(stale))} does: their pods keep "
                                              "the old values until restarted (`kubectl -n "
                                              f"{_namespace(obj)} rollout restart {' '.join(sorted(stale))}`)"))
    return out


def _output_seen(key: str, changed: set[str]) -> bool:
    return any(p == key or p.startswith(key + ".") or key.startswith(p + ".") for p in changed)


def _config_holders(snap: Snapshot, model: Model, service: str) -> list[str]:
    """Resources that carry a generated config file of `service`: its container (Docker
    upload) or its ConfigMap and workload (Kubernetes)."""
    urns = _urns(snap, service, (CONTAINER, "kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet"))
    urns += sorted(s.urn for s in snap.resources.values() if s.type == "kubernetes:core/v1:ConfigMap"
                   and _object_name(s).startswith(service))
    return urns


def _k8s_port_users(old: Snapshot, new: Snapshot, ch: PortChange) -> list[Effect]:
    """NetworkPolicies and Ingresses whose rules or backends name the service's old port."""
    assert ch.old is not None
    effects = []
    for s in sorted(old.resources.values(), key=lambda s: s.urn):
        if s.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy" and _names_port(s.inputs, ch.old.container) \
                and _mentions_service(s.inputs, ch.service):
            effects.append(Effect("network-policy", _object_name(s), f"allows port {ch.old.container}", True, [s.urn]))
        if s.type == "kubernetes:networking.k8s.io/v1:Ingress" and _mentions_service(s.inputs, ch.service):
            effects.append(Effect("ingress", _object_name(s), "backend service port", True, [s.urn]))
    return effects


def _names_port(value: Any, port: int) -> bool:
    if isinstance(value, dict):
        return value.get("port") == port or any(_names_port(v, port) for v in value.values())
    if isinstance(value, list):
        return any(_names_port(v, port) for v in value)
    return False


def _mentions_service(value: Any, service: str) -> bool:
    if isinstance(value, dict):
        return any(_mentions_service(v, service) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_service(v, service) for v in value)
    return value == service


def warnings_for(changes: list[PortChange], model: Model, new: Snapshot,
                 resource_changes: list[ResourceChange]) -> list[Alert]:
    out: list[Alert] = []
    by_service: dict[int, list[PortFact]] = {}
    for p in new.ports or []:
        if p.host is not None:
            by_service.setdefault(p.host, []).append(p)
    for ch in changes:
        b = ch.new
        if b is None or b.host is None or not ch.host_changed:
            out.extend(_stale(model, ch))
            continue
        others = [p for p in by_service.get(b.host, []) if p.key != b.key]
        for p in others:
            out.append(Alert("host-port-taken", f"host port {b.host} of {b.service} {b.port} is also published "
                                                  f"by {p.service} {p.port}"))
        allocated = [p for p in new.ports or [] if p.allocated == b.host and p.key != b.key and p.host != b.host]
        for p in allocated:
            out.append(Alert("host-port-taken", f"host port {b.host} of {b.service} {b.port} is the catalog's "
                                                  f"allocation of {p.service} {p.port} (not published in this stack): "
                                                  f"publishing {p.service} would clash"))
        if b.band and b.band_low is not None and b.band_high is not None and not b.band_low <= b.host <= b.band_high:
            was = ch.old.host if ch.old and ch.old.host is not None else ch.old.allocated if ch.old else None
            before = (f" (so was {was})" if was is not None and not b.band_low <= was <= b.band_high else
                      f" ({was} was inside)" if was is not None else "")
            out.append(Alert("band", f"host port {b.host} of {b.service} {b.port} leaves its allocation band "
                                       f"{b.band} {b.band_low}-{b.band_high}{before}"))
        out.extend(_unreachable(new, b))
        out.extend(_stale(model, ch))
    for c in resource_changes:
        if c.op != "replace":
            continue
        for note in c.notes:
            if note.startswith("data kept"):
                depth = 2 if c.type.startswith("kubernetes:") else 1
                why = ", ".join(sorted({_top(f.path, depth) for f in c.changes if f.replaces}))
                out.append(Alert("stateful-replace", f"{c.service or c.name} is stateful and will be replaced "
                                                     f"({why}); {note}"))
            elif note.startswith("DATA AT RISK"):
                out.append(Alert("data-at-risk", f"{c.service or c.name}: {note}"))
            elif note.startswith("RISK: protected"):
                out.append(Alert("protected-replace", f"{c.service or c.name}: {note[len('RISK: '):]}"))
            elif note.startswith("RISK"):
                out.append(Alert("no-delete-first", f"{c.service or c.name}: {note}"))
    out.extend(not_restarted(new, resource_changes))
    for c in resource_changes:
        for note in c.notes:
            if c.op == "update" and note.startswith("rolling update") and "claim" in note:
                out.append(Alert("stateful-restart", f"{c.service or c.name} is stateful and its pod is recreated "
                                                     f"(rolling update); {note.split('; ', 1)[1]}"))
            if c.op == "update" and note.startswith("the running container keeps"):
                out.append(Alert("dormant-update", f"{c.service or c.name}: {note.split(' (`')[0]}"))
    return out


def _unreachable(new: Snapshot, b: PortFact) -> list[Alert]:
    """Docker does not forward published ports of a container that is only on internal networks."""
    internal = {str(s.inputs.get("name")) for s in new.resources.values()
                if s.type == NETWORK and s.inputs.get("internal")}
    for s in new.of_service(b.service):
        if s.type != CONTAINER:
            continue
        nets = [str(n.get("name")) for n in s.inputs.get("networksAdvanced") or [] if isinstance(n, dict)]
        if nets and all(n in internal for n in nets):
            return [Alert("unreachable", f"{b.service} is only on the internal network(s) {', '.join(nets)}: "
                                           f"Docker does not forward its published port {b.host_text()}")]
    return []


# ---- the whole diff ---------------------------------------------------------------------------

@dataclass
class Diff:
    stack: str
    old_label: str
    new_label: str
    resources: list[ResourceChange]
    outputs: list[tuple[str, Any, Any]]
    impacts: list[Impact]
    warnings: list[Alert]
    unchanged: int
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.resources and not self.outputs

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(_OPS, 0)
        for r in self.resources:
            c[r.op] += 1
        return {**c, "same": self.unchanged}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "stack": self.stack,
            "old": self.old_label,
            "new": self.new_label,
            "empty": self.empty,
            "summary": self.counts(),
            "resources": [r.to_json() for r in self.resources],
            "outputs": [{"path": p, "old": a, "new": b} for p, a, b in self.outputs],
            "ports": [i.to_json() for i in self.impacts],
            "warnings": [w.to_json() for w in self.warnings],
            "notes": self.notes,
        }


def diff(old: Snapshot, new: Snapshot) -> Diff:
    resources = compare(old, new)
    outputs = output_changes(old, new)
    pcs = port_changes(old, new)
    model = new.model
    impacts = impact(pcs, model, old, new, resources, outputs) if model is not None else []
    warnings = warnings_for(pcs, model, new, resources) if model is not None else []
    follows = {u: i.change for i in impacts for e in i.effects
               if e.follows and e.subject != i.change.service for u in e.urns}
    for r in resources:
        if r.urn in follows and r.op in ("update", "replace"):
            ch = follows[r.urn]
            r.notes.append(f"follows {ch.service} {ch.port}: updated in the same `pulumi up` as {ch.service}")
    notes = []
    if old.ports is None:
        notes.append(f"{old.label} gave no port facts (an older renderer): port impact not analysed")
    if not (old.fingerprinted and new.fingerprinted):
        notes.append(f"{old.label if not old.fingerprinted else new.label} was rendered without secret "
                     "fingerprints: a changed secret value does not show")
    changed = sum(1 for r in resources if r.op in ("update", "replace"))
    unchanged = len(set(old.resources) & set(new.resources)) - changed
    return Diff(old.stack, old.label, new.label, resources, outputs, impacts, warnings, unchanged, notes)


def run_diff(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (), *, base: str | bool | None = False,
             catalog: Catalog | None = None) -> Diff:
    """The diff the CLI prints. `base=False`: working tree against the same with the
    overrides; a revision (or None: the merge base with main): that revision against the
    working tree with the overrides."""
    key = random_secrets.token_bytes(32)
    overrides = [f"--set {s}" for s in sets] + [f"--secret {s.split('=', 1)[0]}=[secret]" for s in secrets]
    new_label = "working tree" + (" with " + " ".join(overrides) if overrides else "")
    if base is False:
        old = take(stack, key=key, catalog=catalog, label="working tree")
    else:
        old = at_revision(stack, base if isinstance(base, str) else None, key=key)
    new = take(stack, sets, secrets, key=key, catalog=catalog, label=new_label)
    return diff(old, new)


# ---- text -----------------------------------------------------------------------------------------

_SIGN = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}


def _v(value: Any) -> str:
    value = shown(value)
    if value is None:
        return "(none)"
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _pair(a: Any, b: Any) -> tuple[str, str]:
    """Two values as printed; two long strings are cut to the part that differs."""
    a, b = shown(a), shown(b)
    if isinstance(a, str) and isinstance(b, str) and max(len(a), len(b)) > 100:
        start = 0
        while start < min(len(a), len(b)) and a[start] == b[start]:
            start += 1
        end = 0
        while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
            end += 1
        lo = max(0, start - 30)

        def cut(s: str) -> str:
            hi = len(s) - max(0, end - 30)
            return ("..." if lo else "") + s[lo:hi] + ("..." if hi < len(s) else "")
        return json.dumps(cut(a)), json.dumps(cut(b))
    return _v(a), _v(b)


def text(d: Diff) -> str:
    lines = [f"Offline diff of stack {d.stack}: {d.old_label} -> {d.new_label}"]
    if d.empty:
        lines.append("no changes")
        if d.old_label == d.new_label:
            lines.append("(compare with overrides: --set KEY=VALUE, or with a git revision: --base [REV])")
        lines.extend(f"note: {n}" for n in d.notes)
        return "\n".join(lines)
    c = d.counts()
    lines.append(f"{c['replace']} to replace, {c['update']} to update, {c['create']} to create, "
                 f"{c['delete']} to delete ({c['same']} unchanged)")
    if d.resources:
        lines.append("\nResources")
    for r in d.resources:
        who = f" [{r.service}]" if r.service else ""
        lines.append(f"  {_SIGN[r.op]:<2} {r.op:<7} {r.kind} {r.name}{who}")
        told: set[str] = set()
        for f in r.changes:
            why = ("  replaces" + (": " + f.reason if f.reason not in told else "")) if f.replaces else ""
            told.add(f.reason)
            a, b = _pair(f.old, f.new)
            lines.append(f"        {f.path}: {a} -> {b}{why}")
        for n in r.notes:
            lines.append(f"        * {n}")
    if d.outputs:
        lines.append("\nOutputs")
        lines.extend(f"  ~  {p}: {_v(a)} -> {_v(b)}" for p, a, b in d.outputs)
    if d.impacts:
        lines.append("\nPort changes and what follows from them")
    for i in d.impacts:
        lines.append(f"  {i.change.text()}")
        for e in i.effects:
            mark = "->" if e.follows else "  "
            seen = f"   [render: {e.seen}]" if e.follows and e.seen else ""
            lines.append(f"    {mark} {e.kind:<14} {e.subject}: {e.detail}{seen}")
    if d.warnings:
        lines.append("\nWarnings")
        lines.extend(f"  ! {w.kind}: {w.message}" for w in d.warnings)
    if d.impacts:
        kinds = {w.kind for w in d.warnings}
        lines.append("\nChecks")
        for kind, what in (("stateful-replace", "stateful services replaced"),
                           ("data-at-risk", "volumes or claims at risk"),
                           ("host-port-taken", "host ports already taken"),
                           ("band", "ports outside their band"),
                           ("no-delete-first", "replacements that create before deleting")):
            lines.append(f"  {what}: {'see warnings' if kind in kinds else 'none'}")
    lines.extend(f"note: {n}" for n in d.notes)
    return "\n".join(lines)
