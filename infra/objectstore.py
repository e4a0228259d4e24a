"""The off-site copy: scripts that put backups into the stack's S3-compatible object store
(`backups.store`), PostgreSQL's continuous WAL archive there through pgBackRest, and the
restore drills that prove a backup restores. No Pulumi import, no service name: what a
service is comes from the catalog (`Service`), where the store is from the settings.

Two clients, both maintained tools that speak S3 (AWS, GCS's S3 API, MinIO, Ceph RGW):
- rclone for files (Redis' RDB, Grafana's database, ClickHouse's and Qdrant's directories):
  its remote is configured only through `RCLONE_CONFIG_*` variables (no config file, no
  argument carries a key); with `env_auth` it takes the access key from `AWS_ACCESS_KEY_ID`
  / `AWS_SECRET_ACCESS_KEY`, or from the cloud's workload identity when those are unset;
- pgBackRest for PostgreSQL (base backups and the WAL archive, its `s3` repository type):
  its configuration file carries no secret; the key sits in a second file in its include
  directory (a Secret mounted as a file on Kubernetes), never in argv or the environment.

Every secret a script needs is read from a file (`$(cat ...)` of the shell: never an argument).
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from . import backup
from .model import Service
from .settings import BackupStore

STANZA = "optiinfra"
"""pgBackRest's name for the one PostgreSQL cluster it archives."""
REMOTE = "store"
"""rclone's name of the store (its `RCLONE_CONFIG_STORE_*` variables)."""
SEALED = "sealed"
"""rclone's crypt remote over the store (client-side encryption)."""
CANARY_SCHEMA = "optiinfra_backup"
"""PostgreSQL: the schema of the canary table each backup run writes a row to."""
CANARY_KEY = "optiinfra:backup-canary"
"""Redis: the key each backup run sets before it reads the RDB."""

SECRET_KEYS = {
    "access-key-id": "backupStoreAccessKeyId",
    "secret-access-key": "backupStoreSecretAccessKey",
    "passphrase": "backupEncryptionPassphrase",
}
"""The store's stack secrets (file name under the secret directory -> Pulumi config key)."""


RCLONE_IMAGE = "rclone/rclone:1.68.2"
"""The image of the upload step on Kubernetes (the services' images carry no rclone)."""
SECRET_MOUNT = "/run/secrets/optiinfra-backup-store"
"""Where a backup pod finds the store's secrets (files named as SECRET_KEYS)."""


def endpoint_host_port(store: BackupStore) -> tuple[str, int]:
    """The store endpoint's host and port (the scheme's default when it names none)."""
    u = urlsplit(store.endpoint)
    return u.hostname or "", u.port or (443 if u.scheme == "https" else 80)


def endpoint_cidrs(store: BackupStore, outside: tuple[str, ...]) -> tuple[str, ...]:
    """Where the store is, as ipBlocks: its address alone when the endpoint is an IP literal,
    else the stack's outside ranges (a NetworkPolicy cannot name a host)."""
    host, _ = endpoint_host_port(store)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return outside
    return (f"{ip}/{ip.max_prefixlen}",)


def upload_newest_script(store: BackupStore, access: StoreAccess, service: Service, directory: str,
                         retention: int) -> str:
    """A step of its own after the backup wrote into `directory`: upload the newest backup
    of the service there into the store (`upload_lines`). Fails when there is none."""
    q = shlex.quote
    return "\n".join([
        "set -eu",
        f"dir={q(directory)}",
        f'name=$(ls -1 "$dir" | grep -E {q("^" + service.name + "-[0-9]{8}T[0-9]{6}Z")} | sort -r | head -n 1)',
        f'[ -n "$name" ] || {{ echo "no backup of {service.name} in $dir" >&2; exit 1; }}',
        *store_preamble(store, access), *upload_lines(store, service, retention)]) + "\n"


@dataclass(frozen=True)
class StoreAccess:
    """Where a job finds the store's secrets (a directory of files named as SECRET_KEYS;
    None: no key, workload identity or the environment)."""

    secret_dir: str | None


def path_of(store: BackupStore, service: Service) -> str:
    """The store path (bucket and prefix) of a service's backups."""
    return f"{store.bucket}/{store.prefix}/{service.name}"


