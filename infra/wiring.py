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


PASSWORD = "{password}"


@dataclass(frozen=True)
class Embedded:
    """A value that carries a credential, before the credential is known: `text` with
    PASSWORD where it goes (percent-encoded when `is_url`). A plain Secret is PASSWORD alone.
    Pulumi fills it with the value (`Wiring.value`); the External Secrets Operator fills it
    in the cluster from the same shape (infra/external_secrets.py), so a URL is written once."""

    text: str
    credential: str
    is_url: bool = False

    def fill(self, password: str) -> str:
        return self.text.replace(PASSWORD, quote(password, safe="") if self.is_url else password)


@dataclass(frozen=True)
class Wiring:
    catalog: Catalog
    host_of: HostOf
    credentials: dict[str, pulumi.Output[str]]

    def shape(self, value: EnvValue | str, owner: Service | None = None) -> str | Embedded:
        """A value as plain text, or the shape of one that carries a credential."""
        if isinstance(value, str):
            return value
        if isinstance(value, Listen):
            if owner is None:
                raise ValueError("Listen needs the service it belongs to")
            return value.template.format(port=owner.port(value.port).container)
        if isinstance(value, Secret):
            return Embedded(PASSWORD, value.credential)
        conn, template = _parts(self.catalog, value)
        target = self.catalog.services[value.service]
        user, credential = login(conn, value)
        fields = {
            "host": self.host_of(value.service),
            "port": self._port(target, conn, value),
            "user": user,
        }
        text = template.format(**fields, password=PASSWORD)
        if PASSWORD not in text or credential is None:
            return text
        # A password inside a URL must be percent-encoded.
        return Embedded(text, credential, is_url="://" in text)

    def value(self, value: EnvValue | str, owner: Service | None = None) -> pulumi.Input[str]:
        shape = self.shape(value, owner)
        if isinstance(shape, str):
            return shape
        return self.fill(shape)

    def fill(self, shape: Embedded) -> pulumi.Output[str]:
        """The value of a shape, from the stack's credential (a secret Output, so this is too)."""
        return self.credentials[shape.credential].apply(shape.fill)

    @staticmethod
    def _port(target: Service, conn: Connection | None, value: Url | Dsn) -> str:
        name = value.port if isinstance(value, Dsn) and value.port else (conn.port if conn else None)
        return str(target.port(name).container) if name else ""

    def env(self, service: Service) -> list[tuple[str, pulumi.Input[str]]]:
        return [(name, self.value(v, service)) for name, v in service.env]

    def command(self, service: Service) -> list[pulumi.Input[str]]:
        return [self.value(v, service) for v in service.command]
