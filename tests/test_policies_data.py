"""The policy pack's data family (stateful-resources-protected and stateful-backups): each rule
passes on the stacks as committed and fails on a bad change, on Docker (dev), on hand-written
Kubernetes manifests and on the prod render (how the cases are built: tests/test_policies.py).
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
    VOLUME,
    changed,
    checked,
    dev_resources,
    found,
    k8s_changed,
    k8s_violations,
    prod_resources,
    violations,
)

# ---- Docker (dev) ----------------------------------------------------------------------------------------

def test_data_volumes_are_protected() -> None:
    volumes = [r for r in dev_resources() if r.type == VOLUME]
    # The data volumes, and the stores' client-credential files (a rotation applies them in the
    # running store: docs/credentials.md), protected alike.
    assert {v.name for v in volumes} == {"postgres-data", "clickhouse-data", "redis-data", "qdrant-storage",
                                         "prometheus-data", "grafana-data", "postgres-client-credentials",
                                         "redis-client-credentials"}
    assert violations("stateful-resources-protected", dev_resources()) == []
    resources = changed(dev_resources(), VOLUME, "postgres-data", lambda p: None, protect=False)
    (name, msg), = violations("stateful-resources-protected", resources)
    assert name == "postgres-data" and "not protected from deletion" in msg


def test_data_on_the_container_layer_fails() -> None:
    resources = changed(dev_resources(), CONTAINER, "redis", lambda p: p.pop("volumes"))
    (name, msg), = violations("stateful-resources-protected", resources)
    assert name == "redis" and "/data is not on a named volume" in msg


# ---- Kubernetes: hand-written manifests ------------------------------------------------------------------

K8S_FAILURES: list[tuple[str, str, str, Callable[[dict[str, Any]], object], str]] = [
    # (case, resource, policy, edit, words in the message)
    ("retention", "postgres", "stateful-resources-protected",
     lambda p: p["spec"]["persistentVolumeClaimRetentionPolicy"].update(whenDeleted="Delete"),
     "deletes its PersistentVolumeClaims"),
    ("emptyDir data", "postgres", "stateful-resources-protected",
     lambda p: p["spec"].pop("volumeClaimTemplates"), "is not on a PersistentVolumeClaim"),
]


@pytest.mark.parametrize(("case", "name", "policy", "edit", "words"), K8S_FAILURES, ids=[c[0] for c in K8S_FAILURES])
def test_kubernetes_workload_rules_fail(case: str, name: str, policy: str, edit: Callable[[dict[str, Any]], object],
                                        words: str) -> None:
    hits = k8s_violations(k8s_changed(name, rules.STATEFULSET, edit))
    assert policy in hits, hits
    assert any(words in m for m in hits[policy]), hits[policy]


def test_an_unprotected_statefulset_fails() -> None:
    hits = k8s_violations(k8s_changed("postgres", rules.STATEFULSET, lambda p: None, protect=False))
    assert hits == {"stateful-resources-protected": [
        "StatefulSet postgres holds data but is not protected from deletion. Fix: create it with "
        "ResourceOptions(protect=True)."]}


# ---- Kubernetes: the prod render -------------------------------------------------------------------------

PROD_MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], object], bool | None, set[str], str]] = [
    # (type, name, edit, protect, policies, words)
    (rules.STATEFULSET, "postgres", lambda p: None, False, {"stateful-resources-protected"}, "not protected"),
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


# ---- stateful-backups, both stacks -----------------------------------------------------------------------

def _backup_target(claim: str) -> Callable[[dict[str, Any]], object]:
    def edit(props: dict[str, Any]) -> None:
        pod = props["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for vol in pod["volumes"]:
            if vol["name"] == "backups":
                vol["persistentVolumeClaim"]["claimName"] = claim
    return edit


def test_backups_pass_on_both_stacks_as_committed() -> None:
    assert violations("stateful-backups", prod_resources()) == []
    assert violations("stateful-backups", dev_resources()) == []
    # Prometheus passes by the catalog's stamped reason, not by a job.
    prom = next(r for r in prod_resources() if r.type == rules.STATEFULSET and r.name == "prometheus")
    assert "re-scraped" in prom.props["metadata"]["annotations"][vocab.K8S_NO_BACKUP]


def test_a_backup_onto_the_services_own_claim_fails() -> None:
    resources = changed(prod_resources(), rules.CRONJOB, "postgres-backup", _backup_target("data-postgres-0"))
    assert violations("stateful-backups", resources) == [(
        "postgres", "postgres: backup CronJob postgres-backup writes to data-postgres-0, the service's own volume "
                    "(lost with it). Fix: write backups to a claim of their own.")]


def test_a_stateful_service_without_a_backup_job_fails_and_the_reason_is_the_only_way_out() -> None:
    resources = [r for r in prod_resources() if not (r.type == rules.CRONJOB and r.name == "redis-backup")]
    ((name, message),) = violations("stateful-backups", resources)
    assert name == "redis" and "no backup CronJob" in message and "backups.enabled" in message
    unstamped = changed(prod_resources(), rules.STATEFULSET, "prometheus",
                        lambda p: p["metadata"]["annotations"].pop(vocab.K8S_NO_BACKUP))
    assert [n for n, _ in violations("stateful-backups", unstamped)] == ["prometheus"]


def test_a_backup_into_an_emptydir_or_read_only_target_fails() -> None:
    def to_empty_dir(props: dict[str, Any]) -> None:
        pod = props["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        pod["volumes"] = [{"name": "backups", "emptyDir": {}} if v["name"] == "backups" else v
                          for v in pod["volumes"]]

    def read_only(props: dict[str, Any]) -> None:
        # With prod's store the backup step is an init container and the upload the container:
        # both mount the claim.
        pod = props["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            for m in c["volumeMounts"]:
                if m["mountPath"] == "/backup":
                    m["readOnly"] = True

    def backup_step_read_only(props: dict[str, Any]) -> None:
        # Only the step that writes the backup (the init container): the upload still mounts it writable.
        pod = props["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (step,) = pod["initContainers"]
        for m in step["volumeMounts"]:
            if m["mountPath"] == "/backup":
                m["readOnly"] = True

    assert violations("stateful-backups", prod_resources()) == []
    # Redis keeps its newest backup in a claim of its own beside prod's store.
    for edit, words in ((to_empty_dir, "emptyDir"), (read_only, "read-only"), (backup_step_read_only, "read-only")):
        resources = changed(prod_resources(), rules.CRONJOB, "redis-backup", edit)
        ((name, message),) = violations("stateful-backups", resources)
        assert name == "redis" and words in message
    # ClickHouse writes its backup into the store itself (BACKUP ... TO S3, no claim): its
    # target is the store's URL, which must name the store's endpoint too.
    resources = changed(prod_resources(), rules.CRONJOB, "clickhouse-backup",
                        lambda p: p["metadata"]["annotations"].pop(vocab.K8S_BACKUP_STORE))
    ((name, message),) = violations("stateful-backups", resources)
    assert name == "clickhouse" and "store's endpoint" in message


def test_backups_off_is_mandatory_in_prod_and_advisory_in_dev() -> None:
    prod = checked("prod", "backups.enabled=false")
    assert prod.failed
    assert {f.level for f in prod.findings if f.violation.policy == "stateful-backups"} == {"mandatory"}
    assert len(found(prod, "stateful-backups")) == 5  # every stateful service but Prometheus
    dev = checked("dev", "backups.enabled=false")
    assert not dev.failed
    assert {f.level for f in dev.findings if f.violation.policy == "stateful-backups"} == {"advisory"}
    assert len(found(dev, "stateful-backups")) == 5


def test_a_docker_backup_target_on_its_own_volume_fails() -> None:
    def onto_volume(props: dict[str, Any]) -> None:
        for label in props["labels"]:
            if label["label"] == vocab.DOCKER_BACKUP_TARGET:
                label["value"] = "optiinfra-redis-data"

    resources = changed(dev_resources(), CONTAINER, "redis", onto_volume)
    ((name, message),) = violations("stateful-backups", resources)
    assert name == "redis" and "optiinfra-redis-data" in message and "backups.hostDir" in message