def _remote(store: BackupStore) -> str:
    return SEALED if store.encryption == "client" else REMOTE


def rclone_env(store: BackupStore) -> dict[str, str]:
    """The rclone remote `store` (and `sealed` over it for client-side encryption), as the
    variables rclone reads its configuration from: no secret among them."""
    p = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    env = {p + "TYPE": "s3", p + "PROVIDER": "Other", p + "ENV_AUTH": "true", p + "ENDPOINT": store.endpoint,
           p + "REGION": store.region, p + "FORCE_PATH_STYLE": "true" if store.path_style else "false",
           # rclone otherwise tries to create the bucket: a missing bucket must fail, not appear.
           p + "NO_CHECK_BUCKET": "true", "RCLONE_S3_NO_CHECK_BUCKET": "true"}
    if store.encryption == "sse-s3":
        env[p + "SERVER_SIDE_ENCRYPTION"] = "AES256"
    elif store.encryption == "sse-kms":
        env[p + "SERVER_SIDE_ENCRYPTION"] = "aws:kms"
        env[p + "SSE_KMS_KEY_ID"] = store.kms_key_id or ""
    elif store.encryption == "client":
        s = f"RCLONE_CONFIG_{SEALED.upper()}_"
        env.update({s + "TYPE": "crypt", s + "REMOTE": f"{REMOTE}:", s + "FILENAME_ENCRYPTION": "off",
                    s + "DIRECTORY_NAME_ENCRYPTION": "false"})
    return env


def _exports(env: dict[str, str]) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]


def _secret_lines(store: BackupStore, access: StoreAccess) -> list[str]:
    """Read the key (and passphrase) from files into the variables rclone reads."""
    lines: list[str] = []
    d = access.secret_dir
    if d is None:
        return lines
    q = shlex.quote
    if store.credentials != "workloadIdentity":
        lines += [f'AWS_ACCESS_KEY_ID="$(cat {q(d + "/access-key-id")})"; export AWS_ACCESS_KEY_ID',
                  f'AWS_SECRET_ACCESS_KEY="$(cat {q(d + "/secret-access-key")})"; export AWS_SECRET_ACCESS_KEY']
    if store.encryption == "client":
        # rclone keeps crypt passwords obscured; `obscure -` reads the passphrase from stdin.
        lines.append(f'RCLONE_CONFIG_{SEALED.upper()}_PASSWORD="$(rclone obscure - < {q(d + "/passphrase")})"; '
                     f'export RCLONE_CONFIG_{SEALED.upper()}_PASSWORD')
    return lines


def store_preamble(store: BackupStore, access: StoreAccess) -> list[str]:
    """The lines that configure rclone for the store (set -eu is the caller's)."""
    return [*_exports(rclone_env(store)), *_secret_lines(store, access)]


def upload_lines(store: BackupStore, service: Service, retention: int) -> list[str]:
    """After a backup script wrote `$dir/$name` (backup.py): copy it into the store, check
    the copy's size, then expire by count (keep the newest `retention`) and by age
    (`keepDays`; never the newest). Any failure fails the run."""
    dest = f"{_remote(store)}:{path_of(store, service)}"
    q = shlex.quote
    return [
        f"dest={q(dest)}",
        'if [ -d "$dir/$name" ]; then rclone copy --no-traverse "$dir/$name" "$dest/$name"; '
        'else rclone copyto --no-traverse "$dir/$name" "$dest/$name"; fi',
        # The store's listing must show it (a store that accepted nothing fails here).
        'rclone lsf "$dest/" | grep -qx -- "$name/\\{0,1\\}" || { echo "upload not listed: $dest/$name" >&2; exit 1; }',
        'echo "uploaded: $dest/$name"',
        f'rclone lsf "$dest/" | grep -E {q("^" + service.name + "-[0-9]{8}T[0-9]{6}Z")} | sort -r '
        f'| tail -n +{retention + 1} | while read -r old; do rclone purge "$dest/$old" 2>/dev/null '
        '|| rclone deletefile "$dest/$old"; echo "expired: $dest/$old"; done',
        f'newest=$(rclone lsf "$dest/" | grep -E {q("^" + service.name + "-[0-9]{8}T[0-9]{6}Z")} '
        '| sort -r | head -n 1)',
        f'rclone delete --min-age {store.keep_days}d --exclude "$newest" --exclude "$newest**" "$dest/"',
    ]


