"""The policy pack's reliability family (health-checks and resource-limits): each rule passes on
the stacks as committed and fails on a bad change, on Docker (dev), on hand-written Kubernetes
manifests and on the prod render (how the cases are built: tests/test_policies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.catalog import default_catalog
from policies.optiinfra_policies import core, rules

from .policy_tools import (
    CONTAINER,
    DEV_CONFIG,
    PROD_CONFIG,
    changed,
    checked,
    dev_resources,
    found,
    k8s_changed,
    k8s_violations,
    pg,
    prod_resources,
    violations,
    with_config,
)

# ---- Docker (dev) ----------------------------------------------------------------------------------------

def test_health_check_missing_fails() -> None:
    resources = changed(dev_resources(), CONTAINER, "grafana", lambda p: p.pop("healthcheck"))
    (name, msg), = violations("health-checks", resources, DEV_CONFIG["health-checks"])
    assert name == "grafana" and "long-running container without a health check" in msg


def test_the_exporters_without_a_check_are_exempt_only_through_the_config(tmp_path: Path) -> None:
    no_exemptions = with_config(tmp_path, DEV_CONFIG, **{"health-checks": {"exemptions": []}})
    result = checked("dev", config=no_exemptions)
    flagged = found(result, "health-checks")
    catalog = default_catalog().services
    # On Docker: the sign-in proxy and kube-state-metrics (no Docker check either) run on Kubernetes only.
    without_client = {n for n, s in catalog.items() if s.health and s.health.docker_client is None
                      and not (s.authenticator or s.kubernetes_only)}
    assert {name for name, _ in flagged} == without_client == {"postgres-exporter", "redis-exporter"}
    for name, msg in flagged:
        assert catalog[name].health.no_docker_reason in msg  # type: ignore[union-attr]
    # The committed exemptions are exactly those services, each with a reason.
    exemptions = DEV_CONFIG["health-checks"]["exemptions"]
    assert {e["service"] for e in exemptions} == without_client
    assert all(len(e["reason"]) > 20 for e in exemptions)


@pytest.mark.parametrize(("drop", "missing"), [("memory", "memory limit"), ("cpus", "CPU limit")])
def test_limits_missing_fail(drop: str, missing: str) -> None:
    resources = changed(dev_resources(), CONTAINER, "portal", lambda p: p.pop(drop))
    (name, msg), = violations("resource-limits", resources)
    assert name == "portal" and missing in msg


def test_pids_limit_is_required_only_when_configured() -> None:
    resources = [r for r in dev_resources() if r.type == CONTAINER and r.name in ("portal", "grafana")]
    resources = changed(resources, CONTAINER, "portal", lambda p: p.update(pidsLimit=256))
    assert violations("resource-limits", resources) == []
    (name, msg), = violations("resource-limits", resources, {"requirePidsLimit": True})
    assert name == "grafana" and "PIDs limit" in msg


# ---- Kubernetes: hand-written manifests ------------------------------------------------------------------

K8S_FAILURES: list[tuple[str, str, str, Callable[[dict[str, Any]], object], str]] = [
    # (case, resource, policy, edit, words in the message)
    ("readiness", "postgres", "health-checks", pg(lambda c: c.pop("readinessProbe")), "has no readinessProbe"),
    ("startup", "postgres", "health-checks", pg(lambda c: c.pop("startupProbe")), "startupProbe (the catalog"),
    ("cpu limit", "postgres", "resource-limits", pg(lambda c: c["resources"]["limits"].pop("cpu")), "no cpu limit"),
]


@pytest.mark.parametrize(("case", "name", "policy", "edit", "words"), K8S_FAILURES, ids=[c[0] for c in K8S_FAILURES])
def test_kubernetes_workload_rules_fail(case: str, name: str, policy: str, edit: Callable[[dict[str, Any]], object],
                                        words: str) -> None:
    hits = k8s_violations(k8s_changed(name, rules.STATEFULSET, edit))
    assert policy in hits, hits
    assert any(words in m for m in hits[policy]), hits[policy]


# ---- Kubernetes: the prod render -------------------------------------------------------------------------

def test_prod_needs_no_health_exemption() -> None:
    # Kubernetes probes need nothing inside the image: the exporters get httpGet probes.
    assert "health-checks" not in PROD_CONFIG
    exporters = [r for r in prod_resources() if r.type == rules.DEPLOYMENT and r.name.endswith("-exporter")]
    assert len(exporters) == 4  # postgres, redis, clickhouse and the blackbox exporter
    assert violations("health-checks", exporters) == []


def _no_probes(props: dict[str, Any]) -> None:
    props["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")


PROD_MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], object], bool | None, set[str], str]] = [
    # (type, name, edit, protect, policies, words)
    (rules.STATEFULSET, "postgres", _no_probes, None, {"health-checks"}, "has no livenessProbe"),
]


@pytest.mark.parametrize(("type_", "name", "edit", "protect", "policies", "words"), PROD_MUTATIONS,
                         ids=[f"{m[1]}-{sorted(m[4])[0]}" for m in PROD_MUTATIONS])
def test_prod_render_with_one_input_changed_fails(type_: str, name: str, edit: Callable[[dict[str, Any]], object],
                                                  protect: bool | None, policies: set[str], words: str) -> None:
    resources = changed(prod_resources(), type_, name, edit, protect=protect)
    settings = core.reconcile(rules.RULES, PROD_CONFIG, source="prod.json")
    findings = core.evaluate(rules.RULES, resources, settings)
    assert {f.violation.policy for f in findings} == policies
    assert all(words in f.violation.message for f in findings)


# ---- alerts-reach-a-receiver ---------------------------------------------------------------------------

def test_prod_without_a_receiver_fails_the_policy() -> None:
    # The committed prod names its receivers (webhook, heartbeat); without them, and without a
    # stated reason, the rendered alertmanager.yml routes everything to `null` and the policy fails.
    assert PROD_CONFIG["all"] == "mandatory"
    (_, msg), = violations("alerts-reach-a-receiver", prod_resources("alerting.receivers={}"))
    assert "alertmanager.yml" in msg and "optiinfra:alerting.receivers" in msg
    # `check` itself stops first, with one line naming the key and the secret to set.
    from infra.settings import ConfigError
    with pytest.raises(ConfigError) as err:
        checked("prod", "alerting.receivers={}")
    assert err.value.key == "optiinfra:alerting.receivers" and "alertWebhookUrl" in err.value.fix
    # A reason stated in the stack file is the one way out.
    assert violations("alerts-reach-a-receiver",
                      prod_resources("alerting.receivers={}", "alerting.noReceiver=a lab cluster")) == []


def test_prod_with_a_receiver_or_a_stated_reason_passes_the_policy() -> None:
    assert violations("alerts-reach-a-receiver", prod_resources()) == []  # the committed receivers
    on = ('alerting.receivers={"webhook": {}}', "alerting.noReceiver=")
    rendered = check_cmd_resources("prod", on, ("alertWebhookUrl=https://hooks.example.com/optiinfra",))
    assert violations("alerts-reach-a-receiver", rendered) == []


def test_a_heartbeat_alone_is_not_a_receiver() -> None:
    # The Watchdog's route (by alert name) notifies a dead man's switch, not a person.
    sets = ('alerting.receivers={"heartbeat": {}}', "alerting.noReceiver=")
    rendered = check_cmd_resources("prod", sets, ("alertHeartbeatUrl=https://hc-ping.example.com/optiinfra",))
    assert len(violations("alerts-reach-a-receiver", rendered)) == 1


def check_cmd_resources(stack: str, sets: tuple[str, ...], secrets: tuple[str, ...]) -> list[core.Resource]:
    from infra.commands import check as check_cmd

    from .conftest import render
    return check_cmd.resources_of(render(stack, *sets, secrets=secrets))
