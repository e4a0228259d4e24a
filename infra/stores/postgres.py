"""PostgreSQL's start wrapper: the current credentials and every client's role, applied on each start.

The image's entrypoint sets POSTGRES_PASSWORD only when it creates the cluster, so a rotated
credential would lock every client out, and it creates no other role. The wrapper
(`apply_credentials`) runs before the image's entrypoint and, once the server answers,
applies over the socket, idempotently: the superuser's password, the exporters' read-only
role (pg_monitor), each schema with its owner role, and one login role per client
(`SchemaRoles`; the clients come from their connections, infra/stores/__init__.py).

Plain text generation, no Pulumi import: `sql` and `apply_credentials` take the roles as
arguments, so tests can run them against a real server (tests/test_postgres_rotation.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from ..model import Credential, SchemaRoles, Secret, SecretFile, Service
from . import Client, Phase, client_credential, config_key, secret_var, with_client_env

PG_SOCKET = "/var/run/postgresql"
PG_APPLIED = f"{PG_SOCKET}/optiinfra-credentials-applied"
"""Written by PostgreSQL's wrapper once this start's credentials and roles are applied; its
readiness check requires it (removed first on every start: an emptyDir outlives a restart)."""

LOGIN = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
NOLOGIN = "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def pg_owner(schema: str) -> str:
    """The role that owns an application schema: nobody logs in as it; its clients' roles
    are members and take it as their session role, so what they create belongs to it."""
    return f"optiinfra_{schema}_owner"


def _ensure_role(role: str, attributes: str) -> tuple[str, ...]:
    return (f"SELECT 'CREATE ROLE {role}' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')"
            r"\gexec",
            f"ALTER ROLE {role} WITH {attributes};")


def _schemas(clients: Sequence[Client]) -> tuple[str, ...]:
    """The clients' schemas, in the order they first appear."""
    return tuple(dict.fromkeys(c.schema for c in clients))


def _by_schema(clients: Sequence[Client]) -> tuple[Client, ...]:
    """The clients grouped by schema (schemas in first appearance, clients in their order)."""
    return tuple(c for schema in _schemas(clients) for c in clients if c.schema == schema)


def passwords(admin_env: str, monitor_env: str, clients: Sequence[Client]) -> tuple[tuple[str, str], ...]:
    """(psql variable, container variable) of every password the wrapper applies."""
    return (("pw", admin_env), ("monpw", monitor_env),
            *((f"pw_{c.role}", c.env) for c in _by_schema(clients)))