def fetch_newest_lines(store: BackupStore, service: Service, into: str, name: str | None = None) -> list[str]:
    """Download the newest backup of a service from the store (or the one named `name`) into
    directory `into` (a shell word, e.g. "$work", expanded by the script); sets
    `$name` (its name) and `$src` (its local path). Fails when there is none."""
    dest = f"{_remote(store)}:{path_of(store, service)}"
    q = shlex.quote
    pick = f"grep -E {q('^' + service.name + '-[0-9]{8}T[0-9]{6}Z')}"
    if name is not None:  # exactly that name: a file, or a directory (listed with a slash)
        pick = f"grep -Fx -e {q(name.rstrip('/'))} -e {q(name.rstrip('/') + '/')}"
    return [
        f"dest={q(dest)}",
        f'name=$(rclone lsf "$dest/" | {pick} | sort -r | head -n 1 | sed "s:/$::")',
        f'[ -n "$name" ] || {{ echo "no backup {name or "of " + service.name} in $dest" >&2; exit 1; }}',
        f'src="{into}/$name"',
        'rclone copy "$dest/" "$(dirname "$src")" --include "/$name" --include "/$name/**"',
        'test -e "$src" || { echo "download failed: $dest/$name" >&2; exit 1; }',
    ]


# ---- PostgreSQL: pgBackRest ---------------------------------------------------------


def pgbackrest_conf(store: BackupStore, *, pg_path: str, socket_dir: str, port: int, user: str,
                    retention: int, spool: str, log_dir: str) -> str:
    """pgBackRest's configuration: the S3 repository, the one stanza, retention, compression,
    asynchronous archiving. No secret: the key is in `pgbackrest_secret_conf` (an include).
    pgBackRest speaks S3 over TLS only: an http:// endpoint is refused here."""
    if not store.endpoint.startswith("https://"):
        raise ValueError(f"pgBackRest needs an https:// endpoint, not {store.endpoint}")
    host = store.endpoint.split("://", 1)[1].rstrip("/")
    host_only, _, port_s = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    lines = [
        "[global]",
        "repo1-type=s3",
        f"repo1-s3-endpoint={host_only}",
        *([f"repo1-storage-port={port_s}"] if port_s else []),
        f"repo1-s3-bucket={store.bucket}",
        f"repo1-s3-region={store.region}",
        f"repo1-path=/{store.prefix}/pgbackrest",
        f"repo1-s3-uri-style={'path' if store.path_style else 'host'}",
        f"repo1-s3-key-type={'web-id' if store.credentials == 'workloadIdentity' else 'shared'}",
        # Full backups kept by count; WAL older than the oldest kept full backup expires with it.
        f"repo1-retention-full={retention}",
        "repo1-retention-full-type=count",
        "compress-type=zst",
        "compress-level=3",
        "archive-async=y",
        # What an asynchronous archive-get prefetches into the spool (default 128 MiB): half of
        # the 64 MiB spool volume, whose limit evicts the pod (a restore's or a drill's recovery).
        "archive-get-queue-max=33554432",
        f"spool-path={spool}",
        f"lock-path={spool}/lock",
        "process-max=2",
        f"log-path={log_dir}",
        "log-level-console=info",
        "log-level-file=off",
        "start-fast=y",
        "",
        f"[{STANZA}]",
        f"pg1-path={pg_path}",
        f"pg1-socket-path={socket_dir}",
        f"pg1-port={port}",
        f"pg1-user={user}",
    ]
    if store.encryption == "client":
        lines[1:1] = ["repo1-cipher-type=aes-256-cbc"]
    if store.encryption == "sse-kms":
        lines[1:1] = [f"repo1-s3-kms-key-id={store.kms_key_id}"]
    return "\n".join(lines) + "\n"


def pgbackrest_secret_conf(store: BackupStore, key_id: str, secret: str, passphrase: str = "") -> str:
    """The include file with the key (a Secret's file on Kubernetes; never logged)."""
    lines = ["[global]"]
    if store.credentials != "workloadIdentity":
        lines += [f"repo1-s3-key={key_id}", f"repo1-s3-key-secret={secret}"]
    if store.encryption == "client":
        lines.append(f"repo1-cipher-pass={passphrase}")
    return "\n".join(lines) + "\n"


