"""The resolved model of one stack: catalog + settings, validated, with its graph.

Everything backends and tools need that is derived rather than declared lives here:
effective images, host ports, resources and replicas; dependency edges (declared,
added by config, and Prometheus scraping); startup order; network membership;
reachability. No Pulumi import. Every derivation is linear in services + edges.
"""

from __future__ import annotations

import difflib
import enum
from collections import deque
from dataclasses import dataclass, field, replace

from policies.optiinfra_policies.vocabulary import docker_volume_name

from . import runtime
from .model import (
    Catalog,
    Dependency,
    DisruptionBudget,
    Dsn,
    Outside,
    Port,
    Resources,
    Rollout,
    Secret,
    Service,
    Tier,
    Url,
    Volume,
    backup_job,
    parse_memory_mib,
    probed_check,
)
from .settings import NAMESPACE, ConfigError, Settings

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
    """This stack backs its data up (`Model.backed_up`)."""
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
class Model:
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
        return eff.service.outside

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


def providers_of(model: Model, eff: Effective) -> tuple[str, ...]:
    """Cloud providers a service runs one instance for on Kubernetes: `cloudProviders` for
    a service with the catalog role `per_cloud_provider`; () for every other service (and
    on Docker, which runs one of each)."""
    if model.settings.target == "kubernetes" and eff.service.per_cloud_provider:
        return model.settings.cloud_providers
    return ()


def volume_mib(model: Model, eff: Effective, volume: Volume) -> int:
    """Size of one of a service's volumes: `kubernetes.storage.<service>` on Kubernetes,
    otherwise the catalog's."""
    override = model.settings.kubernetes.storage.get(eff.name) if model.settings.target == "kubernetes" else None
    return parse_memory_mib(override) if override else round(volume.size_gib * 1024)


def backup_claim_mib(model: Model, eff: Effective) -> int:
    """Size of a service's backup claim on Kubernetes: `backups.storage.<service>`, else the
    catalog's size of its volumes (never `kubernetes.storage`: resizing the service's volume
    leaves its backups' claim alone); 0 when it has none (not backed up, or on Docker, where
    the backups go to a host directory)."""
    if model.settings.target != "kubernetes" or eff not in model.backed_up():
        return 0
    size = model.settings.backups.storage.get(eff.name)
    return parse_memory_mib(size) if size else sum(round(v.size_gib * 1024) for v in eff.service.volumes)


def own_image(settings: Settings, name: str) -> str:
    return f"{settings.images.registry.rstrip('/')}/{name}:{settings.images.tag}"


