"""Two snapshots compared resource by resource (matched by URN), field by field.

A changed resource is a *replace* when the provider replaces it on one of the changed
fields (replace.py), otherwise an *update*. Each change carries typed notes (`Note`) on
what a reviewer needs to know: the order of delete and create, what happens to the data
of a stateful service, what the running container ignores. Secret values are compared by
their fingerprints and shown as `[secret]`.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

from policies.optiinfra_policies import vocabulary as v

from .. import offline
from .replace import DOCKER_LIVE, head, rule_for
from .snapshot import Snapshot, State

SECRET = offline.SECRET
_FP = re.compile(re.escape(SECRET) + r"#[0-9a-f]{16}")
_ENV_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_ABSENT = object()
_KEY_FIELDS = ("name", "label", "file", "containerPath", "mountPath", "key")


class Op(enum.StrEnum):
    """What `pulumi up` does to a resource, in the order a diff lists them."""

    REPLACE = "replace"
    UPDATE = "update"
    CREATE = "create"
    DELETE = "delete"


class NoteKind(enum.Enum):
    """What a note on a changed resource says (the warnings are chosen by kind)."""

    DELETE_FIRST = enum.auto()
    """A container is deleted before its replacement is created (a short outage)."""
    NAME_CLASH = enum.auto()
    """RISK: a replacement created before the old container is deleted clashes on its fixed name."""
    K8S_ORDER = enum.auto()
    """The order pulumi-kubernetes replaces an object in."""
    PROTECTED = enum.auto()
    """RISK: a protected resource that `pulumi up` will not replace."""
    CLAIM_SIZE = enum.auto()
    """A StatefulSet's claim template changes size: the existing claims keep theirs."""
    DATA_KEPT = enum.auto()
    """A stateful replacement whose data (volume or claims) outlives it."""
    DATA_AT_RISK = enum.auto()
    """A stateful replacement whose data goes with it."""
    ROLLING_UPDATE = enum.auto()
    """A StatefulSet's pods are recreated; `detail` names the claims each keeps."""
    DORMANT = enum.auto()
    """A container update the provider only records; `detail` without the command to apply it."""
    FOLLOWS = enum.auto()
    """Updated in the same run as a port change it follows from (report.diff)."""


@dataclass(frozen=True)
class Note:
    kind: NoteKind
    text: str
    """As printed."""
    detail: str = ""
    """What a warning quotes of it, where that is not the whole text (see NoteKind)."""


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
    op: Op
    changes: list[FieldChange]
    protect: bool
    delete_before_replace: bool
    service: str | None
    notes: list[Note] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return v.kind(self.type)

    def note(self, kind: NoteKind, text: str, detail: str = "") -> None:
        self.notes.append(Note(kind, text, detail))

    def to_json(self) -> dict[str, Any]:
        return {"urn": self.urn, "type": self.type, "name": self.name, "op": self.op.value, "service": self.service,
                "protect": self.protect, "deleteBeforeReplace": self.delete_before_replace,
                "changes": [c.to_json() for c in self.changes], "notes": [n.text for n in self.notes]}


# ---- values --------------------------------------------------------------------------------

def shown(value: Any) -> Any:
    """A value as printed: secrets as `[secret]`, absence as None."""
    if value is _ABSENT:
        return None
    if isinstance(value, str):
        return _FP.sub(SECRET, value)
    if isinstance(value, dict):
        return {k: shown(x) for k, x in value.items()}
    if isinstance(value, list):
        return [shown(x) for x in value]
    return value


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


