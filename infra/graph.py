"""The resolved model of one stack (`Resolved`) and its queries.

What backends and tools read: each service's `Effective` (image, host ports, resources,
replicas, rollout, sizing), the edges (declared, added by config, scraping, probing),
startup order, network membership, reachability. infra/resolve.py builds it from the
catalog and the settings, checking every value on the way. No Pulumi import. Every query is
linear in services + edges.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace

from . import clickhouse_backup, objectstore, pitr, runtime
from .model import (
    Catalog,
    Dsn,
    Outside,
    Port,
    Resources,
    Rollout,
    Service,
    Tier,
    Url,
    Volume,
    backup_job,
    drill_job,
    parse_memory_mib,
)
from .settings import BackupStore, Settings

LOOPBACK = "127.0.0.1"
ANY = "0.0.0.0"


@dataclass(frozen=True)
class Published:
    """A container port published on the host."""

    port: Port
    host: int
    bind: str


class EdgeKind(enum.StrEnum):
    DEPENDS = "depends"
    """A catalog dependency (or one added by `dependsOn`)."""
    SCRAPE = "scrape"
    """The scraper reading a service's metrics."""
    BACKUP = "backup"
    """A service's backup job reading its data (the source is the job, not a service)."""
    PROBE = "probe"
    """The prober checking a service's health endpoint: grants the network path, never an
    order (wait is always False; the prober's tier starts before most of what it probes)."""
    DRILL = "drill"
    """A service's restore drill job pushing its result to the push gateway (the source is the job)."""


@dataclass(frozen=True)
class Edge:
    """`source` connects to `target` on the target's port `port`; `wait` gates startup."""

    source: str
    target: str
    port: str
    wait: bool
    kind: EdgeKind = EdgeKind.DEPENDS


@dataclass(frozen=True)
class Effective:
    """A service as this stack deploys it."""

    service: Service
    image: str
    resources: Resources
    replicas: int
    published: tuple[Published, ...]
    public: bool
    rollout: Rollout
    """How its instances are replaced, and its disruption budget (see `_rollout`)."""
    # Decided once in `resolve` (below, once the graph is known); backends and capacity
    # only read them.
    volume_sizes: tuple[tuple[str, int], ...] = ()
    """MiB of each of its volumes on this target, by volume name (`volume_mib`)."""
    backup_mib: int = 0
    """Size of its backup claim (`backup_claim_mib`); 0: none."""
    backed_up: bool = False
    """This stack backs its data up (`Resolved.backed_up`)."""
    sized_args: tuple[str, ...] = ()
    """The catalog's `sized_command`, rendered from this target's memory limit and volume sizes."""
    runtime_env: tuple[tuple[str, str], ...] = ()
    """Its runtime's memory setting from the limit (GOMEMLIMIT, NODE_OPTIONS; infra/runtime.py)."""
    shm_mib: int = 0
    """A memory-backed /dev/shm of this size (`Service.shm_share` of the limit); 0: none."""
    client_connections: int = 0
    """Connections its clients may open at most: their `Dependency.pool` times their instances
    (and a Celery worker's processes); what PostgreSQL's max_connections is sized from."""
    providers: tuple[str, ...] = ()
    """Cloud providers it runs one instance for (`providers_of`)."""
    existing_volumes: tuple[tuple[str, str], ...] = ()
    """Docker: volumes adopted by name (`services.<name>.volumes.<volume>.existing`)."""
    ingress_host: str | None = None
    """Kubernetes: the Ingress host of a public service (`kubernetes.ingress.hosts`)."""
    external_url: str | None = None
    """Kubernetes: the URL users reach a public service at through its Ingress."""
    pull_secrets: tuple[str, ...] = ()
    """Kubernetes: imagePullSecrets of its pods (OptiInfra's own images only)."""
    via: str | None = None
    """Kubernetes: the sign-in proxy its public Ingress routes to (a UI that trusts the
    proxy's identity header); None: the Ingress routes to the service itself."""
    auth: tuple[tuple[str, str], ...] = ()
    """Kubernetes: the ingress controller's external-auth annotations of its public Ingress
    (a public UI that reads no identity: the controller asks the proxy first); () otherwise."""

    @property
    def name(self) -> str:
        return self.service.name

    def volume_mib(self, volume: str) -> int:
        return dict(self.volume_sizes)[volume]

    def existing_volume(self, volume: str) -> str | None:
        return dict(self.existing_volumes).get(volume)

    @property
    def tier(self) -> Tier:
        return self.service.tier


