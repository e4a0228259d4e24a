"""`plan`: render a stack offline and list its resources by tier."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import capacity, offline
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
    if res.type == "pulumi:providers:kubernetes":
        where = (f"renders YAML to {i['renderYamlToDirectory']}" if i.get("renderYamlToDirectory") else
                 f"kubeconfig context {i.get('context') or '(current)'}")
        return f"Kubernetes provider  {where}"
    meta: dict[str, Any] = i["metadata"] if isinstance(i.get("metadata"), dict) else {}
    name = meta.get("name") or res.name
    ns = f" in {meta['namespace']}" if meta.get("namespace") else ""
    detail = _kubernetes(kind, i, meta) if res.type.startswith("kubernetes:") else ""
    return f"{kind} {name}{ns}{detail}{' (protected)' if res.protect else ''}"


def _kubernetes(kind: str, i: dict[str, Any], meta: dict[str, Any]) -> str:
    """What a reviewer wants to see of a Kubernetes object, after its name."""
    spec: dict[str, Any] = i["spec"] if isinstance(i.get("spec"), dict) else {}
    if kind in ("Deployment", "StatefulSet"):
        pod = spec.get("template", {}).get("spec", {})
        c = (pod.get("containers") or [{}])[0]
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        probes = [p for p in ("readiness", "liveness", "startup") if c.get(f"{p}Probe")]
        claims = ", ".join(f"{t['metadata']['name']} {t['spec']['resources']['requests']['storage']}"
                           for t in spec.get("volumeClaimTemplates") or [])
        return (f"  image {c.get('image')}  replicas {spec.get('replicas')}  "
                f"requests {req.get('cpu')}/{req.get('memory')} limits {lim.get('cpu')}/{lim.get('memory')}  "
                f"probes {','.join(probes) or 'none'}  uid {pod.get('securityContext', {}).get('runAsUser')}"
                f"{'  read-only root' if c.get('securityContext', {}).get('readOnlyRootFilesystem') else ''}"
                f"{f'  claims {claims} (retained)' if claims else ''}")
    if kind == "Service":
        return "  ports " + ", ".join(f"{p.get('name')} {p.get('port')}" for p in spec.get("ports") or [])
    if kind == "NetworkPolicy":
        types = "/".join(t.lower() for t in spec.get("policyTypes") or [])
        if not spec.get("ingress") and not spec.get("egress"):
            return f"  denies all {types} not allowed by another policy"

        def peers(rules: list[dict[str, Any]], side: str) -> str:
            out = []
            for rule in rules:
                ports = ",".join(f"{p.get('port')}{'/udp' if p.get('protocol') == 'UDP' else ''}"
                                 for p in rule.get("ports") or [])
                for peer in rule.get(side) or [{}]:
                    ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    pod = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", "*")
                    out.append(f"{ns or '*'}/{pod}:{ports}")
            return ", ".join(out)

        parts = [f"ingress from {peers(spec['ingress'], 'from')}" if spec.get("ingress") else "",
                 f"egress to {peers(spec['egress'], 'to')}" if spec.get("egress") else ""]
        return "  allows " + "; ".join(x for x in parts if x)
    if kind == "Namespace":
        level = (meta.get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        return f"  Pod Security {level}" if level else ""
    if kind == "Secret":
        keys = (meta.get("annotations") or {}).get("optiinfra.io/secret-keys", "")
        return f"  keys {keys.replace(',', ', ')} (values secret)"
    if kind == "ConfigMap":
        return "  files " + ", ".join(sorted(i.get("data") or {}))
    if kind == "PodDisruptionBudget":
        return f"  maxUnavailable {spec.get('maxUnavailable')}"
    if kind == "Ingress":
        tls = " (TLS)" if spec.get("tls") else ""
        hosts = ", ".join(str(r.get("host")) for r in spec.get("rules") or [])
        return f"  {hosts}{tls}  class {spec.get('ingressClassName')}"
    return ""


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
    lines.append(capacity.summary_line(r.model, r.stack))
    return "\n".join(lines)
