"""Who talks to whom, on which port: the seed's dependency table written out, against the renders.

The other reachability tests compare the render with `model.edges`, which `infra/graph.py`
derives; a bug in that derivation moves both sides at once. Here the expected paths are a
table written by hand from the seed (`services-and-ports.md`, "Service Dependencies") and
from the catalog's own declarations where the seed says less (each service's `depends_on`
and the URL or DSN it dials, `metrics`, `backup`). Nothing expected is computed by the code
under test. The prod render's NetworkPolicies must admit exactly these paths (evaluated
with Kubernetes' semantics by tests/test_reachability.py's evaluator); the dev plan's Docker
networks must give every path a shared network and nothing more than those paths need.
"""

from __future__ import annotations

import pytest

from infra import offline
from infra.catalog import default_catalog

from .conftest import render
from .test_reachability import allowed_edges, rendered

# (client, server, container port), one line per connection.
DEPENDS = {
    # Seed: the data collector -> PostgreSQL (5432), ClickHouse (9000, native), Redis (6379).
    ("data-collector", "postgres", 5432),
    ("data-collector", "clickhouse", 9000),
    ("data-collector", "redis", 6379),
    # Seed: "Celery Worker - Async processing": the worker has the collector's connections;
    # beat only schedules into the Redis broker.
    ("data-collector-worker", "postgres", 5432),
    ("data-collector-worker", "clickhouse", 9000),
    ("data-collector-worker", "redis", 6379),
    ("data-collector-beat", "redis", 6379),
    # Seed: the portal -> orchestrator (8080), data collector (8005), Grafana (3000, on
    # Docker only: DOCKER_ONLY below).
    ("portal", "orchestrator", 8080),
    ("portal", "data-collector", 8005),
    # Seed: Grafana -> Prometheus (9090), visualisation.
    ("grafana", "prometheus", 9090),
    # The orchestrator's database and queue (catalog: DATABASE_URL, REDIS_URL).
    ("orchestrator", "postgres", 5432),
    ("orchestrator", "redis", 6379),
    # Flower watches the Celery broker.
    ("flower", "redis", 6379),
    # Each agent reports to the orchestrator and reads the data collector's API.
    ("cost-agent", "orchestrator", 8080),
    ("cost-agent", "data-collector", 8005),
    ("performance-agent", "orchestrator", 8080),
    ("performance-agent", "data-collector", 8005),
    ("resource-agent", "orchestrator", 8080),
    ("resource-agent", "data-collector", 8005),
    ("application-agent", "orchestrator", 8080),
    ("application-agent", "data-collector", 8005),
    # The application agent's vector store (Qdrant's HTTP API, not gRPC 6334).
    ("application-agent", "qdrant", 6333),
    # The exporters query their database: PostgreSQL's protocol, Redis', and ClickHouse's
    # HTTP interface (-scrape_uri=http://clickhouse:8123/), not its native port 9000.
    ("postgres-exporter", "postgres", 5432),
    ("redis-exporter", "redis", 6379),
    ("clickhouse-exporter", "clickhouse", 8123),
    # Prometheus sends firing alerts to Alertmanager (not a seed service: issue 14).
    ("prometheus", "alertmanager", 9093),
}

# Seed: Prometheus scrapes the three exporters and the four agents (8001-8004); the catalog
# also declares metrics for Grafana and Alertmanager.
SCRAPES = {
    ("prometheus", "postgres-exporter", 9187),
    ("prometheus", "redis-exporter", 9121),
    ("prometheus", "clickhouse-exporter", 9116),
    ("prometheus", "cost-agent", 8001),
    ("prometheus", "performance-agent", 8002),
    ("prometheus", "resource-agent", 8003),
    ("prometheus", "application-agent", 8004),
    ("prometheus", "grafana", 3000),
    ("prometheus", "alertmanager", 9093),
    # The prober's own metrics (issue 24); the probe results are read through it too.
    ("prometheus", "blackbox-exporter", 9115),
}

# The blackbox exporter probes every service's health port (issue 24): the catalog's health
# check (HTTP path or TCP), else its connection port. Grafana is not here: see below.
PROBES = {
    ("blackbox-exporter", "postgres", 5432),
    ("blackbox-exporter", "redis", 6379),
    ("blackbox-exporter", "clickhouse", 8123),
    ("blackbox-exporter", "qdrant", 6333),
    ("blackbox-exporter", "prometheus", 9090),
    ("blackbox-exporter", "alertmanager", 9093),
    ("blackbox-exporter", "postgres-exporter", 9187),
    ("blackbox-exporter", "redis-exporter", 9121),
    ("blackbox-exporter", "clickhouse-exporter", 9116),
    ("blackbox-exporter", "orchestrator", 8080),
    ("blackbox-exporter", "data-collector", 8005),
    ("blackbox-exporter", "flower", 5555),
    ("blackbox-exporter", "cost-agent", 8001),
    ("blackbox-exporter", "performance-agent", 8002),
    ("blackbox-exporter", "resource-agent", 8003),
    ("blackbox-exporter", "application-agent", 8004),
    ("blackbox-exporter", "portal", 3000),
}

# Docker dev only: nothing fronts Grafana, so the prober reaches its web port, and the portal
# links to it directly (seed: portal -> Grafana 3000).
DOCKER_ONLY = {
    ("blackbox-exporter", "grafana", 3000),
    ("portal", "grafana", 3000),
}

