"""PostgreSQL's point-in-time recovery wired into a stack with `backups.store`: the server runs
the catalog's archive image (its image plus pgBackRest) and archives every WAL segment into
the store; the backup job takes pgBackRest's base backups beside it; the drill and
`restore --to-time` restore from that archive. No Pulumi import, no service name: which
service archives is the catalog's (`Backup.archive`), the scripts are infra/objectstore.py's.

How the tool reaches the server, and why (docs/backups.md, "Off-site store"): `archive_command`
runs in the server's container, so pgBackRest must be in the server's image. A base backup
reads the data directory and talks to the server over its Unix socket: the backup job runs on
the server's node with the data volume mounted read-only at the server's path, and the server
keeps a second socket directory on that volume (`socket_dir`). No TLS server, no exec.

The key never reaches env or argv: every container that runs pgBackRest writes its include
file (`INCLUDE`/`KEY_FILE`, mode 0600, an emptyDir or tmpfs) from the mounted secret files at
start (`key_lines`); the configuration file (`CONF`) holds no secret.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import replace

from . import objectstore
from .model import Catalog, ConfigFile, Generated, SecretFile, Service, WalArchive
from .settings import BackupStore, Settings
from .stores.postgres import PG_SOCKET

CONF_DIR = "/etc/pgbackrest"
CONF = f"{CONF_DIR}/pgbackrest.conf"
"""pgBackRest's configuration (no secret): a ConfigMap / an uploaded file on the server."""
SPOOL = "/var/spool/pgbackrest"
"""The asynchronous archive's spool, locks and the include directory: an emptyDir / tmpfs."""
INCLUDE = f"{SPOOL}/conf.d"
KEY_FILE = f"{INCLUDE}/store-key.conf"
SOCKET = "run"
"""The server's second socket directory, on the data volume (the backup job connects there)."""


def archive_of(service: Service) -> WalArchive | None:
    return service.backup.archive if service.backup is not None else None


def archiving(settings: Settings) -> bool:
    """The stack archives: backups on and a store set."""
    return settings.backups.enabled and settings.backups.store is not None


def image(settings: Settings, service: Service, archive: WalArchive) -> str:
    """The archive image: `images.registry`/name, with the tag of the catalog's image."""
    tag = service.image.rsplit(":", 1)[1] if ":" in service.image.rsplit("/", 1)[-1] else "latest"
    return f"{settings.images.registry.rstrip('/')}/{archive.image}:{tag}"


def data_mount(service: Service) -> str:
    """Mount path of the data volume."""
    archive = archive_of(service)
    assert archive is not None
    return next(v.path for v in service.volumes if v.name == archive.volume)


def pg_data(service: Service) -> str:
    """The data directory (PGDATA, else the volume's mount): pgBackRest's pg1-path."""
    return next((str(v) for k, v in service.env if k == "PGDATA"), data_mount(service))


def socket_dir(service: Service) -> str:
    return f"{data_mount(service)}/{SOCKET}"


def key_files(catalog: Catalog, store: BackupStore) -> dict[str, str]:
    """The store's secrets pgBackRest needs (file name as objectstore.SECRET_KEYS -> credential id)."""
    files = set()
    if store.credentials != "workloadIdentity":
        files |= {"access-key-id", "secret-access-key"}
    if store.encryption == "client":
        files.add("passphrase")
    by_key = {c.config_key: c.id for c in catalog.credentials.values() if c.store}
    return {f: by_key[objectstore.SECRET_KEYS[f]] for f in sorted(files)}


def conf(store: BackupStore, service: Service, retention: int) -> str:
    """pgBackRest's configuration for the service (objectstore.pgbackrest_conf)."""
    assert service.connection is not None
    port = service.port(service.backup.port if service.backup and service.backup.port else service.ports[0].name)
    return objectstore.pgbackrest_conf(store, pg_path=pg_data(service), socket_dir=socket_dir(service),
                                       port=port.container, user=service.connection.user or "",
                                       retention=retention, spool=SPOOL, log_dir=f"{SPOOL}/log")


def key_lines(store: BackupStore, paths: Mapping[str, str], include: str = INCLUDE) -> list[str]:
    """Write pgBackRest's include file with the key (objectstore.pgbackrest_secret_conf's
    content) from the secret files `paths` (file name as SECRET_KEYS -> path): the values go
    through `$(cat ...)` into printf, a shell builtin, never into argv or the environment."""
    q = shlex.quote
    out = [f"umask 077; mkdir -p {q(include)} {q(SPOOL)}/log",
           "{ echo '[global]'"]
    if "access-key-id" in paths:
        out += [f"""  printf 'repo1-s3-key=%s\\n' "$(cat {q(paths['access-key-id'])})\"""",
                f"""  printf 'repo1-s3-key-secret=%s\\n' "$(cat {q(paths['secret-access-key'])})\""""]
    if "passphrase" in paths:
        out.append(f"""  printf 'repo1-cipher-pass=%s\\n' "$(cat {q(paths['passphrase'])})\"""")
    out.append(f"}} > {q(include)}/store-key.conf")
    return out