@dataclass
class Resolved:
    catalog: Catalog
    settings: Settings
    services: dict[str, Effective]
    edges: list[Edge] = field(default_factory=list)

    # ---- graph queries ------------------------------------------------------
    def tiers(self) -> list[Tier]:
        """Tiers with at least one service, in startup order."""
        present = {e.tier for e in self.services.values()}
        return [t for t in Tier if t in present]

    def in_tier(self, tier: Tier) -> list[Effective]:
        return [e for e in self.services.values() if e.tier is tier]

    def out_edges(self, name: str) -> list[Edge]:
        return self._out.get(name, [])

    def in_edges(self, name: str) -> list[Edge]:
        return self._in.get(name, [])

    def waits_for(self, name: str) -> list[str]:
        return [e.target for e in self.out_edges(name) if e.wait]

    def networks_of(self, name: str) -> list[Tier]:
        """Own tier's network plus, for every connection this service is part of, the
        network of the earlier of the two tiers (the seed's startup order).

        For a dependency that is the target's tier: a service joins the networks of the
        tiers it talks to. For Prometheus scraping a later tier, the scraped service joins
        the monitoring network. Either way every network exists before anything that
        joins it starts, so tiers can be created strictly in order.
        """
        own = self.services[name].tier
        tiers = {own}
        for e in self.out_edges(name) + self.in_edges(name):
            a, b = self.services[e.source].tier, self.services[e.target].tier
            tiers.add(a if a.order <= b.order else b)
        return [t for t in Tier if t in tiers]

    def scrape_targets(self) -> list[Effective]:
        return [e for e in self.services.values() if e.service.metrics]

    def scraper(self) -> Effective | None:
        """The service that scrapes the others' metrics (catalog role `scraper`), if enabled."""
        return next((e for e in self.services.values() if e.service.scraper), None)

    def notifier(self) -> Effective | None:
        """The service the scraper sends firing alerts to (catalog role `notifier`), if enabled."""
        return next((e for e in self.services.values() if e.service.notifier), None)

    def outside(self, eff: Effective) -> tuple[Outside, ...]:
        """Where a service may go outside the platform on this stack: its catalog `Outside`
        egress, none for the notifier while no receiver is set (nothing would use it)."""
        receivers = self.settings.alerting.receivers
        if eff.service.notifier and not (receivers.on() or receivers.heartbeat):
            return ()
        api = self.settings.kubernetes.api_server
        hosts = bool(self.tls_hosts())
        store = self.settings.backups.store
        # The store only for a server that writes it on this stack (not when the store's settings
        # rule that out and its dump is uploaded by the backup job instead).
        kept = [o for o in eff.service.outside
                if (hosts or not o.public_hosts) and (not o.backup_store or server_writes_store(eff.service, store))]
        return tuple(replace(o, ports=api.ports) if o.api_server else
                     replace(o, ports=(objectstore.endpoint_host_port(store)[1],)) if o.backup_store and store else o
                     for o in kept)

    def tls_hosts(self) -> list[Effective]:
        """The public services this stack serves over TLS at an Ingress host (Kubernetes with
        `kubernetes.ingress.hosts` and a TLS Secret or cert-manager); [] on Docker."""
        return [e for e in self.services.values()
                if e.ingress_host and e.external_url and e.external_url.startswith("https://")]

    def scrape_edges(self) -> list[Edge]:
        return [e for e in self.edges if e.kind is EdgeKind.SCRAPE]

    def prober(self) -> Effective | None:
        """The service that probes the others' health endpoints (catalog role `prober`), if enabled."""
        return next((e for e in self.services.values() if e.service.prober), None)

    def probe_edges(self) -> list[Edge]:
        return [e for e in self.edges if e.kind is EdgeKind.PROBE]

    def backed_up(self) -> list[Effective]:
        """Services whose data this stack backs up (`backups.enabled`, and a catalog Backup
        that is not declared unnecessary)."""
        if not self.settings.backups.enabled:
            return []
        return [e for e in self.services.values() if e.service.backup is not None and e.service.backup.enabled]

    def backup_edges(self) -> list[Edge]:
        """The backup jobs' connections: job `<service>-backup` dials its service's port.
        Kept apart from `edges` (a job is no service: no network of its own, nothing waits
        for it); the NetworkPolicies admit exactly these as well."""
        return [Edge(backup_job(e.name), e.name, e.service.backup.port, wait=False, kind=EdgeKind.BACKUP)
                for e in self.backed_up() if e.service.backup is not None and e.service.backup.port]

    def push_gateway(self) -> Effective | None:
        """The service the drills push their results to (catalog role `push_gateway`), if enabled."""
        return next((e for e in self.services.values() if e.service.push_gateway), None)

    def drilled(self) -> list[Effective]:
        """Services whose newest off-site backup a scheduled drill restores: a Kubernetes stack
        with `backups.store` and the push gateway, and a catalog Backup with a `drill`."""
        if (self.settings.target != "kubernetes" or self.settings.backups.store is None
                or self.push_gateway() is None):
            return []
        return [e for e in self.backed_up() if e.service.backup is not None and e.service.backup.drill]

    def drill_edges(self) -> list[Edge]:
        """The drill jobs' connections: job `<service>-drill` pushes to the push gateway's
        first port. Kept apart from `edges` like the backup jobs'; the NetworkPolicies admit
        exactly these (infra/backends/kubernetes/drill_jobs.py)."""
        gateway = self.push_gateway()
        if gateway is None or not gateway.service.ports:
            return []
        return [Edge(drill_job(e.name), gateway.name, gateway.service.ports[0].name, wait=False,
                     kind=EdgeKind.DRILL) for e in self.drilled()]

    def gates(self) -> set[str]:
        """Services something waits for: created with their health check, waited on."""
        return {e.target for e in self.edges if e.wait}

    def __post_init__(self) -> None:
        self._out: dict[str, list[Edge]] = {}
        self._in: dict[str, list[Edge]] = {}

    def _index(self) -> None:
        self._out, self._in = {}, {}
        for e in self.edges:
            self._out.setdefault(e.source, []).append(e)
            self._in.setdefault(e.target, []).append(e)


