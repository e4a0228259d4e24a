"""What the policy tests share: the committed policy configs, the stacks' resources as the rules
see them, one resource edited, the violations of one rule or of the whole pack, and a compliant
slice of a prod stack written by hand (Kubernetes rules are exercised on it and on the prod render)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from infra.catalog import default_catalog
from infra.commands import check as check_cmd
from policies.optiinfra_policies import core, rules
from policies.optiinfra_policies import vocabulary as vocab

from .conftest import render

CONTAINER, VOLUME, IMAGE = rules.CONTAINER, rules.VOLUME, rules.REMOTE_IMAGE
DEV_CONFIG = json.loads((core.CONFIG_DIR / "dev.json").read_text())
PROD_CONFIG = json.loads((core.CONFIG_DIR / "prod.json").read_text())


# ---- both stacks, rendered and checked ------------------------------------------------

def checked(stack: str, *sets: str, secrets: tuple[str, ...] = (), config: Path | None = None) -> check_cmd.Result:
    return check_cmd.check(stack, list(sets), list(secrets), config, rendered=render(stack, *sets, secrets=secrets))


def found(result: check_cmd.Result, policy: str) -> list[tuple[str, str]]:
    """(resource name, message) of the violations of one policy."""
    names = {r.urn: r.name for r in result.resources}
    return sorted((names.get(f.violation.urn, ""), f.violation.message) for f in result.findings
                  if f.violation.policy == policy)


def policies_hit(result: check_cmd.Result) -> set[str]:
    return {f.violation.policy for f in result.findings}


def with_config(tmp_path: Path, base: dict[str, Any], **changes: Any) -> Path:
    """A policy config file: `base` with policies' entries replaced."""
    data = copy.deepcopy(base)
    data.update(changes)
    path = tmp_path / "policy-config.json"
    path.write_text(json.dumps(data))
    return path


def dev_resources(*sets: str) -> list[core.Resource]:
    return check_cmd.resources_of(render("dev", *sets))


def prod_resources(*sets: str) -> list[core.Resource]:
    return check_cmd.resources_of(render("prod", *sets))


def changed(resources: list[core.Resource], type_: str, name: str,
            edit: Callable[[dict[str, Any]], object], *, protect: bool | None = None) -> list[core.Resource]:
    """The resources with one of them edited (a deep copy; the cached render stays as is)."""
    out, hit = [], False
    for res in resources:
        if res.type == type_ and res.name == name:
            props = copy.deepcopy(dict(res.props))
            edit(props)
            res = replace(res, props=props, protect=res.protect if protect is None else protect)
            hit = True
        out.append(res)
    assert hit, f"no {type_} {name}"
    return out


