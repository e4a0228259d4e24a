"""The policy pack: every rule passes on the stacks as committed and fails on a bad change.

Failing cases come from real stack config through the same overrides as
`python -m infra check --set ...` wherever config can produce the mistake; where the
settings refuse it first (an image tagged latest, a host port clash, a default
password) or no setting can produce it (a privileged container), the case is the
rendered resource with that one input changed. Kubernetes rules are exercised on
hand-written manifests of the standard shape and on the prod render.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from infra import offline
from infra.backends.kubernetes import namespace_name
from infra.catalog import default_catalog
from infra.cli import main as cli_main
from infra.commands import check as check_cmd
from infra.stack import model_of
from policies.optiinfra_policies import core, pack, rules
from policies.optiinfra_policies import vocabulary as vocab

from .conftest import render

ROOT = Path(__file__).resolve().parent.parent
CONTAINER, VOLUME, IMAGE = rules.CONTAINER, rules.VOLUME, rules.REMOTE_IMAGE
DEV_CONFIG = json.loads((core.CONFIG_DIR / "dev.json").read_text())
PROD_CONFIG = json.loads((core.CONFIG_DIR / "prod.json").read_text())


# ---- helpers ------------------------------------------------------------------------

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


# ---- both stacks as committed ------------------------------------------------------------

def test_dev_passes_every_policy_clean() -> None:
    result = checked("dev")
    assert result.findings == []
    assert not result.failed
    assert {s.level for s in result.settings.values()} == {"advisory"}


def test_the_policies_read_every_kind_of_resource_the_dev_stack_has() -> None:
    kinds = {r.type for r in dev_resources()}
    assert {CONTAINER, VOLUME, IMAGE} <= kinds
    # Every rule applies to something of dev or prod (no rule about a type nobody renders).
    covered = set().union(*(r.types for r in rules.RULES))
    assert {CONTAINER, VOLUME, IMAGE, rules.DEPLOYMENT, rules.STATEFULSET, rules.NAMESPACE_T} <= covered


# ---- 1. unique host ports -------------------------------------------------------------------

def _publish(host: int, ip: str = "127.0.0.1") -> Callable[[dict[str, Any]], object]:
    def edit(props: dict[str, Any]) -> None:
        props["ports"] = [{"internal": 6379, "external": host, "ip": ip, "protocol": "tcp"}]
    return edit


def test_unique_host_ports_passes_when_redis_publishes_its_own_port() -> None:
    # The override from the task: redis published on 6379, which nothing else uses.
    result = checked("dev", "services.redis.hostPort=6379", "services.redis.publish=true")
    redis = next(r for r in result.resources if r.type == CONTAINER and r.name == "redis")
    assert redis.props["ports"] == [{"external": 6379, "internal": 6379, "ip": "127.0.0.1", "protocol": "tcp"}]
    assert result.findings == []


def test_unique_host_ports_fails_when_two_services_bind_one_port() -> None:
    # Config cannot produce this (infra.graph refuses the clash first, see the CLI test);
    # the rule is the second line for anything that bypasses the settings.
    resources = changed(dev_resources(), CONTAINER, "redis", _publish(8080))
    found_ = violations("unique-host-ports", resources)
    assert [name for name, _ in found_] == ["orchestrator", "redis"]
    assert all("host port 8080/tcp is bound by both" in msg for _, msg in found_)


def test_unique_host_ports_considers_the_address() -> None:
    other_loopback = changed(dev_resources(), CONTAINER, "redis", _publish(8080, "127.0.0.2"))
    assert violations("unique-host-ports", other_loopback) == []
    every_interface = changed(dev_resources(), CONTAINER, "redis", _publish(8080, "0.0.0.0"))
    assert len(violations("unique-host-ports", every_interface)) == 2


# ---- 2. bind address ----------------------------------------------------------------------------

def test_bind_address_fails_on_every_interface_for_a_service_not_public() -> None:
    result = checked("dev", "services.grafana.bindAddress=0.0.0.0")
    assert found(result, "host-port-bind-address") == [
        ("grafana", "grafana: host port 3000 binds to 0.0.0.0, but grafana is not public. Fix: bind it to 127.0.0.1 "
                    "(optiinfra:services.grafana.bindAddress), or add grafana to optiinfra:public if it must be "
                    "reachable from other machines.")]
    assert policies_hit(result) == {"host-port-bind-address"}


def test_bind_address_passes_on_every_interface_for_a_public_service() -> None:
    result = checked("dev", "public=[grafana]")
    grafana = next(r for r in result.resources if r.type == CONTAINER and r.name == "grafana")
    assert grafana.props["ports"][0]["ip"] == "0.0.0.0"
    assert result.findings == []


def test_bind_address_without_ip_means_every_interface() -> None:
    resources = changed(dev_resources(), CONTAINER, "grafana", lambda p: p["ports"][0].pop("ip"))
    (name, msg), = violations("host-port-bind-address", resources)
    assert name == "grafana" and "every interface (no ip given)" in msg


def test_bind_address_require_loopback_is_config(tmp_path: Path) -> None:
    sets = ("services.grafana.bindAddress=10.1.2.3",)
    assert checked("dev", *sets).findings == []
    strict = with_config(tmp_path, DEV_CONFIG, **{"host-port-bind-address": {"requireLoopback": True}})
    (name, msg), = found(checked("dev", *sets, config=strict), "host-port-bind-address")
    assert name == "grafana" and "binds to 10.1.2.3, not a loopback address" in msg


# ---- 3. port allocation bands -----------------------------------------------------------------------

def test_bands_fail_for_a_host_port_outside_the_service_band() -> None:
    result = checked("dev", "services.grafana.hostPort=8500")
    (name, msg), = found(result, "port-allocation-bands")
    # The band and its range come from the catalog (infra.catalog.BANDS, Port.band).
    band = default_catalog().band(default_catalog().services["grafana"].port("web").band or "")
    assert name == "grafana"
    assert f"host port 8500 (web) is outside the {band.name} band {band.low}-{band.high}" in msg


def test_bands_pass_for_a_free_port_inside_the_band() -> None:
    assert checked("dev", "services.grafana.hostPort=3100").findings == []


def _without_band_exception(props: dict[str, Any]) -> None:
    """A resource's port stamps as if its catalog Port had no written exception."""
    from types import SimpleNamespace

    from policies.optiinfra_policies import vocabulary as v

    def plain(value: Any) -> Any:
        stamp = v.parse_port_stamp(value)
        if stamp is None or not stamp.outside_band:
            return value
        return v.port_stamp(stamp.name, SimpleNamespace(name=stamp.band, low=stamp.low, high=stamp.high))

    for item in props.get("labels", []):
        item["value"] = plain(item.get("value"))
    annotations = props.get("metadata", {}).get("annotations") or {}
    for key in annotations:
        annotations[key] = plain(annotations[key])


