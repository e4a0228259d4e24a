"""The policy pack's credentials family (no-plaintext-credentials, no-default-credentials, secrets-
as-files and secret-references): each rule passes on the stacks as committed and fails on a bad
change, on Docker (dev), on hand-written Kubernetes manifests and on the prod render (how the
cases are built: tests/test_policies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from policies.optiinfra_policies import core, rules
from policies.optiinfra_policies import vocabulary as vocab

from .policy_tools import (
    CONTAINER,
    PROD_CONFIG,
    changed,
    dev_resources,
    k8s_changed,
    k8s_violations,
    pg,
    prod_resources,
    set_env,
    violations,
)

# ---- Docker (dev) ----------------------------------------------------------------------------------------

def test_every_credential_of_the_dev_render_is_a_secret() -> None:
    # The passing case, and what it rests on: the values are marked, not merely named.
    grafana = next(r for r in dev_resources() if r.type == CONTAINER and r.name == "grafana")
    assert "GF_SECURITY_ADMIN_PASSWORD=[secret]" in grafana.props["envs"]
    assert violations("no-plaintext-credentials", dev_resources(),
                      rules.by_name("no-plaintext-credentials").defaults()) == []


@pytest.mark.parametrize(("name", "value", "words"), [
    ("GF_SECURITY_ADMIN_PASSWORD", "Str0ng-but-plain-123", "looks like a credential but is not a secret"),
    ("QDRANT_API_KEY", "k-123456789", "looks like a credential but is not a secret"),
    ("GRAFANA_URL", "http://admin:Str0ng-pw@grafana:3000", "URL with a password in plaintext"),
])
def test_plaintext_credentials_fail(name: str, value: str, words: str) -> None:
    resources = changed(dev_resources(), CONTAINER, "portal" if name == "GRAFANA_URL" else "grafana",
                        lambda p: set_env(p, name, value))
    cfg = rules.by_name("no-plaintext-credentials").defaults()
    (_, msg), = violations("no-plaintext-credentials", resources, cfg)
    assert words in msg and value not in msg


def test_a_password_in_a_command_line_fails() -> None:
    resources = changed(dev_resources(), CONTAINER, "clickhouse-exporter",
                        lambda p: p.update(command=["-scrape_uri=http://optiinfra:pw-123456789@clickhouse:8123/"]))
    cfg = rules.by_name("no-plaintext-credentials").defaults()
    (name, msg), = violations("no-plaintext-credentials", resources, cfg)
    assert name == "clickhouse-exporter" and "command carries a URL with a password" in msg


@pytest.mark.parametrize(("name", "value", "words"), [
    ("GF_SECURITY_ADMIN_PASSWORD", "admin", "well-known default credential"),
    ("POSTGRES_PASSWORD", "", "well-known default credential (empty)"),
    ("GF_SECURITY_ADMIN_USER", "admin", "well-known default account name"),
    ("DATABASE_URL", "postgresql://optiinfra:changeme@postgres:5432/optiinfra", "default password in its URL"),
])
def test_default_credentials_fail(name: str, value: str, words: str) -> None:
    resources = changed(dev_resources(), CONTAINER, "grafana", lambda p: set_env(p, name, value))
    cfg = rules.by_name("no-default-credentials").defaults()
    (who, msg), = violations("no-default-credentials", resources, cfg)
    assert who == "grafana" and words in msg


def test_default_credentials_pass_on_the_dev_render() -> None:
    cfg = rules.by_name("no-default-credentials").defaults()
    assert violations("no-default-credentials", dev_resources(), cfg) == []


# ---- Kubernetes: hand-written manifests ------------------------------------------------------------------

K8S_FAILURES: list[tuple[str, str, str, Callable[[dict[str, Any]], object], str]] = [
    # (case, resource, policy, edit, words in the message)
    ("literal secret", "postgres", "no-plaintext-credentials",
     pg(lambda c: c["env"].__setitem__(1, {"name": "POSTGRES_PASSWORD", "value": "[secret]"})),
     "use valueFrom.secretKeyRef"),
    ("default password", "postgres", "no-default-credentials",
     pg(lambda c: c["env"].__setitem__(1, {"name": "POSTGRES_PASSWORD", "value": "postgres"})),
     "well-known default credential"),
]


@pytest.mark.parametrize(("case", "name", "policy", "edit", "words"), K8S_FAILURES, ids=[c[0] for c in K8S_FAILURES])
def test_kubernetes_workload_rules_fail(case: str, name: str, policy: str, edit: Callable[[dict[str, Any]], object],
                                        words: str) -> None:
    hits = k8s_violations(k8s_changed(name, rules.STATEFULSET, edit))
    assert policy in hits, hits
    assert any(words in m for m in hits[policy]), hits[policy]


def test_a_plaintext_kubernetes_secret_fails() -> None:
    hits = k8s_violations(k8s_changed("databases-credentials", rules.K8S_SECRET,
                                      lambda p: p["stringData"].update({"postgres-password": "changeme"})))
    assert set(hits) == {"no-plaintext-credentials", "no-default-credentials"}
    assert "postgres-password is not marked secret" in hits["no-plaintext-credentials"][0]


# ---- Kubernetes: the prod render -------------------------------------------------------------------------

PROD_MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], object], bool | None, set[str], str]] = [
    # (type, name, edit, protect, policies, words)
    # The orchestrator's image reads no file: without the catalog's reason its secret env fails.
    (rules.DEPLOYMENT, "orchestrator", lambda p: p["metadata"]["annotations"].pop(vocab.K8S_SECRET_ENV), None,
     {"secrets-as-files"}, "takes DATABASE_URL, REDIS_URL from a Secret as environment variables"),
    # Postgres reads its password from the mounted Secret: pointing the file variable anywhere
    # else (here a plain emptyDir path) is a literal in the pod spec.
    (rules.STATEFULSET, "postgres", lambda p: _env(p, "POSTGRES_PASSWORD_FILE").update(value="/tmp/postgres"), None,
     {"no-plaintext-credentials"}, "sets POSTGRES_PASSWORD_FILE as a literal value"),
    (rules.STATEFULSET, "postgres", lambda p: _mount(p, "/run/secrets/optiinfra").update(readOnly=False), None,
     {"no-plaintext-credentials"}, "_PASSWORD_FILE as a literal value"),  # both of its files
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


def _env(props: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in props["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == name)


def _mount(props: dict[str, Any], path: str) -> dict[str, Any]:
    return next(m for m in props["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                if m["mountPath"] == path)