def resolve(catalog: Catalog, settings: Settings) -> Model:
    """Apply settings to the catalog and validate them against it. Raises ConfigError."""
    _check_names(catalog, settings)
    overrides = settings.services
    enabled = {n for n in catalog.services if overrides.get(n) is None or overrides[n].enabled}
    enabled -= {n for n, svc in catalog.services.items() if svc.authenticator and not sign_in_on(settings)}
    _check_sign_in(catalog, settings, enabled)
    catalog = _signed_in(catalog, settings, enabled)
    _check_receivers(catalog, settings, enabled)
    services: dict[str, Effective] = {}
    for name, svc in catalog.services.items():
        if name not in enabled:
            continue
        o = overrides.get(name)
        key = f"{NAMESPACE}:services.{name}"
        if o and o.depends_on:
            svc = replace(svc, depends_on=svc.depends_on + tuple(Dependency(d) for d in o.depends_on))
        image = (o.image if o and o.image else None) or (own_image(settings, svc.image) if svc.own_image else svc.image)
        res = svc.resources
        if o and o.memory:
            res = replace(res, memory_mib=parse_memory_mib(o.memory), memory_limit_mib=None)
        if o and o.cpu:
            res = replace(res, cpu=o.cpu, cpu_limit=None)
        replicas = 1
        if o and o.replicas is not None:
            if not svc.scalable and o.replicas != 1:
                raise ConfigError(f"{key}.replicas", f"{name} runs exactly one instance",
                                  "remove the setting (only the collector, workers and agents scale)")
            replicas = o.replicas
        public = name in settings.public
        published: list[Published] = []
        want_publish = o.publish if o and o.publish is not None else (svc.publish or public)
        if o and (o.host_port is not None or o.host_ports or o.bind_address):
            want_publish = True if o.publish is None else o.publish
        if o:
            for port_name in o.host_ports:
                if port_name not in {p.name for p in svc.ports}:
                    raise ConfigError(f"{key}.hostPorts.{port_name}", f"{name} has no port named '{port_name}'",
                                      f"use one of: {', '.join(p.name for p in svc.ports)}")
        if want_publish:
            bind = (o.bind_address if o and o.bind_address else None) or (ANY if public else LOOPBACK)
            for i, p in enumerate(svc.ports):
                host = p.host
                if o and i == 0 and o.host_port is not None:
                    host = o.host_port
                if o and p.name in o.host_ports:
                    host = o.host_ports[p.name]
                if host is not None:
                    published.append(Published(p, host, bind))
        if not published and o and (o.host_port is not None or o.host_ports):
            raise ConfigError(f"{key}.hostPort", f"{name} has no port to publish", "remove the setting")
        services[name] = Effective(_receivers_only(svc, settings), image, res, replicas, tuple(published), public,
                                   _rollout(settings, svc, replicas))

    model = Model(catalog=catalog, settings=settings, services=services)
    model.edges = _edges(catalog, model)
    model._index()
    backed = {e.name for e in model.backed_up()}
    model.services = {name: _decided(model, eff, name in backed) for name, eff in services.items()}
    model.edges += _probe_edges(model)  # after the decisions: a probe reads `via`
    model._index()
    _check_order(model)
    _check_host_ports(model)
    return model


def sign_in_on(settings: Settings) -> bool:
    """The sign-in proxy runs: a Kubernetes stack with `sso` set (never on Docker)."""
    return settings.target == "kubernetes" and settings.sso is not None


def _check_sign_in(catalog: Catalog, s: Settings, enabled: set[str]) -> None:
    """On Kubernetes no public UI answers without a sign-in in front of it, and the proxy
    has a host of its own: that of a public UI it proxies (its callback is there)."""
    if s.target != "kubernetes":
        return
    uis = [n for n in s.public if n in enabled and catalog.services[n].ui is not None]
    if uis and s.sso is None:
        raise ConfigError(f"{NAMESPACE}:sso", f"public UI {uis[0]} would answer anyone on the internet",
                          f"set {NAMESPACE}:sso (issuerUrl, clientId, emailDomains or groups; docs/access.md), "
                          f"or remove {uis[0]} from {NAMESPACE}:public")
    if not uis or s.sso is None:
        return
    proxied = _proxied_uis(catalog, s, enabled)
    if not proxied:
        trusting = [n for n, svc in catalog.services.items() if svc.ui is not None and svc.ui.trusts_header]
        raise ConfigError(f"{NAMESPACE}:public", f"public UI {uis[0]} signs in at the proxy, but no public UI "
                          "gives the proxy a host of its own", f"add {trusting[0] if trusting else 'a UI'} to "
                          f"{NAMESPACE}:public (the sign-in pages live on its host)")


def _proxied_uis(catalog: Catalog, s: Settings, enabled: set[str]) -> list[str]:
    """Public UIs the proxy forwards to (they trust its identity header), in public's order."""
    return [n for n in s.public if n in enabled and (ui := catalog.services[n].ui) is not None and ui.trusts_header]


