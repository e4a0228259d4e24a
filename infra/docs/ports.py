"""docs/PORTS.md: a section per stack: services by tier with ports, health checks and alerts, the
port allocation by band, quick-access URLs, dependencies, the startup order and a Mermaid graph.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from policies.optiinfra_policies import vocabulary as vocab

from .. import alerts
from ..graph import Effective, Resolved, startup_order
from ..model import Alert, CommandCheck, HealthCheck, HttpCheck, Port, Service, TcpCheck, Tier
from .output import GENERATED
from .view import StackView, cell, code, node_ports, scraper_title

PORTS_MD = "PORTS.md"


def port_text(v: StackView, eff: Effective, p: Port) -> str:
    if v.kube:
        return f"{p.name} {p.container}"
    pub = next((x for x in eff.published if x.port.name == p.name), None)
    if pub:
        return f"{p.name} {p.container} → {pub.bind}:{pub.host}"
    return f"{p.name} {p.container} (not published)"


def probe_text(svc: Service, h: HealthCheck) -> str:
    p = h.probe
    if isinstance(p, HttpCheck):
        expect = f", expects {code(p.expect)}" if p.expect else ""
        return f"GET {code(p.path)} on {p.port} ({svc.port(p.port).container}){expect}"
    if isinstance(p, TcpCheck):
        return f"TCP connect to {p.port} ({svc.port(p.port).container})"
    assert isinstance(p, CommandCheck)
    return code(shlex.join(p.argv))


def health_how(v: StackView, svc: Service) -> str:
    h = svc.health
    if h is None:
        return "none"
    if v.kube:
        kind = {HttpCheck: "httpGet", TcpCheck: "tcpSocket", CommandCheck: "exec"}[type(h.probe)]
        return f"{kind} readiness and liveness probes" + (", a startup probe (slow starter)" if h.slow_start else "")
    if h.docker_client is None:
        return f"no Docker health check: {h.no_docker_reason}"
    client = {"exec": "exec form", "bash-tcp": "bash /dev/tcp"}.get(h.docker_client, h.docker_client)
    return f"Docker health check with {client}, every {h.interval_s}s"


def _threshold_text(m: Resolved, alert: Alert) -> str:
    value = alerts.threshold(m, alert)
    return "–" if value is None else f"{value:g}"


def alerts_by_service(m: Resolved) -> dict[str, list[str]]:
    """Alert names per service they are about: the platform's on every scraped service, the
    others on their subject (an exporter's on its database), from whichever job reads them."""
    out: dict[str, list[str]] = {}
    platform = [a.name for job, a in alerts.alerts_of(m) if not job]
    for eff in m.scrape_targets():
        out.setdefault(eff.name, []).extend(platform)
    for job, a in alerts.alerts_of(m):
        if job:
            out.setdefault(a.about or job, []).append(a.name if not a.about else f"{a.name} (via {job})")
    return out


def alert_table(views: Sequence[StackView]) -> list[str]:
    """Every alert once, for all stacks: the stacks it runs on and their thresholds where they
    differ (the expression shown is the first such stack's)."""
    rows: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    first: dict[tuple[str, str], tuple[Alert, str]] = {}
    for v in views:
        for job, a in alerts.alerts_of(v.model):
            key = (a.name, job)
            rows.setdefault(key, {})[v.stack] = (_threshold_text(v.model, a), alerts.expression(v.model, a, job))
            first.setdefault(key, (a, alerts.expression(v.model, a, job)))
    everywhere = [v.stack for v in views]
    lines = ["## Alerts", "", "Every alert once, for every stack. Thresholds are the catalog's unless a stack's "
             "`optiinfra:alerting.thresholds` sets them; the expression is the first listed stack's.", "",
             "| Alert | Job | Stacks | Severity | For | Threshold | Expression | Summary | Runbook |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, per_stack in rows.items():
        a, expression = first[key]
        stacks = "all" if list(per_stack) == everywhere else ", ".join(per_stack)
        values = {t for t, _ in per_stack.values()}
        threshold = values.pop() if len(values) == 1 else " · ".join(f"{s} {t}" for s, (t, _) in per_stack.items())
        lines.append(f"| {a.name} | {key[1] or 'every scraped'} | {stacks} | {a.severity} | {a.for_} | {threshold} | "
                     f"{cell(code(expression))} | {cell(code(a.summary))} | {cell(a.runbook)} |")
    return [*lines, ""]


def _forward_example(v: StackView) -> str:
    """A `kubectl port-forward` of the scraper's first port, the UI an operator opens first."""
    scraper = v.scraper
    if scraper is None or not scraper.service.ports:
        return ""
    return (f", e.g. `kubectl -n {v.network(scraper.tier)[0]} port-forward svc/{scraper.name} "
            f"{scraper.service.ports[0].container}`")


def _deps(model: Resolved, name: str) -> str:
    out = []
    for e in model.out_edges(name):
        if e.kind != "depends":
            continue
        target = model.services[e.target].service
        port = target.port(e.port).container if e.port else None
        out.append(f"{e.target}:{port}" if port else e.target)
    return ", ".join(out) or "–"


# ---- Markdown -------------------------------------------------------------------------------------

def section(v: StackView) -> str:
    m = v.model
    backend = "Kubernetes" if v.kube else "Docker"
    n_tiers = len(m.tiers())
    lines = [f"## Stack `{v.stack}` ({backend})", ""]
    if v.kube:
        lines.append(f"{len(m.services)} services in {n_tiers} tiers, one namespace per tier. Nothing has a host "
                     "port: services are reached by their cluster DNS name, and the public ones "
                     f"({', '.join(m.settings.public) or 'none'}) through an Ingress.")
    else:
        lines.append(f"{len(m.services)} services in {n_tiers} tiers, one network per tier. Published host ports "
                     "bind to 127.0.0.1 unless the service is listed in `optiinfra:public`; containers reach "
                     "each other by service name on the networks they share.")
    lines += ["", f"![Topology of the {v.stack} stack](topology-{v.stack}.svg)", ""]

    lines += ["### Services by tier", ""]
    for i, tier in enumerate(m.tiers(), 1):
        net, internal = v.network(tier)
        where = "namespace" if v.kube else "network"
        lines += [f"#### {i}. {tier.value} · {where} `{net}`" + (" (internal: no egress)" if internal else ""), ""]
        unit = "Workload" if v.kube else "Container"
        lines += [f"| Service | {unit} | Ports | Health check | Depends on | Purpose |", "|---|---|---|---|---|---|"]
        for eff in m.in_tier(tier):
            svc = eff.service
            wl = ", ".join(f"{vocab.kind(r.type)} {code(str((r.inputs.get('metadata') or {}).get('name')))}"
                           if v.kube else code(str(r.inputs.get("name"))) for r in v.workloads(svc.name)) or "–"
            ports = "<br>".join(port_text(v, eff, p) for p in svc.ports) or "–"
            health = probe_text(svc, svc.health) if svc.health else "–"
            lines.append(f"| {svc.name} | {cell(wl)} | {cell(ports)} | {cell(health)} | "
                         f"{cell(_deps(m, svc.name))} | {cell(svc.purpose)} |")
        lines.append("")

    lines += ["### Health checks and alerts", "",
              "Alerts are rules the scraper evaluates, generated from the catalog ([monitoring](monitoring.md)); "
              "each is described once, under [Alerts](#alerts).", "",
              "| Service | Check | How it runs | Alerts |", "|---|---|---|---|"]
    per_service = alerts_by_service(m)
    for name in startup_order(m):
        svc = m.services[name].service
        if svc.health:
            lines.append(f"| {name} | {cell(probe_text(svc, svc.health))} | {cell(health_how(v, svc))} | "
                         f"{cell(', '.join(per_service.get(name, [])) or '–')} |")
    lines.append("")

    lines += ["### Port allocation by band", ""]
    lines += ["The seed's bands. " + ("Kubernetes publishes no host port; the allocation is what dev and "
                                      "port-forwards use." if v.kube else "A host port outside its band is marked."),
              "", "| Band | Range | Host port | Service · port | Container port | In this stack |",
              "|---|---|---|---|---|---|"]
    for band in m.catalog.bands:
        rows = []
        for eff in m.services.values():
            for p in eff.service.ports:
                if p.band != band.name or p.host is None:
                    continue
                pub = next((x for x in eff.published if x.port.name == p.name), None)
                host = pub.host if pub and not v.kube else p.host
                state = (f"Service port {p.container}" if v.kube else
                         f"published on {pub.bind}:{pub.host}" if pub else "not published")
                if not band.contains(host):
                    state += f" · outside the band ({band.low}–{band.high})"
                rows.append((host, f"| {band.name} | {band.low}–{band.high} | {host} | {eff.name} · {p.name} | "
                                   f"{p.container} | {state} |"))
        lines += [row for _, row in sorted(rows)]
    lines.append("")

    lines += ["### Quick access", ""]
    urls = v.outputs.get("urls") or {}
    if urls:
        lines += ["| Service | URL | Purpose |", "|---|---|---|"]
        for name, url in sorted(urls.items(), key=lambda kv: str(kv[1])):
            lines.append(f"| {name} | <{url}> | {cell(m.services[name].service.purpose)} |")
        lines.append("")
    if v.kube:
        endpoints = v.outputs.get("endpoints") or {}
        if endpoints:
            lines += ["In-cluster endpoints; from a workstation, forward one" + _forward_example(v) + ":", "",
                      "| Service | Endpoint |", "|---|---|"]
            lines += [f"| {k} | `{e}` |" for k, e in sorted(endpoints.items())]
            lines.append("")
    else:
        unpublished = [eff for eff in m.services.values() if not eff.published and eff.service.ports]
        if unpublished:
            lines += ["Not published on the host (reach them from a container on their network):", ""]
            for eff in unpublished:
                ports = ", ".join(f"{p.name} {p.container}" for p in eff.service.ports)
                lines.append(f"- {eff.name}: `{eff.name}:{eff.service.ports[0].container}` ({ports}) on "
                             f"`{v.network(eff.tier)[0]}`")
            lines.append("")
    conns = []
    for eff in m.in_tier(Tier.DATABASES):
        c = eff.service.connection
        if c is None:
            continue
        addr = f"{eff.name}.{v.network(eff.tier)[0]}.svc.cluster.local" if v.kube else eff.name
        pw = f"<{m.catalog.credentials[c.credential].config_key}>" if c.credential else ""
        text = c.template.format(user=c.user or "", password=pw, host=addr, port=eff.service.port(c.port).container)
        conns.append(f"- {eff.name}: `{text}`")
    if conns:
        lines += ["Database connections (a password is the stack secret named in angle brackets):", "",
                  *conns, ""]

    lines += ["### Dependencies", "",
              f"| Service | Talks to (port) | Waits until healthy | Scraped by {scraper_title(v)} at |",
              "|---|---|---|---|"]
    for name in startup_order(m):
        svc = m.services[name].service
        waits = ", ".join(m.waits_for(name)) or "–"
        scraped = f"`{svc.metrics[1]}` on {svc.port(svc.metrics[0]).container}" if svc.metrics else "–"
        lines.append(f"| {name} | {cell(_deps(m, name))} | {cell(waits)} | {scraped} |")
    lines.append("")
    lines += ["### Startup order", ""]
    order = startup_order(m)
    for tier in m.tiers():
        lines.append(f"1. **{tier.value}**: " + ", ".join(n for n in order if m.services[n].tier is tier))
    lines += ["", "### Topology (Mermaid)", "", "```mermaid", mermaid(v), "```", ""]
    return "\n".join(lines)


def _id(name: str) -> str:
    return name.replace("-", "_")


def mermaid(v: StackView) -> str:
    m = v.model
    lines = ["flowchart TB"]
    for tier in reversed(m.tiers()):
        net, _ = v.network(tier)
        lines.append(f'  subgraph tier_{tier.value}["{tier.value} · {net}"]')
        for eff in m.in_tier(tier):
            lines.append(f'    {_id(eff.name)}["{eff.name}<br/>{node_ports(v, eff)}"]')
        lines.append("  end")
    for e in m.edges:
        target = m.services[e.target].service
        port = target.port(e.port).container if e.port else ""
        arrow = "-.->" if e.kind == "scrape" else "-->"
        label = f"scrape {port}" if e.kind == "scrape" else str(port)
        lines.append(f"  {_id(e.source)} {arrow}|{label}| {_id(e.target)}")
    return "\n".join(lines)


def ports_md(views: Sequence[StackView]) -> str:
    lines = [GENERATED, "", "# Services, ports and topology", "",
             "Generated from the catalog ([`infra/catalog.py`](../infra/catalog.py)) and each stack's "
             "`Pulumi.<stack>.yaml`, one section per stack: " +
             " · ".join(f"[{v.stack}](#stack-{v.stack}-{'kubernetes' if v.kube else 'docker'})" for v in views) +
             ", then every alert once ([alerts](#alerts)). Regenerate with `python -m infra docs`.", ""]
    body = "\n".join(section(v) for v in views).rstrip() + "\n\n" + "\n".join(alert_table(views))
    return "\n".join(lines) + "\n" + body.rstrip() + "\n"