def server_prelude(store: BackupStore, service: Service, paths: Mapping[str, str]) -> str:
    """Before the server's own start wrapper (`sh -c`, "$@" is it): the socket directory on the
    volume, the include file with the key, and, once the server answers there, the stanza
    created (idempotent: archive-push fails until it exists). The background subshell always
    exits 0 (the postmaster is its parent after `exec`)."""
    q = shlex.quote
    user = service.connection.user if service.connection else ""
    return "\n".join([
        "set -eu",
        f"mkdir -p {q(socket_dir(service))}",
        *key_lines(store, paths),
        f"(for i in $(seq 300); do pg_isready -q -h {q(socket_dir(service))} -U {q(user or '')} && break; "
        f"sleep 1; done; {objectstore.pgbackrest(CONF, INCLUDE, 'stanza-create')} "
        "|| echo 'optiinfra: pgBackRest stanza-create failed (the archive is failing)' >&2; exit 0) &",
        'exec "$@"',
    ])


def archived(catalog: Catalog, settings: Settings) -> Catalog:
    """The catalog as a stack with a store runs it: each service with `Backup.archive` runs the
    archive image with the archive settings (objectstore.archive_settings), a second socket
    directory on its volume, pgBackRest's configuration as a generated file, the spool as a
    writable path, the store's key as secret files, and the pgBackRest drill. Unchanged
    without a store."""
    store = settings.backups.store
    # Workload identity gives the backup jobs' ServiceAccount a role, not the server's pod:
    # there PostgreSQL keeps the daily dump (docs/backups.md).
    if store is None or not archiving(settings) or store.credentials == "workloadIdentity":
        return catalog
    out = dict(catalog.services)
    for name, svc in catalog.services.items():
        archive = archive_of(svc)
        if archive is None or svc.backup is None:
            continue
        files = key_files(catalog, store)
        paths = {f: SecretFile(cred, ()).path_on(settings.target) for f, cred in files.items()}
        settings_args = [a for s in objectstore.archive_settings(store, CONF, INCLUDE) for a in ("-c", s)]
        # The image's socket directory first (the start wrapper and the health check use it).
        sockets = f"unix_socket_directories={PG_SOCKET},{socket_dir(svc)}"
        out[name] = replace(
            svc, image=image(settings, svc, archive),
            command=("sh", "-c", server_prelude(store, svc, paths), "sh", *svc.command, *settings_args,
                     "-c", sockets),
            files=(*svc.files, ConfigFile(CONF, Generated.PGBACKREST_CONF)),
            writable_paths=(*svc.writable_paths, SPOOL),
            secret_files=(*svc.secret_files, *(SecretFile(cred, ()) for cred in files.values())),
            backup=replace(svc.backup, drill="pgbackrest"))
    return replace(catalog, services=out)


def archives(service: Service) -> bool:
    """The service archives its WAL on this stack: the catalog as `archived` made it (its drill
    then restores the archive)."""
    return service.backup is not None and service.backup.drill == "pgbackrest"


def archived_service(services: Mapping[str, Service]) -> Service | None:
    """The one service of the stack that archives (`archives`)."""
    return next((s for s in services.values() if archives(s)), None)


def job_script(store: BackupStore, service: Service, retention: int, body: str, files: Mapping[str, str]) -> str:
    """A job's script around a pgBackRest step: the configuration written to CONF (an emptyDir
    at CONF_DIR: the server's path, so the restore_command a restore writes works in the
    server), the include file from the key files `files` (name as SECRET_KEYS -> path), then
    `body`."""
    return "\n".join(["set -eu", *setup_lines(store, service, retention, files)]) + "\n" + body


def setup_lines(store: BackupStore, service: Service, retention: int, files: Mapping[str, str]) -> list[str]:
    """Write CONF (its content as the server's) and the include file with the key."""
    return [*_conf_lines(store, service, retention), *key_lines(store, files)]


def _conf_lines(store: BackupStore, service: Service, retention: int) -> list[str]:
    return [f"cat > {shlex.quote(CONF)} <<'EOF'", conf(store, service, retention).rstrip("\n"), "EOF"]


def backup_script(store: BackupStore, service: Service, retention: int, files: Mapping[str, str]) -> str:
    """The base backup (objectstore.pitr_backup_script) as the backup job runs it: over the
    server's socket on the data volume, as the superuser (local trust)."""
    return job_script(store, service, retention, _backup_body(store, service), files)


def _backup_body(store: BackupStore, service: Service) -> str:
    assert service.connection is not None
    env = f"export PGHOST={shlex.quote(socket_dir(service))} PGUSER={shlex.quote(service.connection.user or '')}\n"
    return env + objectstore.pitr_backup_script(store, CONF, INCLUDE, database=_database(service))


RECOVERY_WAIT_S = 3300
"""How long the restore waits for its recovery to reach the target (inside the Job's hour)."""


