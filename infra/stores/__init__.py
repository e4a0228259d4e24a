"""Who logs into a store as itself, derived from the catalog's connections.

A store declares how it grants access (`Service.grants`: `SchemaRoles` for PostgreSQL,
`AclUsers` for Redis); each client says once, in its connection, that it logs in as itself
(`Url(store, own_login=True)`, with the schema it uses where the store grants per schema).
From those two declarations `with_grants` gives:

- each client's `Url` its identity (`client_role`) and credential (`<store>-<client>`);
- the store the clients' credentials (config key `<store><Client>Password`), the variables
  and files they reach its container in, and its start wrapper, which creates or updates
  every identity on every start (infra/stores/postgres.py, infra/stores/redis.py).

Plain data, no Pulumi import: the catalog calls it when it assembles the services.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..model import AclUsers, EnvValue, SchemaRoles, Secret, Service, Tier, Url


def client_role(client: str) -> str:
    """The identity a client logs into PostgreSQL (its role) and Redis (its ACL user) with: its own."""
    return "optiinfra_" + client.replace("-", "_")


def password_env(client: str) -> str:
    """The variable a store's container gets a client's password in (the file: its _FILE twin)."""
    return "OPTIINFRA_" + client.upper().replace("-", "_") + "_PASSWORD"


def client_credential(store: str, client: str) -> str:
    """The id of a client's credential for a store."""
    return f"{store}-{client}"


def config_key(store: str, client: str) -> str:
    """The config key a client's credential for a store is supplied under: `postgresOrchestratorPassword`."""
    return store + "".join(part.capitalize() for part in client.split("-")) + "Password"


@dataclass(frozen=True)
class Phase:
    """Where a client's credential stands in a rotation (setting `rotation.<configKey>`):
    `slot`, the login role the current value is on where the store has one password per
    identity (PostgreSQL: `a` the client's role, `b` its twin); `keep_previous`, whether the
    value the consumers ran before stays valid (phase 1) or is refused (phase 2, retired)."""

    slot: str = "a"
    keep_previous: bool = False

    @property
    def other_slot(self) -> str:
        return "b" if self.slot == "a" else "a"


@dataclass(frozen=True)
class Client:
    """One service that logs into a store as itself."""

    service: str
    schema: str = ""

    @property
    def role(self) -> str:
        return client_role(self.service)

    @property
    def env(self) -> str:
        return password_env(self.service)


def _own_logins(service: Service) -> Iterable[Url]:
    values: list[EnvValue] = [v for _, v in service.env]
    values += [v for f in service.secret_files for _, v in f.env]
    return (v for v in values if isinstance(v, Url) and v.own_login)


def clients_of(store: Service, services: Iterable[Service]) -> tuple[Client, ...]:
    """The services whose connection to `store` logs in as itself, one each: the applications
    in catalog order, then the monitoring tier's (tools that watch them, such as Flower), the
    order the identities have always been created in, so an existing stack's wrapper stays."""
    found: dict[str, Client] = {}
    for s in services:
        for url in _own_logins(s):
            if url.service != store.name:
                continue
            if isinstance(store.grants, SchemaRoles) and not url.schema:
                raise ValueError(f"{s.name}: its connection to {store.name} logs in as itself but names "
                                 f"no schema; {store.name} grants per schema (Url(..., schema=...))")
            if isinstance(store.grants, AclUsers) and url.schema:
                raise ValueError(f"{s.name}: its connection to {store.name} names schema {url.schema!r}, "
                                 f"but {store.name} has no schemas")
            seen = found.setdefault(s.name, Client(s.name, url.schema))
            if seen.schema != url.schema:
                raise ValueError(f"{s.name}: its connections to {store.name} name two schemas "
                                 f"({seen.schema}, {url.schema}); one role has one")
    ordered = sorted(found.values(), key=lambda c: _tier(services, c.service) is Tier.MONITORING)
    return tuple(ordered)


def _tier(services: Iterable[Service], name: str) -> Tier:
    return next(s.tier for s in services if s.name == name)


def secret_var(store: Service, credential: str) -> str:
    """The first variable of the store's own declaration that carries `credential`."""
    for name, value in store.env:
        if isinstance(value, Secret) and value.credential == credential:
            return name
    raise ValueError(f"{store.name} declares no variable with credential {credential!r}")


def with_client_env(store: Service, extra: tuple[tuple[str, EnvValue], ...]) -> tuple[tuple[str, EnvValue], ...]:
    """The store's environment with the clients' password variables after its own credentials' variables."""
    last = max((i for i, (_, v) in enumerate(store.env) if isinstance(v, Secret)), default=len(store.env) - 1)
    return (*store.env[: last + 1], *extra, *store.env[last + 1:])


def _fill(service: Service, stores: dict[str, Service]) -> Service:
    """The service with each own-login Url given its identity and credential."""
    def filled(value: EnvValue) -> EnvValue:
        if not (isinstance(value, Url) and value.own_login):
            return value
        if value.service not in stores:
            raise ValueError(f"{service.name}: its connection to {value.service} logs in as itself, but "
                             f"{value.service} declares no grants (Service.grants)")
        return replace(value, user=client_role(service.name),
                       credential=client_credential(value.service, service.name))

    if not any(True for _ in _own_logins(service)):
        return service
    return replace(service, env=tuple((k, filled(v)) for k, v in service.env),
                   secret_files=tuple(replace(f, env=tuple((k, filled(v)) for k, v in f.env))
                                      for f in service.secret_files))


def with_grants(services: tuple[Service, ...]) -> tuple[Service, ...]:
    """The services with every store's grants applied (its clients' credentials, variables,
    files and its start wrapper) and every own-login connection filled in."""
    from . import postgres, redis

    stores = {s.name: s for s in services if s.grants is not None}
    out = []
    for s in services:
        if isinstance(s.grants, SchemaRoles):
            s = postgres.granted(s, clients_of(s, services))
        elif isinstance(s.grants, AclUsers):
            s = redis.granted(s, clients_of(s, services))
        out.append(_fill(s, stores))
    return tuple(out)


def live_credentials(store: Service) -> frozenset[str]:
    """The credentials a store's rotation Job applies in the running store (its clients'):
    changing one does not restart the store. Its own (the administrator's, the exporter's)
    are applied by its start wrapper, so they still roll it."""
    if store.grants is None:
        return frozenset()
    own = {store.connection.credential if store.connection else None, store.grants.monitor_credential}
    return frozenset(c.id for c in store.credentials if c.id not in own)



def rotation_command(store: Service, services: Iterable[Service],
                     phases: dict[str, Phase]) -> tuple[str, ...]:
    """The argv of a store's rotation Job (a one-shot run in the store's image against the
    running store): its clients' current values applied, the previous ones kept or retired
    as `phases` (by client service) say; () when the store has no clients."""
    from . import postgres, redis

    listed = tuple(services)
    clients = clients_of(store, listed)
    if not clients:
        return ()
    if isinstance(store.grants, SchemaRoles):
        assert store.connection is not None and store.connection.credential
        script = postgres.rotation_script(secret_var(store, store.connection.credential),
                                          postgres._by_schema(clients), phases)
    elif isinstance(store.grants, AclUsers):
        script = redis.rotation(store, clients, phases)
    else:
        return ()
    return ("sh", "-c", script)