# Kubernetes with `sso` only (issue 23): Grafana trusts the identity header of whoever reaches
# its web port, so only the sign-in proxy and Prometheus' scrape reach it: not the portal, not
# the prober (Grafana is watched by its scrape there). The proxy itself is probed and scraped.
SIGN_IN = {
    ("oauth2-proxy", "grafana", 3000),
    ("prometheus", "oauth2-proxy", 9180),
    ("blackbox-exporter", "oauth2-proxy", 4180),
}

# Kubernetes only (issue 24): kube-state-metrics, scraped and probed like every service with
# metrics and a port. Its egress to the API server is no edge (tests/test_reachability.py).
CLUSTER_STATE = {
    ("prometheus", "kube-state-metrics", 8080),
    ("blackbox-exporter", "kube-state-metrics", 8080),
}

# Kubernetes only: the backup CronJobs read their store over the network (the catalog's
# `backup` declarations); Grafana's job mounts the volume and dials nothing.
BACKUPS = {
    ("postgres-backup", "postgres", 5432),
    ("clickhouse-backup", "clickhouse", 9000),
    ("redis-backup", "redis", 6379),
    ("qdrant-backup", "qdrant", 6333),
    # The credential rotation Jobs (issue 27) apply the new passwords in their store.
    ("postgres-credentials", "postgres", 5432),
    ("redis-credentials", "redis", 6379),
}

# Kubernetes with `backups.store` only (issue 25; the committed staging and prod set one): the
# Pushgateway holds the restore drills' results; the drills of PostgreSQL and Redis (the stores
# docs/backups.md drills) push to its port, and it is scraped and probed like every service with
# metrics and a port.
DRILLS = {
    ("postgres-drill", "pushgateway", 9091),
    ("redis-drill", "pushgateway", 9091),
}
PUSHGATEWAY = {
    ("prometheus", "pushgateway", 9091),
    ("blackbox-exporter", "pushgateway", 9091),
}

PATHS = DEPENDS | SCRAPES | PROBES


def test_the_table_names_only_catalog_services_and_their_ports() -> None:
    """A typo in the table would make the comparisons below vacuous."""
    services = default_catalog().services
    for src, dst, port in PATHS | DOCKER_ONLY | SIGN_IN | CLUSTER_STATE | PUSHGATEWAY | DRILLS:
        assert src in services or (src.endswith("-drill") and src.removesuffix("-drill") in services), src
        assert port in {p.container for p in services[dst].ports}, (dst, port)
    # Every service that declares metrics is scraped, and nothing else (the Pushgateway where it runs).
    scraped = {dst for src, dst, _ in SCRAPES | SIGN_IN | CLUSTER_STATE | PUSHGATEWAY if src == "prometheus"}
    assert scraped == {n for n, s in services.items() if s.metrics and not s.scraper}
    # Every service with a port but the prober is probed somewhere (Grafana on Docker only).
    probed = {dst for src, dst, _ in PROBES | DOCKER_ONLY | SIGN_IN | CLUSTER_STATE | PUSHGATEWAY
              if src == "blackbox-exporter"}
    assert probed == {n for n, s in services.items() if s.ports and not s.prober}
    # The drills push to the one push gateway of the catalog, nowhere else.
    assert {dst for _, dst, _ in DRILLS} == {n for n, s in services.items() if s.push_gateway}
    assert "grafana" not in {dst for _, dst, _ in PROBES}


def test_prod_network_policies_admit_exactly_the_seed_paths() -> None:
    allowed = allowed_edges(rendered(render("prod"), jobs=True))
    expected = PATHS | SIGN_IN | CLUSTER_STATE | BACKUPS | PUSHGATEWAY | DRILLS  # prod sets backups.store
    assert allowed - expected == set(), "admitted but not in the seed's table"
    assert expected - allowed == set(), "in the seed's table but not admitted"


CONTAINER = "docker:index/container:Container"


def _networks(r: offline.Render) -> dict[str, set[str]]:
    # (A one-shot container that writes the stores' credential files has no network at all.)
    return {c.name: {n["name"] for n in c.inputs.get("networksAdvanced", [])} for c in r.of_type(CONTAINER)}


@pytest.fixture(scope="module")
def dev_networks() -> dict[str, set[str]]:
    return _networks(render("dev"))


def test_dev_networks_carry_every_seed_path(dev_networks: dict[str, set[str]]) -> None:
    for src, dst, port in PATHS | DOCKER_ONLY:
        assert dev_networks[src] & dev_networks[dst], f"{src} -> {dst}:{port}: no shared network"


def test_dev_networks_join_only_what_a_seed_path_needs(dev_networks: dict[str, set[str]]) -> None:
    """Each container is on its own tier's network, plus, for every path to or from a service
    of an earlier tier, that tier's network (the later end joins the earlier end's network);
    nothing else. Tiers are the catalog's declarations; the paths are the table above."""
    services = default_catalog().services
    tier = {n: s.tier for n, s in services.items()}
    # The stores' one-shot containers (credential rotation, issue 27): the one that writes the
    # credential files has no network; the one that applies them talks to its store only.
    one_shot = {f"{store}-{what}" for store in ("postgres", "redis") for what in ("credential-files", "credentials")}
    assert {n: dev_networks[n] for n in one_shot} == {
        **{f"{store}-credential-files": set() for store in ("postgres", "redis")},
        **{f"{store}-credentials": {"optiinfra-databases"} for store in ("postgres", "redis")}}
    networks = {n: v for n, v in dev_networks.items() if n not in one_shot}
    expected = {n: {f"optiinfra-{tier[n].value}"} for n in networks}
    for src, dst, _ in PATHS | DOCKER_ONLY:
        a, b = sorted((src, dst), key=lambda n: tier[n].order)
        expected[b].add(f"optiinfra-{tier[a].value}")
    assert networks == expected