def test_the_seed_exception_for_clickhouse_http_is_written_beside_its_port() -> None:
    from infra.catalog import default_catalog

    sets = ("services.clickhouse.publish=true",)
    assert checked("dev", *sets).findings == []
    without = changed(dev_resources(*sets), CONTAINER, "clickhouse", _without_band_exception)
    (name, msg), = violations("port-allocation-bands", without)
    assert name == "clickhouse" and "host port 8123 (http) is outside the metrics band 9000-9999" in msg
    # One written exception, in one place: beside the catalog Port; no policy config repeats it.
    ports = [p for svc in default_catalog().services.values() for p in svc.ports if p.outside_band]
    assert [(p.name, p.container) for p in ports] == [("http", 8123)]
    for cfg in (DEV_CONFIG, PROD_CONFIG):
        assert "port-allocation-bands" not in cfg
    # The exception covers the port's own number, not one the stack config picks.
    (name, msg), = found(checked("dev", "services.clickhouse.hostPorts.http=8124"), "port-allocation-bands")
    assert name == "clickhouse" and "host port 8124" in msg


# ---- 4. images pinned ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ref", "problem"), [
    ("grafana/grafana:latest", "uses the tag 'latest'"),
    ("grafana/grafana", "has no tag"),
])
def test_images_fail_when_not_pinned(ref: str, problem: str) -> None:
    # `--set services.grafana.image=<ref>` is refused by the settings (CLI test below).
    def edit(props: dict[str, Any]) -> None:
        for label in props.get("labels", []):
            if label["label"] == "io.optiinfra.image":
                label["value"] = ref
        if "labels" not in props:
            props["name"] = ref

    resources = changed(dev_resources(), CONTAINER, "grafana", edit)
    resources = changed(resources, IMAGE, "grafana-image", edit)
    found_ = violations("images-pinned", resources)
    assert [n for n, _ in found_] == ["grafana", "grafana-image"]
    assert all(f"image '{ref}' {problem}" in msg for _, msg in found_)


