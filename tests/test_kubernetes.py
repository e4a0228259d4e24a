"""The prod stack on Kubernetes, as the offline renderer sees it (Pulumi mocks, no cluster).

Manifests are taken from the render command's conversion of the recorded inputs, so what is
checked here is what `python -m infra render` writes and what `pulumi up` would send.
Expected values are the seed's facts and Pulumi.prod.yaml's settings written as literals;
the NetworkPolicy test evaluates the rendered policies with Kubernetes' own semantics and
compares the result with the graph's edges.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra import cli, offline
from infra import stack as infra_stack
from infra.backends import kubernetes
from infra.backends.kubernetes import K8S_VERSION
from infra.catalog import CREDENTIALS, PG_APPLIED, default_catalog
from infra.graph import Resolved
from infra.model import Secret
from infra.settings import ConfigError

from .conftest import render
from .tools import manifests, of_kind

WORKLOADS = ("Deployment", "StatefulSet")
TIERS = ("databases", "monitoring", "core", "agents", "frontend")
STATEFUL = {"postgres", "clickhouse", "redis", "qdrant", "prometheus", "grafana"}
# Every credential supplied as a stack secret (what an operator does with `--secret`).
ALL_SECRETS: tuple[str, ...] = (
    "postgresPassword=pg-supplied-0123456789", "postgresMonitorPassword=pgmon-supplied-0123456789",
    "clickhousePassword=ch-supplied-0123456789",
    "redisPassword=redis-supplied-0123456789", "grafanaAdminPassword=gf-supplied-0123456789",
    "flowerPassword=flower-supplied-0123456789", "qdrantApiKey=qdrant-supplied-0123456789",
)
# Every other credential the catalog declares (the per-consumer database roles), supplied too.
ALL_SECRETS += tuple(f"{c.config_key}={c.id}-supplied-0123456789" for c in CREDENTIALS
                     if c.generated and not any(s.startswith(f"{c.config_key}=") for s in ALL_SECRETS))
# The seed's container ports per service (Service ports must be exactly these).
SEED_PORTS = {
    "postgres": {5432}, "clickhouse": {8123, 9000}, "redis": {6379}, "qdrant": {6333, 6334},
    "prometheus": {9090}, "grafana": {3000}, "flower": {5555}, "postgres-exporter": {9187},
    "redis-exporter": {9121}, "clickhouse-exporter": {9116}, "orchestrator": {8080},
    "data-collector": {8005}, "cost-agent": {8001}, "performance-agent": {8002},
    "resource-agent": {8003}, "application-agent": {8004}, "portal": {3000},
    "alertmanager": {9093},  # not the seed's: where alerts go (issue 14)
    "blackbox-exporter": {9115},  # not the seed's: the prober (issue 24)
    "oauth2-proxy": {4180, 9180},  # not the seed's: the sign-in proxy (issue 23)
    "kube-state-metrics": {8080},  # not the seed's: cluster state, Kubernetes only (issue 24)
    "pushgateway": {9091},  # not the seed's: the drills' results, with a backup store (issue 25)
}


# ---- helpers ---------------------------------------------------------------------

def named(r: offline.Render, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in of_kind(r, kind)}


def workloads(r: offline.Render) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in of_kind(r, *WORKLOADS)}


def container(w: dict[str, Any]) -> dict[str, Any]:
    containers = w["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def model_of(stack: str, *sets: str) -> Resolved:
    return infra_stack.model_of(stack, sets)


@pytest.fixture(scope="module")
def prod() -> offline.Render:
    return render("prod")


# ---- schema ----------------------------------------------------------------------

def test_every_manifest_validates_against_the_stated_schema_strictly(prod: offline.Render) -> None:
    docs = manifests(prod)
    assert len(docs) > 60
    for m in docs:
        kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    # The validator is strict: an unknown field is rejected, so the check above has teeth.
    bad = copy.deepcopy(workloads(prod)["postgres"])
    bad["spec"]["template"]["spec"]["containers"][0]["runAsUser"] = 999  # belongs in securityContext
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_render_command_writes_one_valid_file_per_tier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--stack", "prod", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}.yaml" for t in TIERS)
    secrets_in: set[str] = set()
    for tier in TIERS:
        docs = list(yaml.safe_load_all((tmp_path / f"{tier}.yaml").read_text()))
        assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == f"optiinfra-{tier}"
        for m in docs:
            kubernetes_validate.validate(m, K8S_VERSION, strict=True)
            if m["kind"] != "Namespace":
                assert m["metadata"]["namespace"] == f"optiinfra-{tier}"
            if m["kind"] == "Secret":
                secrets_in.add(tier)
                assert m["stringData"] and set(m["stringData"].values()) == {"[secret]"}
    # One Secret per namespace that needs one: the portal uses no credential.
    assert secrets_in == {"databases", "monitoring", "core", "agents"}
    assert "wrote" in capsys.readouterr().out


def test_render_redacts_supplied_secrets(tmp_path: Path) -> None:
    args = ["render", "--stack", "prod", "--out", str(tmp_path)]
    for s in ALL_SECRETS:
        args += ["--secret", s]
    assert cli.main(args) == 0
    text = "".join(p.read_text() for p in tmp_path.iterdir())
    for s in ALL_SECRETS:
        assert s.split("=", 1)[1] not in text


def test_render_refuses_a_docker_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "--stack", "dev", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "optiinfra:target" in err and "Fix:" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


# ---- namespaces and Pod Security ---------------------------------------------------

def test_one_restricted_namespace_per_tier(prod: offline.Render) -> None:
    ns = named(prod, "Namespace")
    assert set(ns) == {f"optiinfra-{t}" for t in TIERS}
    for m in ns.values():
        assert m["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Namespaces that hold claims are protected: deleting one would delete its data.
    protected = {r.inputs["metadata"]["name"] for r in prod.of_type("kubernetes:core/v1:Namespace") if r.protect}
    assert protected == {"optiinfra-databases", "optiinfra-monitoring"}


def test_namespace_prefix_from_config_reaches_names_urls_and_config_files() -> None:
    r = render("prod", "kubernetes.namespacePrefix=acme")
    assert set(named(r, "Namespace")) == {f"acme-{t}" for t in TIERS}
    agent = container(workloads(r)["cost-agent-aws"])
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["ORCHESTRATOR_URL"] == "http://orchestrator.acme-core.svc.cluster.local:8080"
    prom = next(m for m in of_kind(r, "ConfigMap") if m["metadata"]["name"].startswith("prometheus-config"))
    assert "redis-exporter-headless.acme-monitoring.svc.cluster.local" in prom["data"]["prometheus.yml"]


@pytest.mark.parametrize("prefix", ["Acme", "a_b", "x" * 60])
def test_bad_namespace_prefix_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError, match="namespacePrefix"):
        offline.render("prod", [f"kubernetes.namespacePrefix={prefix}"])


ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The Pod Security Standard `restricted` (baseline included), checked as written."""
    out = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {v['name']} {kinds}")
    if psc.get("sysctls"):
        out.append("sysctls")
    containers = (pod.get("containers") or []) + (pod.get("initContainers") or []) + (
        pod.get("ephemeralContainers") or [])
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name} privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name} allowPrivilegeEscalation")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name} does not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name} adds capabilities")
        if not (sc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and
                                                   sc.get("runAsNonRoot") is not False)):
            out.append(f"{name} runAsNonRoot")
        if sc.get("runAsUser") == 0 or psc.get("runAsUser") == 0:
            out.append(f"{name} runs as uid 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name} seccomp {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{name} hostPort")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name} procMount")
    return out


