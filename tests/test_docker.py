"""The dev stack on Docker, as the offline renderer sees it (Pulumi mocks, no engine)."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from infra import offline
from infra.catalog import default_catalog

from .conftest import render

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
TIER = "optiinfra:platform:Tier"

# The seed's 19 container names.
SEED_CONTAINERS = {
    "optiinfra-postgres", "optiinfra-clickhouse", "optiinfra-redis", "optiinfra-qdrant",
    "optiinfra-prometheus", "optiinfra-grafana", "optiinfra-flower", "optiinfra-postgres-exporter",
    "optiinfra-redis-exporter", "optiinfra-clickhouse-exporter", "optiinfra-orchestrator",
    "optiinfra-data-collector", "optiinfra-data-collector-worker", "optiinfra-data-collector-beat",
    "optiinfra-cost-agent", "optiinfra-performance-agent", "optiinfra-resource-agent",
    "optiinfra-application-agent", "optiinfra-portal",
}
# Beside them: where alerts go (issue 14), which the seed does not have.
CONTAINERS = SEED_CONTAINERS | {"optiinfra-alertmanager", "optiinfra-blackbox-exporter"}
SEED_ORDER = ["databases", "monitoring", "core", "agents", "frontend"]


def one_shot(c: offline.Resource) -> bool:
    """A container `pulumi up` runs to its exit (a store's credential files or rotation)."""
    return c.inputs.get("mustRun") is False


def containers(r: offline.Render) -> dict[str, offline.Resource]:
    """The long-running containers, one per service, by name."""
    return {c.inputs["name"]: c for c in r.of_type(CONTAINER) if not one_shot(c)}


# The stores whose clients log in as themselves: each has a credentials volume and two one-shot containers.
GRANTING = ("postgres", "redis")


def networks_of(c: offline.Resource) -> set[str]:
    return {n["name"] for n in c.inputs["networksAdvanced"]}


def test_every_service_rendered_once(dev: offline.Render) -> None:
    names = [c.inputs["name"] for c in dev.of_type(CONTAINER) if not one_shot(c)]
    assert sorted(names) == sorted(CONTAINERS)
    assert sorted(c.inputs["name"] for c in dev.of_type(CONTAINER) if one_shot(c)) == sorted(
        f"optiinfra-{s}-{what}" for s in GRANTING for what in ("credential-files", "credentials"))
    # One container per service the catalog declares, none twice; the sign-in proxy and
    # kube-state-metrics run on Kubernetes only.
    assert sorted(names) == sorted(f"optiinfra-{n}" for n, s in default_catalog().services.items()
                                   if not (s.authenticator or s.kubernetes_only))


def test_five_tiers_five_networks_and_every_resource_under_a_tier(dev: offline.Render) -> None:
    tiers = {t.urn: t.name for t in dev.of_type(TIER)}
    assert sorted(tiers.values()) == sorted(SEED_ORDER)
    nets = {n.inputs["name"]: n for n in dev.of_type(NETWORK)}
    assert set(nets) == {f"optiinfra-{t}" for t in SEED_ORDER}
    assert nets["optiinfra-databases"].inputs.get("internal") is True
    assert not any(n.inputs.get("internal") for name, n in nets.items() if name != "optiinfra-databases")
    for res in dev.resources:
        if res.type != TIER:
            assert res.parent in tiers, f"{res.short} is not parented under a tier"
    # Each container sits in the tier the seed puts it in.
    by_tier: dict[str, set[str]] = {tiers[c.parent]: set() for c in dev.of_type(CONTAINER)}
    for c in dev.of_type(CONTAINER):
        by_tier[tiers[c.parent]].add(c.name)
    # (the stores' one-shot containers sit beside them)
    assert by_tier["databases"] == {"postgres", "clickhouse", "redis", "qdrant", *(
        f"{s}-{what}" for s in GRANTING for what in ("credential-files", "credentials"))}
    assert by_tier["frontend"] == {"portal"}
    assert by_tier["agents"] == {"cost-agent", "performance-agent", "resource-agent", "application-agent"}


# What each container must join: its own tier's network plus the network of the earlier
# tier of every connection it is part of (written out by hand from the catalog's edges).
EXPECTED_NETWORKS = {
    "optiinfra-postgres": {"databases"},
    "optiinfra-qdrant": {"databases"},
    "optiinfra-prometheus": {"monitoring"},
    "optiinfra-grafana": {"monitoring"},
    "optiinfra-flower": {"monitoring", "databases"},
    "optiinfra-postgres-exporter": {"monitoring", "databases"},
    # probed by the blackbox exporter (monitoring), which no scrape reached before
    "optiinfra-orchestrator": {"core", "databases", "monitoring"},
    "optiinfra-data-collector-beat": {"core", "databases"},
    # agents: orchestrator + data collector (core), scraped by Prometheus (monitoring)
    "optiinfra-cost-agent": {"agents", "core", "monitoring"},
    # plus Qdrant (databases)
    "optiinfra-application-agent": {"agents", "core", "monitoring", "databases"},
    # orchestrator + data collector (core), grafana (monitoring)
    "optiinfra-portal": {"frontend", "core", "monitoring"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_NETWORKS))
def test_container_networks_equal_the_derived_set(dev: offline.Render, name: str) -> None:
    got = networks_of(containers(dev)[name])
    assert got == {f"optiinfra-{t}" for t in EXPECTED_NETWORKS[name]}


def test_networks_are_exactly_what_connections_need(dev: offline.Render) -> None:
    """Every connection has a shared network, and every extra network has a connection."""
    from infra.stack import load_stack

    model = load_stack({})
    cs = containers(dev)
    justified: dict[str, set[str]] = {n: {f"optiinfra-{model.services[n].tier.value}"} for n in model.services}
    for e in model.edges:
        a, b = networks_of(cs[f"optiinfra-{e.source}"]), networks_of(cs[f"optiinfra-{e.target}"])
        shared = a & b
        assert shared, f"{e.source} -> {e.target} share no network"
        justified[e.source] |= shared
        justified[e.target] |= shared
    for name, c in cs.items():
        assert networks_of(c) <= justified[name.removeprefix("optiinfra-")], name
    # A database never joins the frontend network.
    for db in ("postgres", "clickhouse", "redis", "qdrant"):
        assert "optiinfra-frontend" not in networks_of(cs[f"optiinfra-{db}"])


def test_startup_order_follows_the_seed(dev: offline.Render) -> None:
    tiers = {t.name: t for t in dev.of_type(TIER)}
    for before, after in itertools.pairwise(SEED_ORDER):
        # Depending on a component means depending on everything in it (the SDK expands
        # the component to its children), so the later tier waits for all of the earlier.
        # The engine registers the later tier, and so its children, only once all of it exists.
        earlier = {c.urn for c in dev.of_type(CONTAINER) if c.parent == tiers[before].urn}
        assert earlier and earlier <= set(tiers[after].dependencies), f"{after} must depend on {before}"
        later = {c.urn for c in dev.of_type(CONTAINER) if c.parent == tiers[after].urn}
        assert not later & set(tiers[before].dependencies), f"{before} must not wait for {after}"
    # Nothing waits for a later tier, and no resource carries a whole tier in its
    # dependencies (that would grow with the square of the services).
    tier_of = {c.urn: c.parent for c in dev.resources}
    rank = {tiers[name].urn: i for i, name in enumerate(SEED_ORDER)}
    for c in dev.of_type(CONTAINER):
        for d in c.dependencies:
            assert rank.get(tier_of.get(d, ""), -1) <= rank[c.parent], f"{c.name} waits for a later tier"


@pytest.mark.parametrize(("service", "waits_for"), [
    ("grafana", {"prometheus"}),
    ("postgres-exporter", {"postgres"}),
    ("data-collector", {"postgres", "clickhouse", "redis"}),
    ("data-collector-beat", {"redis"}),
    ("application-agent", {"orchestrator", "data-collector", "qdrant"}),
    ("portal", {"orchestrator", "data-collector", "grafana"}),
])
def test_service_level_depends_on_and_gating(dev: offline.Render, service: str, waits_for: set[str]) -> None:
    cs = {c.name: c for c in dev.of_type(CONTAINER)}
    # exactly the containers it waits for, no others, and each store's rotation container beside it
    rotations = {f"{s}-credentials" for s in waits_for if s in GRANTING}
    assert {d.split("::")[-1] for d in cs[service].dependencies if f"{CONTAINER}::" in d} == waits_for | rotations
    for target in waits_for:
        assert cs[target].urn in cs[service].dependencies
        # a container others wait for is created with its health check and waited on
        assert cs[target].inputs["wait"] is True
        assert cs[target].inputs["healthcheck"]["tests"]


def test_host_ports_unique_loopback_and_only_for_published_services(dev: offline.Render) -> None:
    published: dict[int, str] = {}
    for c in dev.of_type(CONTAINER):
        for p in c.inputs.get("ports") or []:
            assert p["external"] not in published, f"{p['external']} used twice"
            published[p["external"]] = c.name
            assert p["ip"] == "127.0.0.1"
    # the seed's port table, minus databases and exporters (no host port by default), and Alertmanager's UI
    assert published == {
        9090: "prometheus", 9093: "alertmanager", 3000: "grafana", 5555: "flower", 8080: "orchestrator",
        8005: "data-collector",
        8001: "cost-agent", 8002: "performance-agent", 8003: "resource-agent", 8004: "application-agent",
        3001: "portal",
    }
    portal = containers(dev)["optiinfra-portal"]
    assert portal.inputs["ports"][0]["internal"] == 3000


def test_public_and_published_overrides() -> None:
    r = render("dev", "public=[portal]", "services.postgres.publish=true", "services.grafana.hostPort=3100")
    cs = containers(r)
    assert cs["optiinfra-portal"].inputs["ports"][0]["ip"] == "0.0.0.0"
    assert cs["optiinfra-postgres"].inputs["ports"] == [
        {"external": 5432, "internal": 5432, "ip": "127.0.0.1", "protocol": "tcp"}]
    assert cs["optiinfra-grafana"].inputs["ports"][0]["external"] == 3100
    assert r.outputs["urls"]["grafana"] == "http://localhost:3100"


def test_hardening_on_every_container(dev: offline.Render) -> None:
    for c in dev.of_type(CONTAINER):
        i = c.inputs
        assert i["securityOpts"] == ["no-new-privileges:true"], c.name
        assert i["capabilities"]["drops"] == ["ALL"], c.name
        assert i["memory"] >= i["memoryReservation"] > 0, c.name
        assert float(i["cpus"]) > 0, c.name
        if one_shot(c):  # run once to its exit, recorded with its exit code
            assert i["restart"] == "no" and i["attach"] is True and i.get("readOnly") is True, c.name
        else:
            assert i["restart"] == "on-failure" and i["maxRetryCount"] == 5, c.name
        # No network at all for the files writer, which only writes its volume.
        assert not i.get("privileged") and i.get("networkMode") in (None, "none"), c.name
        assert c.delete_before_replace, f"{c.name}: fixed names need delete-before-replace"


def test_stateful_services_keep_named_protected_volumes(dev: offline.Render) -> None:
    vols = {v.inputs["name"]: v for v in dev.of_type("docker:index/volume:Volume")}
    assert set(vols) == {"optiinfra-postgres-data", "optiinfra-clickhouse-data", "optiinfra-redis-data",
                         "optiinfra-qdrant-storage", "optiinfra-prometheus-data", "optiinfra-grafana-data",
                         "optiinfra-postgres-client-credentials", "optiinfra-redis-client-credentials"}
    assert all(v.protect for v in vols.values())
    mounts = {m["containerPath"]: m["volumeName"] for m in containers(dev)["optiinfra-postgres"].inputs["volumes"]}
    assert mounts == {"/var/lib/postgresql/data": "optiinfra-postgres-data",
                      "/run/secrets/optiinfra": "optiinfra-postgres-client-credentials"}


def test_an_adopted_volume_is_read_and_mounted_never_created() -> None:
    """`services.<name>.volumes.<volume>.existing`: no Volume is registered for it (so no
    update, replace or delete can reach the data); it is read, the container mounts it by
    that name and waits for the read, which fails when the volume is missing."""
    adopted = render("dev", "services.postgres.volumes.data.existing=optiinfra_postgres_data",
                     "services.grafana.volumes.data.existing=optiinfra_grafana_data")
    created = {v.inputs["name"] for v in adopted.of_type("docker:index/volume:Volume")}
    assert "optiinfra-postgres-data" not in created and "optiinfra-grafana-data" not in created
    assert {"optiinfra-redis-data", "optiinfra-clickhouse-data"} <= created
    reads = {r.id: r for r in adopted.reads}
    assert set(reads) == {"optiinfra_postgres_data", "optiinfra_grafana_data"}
    assert all(r.type == "docker:index/volume:Volume" for r in reads.values())
    postgres = containers(adopted)["optiinfra-postgres"]
    mounts = {m["containerPath"]: m["volumeName"] for m in postgres.inputs["volumes"]}
    assert mounts["/var/lib/postgresql/data"] == "optiinfra_postgres_data"
    assert reads["optiinfra_postgres_data"].urn in postgres.dependencies
    # The plan shows the read, as `pulumi preview` shows a read step.
    steps = offline.plan_json(adopted)["steps"]
    assert [s["newState"]["id"] for s in steps if s["op"] == "read"] == sorted(reads)


def test_a_network_routes_out_only_where_its_own_containers_need_it() -> None:
    from infra import stack as infra_stack
    from infra.backends.docker import routes_out
    from infra.model import Tier

    model = infra_stack.model_of("dev", ())
    # dev: the data tier publishes nothing and declares no outside egress; every other tier
    # publishes a UI or API, which Docker forwards only through a network with a gateway.
    assert [t.value for t in Tier if not routes_out(model, t)] == ["databases"]
    # Publishing nothing in a tier (and declaring no outside egress there) cuts its route out.
    quiet = infra_stack.model_of("dev", tuple(f"services.{n}.publish=false" for n in ("portal",)))
    assert not routes_out(quiet, Tier.FRONTEND)
    agents = infra_stack.model_of("dev", tuple(f"services.{n}.publish=false" for n in (
        "cost-agent", "performance-agent", "resource-agent", "application-agent")))
    assert routes_out(agents, Tier.AGENTS)  # the cost agent declares cloud APIs


def test_stores_size_their_memory_from_the_docker_limit(dev: offline.Render) -> None:
    cs = containers(dev)
    declared = {n: default_catalog().services[n].resources for n in ("redis", "postgres", "clickhouse")}
    # Docker caps each store at its declared limit (no QoS classes): redis 256 MiB.
    redis_limit = declared["redis"].memory_limit_mib or 2 * declared["redis"].memory_mib
    assert cs["optiinfra-redis"].inputs["memory"] == redis_limit == 256
    assert cs["optiinfra-redis"].inputs["command"][-2:] == ["--maxmemory", f"{int(redis_limit * 0.45)}mb"]  # 115mb
    assert "--maxmemory-policy noeviction" in cs["optiinfra-redis"].inputs["command"][2]
    command = cs["optiinfra-postgres"].inputs["command"]  # after the password-applying wrapper
    pg_limit = declared["postgres"].memory_limit_mib or 2 * declared["postgres"].memory_mib  # 512
    # max_connections: the clients' pools (tests/test_sizing.py works them out: 23) + 6.
    assert command[:2] == ["sh", "-c"] and command[3:] == [
        "sh", "postgres", "-c", f"shared_buffers={pg_limit // 4}MB", "-c", "max_connections=29"]
    ch_limit = declared["clickhouse"].memory_limit_mib or 2 * declared["clickhouse"].memory_mib  # 1536
    ch = cs["optiinfra-clickhouse"].inputs["command"]
    assert ch[:3] == ["--", "--logger.level=warning", "--logger.count=2"]
    assert f"--max_server_memory_usage={int(ch_limit * 0.8 * 2**20)}" in ch
    # Prometheus: 80% of the catalog's 1 GiB volume.
    assert "--storage.tsdb.retention.size=819MB" in cs["optiinfra-prometheus"].inputs["command"]


def test_health_checks_use_binaries_the_images_have(dev: offline.Render) -> None:
    cs = containers(dev)
    pg = cs["optiinfra-postgres"].inputs["healthcheck"]["tests"]
    assert pg[:3] == ["CMD", "sh", "-c"] and pg[3].startswith("pg_isready ")  # and the wrapper's marker
    # Qdrant's own readiness endpoint, over bash's /dev/tcp (the image has no HTTP client).
    qdrant = cs["optiinfra-qdrant"].inputs["healthcheck"]["tests"]
    assert qdrant[:3] == ["CMD", "bash", "-c"] and "/dev/tcp/127.0.0.1/6333" in qdrant[3]
    assert "GET /readyz" in qdrant[3] and "' 200 '" in qdrant[3]
    redis = cs["optiinfra-redis"].inputs
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["tests"])
    assert "REDISCLI_AUTH=[secret]" in redis["envs"]  # the password reaches redis-cli by env, not argv
    assert "wget" in " ".join(cs["optiinfra-prometheus"].inputs["healthcheck"]["tests"])
    # Docker's check gates dependents: readiness (WAL replayed), as on Kubernetes.
    assert "/-/ready" in " ".join(cs["optiinfra-prometheus"].inputs["healthcheck"]["tests"])
    # A cheap endpoint, not a full scrape; the worker pings its own node.
    assert "/metrics" not in " ".join(cs["optiinfra-clickhouse-exporter"].inputs["healthcheck"]["tests"])
    assert '-d "celery@$HOSTNAME"' in " ".join(cs["optiinfra-data-collector-worker"].inputs["healthcheck"]["tests"])
    # scratch exporters: no in-container check (Prometheus' `up` watches them)
    assert "healthcheck" not in cs["optiinfra-redis-exporter"].inputs