def _restore_body(store: BackupStore, service: Service, to_time: str | None) -> str:
    """pgBackRest's restore (objectstore.pitr_restore_script) into the stopped server's data
    directory, then the recovery run to its end HERE, by a server on a socket in /tmp with the
    archive on (the promotion's new timeline is archived like any WAL), stopped cleanly once
    promoted: the service's pod then starts on promoted data, never recovering under its
    probes (a startup probe would restart a long recovery). A stale `postmaster.pid` (the
    server killed after its grace period, or the disaster itself) is removed first: the steps
    around the restore stop the service and wait for it to be gone before this runs."""
    q = shlex.quote
    data, user = pg_data(service), (service.connection.user if service.connection else "") or ""
    opts = " ".join(f"-c {k}='{v}'" for k, _, v in (a.partition("=") for a in
                                                       objectstore.archive_settings(store, CONF, INCLUDE)))
    psql = f"psql -X -At -h /tmp -U {q(user)} -d postgres"
    return "\n".join([
        f"rm -f {q(data + '/postmaster.pid')}",
        objectstore.pitr_restore_script(CONF, INCLUDE, to_time=to_time).rstrip("\n"),
        f'pg_ctl -D {q(data)} -l /tmp/recovery.log -w -t {RECOVERY_WAIT_S} -o "-c listen_addresses= '
        f'-c unix_socket_directories=/tmp {opts}" start > /dev/null || '
        '{ echo "recovery failed to start:" >&2; tail -n 20 /tmp/recovery.log >&2; exit 1; }',
        f'i=0; until [ "$({psql} -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]; do',
        f'  i=$((i + 2)); [ $i -lt {RECOVERY_WAIT_S} ] || {{ echo "recovery not done after {RECOVERY_WAIT_S}s:" >&2; '
        'tail -n 20 /tmp/recovery.log >&2; exit 1; }',
        "  sleep 2; done",
        f"pg_ctl -D {q(data)} -m fast -w -t 600 stop > /dev/null",
        'echo "recovered and promoted: start the service"',
    ]) + "\n"


def restore_script(store: BackupStore, service: Service, retention: int, files: Mapping[str, str],
                   to_time: str | None) -> str:
    """The point-in-time restore (`_restore_body`) into the stopped server's volume."""
    return job_script(store, service, retention, _restore_body(store, service, to_time), files)


# ---- Docker (dev): the key from the invoking shell's variables, passed by name ----------------


def env_key_lines(store: BackupStore, variables: tuple[str, str], include: str = INCLUDE) -> list[str]:
    """Docker's `key_lines`: pgBackRest's include file written from the container's variables
    `variables` (access key id, secret access key: `docker run --env NAME`, the value from the
    invoking shell, never argv) through printf, a shell builtin, umask 077; the variables are
    then unset (pgBackRest and PostgreSQL never see them). No passphrase: the Docker commands
    refuse client-side encryption first."""
    if store.encryption == "client":
        raise ValueError("client-side encryption needs the passphrase, which the Docker steps do not carry")
    q = shlex.quote
    key_id, secret = variables
    out = [f"umask 077; mkdir -p {q(include)} {q(SPOOL)}/log", "{ echo '[global]'"]
    if store.credentials != "workloadIdentity":
        out += [f"  printf 'repo1-s3-key=%s\\n' \"${key_id}\"",
                f"  printf 'repo1-s3-key-secret=%s\\n' \"${secret}\""]
    out += [f"}} > {q(include)}/store-key.conf", f"unset {key_id} {secret}"]
    return out


def env_setup_lines(store: BackupStore, service: Service, retention: int, variables: tuple[str, str]) -> list[str]:
    """`setup_lines` with the key from the variables (env_key_lines)."""
    return [*_conf_lines(store, service, retention), *env_key_lines(store, variables)]


def env_backup_script(store: BackupStore, service: Service, retention: int, variables: tuple[str, str]) -> str:
    """`backup_script` with the key from the variables: Docker's base-backup step."""
    return "\n".join(["set -eu", *env_setup_lines(store, service, retention, variables)]) + "\n" + \
        _backup_body(store, service)


def env_restore_script(store: BackupStore, service: Service, retention: int, variables: tuple[str, str],
                       to_time: str | None) -> str:
    """`restore_script` with the key from the variables: Docker's `restore --to-time` step."""
    return "\n".join(["set -eu", *env_setup_lines(store, service, retention, variables)]) + "\n" + \
        _restore_body(store, service, to_time)


def mounted_keys(catalog: Catalog, store: BackupStore, secret_dir: str) -> dict[str, str]:
    """The key files as a job mounts them (objectstore.SECRET_MOUNT: named as SECRET_KEYS)."""
    return {f: f"{secret_dir}/{f}" for f in key_files(catalog, store)}


def _database(service: Service) -> str:
    """The database the canary row goes to: the image's POSTGRES_DB (the catalog sets it)."""
    return next(str(v) for k, v in service.env if k == "POSTGRES_DB")
