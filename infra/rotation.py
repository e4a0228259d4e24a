"""A client credential's rotation phase, from the `rotation` setting, for the stores and their consumers.

`phases(catalog, settings)`: per store, per client, the `Phase` (slot, previous value kept or
retired) the store's rotation Job applies in the running store (infra/stores). `applied`:
the catalog with each consumer's connection logging in as the login role of its slot, so
a PostgreSQL consumer moves to the role its new value is on. A `rotation` key that is not a
client credential, or slot `b` for a store that holds both values in one identity, is
refused with one line.
"""

from __future__ import annotations

from dataclasses import replace

from .model import Catalog, EnvValue, SchemaRoles, Service, Url
from .settings import NAMESPACE, ConfigError, Settings
from .stores import Phase, client_credential, live_credentials
from .stores.postgres import slot_role


def phases(catalog: Catalog, settings: Settings) -> dict[str, dict[str, Phase]]:
    """store -> client service -> its phase, for every key of `rotation` (checked)."""
    by_key = {c.config_key: (store, c.id) for store in catalog.services.values()
              for c in store.credentials if c.id in live_credentials(store)}
    out: dict[str, dict[str, Phase]] = {}
    for key, r in settings.rotation.items():
        if key not in by_key:
            raise ConfigError(f"{NAMESPACE}:rotation.{key}", "is not a client credential of a store",
                              f"use one of: {', '.join(sorted(by_key))}")
        store, cred = by_key[key]
        if r.slot != "a" and not isinstance(store.grants, SchemaRoles):
            raise ConfigError(f"{NAMESPACE}:rotation.{key}.slot", f"{store.name} holds both values in one user",
                              "remove slot (or set it to a)")
        client = cred[len(store.name) + 1:]
        assert client_credential(store.name, client) == cred
        out.setdefault(store.name, {})[client] = Phase(r.slot, r.previous == "keep")
    return out


def applied(catalog: Catalog, settings: Settings) -> Catalog:
    """The catalog with each consumer on slot `b` logging in as its twin role."""
    slots = {(store, client) for store, clients in phases(catalog, settings).items()
             for client, p in clients.items() if p.slot != "a"}
    if not slots:
        return catalog

    def moved(service: Service) -> Service:
        def one(value: EnvValue) -> EnvValue:
            if isinstance(value, Url) and value.own_login and (value.service, service.name) in slots:
                return replace(value, user=slot_role(value.user or "", "b"))
            return value
        return replace(service, env=tuple((k, one(v)) for k, v in service.env),
                       secret_files=tuple(replace(f, env=tuple((k, one(v)) for k, v in f.env))
                                          for f in service.secret_files))

    return replace(catalog, services={n: moved(s) for n, s in catalog.services.items()})
