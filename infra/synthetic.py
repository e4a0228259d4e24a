"""Synthetic catalogs of N services, for the benchmark (scripts/bench.py).

Copy k (k = 1, 2, ...) of the 21 real services Docker runs is the real catalog again with every
name suffixed `-k`: the same tiers, images, health checks and resources, and the
same dependency graph between the copies (copy k's data collector depends on copy
k's postgres, clickhouse and redis; its agents on copy k's orchestrator), so every
dependency points at an earlier tier (or earlier in the same tier), as in the real
graph. Each copy owns its own credentials (`postgres-k`, config key `postgresPasswordK`).
The one real Prometheus scrapes every copy that exposes metrics, as it would.

Copies are taken whole, in declaration order, and the last one is cut at N; since
every service is declared after the services it depends on, a cut copy is still
closed under its dependencies. N = 21 is the real catalog as Docker runs it (the sign-in
proxy, Kubernetes only, left out).

Host ports stay unique and valid: a copy's port gets the next free port of its band
(the seed's allocation bands), and stays unpublished (`host=None`) once the band is
full: there are only so many ports.
"""

from __future__ import annotations

from dataclasses import replace

from .catalog import default_catalog
from .model import Catalog, Credential, Dependency, Dsn, EnvValue, Port, Secret, Service, Url


def _rename_value(value: EnvValue, names: dict[str, str], creds: dict[str, str]) -> EnvValue:
    """The same value, pointing at the copy's services and credentials (other fields kept)."""
    if isinstance(value, (Url, Dsn)):
        credential = creds.get(value.credential, value.credential) if value.credential else None
        return replace(value, service=names.get(value.service, value.service), credential=credential)
    if isinstance(value, Secret):
        return replace(value, credential=creds.get(value.credential, value.credential))
    return value


def _rename_dsn(value: Dsn, names: dict[str, str], creds: dict[str, str]) -> Dsn:
    renamed = _rename_value(value, names, creds)
    assert isinstance(renamed, Dsn)
    return renamed


class _Ports:
    """Free host ports per band, handed out in ascending order."""

    def __init__(self, catalog: Catalog) -> None:
        self.used = {p.host for s in catalog.services.values() for p in s.ports if p.host is not None}
        self.bands = {b.name: b for b in catalog.bands}
        self.next = {b.name: b.low for b in catalog.bands}

    def take(self, band: str | None) -> int | None:
        if band is None or band not in self.bands:
            return None
        port, high = self.next[band], self.bands[band].high
        while port <= high and port in self.used:
            port += 1
        if port > high:
            self.next[band] = port
            return None
        self.used.add(port)
        self.next[band] = port + 1
        return port


def synthetic_catalog(n: int) -> Catalog:
    """A catalog of `n` services (n >= 1): the real ones, then suffixed copies."""
    if n < 1:
        raise ValueError("a catalog needs at least one service")
    real = default_catalog()
    # The sign-in proxy (with `sso`) and kube-state-metrics run on Kubernetes only: the
    # benchmark's Docker stacks would drop every copy of them, so they are left out and N = 21
    # is the real catalog on Docker.
    originals = [s for s in real.services.values() if not (s.authenticator or s.kubernetes_only)]
    services: dict[str, Service] = {s.name: s for s in originals[:n]}
    credentials: dict[str, Credential] = {c.id: c for s in services.values() for c in s.credentials}
    ports = _Ports(real)
    k = 0
    while len(services) < n:
        k += 1
        chunk = originals[: n - len(services)]
        names = {s.name: f"{s.name}-{k}" for s in chunk}
        owned = {c.id: c for s in chunk for c in s.credentials}
        creds = {cid: f"{cid}-{k}" for cid in owned}
        copies = {cid: replace(c, id=creds[cid], config_key=f"{c.config_key}{k}") for cid, c in owned.items()}
        credentials.update((c.id, c) for c in copies.values())
        for s in chunk:
            conn = s.connection
            if conn is not None and conn.credential is not None:
                conn = replace(conn, credential=creds.get(conn.credential, conn.credential))
            copy = replace(
                s,
                name=names[s.name],
                ports=tuple(_copy_port(p, ports) for p in s.ports),
                depends_on=tuple(Dependency(names.get(d.service, d.service), d.wait, d.reason)
                                 for d in s.depends_on),
                credentials=tuple(copies[c.id] for c in s.credentials),
                env=tuple((key, _rename_value(v, names, creds)) for key, v in s.env),
                command=tuple(_rename_dsn(v, names, creds) if isinstance(v, Dsn) else v for v in s.command),
                secret_files=tuple(replace(f, credential=creds.get(f.credential, f.credential),
                                           env=tuple((key, _rename_value(v, names, creds)) for key, v in f.env))
                                   for f in s.secret_files),
                connection=conn,
                alerts=tuple(replace(a, about=names.get(a.about, a.about)) for a in s.alerts),
            )
            services[copy.name] = copy
    return Catalog(services=services, bands=real.bands, credentials=credentials, alerts=real.alerts)


def _copy_port(port: Port, ports: _Ports) -> Port:
    return replace(port, host=ports.take(port.band) if port.host is not None else None)