def _signed_in(catalog: Catalog, s: Settings, enabled: set[str]) -> Catalog:
    """The catalog as this stack runs it: each UI with the environment of where it runs
    (Docker: `direct_env`; Kubernetes behind the proxy: `proxied_env` and the first-sign-in
    role; Kubernetes otherwise: `closed_env`); the proxy with the flags of `sso`; a client of
    a UI behind the proxy pointed at its public URL (as a browser reaches it), without the
    edge that would let it past the proxy."""
    k8s = s.target == "kubernetes"
    on = sign_in_on(s) and any(catalog.services[n].ui is not None for n in s.public if n in enabled)
    proxied = _proxied_uis(catalog, s, enabled) if on else []
    hosts = s.kubernetes.ingress.hosts
    out: dict[str, Service] = {}
    for name, svc in catalog.services.items():
        ui = svc.ui
        if ui is not None:
            if not k8s:
                extra = ui.direct_env
            elif name in proxied and s.sso is not None:
                extra = (*ui.proxied_env, *(((ui.role_env, s.sso.default_role),) if ui.role_env else ()))
            else:
                extra = ui.closed_env
            svc = replace(svc, env=(*svc.env, *extra))
        if proxied:
            external = {u: f"https://{hosts[u]}/" for u in proxied}
            deps = tuple(d for d in svc.depends_on if d.service not in external or svc.authenticator)
            if deps != svc.depends_on:
                svc = replace(svc, depends_on=deps, env=tuple(
                    (k, external[v.service] if isinstance(v, Url) and v.service in external else v)
                    for k, v in svc.env))
        if svc.authenticator and on and s.sso is not None:
            svc = replace(svc, command=(*svc.command, *_proxy_flags(s, hosts[proxied[0]])))
        out[name] = svc
    return replace(catalog, services=out)


def _proxy_flags(s: Settings, host: str) -> tuple[str, ...]:
    """The sign-in proxy's flags from `sso`: the provider, who may sign in, the session cookie's
    domain and the callback on the host of the UI it proxies."""
    sso = s.sso
    assert sso is not None
    flags = [f"--oidc-issuer-url={sso.issuer_url}", f"--client-id={sso.client_id}",
             f"--redirect-url=https://{host}/oauth2/callback", f"--scope={sso.scope}"]
    flags += [f"--email-domain={d}" for d in sso.email_domains] or ["--email-domain=*"]
    flags += [f"--allowed-group={g}" for g in sso.groups]
    if sso.cookie_domain:
        flags += [f"--cookie-domain={sso.cookie_domain}", f"--whitelist-domain={sso.cookie_domain}"]
    return tuple(flags)


def _rollout(settings: Settings, svc: Service, replicas: int) -> Rollout:
    """Docker replaces a container in place. On Kubernetes a service whose instances must
    never overlap (`exclusive`: Celery beat, one scheduler) is replaced in place too; a
    StatefulSet replaces one pod at a time (its stable identity allows no surge); every
    other one rolls with one extra pod, never one fewer (a singleton stays available).
    More than one replica: a drain takes at most one at a time."""
    if settings.target != "kubernetes":
        return Rollout("Recreate")
    budget = DisruptionBudget(max_unavailable=1) if replicas > 1 else None
    if svc.exclusive:
        return Rollout("Recreate", budget=budget)
    if svc.stateful:
        return Rollout("RollingUpdate", surge=0, unavailable=1, budget=budget)
    return Rollout("RollingUpdate", surge=1, unavailable=0, budget=budget)


def _decided(model: Model, eff: Effective, backed_up: bool) -> Effective:
    """The decisions about one service that read the stack's settings, made once."""
    settings, svc = model.settings, eff.service
    k8s = settings.target == "kubernetes"
    sizes = tuple((v.name, volume_mib(model, eff, v)) for v in svc.volumes)
    limit_mib = eff.resources.limits(settings.target)[0]
    clients = client_connections(model, eff)
    sized = tuple(a for v in svc.sized_command for a in runtime.sized(
        v, limit_mib=limit_mib, volumes=dict(sizes), ephemeral_mib=svc.ephemeral_mib, client_connections=clients))
    sized += runtime.args(svc, limit_mib)
    o = settings.services.get(eff.name)
    existing = tuple((name, v.existing) for name, v in o.volumes.items()
                     if v.existing is not None) if o and not k8s else ()
    ing = settings.kubernetes.ingress
    host = ing.hosts.get(eff.name) if k8s and eff.public else None
    tls = ing.tls_secret_name or ing.cert_manager_issuer
    url = f"{'https' if tls else 'http'}://{host}" if host else None
    via, auth = _front(model, eff, host)
    pull = settings.kubernetes.image_pull_secrets
    return replace(eff, volume_sizes=sizes,
                   backup_mib=backup_claim_mib(model, eff), backed_up=backed_up, sized_args=sized,
                   runtime_env=runtime.env(svc, limit_mib), shm_mib=runtime.shm_mib(svc, limit_mib),
                   client_connections=clients,
                   providers=providers_of(model, eff), existing_volumes=existing, ingress_host=host,
                   external_url=url, pull_secrets=tuple(pull) if k8s and svc.own_image and pull else (),
                   via=via, auth=auth, public=eff.public or (svc.authenticator and k8s))