def test_every_pod_meets_restricted(prod: offline.Render) -> None:
    ws = workloads(prod)
    # One per service, a per-provider service (the cost agent) once per provider (aws, gcp, azure);
    # the Pushgateway only with drills, on a Kubernetes stack with a backup store (prod sets one).
    assert model_of("prod").settings.backups.store is not None
    services = list(default_catalog().services.values())
    assert any(s.push_gateway for s in services) and "pushgateway" in ws
    assert len(ws) == len(services) + (3 - 1) * sum(s.per_cloud_provider for s in services)
    for name, w in ws.items():
        pod = w["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [], name
        # No API token but for the one service that reads the API (tests/test_cluster_reads.py).
        assert pod["automountServiceAccountToken"] is (name == "kube-state-metrics"), name
    # The checker itself rejects what restricted forbids.
    pod = copy.deepcopy(ws["portal"]["spec"]["template"]["spec"])
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["containers"][0]["ports"][0]["hostPort"] = 3001
    pod["hostNetwork"] = True
    assert len(restricted_violations(pod)) == 3


def test_uid_and_read_only_root_follow_the_catalog(prod: offline.Render) -> None:
    ws = workloads(prod)
    uid = {n: w["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for n, w in ws.items()}
    assert (uid["postgres"], uid["redis"], uid["clickhouse"], uid["grafana"], uid["prometheus"]) == (
        999, 999, 101, 472, 65534)
    writable = {n for n, w in ws.items() if not container(w)["securityContext"]["readOnlyRootFilesystem"]}
    assert writable == {"clickhouse"}  # the catalog's one exception, with its reason
    pg = container(ws["postgres"])
    mounts = {m["mountPath"]: m["name"] for m in pg["volumeMounts"]}
    volumes = {v["name"]: v for v in ws["postgres"]["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/run/postgresql"]] and "emptyDir" in volumes[mounts["/tmp"]]
    assert mounts["/var/lib/postgresql/data"] == "data"  # the claim
    env = {e["name"]: e.get("value") for e in pg["env"]}
    assert env["PGDATA"].startswith("/var/lib/postgresql/data/")  # below the mount, not lost+found's level


# ---- workloads ---------------------------------------------------------------------

def test_statefulsets_with_retained_claims_and_protection(prod: offline.Render) -> None:
    sts = named(prod, "StatefulSet")
    assert set(sts) == STATEFUL
    protected = {r.inputs["metadata"]["name"] for r in prod.of_type("kubernetes:apps/v1:StatefulSet") if r.protect}
    assert protected == STATEFUL
    for m in sts.values():
        assert m["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
        assert m["spec"]["replicas"] == 1
    sizes = {n: m["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
             for n, m in sts.items()}
    # Pulumi.prod.yaml's sizes.
    assert sizes == {"postgres": "20Gi", "clickhouse": "50Gi", "redis": "2Gi", "qdrant": "10Gi",
                     "prometheus": "20Gi", "grafana": "2Gi"}
    assert all("storageClassName" not in m["spec"]["volumeClaimTemplates"][0]["spec"] for m in sts.values())


def test_storage_class_and_default_sizes_from_config() -> None:
    r = render("prod", "kubernetes.storageClass=fast-ssd", "kubernetes.storage={}")
    sts = named(r, "StatefulSet")
    claims = {n: m["spec"]["volumeClaimTemplates"][0]["spec"] for n, m in sts.items()}
    assert {c["storageClassName"] for c in claims.values()} == {"fast-ssd"}
    # The catalog's sizes (postgres 2 GiB, redis 0.5 GiB).
    assert claims["postgres"]["resources"]["requests"]["storage"] == "2Gi"
    assert claims["redis"]["resources"]["requests"]["storage"] == "512Mi"


def test_config_sizes_become_valid_quantities() -> None:
    r = render("prod", "kubernetes.storage={redis: 1GB, qdrant: 3Gi}")
    sts = named(r, "StatefulSet")
    sizes = {n: sts[n]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
             for n in ("redis", "qdrant")}
    assert sizes == {"redis": "954Mi", "qdrant": "3Gi"}  # 1 GB = 10^9 bytes; "1GB" is no Kubernetes quantity
    kubernetes_validate.validate(sts["redis"], K8S_VERSION, strict=True)


def test_dependencies_follow_the_waits_and_never_point_to_a_later_tier(prod: offline.Render) -> None:
    by_urn = {r.urn: r for r in prod.resources}
    tier_of = {r.urn: r.name for r in prod.of_type("optiinfra:platform:Tier")}
    kinds = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
    workload = {r.name: r for r in prod.resources if r.type in kinds}
    # The catalog's waits, written out: the collector waits for its three stores.
    deps = {by_urn[d].name for d in workload["data-collector"].dependencies
            if by_urn[d].type in (*kinds, "kubernetes:batch/v1:Job")}
    # A store with clients is waited for through its rotation Job (which waits for the store).
    assert deps == {"postgres-credentials", "clickhouse", "redis-credentials"}
    for res in prod.resources:
        if res.parent not in tier_of:
            continue
        own = TIERS.index(tier_of[res.parent])
        for d in res.dependencies:
            dep = by_urn[d]
            if dep.parent in tier_of:  # a resource never needs one of a later tier (that would deadlock)
                assert TIERS.index(tier_of[dep.parent]) <= own, (res.short, dep.short)
        # Each object needs a handful of things plus its waits and the generated credentials it
        # reads (its credentials hash), never a whole tier: registration stays linear.
        generated = [d for d in res.dependencies if by_urn[d].type == "random:index/randomPassword:RandomPassword"]
        assert len(res.dependencies) - len(generated) <= 8, (res.short, len(res.dependencies))
        assert len(generated) <= len(default_catalog().credentials), res.short


def test_deployments_for_the_rest_and_one_cost_agent_per_provider(prod: offline.Render) -> None:
    deps = named(prod, "Deployment")
    assert set(deps) == {
        "flower", "postgres-exporter", "redis-exporter", "clickhouse-exporter", "orchestrator",
        "data-collector", "data-collector-worker", "data-collector-beat", "performance-agent",
        "resource-agent", "application-agent", "portal", "cost-agent-aws", "cost-agent-gcp", "cost-agent-azure",
        "alertmanager", "blackbox-exporter", "oauth2-proxy", "kube-state-metrics",
        "pushgateway"}  # (with drills: prod's backups.store)
    for provider in ("aws", "gcp", "azure"):
        d = deps[f"cost-agent-{provider}"]
        env = {e["name"]: e.get("value") for e in container(d)["env"]}
        assert env["CLOUD_PROVIDER"] == provider
        assert d["spec"]["selector"]["matchLabels"]["optiinfra.io/cloud-provider"] == provider
    # One Service for the cost agent, selecting every instance.
    svc = named(prod, "Service")["cost-agent"]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "cost-agent"}


def test_one_clusterip_service_per_service_with_ports(prod: offline.Render) -> None:
    # Plus a headless governing Service per StatefulSet (test_workloads_roll_spread_and_pull).
    services = {n: s for n, s in named(prod, "Service").items() if s["spec"].get("clusterIP") != "None"}
    assert {n: {p["port"] for p in s["spec"]["ports"]} for n, s in services.items()} == SEED_PORTS
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(prod).values()]
    for name, s in services.items():
        assert s["spec"]["type"] == "ClusterIP"
        assert s["metadata"]["namespace"] == f"optiinfra-{default_catalog().services[name].tier.value}"
        selected = [p for p in pods if all(p.get(k) == v for k, v in s["spec"]["selector"].items())]
        assert selected and all(p["app.kubernetes.io/name"] == name for p in selected)


def test_probes_from_the_health_model(prod: offline.Render) -> None:
    ws = workloads(prod)
    for name, w in ws.items():
        c = container(w)
        assert c.get("readinessProbe") and c.get("livenessProbe"), name
        if name not in ("data-collector-worker", "data-collector-beat"):  # no Service, one check
            assert c["readinessProbe"] != c["livenessProbe"], name
    # Slow starters: initdb, ClickHouse on a fresh volume, Grafana's migrations, Qdrant,
    # Redis replaying its AOF, Prometheus replaying its WAL.
    assert {n for n, w in ws.items() if container(w).get("startupProbe")} == {
        "postgres", "clickhouse", "grafana", "qdrant", "redis", "prometheus"}
    # Ready: accepting connections, and this start's roles applied (the wrapper's marker).
    ready = container(ws["postgres"])["readinessProbe"]["exec"]["command"]
    assert ready[:2] == ["sh", "-c"] and "pg_isready" in ready[2] and PG_APPLIED in ready[2]
    assert container(ws["postgres"])["livenessProbe"]["tcpSocket"] == {"port": 5432}
    assert container(ws["qdrant"])["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 6333}
    assert container(ws["qdrant"])["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 6333}
    assert container(ws["prometheus"])["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": 9090}
    assert container(ws["prometheus"])["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": 9090}
    assert container(ws["prometheus"])["startupProbe"]["httpGet"] == {"path": "/-/ready", "port": 9090}
    assert container(ws["clickhouse"])["startupProbe"]["httpGet"] == {"path": "/ping", "port": 8123}
    # Exporters on a cheap endpoint, never a full scrape; an httpGet probe needs no binary.
    for exporter in ("postgres-exporter", "redis-exporter", "clickhouse-exporter"):
        assert container(ws[exporter])["readinessProbe"]["httpGet"]["path"] != "/metrics", exporter
    assert container(ws["redis-exporter"])["readinessProbe"]["httpGet"]["path"] == "/health"
    # The worker pings its own node, so one hung worker restarts alone.
    ping = container(ws["data-collector-worker"])["livenessProbe"]["exec"]["command"]
    assert ping[:2] == ["sh", "-c"] and '-d "celery@$HOSTNAME"' in ping[2]


def test_requests_and_limits_everywhere(prod: offline.Render) -> None:
    for name, w in workloads(prod).items():
        res = container(w)["resources"]
        assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory", "ephemeral-storage"}, name
    # Pulumi.prod.yaml: clickhouse memory 2Gi, cpu 1; a database runs in Guaranteed QoS (limits
    # equal requests), in the canonical form the provider stores (so a second preview is empty).
    ch = container(workloads(prod)["clickhouse"])["resources"]
    assert ch == {"requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "320Mi"},
                  "limits": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "640Mi"}}
    # Everything else keeps headroom: twice the memory, four times the CPU.
    pm = container(workloads(prod)["prometheus"])["resources"]
    assert (pm["requests"]["memory"], pm["limits"]["memory"]) == ("512Mi", "1Gi")
    # emptyDirs bounded; the request covers them and the logs: three 64Mi paths (the socket,
    # /tmp and, archiving its WAL with prod's store, pgBackRest's spool) + 64Mi logs = 256Mi.
    pg = workloads(prod)["postgres"]["spec"]["template"]["spec"]
    bounded = [v["emptyDir"]["sizeLimit"] for v in pg["volumes"] if "emptyDir" in v and v["name"] != "shm"]
    assert bounded == ["64Mi"] * 3
    assert container(workloads(prod)["postgres"])["resources"]["requests"]["ephemeral-storage"] == "256Mi"
    assert container(workloads(prod)["data-collector-worker"])["resources"]["requests"]["cpu"] == "250m"
    # The catalog's figures where the stack sets none (the seed's ~50MB per agent).
    assert container(workloads(prod)["resource-agent"])["resources"]["requests"]["memory"] == "50Mi"


def test_databases_guaranteed_with_their_memory_inside_the_limit(prod: offline.Render) -> None:
    ws = workloads(prod)
    for name in ("postgres", "clickhouse", "redis", "qdrant"):
        res = container(ws[name])["resources"]
        assert all(res["requests"][k] == res["limits"][k] for k in ("cpu", "memory")), name  # Guaranteed QoS
    # Pulumi.prod.yaml: postgres 512Mi -> shared_buffers a quarter; connections from its clients'
    # pools with their rollout's surge (tests/test_sizing.py works them out: 78) + 6 of its own.
    # (after the archive's start prelude, prod archiving its WAL to its store: tests/test_pitr_stack.py,
    # and the wrapper that applies the current password: tests/test_postgres_rotation.py; the
    # archive's `-c` settings come before the sized ones)
    args = container(ws["postgres"])["args"]
    assert args[:2] == ["sh", "-c"] and args[3:6] == ["sh", "sh", "-c"] and args[7:9] == ["sh", "postgres"]
    assert "archive_mode=on" in args[9:]
    assert args[-4:] == ["-c", "shared_buffers=128MB", "-c", "max_connections=84"]
    # clickhouse 2Gi -> the server caps itself at 80% (bytes).
    assert f"--max_server_memory_usage={int(2048 * 0.8 * 2**20)}" in container(ws["clickhouse"])["args"]
    # redis: the catalog's declared 256 MiB (Guaranteed) -> maxmemory 45% with noeviction (a
    # Celery broker never drops tasks).
    redis = container(ws["redis"])["args"]
    script = redis[2].replace("$$", "$")  # Kubernetes' $$ escape (the script holds $( ))
    assert "--maxmemory-policy noeviction" in script and '"$@"' in script
    declared = default_catalog().services["redis"].resources.memory_mib
    assert redis[3:] == ["redis-server", "--maxmemory", f"{int(declared * 0.45)}mb"]
    bigger = container(workloads(render("prod", "services.redis.memory=400Mi"))["redis"])["args"]
    assert bigger[-2:] == ["--maxmemory", "180mb"]  # 400 x 0.45
    # Prometheus keeps 80% of its 20Gi claim (Pulumi.prod.yaml kubernetes.storage.prometheus).
    assert "--storage.tsdb.retention.size=16384MB" in container(ws["prometheus"])["args"]


def test_secrets_as_files_where_the_catalog_declares_it(prod: offline.Render) -> None:
    ws = workloads(prod)
    catalog = default_catalog().services

    def env(name: str) -> dict[str, Any]:
        return {e["name"]: e for e in container(ws[name]).get("env") or []}

    def files(name: str) -> list[dict[str, Any]]:
        spec = ws[name]["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        return [vols[m["name"]] for m in container(ws[name]).get("volumeMounts") or []
                if m["mountPath"] == "/run/secrets/optiinfra" and m.get("readOnly")]

    # Redis reads its users' passwords from the mounted files; no password variable is set for
    # the server on Kubernetes (REDISCLI_AUTH stays for the health check's redis-cli).
    redis = catalog["redis"]
    assert not {k for k, v in redis.env if isinstance(v, Secret) and k != "REDISCLI_AUTH"} & set(env("redis"))
    script = container(ws["redis"])["args"][2].replace("$$", "$")
    creds = sorted({v.credential for _, v in redis.env if isinstance(v, Secret)})
    assert len(creds) > 2
    assert all(f"$(cat /run/secrets/optiinfra/{c} 2>/dev/null)" in script for c in creds)
    assert files("redis")[0]["secret"] == {"secretName": "credentials", "defaultMode": 0o440,
                                           "items": [{"key": c, "path": c} for c in
                                                     dict.fromkeys(f.credential for f in redis.secret_files)]}
    # The postgres exporter: address and user in the clear, the password from a file; no DSN.
    pe = env("postgres-exporter")
    assert "DATA_SOURCE_NAME" not in pe
    assert pe["DATA_SOURCE_PASS_FILE"]["value"] == "/run/secrets/optiinfra/postgres-monitor"
    assert pe["DATA_SOURCE_USER"]["value"] == "optiinfra_monitor"  # the read-only role, not the owner
    uri = "postgres.optiinfra-databases.svc.cluster.local:5432/optiinfra?sslmode=disable"
    assert pe["DATA_SOURCE_URI"]["value"] == uri
    assert files("postgres-exporter")[0]["secret"]["items"] == [{"key": "postgres-monitor", "path": "postgres-monitor"}]
    # PostgreSQL and Grafana read their own password from the file their image's *_FILE names.
    for name, var, credential in (("postgres", "POSTGRES_PASSWORD", "postgres"),
                                  ("grafana", "GF_SECURITY_ADMIN_PASSWORD", "grafana")):
        assert var not in env(name), name
        assert env(name)[f"{var}_FILE" if name == "postgres" else f"{var}__FILE"]["value"] == \
            f"/run/secrets/optiinfra/{credential}"
        assert {"key": credential, "path": credential} in files(name)[0]["secret"]["items"]
        assert not [e for e in env(name).values() if "valueFrom" in e], name  # no secret left in env
    # Every secret still in an environment variable is an exception with the catalog's reason.
    catalog = default_catalog().services
    for name, w in ws.items():
        refs = [e for e in env(name).values() if "valueFrom" in e]
        skips = [v for k, v in (w["metadata"].get("annotations") or {}).items() if k.startswith("checkov.io/skip")]
        svc = catalog[w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]]
        assert bool(refs) == any(s.startswith("CKV_K8S_35=") for s in skips), name
        if refs:
            assert f"CKV_K8S_35=secrets in env: {svc.secret_env_reason}" in skips, name
        # The policy pack reads the same reason from its stamp (rule secrets-as-files).
        assert (w["metadata"].get("annotations") or {}).get("optiinfra.io/secret-env") == (
            svc.secret_env_reason if refs else None), name


def test_a_secret_in_the_environment_needs_the_catalogs_reason() -> None:
    model = model_of("prod")
    orchestrator = model.catalog.services["orchestrator"]
    assert kubernetes.secrets_in_env(model, orchestrator)  # DATABASE_URL embeds the password
    with pytest.raises(ValueError, match="orchestrator: takes a secret from the environment on Kubernetes; "
                                         r"mount it as a file \(catalog SecretFile\)"):
        kubernetes.secrets_in_env(model, dataclasses.replace(orchestrator, secret_env_reason=""))
    assert not kubernetes.secrets_in_env(model, model.catalog.services["postgres"])  # a file, no reason needed

def _rollout(r: offline.Render) -> dict[str, str | None]:
    return {n: (w["spec"]["template"]["metadata"].get("annotations") or {}).get("optiinfra.io/credentials")
            for n, w in workloads(r).items()}


@pytest.mark.parametrize(("key", "readers"), [
    # The superuser's password: administration and backups only, no application reads it.
    ("postgresPassword", {"postgres"}),
    # An application role's: exactly the one service logging in with it (the collector and its
    # worker share a schema, not a credential); PostgreSQL gets it from its rotation Job, live.
    ("postgresOrchestratorPassword", {"orchestrator"}),
    ("postgresDataCollectorWorkerPassword", {"data-collector-worker"}),
    ("postgresMonitorPassword", {"postgres", "postgres-exporter"}),
    # Redis' administrator (health check, backups) and one of its ACL users.
    ("redisPassword", {"redis"}),
    ("redisDataCollectorBeatPassword", {"data-collector-beat"}),
])
def test_a_changed_credential_rolls_exactly_the_pods_that_read_it(key: str, readers: set[str]) -> None:
    """A Secret's change alone restarts no pod; each pod template carries a keyed hash of the
    credentials it reads, so rotating one rolls the service and exactly its consumers."""
    before = _rollout(render("prod", secrets=ALL_SECRETS))
    rotated = "rotated-9876543210abcdef"
    secrets = tuple(s if not s.startswith(f"{key}=") else f"{key}={rotated}" for s in ALL_SECRETS)
    assert secrets != ALL_SECRETS
    after = _rollout(render("prod", secrets=secrets))
    changed = {n for n in before if before[n] != after[n]}
    assert changed == readers
    assert before["portal"] is None  # reads no credential
    assert all(len(v) == 16 for v in after.values() if v)
    # Reveals nothing: neither the value nor an unkeyed digest of it.
    digests = {hashlib.sha256(rotated.encode()).hexdigest()[:16], hashlib.md5(rotated.encode()).hexdigest()[:16]}
    assert not any(rotated in str(v) or v in digests for v in after.values())
    assert _rollout(render("prod", secrets=ALL_SECRETS)) == before  # stable: no roll without a change


def test_args_are_the_catalogs_command(prod: offline.Render) -> None:
    ws = workloads(prod)
    # The catalog's command is the image's CMD, so Kubernetes `args` (the entrypoint stays).
    assert container(ws["prometheus"])["args"][0] == "--config.file=/etc/prometheus/prometheus.yml"
    assert "command" not in container(ws["prometheus"])
    assert container(ws["clickhouse-exporter"])["args"] == [
        "-scrape_uri=http://clickhouse.optiinfra-databases.svc.cluster.local:8123/"]
    assert kubernetes.literal("echo $(date)") == "echo $$(date)"
    assert kubernetes.literal('exec redis-server "$REDIS_PASSWORD"') == 'exec redis-server "$REDIS_PASSWORD"'


# ---- credentials ------------------------------------------------------------------

def test_no_secret_value_in_any_workload_and_every_reference_resolves() -> None:
    r = render("prod", secrets=ALL_SECRETS)
    supplied = {s.split("=", 1)[1] for s in ALL_SECRETS}
    # Each reaches the stack (alone or inside a URL/DSN), so the scan below has something to find.
    assert all(any(v in seen for seen in r.secret_values) for v in supplied)
    # Every credential supplied: nothing generated (no random provider needed).
    assert not r.of_type("random:index/randomPassword:RandomPassword")
    keys = {m["metadata"]["namespace"]: set(m["stringData"]) for m in of_kind(r, "Secret")}
    for res in r.resources:
        if res.type in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet"):
            text = json.dumps(res.inputs)
            assert "[secret]" not in text, res.name
            assert not any(v in text for v in r.secret_values | supplied), res.name
    for w in workloads(r).values():
        ns = w["metadata"]["namespace"]
        for e in container(w).get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "credentials" and ref["key"] in keys[ns]
    # Values the catalog marks secret arrive through secretKeyRef, connection URLs included.
    env = {e["name"]: e for e in container(workloads(r)["data-collector"])["env"]}
    # Its own role's URL (one key per role), not the one another consumer logs in with.
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-data-collector-url"
    worker = {e["name"]: e for e in container(workloads(r)["data-collector-worker"])["env"]}
    assert worker["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-data-collector-worker-url"
    assert "value" not in env["CELERY_BROKER_URL"]
    pg = {e["name"]: e for e in container(workloads(r)["postgres"])["env"]}
    assert "POSTGRES_PASSWORD" not in pg  # read from the mounted Secret (test_secrets_as_files_...)
    assert "postgres" in keys["optiinfra-databases"]


def test_no_secret_in_outputs_or_plain_resource_inputs() -> None:
    r = render("prod", secrets=ALL_SECRETS)
    out = json.dumps(r.outputs)
    for res in r.resources:
        if res.type != "kubernetes:core/v1:Secret":
            text = json.dumps(res.inputs)
            assert not any(v in text for v in r.secret_values), res.short
    assert not any(v in out for v in r.secret_values)


# ---- monitoring config -------------------------------------------------------------

def test_prometheus_and_grafana_config_maps_scrape_across_namespaces(prod: offline.Render) -> None:
    cms = {m["metadata"]["name"].rsplit("-", 1)[0]: m for m in of_kind(prod, "ConfigMap")}
    # (and pgBackRest's configuration: PostgreSQL archives its WAL to prod's store, infra/pitr.py)
    assert set(cms) == {"prometheus-config", "grafana-config", "alertmanager-config", "blackbox-exporter-config",
                        "postgres-config"}
    assert set(cms["postgres-config"]["data"]) == {"pgbackrest.conf"}
    prom = yaml.safe_load(cms["prometheus-config"]["data"]["prometheus.yml"])
    discovered = {(n, sd["port"]) for job in prom["scrape_configs"] for sd in job.get("dns_sd_configs", [])
                  for n in sd["names"]}
    assert {("postgres-exporter-headless.optiinfra-monitoring.svc.cluster.local", 9187),
            ("cost-agent-headless.optiinfra-agents.svc.cluster.local", 8001),
            ("grafana-headless.optiinfra-monitoring.svc.cluster.local", 3000)} <= discovered
    grafana = yaml.safe_load(cms["grafana-config"]["data"]["prometheus.yaml"])
    assert grafana["datasources"][0]["url"] == "http://prometheus.optiinfra-monitoring.svc.cluster.local:9090"
    # Mounted where the catalog's ConfigFile says.
    ws = workloads(prod)
    for svc, path in (("prometheus", "/etc/prometheus"), ("grafana", "/etc/grafana/provisioning/datasources")):
        spec = ws[svc]["spec"]["template"]["spec"]
        mount = next(m for m in container(ws[svc])["volumeMounts"] if m["mountPath"] == path)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == cms[f"{svc}-config"]["metadata"]["name"]



def test_prometheus_scrapes_every_pod_of_every_scraped_service() -> None:
    """Through a ClusterIP Service, replicas (and the cost agent's per-provider instances) merge
    into one series and some pods are never scraped: each job must discover the pods themselves
    (a headless Service, one A record per pod) and the Service must select every instance."""
    r = render("prod", "services.performance-agent.replicas=3")
    cm = next(m for m in of_kind(r, "ConfigMap") if m["metadata"]["name"].startswith("prometheus-config"))
    prom = yaml.safe_load(cm["data"]["prometheus.yml"])
    services, ws, catalog = named(r, "Service"), workloads(r), default_catalog().services
    # (the Pushgateway runs only with drills, on a stack with a backup store: prod sets none)
    scraped = {n for n, s in catalog.items() if s.metrics and not s.scraper and not s.push_gateway}
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert scraped <= set(jobs)
    for name in scraped:
        job = jobs[name]
        assert "static_configs" not in job, name  # a Service address merges the pods
        (sd,) = job["dns_sd_configs"]
        metrics = catalog[name].metrics
        assert metrics is not None and sd["type"] == "A" and sd["port"] == catalog[name].port(metrics[0]).container
        (dns,) = sd["names"]
        svc_name, ns = dns.split(".")[:2]
        headless = services[svc_name]
        assert headless["spec"]["clusterIP"] == "None" and headless["metadata"]["namespace"] == ns
        pods = [w for w in ws.values() if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v
                                              for k, v in headless["spec"]["selector"].items())]
        expected = [w for w in ws.values() if w["metadata"]["labels"]["app.kubernetes.io/name"] == name]
        assert pods == expected and expected, name
        assert {c["target_label"]: c["replacement"] for c in job["relabel_configs"]} == {
            "tier": catalog[name].tier.value, "service": name}
    assert sum(w["spec"]["replicas"] for w in ws.values()
               if w["metadata"]["labels"]["app.kubernetes.io/name"] == "cost-agent") == 3  # all discovered
    assert ws["performance-agent"]["spec"]["replicas"] == 3


# ---- NetworkPolicies: reachability equals the edges --------------------------------

Pod = tuple[str, dict[str, str]]  # (namespace, labels)


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    assert not selector.get("matchExpressions")  # not used; the evaluator would need them
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


class Policies:
    """Kubernetes NetworkPolicy semantics over rendered objects (the union of allows of every
    policy that selects a pod for a direction; no such policy: that direction is open)."""

    def __init__(self, nps: list[dict[str, Any]], namespaces: dict[str, dict[str, str]]) -> None:
        self.nps, self.ns_labels = nps, namespaces

    def _peer(self, peer: dict[str, Any], pod: Pod, policy_ns: str) -> bool:
        if "ipBlock" in peer:  # outside addresses (tests/test_reachability.py); pods' are excepted
            return False
        ns, labels = pod
        if "namespaceSelector" in peer:
            ns_ok = _matches(peer["namespaceSelector"], {**self.ns_labels.get(ns, {}),
                                                          "kubernetes.io/metadata.name": ns})
        else:
            ns_ok = ns == policy_ns
        return ns_ok and _matches(peer.get("podSelector"), labels)

    def _allowed(self, direction: str, side: str, subject: Pod, other: Pod, port: int, proto: str) -> bool:
        selecting = [np for np in self.nps if np["metadata"]["namespace"] == subject[0]
                     and direction.capitalize() in np["spec"]["policyTypes"]
                     and _matches(np["spec"]["podSelector"], subject[1])]
        if not selecting:
            return True
        for np in selecting:
            for rule in np["spec"].get(direction) or []:
                peers = rule.get(side)
                if peers and not any(self._peer(p, other, np["metadata"]["namespace"]) for p in peers):
                    continue
                ports = rule.get("ports")
                if not ports or any(p["port"] == port and p.get("protocol", "TCP") == proto for p in ports):
                    return True
        return False

    def allows(self, src: Pod, dst: Pod, port: int, proto: str = "TCP") -> bool:
        return (self._allowed("ingress", "from", dst, src, port, proto)
                and self._allowed("egress", "to", src, dst, port, proto))


def _policies(r: offline.Render) -> Policies:
    namespaces = {n: m["metadata"].get("labels") or {} for n, m in named(r, "Namespace").items()}
    return Policies(of_kind(r, "NetworkPolicy"), namespaces)


def _pods(r: offline.Render) -> dict[str, list[Pod]]:
    """Every pod the stack runs, by its name label: the workloads' and the backup jobs'."""
    pods: dict[str, list[Pod]] = {}
    templates = [(w["metadata"]["namespace"], w["spec"]["template"]) for w in workloads(r).values()]
    templates += [(j["metadata"]["namespace"], j["spec"]["jobTemplate"]["spec"]["template"])
                  for j in of_kind(r, "CronJob")]
    for ns, template in templates:
        labels = template["metadata"]["labels"]
        pods.setdefault(labels["app.kubernetes.io/name"], []).append((ns, labels))
    return pods


def reachability(r: offline.Render) -> set[tuple[str, str, int]]:
    """(source, target, port) the rendered policies allow, over every pair and declared port."""
    pods, policies = _pods(r), _policies(r)
    ports = {n: [(p["containerPort"], p["protocol"]) for p in container(w).get("ports") or []]
             for n, w in ((w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"], w)
                          for w in workloads(r).values())}
    allowed = set()
    for src, src_pods in pods.items():
        for dst, dst_pods in pods.items():
            if src == dst:
                continue
            for port, proto in ports.get(dst, []):  # a backup job has no ports
                if all(policies.allows(s, d, port, proto) for s in src_pods for d in dst_pods):
                    allowed.add((src, dst, port))
                else:  # all instances alike: never some but not all
                    assert not any(policies.allows(s, d, port, proto) for s in src_pods for d in dst_pods)
    return allowed


def expected_edges(model: Resolved) -> set[tuple[str, str, int]]:
    # (the drill jobs' pushes to the Pushgateway: prod sets a backup store)
    return {(e.source, e.target, model.services[e.target].service.port(e.port).container)
            for e in [*model.edges, *model.backup_edges(), *model.drill_edges()] if e.port}


@pytest.mark.parametrize("sets", [
    (),
    # An edge added by config, and one inside the egress-isolated databases tier.
    ("services.portal.dependsOn=[redis]", "services.postgres.dependsOn=[redis]"),
], ids=["prod", "extra-edges"])
def test_network_policy_reachability_equals_the_edges(sets: tuple[str, ...]) -> None:
    r = render("prod", *sets)
    assert reachability(r) == expected_edges(model_of("prod", *sets))


def test_network_policy_reachability_examples(prod: offline.Render) -> None:
    allowed = reachability(prod)
    # Written out from the catalog by hand: a few that must and must not be reachable.
    assert ("data-collector", "clickhouse", 9000) in allowed
    assert ("prometheus", "cost-agent", 8001) in allowed
    assert ("application-agent", "qdrant", 6333) in allowed
    # Grafana trusts the sign-in proxy's header: only the proxy (and the scraper) reach it; the
    # portal embeds it through its public URL, as the browser does.
    assert ("oauth2-proxy", "grafana", 3000) in allowed
    assert ("portal", "grafana", 3000) not in allowed
    assert ("portal", "postgres", 5432) not in allowed
    assert ("cost-agent", "qdrant", 6333) not in allowed  # only the application agent uses Qdrant
    assert ("data-collector", "clickhouse", 8123) not in allowed  # the edge's port only
    assert ("orchestrator", "cost-agent", 8001) not in allowed  # agents call the orchestrator, not back
    # A backup job reaches its own service's port, and nothing else.
    assert ("postgres-backup", "postgres", 5432) in allowed
    assert ("redis-backup", "redis", 6379) in allowed
    assert ("clickhouse-backup", "clickhouse", 9000) in allowed
    assert ("clickhouse-backup", "clickhouse", 8123) not in allowed
    assert not {(s, d) for s, d, _ in allowed if s == "postgres-backup" and d != "postgres"}
    assert not {(s, d) for s, d, _ in allowed if d.endswith("-backup")}  # nothing dials a job
    assert "grafana-backup" not in {s for s, _, _ in allowed}  # it reads the volume, dials nothing
    extra = render("prod", "services.portal.dependsOn=[redis]")
    assert ("portal", "redis", 6379) in reachability(extra)


def test_outside_the_cluster_only_public_services_via_the_ingress_controller(prod: offline.Render) -> None:
    pods, policies = _pods(prod), _policies(prod)
    controller: Pod = ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    intruder: Pod = ("default", {"app.kubernetes.io/name": "portal"})  # same labels, wrong namespace
    reachable_from_controller = set()
    for name, ps in pods.items():
        ports = SEED_PORTS.get(name, set())
        for port in ports:
            assert not policies.allows(intruder, ps[0], port), name
            if policies.allows(controller, ps[0], port):
                reachable_from_controller.add((name, port))
    # Grafana's Ingress routes to the sign-in proxy; the portal's asks it first (external auth).
    assert reachable_from_controller == {("portal", 3000), ("oauth2-proxy", 4180)}


def test_default_deny_everywhere_and_dns_egress_allowed(prod: offline.Render) -> None:
    nps = of_kind(prod, "NetworkPolicy")
    deny = {m["metadata"]["namespace"]: m for m in nps if m["metadata"]["name"] == "default-deny"}
    assert set(deny) == {f"optiinfra-{t}" for t in TIERS}
    for m in deny.values():
        assert m["spec"]["podSelector"] == {} and m["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert not m["spec"].get("ingress") and not m["spec"].get("egress")
    policies = _policies(prod)
    dns: Pod = ("kube-system", {"k8s-app": "kube-dns"})
    elsewhere: Pod = ("kube-system", {"k8s-app": "metrics-server"})
    for name, ps in _pods(prod).items():
        for pod in ps:
            assert policies.allows(pod, dns, 53, "UDP") and policies.allows(pod, dns, 53, "TCP"), name
    # No tier has egress beyond its edges and DNS (outside addresses: tests/test_reachability.py).
    for name, ps in _pods(prod).items():
        assert not policies.allows(ps[0], elsewhere, 443), name


# ---- scale, availability, exposure ------------------------------------------------

def test_replicas_from_config_and_a_pdb_for_each_workload_with_more_than_one(prod: offline.Render) -> None:
    ws = workloads(prod)
    replicas = {n: w["spec"]["replicas"] for n, w in ws.items()}
    # Pulumi.prod.yaml
    assert (replicas["data-collector"], replicas["data-collector-worker"], replicas["performance-agent"],
            replicas["resource-agent"], replicas["application-agent"]) == (2, 3, 2, 2, 2)
    assert replicas["cost-agent-aws"] == replicas["cost-agent-gcp"] == replicas["cost-agent-azure"] == 1
    assert replicas["data-collector-beat"] == 1
    assert ws["data-collector-beat"]["spec"]["strategy"] == {"type": "Recreate"}  # never two schedulers
    pdbs = named(prod, "PodDisruptionBudget")
    assert set(pdbs) == {n for n, r in replicas.items() if r > 1}
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"] == ws[name]["spec"]["selector"]
        assert pdb["metadata"]["namespace"] == ws[name]["metadata"]["namespace"]


def test_workloads_roll_spread_and_pull(prod: offline.Render) -> None:
    ws, services = workloads(prod), named(prod, "Service")
    for name, w in ws.items():
        if w["kind"] == "StatefulSet":  # a headless governing Service that selects its pods
            gov = services[w["spec"]["serviceName"]]
            assert gov["spec"]["clusterIP"] == "None" and gov["spec"]["publishNotReadyAddresses"] is True
            assert gov["spec"]["selector"] == {"app.kubernetes.io/name": name}
            assert gov["metadata"]["namespace"] == w["metadata"]["namespace"]
        elif name in {n for n, svc in default_catalog().services.items() if svc.exclusive}:  # beat, alertmanager
            assert w["spec"]["strategy"] == {"type": "Recreate"}, name
        else:  # singletons too (portal, orchestrator): one extra pod, never one fewer
            assert w["spec"]["strategy"] == {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, name
        spread = w["spec"]["template"]["spec"].get("topologySpreadConstraints")
        if w["spec"]["replicas"] > 1:
            assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        else:
            assert spread is None, name
        assert container(w)["imagePullPolicy"] == "Always"
        assert "imagePullSecrets" not in w["spec"]["template"]["spec"]  # none configured
    pulled = workloads(render("prod", "kubernetes.imagePullSecrets=[ghcr-pull]"))
    own = {n for n, w in pulled.items() if w["spec"]["template"]["spec"].get("imagePullSecrets")}
    assert own == {n for n, w in pulled.items() if container(w)["image"].startswith("ghcr.io/optiinfra/")}
    assert pulled["portal"]["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    # Grafana builds its links from the Ingress host.
    env = {e["name"]: e.get("value") for e in container(ws["grafana"])["env"]}
    assert env["GF_SERVER_ROOT_URL"] == "https://grafana.optiinfra.example.com/"


def test_beat_cannot_scale() -> None:
    with pytest.raises(ConfigError, match="exactly one instance"):
        offline.render("prod", ["services.data-collector-beat.replicas=2"])


def test_only_portal_and_grafana_exposed_through_ingress(prod: offline.Render) -> None:
    ingresses = named(prod, "Ingress")
    assert set(ingresses) == {"portal", "grafana"}
    portal = ingresses["portal"]["spec"]
    assert portal["ingressClassName"] == "nginx"
    assert portal["rules"][0]["host"] == "portal.optiinfra.example.com"
    assert portal["tls"] == [{"hosts": ["portal.optiinfra.example.com"], "secretName": "optiinfra-tls"}]
    backend = portal["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "portal", "port": {"number": 3000}}
    assert ingresses["grafana"]["metadata"]["namespace"] == "optiinfra-monitoring"
    text = json.dumps(manifests(prod))
    assert "hostPort" not in text and "NodePort" not in text and "LoadBalancer" not in text
    assert prod.outputs["urls"] == {"portal": "https://portal.optiinfra.example.com",
                                    "grafana": "https://grafana.optiinfra.example.com"}


def test_public_service_needs_an_ingress_host() -> None:
    with pytest.raises(ConfigError, match=r"kubernetes\.ingress\.hosts\.flower"):
        offline.render("prod", ["public=[portal, grafana, flower]"])


@pytest.mark.parametrize(("sets", "key"), [
    (["cloudProviders=[aws, aws]"], "cloudProviders"),
    (["cloudProviders=[]"], "cloudProviders"),
    (["kubernetes.ingress.hosts.portal=Not A Host"], "kubernetes.ingress.hosts.portal"),
])
def test_bad_kubernetes_settings(sets: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        offline.render("prod", sets)
    assert "Fix:" in str(err.value)


def test_provider_from_settings() -> None:
    r = render("prod", "kubernetes.renderYamlToDirectory=out/prod-yaml", "kubernetes.context=prod-cluster",
               secrets=ALL_SECRETS)
    (provider,) = r.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == "out/prod-yaml"
    assert provider.inputs["context"] == "prod-cluster"
    assert not r.of_type("random:index/randomPassword:RandomPassword")


def test_rendering_twice_gives_identical_manifests(prod: offline.Render) -> None:
    again = offline.render("prod")
    assert manifests(again) == manifests(prod)


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def test_every_object_is_labelled_and_in_a_tier(prod: offline.Render) -> None:
    tiers = {r.urn for r in prod.of_type("optiinfra:platform:Tier")}
    for res in prod.resources:
        if res.type.startswith("kubernetes:"):
            assert res.parent in tiers, res.short
            assert res.inputs["metadata"]["labels"]["app.kubernetes.io/part-of"] == "optiinfra"
    assert not any(v == "[unknown]" for m in manifests(prod) for v in _walk(m))


# ---- decisions read from the model ------------------------------------------------

def test_the_rollout_is_read_from_the_model_by_the_render_and_by_capacity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Change the model's rollout decision (infra.resolve._rollout) and both the manifests and the
    capacity report move with it: neither restates the decision."""
    from infra import capacity
    from infra import resolve as resolve_module
    from infra.model import DisruptionBudget, Rollout

    decide = resolve_module._rollout

    def changed(settings: Any, svc: Any, replicas: int) -> Rollout:
        if svc.name == "orchestrator":
            return Rollout("RollingUpdate", surge=3, unavailable=0, budget=DisruptionBudget(min_available=1))
        if svc.name == "portal":
            return Rollout("Recreate")
        return decide(settings, svc, replicas) if svc.stateful else Rollout("Recreate")

    monkeypatch.setattr(resolve_module, "_rollout", changed)
    r = offline.render("prod")
    wl = workloads(r)
    assert wl["orchestrator"]["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 0}}
    assert wl["portal"]["spec"]["strategy"] == {"type": "Recreate"}
    pdbs = named(r, "PodDisruptionBudget")
    assert pdbs["orchestrator"]["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {
        "app.kubernetes.io/name": "orchestrator"}}}
    fp = capacity.footprint(r.model, "prod")
    assert fp.surge is not None and (fp.surge.name, fp.surge.instances) == ("orchestrator", 3)


# ---- tier order ------------------------------------------------------------------

SEED_ORDER = ["databases", "monitoring", "core", "agents", "frontend"]
TIER = "optiinfra:platform:Tier"
WORKLOAD_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")


def test_tiers_start_in_the_seeds_order(prod: offline.Render) -> None:
    """Each tier waits for every workload of the tier before it (the seed's startup order,
    written out here), and nothing waits for a later tier."""
    tiers = {t.name: t for t in prod.of_type(TIER)}
    assert sorted(tiers) == sorted(SEED_ORDER)
    work = [w for t in WORKLOAD_TYPES for w in prod.of_type(t)]
    for before, after in itertools.pairwise(SEED_ORDER):
        earlier = {w.urn for w in work if w.parent == tiers[before].urn}
        assert earlier and earlier <= set(tiers[after].dependencies), f"{after} must wait for {before}"
        later = {w.urn for w in work if w.parent == tiers[after].urn}
        assert not later & set(tiers[before].dependencies), f"{before} must not wait for {after}"
    tier_of = {res.urn: res.parent for res in prod.resources}
    rank = {tiers[name].urn: i for i, name in enumerate(SEED_ORDER)}
    for res in prod.resources:
        if res.parent in rank:
            for d in res.dependencies:
                assert rank.get(tier_of.get(d, ""), -1) <= rank[res.parent], f"{res.name} waits for a later tier"
