"""Connection URLs and environment, built from the catalog for any backend.

A backend supplies how a service is addressed (`host`) and which port number a
dependent dials; this module fills the catalog's templates. A value that embeds a
credential is a secret Output; everything else stays a plain string so plans and
diffs can show it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pulumi

from .model import Catalog, Connection, Dsn, EnvValue, Listen, Secret, Service, Url

HostOf = Callable[[str], str]


def _parts(catalog: Catalog, value: Url | Dsn) -> tuple[Connection | None, str]:
    target = catalog.services[value.service]
    conn = target.connection
    if isinstance(value, Dsn):
        return conn, value.template
    if conn is None:
        raise KeyError(f"{value.service} declares no connection")
    return conn, conn.template


def login(conn: Connection | None, value: Url | Dsn) -> tuple[str, str | None]:
    """The user and credential a value logs in with: its own role, else the connection's."""
    if value.credential:
        return value.user or "", value.credential
    return ((conn.user or "") if conn else ""), (conn.credential if conn else None)


def credential_refs(catalog: Catalog, service: Service) -> set[str]:
    """Credentials a service needs: its own, and those embedded in its env values."""
    refs = {c.id for c in service.credentials}
    for value in [v for _, v in service.env] + list(service.command):
        if isinstance(value, Secret):
            refs.add(value.credential)
        elif isinstance(value, (Url, Dsn)):
            conn, template = _parts(catalog, value)
            credential = login(conn, value)[1]
            if credential and "{password}" in template:
                refs.add(credential)
    return refs


@dataclass(frozen=True)
class Wiring:
    catalog: Catalog
    host_of: HostOf
    credentials: dict[str, pulumi.Output[str]]

    def value(self, value: EnvValue | str, owner: Service | None = None) -> pulumi.Input[str]:
        if isinstance(value, str):
            return value
        if isinstance(value, Listen):
            if owner is None:
                raise ValueError("Listen needs the service it belongs to")
            return str(owner.port(value.port).container)
        if isinstance(value, Secret):
            return self.credentials[value.credential]
        conn, template = _parts(self.catalog, value)
        target = self.catalog.services[value.service]
        user, credential = login(conn, value)
        fields = {
            "host": self.host_of(value.service),
            "port": self._port(target, conn, value),
            "user": user,
        }
        text = template.format(**fields, password="{password}")
        if "{password}" not in text or credential is None:
            return text
        is_url = "://" in text  # a password inside a URL must be percent-encoded
        # Credentials are secret Outputs (credentials.materialize), so the URL is too.
        return self.credentials[credential].apply(
            lambda pw: text.replace("{password}", quote(pw, safe="") if is_url else pw))

    @staticmethod
    def _port(target: Service, conn: Connection | None, value: Url | Dsn) -> str:
        name = value.port if isinstance(value, Dsn) and value.port else (conn.port if conn else None)
        return str(target.port(name).container) if name else ""

    def env(self, service: Service) -> list[tuple[str, pulumi.Input[str]]]:
        return [(name, self.value(v, service)) for name, v in service.env]

    def command(self, service: Service) -> list[pulumi.Input[str]]:
        return [self.value(v, service) for v in service.command]