def sql(monitor: str, clients: Sequence[Client], variables: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """What the wrapper feeds psql (`$POSTGRES_USER` expanded by the shell, `:'pw'` quoted by
    psql), the passwords read from OPTIINFRA_PW_<i> in the order of `variables`."""
    ordered = _by_schema(clients)
    return (
        *(rf"\getenv {var} OPTIINFRA_PW_{i}" for i, (var, _) in enumerate(variables)),
        """ALTER ROLE "$POSTGRES_USER" PASSWORD :'pw';""",
        # Only the roles below may connect (PUBLIC may by default); the image's role is a superuser.
        """REVOKE CONNECT, TEMPORARY ON DATABASE "$POSTGRES_DB" FROM PUBLIC;""",
        *_ensure_role(monitor, f"{LOGIN} PASSWORD :'monpw'"),
        f"GRANT pg_monitor TO {monitor};",
        f"""GRANT CONNECT ON DATABASE "$POSTGRES_DB" TO {monitor};""",
        *(line for schema in _schemas(ordered) for line in (
            *_ensure_role(pg_owner(schema), NOLOGIN),
            f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {pg_owner(schema)};",
            f"""GRANT CONNECT, TEMPORARY ON DATABASE "$POSTGRES_DB" TO {pg_owner(schema)};""")),
        # Each client's two login roles (its own and its twin, `slot_role`), both with the
        # current value: a start ends any rotation's overlap (docs/credentials.md, rotation).
        *(line for c in ordered for role in (c.role, twin(c.role)) for line in (
            *_ensure_role(role, f"{LOGIN} PASSWORD :'pw_{c.role}'"),
            *_member(role, c.schema))),
    )


TWIN = "_b"
"""A client's second login role is its role plus this: slot `b` (slot `a` is the role itself)."""


def twin(role: str) -> str:
    return role + TWIN


def slot_role(role: str, slot: str) -> str:
    """The login role of a client's slot: `a` its role, `b` its twin."""
    return role if slot == "a" else twin(role)


def _member(role: str, schema: str) -> tuple[str, ...]:
    """A client's login role as a member of its schema's owner: connect, session role, search path."""
    return (f"GRANT {pg_owner(schema)} TO {role};",
            f"""GRANT CONNECT ON DATABASE "$POSTGRES_DB" TO {role};""",
            f"ALTER ROLE {role} SET role = '{pg_owner(schema)}';",
            f"ALTER ROLE {role} SET search_path = '{schema}';")


def rotation_sql(clients: Sequence[Client], phases: Mapping[str, Phase]) -> tuple[str, ...]:
    """What the rotation Job feeds psql over the admin connection, in the running server:
    per client, the current value on the login role of its slot (created if missing); the
    other slot's role keeps whatever value it has (`keep`: the consumers still running the
    previous value log in with it) or is closed (`retire`: NOLOGIN, no password). Passwords
    come from OPTIINFRA_PW_<i> (\\getenv), in the order of `clients`."""
    lines: list[str] = [rf"\getenv pw_{i} OPTIINFRA_PW_{i}" for i, _ in enumerate(clients)]
    for i, c in enumerate(clients):
        phase = phases.get(c.service, Phase())
        current, other = slot_role(c.role, phase.slot), slot_role(c.role, phase.other_slot)
        lines += [*_ensure_role(current, f"{LOGIN} PASSWORD :'pw_{i}'"), *_member(current, c.schema)]
        if not phase.keep_previous:
            lines += [*_ensure_role(other, f"{NOLOGIN} PASSWORD NULL")]
    return tuple(lines)


def rotation_script(admin_env: str, clients: Sequence[Client], phases: Mapping[str, Phase]) -> str:
    """The rotation Job's command (`sh -c`): `rotation_sql` through psql as the administrator
    over TCP ($PGHOST, $PGPORT; the admin password from `admin_env` or its _FILE, into
    PGPASSWORD), each client's password from its variable or its _FILE, never argv. Fails
    (non-zero) when a value is missing or a statement fails: the Job fails and the consumers
    do not roll."""
    lines = rotation_sql(clients, phases)
    return (
        "set -e; export PGPASSWORD=\"" + _secret(admin_env) + "\" "
        + " ".join(f'OPTIINFRA_PW_{i}="{_secret(c.env)}"' for i, c in enumerate(clients)) + "; "
        + " ".join(f'[ -n "$OPTIINFRA_PW_{i}" ] || {{ echo "optiinfra: no value in {c.env} or {c.env}_FILE" >&2; '
                   f'exit 1; }};' for i, c in enumerate(clients)) + ' [ -n "$PGPASSWORD" ] || '
        f'{{ echo "optiinfra: no value in {admin_env} or {admin_env}_FILE" >&2; exit 1; }}; '
        'printf "%s\\n" ' + " ".join(_dq(line) for line in lines)
        + ' | psql -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -o /dev/null; '
        'echo "optiinfra: credentials applied"'
    )


def _secret(var: str) -> str:
    """The value of a credential the container gets as `$var` (Docker) or `$var_FILE` (Kubernetes)."""
    return f'${{{var}:-$(cat "${var}_FILE" 2>/dev/null)}}'


def _dq(text: str) -> str:
    """`text` inside shell double quotes (its `$VAR`s expand; a double quote stays one)."""
    return '"' + text.replace('"', '\\"') + '"'


def apply_credentials(admin_env: str, monitor: str, monitor_env: str, clients: Sequence[Client]) -> str:
    """PostgreSQL's wrapper of its image's entrypoint (a `sh -c` script; "$@" is the image's
    command): the current credentials and roles applied on every start.

    On every start, once the server answers on TCP (the entrypoint's first-start server
    listens on the socket only), over the socket (trust for local connections: the image's
    default): set the superuser's password to the current credential, and create or update
    the exporter's read-only role (pg_monitor) and each application's schema, its owner role
    and one login role per client, idempotently. psql takes the passwords from its
    environment (\\getenv), never from argv. Three attempts, then the marker readiness waits
    for (PG_APPLIED): without it the server never turns ready, so clients do not start
    against missing roles and a failure is loud (the startup probe restarts it). The subshell
    always exits 0: the postmaster, its parent after `exec`, treats a child's non-zero exit
    as a crash."""
    variables = passwords(admin_env, monitor_env, clients)
    lines = sql(monitor, clients, variables)
    return (
        f'rm -f "{PG_APPLIED}"; (export '
        + " ".join(f'OPTIINFRA_PW_{i}="{_secret(env)}"' for i, (_, env) in enumerate(variables)) + "; "
        # An empty value would clear the role's password (PostgreSQL takes '' as none): stop, unready.
        + " ".join(f'[ -n "$OPTIINFRA_PW_{i}" ] || {{ echo "optiinfra: could not apply the credentials: no value in '
                   f'{env} or {env}_FILE" >&2; exit 0; }};' for i, (_, env) in enumerate(variables)) + " "
        'for i in $(seq 120); do pg_isready -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" && break; '
        'sleep 1; done; for i in 1 2 3; do printf "%s\\n" ' + " ".join(_dq(line) for line in lines) +
        f' | psql -q -v ON_ERROR_STOP=1 -h {PG_SOCKET} -U "$POSTGRES_USER" -d "$POSTGRES_DB" -o /dev/null '
        f'&& : > "{PG_APPLIED}" && exit 0; '
        'sleep 2; done; echo "optiinfra: could not apply the credentials" >&2; exit 0) & exec docker-entrypoint.sh "$@"'
    )


def granted(store: Service, clients: Sequence[Client]) -> Service:
    """The store with its clients' roles: their credentials, the variables (Docker) and files
    (Kubernetes) they reach the container in, and the start wrapper around its declared
    command (the image's server, run through the image's entrypoint)."""
    grants = store.grants
    assert isinstance(grants, SchemaRoles) and store.connection is not None and store.connection.credential
    ordered = _by_schema(clients)
    wrapper = apply_credentials(secret_var(store, store.connection.credential), grants.monitor,
                                secret_var(store, grants.monitor_credential), ordered)
    creds = tuple(Credential(client_credential(store.name, c.service), config_key(store.name, c.service),
                             f"{grants.label} password of {c.role}, the {c.service}'s role (schema {c.schema})")
                  for c in ordered)
    return replace(
        store,
        command=("sh", "-c", wrapper, "sh", *store.command),
        credentials=(*store.credentials, *creds),
        env=with_client_env(store, tuple((c.env, Secret(cred.id)) for c, cred in zip(ordered, creds, strict=True))),
        secret_files=(*store.secret_files, *(SecretFile(cred.id, (c.env,), f"{c.env}_FILE")
                                             for c, cred in zip(ordered, creds, strict=True))),
    )
