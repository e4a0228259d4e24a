"""Resolution: a stack's catalog and settings become its resolved model (infra/graph.py),
checked on the way: every value against the catalog (services, ports, replicas, waits,
receivers, names, volumes, thresholds), the edges derived, decisions made once per
service (rollout, sizing, the sign-in proxy in front of the UIs). The types it fills and
the queries on them live in graph.py."""

from __future__ import annotations

import difflib
import json
from dataclasses import replace

from policies.optiinfra_policies.vocabulary import docker_volume_name

from . import pitr, runtime
from .graph import (
    ANY,
    LOOPBACK,
    Edge,
    EdgeKind,
    Effective,
    Published,
    Resolved,
    backup_claim_mib,
    client_connections,
    dialled_ports,
    notifier_ports,
    own_image,
    providers_of,
    sign_in_on,
    volume_mib,
)
from .model import (
    Catalog,
    Dependency,
    DisruptionBudget,
    Port,
    Rollout,
    Secret,
    Service,
    Tier,
    Url,
    VerifiedToken,
    parse_memory_mib,
    probed_check,
)
from .settings import NAMESPACE, ConfigError, Settings, Sso


def resolve(catalog: Catalog, settings: Settings) -> Resolved:
    """Apply settings to the catalog and validate them against it. Raises ConfigError."""
    _check_names(catalog, settings)
    overrides = settings.services
    enabled = {n for n in catalog.services if overrides.get(n) is None or overrides[n].enabled}
    enabled -= {n for n, svc in catalog.services.items() if svc.authenticator and not sign_in_on(settings)}
    enabled -= {n for n, svc in catalog.services.items() if svc.kubernetes_only and settings.target != "kubernetes"}
    # The push gateway holds the drills' results: deployed only where drills run (Kubernetes, a store).
    drills = settings.target == "kubernetes" and settings.backups.enabled and settings.backups.store is not None
    enabled -= {n for n, svc in catalog.services.items() if svc.push_gateway and not drills}
    _check_sign_in(catalog, settings, enabled)
    catalog = _signed_in(catalog, settings, enabled)
    catalog = pitr.archived(catalog, settings)  # unchanged without backups.store
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

    model = Resolved(catalog=catalog, settings=settings, services=services)
    model.edges = _edges(catalog, model)
    model._index()
    backed = {e.name for e in model.backed_up()}
    model.services = {name: _decided(model, eff, name in backed) for name, eff in services.items()}
    model.edges += _probe_edges(model)  # after the decisions: a probe reads `via`
    model._index()
    _check_order(model)
    _check_host_ports(model)
    return model


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
                if ui.token is not None and s.sso.jwks_url is not None:
                    svc, extra = _verifying(svc, ui.token, s.sso, extra)
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


def _verifying(svc: Service, token: VerifiedToken, sso: Sso,
               env: tuple[tuple[str, str], ...]) -> tuple[Service, tuple[tuple[str, str], ...]]:
    """A UI that verifies the proxy's ID token (`sso.jwksUrl`): its token environment over the
    header's, the issuer and client the token must name, the role from the groups claim, and
    egress to the provider's keys."""
    assert sso.jwks_url is not None
    over = dict((*token.env, (token.jwks_url_env, sso.jwks_url),
                 (token.claims_env, json.dumps({"iss": sso.issuer_url, "aud": [sso.client_id]})),
                 (token.role_path_env, role_path(sso.admin_groups, sso.default_role))))
    merged = tuple((k, over.pop(k, v)) for k, v in env) + tuple(over.items())
    return replace(svc, outside=(*svc.outside, token.outside)), merged


def role_path(admin_groups: tuple[str, ...], default_role: str) -> str:
    """JMESPath over the ID token's claims: Admin for a member of one of `admin_groups`, else
    `default_role`. `groups[*] || []` is a list whatever the claim is (absent, a string), so
    `contains` tests membership, never a substring."""
    if not admin_groups:
        return f"'{default_role}'"
    member = " || ".join(f"contains(groups[*] || `[]`, '{g}')" for g in admin_groups)
    return f"({member}) && 'Admin' || '{default_role}'"


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
    flags += [f"--trusted-proxy-ip={c}" for c in sso.trusted_proxy_cidrs]
    if sso.jwks_url:
        flags.append("--pass-authorization-header=true")  # the ID token, for the UI to verify
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


def _decided(model: Resolved, eff: Effective, backed_up: bool) -> Effective:
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
    return replace(eff, volume_sizes=sizes, backup_mib=backup_claim_mib(model, eff, sum(mib for _, mib in sizes)),
                   backed_up=backed_up, sized_args=sized,
                   runtime_env=runtime.env(svc, limit_mib), shm_mib=runtime.shm_mib(svc, limit_mib),
                   client_connections=clients,
                   providers=providers_of(model, eff), existing_volumes=existing, ingress_host=host,
                   external_url=url, pull_secrets=tuple(pull) if k8s and _from_registry(settings, svc) and pull else (),
                   via=via, auth=auth, public=eff.public or (svc.authenticator and k8s))


def _from_registry(settings: Settings, svc: Service) -> bool:
    """The service's image comes from the project's registry (`images.registry`): its own image,
    or one the stack builds from a catalog image (PostgreSQL's archive image, infra/pitr.py)."""
    return svc.own_image or svc.image.startswith(settings.images.registry.rstrip("/") + "/")


def _front(model: Resolved, eff: Effective, host: str | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
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


def _edges(catalog: Catalog, model: Resolved) -> list[Edge]:
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


def _probe_edges(model: Resolved) -> list[Edge]:
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


def _check_order(model: Resolved) -> None:
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


def _check_host_ports(model: Resolved) -> None:
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


def _host_port_key(model: Resolved, eff: Effective, p: Published) -> str | None:
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


def _free_port(model: Resolved, port: Port, taken: set[int]) -> int | None:
    """The lowest port of this port's band that nothing publishes or is allocated."""
    if port.band is None:
        return None
    band = model.catalog.band(port.band)
    return next((x for x in range(band.low, band.high + 1) if x not in taken), None)