def test_images_require_a_digest_when_configured(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    sets = (f"services.grafana.image=grafana/grafana:11.3.1@{digest}",)
    strict = with_config(tmp_path, DEV_CONFIG, **{"images-pinned": {"requireDigest": True}})
    result = checked("dev", *sets, config=strict)
    flagged = {name for name, _ in found(result, "images-pinned")}
    assert "grafana" not in flagged and "grafana-image" not in flagged
    assert {"postgres", "postgres-image", "portal"} <= flagged
    assert checked("dev", *sets).findings == []


# ---- 5. health checks -----------------------------------------------------------------------------------

def test_health_check_missing_fails() -> None:
    resources = changed(dev_resources(), CONTAINER, "grafana", lambda p: p.pop("healthcheck"))
    (name, msg), = violations("health-checks", resources, DEV_CONFIG["health-checks"])
    assert name == "grafana" and "long-running container without a health check" in msg


def test_the_exporters_without_a_check_are_exempt_only_through_the_config(tmp_path: Path) -> None:
    no_exemptions = with_config(tmp_path, DEV_CONFIG, **{"health-checks": {"exemptions": []}})
    result = checked("dev", config=no_exemptions)
    flagged = found(result, "health-checks")
    catalog = default_catalog().services
    without_client = {n for n, s in catalog.items() if s.health and s.health.docker_client is None}
    assert {name for name, _ in flagged} == without_client == {"postgres-exporter", "redis-exporter"}
    for name, msg in flagged:
        assert catalog[name].health.no_docker_reason in msg  # type: ignore[union-attr]
    # The committed exemptions are exactly those services, each with a reason.
    exemptions = DEV_CONFIG["health-checks"]["exemptions"]
    assert {e["service"] for e in exemptions} == without_client
    assert all(len(e["reason"]) > 20 for e in exemptions)


# ---- 6. resource limits ------------------------------------------------------------------------------------

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


# ---- 7. host access -------------------------------------------------------------------------------------------

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


# ---- 8. plaintext credentials -----------------------------------------------------------------------------------

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


# ---- 9. default credentials ---------------------------------------------------------------------------------------

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


# ---- 10. tier isolation ---------------------------------------------------------------------------------------------

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


# ---- 13. stateful resources (Docker) ------------------------------------------------------------------------------

def test_data_volumes_are_protected() -> None:
    volumes = [r for r in dev_resources() if r.type == VOLUME]
    assert {v.name for v in volumes} == {"postgres-data", "clickhouse-data", "redis-data", "qdrant-storage",
                                         "prometheus-data", "grafana-data"}
    assert violations("stateful-resources-protected", dev_resources()) == []
    resources = changed(dev_resources(), VOLUME, "postgres-data", lambda p: None, protect=False)
    (name, msg), = violations("stateful-resources-protected", resources)
    assert name == "postgres-data" and "not protected from deletion" in msg


def test_data_on_the_container_layer_fails() -> None:
    resources = changed(dev_resources(), CONTAINER, "redis", lambda p: p.pop("volumes"))
    (name, msg), = violations("stateful-resources-protected", resources)
    assert name == "redis" and "/data is not on a named volume" in msg


# ---- Kubernetes rules on hand-written manifests ---------------------------------------------------------------------

def _urn(type_: str, name: str) -> str:
    return f"urn:pulumi:prod::optiinfra::optiinfra:platform:Tier${type_}::{name}"


def _res(type_: str, name: str, props: dict[str, Any], protect: bool = False) -> core.Resource:
    return core.Resource(urn=_urn(type_, name), type=type_, name=name, props=props, protect=protect)


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
        out.append(_res(rules.NAMESPACE_T, f"{tier}-namespace", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
            protect=tier == "databases"))
        out.append(_res(rules.NETWORK_POLICY, f"{tier}-default-deny", {
            "metadata": {"name": "default-deny", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}))
    # The password as a file from the mounted Secret; the orchestrator's image reads none.
    secret_env: list[dict[str, Any]] = [{"name": "POSTGRES_USER", "value": "optiinfra"},
                                        {"name": "POSTGRES_PASSWORD_FILE", "value": "/run/secrets/db/password"}]
    pg = _container("postgres", "postgres:16.4", secret_env, slow=True,
                    mounts=[{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                            {"name": "credentials", "mountPath": "/run/secrets/db", "readOnly": True}])
    out.append(_res(rules.STATEFULSET, "postgres", {
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
    out.append(_res(rules.K8S_SERVICE, "postgres", {
        "metadata": {"name": "postgres", "namespace": "optiinfra-databases",
                     "labels": {"app.kubernetes.io/name": "postgres"},
                     "annotations": {vocab.K8S_PUBLIC: "false", vocab.k8s_port_key("postgres"): vocab.port_stamp(
                         "postgres", catalog.band(postgres_port.band or ""))}},
        "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": "postgres"},
                 "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}]}}))
    # Its backup: a CronJob writing to a claim of its own (not data-postgres-0).
    job = _container("backup", "postgres:16.4", [], mounts=[{"name": "backups", "mountPath": "/backup"}])
    out.append(_res(rules.PVC, "postgres-backups", {
        "metadata": {"name": "postgres-backups", "namespace": "optiinfra-databases"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}, protect=True))
    out.append(_res(rules.CRONJOB, "postgres-backup", {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "postgres-backup", "namespace": "optiinfra-databases",
                     "labels": {"app.kubernetes.io/name": "postgres-backup"},
                     "annotations": {vocab.K8S_BACKUP_OF: "postgres", vocab.K8S_BACKUP_TARGET: "/backup"}},
        "spec": {"schedule": "17 2 * * *", "jobTemplate": {"spec": {"template": _pod(
            job, 999, [{"name": "backups", "persistentVolumeClaim": {"claimName": "postgres-backups"}}],
            "databases", "postgres-backup")}}}}))
    out.append(_res(rules.K8S_SECRET, "databases-credentials", {
        "metadata": {"name": "credentials", "namespace": "optiinfra-databases"},
        "stringData": {"postgres-password": "[secret]"}}))
    # The Secret the orchestrator reads its URL from, in its own namespace.
    out.append(_res(rules.K8S_SECRET, "core-credentials", {
        "metadata": {"name": "credentials", "namespace": "optiinfra-core"},
        "stringData": {"database-url": "[secret]"}}))
    orch = _container("orchestrator", "ghcr.io/optiinfra/orchestrator:0.1.0", [
        {"name": "PORT", "value": "8080"},
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "database-url"}}}])
    out.append(_res(rules.DEPLOYMENT, "orchestrator", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "orchestrator", "namespace": "optiinfra-core",
                     "labels": {"app.kubernetes.io/name": "orchestrator"},
                     "annotations": {vocab.K8S_SECRET_ENV: "the image reads its URLs from the environment only"}},
        "spec": {"replicas": 1, "template": _pod(orch, 65532, [{"name": "tmp", "emptyDir": {}}], "core",
                                                  "orchestrator")}}))
    out.append(_res(rules.INGRESS, "portal", {
        "metadata": {"name": "portal", "namespace": "optiinfra-frontend",
                     "labels": {"app.kubernetes.io/name": "portal"}, "annotations": {vocab.K8S_PUBLIC: "true"}},
        "spec": {"rules": [{"host": "portal.example.com", "http": {"paths": [
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


def test_compliant_kubernetes_manifests_pass_every_policy() -> None:
    assert k8s_violations(k8s_manifests()) == {}


def _pg(edit: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], object]:
    """Edit postgres' container."""
    return lambda p: edit(p["spec"]["template"]["spec"]["containers"][0])


def _pg_pod(edit: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], object]:
    return lambda p: edit(p["spec"]["template"]["spec"])


K8S_FAILURES: list[tuple[str, str, str, Callable[[dict[str, Any]], object], str]] = [
    # (case, resource, policy, edit, words in the message)
    ("hostNetwork", "postgres", "no-host-access", _pg_pod(lambda s: s.update(hostNetwork=True)),
     "sets hostNetwork: true"),
    ("hostPath", "postgres", "no-host-access",
     _pg_pod(lambda s: s["volumes"].append({"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}})),
     "mounts the Docker socket"),
    ("privileged", "postgres", "no-host-access", _pg(lambda c: c["securityContext"].update(privileged=True)),
     "container postgres is privileged"),
    ("escalation", "postgres", "pod-security-restricted",
     _pg(lambda c: c["securityContext"].pop("allowPrivilegeEscalation")), "allowPrivilegeEscalation: false"),
    ("root", "postgres", "pod-security-restricted",
     _pg_pod(lambda s: (s["securityContext"].pop("runAsNonRoot"),
                        s["containers"][0]["securityContext"].pop("runAsNonRoot"))), "runAsNonRoot: true"),
    ("caps", "postgres", "pod-security-restricted",
     _pg(lambda c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])), "adds capabilities SYS_ADMIN"),
    ("seccomp", "postgres", "pod-security-restricted",
     _pg_pod(lambda s: (s["securityContext"].pop("seccompProfile"),
                        s["containers"][0]["securityContext"].pop("seccompProfile"))), "seccompProfile"),
    ("readiness", "postgres", "health-checks", _pg(lambda c: c.pop("readinessProbe")), "has no readinessProbe"),
    ("startup", "postgres", "health-checks", _pg(lambda c: c.pop("startupProbe")), "startupProbe (the catalog"),
    ("cpu limit", "postgres", "resource-limits", _pg(lambda c: c["resources"]["limits"].pop("cpu")), "no cpu limit"),
    ("latest", "postgres", "images-pinned", _pg(lambda c: c.update(image="postgres:latest")),
     "uses the tag 'latest'"),
    ("literal secret", "postgres", "no-plaintext-credentials",
     _pg(lambda c: c["env"].__setitem__(1, {"name": "POSTGRES_PASSWORD", "value": "[secret]"})),
     "use valueFrom.secretKeyRef"),
    ("default password", "postgres", "no-default-credentials",
     _pg(lambda c: c["env"].__setitem__(1, {"name": "POSTGRES_PASSWORD", "value": "postgres"})),
     "well-known default credential"),
    ("wrong namespace", "postgres", "tier-isolation",
     lambda p: p["metadata"].update(namespace="optiinfra-frontend"), "runs in namespace optiinfra-frontend"),
    ("hostPort", "postgres", "host-port-bind-address",
     _pg(lambda c: c["ports"][0].update(hostPort=5432)), "publishes hostPort 5432"),
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


def test_a_plaintext_kubernetes_secret_fails() -> None:
    hits = k8s_violations(k8s_changed("databases-credentials", rules.K8S_SECRET,
                                      lambda p: p["stringData"].update({"postgres-password": "changeme"})))
    assert set(hits) == {"no-plaintext-credentials", "no-default-credentials"}
    assert "postgres-password is not marked secret" in hits["no-plaintext-credentials"][0]


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
    allow = _res(rules.NETWORK_POLICY, "allow-postgres", {
        "metadata": {"name": "allow-postgres", "namespace": "optiinfra-databases"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": "optiinfra-frontend"}}}]}]}})
    hits = k8s_violations([*k8s_manifests(), allow])
    assert list(hits) == ["tier-isolation"]
    assert "admits ingress traffic with the frontend namespace" in hits["tier-isolation"][0]


def test_only_public_services_are_exposed_on_kubernetes() -> None:
    lb = k8s_changed("postgres", rules.K8S_SERVICE, lambda p: p["spec"].update(type="LoadBalancer"))
    assert "has type LoadBalancer" in k8s_violations(lb)["host-port-bind-address"][0]
    ingress = k8s_changed("portal", rules.INGRESS, lambda p: p["spec"]["rules"][0]["http"]["paths"][0][
        "backend"]["service"].update(name="postgres"))
    assert k8s_violations(ingress) == {"host-port-bind-address": [
        "Ingress routes to postgres, which is not public. Fix: remove the route, or add postgres to optiinfra:public."]}


def test_kubernetes_service_ports_follow_the_bands() -> None:
    moved = k8s_changed("postgres", rules.K8S_SERVICE, lambda p: p["spec"]["ports"][0].update(port=15432))
    (msg,) = k8s_violations(moved)["port-allocation-bands"]
    assert "Service port 15432 (postgres) is outside the database band 5000-6999" in msg


def test_the_stack_setting_require_digest_applies_on_kubernetes() -> None:
    # The program stamps the stack's kubernetes.requireDigest on every workload it renders.
    strict = k8s_manifests()
    for type_, name in ((rules.STATEFULSET, "postgres"), (rules.DEPLOYMENT, "orchestrator")):
        strict = changed(strict, type_, name, lambda p: p["metadata"].setdefault("annotations", {}).update(
            {vocab.K8S_REQUIRE_DIGEST: "true"}))
    hits = k8s_violations(strict)
    assert set(hits) == {"images-pinned"} and len(hits["images-pinned"]) == 2
    assert all("has no digest, and this stack requires one" in m for m in hits["images-pinned"])


def test_two_workloads_on_one_host_port_clash() -> None:
    both = k8s_changed("postgres", rules.STATEFULSET, _pg(lambda c: c["ports"][0].update(hostPort=9000)))
    both = changed(both, rules.DEPLOYMENT, "orchestrator",
                   lambda p: p["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(hostPort=9000))
    msgs = k8s_violations(both)["unique-host-ports"]
    assert len(msgs) == 2 and all("host port 9000/tcp is bound by both" in m for m in msgs)


# ---- the prod stack (Kubernetes) as rendered ----------------------------------------------------------------------

def prod_resources(*sets: str) -> list[core.Resource]:
    return check_cmd.resources_of(render("prod", *sets))


def test_prod_passes_every_policy_clean() -> None:
    result = checked("prod")
    assert result.findings == []
    assert {s.level for s in result.settings.values()} == {"mandatory"}
    kinds = {r.type for r in result.resources}
    assert {rules.DEPLOYMENT, rules.STATEFULSET, rules.NAMESPACE_T, rules.NETWORK_POLICY, rules.K8S_SERVICE,
            rules.K8S_SECRET, rules.INGRESS} <= kinds


def test_the_rules_see_every_prod_workload_as_its_catalog_service() -> None:
    # Not vacuous: every workload maps to a service (cost-agent-aws is the cost agent) in its tier's namespace.
    # A backup CronJob runs beside the service its stamp names (its pods have a name of their own).
    model = model_of("prod")
    workloads = [r for r in prod_resources() if r.type in rules.WORKLOADS]

    def service(r: core.Resource) -> str:
        return str(rules.annotation(r, vocab.K8S_BACKUP_OF) or "") if r.type == rules.CRONJOB else rules.k8s_service(r)

    services = {service(r) for r in workloads if r.type != rules.CRONJOB}
    assert services == set(model.services)
    assert {service(r) for r in workloads if r.type == rules.CRONJOB} == {e.name for e in model.backed_up()}
    for r in workloads:
        eff = model.services[service(r)]
        assert r.props["metadata"]["namespace"] == namespace_name(model, eff.tier)


def test_prod_fails_when_the_frontend_is_let_into_the_databases() -> None:
    result = checked("prod", "services.portal.dependsOn=[postgres]")
    # Both ends of the edge (egress is denied by default in every tier namespace since 514fb57,
    # so the portal's own policy now admits the edge too).
    (dst, into), (src, out) = sorted(found(result, "tier-isolation"), key=lambda f: f[0] != "allow-postgres")
    assert (dst, src) == ("allow-postgres", "allow-portal")
    assert "admits ingress traffic with the frontend namespace" in into
    assert "admits egress traffic with the databases namespace" in out
    assert result.failed


def test_prod_fails_every_image_without_a_digest_when_the_stack_requires_digests() -> None:
    result = checked("prod", "kubernetes.requireDigest=true")
    flagged = {name for name, _ in found(result, "images-pinned")}
    assert flagged == {r.name for r in result.resources if r.type in rules.WORKLOADS}
    assert policies_hit(result) == {"images-pinned"}


def test_prod_needs_the_clickhouse_exception_for_its_service_port() -> None:
    resources = check_cmd.resources_of(render("prod"))
    without = changed(resources, rules.K8S_SERVICE, "clickhouse", _without_band_exception)
    (name, msg), = violations("port-allocation-bands", without)
    assert name == "clickhouse" and "Service port 8123 (http) is outside the metrics band 9000-9999" in msg


def test_prod_needs_no_health_exemption() -> None:
    # Kubernetes probes need nothing inside the image: the exporters get httpGet probes.
    assert "health-checks" not in PROD_CONFIG
    exporters = [r for r in prod_resources() if r.type == rules.DEPLOYMENT and r.name.endswith("-exporter")]
    assert len(exporters) == 3
    assert violations("health-checks", exporters) == []


def _no_probes(props: dict[str, Any]) -> None:
    props["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")


PROD_MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], object], bool | None, set[str], str]] = [
    # (type, name, edit, protect, policies, words)
    (rules.STATEFULSET, "postgres", lambda p: None, False, {"stateful-resources-protected"}, "not protected"),
    (rules.STATEFULSET, "postgres", _no_probes, None, {"health-checks"}, "has no livenessProbe"),
    (rules.DEPLOYMENT, "cost-agent-aws", lambda p: p["spec"]["template"]["spec"].update(hostNetwork=True), None,
     {"no-host-access", "pod-security-restricted"}, "hostNetwork"),
    (rules.NAMESPACE_T, "core-namespace", lambda p: p["metadata"]["labels"].pop("pod-security.kubernetes.io/enforce"),
     None, {"pod-security-restricted"}, "is not labelled"),
    # The orchestrator's image reads no file: without the catalog's reason its secret env fails.
    (rules.DEPLOYMENT, "orchestrator", lambda p: p["metadata"]["annotations"].pop(vocab.K8S_SECRET_ENV), None,
     {"secrets-as-files"}, "takes DATABASE_URL, REDIS_URL from a Secret as environment variables"),
    # Postgres reads its password from the mounted Secret: pointing the file variable anywhere
    # else (here a plain emptyDir path) is a literal in the pod spec.
    (rules.STATEFULSET, "postgres", lambda p: _env(p, "POSTGRES_PASSWORD_FILE").update(value="/tmp/postgres"), None,
     {"no-plaintext-credentials"}, "sets POSTGRES_PASSWORD_FILE as a literal value"),
    (rules.STATEFULSET, "postgres", lambda p: _mount(p, "/run/secrets/optiinfra").update(readOnly=False), None,
     {"no-plaintext-credentials"}, "_PASSWORD_FILE as a literal value"),  # both of its files
    # Egress is denied by default in prod: a default-deny policy for ingress only is not one.
    (rules.NETWORK_POLICY, "agents-default-deny", lambda p: p["spec"].update(policyTypes=["Ingress"]), None,
     {"namespace-default-deny"}, "has no default-deny NetworkPolicy (podSelector {}, policyTypes ['Egress', "
                                 "'Ingress']"),
]


def _env(props: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in props["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == name)


def _mount(props: dict[str, Any], path: str) -> dict[str, Any]:
    return next(m for m in props["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                if m["mountPath"] == path)


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


def test_cli_fails_prod_naming_the_policy_and_the_resource() -> None:
    out = cli("--stack", "prod", "--set", "services.portal.dependsOn=[postgres]")
    assert out.returncode == 1, out.stdout + out.stderr
    assert ("[mandatory]  optiinfra-policies@v0.1.0  tier-isolation "
            "(kubernetes:networking.k8s.io/v1:NetworkPolicy: allow-postgres)") in out.stdout


# ---- policy config: reconciled as the engine does ---------------------------------------------------------------

def test_enforcement_per_stack_comes_from_the_config_files() -> None:
    dev = core.reconcile(rules.RULES, DEV_CONFIG, source="dev.json")
    prod = core.reconcile(rules.RULES, PROD_CONFIG, source="prod.json")
    assert {s.level for s in dev.values()} == {"advisory"}
    assert {s.level for s in prod.values()} == {"mandatory"}
    # Schema defaults fill what a file leaves out; a file's properties override them.
    assert prod["health-checks"].config == {"exemptions": [], "requireStartupProbe": True}
    assert dev["health-checks"].config["exemptions"] == DEV_CONFIG["health-checks"]["exemptions"]


def test_a_policy_entry_overrides_all() -> None:
    settings = core.reconcile(rules.RULES, {"all": "mandatory", "port-allocation-bands": "advisory",
                                            "health-checks": {"enforcementLevel": "disabled"}}, source="x.json")
    assert settings["port-allocation-bands"].level == "advisory"
    assert settings["health-checks"].level == "disabled"
    assert settings["images-pinned"].level == "mandatory"


@pytest.mark.parametrize(("config", "key", "words"), [
    ({"all": "strict"}, "x.json: all", "'strict' is not an enforcement level"),
    ({"no-such-policy": "advisory"}, "x.json: no-such-policy", "is not a policy of this pack"),
    ({"images-pinned": {"requireDigest": "yes"}}, "x.json: images-pinned.requireDigest", "is not of type boolean"),
    ({"health-checks": {"exemptions": [{"service": "redis-exporter"}]}},
     "x.json: health-checks.exemptions[0].reason", "is required"),
    ({"health-checks": {"exemption": []}}, "x.json: health-checks.exemption", "is not a known setting"),
])
def test_bad_policy_config_is_a_user_error(config: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(core.PolicyConfigError) as err:
        core.reconcile(rules.RULES, config, source="x.json")
    assert err.value.key == key and words in err.value.problem


# ---- the offline check command ------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_passes_dev_and_prints_the_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "Policy Violations" not in out
    assert all(f"[advisory]  {name}  " in out for name in rules.names())


def test_cli_exits_1_on_a_mandatory_failure_and_prints_it_like_pulumi(tmp_path: Path) -> None:
    mandatory = with_config(tmp_path, DEV_CONFIG, all="mandatory")
    out = cli("--stack", "dev", "--set", "services.grafana.bindAddress=0.0.0.0", "--policy-config", str(mandatory))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    i = lines.index("    [mandatory]  optiinfra-policies@v0.1.0  host-port-bind-address "
                    "(docker:index/container:Container: grafana)")
    assert lines[i + 1].strip() == rules.by_name("host-port-bind-address").description
    assert lines[i + 2].strip().startswith("grafana: host port 3000 binds to 0.0.0.0")
    assert lines[i + 3].strip() == ("urn: urn:pulumi:dev::optiinfra::optiinfra:platform:Tier"
                                    "$docker:index/container:Container::grafana")
    assert "FAILED: mandatory policies violated: host-port-bind-address" in out.stdout


def test_cli_advisory_violations_exit_0_and_json_names_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--stack", "dev", "--set", "services.grafana.bindAddress=0.0.0.0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (v,) = data["violations"]
    assert v["policyName"] == "host-port-bind-address" and v["enforcementLevel"] == "advisory"
    assert v["resourceType"] == CONTAINER and v["resourceName"] == "grafana" and v["urn"].endswith("::grafana")
    assert v["severity"] == "high" and data["passed"] is True and data["summary"] == {"mandatory": 0, "advisory": 1}


@pytest.mark.parametrize(("args", "words"), [
    # The settings and the graph refuse these before anything renders: exit 2 naming the key.
    (["--set", "services.grafana.image=grafana/grafana:latest"], "optiinfra:services.grafana.image"),
    (["--set", "services.redis.hostPort=8080", "--set", "services.redis.publish=true"],
     "host port 8080 is already taken by orchestrator"),
    (["--secret", "grafanaAdminPassword=admin"], "well-known default credential"),
    (["--policy-config", "no/such/file.json"], "there is no file"),
])
def test_cli_user_errors_exit_2(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--stack", "dev", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


# ---- the pack as the Pulumi CLI loads it ---------------------------------------------------------------------------

FAKE_SECRET = "fake-secret-value-Zq81"


def engine_form(value: Any) -> Any:
    """Offline inputs as the engine sends them: markers back to marked (fake) secrets and
    pulumi-policy's unknown sentinel."""
    from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    if isinstance(value, dict):
        return {k: engine_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [engine_form(v) for v in value]
    if value == offline.SECRET:
        return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": FAKE_SECRET}
    if isinstance(value, str) and value.endswith("=" + offline.SECRET):
        return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": value.split("=", 1)[0] + "=" + FAKE_SECRET}
    if value == offline.UNKNOWN:
        return UNKNOWN_STRING_VALUE
    return value


def unwrapped(value: Any) -> Any:
    """What the rules see of offline inputs under the engine: the (fake) secret values
    themselves, as pulumi-policy's public `args.props` hands them over."""
    if isinstance(value, dict):
        return {k: unwrapped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrapped(v) for v in value]
    if value == offline.SECRET:
        return FAKE_SECRET
    if isinstance(value, str) and value.endswith("=" + offline.SECRET):
        return value.split("=", 1)[0] + "=" + FAKE_SECRET
    return value


def engine_props(props: dict[str, Any]) -> Any:
    """`args.props` as pulumi-policy builds it from an engine request (what Analyze does;
    the test may use the SDK's internals to reproduce it, the pack does not)."""
    from google.protobuf import json_format, struct_pb2
    from pulumi_policy.deserialize import deserialize_properties
    from pulumi_policy.proxy import unknown_checking_proxy

    message = struct_pb2.Struct()
    message.update(engine_form(props))
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(message)))


def test_the_adapter_gives_rules_the_offline_inputs_with_secrets_unwrapped() -> None:
    # Unknowns become the offline marker, numbers ints again; secrets arrive as their values
    # (public API), so the adapter says so: secrets_marked=False.
    unknown = 0
    for res in dev_resources() + prod_resources():
        seen = pack.resource(res.urn, res.type, res.name, engine_props(dict(res.props)), res.protect)
        assert seen.props == unwrapped(dict(res.props)), res.name
        assert seen.protect == res.protect and seen.secrets_marked is False
        unknown += json.dumps(res.props).count(offline.UNKNOWN)
    assert unknown  # the renders do hold values not known before deployment (image IDs)


class Analyzers:
    """policies/__main__.py started as the CLI starts it (`python -m pulumi.policy <engine> .`
    in the pack directory, nothing of the project on PYTHONPATH and no stack config: the
    pack needs neither): the real server, one per stack the tests name, stopped when the
    module's tests are done."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.stubs: dict[tuple[str, tuple[str, ...]], Any] = {}

    def __call__(self, stack: str, *sets: str) -> Any:
        import grpc
        from pulumi.runtime.proto import analyzer_pb2_grpc

        if (stack, sets) not in self.stubs:
            env = {k: v for k, v in os.environ.items() if k not in ("PULUMI_CONFIG", "PULUMI_STACK")}
            env.update({"PULUMI_PROJECT": "optiinfra", "PULUMI_DRY_RUN": "true", "PYTHONPATH": ""})
            proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
                                    cwd=core.PACK_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            self.procs.append(proc)
            watchdog = threading.Timer(120, proc.kill)  # never hang the suite on a broken pack
            watchdog.start()
            port = (proc.stdout.readline() if proc.stdout else "").strip()
            watchdog.cancel()
            assert port.isdigit(), proc.stderr.read() if proc.stderr else "no output"
            self.stubs[(stack, sets)] = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        return self.stubs[(stack, sets)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def analyzers() -> Iterator[Analyzers]:
    servers = Analyzers()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def analyzer(analyzers: Analyzers) -> Any:
    return analyzers("dev")


def _policy_config(settings: dict[str, core.Setting]) -> Any:
    from pulumi.runtime.proto import analyzer_pb2

    levels = {"advisory": analyzer_pb2.ADVISORY, "mandatory": analyzer_pb2.MANDATORY,
              "disabled": analyzer_pb2.DISABLED, "remediate": analyzer_pb2.REMEDIATE}
    request = analyzer_pb2.ConfigureAnalyzerRequest()
    for name, s in settings.items():
        request.policyConfig[name].enforcementLevel = levels[s.level]
        request.policyConfig[name].properties.update(s.config)
    return request


def _analyze(stub: Any, res: core.Resource, sent: dict[str, Any] | None = None) -> list[tuple[str, str, int]]:
    """Diagnostics for one resource; `sent` replaces its engine-form properties."""
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    props = struct_pb2.Struct()
    props.update(sent if sent is not None else engine_form(dict(res.props)))
    response = stub.Analyze(analyzer_pb2.AnalyzeRequest(
        urn=res.urn, type=res.type, name=res.name, properties=props,
        options=analyzer_pb2.AnalyzerResourceOptions(protect=res.protect)))
    return [(d.policyName, d.message, d.enforcementLevel) for d in response.diagnostics]


def test_the_pack_publishes_every_rule_with_severity_and_config_schema(analyzer: Any) -> None:
    from google.protobuf import empty_pb2, json_format
    from pulumi.runtime.proto import analyzer_pb2

    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == core.PACK_NAME and info.supportsConfig
    published = {p.name: p for p in info.policies}
    assert list(published) == rules.names()
    for rule in rules.RULES:
        p = published[rule.name]
        assert p.description == rule.description
        assert analyzer_pb2.PolicySeverity.Name(p.severity) == f"POLICY_SEVERITY_{rule.severity.upper()}"
        assert p.enforcementLevel == analyzer_pb2.ADVISORY
        stack = rule.check_stack is not None
        assert p.policy_type == (analyzer_pb2.POLICY_TYPE_STACK if stack else analyzer_pb2.POLICY_TYPE_RESOURCE)
        assert set(json_format.MessageToDict(p.configSchema.properties)) == set(rule.config)


@pytest.mark.parametrize(("stack", "bad", "policy", "count"), [
    ("dev", "services.grafana.bindAddress=0.0.0.0", "host-port-bind-address", 1),
    ("prod", "services.portal.dependsOn=[postgres]", "tier-isolation", 2),  # both NetworkPolicies of the edge
])
def test_the_pack_under_the_cli_finds_what_the_offline_check_finds(analyzers: Analyzers, stack: str, bad: str,
                                                                   policy: str, count: int) -> None:
    server = analyzers(stack, bad)
    result = checked(stack, bad)
    server.Configure(_policy_config(result.settings))
    expected = sorted((f.violation.policy, f.violation.urn, f.violation.message) for f in result.findings)
    assert [p for p, _, _ in expected] == [policy] * count
    got = []
    for res in result.resources:
        for name, message, _ in _analyze(server, res):
            description, _, detail = message.partition("\n")
            assert description == rules.by_name(name).description
            got.append((name, res.urn, detail))
    assert sorted(got) == expected


def _literal_env(name: str, value: str) -> Callable[[dict[str, Any]], object]:
    def edit(props: dict[str, Any]) -> None:
        env = props["spec"]["template"]["spec"]["containers"][0]["env"]
        env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]
    return edit


def test_the_pack_tells_a_secret_from_plaintext_and_never_shows_the_value(analyzer: Any) -> None:
    from pulumi.runtime.proto import analyzer_pb2

    # Under the engine a secret arrives unwrapped, so the pack tells them apart by structure:
    # on Kubernetes a credential comes through secretKeyRef (the Secret's value never enters
    # the pod spec); a literal value is stored in plaintext, whatever the program marked.
    analyzer.Configure(_policy_config(core.reconcile(rules.RULES, PROD_CONFIG, source="prod.json")))
    grafana = next(r for r in prod_resources() if r.type == rules.STATEFULSET and r.name == "grafana")
    assert _analyze(analyzer, grafana) == []  # GF_SECURITY_ADMIN_PASSWORD through secretKeyRef: fine
    plain = changed([grafana], rules.STATEFULSET, "grafana",
                    _literal_env("GF_SECURITY_ADMIN_PASSWORD", FAKE_SECRET))[0]
    diags = _analyze(analyzer, plain)
    assert [(p, level) for p, _, level in diags] == [("no-plaintext-credentials", analyzer_pb2.MANDATORY)]
    assert all(FAKE_SECRET not in m for _, m, _ in diags)


def test_under_the_engine_a_docker_env_value_is_judged_by_its_value_not_its_mark(analyzer: Any) -> None:
    from pulumi.runtime.proto import analyzer_pb2
    from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY

    analyzer.Configure(_policy_config(core.reconcile(rules.RULES, PROD_CONFIG, source="prod.json")))
    grafana = next(r for r in dev_resources() if r.type == CONTAINER and r.name == "grafana")
    # Secret env entries arrive unwrapped: no false alarm on the committed render ...
    assert _analyze(analyzer, grafana) == []
    # ... and, the mark being gone, a plaintext one is not told apart here (the offline check
    # sees the marks: test_plaintext_credentials_fail; the program makes every credential secret).
    plain = changed([grafana], CONTAINER, "grafana", lambda p: set_env(p, "GF_SECURITY_ADMIN_PASSWORD", FAKE_SECRET))[0]
    assert _analyze(analyzer, plain) == []
    # A well-known default is refused whether it travels as a secret or not, and never printed.
    for marked in (True, False):
        sent = engine_form(dict(grafana.props))
        entry = "GF_SECURITY_ADMIN_PASSWORD=changeme"
        sent["envs"] = [e for e in sent["envs"] if "GF_SECURITY_ADMIN_PASSWORD" not in json.dumps(e)] + [
            {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": entry} if marked else entry]
        diags = _analyze(analyzer, grafana, sent)
        assert [(p, level) for p, _, level in diags] == [("no-default-credentials", analyzer_pb2.MANDATORY)]
        assert all("changeme" not in m.partition("\n")[2] for _, m, _ in diags)  # after the description


def test_the_pack_runs_stack_policies(analyzer: Any) -> None:
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    analyzer.Configure(_policy_config(core.reconcile(rules.RULES, DEV_CONFIG, source="dev.json")))
    resources = changed(dev_resources(), CONTAINER, "redis", _publish(8080))
    request = analyzer_pb2.AnalyzeStackRequest()
    for res in resources:
        props = struct_pb2.Struct()
        props.update(engine_form(dict(res.props)))
        request.resources.append(analyzer_pb2.AnalyzerResource(
            urn=res.urn, type=res.type, name=res.name, properties=props,
            options=analyzer_pb2.AnalyzerResourceOptions(protect=res.protect)))
    diags = analyzer.AnalyzeStack(request).diagnostics
    assert sorted((d.policyName, d.urn.rsplit("::", 1)[-1]) for d in diags) == [
        ("unique-host-ports", "orchestrator"), ("unique-host-ports", "redis")]


# ---- stateful-backups --------------------------------------------------------------------

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
        for m in props["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]:
            if m["mountPath"] == "/backup":
                m["readOnly"] = True

    for edit, words in ((to_empty_dir, "emptyDir"), (read_only, "read-only")):
        resources = changed(prod_resources(), rules.CRONJOB, "clickhouse-backup", edit)
        ((name, message),) = violations("stateful-backups", resources)
        assert name == "clickhouse" and words in message


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
