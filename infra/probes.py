"""The prober's modules, its scrape jobs, and the rules on each job (Generated.PROBE_CONFIG).

Every service the prober reaches through a probe edge (graph: one per service with a port,
on the port its check names) gets one probe job `probe-<service>` in the scraper's config:
Prometheus asks the prober's `/probe` for that service's target with that service's module,
so `probe_success` and `probe_duration_seconds` carry the service's own `service` and `tier`
labels. The module is the catalog's health check seen from outside (`model.probed_check`):
an HTTP GET of its path that must answer 2xx and, where the catalog (the seed's health
table) names an expected body, contain it; a TCP connect where there is no HTTP check.

On a Kubernetes stack with public hosts over TLS (`Resolved.tls_hosts`), the prober also
handshakes with each public host as users reach it (`<host>:443`, the host as server name,
the chain and the name verified): module `tls_public` (the tcp prober with `tls: true`; no
HTTP request, so no sign-in) and one job `tls-<service>` per host, whose
`probe_ssl_earliest_cert_expiry` the certificate alerts read. Docker has no public host.

The rules (alerts.py puts them in the rule file): each scrape job's `Catalog.job_alerts`
(absent targets), each probe job's `Service.probe_alerts` of the prober (failing, slow,
absent), each TLS job's `Service.tls_alerts` (expiry, handshake, absent), and the Watchdog.
Deterministic YAML; the blackbox exporter itself runs these modules in tests/test_probes.py.
"""

from __future__ import annotations

import re

import yaml

from .graph import Resolved
from .model import Alert, HttpCheck, TcpCheck, probed_check
from .wiring import HostOf

TIMEOUT = "5s"
"""A probe's deadline (below the scrape interval, 15s)."""
TCP_MODULE = "tcp_connect"
TLS_MODULE = "tls_public"
TLS_PORT = 443
"""Where users reach a public host (the Ingress' TLS port)."""


def job_name(service: str) -> str:
    """The probe job of a service."""
    return f"probe-{service}"


def tls_job_name(service: str) -> str:
    """The TLS probe job of a public service's host."""
    return f"tls-{service}"


def module_name(model: Resolved, service: str) -> str:
    check = probed_check(model.services[service].service)
    return f"http_{service}" if isinstance(check, HttpCheck) else TCP_MODULE


def body_pattern(expect: str) -> str:
    """The expected body as a regular expression: literal, but JSON's optional spaces around
    `:` allowed (Grafana answers `"database": "ok"`, the seed writes `"database":"ok"`)."""
    return r"\s*:\s*".join(re.escape(part) for part in expect.split(":"))


def modules(model: Resolved) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for e in model.probe_edges():
        check = probed_check(model.services[e.target].service)
        if isinstance(check, HttpCheck):
            http: dict[str, object] = {"preferred_ip_protocol": "ip4", "valid_status_codes": [200, 204]}
            if check.expect:
                http["fail_if_body_not_matches_regexp"] = [body_pattern(check.expect)]
            out[module_name(model, e.target)] = {"prober": "http", "timeout": TIMEOUT, "http": http}
        elif isinstance(check, TcpCheck):
            out[TCP_MODULE] = {"prober": "tcp", "timeout": TIMEOUT, "tcp": {"preferred_ip_protocol": "ip4"}}
    if model.tls_hosts():
        # No server_name: the exporter sends the target's host (the public host) and verifies it.
        out[TLS_MODULE] = {"prober": "tcp", "timeout": TIMEOUT,
                           "tcp": {"preferred_ip_protocol": "ip4", "tls": True}}
    return dict(sorted(out.items()))


def config(model: Resolved) -> str:
    """The prober's config file (blackbox exporter's `modules`)."""
    return yaml.safe_dump({"modules": modules(model)}, sort_keys=False, width=200)


def target(model: Resolved, service: str, host_of: HostOf) -> str:
    """What the prober is asked to probe for a service: its health URL, or host:port for TCP."""
    svc = model.services[service].service
    check = probed_check(svc)
    assert check is not None
    address = f"{host_of(service)}:{svc.port(check.port).container}"
    return f"http://{address}{check.path}" if isinstance(check, HttpCheck) else address


def scrape_jobs(model: Resolved, host_of: HostOf) -> list[dict[str, object]]:
    """One scrape job per probe edge: Prometheus asks the prober for that target."""
    prober = model.prober()
    if prober is None or prober.service.metrics is None:
        return []
    port = prober.service.port(prober.service.metrics[0]).container
    jobs: list[dict[str, object]] = []
    for e in model.probe_edges():
        t = model.services[e.target]
        jobs.append({
            "job_name": job_name(t.name), "metrics_path": "/probe",
            "params": {"module": [module_name(model, t.name)]},
            "static_configs": [{"targets": [target(model, t.name, host_of)],
                                "labels": {"tier": t.tier.value, "service": t.name}}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"{host_of(prober.name)}:{port}"}]})
    for t in model.tls_hosts():
        jobs.append({
            "job_name": tls_job_name(t.name), "metrics_path": "/probe", "params": {"module": [TLS_MODULE]},
            "static_configs": [{"targets": [f"{t.ingress_host}:{TLS_PORT}"],
                                "labels": {"tier": t.tier.value, "service": t.name}}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"{host_of(prober.name)}:{port}"}]})
    return jobs


def job_alerts(model: Resolved) -> list[tuple[str, str, Alert]]:
    """(job, service, alert) of every rule on a whole job: each scrape job's absent-target
    alert, each probe job's prober alerts, each public host's TLS alerts, and ('', '', Watchdog)."""
    out: list[tuple[str, str, Alert]] = []
    for eff in model.scrape_targets():  # every scrape job is named after its service
        out += [(eff.name, eff.name, a) for a in model.catalog.job_alerts]
    prober = model.prober()
    if prober is not None:
        for e in model.probe_edges():
            out += [(job_name(e.target), e.target, a) for a in prober.service.probe_alerts]
        for t in model.tls_hosts():
            out += [(tls_job_name(t.name), t.name, a) for a in prober.service.tls_alerts]
    if model.catalog.watchdog is not None:
        out.append(("", "", model.catalog.watchdog))
    return out