def _front(model: Model, eff: Effective, host: str | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """What stands in front of a public UI on Kubernetes: the proxy its Ingress routes to (it
    trusts the proxy's header), or the ingress controller's external auth against the proxy."""
    ui = eff.service.ui
    proxy = next((e for e in model.services.values() if e.service.authenticator), None)
    if host is None or ui is None or proxy is None:
        return None, ()
    if ui.trusts_header:
        return proxy.name, ()
    sign_in = next(model.settings.kubernetes.ingress.hosts[e.name] for e in model.services.values()
                   if e.public and e.service.ui is not None and e.service.ui.trusts_header)
    port = proxy.service.port("http").container
    ns = f"{model.settings.kubernetes.namespace_prefix}-{proxy.tier.value}"
    return None, (
        ("nginx.ingress.kubernetes.io/auth-url", f"http://{proxy.name}.{ns}.svc.cluster.local:{port}/oauth2/auth"),
        ("nginx.ingress.kubernetes.io/auth-signin",
         f"https://{sign_in}/oauth2/start?rd=$scheme://$host$escaped_request_uri"),
        ("nginx.ingress.kubernetes.io/auth-response-headers", "X-Auth-Request-Email"))


def client_connections(model: Model, eff: Effective) -> int:
    """What a store's clients may open at most on this stack: each dependent's declared pool
    (`Dependency.pool`) times its instances (replicas, once per cloud provider on Kubernetes),
    times its worker processes (a Celery worker's pool is per process)."""
    k8s = model.settings.target == "kubernetes"
    total = 0
    for src in model.services.values():
        for dep in src.service.depends_on:
            if dep.service != eff.name or not dep.pool:
                continue
            n = (src.replicas * (len(providers_of(model, src)) or 1)) if k8s else 1
            total += dep.pool * n * runtime.concurrency(src.service, src.resources.limits(model.settings.target)[0])
    return total


def _receivers_only(svc: Service, settings: Settings) -> Service:
    """The service without the receiver credentials this stack does not use (their
    receiver is off, or needs no secret): they are never generated, so the environment
    values and SecretFiles that would carry them go too."""
    on = settings.alerting.receivers.secret_kinds()
    absent = {c.id for c in svc.credentials if c.receiver is not None and c.receiver not in on}
    if not absent:
        return svc
    return replace(svc, credentials=tuple(c for c in svc.credentials if c.id not in absent),
                   env=tuple((k, v) for k, v in svc.env if not (isinstance(v, Secret) and v.credential in absent)),
                   secret_files=tuple(f for f in svc.secret_files if f.credential not in absent))


def _check_receivers(catalog: Catalog, s: Settings, enabled: set[str]) -> None:
    """Receivers need a notifier to send them."""
    on = s.alerting.receivers.on()
    notifiers = [n for n, svc in catalog.services.items() if svc.notifier]
    if on and not any(n in enabled for n in notifiers):
        kind = next(iter(on))
        which = f"enable {notifiers[0]} ({NAMESPACE}:services.{notifiers[0]}.enabled)" if notifiers else \
            "declare a notifier in the catalog"
        raise ConfigError(f"{NAMESPACE}:alerting.receivers.{kind}", "no notifier is deployed to send to it",
                          f"{which}, or remove the receiver")
    email = s.alerting.receivers.email
    ports = notifier_ports(catalog)
    if email is not None and int(email.smarthost.rsplit(":", 1)[1]) not in ports:
        raise ConfigError(f"{NAMESPACE}:alerting.receivers.email.smarthost",
                          f"port {email.smarthost.rsplit(':', 1)[1]} is not one the notifier may reach "
                          f"({', '.join(map(str, ports))})",
                          "use the relay's submission port, e.g. smtp.example.com:587")


def notifier_ports(catalog: Catalog) -> tuple[int, ...]:
    """The ports outside the cluster the notifier may reach (its catalog `Outside` egress)."""
    return tuple(sorted({p for svc in catalog.services.values() if svc.notifier for o in svc.outside for p in o.ports}))


def _check_names(catalog: Catalog, s: Settings) -> None:
    """Every service a setting names exists, and a setting applies where it is set."""
    names = list(catalog.services)
    known = ", ".join(names)
    for name in s.public:
        if name not in catalog.services:
            raise ConfigError(f"{NAMESPACE}:public", f"'{name}' is not a service", f"use service names: {known}")
    for name in s.services:
        if name not in catalog.services:
            raise ConfigError(f"{NAMESPACE}:services.{name}", f"'{name}' is not a service", f"use one of: {known}")
    for name in s.backups.storage:
        svc = catalog.services.get(name)
        if svc is None or svc.backup is None or not svc.backup.enabled:
            backed = ", ".join(n for n, x in catalog.services.items() if x.backup is not None and x.backup.enabled)
            why = "is not a service" if svc is None else "is not backed up"
            raise ConfigError(f"{NAMESPACE}:backups.storage.{name}", f"'{name}' {why}",
                              f"remove it; services with a backup: {backed}")
    for name in s.kubernetes.storage:
        if name not in catalog.services:
            raise ConfigError(f"{NAMESPACE}:kubernetes.storage.{name}", f"'{name}' is not a service",
                              f"use one of: {known}")
        if not catalog.services[name].volumes:
            with_volumes = ", ".join(n for n, svc in catalog.services.items() if svc.volumes)
            raise ConfigError(f"{NAMESPACE}:kubernetes.storage.{name}", f"{name} has no volume to size",
                              f"remove it; services with volumes: {with_volumes}")
    for name, o in s.services.items():
        key = f"{NAMESPACE}:services.{name}"
        if s.target == "kubernetes":
            for sub, value in (("hostPort", o.host_port), ("hostPorts", o.host_ports or None),
                               ("bindAddress", o.bind_address), ("publish", o.publish)):
                if value is not None:
                    raise ConfigError(f"{key}.{sub}", "does not apply on Kubernetes (nothing has a host port; "
                                      "public services get an Ingress)",
                                      f"remove it, or list {name} in {NAMESPACE}:public for an Ingress")
        elif o.replicas is not None and o.replicas != 1 and catalog.services[name].scalable:
            raise ConfigError(f"{key}.replicas", "does not apply on Docker, which runs one container per service",
                              "remove it from this stack (replicas apply on Kubernetes)")
    _check_existing_volumes(catalog, s)
    _check_external_secrets(catalog, s)
    _check_thresholds(catalog, s)
    fan_out = [svc.name for svc in catalog.services.values() if svc.per_cloud_provider
               and (s.services.get(svc.name) is None or s.services[svc.name].enabled)]
    if not s.cloud_providers and fan_out:
        raise ConfigError(f"{NAMESPACE}:cloudProviders", f"is empty, but {fan_out[0]} runs one instance per provider",
                          f"list at least one provider, or set {NAMESPACE}:services.{fan_out[0]}.enabled=false")


def _check_external_secrets(catalog: Catalog, s: Settings) -> None:
    """`kubernetes.externalSecrets.credentials.<configKey>`: a credential the catalog declares."""
    es = s.kubernetes.external_secrets
    if es is None:
        return
    keys = sorted(catalog.credential_keys())
    for name in es.credentials:
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{NAMESPACE}:kubernetes.externalSecrets.credentials.{name}",
                              "is not a credential's config key", f"{hint}use one of: {', '.join(keys)}")