def providers_of(model: Resolved, eff: Effective) -> tuple[str, ...]:
    """Cloud providers a service runs one instance for on Kubernetes: `cloudProviders` for
    a service with the catalog role `per_cloud_provider`; () for every other service (and
    on Docker, which runs one of each)."""
    if model.settings.target == "kubernetes" and eff.service.per_cloud_provider:
        return model.settings.cloud_providers
    return ()


def volume_mib(model: Resolved, eff: Effective, volume: Volume) -> int:
    """Size of one of a service's volumes: `kubernetes.storage.<service>` on Kubernetes,
    otherwise the catalog's."""
    override = model.settings.kubernetes.storage.get(eff.name) if model.settings.target == "kubernetes" else None
    return parse_memory_mib(override) if override else round(volume.size_gib * 1024)


def backup_claim_mib(model: Resolved, eff: Effective, volume_mib: int) -> int:
    """Size of a service's backup claim on Kubernetes: `backups.storage.<service>`, else the
    size of its volumes on this stack (`volume_mib`: `kubernetes.storage` or the catalog's)
    times one more than the copies the claim keeps (`backups.localRetention`): a backup is at
    most the data it reads, and the next is written before the oldest goes. A grown volume
    grows its backups' claim in place (a claim's request may grow, never shrink); 0 when it
    has none (not backed up, on Docker, where the backups go to a host directory, or written
    into the store by the server itself: `writes_store`)."""
    if model.settings.target != "kubernetes" or eff not in model.backed_up() or writes_store(model, eff):
        return 0
    cfg = model.settings.backups
    size = cfg.storage.get(eff.name)
    return parse_memory_mib(size) if size else (cfg.local_copies + 1) * volume_mib