def pgbackrest(conf: str, include: str, *args: str) -> str:
    """One pgBackRest command line (its config and include directory first)."""
    return " ".join(shlex.quote(a) for a in ("pgbackrest", f"--config={conf}", f"--config-include-path={include}",
                                             f"--stanza={STANZA}", *args))


def archive_settings(store: BackupStore, conf: str, include: str) -> list[str]:
    """The server settings of continuous WAL archiving (`-c name=value` each): every
    completed segment pushed by pgBackRest, a segment forced at least every
    `archiveTimeoutS` so a quiet server's recovery point stays within it."""
    return ["wal_level=replica", "archive_mode=on",
            f"archive_command={pgbackrest(conf, include, 'archive-push', '%p')}",
            f"archive_timeout={store.archive_timeout_s}"]


def canary_sql(token: str) -> str:
    """The row a backup run writes first (its token and time): a restore must bring it back."""
    return (f"CREATE SCHEMA IF NOT EXISTS {CANARY_SCHEMA}; "
            f"CREATE TABLE IF NOT EXISTS {CANARY_SCHEMA}.canary "
            "(token text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now()); "
            f"INSERT INTO {CANARY_SCHEMA}.canary (token) VALUES ('{token}')")


def pitr_backup_script(store: BackupStore, conf: str, include: str, *, database: str, kind: str = "full") -> str:
    """One scheduled base backup: the stanza created once (idempotent), the canary row
    written, then `pgbackrest backup` and `check` (which proves a WAL segment reaches the
    archive). Connects over the local socket as pgBackRest must. Fails on any error."""
    if kind not in ("full", "diff", "incr"):
        raise ValueError(f"not a pgBackRest backup type: {kind}")
    def pb(*a: str) -> str:
        return pgbackrest(conf, include, *a)

    return "\n".join([
        "set -eu",
        pb("stanza-create"),
        'token="backup-$(date -u +%Y%m%dT%H%M%SZ)"',
        f'psql -X -q -v ON_ERROR_STOP=1 -d {shlex.quote(database)} -c "{canary_sql("$token")}"',
        pb("backup", f"--type={kind}"),
        pb("check"),
        'echo "backup written: $token"',
    ]) + "\n"


def pgbackrest_time(iso: str) -> str:
    """An ISO 8601 time with a zone as pgBackRest reads a target: `YYYY-MM-DD HH:MM:SS.mmm+00`
    in UTC (it refuses the ISO `T` and colon forms). Raises ValueError without a zone."""
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{iso!r} has no time zone; write e.g. 2026-12-02T02:17:00Z")
    u = t.astimezone(UTC)
    return u.strftime("%Y-%m-%d %H:%M:%S.") + f"{u.microsecond // 1000:03d}+00"


def pitr_restore_script(conf: str, include: str, *, to_time: str | None) -> str:
    """Restore the data directory (the server stopped) to `to_time` (an ISO timestamp
    with zone: the last commit at or before it), or to the end of the archive; the server
    then promotes on its own when it reaches the target."""
    args = ["restore", "--delta"]
    target = pgbackrest_time(to_time) if to_time else ""
    if target:
        args += ["--type=time", f"--target={target}", "--target-action=promote"]
    done = f'echo "restored to {target or "end of archive"}"'
    return "set -eu\n" + pgbackrest(conf, include, *args) + "\n" + done + "\n"


# ---- restore drills -------------------------------------------------------------------

DRILL_METRICS = ("optiinfra_backup_drill_success", "optiinfra_backup_drill_rpo_seconds",
                 "optiinfra_backup_drill_rto_seconds", "optiinfra_backup_drill_timestamp_seconds")
"""The series a drill writes (Prometheus text format) whether it passes or fails."""