def _check_existing_volumes(catalog: Catalog, s: Settings) -> None:
    """`services.<name>.volumes.<volume>`: a volume the service has, on Docker only, and
    each existing Docker volume mounted by one catalog volume only (never one the program
    creates for another)."""
    with_volumes = ", ".join(n for n, svc in catalog.services.items() if svc.volumes) or "none"
    claimed: dict[str, str] = {}
    for name, o in s.services.items():
        for vol, vo in o.volumes.items():
            key = f"{NAMESPACE}:services.{name}.volumes.{vol}"
            own = [v.name for v in catalog.services[name].volumes]
            if vol not in own:
                raise ConfigError(key, f"{name} has no volume '{vol}'",
                                  f"use one of its volumes: {', '.join(own)}" if own else
                                  f"remove it ({name} keeps no data; services with volumes: {with_volumes})")
            if s.target == "kubernetes" and vo.existing is not None:
                raise ConfigError(f"{key}.existing", "does not apply on Kubernetes (the data lives in a "
                                  "PersistentVolumeClaim the program creates)",
                                  "remove it from this stack; to move data from Docker, restore a backup into the "
                                  "new claim (docs/adoption.md)")
            if vo.existing is None:
                continue
            if vo.existing in claimed:
                raise ConfigError(f"{key}.existing", f"'{vo.existing}' is already mounted by {claimed[vo.existing]}",
                                  "give each catalog volume its own Docker volume")
            claimed[vo.existing] = f"{name}.volumes.{vol}"
    for name, svc in catalog.services.items():
        own_volumes = s.services[name].volumes if name in s.services else {}
        for v in svc.volumes:
            managed = docker_volume_name(name, v.name)
            adopted = v.name in own_volumes and own_volumes[v.name].existing is not None
            if managed in claimed and not adopted:
                raise ConfigError(f"{NAMESPACE}:services.{claimed[managed]}.existing",
                                  f"'{managed}' is the volume the program creates for {name} {v.name}",
                                  f"mount another volume, or adopt it as services.{name}.volumes.{v.name}.existing")


