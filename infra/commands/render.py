"""`render`: write a Kubernetes stack's manifests as YAML, one file per tier, secrets redacted.

The manifests are the inputs the program registers (apiVersion, kind, metadata, spec, ...)
as recorded by the offline renderer, so they are exactly what `pulumi up` would send. Secret
values appear as `[secret]`: the files are for reading, diffing and feeding to other tools
(schema validators, policy engines), not for `kubectl apply`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml

from policies.optiinfra_policies.vocabulary import K8S_SECRET_KEYS, TIER, is_kubernetes

from .. import offline, stack
from ..cli import add_stack_arguments
from ..model import Tier
from ..offline import Render, Resource
from ..settings import NAMESPACE, ConfigError

HELP = "write a Kubernetes stack's manifests as YAML, one file per tier (secret values redacted)"

EXAMPLES = """\
python -m infra render -s prod --out manifests/
python -m infra render -s staging --out /tmp/staging --json"""

CLUSTER = "cluster"
"""File for Kubernetes objects outside every tier (none today)."""

# Apply order inside a file: what others refer to first.
KIND_ORDER = ("Namespace", "NetworkPolicy", "Secret", "ExternalSecret", "ConfigMap", "Service", "StatefulSet",
              "Deployment", "PodDisruptionBudget", "Ingress")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory to write <tier>.yaml files into (created if missing)")
    p.add_argument("--json", action="store_true", help="print the files written and their object counts as JSON")


def is_manifest(res: Resource) -> bool:
    return res.custom and is_kubernetes(res.type) and "apiVersion" in res.inputs


def manifest(res: Resource) -> dict[str, Any]:
    """A Kubernetes object from a recorded resource: apiVersion, kind, metadata first."""
    inputs = dict(res.inputs)
    out: dict[str, Any] = {k: inputs.pop(k) for k in ("apiVersion", "kind", "metadata") if k in inputs}
    if out.get("kind") == "Secret":
        # The whole map is secret; its key names are in an annotation, so show its shape.
        names = str((out.get("metadata") or {}).get("annotations", {}).get(K8S_SECRET_KEYS, ""))
        keys = [k for k in names.split(",") if k]
        for field in ("data", "stringData"):
            if inputs.get(field) == offline.SECRET:
                inputs[field] = dict.fromkeys(keys, offline.SECRET)
    out.update(sorted(inputs.items()))
    return out


def by_file(r: Render) -> dict[str, list[dict[str, Any]]]:
    """Manifests per tier (in startup order), then `cluster` for anything outside a tier."""
    tiers = {res.urn: res.name for res in r.resources if res.type == TIER}
    order = [t.value for t in Tier]
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in sorted(
        tiers.values(), key=lambda n: order.index(n) if n in order else len(order))}
    for res in r.resources:
        if is_manifest(res):
            files.setdefault(tiers.get(res.parent, CLUSTER), []).append(manifest(res))

    def key(m: dict[str, Any]) -> tuple[int, str, str]:
        kind = str(m.get("kind"))
        meta = m.get("metadata") or {}
        rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
        return rank, str(meta.get("namespace", "")), str(meta.get("name", ""))

    return {name: sorted(docs, key=key) for name, docs in files.items() if docs}


# libyaml's emitter where PyYAML has it: the pure-Python one dominates the time of large renders.
_Base: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_Base):  # type: ignore[valid-type,misc]
    """Block style for multi-line strings (generated config files stay readable)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def writable_directory(out: Path, flag: str = "--out") -> None:
    """`out` is a directory this process can write into, or can be created: else a
    ConfigError naming the flag, before anything is rendered or written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(flag, f"{out} is a file, not a directory",
                          "give a directory (it is created if missing), e.g. --out manifests/")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(flag, f"{out} cannot be created: {existing} is a file",
                          "give a directory path whose parents are directories")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(flag, f"{out} cannot be written: {existing} is not writable by you",
                          "give a directory you can write to, e.g. under /tmp or your home")


def write(r: Render, out: Path) -> dict[Path, int]:
    """Each tier's manifests into `out` (files composed first, then written). Raises
    ConfigError when the directory or a file in it cannot be written."""
    writable_directory(out)
    files: dict[Path, tuple[str, int]] = {}
    for name, docs in by_file(r).items():
        header = (f"# {name} of stack {r.stack}: Kubernetes manifests rendered offline by "
                  f"`python -m infra render`.\n# Secret values are redacted as \"{offline.SECRET}\": "
                  "deploy with `pulumi up`, not kubectl.\n")
        files[out / f"{name}.yaml"] = (header + dump(docs), len(docs))
    for path in files:
        if path.exists() and (not path.is_file() or not os.access(path, os.W_OK)):
            raise ConfigError("--out", f"{path} exists and cannot be overwritten",
                              "remove it, or give another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, (text, _) in files.items():
            path.write_text(text)
    except OSError as err:
        raise ConfigError("--out", f"{err.filename or out} cannot be written ({err.strerror})",
                          "give a directory you can write to") from None
    return {path: count for path, (_, count) in files.items()}


def run(args: argparse.Namespace) -> int:
    if stack.model_of(args.stack, args.sets, args.secrets).settings.target != "kubernetes":
        kubernetes = [s for s in stack.available_stacks() if stack.model_of(s).settings.target == "kubernetes"]
        raise ConfigError(f"{NAMESPACE}:target", f"stack {args.stack} targets docker, which has no Kubernetes "
                          "manifests", f"use a kubernetes stack ({', '.join(kubernetes) or 'none here'}) or "
                          "--set target=kubernetes")
    writable_directory(Path(args.out))  # before the render: a bad --out costs nothing
    r = offline.render(args.stack, args.sets, args.secrets)
    written = write(r, Path(args.out))
    if args.json:
        print(json.dumps({"stack": args.stack, "files": [{"path": str(path), "objects": count}
                                                         for path, count in written.items()]}, indent=2))
        return 0
    for path, count in written.items():
        print(f"wrote {path} ({count} objects)")
    return 0