def server_writes_store(service: Service, store: BackupStore | None) -> bool:
    """The service's own server writes into the off-site store on this stack: PostgreSQL's WAL
    archive (the catalog as infra/pitr.py runs it), ClickHouse's BACKUP ... TO S3
    (infra/clickhouse_backup.py). Its pods then reach the store (its catalog `Outside`)."""
    b = service.backup
    return store is not None and b is not None and (
        pitr.archives(service) or clickhouse_backup.applies(service, store))


def writes_store(model: Resolved, eff: Effective) -> bool:
    """The backup itself is written into the store by the server (`Backup.server_store`): the
    backup job only sends the statement and needs no claim. (PostgreSQL's archive keeps its
    daily dump in a claim too.)"""
    return clickhouse_backup.applies(eff.service, model.settings.backups.store)


def own_image(settings: Settings, name: str) -> str:
    return f"{settings.images.registry.rstrip('/')}/{name}:{settings.images.tag}"


def sign_in_on(settings: Settings) -> bool:
    """The sign-in proxy runs: a Kubernetes stack with `sso` set (never on Docker)."""
    return settings.target == "kubernetes" and settings.sso is not None


def client_connections(model: Resolved, eff: Effective) -> int:
    """What a store's clients may open at most on this stack: each dependent's declared pool
    (`Dependency.pool`) times its instances (replicas, once per cloud provider on Kubernetes,
    and the rollout's surge pods: during a rolling update the new pod opens its pool before
    an old one closes), times its worker processes (a Celery worker's pool is per process)."""
    k8s = model.settings.target == "kubernetes"
    total = 0
    for src in model.services.values():
        for dep in src.service.depends_on:
            if dep.service != eff.name or not dep.pool:
                continue
            n = ((src.replicas + src.rollout.surge) * (len(providers_of(model, src)) or 1)) if k8s else 1
            total += dep.pool * n * runtime.concurrency(src.service, src.resources.limits(model.settings.target)[0])
    return total


def notifier_ports(catalog: Catalog) -> tuple[int, ...]:
    """The ports outside the cluster the notifier may reach (its catalog `Outside` egress)."""
    return tuple(sorted({p for svc in catalog.services.values() if svc.notifier for o in svc.outside for p in o.ports}))


def dialled_ports(source: Service, target: Service) -> list[str]:
    """The target's ports the source connects to: the port of every value in its env or
    arguments that points at the target (a Dsn may name its own port), else the target's
    connection port (or its first port)."""
    conn = target.connection
    default = conn.port if conn else (target.primary_port.name if target.primary_port else "")
    ports = {v.port if isinstance(v, Dsn) and v.port else default
             for _, v in [*source.env, *(("", c) for c in source.command)]
             if isinstance(v, (Url, Dsn)) and v.service == target.name}
    return sorted(ports) or [default]


def startup_order(model: Resolved) -> list[str]:
    """Services in an order that starts every wait-target before its dependents:
    by tier first (the seed's order), then topologically within a tier (Kahn)."""
    order: list[str] = []
    for tier in Tier:
        names = [e.name for e in model.in_tier(tier)]
        local = set(names)
        indegree = {n: sum(1 for d in model.waits_for(n) if d in local) for n in names}
        ready = deque(n for n in names if indegree[n] == 0)
        while ready:
            n = ready.popleft()
            order.append(n)
            for e in model.in_edges(n):
                if e.wait and e.source in local:
                    indegree[e.source] -= 1
                    if indegree[e.source] == 0:
                        ready.append(e.source)
    return order