def _check_thresholds(catalog: Catalog, s: Settings) -> None:
    """Every threshold names a catalog alert that has one, in that alert's range."""
    alerts = {a.name: a for a in catalog.all_alerts() if a.threshold is not None}
    for name, value in s.alerting.thresholds.items():
        key = f"{NAMESPACE}:alerting.thresholds.{name}"
        alert = alerts.get(name)
        if alert is None:
            raise ConfigError(key, f"'{name}' is not an alert with a threshold",
                              f"use one of: {', '.join(sorted(alerts))}")
        if alert.ratio and not 0 < value <= 1:
            raise ConfigError(key, f"{value} is not a ratio", "use a fraction above 0 and at most 1, e.g. 0.9")
        if value < 0:
            raise ConfigError(key, f"{value} is negative", "use a number of at least 0")


def _edges(catalog: Catalog, model: Model) -> list[Edge]:
    edges: list[Edge] = []
    for name, eff in model.services.items():
        for dep in eff.service.depends_on:
            key = f"{NAMESPACE}:services.{name}.dependsOn"
            if dep.service not in catalog.services:
                raise ConfigError(key, f"{name} depends on '{dep.service}', which is not a service",
                                  f"use one of: {', '.join(catalog.services)}")
            if dep.service not in model.services:
                raise ConfigError(f"{NAMESPACE}:services.{dep.service}.enabled",
                                  f"{dep.service} is disabled but {name} depends on it",
                                  f"enable {dep.service} or disable {name} too")
            target = model.services[dep.service].service
            for port in dialled_ports(eff.service, target):
                edges.append(Edge(name, dep.service, port, dep.wait))
    scrapers = [e for e in model.services.values() if e.service.scraper]
    for prom in scrapers:
        for t in model.scrape_targets():
            if t.name != prom.name and t.service.metrics:
                edges.append(Edge(prom.name, t.name, t.service.metrics[0], wait=False, kind=EdgeKind.SCRAPE))
    return edges