def _metrics_lines(service: Service) -> list[str]:
    """Write the drill's four series from `$ok`, `$rpo`, `$rto` to `$metrics` (through a
    temporary name, so a reader never sees half a file)."""
    q = shlex.quote
    lbl = f'{{service="{service.name}"}}'
    return [
        '{ echo "# TYPE optiinfra_backup_drill_success gauge"',
        f"  printf '%s %s\\n' {q('optiinfra_backup_drill_success' + lbl)} \"$ok\"",
        f"  printf '%s %s\\n' {q('optiinfra_backup_drill_rpo_seconds' + lbl)} \"$rpo\"",
        f"  printf '%s %s\\n' {q('optiinfra_backup_drill_rto_seconds' + lbl)} \"$rto\"",
        f"  printf '%s %s\\n' {q('optiinfra_backup_drill_timestamp_seconds' + lbl)} \"$(date +%s)\"; }} "
        '> "$metrics.tmp"',
        'mv -f "$metrics.tmp" "$metrics"',
    ]


def _drill_frame(service: Service, metrics_file: str, shared: str = "") -> list[str]:
    """Start of every drill: a scratch directory, and a trap that on any exit writes the
    metrics file (success 0 unless the script reached its end) and cleans up. `shared`: the
    directory the drill's steps share (a pod's emptyDir), where the fetch step recorded
    when it started (the RTO counts the download) and what it downloaded; empty: a
    temporary directory, the script fetches itself."""
    q = shlex.quote
    if shared:
        start = [f"shared={q(shared)}", 'started=$(cat "$shared/started" 2>/dev/null || date +%s)',
                 'work="$shared/restore"; rm -rf "$work"; mkdir -p "$work"']
        extra = ' "$shared/backup"'
    else:
        start = ["started=$(date +%s)", "work=$(mktemp -d)"]
        extra = ""
    return [
        "set -eu",
        *start,
        'ok=0; rpo=-1; rto=-1; pid=""',
        f"metrics={q(metrics_file)}",
        "finish() {",
        '  [ -z "$pid" ] || cleanup_server',
        *("  " + line for line in _metrics_lines(service)),
        f'  rm -rf "$work"{extra}',
        "}",
        "trap finish EXIT",
    ]


def _redis_restore_lines(port: int) -> list[str]:
    """Load `$src` (an RDB) into a throwaway redis-server on 127.0.0.1:`port` (no persistence),
    check the canary key and that it holds keys besides it; sets rto, rpo, ok."""
    return [
        'cleanup_server() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }',
        f'redis-server --bind 127.0.0.1 --port {port} --dir "$(dirname "$src")" --dbfilename "$(basename "$src")" '
        "--appendonly no --save '' --protected-mode yes > \"$work/server.log\" 2>&1 & pid=$!",
        f'r() {{ redis-cli -h 127.0.0.1 -p {port} --no-auth-warning "$@"; }}',
        "i=0; until [ \"$(r ping 2>/dev/null)\" = PONG ]; do",
        '  kill -0 "$pid" 2>/dev/null || { echo "restore failed: redis-server did not load $name:" >&2; '
        'tail -n 5 "$work/server.log" >&2; pid=""; exit 1; }',
        '  i=$((i + 1)); [ $i -lt 600 ] || { echo "restore failed: not answering after 60s" >&2; exit 1; }',
        "  sleep 0.1; done",
        'rto=$(( $(date +%s) - started ))',
        f'canary=$(r GET {shlex.quote(CANARY_KEY)})',
        f'[ -n "$canary" ] || {{ echo "drill failed: canary {CANARY_KEY} missing in $name" >&2; exit 1; }}',
        'keys=$(r DBSIZE)',
        '[ "$keys" -gt 1 ] || { echo "drill failed: $name holds no data besides the canary" >&2; exit 1; }',
        'rpo=$(( $(date +%s) - canary ))',
        'ok=1',
        'echo "drill passed: $name, $keys keys, canary at $canary, RPO ${rpo}s, RTO ${rto}s"',
    ]


def redis_drill_script(store: BackupStore, access: StoreAccess, service: Service, *, port: int,
                       metrics_file: str) -> str:
    """Restore the newest RDB of the store into a throwaway redis-server on 127.0.0.1:`port`
    (no persistence), check the canary key the backup wrote and that it has keys, record
    RPO (age of the canary) and RTO (download to answering), stop it, clean up."""
    lines = [*_drill_frame(service, metrics_file), *store_preamble(store, access),
             *fetch_newest_lines(store, service, "$work"), *_redis_restore_lines(port)]
    return "\n".join(lines) + "\n"


