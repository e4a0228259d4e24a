"""`plan`: render a stack offline and list its resources by tier."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from policies.optiinfra_policies import vocabulary as v

from .. import capacity, credentials, notifications, offline
from ..cli import add_stack_arguments, present_keys
from ..model import Tier
from ..offline import Render, Resource
from ..settings import NAMESPACE

HELP = "render a stack offline (no Pulumi CLI, no Docker) and print its resources by tier"

EXAMPLES = """\
python -m infra plan -s dev
python -m infra plan -s prod --json > plan.json
python -m infra plan -s dev --set services.grafana.hostPort=3100
pass show optiinfra/postgres | python -m infra plan -s dev --secret postgresPassword=-
PULUMI_STACK=staging python -m infra plan --secret-file secrets.env"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--json", action="store_true", help="print the step shape of `pulumi preview --json`")


def run(args: argparse.Namespace) -> int:
    r = offline.render(args.stack, args.sets, args.secrets)
    unset = [(f"{NAMESPACE}:{c.config_key}", credentials.unset_problem(c), credentials.user_set_fix(c, args.stack))
             for c in credentials.unset_user_set(r.model, present_keys(args))]
    if args.json:
        print(json.dumps(offline.plan_json(r), indent=2, sort_keys=True))
        for key, problem, fix in unset:  # the text says it on the page; here stdout is the preview's JSON
            print(f"warning: config key '{key}': {problem}. Fix: {fix}", file=sys.stderr)
    else:
        print(text(r, [f"Credentials: {key} {problem}; set it before deploying: {fix}" for key, problem, fix in unset]))
    return 0


def _count(n: int) -> str:
    return f"{n} resource{'' if n == 1 else 's'}"


def brief(res: Resource) -> str:
    """One line describing a resource (type-specific where it helps a reviewer)."""
    i: dict[str, Any] = res.inputs
    kind = v.kind(res.type)
    if res.type == v.DOCKER_CONTAINER:
        ports = ", ".join(f"{p['ip']}:{p['external']}->{p['internal']}" for p in i.get("ports") or []) or "none"
        nets = ", ".join(n["name"] for n in i.get("networksAdvanced") or [])
        hc = "health check" if i.get("healthcheck") else "no health check"
        gate = ", waited on until healthy" if i.get("wait") else ""
        image = v.docker_labels(i).get(v.DOCKER_IMAGE_LABEL, "")
        return (f"Container {i.get('name')}  image {image}  ports {ports}  networks {nets}  "
                f"memory {i.get('memory')}MiB  {hc}{gate}")
    if res.type == v.DOCKER_NETWORK:
        return f"Network {i.get('name')}{' (internal: no egress)' if i.get('internal') else ''}"
    if res.type == v.DOCKER_VOLUME:
        return f"Volume {i.get('name')}{' (protected)' if res.protect else ''}"
    if res.type == v.DOCKER_IMAGE:
        return f"Image {i.get('name')}"
    if res.type == v.RANDOM_PASSWORD:
        return f"Generated credential {res.name} (secret)"
    if res.type == v.K8S_PROVIDER:
        where = (f"renders YAML to {i['renderYamlToDirectory']}" if i.get("renderYamlToDirectory") else
                 f"kubeconfig context {i.get('context') or '(current)'}")
        return f"Kubernetes provider  {where}"
    meta: dict[str, Any] = i["metadata"] if isinstance(i.get("metadata"), dict) else {}
    name = meta.get("name") or res.name
    ns = f" in {meta['namespace']}" if meta.get("namespace") else ""
    detail = _kubernetes(res.type, i, meta) if v.is_kubernetes(res.type) else ""
    return f"{kind} {name}{ns}{detail}{' (protected)' if res.protect else ''}"