def _probe_edges(model: Model) -> list[Edge]:
    """The prober's edge to every service's health port, except a service whose web UI sits
    behind the sign-in proxy on this stack (`via`): that UI trusts the identity header of
    whoever reaches its web port, so only the proxy and Prometheus' scrape may reach it (issue
    23); it is watched by the scrape alone there (TargetDown, its job's absent() alert,
    MemoryNearLimit). Where nothing fronts it (Docker dev) it is probed like any service."""
    edges: list[Edge] = []
    for prober in (e for e in model.services.values() if e.service.prober):
        for t in model.services.values():
            check = probed_check(t.service)
            if t.name != prober.name and check is not None and t.via is None:
                edges.append(Edge(prober.name, t.name, check.port, wait=False, kind=EdgeKind.PROBE))
    return edges


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


def _check_order(model: Model) -> None:
    """Waits must not point to a later tier, and must not form a cycle (iterative DFS)."""
    for e in model.edges:
        if not e.wait:
            continue
        src, dst = model.services[e.source].tier, model.services[e.target].tier
        if dst.order > src.order:
            raise ConfigError(f"{NAMESPACE}:services.{e.source}.dependsOn",
                              f"{e.source} ({src.value}) would wait for {e.target} ({dst.value}), "
                              f"but tiers start in the order {' -> '.join(t.value for t in Tier)}",
                              f"remove {e.target} from the dependencies of {e.source}")
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(model.services, white)
    for root in model.services:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                color[node] = grey
                path.append(node)
            nxt = model.waits_for(node)
            if i < len(nxt):
                stack.append((node, i + 1))
                child = nxt[i]
                if color[child] == grey:
                    cycle = [*path[path.index(child):], child]
                    raise ConfigError(f"{NAMESPACE}:services.{node}.dependsOn",
                                      f"dependency cycle {' -> '.join(cycle)}",
                                      f"remove one of these dependencies so that {child} does not wait for itself")
                if color[child] == white:
                    stack.append((child, 0))
            else:
                color[node] = black
                path.pop()


def _check_host_ports(model: Model) -> None:
    """No two published ports on one host port. The error names the side whose host port
    the stack config set (that is the change to undo) and a free port of its band."""
    seen: dict[int, tuple[Effective, Published]] = {}
    for eff in model.services.values():
        for p in eff.published:
            if p.host not in seen:
                seen[p.host] = (eff, p)
                continue
            (a, pa), (b, pb) = seen[p.host], (eff, p)
            if _host_port_key(model, a, pa) and not _host_port_key(model, b, pb):
                (a, pa), (b, pb) = (b, pb), (a, pa)
            taken = set(seen) | {q.host for s in model.catalog.services.values() for q in s.ports if q.host}
            free = _free_port(model, pb.port, taken)
            raise ConfigError(
                _host_port_key(model, b, pb) or f"{NAMESPACE}:services.{b.name}.hostPort",
                f"host port {p.host} is already taken by {a.name} {pa.port.name} "
                f"({pa.port.container} -> {pa.bind}:{pa.host})",
                "choose a free host port" + (f", e.g. {free} (free in band {pb.port.band})" if free else ""))


def _host_port_key(model: Model, eff: Effective, p: Published) -> str | None:
    """The config key that set this published port's host port, if the stack set it."""
    o = model.settings.services.get(eff.name)
    if o is None:
        return None
    key = f"{NAMESPACE}:services.{eff.name}"
    if p.port.name in o.host_ports:
        return f"{key}.hostPorts.{p.port.name}"
    if o.host_port is not None and eff.service.ports and eff.service.ports[0] == p.port:
        return f"{key}.hostPort"
    return None


def _free_port(model: Model, port: Port, taken: set[int]) -> int | None:
    """The lowest port of this port's band that nothing publishes or is allocated."""
    if port.band is None:
        return None
    band = model.catalog.band(port.band)
    return next((x for x in range(band.low, band.high + 1) if x not in taken), None)


def startup_order(model: Model) -> list[str]:
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