def pg_drill_script(store: BackupStore, access: StoreAccess, conf: str, include: str, *, port: int,
                    user: str, database: str, metrics_file: str, service: Service, pg_bin: str = "") -> str:
    """Restore the newest base backup and the whole WAL archive into a throwaway cluster
    (socket only, port `port`, no archiving), wait for the end of recovery, check the
    newest canary row and that user tables came back, record RPO (age of the last replayed
    commit) and RTO (restore start to promoted), stop it, clean up."""
    del access  # pgBackRest reads its key from the include directory
    lines = [*_drill_frame(service, metrics_file),
             *_pgbackrest_restore_lines(conf, include, port=port, user=user, database=database, pg_bin=pg_bin)]
    return "\n".join(lines) + "\n"


def _pgbackrest_restore_lines(conf: str, include: str, *, port: int, user: str, database: str,
                              pg_bin: str = "") -> list[str]:
    """pg_drill_script's body (after the frame): restore into `$work/data`, start, check; sets
    rto, rpo, ok."""
    q = shlex.quote
    b = (pg_bin.rstrip("/") + "/") if pg_bin else ""
    psql = f'psql -X -At -h "$work" -p {port} -U {q(user)} -d {q(database)} -v ON_ERROR_STOP=1'
    return [f'cleanup_server() {{ {b}pg_ctl -D "$work/data" -m immediate -w stop > /dev/null 2>&1 || true; }}',
            pgbackrest(conf, include, "restore") + ' --pg1-path="$work/data" --archive-mode=off',
            f'{b}pg_ctl -D "$work/data" -l "$work/server.log" -w -t 300 -o '
            f'"-c port={port} -c listen_addresses= -c unix_socket_directories=$work -c archive_mode=off" start '
            '> /dev/null || { echo "restore failed: the restored cluster did not start:" >&2; '
            'tail -n 5 "$work/server.log" >&2; exit 1; }',
            'pid=started',
            'i=0; until [ "$(' + psql + ' -c "SELECT pg_is_in_recovery()")" = f ]; do',
            '  i=$((i + 1)); [ $i -lt 3000 ] || { echo "restore failed: still recovering after 300s" >&2; exit 1; }',
            '  sleep 0.1; done',
            'rto=$(( $(date +%s) - started ))',
            f'canary=$({psql} -c "SELECT extract(epoch FROM max(written_at))::bigint FROM {CANARY_SCHEMA}.canary" '
            '2>/dev/null || true)',
            f'[ -n "$canary" ] || {{ echo "drill failed: no canary row in {CANARY_SCHEMA}.canary" >&2; exit 1; }}',
            f'tables=$({psql} -c "SELECT count(*) FROM pg_stat_user_tables WHERE schemaname <> \'{CANARY_SCHEMA}\'")',
            '[ "$tables" -gt 0 ] || { echo "drill failed: no user table restored" >&2; exit 1; }',
            f'last=$({psql} -c "SELECT coalesce(extract(epoch FROM pg_last_xact_replay_timestamp())::bigint, 0)")',
            '[ "$last" -ge "$canary" ] || last=$canary',
            'rpo=$(( $(date +%s) - last ))',
            'ok=1',
            'echo "drill passed: $tables tables, canary at $canary, RPO ${rpo}s, RTO ${rto}s"']


def offsite_backup_script(service: Service, where: backup.Where, retention: int, store: BackupStore,
                          access: StoreAccess) -> str:
    """The backup script (backup.py, into the local first copy) with the catalog's canary
    first and the upload into the store after: the run succeeds only once the store lists it."""
    local = backup.backup_script(service, where, retention, canary=True)
    return local + "\n".join([*store_preamble(store, access), *upload_lines(store, service, retention)]) + "\n"


# ---- the scheduled drill: three steps sharing a directory -------------------------------

DRILL_DEADLINE_S = 3600
"""A scheduled drill that takes longer is killed (its push never happens: BackupDrillFailed
reads it as stale once the schedule's gap and this deadline have passed)."""
DRILL_METRICS_FILE = "metrics.prom"
"""The file in a drill's shared directory its restore step writes the series to."""
DRILL_JOB_LABEL = "optiinfra-backup-drill"
"""The `job` label the drills push under (the Pushgateway's grouping key, with `service`)."""


