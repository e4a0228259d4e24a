"""`plan`: render a stack offline and list its resources by tier."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import offline
from ..cli import add_stack_arguments
from ..offline import Render, Resource

HELP = "render a stack offline (no Pulumi CLI, no Docker) and print its resources by tier"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--json", action="store_true", help="print the step shape of `pulumi preview --json`")


def run(args: argparse.Namespace) -> int:
    r = offline.render(args.stack, args.sets, args.secrets)
    if args.json:
        print(json.dumps(offline.plan_json(r), indent=2, sort_keys=True))
    else:
        print(text(r))
    return 0


def _label(res: Resource, key: str) -> str:
    for item in res.inputs.get("labels") or []:
        if isinstance(item, dict) and item.get("label") == f"io.optiinfra.{key}":
            return str(item.get("value"))
    return ""


def brief(res: Resource) -> str:
    """One line describing a resource (type-specific where it helps a reviewer)."""
    i: dict[str, Any] = res.inputs
    kind = res.type.split(":")[-1].split("/")[-1]
    if res.type == "docker:index/container:Container":
        ports = ", ".join(f"{p['ip']}:{p['external']}->{p['internal']}" for p in i.get("ports") or []) or "none"
        nets = ", ".join(n["name"] for n in i.get("networksAdvanced") or [])
        hc = "health check" if i.get("healthcheck") else "no health check"
        gate = ", waited on until healthy" if i.get("wait") else ""
        return (f"Container {i.get('name')}  image {_label(res, 'image')}  ports {ports}  networks {nets}  "
                f"memory {i.get('memory')}MiB  {hc}{gate}")
    if res.type == "docker:index/network:Network":
        return f"Network {i.get('name')}{' (internal: no egress)' if i.get('internal') else ''}"
    if res.type == "docker:index/volume:Volume":
        return f"Volume {i.get('name')}{' (protected)' if res.protect else ''}"
    if res.type == "docker:index/remoteImage:RemoteImage":
        return f"Image {i.get('name')}"
    if res.type == "random:index/randomPassword:RandomPassword":
        return f"Generated credential {res.name} (secret)"
    meta: dict[str, Any] = i["metadata"] if isinstance(i.get("metadata"), dict) else {}
    name = meta.get("name") or res.name
    ns = f" in {meta['namespace']}" if meta.get("namespace") else ""
    return f"{kind} {name}{ns}{' (protected)' if res.protect else ''}"


def text(r: Render) -> str:
    tiers = [res for res in r.resources if res.type == "optiinfra:platform:Tier"]
    order = ["databases", "monitoring", "core", "agents", "frontend"]
    tiers.sort(key=lambda t: order.index(t.name) if t.name in order else len(order))
    lines = [f"Stack {r.stack}: {len(r.resources)} resources in {len(tiers)} tiers (offline render, nothing deployed)"]
    seen = {t.urn for t in tiers}
    for tier in tiers:
        children = [res for res in r.resources if res.parent == tier.urn]
        seen.update(c.urn for c in children)
        lines.append(f"\n{tier.name} ({len(children)} resources)")
        lines.extend(f"  {brief(c)}" for c in sorted(children, key=lambda c: (c.type, c.name)))
    rest = [res for res in r.resources if res.urn not in seen]
    if rest:
        lines.append(f"\nother ({len(rest)} resources)")
        lines.extend(f"  {brief(c)}" for c in rest)
    lines.append("\nOutputs")
    for key, value in sorted(r.outputs.items()):
        lines.append(f"  {key}: {json.dumps(value, sort_keys=True)}")
    return "\n".join(lines)