def violations(policy: str, resources: list[core.Resource],
               config: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    names = {r.urn: r.name for r in resources}
    rule = rules.by_name(policy)
    return sorted((names.get(v.urn, ""), v.message) for v in rule.run(resources, config or {}))


def set_env(props: dict[str, Any], name: str, value: str) -> None:
    props["envs"] = [e for e in props["envs"] if not e.startswith(name + "=")] + [f"{name}={value}"]


def publish(host: int, ip: str = "127.0.0.1") -> Callable[[dict[str, Any]], object]:
    def edit(props: dict[str, Any]) -> None:
        props["ports"] = [{"internal": 6379, "external": host, "ip": ip, "protocol": "tcp"}]
    return edit


# ---- Kubernetes rules on hand-written manifests ----------------------------------------

def k8s_urn(type_: str, name: str) -> str:
    return f"urn:pulumi:prod::optiinfra::optiinfra:platform:Tier${type_}::{name}"


def k8s_res(type_: str, name: str, props: dict[str, Any], protect: bool = False) -> core.Resource:
    return core.Resource(urn=k8s_urn(type_, name), type=type_, name=name, props=props, protect=protect)


def _container(name: str, image: str, uid_env: list[dict[str, Any]], *, slow: bool = False,
               mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    probe = {"tcpSocket": {"port": "p"}, "periodSeconds": 10}
    c: dict[str, Any] = {
        "name": name, "image": image, "env": uid_env,
        "ports": [{"name": "p", "containerPort": 5432, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": "400m", "memory": "400Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"},
                            "capabilities": {"drop": ["ALL"]}},
        "readinessProbe": probe, "livenessProbe": probe,
        "volumeMounts": mounts or [],
    }
    if slow:
        c["startupProbe"] = probe
    return c


def _pod(container: dict[str, Any], uid: int, volumes: list[dict[str, Any]], tier: str,
         service: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app.kubernetes.io/name": service, "app.kubernetes.io/component": tier}},
            "spec": {"containers": [container], "volumes": volumes, "automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "fsGroup": uid,
                                         "seccompProfile": {"type": "RuntimeDefault"}}}}


def k8s_manifests() -> list[core.Resource]:
    """A compliant slice of a prod stack: two tiers, a StatefulSet, a Deployment, their
    Services, a credentials Secret, namespaces with default-deny policies, an Ingress; with
    the catalog facts the program stamps on them (vocabulary: annotations optiinfra.io/...)."""
    catalog = default_catalog()
    postgres_port = catalog.services["postgres"].port("postgres")
    out = []
    for tier in ("databases", "core", "frontend"):
        ns = f"optiinfra-{tier}"
        out.append(k8s_res(rules.NAMESPACE_T, f"{tier}-namespace", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
            protect=tier == "databases"))
        out.append(k8s_res(rules.NETWORK_POLICY, f"{tier}-default-deny", {
            "metadata": {"name": "default-deny", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}))
    # The password as a file from the mounted Secret; the orchestrator's image reads none.
    secret_env: list[dict[str, Any]] = [{"name": "POSTGRES_USER", "value": "optiinfra"},
                                        {"name": "POSTGRES_PASSWORD_FILE", "value": "/run/secrets/db/password"}]
    pg = _container("postgres", "postgres:16.4", secret_env, slow=True,
                    mounts=[{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                            {"name": "credentials", "mountPath": "/run/secrets/db", "readOnly": True}])
    out.append(k8s_res(rules.STATEFULSET, "postgres", {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "postgres", "namespace": "optiinfra-databases",
                     "labels": {"app.kubernetes.io/name": "postgres"},
                     "annotations": {vocab.K8S_SLOW_START: "true",
                                     vocab.K8S_DATA_PATHS: "/var/lib/postgresql/data"}},
        "spec": {"serviceName": "postgres", "replicas": 1,
                 "template": _pod(pg, 999, [{"name": "tmp", "emptyDir": {}}, {"name": "credentials", "secret": {
                     "secretName": "credentials", "items": [{"key": "postgres-password", "path": "password"}]}}],
                     "databases", "postgres"),
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                           "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "20Gi"}}}}],
                 "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"}}},
        protect=True))
    out.append(k8s_res(rules.K8S_SERVICE, "postgres", {
        "metadata": {"name": "postgres", "namespace": "optiinfra-databases",
                     "labels": {"app.kubernetes.io/name": "postgres"},
                     "annotations": {vocab.K8S_PUBLIC: "false", vocab.k8s_port_key("postgres"): vocab.port_stamp(
                         "postgres", catalog.band(postgres_port.band or ""))}},
        "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": "postgres"},
                 "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}]}}))
    # Its backup: a CronJob writing to a claim of its own (not data-postgres-0).
    job = _container("backup", "postgres:16.4", [], mounts=[{"name": "backups", "mountPath": "/backup"}])
    out.append(k8s_res(rules.PVC, "postgres-backups", {
        "metadata": {"name": "postgres-backups", "namespace": "optiinfra-databases"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}, protect=True))
    out.append(k8s_res(rules.CRONJOB, "postgres-backup", {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "postgres-backup", "namespace": "optiinfra-databases",
                     "labels": {"app.kubernetes.io/name": "postgres-backup"},
                     "annotations": {vocab.K8S_BACKUP_OF: "postgres", vocab.K8S_BACKUP_TARGET: "/backup"}},
        "spec": {"schedule": "17 2 * * *", "jobTemplate": {"spec": {"template": _pod(
            job, 999, [{"name": "backups", "persistentVolumeClaim": {"claimName": "postgres-backups"}}],
            "databases", "postgres-backup")}}}}))
    out.append(k8s_res(rules.K8S_SECRET, "databases-credentials", {
        "metadata": {"name": "credentials", "namespace": "optiinfra-databases"},
        "stringData": {"postgres-password": "[secret]"}}))
    # The Secret the orchestrator reads its URL from, in its own namespace.
    out.append(k8s_res(rules.K8S_SECRET, "core-credentials", {
        "metadata": {"name": "credentials", "namespace": "optiinfra-core"},
        "stringData": {"database-url": "[secret]"}}))
    orch = _container("orchestrator", "ghcr.io/optiinfra/orchestrator:0.1.0", [
        {"name": "PORT", "value": "8080"},
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "database-url"}}}])
    out.append(k8s_res(rules.DEPLOYMENT, "orchestrator", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "orchestrator", "namespace": "optiinfra-core",
                     "labels": {"app.kubernetes.io/name": "orchestrator"},
                     "annotations": {vocab.K8S_SECRET_ENV: "the image reads its URLs from the environment only"}},
        "spec": {"replicas": 1, "template": _pod(orch, 65532, [{"name": "tmp", "emptyDir": {}}], "core",
                                                  "orchestrator")}}))
    out.append(k8s_res(rules.INGRESS, "portal", {
        "metadata": {"name": "portal", "namespace": "optiinfra-frontend",
                     "labels": {"app.kubernetes.io/name": "portal"},
                     "annotations": {vocab.K8S_PUBLIC: "true",
                                     "nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}},
        "spec": {"tls": [{"hosts": ["portal.example.com"], "secretName": "portal-tls"}],
                 "rules": [{"host": "portal.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "portal", "port": {"number": 3000}}}}]}}]}}))
    return out


def k8s_changed(name: str, type_: str, edit: Callable[[dict[str, Any]], object],
                protect: bool | None = None) -> list[core.Resource]:
    return changed(k8s_manifests(), type_, name, edit, protect=protect)


def k8s_violations(resources: list[core.Resource], config: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Policy -> messages, every rule with the prod policy config."""
    settings = core.reconcile(rules.RULES, config or PROD_CONFIG, source="prod.json")
    out: dict[str, list[str]] = {}
    for f in core.evaluate(rules.RULES, resources, settings):
        out.setdefault(f.violation.policy, []).append(f.violation.message)
    return out


def pg(edit: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], object]:
    """Edit postgres' container."""
    return lambda p: edit(p["spec"]["template"]["spec"]["containers"][0])


def pg_pod(edit: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], object]:
    return lambda p: edit(p["spec"]["template"]["spec"])