def _pg_dump_restore_lines(*, port: int, user: str, database: str, pg_bin: str = "") -> list[str]:
    """Restore `$src` (pg_dump's custom format) into a throwaway cluster made here (socket
    only, port `port`, trust, no fsync), check the newest canary row and that every table the
    dump lists came back; sets rto, rpo (age of the canary: the dump was taken right after
    it), ok. Objects are restored without their owners and grants (the roles live in the
    real server, not in this throwaway one)."""
    q = shlex.quote
    b = (pg_bin.rstrip("/") + "/") if pg_bin else ""
    psql = f'{b}psql -X -At -h "$work" -p {port} -U {q(user)} -v ON_ERROR_STOP=1'
    return [
        f'cleanup_server() {{ {b}pg_ctl -D "$work/data" -m immediate -w stop > /dev/null 2>&1 || true; }}',
        # The dump's table of contents: a corrupt or truncated file fails here already.
        f'listed=$({b}pg_restore --list "$src" 2> "$work/list.err") || {{ echo "restore failed: $name is not a '
        'readable dump:" >&2; tail -n 3 "$work/list.err" >&2; exit 1; }',
        f'tables=$(printf \'%s\\n\' "$listed" | awk \'$4 == "TABLE" && $5 != "DATA" && $5 != "{CANARY_SCHEMA}"\' '
        '| wc -l | tr -d " ")',
        f'{b}initdb -D "$work/data" -U {q(user)} --auth=trust -E UTF8 --no-sync > "$work/initdb.log" 2>&1 || '
        '{ echo "restore failed: initdb:" >&2; tail -n 5 "$work/initdb.log" >&2; exit 1; }',
        f'{b}pg_ctl -D "$work/data" -l "$work/server.log" -w -t 120 -o '
        f'"-c port={port} -c listen_addresses= -c unix_socket_directories=$work -c fsync=off '
        '-c shared_buffers=32MB" start > /dev/null || { echo "restore failed: the throwaway server did not start:" '
        '>&2; tail -n 5 "$work/server.log" >&2; exit 1; }',
        'pid=started',
        f'{psql} -d postgres -q -c "CREATE DATABASE {database}"',
        f'{b}pg_restore -h "$work" -p {port} -U {q(user)} -d {q(database)} --no-owner --no-privileges '
        '--exit-on-error "$src" 2> "$work/restore.err" || { echo "restore failed: pg_restore of $name:" >&2; '
        'tail -n 5 "$work/restore.err" >&2; exit 1; }',
        'rto=$(( $(date +%s) - started ))',
        f'canary=$({psql} -d {q(database)} -c "SELECT extract(epoch FROM max(written_at))::bigint '
        f'FROM {CANARY_SCHEMA}.canary" 2>/dev/null || true)',
        f'[ -n "$canary" ] || {{ echo "drill failed: no canary row in {CANARY_SCHEMA}.canary of $name" >&2; '
        'exit 1; }',
        f'restored=$({psql} -d {q(database)} -c "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN '
        f"('pg_catalog', 'information_schema', '{CANARY_SCHEMA}')\")",
        '[ "$restored" -eq "$tables" ] || { echo "drill failed: $restored tables restored, the dump lists $tables" '
        '>&2; exit 1; }',
        '[ "$tables" -gt 0 ] || { echo "drill failed: $name holds no table besides the canary" >&2; exit 1; }',
        'rpo=$(( $(date +%s) - canary ))',
        'ok=1',
        'echo "drill passed: $name, $tables tables, canary at $canary, RPO ${rpo}s, RTO ${rto}s"',
    ]


@dataclass(frozen=True)
class DrillSteps:
    """A scheduled drill as three scripts run in order, sharing directory `shared`: each in
    the image that has its tools (a pod's init containers and its container on Kubernetes)."""

    fetch: str
    """rclone: record the start, download the newest backup of the store."""
    restore: str
    """The store's own image: restore into a throwaway server, check, write the metrics file."""
    push: str
    """busybox wget: push the metrics file to the Pushgateway; fails when the drill failed."""
    metrics_file: str