def test_monitoring_files_generated_from_the_catalog(dev: offline.Render) -> None:
    import yaml

    prom = containers(dev)["optiinfra-prometheus"].inputs["uploads"][0]
    assert prom["file"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(prom["content"])
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    # One probe job per service with a port, each asking the prober for the service's health URL.
    probes = {k: v for k, v in targets.items() if k.startswith("probe-")}
    assert probes["probe-orchestrator"] == ["http://orchestrator:8080/health"]
    assert probes["probe-postgres"] == ["postgres:5432"]  # TCP: no HTTP check
    assert "probe-data-collector-beat" not in probes  # no port to reach
    targets = {k: v for k, v in targets.items() if k not in probes}
    assert targets == {
        "blackbox-exporter": ["blackbox-exporter:9115"],
        "prometheus": ["localhost:9090"], "grafana": ["grafana:3000"],
        "postgres-exporter": ["postgres-exporter:9187"], "redis-exporter": ["redis-exporter:9121"],
        "clickhouse-exporter": ["clickhouse-exporter:9116"], "cost-agent": ["cost-agent:8001"],
        "performance-agent": ["performance-agent:8002"], "resource-agent": ["resource-agent:8003"],
        "application-agent": ["application-agent:8004"], "alertmanager": ["alertmanager:9093"],
    }
    graf = containers(dev)["optiinfra-grafana"].inputs["uploads"][0]
    assert graf["file"].startswith("/etc/grafana/provisioning/datasources/")
    assert yaml.safe_load(graf["content"])["datasources"][0]["url"] == "http://prometheus:9090"
    # each exporter gets its DSN as a secret
    assert "DATA_SOURCE_NAME=[secret]" in containers(dev)["optiinfra-postgres-exporter"].inputs["envs"]


def test_connection_urls_built_from_the_catalog_and_secret() -> None:
    pw = "Str0ng-collector-pass"
    r = render("dev", secrets=(f"postgresDataCollectorPassword={pw}",))
    assert "DATABASE_URL=[secret]" in containers(r)["optiinfra-data-collector"].inputs["envs"]
    # The collector logs in as its own role, with its own credential.
    assert f"DATABASE_URL=postgresql://optiinfra_data_collector:{pw}@postgres:5432/optiinfra" in r.secret_values
    # a supplied credential replaces the generated one
    generated = {p.name for p in r.of_type("random:index/randomPassword:RandomPassword")}
    assert "postgres-data-collector-credential" not in generated and "redis-credential" in generated


def _all_text(r: offline.Render) -> str:
    return json.dumps([res.inputs for res in r.resources]) + json.dumps(r.outputs)


def test_no_secret_value_in_plaintext_anywhere() -> None:
    pw = "Pl41ntext-canary-value"
    r = render("dev", secrets=(f"redisPassword={pw}", f"grafanaAdminPassword={pw}x"))
    assert pw in "".join(r.secret_values), "the canary must have reached some secret input"
    text = _all_text(r)
    assert pw not in text
    generated = set(re.findall(r"generated-[a-z-]+-x{24}", " ".join(r.secret_values)))
    assert generated and not any(g in text for g in generated)
    for key in ("urls", "ports", "networks"):
        assert key in r.outputs


def test_two_renders_are_identical() -> None:
    a, b = offline.render("dev"), offline.render("dev")
    assert offline.plan_json(a) == offline.plan_json(b)


def test_stack_outputs(dev: offline.Render) -> None:
    assert dev.outputs["urls"]["portal"] == "http://localhost:3001"
    assert dev.outputs["urls"]["grafana"] == "http://localhost:3000"
    assert dev.outputs["urls"]["data-collector"] == "http://localhost:8005"
    assert dev.outputs["ports"]["portal"] == {"http": 3001}
    assert dev.outputs["networks"]["databases"] == "optiinfra-databases"


def _prod_store() -> str:
    """Pulumi.prod.yaml's `backups.store` as a --set (its key is stood in offline)."""
    import yaml

    from .tools import ROOT
    raw = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]
    return "backups.store=" + json.dumps(raw["optiinfra:backups"]["store"])


