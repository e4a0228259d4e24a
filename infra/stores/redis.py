"""Redis' start wrapper: its ACL users written from the current credentials, then the server.

Redis' users come from an ACL file the wrapper writes on every start into the writable /tmp
(0600, never on the data volume), with each password's SHA-256 (`#<hex>`: the file holds no
password, and any character is allowed in one). The values arrive as variables (Docker) or
files (Kubernetes) and go through printf (a shell builtin) to sha256sum's stdin, never argv.
A missing one stops the start with the user's name.

The users: `default` (the administrator's: health check, backups), the exporters' read-only
user, and one user per client (`AclUsers`; the clients come from their connections,
infra/stores/__init__.py). Plain text generation, no Pulumi import: `start` takes the users as
arguments, so tests can run it against a real server (tests/test_redis_acl.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..model import SECRET_DIR, AclUsers, Credential, Secret, SecretFile, Service
from . import Client, Phase, client_credential, client_role, config_key, secret_var, with_client_env

ADMIN = "default"
"""Redis' built-in user: the administrator's (health check, backups)."""
ADMIN_RULES = "~* &* +@all"

REDIS_ACL_FILE = "${TMPDIR:-/tmp}/optiinfra-users.acl"


@dataclass(frozen=True)
class AclUser:
    """One line of the ACL file: the user, the variable (Docker) its password arrives in, the
    credential whose file (Kubernetes, `<SECRET_DIR>/<credential>`) it is read from otherwise,
    and its rules."""

    name: str
    env: str
    credential: str
    rules: str


def start(users: Sequence[AclUser]) -> str:
    """Redis' command (a `sh -c` script; "$@" are the server's arguments): the ACL file
    written from the current credentials, then the server reading it."""
    return (
        'set -e; umask 077; h() { [ -n "$1" ] || { echo "optiinfra: no password for Redis user $2" >&2; exit 1; }; '
        'printf %s "$1" | sha256sum | cut -c1-64; }; '
        + " ".join(f'u{i}=$(h "${{{u.env}:-$(cat {SECRET_DIR}/{u.credential} 2>/dev/null)}}" {u.name});'
                   for i, u in enumerate(users))
        + " { " + " ".join(f'printf "user %s on #%s %s\\n" {u.name} "$u{i}" "{u.rules}";'
                           for i, u in enumerate(users))
        + f' }} > "{REDIS_ACL_FILE}"; exec redis-server --appendonly yes --maxmemory-policy noeviction '
        f'--aclfile "{REDIS_ACL_FILE}" "$@"'
    )


def users(store: Service, clients: Sequence[Client]) -> tuple[AclUser, ...]:
    """The store's ACL users: the administrator, the exporters' read-only user, one per client."""
    grants = store.grants
    assert isinstance(grants, AclUsers) and store.connection is not None and store.connection.credential
    admin = store.connection.credential
    return (AclUser(ADMIN, secret_var(store, admin), admin, ADMIN_RULES),
            AclUser(grants.monitor, secret_var(store, grants.monitor_credential), grants.monitor_credential,
                    grants.monitor_rules),
            *(AclUser(c.role, c.env, client_credential(store.name, c.service), grants.rules) for c in clients))


def granted(store: Service, clients: Sequence[Client]) -> Service:
    """The store with its clients' ACL users: their credentials, the variables (Docker) and
    files (Kubernetes) they reach the container in, and the start wrapper as its command
    (its $0 the server's name; the sized arguments follow as "$@")."""
    grants = store.grants
    assert isinstance(grants, AclUsers)
    creds = tuple(Credential(client_credential(store.name, c.service), config_key(store.name, c.service),
                             f"{grants.label} password of {c.role}, the {c.service}'s ACL user") for c in clients)
    return replace(
        store,
        command=("sh", "-c", start(users(store, clients)), "redis-server", *store.command),
        credentials=(*store.credentials, *creds),
        env=with_client_env(store, tuple((c.env, Secret(cred.id)) for c, cred in zip(clients, creds, strict=True))),
        secret_files=(*store.secret_files, *(SecretFile(cred.id, (c.env,))
                                             for c, cred in zip(clients, creds, strict=True))),
    )


HOST_ENV, PORT_ENV = "OPTIINFRA_STORE_HOST", "OPTIINFRA_STORE_PORT"
"""Where the rotation Job reaches the running server."""


def rotation_script(admin: AclUser, rotated: Sequence[AclUser], keep: Mapping[str, bool]) -> str:
    """The rotation Job's command (`sh -c`): one `ACL SETUSER` per client user, as the
    administrator, in the running server. `keep[user]`: the new value's hash is added to the
    user's (`on #<new>`: the previous value still logs in, phase 1), else the user's
    passwords become exactly the new one (`resetpass on #<new>`: the previous one is
    refused, phase 2). Each command is atomic. Values from the variable or the file, hashed
    as the start wrapper does; the commands go through redis-cli's stdin, the administrator's
    password through REDISCLI_AUTH, never argv. Any reply but OK fails the Job."""
    return (
        'set -e; umask 077; h() { [ -n "$1" ] || { echo "optiinfra: no password for Redis user $2" >&2; exit 1; }; '
        'printf %s "$1" | sha256sum | cut -c1-64; }; '
        f'REDISCLI_AUTH="${{{admin.env}:-$(cat {SECRET_DIR}/{admin.credential} 2>/dev/null)}}"; export REDISCLI_AUTH; '
        + " ".join(f'u{i}=$(h "${{{u.env}:-$(cat {SECRET_DIR}/{u.credential} 2>/dev/null)}}" {u.name});'
                   for i, u in enumerate(rotated))
        + ' out=$({ ' + " ".join(
            f'printf "ACL SETUSER %s {"" if keep.get(u.name) else "resetpass "}on #%s\\n" {u.name} "$u{i}";'
            for i, u in enumerate(rotated))
        + f' }} | redis-cli -h "${HOST_ENV}" -p "${PORT_ENV}" --no-auth-warning --user {admin.name}); '
        'echo "$out"; [ -n "$out" ] && [ -z "$(printf "%s\\n" "$out" | grep -v "^OK$")" ] && '
        'echo "optiinfra: credentials applied"'
    )


def rotation(store: Service, clients: Sequence[Client], phases: Mapping[str, Phase]) -> str:
    """The store's rotation Job command for its clients as they stand (`phases` by client)."""
    all_users = users(store, clients)
    rotated = all_users[2:]
    keep = {client_role(c.service): phases.get(c.service, Phase()).keep_previous for c in clients}
    return rotation_script(all_users[0], rotated, keep)
