"""The policy pack's isolation family (no-host-access, tier-isolation, namespace-default-deny and
pod-security-restricted): each rule passes on the stacks as committed and fails on a bad change,
on Docker (dev), on hand-written Kubernetes manifests and on the prod render (how the cases are
built: tests/test_policies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from policies.optiinfra_policies import core, rules

from .policy_tools import (
    CONTAINER,
    PROD_CONFIG,
    changed,
    checked,
    dev_resources,
    found,
    k8s_changed,
    k8s_manifests,
    k8s_res,
    k8s_violations,
    pg,
    pg_pod,
    prod_resources,
    violations,
)

# ---- Docker (dev) ----------------------------------------------------------------------------------------

HOST_ACCESS = [
    ({"privileged": True}, "privileged container"),
    ({"networkMode": "host"}, "networkMode is host"),
    ({"pidMode": "host"}, "pidMode is host"),
    ({"ipcMode": "host"}, "ipcMode is host"),
    ({"volumes": [{"hostPath": "/var/run/docker.sock", "containerPath": "/var/run/docker.sock"}]}, "Docker socket"),
    ({"mounts": [{"type": "bind", "source": "/etc", "target": "/host-etc"}]}, "mounts the host path /etc"),
    ({"devices": [{"hostPath": "/dev/kmsg"}]}, "host devices"),
]


@pytest.mark.parametrize(("extra", "words"), HOST_ACCESS)
def test_host_access_fails(extra: dict[str, Any], words: str) -> None:
    resources = changed(dev_resources(), CONTAINER, "flower", lambda p: p.update(extra))
    (name, msg), = violations("no-host-access", resources)
    assert name == "flower" and words in msg


def test_allowed_host_paths_are_config() -> None:
    resources = changed(dev_resources(), CONTAINER, "flower",
                        lambda p: p.update(mounts=[{"type": "bind", "source": "/etc", "target": "/e"}]))
    assert violations("no-host-access", resources, {"allowedHostPaths": ["/etc"]}) == []


def test_tier_isolation_fails_when_the_frontend_joins_the_databases_network() -> None:
    result = checked("dev", "services.portal.dependsOn=[postgres]")
    portal = next(r for r in result.resources if r.type == CONTAINER and r.name == "portal")
    assert "optiinfra-databases" in {n["name"] for n in portal.props["networksAdvanced"]}
    (name, msg), = found(result, "tier-isolation")
    assert name == "portal"
    assert "portal (frontend) joins the databases network optiinfra-databases" in msg


def test_tier_isolation_passes_for_a_dependency_on_an_allowed_tier() -> None:
    result = checked("dev", "services.portal.dependsOn=[prometheus]")
    portal = next(r for r in result.resources if r.type == CONTAINER and r.name == "portal")
    assert "optiinfra-monitoring" in {n["name"] for n in portal.props["networksAdvanced"]}
    assert result.findings == []


def _join(network: str) -> Callable[[dict[str, Any]], object]:
    return lambda p: p["networksAdvanced"].append({"name": network, "aliases": ["x"]})


def test_a_database_never_joins_the_frontend_network() -> None:
    resources = changed(dev_resources(), CONTAINER, "postgres", _join("optiinfra-frontend"))
    cfg = rules.by_name("tier-isolation").defaults()
    (name, msg), = violations("tier-isolation", resources, cfg)
    assert name == "postgres" and "a databases container never shares a network with the frontend tier" in msg


def test_a_container_joins_only_the_networks_the_graph_gives_it() -> None:
    resources = changed(dev_resources(), CONTAINER, "postgres", _join("optiinfra-core"))
    (name, msg), = violations("tier-isolation", resources)
    assert name == "postgres"
    assert "joins optiinfra-core, but its connections only need optiinfra-databases" in msg


def test_the_default_bridge_fails() -> None:
    resources = changed(dev_resources(), CONTAINER, "flower", lambda p: p.pop("networksAdvanced"))
    (name, msg), = violations("tier-isolation", resources)
    assert name == "flower" and "default bridge" in msg


# ---- Kubernetes: hand-written manifests ------------------------------------------------------------------

K8S_FAILURES: list[tuple[str, str, str, Callable[[dict[str, Any]], object], str]] = [
    # (case, resource, policy, edit, words in the message)
    ("hostNetwork", "postgres", "no-host-access", pg_pod(lambda s: s.update(hostNetwork=True)),
     "sets hostNetwork: true"),
    ("hostPath", "postgres", "no-host-access",
     pg_pod(lambda s: s["volumes"].append({"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}})),
     "mounts the Docker socket"),
    ("privileged", "postgres", "no-host-access", pg(lambda c: c["securityContext"].update(privileged=True)),
     "container postgres is privileged"),
    ("escalation", "postgres", "pod-security-restricted",
     pg(lambda c: c["securityContext"].pop("allowPrivilegeEscalation")), "allowPrivilegeEscalation: false"),
    ("root", "postgres", "pod-security-restricted",
     pg_pod(lambda s: (s["securityContext"].pop("runAsNonRoot"),
                        s["containers"][0]["securityContext"].pop("runAsNonRoot"))), "runAsNonRoot: true"),
    ("caps", "postgres", "pod-security-restricted",
     pg(lambda c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])), "adds capabilities SYS_ADMIN"),
    ("seccomp", "postgres", "pod-security-restricted",
     pg_pod(lambda s: (s["securityContext"].pop("seccompProfile"),
                        s["containers"][0]["securityContext"].pop("seccompProfile"))), "seccompProfile"),
    ("wrong namespace", "postgres", "tier-isolation",
     lambda p: p["metadata"].update(namespace="optiinfra-frontend"), "runs in namespace optiinfra-frontend"),
]


@pytest.mark.parametrize(("case", "name", "policy", "edit", "words"), K8S_FAILURES, ids=[c[0] for c in K8S_FAILURES])
def test_kubernetes_workload_rules_fail(case: str, name: str, policy: str, edit: Callable[[dict[str, Any]], object],
                                        words: str) -> None:
    hits = k8s_violations(k8s_changed(name, rules.STATEFULSET, edit))
    assert policy in hits, hits
    assert any(words in m for m in hits[policy]), hits[policy]


def test_every_tier_namespace_needs_a_default_deny_policy() -> None:
    resources = [r for r in k8s_manifests() if r.name != "core-default-deny"]
    assert k8s_violations(resources) == {"namespace-default-deny": [
        "namespace optiinfra-core (core) has no default-deny NetworkPolicy (podSelector {}, policyTypes "
        "['Egress', 'Ingress'], no rules). Fix: add one; allow rules then open exactly the catalog's connections."]}
    selective = k8s_changed("core-default-deny", rules.NETWORK_POLICY,
                            lambda p: p["spec"].update(podSelector={"matchLabels": {"a": "b"}}))
    assert set(k8s_violations(selective)) == {"namespace-default-deny"}
    ingress_only = k8s_changed("core-default-deny", rules.NETWORK_POLICY,
                               lambda p: p["spec"].update(policyTypes=["Ingress"]))
    # prod (and staging) deny egress by default too; a stack may ask for ingress only.
    assert set(k8s_violations(ingress_only)) == {"namespace-default-deny"}
    ingress_config = {**PROD_CONFIG, "namespace-default-deny": {"policyTypes": ["Ingress"]}}
    assert k8s_violations(ingress_only, config=ingress_config) == {}


def test_namespaces_must_enforce_the_restricted_standard() -> None:
    resources = k8s_changed("core-namespace", rules.NAMESPACE_T, lambda p: p["metadata"].pop("labels"))
    assert k8s_violations(resources) == {"pod-security-restricted": [
        "namespace optiinfra-core is not labelled pod-security.kubernetes.io/enforce=restricted, so the cluster "
        "does not enforce the standard. Fix: add the label."]}


def test_a_network_policy_never_admits_the_frontend_into_the_databases() -> None:
    allow = k8s_res(rules.NETWORK_POLICY, "allow-postgres", {
        "metadata": {"name": "allow-postgres", "namespace": "optiinfra-databases"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": "optiinfra-frontend"}}}]}]}})
    hits = k8s_violations([*k8s_manifests(), allow])
    assert list(hits) == ["tier-isolation"]
    assert "admits ingress traffic with the frontend namespace" in hits["tier-isolation"][0]


# ---- Kubernetes: the prod render -------------------------------------------------------------------------

def test_prod_fails_when_the_frontend_is_let_into_the_databases() -> None:
    result = checked("prod", "services.portal.dependsOn=[postgres]")
    # Both ends of the edge (egress is denied by default in every tier namespace since 514fb57,
    # so the portal's own policy now admits the edge too).
    (dst, into), (src, out) = sorted(found(result, "tier-isolation"), key=lambda f: f[0] != "allow-postgres")
    assert (dst, src) == ("allow-postgres", "allow-portal")
    assert "admits ingress traffic with the frontend namespace" in into
    assert "admits egress traffic with the databases namespace" in out
    assert result.failed


PROD_MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], object], bool | None, set[str], str]] = [
    # (type, name, edit, protect, policies, words)
    (rules.DEPLOYMENT, "cost-agent-aws", lambda p: p["spec"]["template"]["spec"].update(hostNetwork=True), None,
     {"no-host-access", "pod-security-restricted"}, "hostNetwork"),
    (rules.NAMESPACE_T, "core-namespace", lambda p: p["metadata"]["labels"].pop("pod-security.kubernetes.io/enforce"),
     None, {"pod-security-restricted"}, "is not labelled"),
    # Egress is denied by default in prod: a default-deny policy for ingress only is not one.
    (rules.NETWORK_POLICY, "agents-default-deny", lambda p: p["spec"].update(policyTypes=["Ingress"]), None,
     {"namespace-default-deny"}, "has no default-deny NetworkPolicy (podSelector {}, policyTypes ['Egress', "
                                 "'Ingress']"),
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


def test_prod_without_a_namespace_default_deny_fails() -> None:
    resources = [r for r in prod_resources()
                 if not (r.type == rules.NETWORK_POLICY and r.props["metadata"] == {
                     **r.props["metadata"], "name": "default-deny", "namespace": "optiinfra-agents"})]
    assert len(resources) == len(prod_resources()) - 1
    (name, msg), = violations("namespace-default-deny", resources, {"policyTypes": ["Ingress"]})
    assert name == "agents-namespace" and "namespace optiinfra-agents (agents) has no default-deny" in msg
