"""The whole diff (`diff`, `run_diff`: what the CLI prints) and its text form; `Diff.to_json`
is the stable JSON shape documented in infra/commands/diff.py."""

from __future__ import annotations

import json
import secrets as random_secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import cost
from .. import stack as stack_config
from .compare import Note, NoteKind, Op, ResourceChange, compare, output_changes, shown
from .impact import DiffWarning, Impact, WarningKind, impact, port_changes, warnings_for
from .snapshot import Snapshot, at_revision, take

if TYPE_CHECKING:
    from ..model import Catalog


@dataclass
class Diff:
    stack: str
    old_label: str
    new_label: str
    resources: list[ResourceChange]
    outputs: list[tuple[str, Any, Any]]
    impacts: list[Impact]
    warnings: list[DiffWarning]
    unchanged: int
    notes: list[str] = field(default_factory=list)
    cost: list[str] = field(default_factory=list)
    """What the change costs a month, per service and in total (infra/cost.py: the workloads'
    priced amounts read from both renders, at the new side's `optiinfra:prices`); [] when
    nothing priced changes."""

    @property
    def empty(self) -> bool:
        return not self.resources and not self.outputs

    def counts(self) -> dict[str, int]:
        c = {op.value: 0 for op in Op}
        for r in self.resources:
            c[r.op.value] += 1
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
            "cost": self.cost,
        }


def diff(old: Snapshot, new: Snapshot) -> Diff:
    """`old` -> `new`; `new` is a render of this checkout (`take`), whose model the port
    impact is derived from."""
    if new.model is None:
        raise ValueError("the new side of a diff must be a render of this checkout (snapshot.take)")
    resources = compare(old, new)
    outputs = output_changes(old, new)
    pcs = port_changes(old, new)
    impacts = impact(pcs, new.model, old, new, resources, outputs)
    warnings = warnings_for(pcs, new.model, new, resources)
    follows = {u: i.change for i in impacts for e in i.effects
               if e.follows and e.subject != i.change.service for u in e.urns}
    for r in resources:
        if r.urn in follows and r.op in (Op.UPDATE, Op.REPLACE):
            ch = follows[r.urn]
            r.notes.append(Note(NoteKind.FOLLOWS, f"follows {ch.service} {ch.port}: updated in the same `pulumi up` "
                                f"as {ch.service}"))
    notes = []
    if not (old.fingerprinted and new.fingerprinted):
        notes.append(f"{old.label if not old.fingerprinted else new.label} was rendered without secret "
                     "fingerprints: a changed secret value does not show")
    changed = sum(1 for r in resources if r.op in (Op.UPDATE, Op.REPLACE))
    unchanged = len(set(old.resources) & set(new.resources)) - changed
    prices, cls = new.model.settings.prices, cost.storage_class(new.model.settings)
    priced = cost.change_lines(cost.of_resources((r.type, r.inputs) for r in old.resources.values()),
                               cost.of_resources((r.type, r.inputs) for r in new.resources.values()), prices, cls)
    return Diff(old.stack, old.label, new.label, resources, outputs, impacts, warnings, unchanged, notes, priced)


def run_diff(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (), *, base: str | bool | None = False,
             catalog: Catalog | None = None) -> Diff:
    """The diff the CLI prints. `base=False`: working tree against the same with the
    overrides; a revision (or None: the merge base with main): that revision against the
    working tree with the overrides. Secrets are compared by fingerprints under a key made
    for this one run (handed to the base revision's renderer), never printed."""
    key = random_secrets.token_bytes(32)
    overrides = [f"--set {s}" for s in sets] + [f"--secret {s.split('=', 1)[0]}=[secret]" for s in secrets]
    new_label = "working tree" + (" with " + " ".join(overrides) if overrides else "")
    if base is False:
        old = take(stack, key=key, catalog=catalog, label="working tree")
    else:
        old = at_revision(stack, base if isinstance(base, str) else None, key=key, root=stack_config.ROOT)
    new = take(stack, sets, secrets, key=key, catalog=catalog, label=new_label)
    return diff(old, new)


# ---- text -----------------------------------------------------------------------------------------

_SIGN = {Op.CREATE: "+", Op.UPDATE: "~", Op.REPLACE: "+-", Op.DELETE: "-"}
_CHECKS = ((WarningKind.STATEFUL_REPLACE, "stateful services replaced"),
           (WarningKind.DATA_AT_RISK, "volumes or claims at risk"),
           (WarningKind.HOST_PORT_TAKEN, "host ports already taken"),
           (WarningKind.BAND, "ports outside their band"),
           (WarningKind.NO_DELETE_FIRST, "replacements that create before deleting"))
"""The checks a port change's diff always reports on, found or not."""


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
    if d.cost:
        lines.append("\nMonthly cost (optiinfra:prices)")
        lines.extend(f"  {c}" for c in d.cost)
    if d.resources:
        lines.append("\nResources")
    for r in d.resources:
        who = f" [{r.service}]" if r.service else ""
        lines.append(f"  {_SIGN[r.op]:<2} {r.op.value:<7} {r.kind} {r.name}{who}")
        told: set[str] = set()
        for f in r.changes:
            why = ("  replaces" + (": " + f.reason if f.reason not in told else "")) if f.replaces else ""
            told.add(f.reason)
            a, b = _pair(f.old, f.new)
            lines.append(f"        {f.path}: {a} -> {b}{why}")
        for n in r.notes:
            lines.append(f"        * {n.text}")
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
            lines.append(f"    {mark} {e.kind.value:<14} {e.subject}: {e.detail}{seen}")
    if d.warnings:
        lines.append("\nWarnings")
        lines.extend(f"  ! {w.kind.value}: {w.message}" for w in d.warnings)
    if d.impacts:
        kinds = {w.kind for w in d.warnings}
        lines.append("\nChecks")
        for kind, what in _CHECKS:
            lines.append(f"  {what}: {'see warnings' if kind in kinds else 'none'}")
    lines.extend(f"note: {n}" for n in d.notes)
    return "\n".join(lines)