@pytest.mark.parametrize("store", ["none", "prod's"])
def test_secure_defaults_mean_the_same_on_docker_and_kubernetes(store: str) -> None:
    """Read-only root with writable paths, the user and the capabilities: the Docker
    container says what the Kubernetes pod says, except where the model states why not.
    Both with the same `backups.store` (it changes PostgreSQL: the archive image, pgBackRest's
    configuration file and spool)."""
    from .test_backup_store_k8s import NO_STORE

    catalog = default_catalog()
    sets = (NO_STORE,) if store == "none" else (_prod_store(),)
    dev, prod = render("dev", *sets), render("prod", *sets)
    pods: dict[str, dict[str, Any]] = {}
    for w in prod.resources:
        if w.type in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet"):
            pods.setdefault(w.inputs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
                            w.inputs["spec"]["template"]["spec"])
    image_user = set()
    for name, c in containers(dev).items():
        service = name.removeprefix("optiinfra-")
        pod = pods[service]
        k8s = pod["containers"][0]
        mounts = {m["mountPath"] for m in k8s.get("volumeMounts", []) if m["name"].startswith("writable-")}
        docker_ro = bool(c.inputs.get("readOnly"))
        if c.inputs.get("uploads"):
            # Docker copies generated files into the container first: a read-only root refuses that.
            assert not docker_ro and k8s["securityContext"]["readOnlyRootFilesystem"], name
        else:
            assert docker_ro == k8s["securityContext"]["readOnlyRootFilesystem"], name
            assert set(c.inputs.get("tmpfs") or {}) == mounts, name
        assert c.inputs["capabilities"].get("adds") == k8s["securityContext"]["capabilities"].get("add"), name
        sc = pod["securityContext"]
        if "user" in c.inputs:
            assert c.inputs["user"] == f"{sc['runAsUser']}:{sc['runAsGroup']}", name
        else:
            image_user.add(service)
    stated = {s.name for s in catalog.services.values() if s.image_user_on_docker}
    assert image_user == stated and len(stated) <= 2, "every container without our uid says why, in the catalog"
    if store != "none":
        # pgBackRest's spool is writable on both: an emptyDir on Kubernetes; on Docker the root
        # itself, which stays writable for the uploaded pgbackrest.conf.
        from infra import pitr
        pg = containers(dev)["optiinfra-postgres"].inputs
        assert pitr.SPOOL in {m["mountPath"] for m in pods["postgres"]["containers"][0]["volumeMounts"]}
        assert pitr.SPOOL in (pg.get("tmpfs") or {}) or not pg.get("readOnly")
