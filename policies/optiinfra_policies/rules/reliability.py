"""Reliability: every container is watched and bounded."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from .. import vocabulary as v
from ..core import Resource, Rule, as_dict, as_list, get_in, is_unknown
from .common import (
    CONFIG_FILE,
    CONFIGMAP,
    CONTAINER,
    DOCKER,
    LONG_RUNNING,
    WORKLOADS,
    annotation,
    docker_labels,
    docker_service,
    k8s_service,
    list_of,
    pod_containers,
    pod_spec,
    service_hint,
    stamped_true,
)

# ---- health checks ----------------------------------------------------------------------

def _exempt(cfg: Mapping[str, Any], service: str) -> bool:
    return any(e.get("service") == service for e in as_list(cfg.get("exemptions")))


def check_health(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    if res.type == CONTAINER:
        if res.props.get("rm") is True or (res.props.get("mustRun") is False and res.props.get("attach") is True):
            return  # a one-shot container (removed on exit, or run to its exit by `pulumi up`)
        service = docker_service(res)
        tests = as_list(get_in(res.props, "healthcheck", "tests"))
        if tests and tests[0] != "NONE":
            return
        if _exempt(cfg, service):
            return
        reason = docker_labels(res.props).get(v.DOCKER_NO_HEALTHCHECK)
        why = f" The catalog says: {reason}." if reason else ""
        yield (f"{service}: long-running container without a health check.{why} Fix: declare a HealthCheck the "
               "image can run (infra/catalog.py), or exempt the service with its reason in "
               f"health-checks.exemptions ({CONFIG_FILE}).")
        return
    if res.type in LONG_RUNNING:
        service = k8s_service(res)
        if _exempt(cfg, service):
            return
        slow = stamped_true(annotation(res, v.K8S_SLOW_START))
        for cname, c in pod_containers(pod_spec(res) or {}, init=False):
            missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
            if slow and cfg.get("requireStartupProbe") and not c.get("startupProbe"):
                missing.append("startupProbe (the catalog marks it a slow starter)")
            if missing:
                yield (f"{service}: container {cname} has no {' and no '.join(missing)}. Fix: render the "
                       "catalog's HealthCheck as probes.")


HEALTH_CHECKS = Rule(
    name="health-checks",
    description=("Every long-running container has a health check (Docker) or readiness and liveness probes, "
                 "plus a startup probe for slow starters (Kubernetes)."),
    severity="medium",
    config={
        "exemptions": {**list_of({"service": {"type": "string"}, "reason": {"type": "string"}},
                                 ["service", "reason"]), "default": [],
                       "description": "Services without an in-container check, each with what watches it instead."},
        "requireStartupProbe": {"type": "boolean", "default": True,
                                "description": "Slow starters (catalog HealthCheck.slow_start) need a "
                                               "startupProbe."},
    },
    remediation="Declare a HealthCheck the image can run, or exempt the service with its reason.",
    check=check_health,
    types=DOCKER | LONG_RUNNING,
    tags=("reliability",),
)


# ---- resource limits ---------------------------------------------------------------------

def _positive(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value > 0
    if isinstance(value, str):
        if is_unknown(value):
            return True
        try:
            return float(value) > 0
        except ValueError:
            return bool(value.strip())
    return False


def check_limits(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    if res.type == CONTAINER:
        service = docker_service(res)
        missing = []
        if not _positive(res.props.get("memory")):
            missing.append("memory limit (memory)")
        if not (_positive(res.props.get("cpus")) or _positive(res.props.get("cpuQuota"))):
            missing.append("CPU limit (cpus)")
        if cfg.get("requirePidsLimit") and not _positive(res.props.get("pidsLimit")):
            missing.append("PIDs limit (pidsLimit, CIS 5.28)")
        if missing:
            yield (f"{service}: the container has no {', no '.join(missing)}. Fix: set the service's Resources "
                   f"in infra/catalog.py or {service_hint(service, 'memory')}/cpu.")
        return
    if res.type in WORKLOADS:
        service = k8s_service(res)
        for cname, c in pod_containers(pod_spec(res) or {}):
            limits = as_dict(get_in(c, "resources", "limits"))
            missing = [k for k in ("memory", "cpu") if not _positive(limits.get(k))]
            if missing:
                yield (f"{service}: container {cname} has no {' and no '.join(missing)} limit "
                       "(resources.limits). Fix: render the catalog's Resources as limits.")


RESOURCE_LIMITS = Rule(
    name="resource-limits",
    description="Every container has a memory and a CPU limit.",
    severity="medium",
    config={"requirePidsLimit": {"type": "boolean", "default": False,
                                 "description": "Docker containers also need pidsLimit (CIS 5.28)."}},
    remediation="Set the service's Resources in the catalog or memory/cpu in stack config.",
    check=check_limits,
    types=DOCKER | WORKLOADS,
    tags=("reliability", "CIS-5.10", "CIS-5.11"),
)


# ---- alerts reach a receiver ---------------------------------------------------------------

def _is_notifier_config(doc: Any) -> bool:
    """Alertmanager's config format: a routing tree and its receivers (recognised by shape)."""
    return isinstance(doc, dict) and isinstance(doc.get("route"), dict) and isinstance(doc.get("receivers"), list)


def _sends(doc: Mapping[str, Any]) -> set[str]:
    """Receivers with an integration that the routing tree sends alerts to, the Watchdog's
    route (matched by alert name, a heartbeat) apart."""
    integrated = {r.get("name") for r in as_list(doc.get("receivers"))
                  if isinstance(r, dict) and any(k.endswith("_configs") and r[k] for k in r)}
    route = as_dict(doc.get("route"))
    names = {route.get("receiver")}
    for sub in as_list(route.get("routes")):
        matchers = [str(m) for m in as_list(as_dict(sub).get("matchers"))]
        if not any(m.startswith("alertname=") for m in matchers):
            names.add(as_dict(sub).get("receiver"))
    return {str(n) for n in names if n in integrated}


def check_receiver(res: Resource, cfg: Mapping[str, Any]) -> Iterator[str]:
    for key, text in as_dict(res.props.get("data")).items():
        if not isinstance(text, str) or is_unknown(text):
            continue
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if not _is_notifier_config(doc) or _sends(doc):
            continue
        stated = [line for line in text.splitlines() if line.startswith(f"# {v.NO_RECEIVER_MARK}:")]
        if stated and stated[0].split(":", 1)[1].strip():
            continue
        yield (f"{key}: every alert goes to a receiver without an integration, so nobody is notified. Fix: set "
               "optiinfra:alerting.receivers (webhook, slack, email) and its secret (pulumi config set --secret "
               "alertWebhookUrl https://...), or state why not in optiinfra:alerting.noReceiver.")


ALERTS_REACH_A_RECEIVER = Rule(
    name="alerts-reach-a-receiver",
    description=("The notifier's config routes alerts to at least one receiver that notifies someone, unless the "
                 "stack states why not."),
    severity="high",
    config={},
    remediation="Set optiinfra:alerting.receivers and the receiver's secret, or optiinfra:alerting.noReceiver.",
    check=check_receiver,
    types=frozenset({CONFIGMAP}),
    tags=("reliability", "alerting"),
)


RULES: tuple[Rule, ...] = (HEALTH_CHECKS, RESOURCE_LIMITS, ALERTS_REACH_A_RECEIVER)