def _kubernetes(type_: str, i: dict[str, Any], meta: dict[str, Any]) -> str:
    """What a reviewer wants to see of a Kubernetes object, after its name."""
    spec: dict[str, Any] = i["spec"] if isinstance(i.get("spec"), dict) else {}
    if type_ in (v.K8S_DEPLOYMENT, v.K8S_STATEFULSET):
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
    if type_ == v.K8S_SERVICE:
        return "  ports " + ", ".join(f"{p.get('name')} {p.get('port')}" for p in spec.get("ports") or [])
    if type_ == v.K8S_CRONJOB:
        pod = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
        c = (pod.get("containers") or [{}])[0]
        claims = ", ".join(str(vol["persistentVolumeClaim"].get("claimName")) for vol in pod.get("volumes") or []
                           if isinstance(vol, dict) and vol.get("persistentVolumeClaim"))
        of = (meta.get("annotations") or {}).get(v.K8S_BACKUP_OF)
        return (f"  schedule {spec.get('schedule')} ({spec.get('timeZone') or 'controller time'})"
                f"  image {c.get('image')}"
                f"{f'  backs up {of}' if of else ''}{f'  claims {claims}' if claims else ''}"
                f"  uid {pod.get('securityContext', {}).get('runAsUser')}")
    if type_ == v.K8S_PVC:
        size = spec.get("resources", {}).get("requests", {}).get("storage")
        return f"  {size}" if size else ""
    if type_ == v.K8S_NETWORK_POLICY:
        types = "/".join(t.lower() for t in spec.get("policyTypes") or [])
        if not spec.get("ingress") and not spec.get("egress"):
            return f"  denies all {types} not allowed by another policy"

        def peers(rules: list[dict[str, Any]], side: str) -> str:
            out = []
            for rule in rules:
                ports = ",".join(f"{p.get('port')}{'/udp' if p.get('protocol') == 'UDP' else ''}"
                                 for p in rule.get("ports") or [])
                for peer in rule.get(side) or [{}]:
                    ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get(v.K8S_NAMESPACE_NAME)
                    pod = peer.get("podSelector", {}).get("matchLabels", {}).get(v.K8S_NAME, "*")
                    out.append(f"{ns or '*'}/{pod}:{ports}")
            return ", ".join(out)

        parts = [f"ingress from {peers(spec['ingress'], 'from')}" if spec.get("ingress") else "",
                 f"egress to {peers(spec['egress'], 'to')}" if spec.get("egress") else ""]
        return "  allows " + "; ".join(x for x in parts if x)
    if type_ == v.K8S_NAMESPACE:
        level = (meta.get("labels") or {}).get(v.PSS_ENFORCE)
        return f"  Pod Security {level}" if level else ""
    if type_ == v.K8S_SECRET:
        keys = (meta.get("annotations") or {}).get(v.K8S_SECRET_KEYS, "")
        return f"  keys {keys.replace(',', ', ')} (values secret)"
    if type_ == v.K8S_CONFIGMAP:
        return "  files " + ", ".join(sorted(i.get("data") or {}))
    if type_ == v.K8S_PDB:
        return f"  maxUnavailable {spec.get('maxUnavailable')}"
    if type_ == v.K8S_INGRESS:
        tls = " (TLS)" if spec.get("tls") else ""
        hosts = ", ".join(str(r.get("host")) for r in spec.get("rules") or [])
        return f"  {hosts}{tls}  class {spec.get('ingressClassName')}"
    return ""


def text(r: Render, unset: list[str] = ()) -> str:  # type: ignore[assignment]
    """The plan as a reviewer reads it; `unset`: the credentials only you can set that the
    stack lacks (each one line, after the alerts' status)."""
    tiers = [res for res in r.resources if res.type == v.TIER]
    order = [t.value for t in Tier]
    tiers.sort(key=lambda t: order.index(t.name) if t.name in order else len(order))
    seen = {t.urn for t in tiers}
    sections = []
    for tier in tiers:
        children = [res for res in r.resources if res.parent == tier.urn]
        seen.update(c.urn for c in children)
        sections.append(f"\n{tier.name} ({_count(len(children))})")
        sections.extend(f"  {brief(c)}" for c in sorted(children, key=lambda c: (c.type, c.name)))
        sections.extend(f"  reads existing {v.kind(e.type)} {e.id} (external: never created, changed or deleted)"
                        for e in r.reads if e.parent == tier.urn)
    rest = [res for res in r.resources if res.urn not in seen]
    if rest:
        sections.append(f"\nother ({_count(len(rest))})")
        sections.extend(f"  {brief(c)}" for c in rest)
    # The header's parts add up to its total: the tiers' own components, what the sections list.
    listed = len(seen) - len(tiers)
    lines = [f"Stack {r.stack}: {_count(len(r.resources))} = {len(tiers)} tier components + {listed} in the tiers "
             f"below{f' + {len(rest)} other' if rest else ''} (offline render, nothing deployed)", *sections]
    lines.append("\nOutputs")
    for key, value in sorted(r.outputs.items()):
        lines.append(f"  {key}: {json.dumps(value, sort_keys=True)}")
    lines.append(notifications.status_line(r.model))
    lines.extend(unset)
    lines.append(capacity.summary_line(r.model, r.stack))
    return "\n".join(lines)