def drill_steps(store: BackupStore, access: StoreAccess, service: Service, *, shared: str, port: int,
                push_url: str, user: str = "", database: str = "", pg_bin: str = "",
                pgbackrest_setup: tuple[str, str, list[str]] | None = None) -> DrillSteps:
    """The drill of a service whose catalog Backup names a `drill` ("rdb", "pg_dump",
    "pgbackrest"): restore into a throwaway server on 127.0.0.1 / a socket at `port`, inside
    `shared`. `push_url`: the Pushgateway's base URL (http://host:port). `pgbackrest_setup`
    (pgbackrest only): its configuration path, include directory, and the lines that write
    them (infra/pitr.py); pgBackRest then fetches from the store itself, the fetch step only
    records the start."""
    kind = service.backup.drill if service.backup else ""
    q = shlex.quote
    metrics = f"{shared}/{DRILL_METRICS_FILE}"
    if kind == "pgbackrest":
        if pgbackrest_setup is None:
            raise ValueError(f"{service.name}: the pgBackRest drill needs its configuration")
        conf, include, setup = pgbackrest_setup
        fetch = "\n".join(["set -eu", f"shared={q(shared)}", f'rm -rf "$shared/restore" "$shared/{DRILL_METRICS_FILE}"',
                           'date +%s > "$shared/started"',
                           'echo "nothing to download: pgBackRest restores from the store itself"']) + "\n"
        restore = "\n".join([*_drill_frame(service, metrics, shared), *setup, *_pgbackrest_restore_lines(
            conf, include, port=port, user=user, database=database, pg_bin=pg_bin)]) + "\n"
        return DrillSteps(fetch, restore, _push_script(service, metrics, push_url), metrics)
    fetch = "\n".join([
        "set -eu", f"shared={q(shared)}", f'rm -rf "$shared/fetched" "$shared/backup" "$shared/{DRILL_METRICS_FILE}"',
        'date +%s > "$shared/started"',
        *store_preamble(store, access), *fetch_newest_lines(store, service, "$shared/backup"),
        'printf \'%s\\n\' "$src" > "$shared/fetched"', 'echo "downloaded: $dest/$name"']) + "\n"
    got = ['src=$(cat "$shared/fetched" 2>/dev/null) || { echo "drill failed: nothing downloaded '
           '(see the fetch step)" >&2; exit 1; }', 'name=$(basename "$src")']
    if kind == "rdb":
        body = _redis_restore_lines(port)
    elif kind == "pg_dump":
        body = _pg_dump_restore_lines(port=port, user=user, database=database, pg_bin=pg_bin)
    else:
        raise ValueError(f"{service.name} declares no drill")
    restore = "\n".join([*_drill_frame(service, metrics, shared), *got, *body]) + "\n"
    return DrillSteps(fetch, restore, _push_script(service, metrics, push_url), metrics)


def _push_script(service: Service, metrics: str, push_url: str) -> str:
    """The push step: the metrics file to the Pushgateway; fails when the drill failed."""
    q = shlex.quote
    url = f"{push_url.rstrip('/')}/metrics/job/{DRILL_JOB_LABEL}/service/{service.name}"
    return "\n".join([
        "set -eu", f"metrics={q(metrics)}",
        # The restore step never ran to its trap (killed, out of memory): a failure is pushed.
        '[ -s "$metrics" ] || { echo "drill failed: the restore step wrote no result" >&2; ok=0; rpo=-1; rto=-1',
        *("  " + line for line in _metrics_lines(service)), "}",
        f'wget -q -O /dev/null --post-file="$metrics" {q(url)} || {{ echo "push failed: {url}" >&2; exit 1; }}',
        f'echo "pushed to {url}:"; cat "$metrics"',
        "grep -q " + q(f'^optiinfra_backup_drill_success{{service="{service.name}"}} 1$') + ' "$metrics" '
        '|| { echo "drill failed (pushed success 0)" >&2; exit 1; }']) + "\n"


def tolerant(script: str) -> list[str]:
    """Exec form of a step that must not stop the steps after it (an init container's failure
    would end the pod before the push): its failure is logged, its exit status is 0; the
    push step fails the run from the metrics instead."""
    return ["sh", "-c", 'sh -c "$1" || echo "step failed with status $?; the push step reports it" >&2', "sh", script]