def walk(old: Any, new: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    """Append (path, old, new) for every leaf that differs; keyed lists by key."""
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            walk(old.get(k, _ABSENT), new.get(k, _ABSENT), _join(path, k), out)
        return
    if isinstance(old, list) and isinstance(new, list):
        ko, kn = _keyed(old), _keyed(new)
        if ko is not None and kn is not None:
            order = list(ko) + [k for k in kn if k not in ko]
            for k in order:
                walk(ko.get(k, _ABSENT), kn.get(k, _ABSENT), f"{path}[{k}]", out)
            return
        if len(old) == len(new):
            for i, (a, b) in enumerate(zip(old, new, strict=True)):
                walk(a, b, f"{path}[{i}]", out)
            return
    out.append((path, old, new))


def object_name(s: State) -> str:
    """A Kubernetes object's metadata.name, a Docker resource's name."""
    meta = s.inputs.get("metadata")
    if isinstance(meta, dict) and meta.get("name"):
        return str(meta["name"])
    return str(s.inputs.get("name", s.name))


def namespace(s: State) -> str:
    meta = s.inputs.get("metadata")
    return str(meta.get("namespace", "")) if isinstance(meta, dict) else ""


# ---- comparing -------------------------------------------------------------------------------

def _field_changes(type_: str, old: dict[str, Any], new: dict[str, Any], fingerprinted: bool) -> list[FieldChange]:
    if not fingerprinted:  # compare secrets as plain markers: all that one side has
        old, new = shown(old), shown(new)
    raw: list[tuple[str, Any, Any]] = []
    walk(old, new, "", raw)
    out = []
    for path, a, b in raw:
        rule = rule_for(type_, path)
        secret = SECRET in json.dumps(shown(a), default=str) + json.dumps(shown(b), default=str)
        out.append(FieldChange(path, a, b, rule.replaces, rule.reason, secret))
    return out


_OPS = list(Op)


def compare(old: Snapshot, new: Snapshot) -> list[ResourceChange]:
    """Per resource (by URN): what `pulumi up` would do to go from `old` to `new`."""
    both_fp = old.fingerprinted and new.fingerprinted
    changes: list[ResourceChange] = []
    for urn in sorted(set(old.resources) | set(new.resources)):
        a, b = old.resources.get(urn), new.resources.get(urn)
        cur = b or a
        assert cur is not None
        if a is None or b is None:
            op = Op.CREATE if a is None else Op.DELETE
            changes.append(ResourceChange(urn, cur.type, cur.name, op, [], cur.protect, cur.delete_before_replace,
                                          cur.service))
            continue
        fields = _field_changes(b.type, a.inputs, b.inputs, both_fp)
        for opt, x, y in (("protect", a.protect, b.protect),
                          ("deleteBeforeReplace", a.delete_before_replace, b.delete_before_replace)):
            if x != y:
                fields.append(FieldChange(f"(options).{opt}", x, y, False, "a resource option: no provider call"))
        if not fields:
            continue
        op = Op.REPLACE if any(f.replaces for f in fields) else Op.UPDATE
        changes.append(ResourceChange(urn, b.type, b.name, op, fields, b.protect, b.delete_before_replace,
                                      cur.service))
    changes.sort(key=lambda c: (_OPS.index(c.op), c.type, c.name))
    _annotate(changes, old, new)
    return changes


def output_changes(old: Snapshot, new: Snapshot) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []
    walk(old.outputs, new.outputs, "", out)
    return [(p, shown(a), shown(b)) for p, a, b in out]


# ---- notes -------------------------------------------------------------------------------------

def _volume_names(state: State) -> list[tuple[str, str]]:
    """(named volume, mount path) a Docker container mounts."""
    return [(str(x["volumeName"]), str(x.get("containerPath", ""))) for x in state.inputs.get("volumes") or []
            if isinstance(x, dict) and x.get("volumeName")]


def _annotate(changes: list[ResourceChange], old: Snapshot, new: Snapshot) -> None:
    """Notes a reviewer needs on replacements: the order of delete and create, and what
    happens to the data of a stateful service."""
    by_urn = {c.urn: c for c in changes}
    for c in changes:
        if c.op is Op.UPDATE and c.type == v.K8S_STATEFULSET \
                and any(f.path.startswith("spec.template") for f in c.changes):
            claims = claims_of(new.resources[c.urn])
            keeps = f"each keeps its claim ({claims})" if claims else ""
            c.note(NoteKind.ROLLING_UPDATE,
                   "rolling update: its pods are recreated one at a time" + (f"; {keeps}" if keeps else ""), keeps)
        if c.op is Op.UPDATE and c.type == v.DOCKER_CONTAINER:
            dormant = sorted({head(f.path, 1) for f in c.changes
                              if head(f.path, 1) not in DOCKER_LIVE and not f.path.startswith("(")})
            if dormant:
                gist = (f"the running container keeps its old {', '.join(dormant)}: the provider only records it; "
                        "it takes effect when the container is next replaced")
                c.note(NoteKind.DORMANT, f"{gist} (`pulumi up --replace {c.urn}`)", gist)
        if c.op is not Op.REPLACE:
            continue
        prev = old.resources[c.urn]
        if c.type == v.DOCKER_CONTAINER:
            host = ", ".join(f"{p.get('ip')}:{p.get('external')}" for p in prev.inputs.get("ports") or []
                             if isinstance(p, dict))
            if c.delete_before_replace:
                freed = f" and host port {host}" if host else ""
                c.note(NoteKind.DELETE_FIRST, f"will be deleted before its replacement is created "
                       f"(delete_before_replace: frees its fixed name {prev.inputs.get('name')}{freed}); "
                       "a short outage")
            else:
                c.note(NoteKind.NAME_CLASH, f"RISK: the replacement is created before the old container is "
                       f"deleted, but the name {prev.inputs.get('name')} is fixed: `pulumi up` would fail on the name"
                       + (f" and on host port {host} ('port is already allocated')" if host else ""))
        if v.is_kubernetes(c.type):
            renamed = any(f.path == "metadata.name" for f in c.changes)
            c.note(NoteKind.K8S_ORDER, "a new object under a new name is created first, then the old one is "
                   "deleted" if renamed else "will be deleted before its replacement is created: its name is "
                   "fixed, so pulumi-kubernetes deletes first (expect a short outage of what it serves)")
        if prev.protect:
            gist = ("protected: `pulumi up` refuses to replace it until it is unprotected "
                    f"(`pulumi state unprotect '{c.urn}'`)")
            c.note(NoteKind.PROTECTED, f"RISK: {gist}", gist)
        claims = claims_of(prev) if c.type == v.K8S_STATEFULSET else ""
        if claims and any(f.path.startswith("spec.volumeClaimTemplates") and "storage" in f.path for f in c.changes):
            c.note(NoteKind.CLAIM_SIZE, "the existing claims keep their size: a claim template only applies to new "
                   "claims; resize the claim itself (kubectl patch pvc) where the StorageClass allows expansion")
        if claims:
            if "whenDeleted=Retain" in claims:
                c.note(NoteKind.DATA_KEPT, f"data kept: its claims ({claims}) outlive the StatefulSet and are bound "
                       "again by the replacement (same name and claim templates)")
            else:
                c.note(NoteKind.DATA_AT_RISK, f"DATA AT RISK: its claims ({claims}) are deleted with the StatefulSet")
        for vol, path in _volume_names(prev):
            holder = next((s for s in new.resources.values() if s.type == v.DOCKER_VOLUME
                           and object_name(s) == vol), None)
            if holder is None:
                c.note(NoteKind.DATA_AT_RISK, f"DATA AT RISK: volume {vol} is not in the new render")
                continue
            vchange = by_urn.get(holder.urn)
            if vchange is None and holder.protect:
                c.note(NoteKind.DATA_KEPT, f"data kept: volume {vol} is protected and not in the replace set; the "
                       f"new container mounts it again at {path}")
            elif vchange is None:
                c.note(NoteKind.DATA_KEPT, f"data kept: volume {vol} is not in the replace set (but not protected)")
            else:
                c.note(NoteKind.DATA_AT_RISK, f"DATA AT RISK: volume {vol} will be {vchange.op}d")


def claims_of(state: State) -> str:
    """The PersistentVolumeClaims of a StatefulSet and whether they outlive it."""
    spec = state.inputs.get("spec") if isinstance(state.inputs.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    names = [str((t.get("metadata") or {}).get("name")) for t in spec.get("volumeClaimTemplates") or []
             if isinstance(t, dict)]
    if not names:
        return ""
    policy = (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenDeleted", "Retain")
    claims = ", ".join(f"{n}-{object_name(state)}-0" for n in names)
    return f"{claims}; persistentVolumeClaimRetentionPolicy.whenDeleted={policy}"
