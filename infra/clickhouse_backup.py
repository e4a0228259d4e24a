"""ClickHouse's own `BACKUP DATABASE ... TO S3(...)` into the stack's store (`backups.store`),
for a service whose catalog Backup says `server_store="backup-to-s3"`. The server writes the
backup itself: the data parts as they are on its disk (compressed by their codecs), each
table consistent, incrementally on a base. No Pulumi import, no service name.

Syntax, from ClickHouse's documentation ("BACKUP / RESTORE to or from an S3 endpoint",
clickhouse.com/docs/operations/backup/s3_endpoint, and its settings table):
  BACKUP DATABASE db TO S3('<endpoint>/<path>', '<access key id>', '<secret access key>')
    [SETTINGS base_backup = S3('<endpoint>/<base path>'), use_same_s3_credentials_for_base_backup = 1]
  RESTORE DATABASE db FROM S3('<endpoint>/<path>', ...)
An incremental backup holds only the parts its base lacks; restoring it reads the base too
(the incremental alone is named). `use_same_s3_credentials_for_base_backup` ("Whether base
backup to S3 should inherit credentials from the query") keeps the key out of the base's
expression. Not `ASYNC`: the client waits, so the job's exit status is the backup's.

Credentials: the key is read from files (Kubernetes) or the variables passed by name (Docker)
by the shell, escaped for a SQL string, and the statement reaches clickhouse-client on stdin
through the shell's builtin printf: never an argument, never in the client's environment.
ClickHouse's "Secret masking" page (clickhouse.com/docs/concepts/features/security/
secret-masking) says the arguments a function declares secret, "such as the access keys of
s3", are shown as [HIDDEN] in the query text of query_log and the server's logs; the page
names no version, and it was not tried here (no ClickHouse server on this machine).

What the store's settings map to (otherwise the service keeps its dump and rclone upload,
`fallback_reason`): `sse-s3` needs no header from ClickHouse where the bucket encrypts every
new object (AWS S3 does by default since 2023; set a default encryption on MinIO or Ceph);
`sse-kms` and `client` have no per-statement counterpart in S3(...) that we found (a KMS
header is a per-endpoint server configuration, not rendered here); `workloadIdentity` would
need the server's own pod to carry the identity (the backup job's ServiceAccount does not
help a request the server makes).

Cadence and retention (`FULL_EVERY`): a full backup, then incrementals on it, each on the
full directly (never on another incremental), until FULL_EVERY runs; names say which:
`<service>-<UTC>-full`, `<service>-<UTC>-on-<UTC of its full>`. A backup counts once its
`.backup` metadata file (written last by the server) is in the store. Expiry keeps the
newest `retention` (and by age `keepDays`, never the newest) and every full a kept
incremental is based on, so a kept backup always restores.
"""

from __future__ import annotations

import shlex

from . import objectstore
from .backup import backup_of
from .model import Service
from .settings import BackupStore

FULL_EVERY = 7
"""Runs per chain: a full, then FULL_EVERY - 1 incrementals on it (a week on a daily schedule)."""
TS = "[0-9]{8}T[0-9]{6}Z"
PLAN_DIR = "/plan"
"""Where the steps of a run share the plan (the backup's name and its base): no secret in it."""


def applies(service: Service, store: BackupStore | None) -> bool:
    """The server writes this service's backups into the store itself."""
    b = service.backup
    return (store is not None and b is not None and b.enabled and b.server_store == "backup-to-s3"
            and fallback_reason(store) is None)


def declines(service: Service, store: BackupStore | None) -> bool:
    """The service could write the store itself, but this store's settings rule it out."""
    b = service.backup
    return store is not None and b is not None and b.server_store == "backup-to-s3" and not applies(service, store)


def fallback_reason(store: BackupStore) -> str | None:
    """Why ClickHouse cannot write this store itself (then its dump is uploaded by rclone)."""
    if store.encryption == "client":
        return "ClickHouse's BACKUP TO S3 has no client-side encryption"
    if store.encryption == "sse-kms":
        return "ClickHouse's S3(...) takes no KMS key per statement"
    if store.credentials == "workloadIdentity":
        return "the ClickHouse server's own pod does not carry the workload identity"
    return None


def url(store: BackupStore, service: Service, name: str = "") -> str:
    """`<endpoint>/<bucket>/<prefix>/<service>/<name>` (path style, as ClickHouse parses it)."""
    return f"{store.endpoint.rstrip('/')}/{store.bucket}/{store.prefix}/{service.name}/{name}"


def target(store: BackupStore, service: Service) -> str:
    """The backup target as the CronJob's annotation states it: `s3://<bucket>/<prefix>/<service>/`."""
    return f"s3://{objectstore.path_of(store, service)}/"


def name_pattern(service: Service) -> str:
    """Every backup's name (extended regular expression, whole line)."""
    return f"^{service.name}-{TS}-(full|on-{TS})$"


def sql_string(value: str) -> str:
    """A ClickHouse string literal's body: backslash and quote escaped."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _s3(location: str, key_id: str | None, key: str | None) -> str:
    if key_id is None or key is None:
        return f"S3('{location}')"
    return f"S3('{location}', '{key_id}', '{key}')"


def backup_statement(store: BackupStore, service: Service, name: str, key_id: str, key: str,
                     base: str | None = None) -> str:
    """The BACKUP statement (`key_id`, `key` already escaped with `sql_string`)."""
    db = backup_of(service).database
    stmt = f"BACKUP DATABASE `{db}` TO {_s3(sql_string(url(store, service, name)), key_id, key)}"
    if base:
        stmt += (f" SETTINGS base_backup = {_s3(sql_string(url(store, service, base)), None, None)}, "
                 "use_same_s3_credentials_for_base_backup = 1")
    return stmt


def restore_statement(store: BackupStore, service: Service, name: str, key_id: str, key: str) -> str:
    """The RESTORE statement (into a database dropped first: `drop_statement`)."""
    db = backup_of(service).database
    return (f"RESTORE DATABASE `{db}` FROM {_s3(sql_string(url(store, service, name)), key_id, key)} "
            "SETTINGS use_same_s3_credentials_for_base_backup = 1")


def drop_statement(service: Service) -> str:
    return f"DROP DATABASE IF EXISTS `{backup_of(service).database}` SYNC"


_MARKS = ("\x01N\x01", "\x01I\x01", "\x01K\x01", "\x01B\x01")


def _printf_format(stmt: str) -> str:
    """A statement rendered with the marks as a printf format: %s where each mark was."""
    fmt = stmt.replace("\\", "\\\\").replace("%", "%%")
    for mark in _MARKS:
        fmt = fmt.replace(mark, "%s")
    return fmt + "\\n"


def _listing_lines(service: Service) -> list[str]:
    """rclone: the complete backups in the store (their `.backup` file exists), sorted, into
    `$complete`; a failing listing (key, endpoint, bucket) fails the script."""
    q = shlex.quote
    return [
        "listing=$(rclone lsf --max-depth 2 --files-only --include '/*/.backup' \"$dest/\")",
        f"complete=$(printf '%s\\n' \"$listing\" | sed 's:/\\.backup$::' | {{ grep -E {q(name_pattern(service))} "
        "|| true; } | sort)",
    ]


def _dest(store: BackupStore, service: Service) -> str:
    return f"dest={shlex.quote(objectstore.REMOTE + ':' + objectstore.path_of(store, service))}"


def plan_script(store: BackupStore, access: objectstore.StoreAccess, service: Service,
                plan_dir: str = PLAN_DIR) -> str:
    """rclone, first: decide this run's name and base (full when there is no complete full or
    its chain has FULL_EVERY backups) and write them to `<plan_dir>/plan`."""
    q = shlex.quote
    pre = f"{service.name}-"
    return "\n".join([
        "set -eu", *objectstore.store_preamble(store, access), _dest(store, service), *_listing_lines(service),
        'now=$(date -u +%Y%m%dT%H%M%SZ)',
        "full=$(printf '%s\\n' \"$complete\" | grep -- '-full$' | tail -n 1)",
        'since=0',
        '[ -z "$full" ] || since=$(printf \'%s\\n\' "$complete" | awk -v f="$full" \'seen { n++ } $0 == f { seen = 1 } '
        'END { print n + 0 }\')',
        f'if [ -z "$full" ] || [ "$since" -ge {FULL_EVERY - 1} ]; then',
        f'  name="{pre}$now-full"; base=""',
        "else",
        f'  fts=${{full#{pre}}}; name="{pre}$now-on-${{fts%-full}}"; base="$full"',
        "fi",
        f"printf '%s\\n%s\\n' \"$name\" \"$base\" > {q(plan_dir + '/plan')}",
        'echo "plan: $name${base:+ (incremental on $base)}"',
    ]) + "\n"


def _key_lines(store: BackupStore, access: objectstore.StoreAccess) -> list[str]:
    """The key into `$kid`, `$key`, escaped for a SQL string by sed reading it on stdin."""
    q = shlex.quote
    lines = ["esc() { sed \"s/[\\\\\\\\']/\\\\\\\\&/g\"; }"]
    if access.secret_dir is not None:
        d = access.secret_dir
        lines += [f'kid=$(esc < {q(d + "/access-key-id")})', f'key=$(esc < {q(d + "/secret-access-key")})']
    else:  # Docker: the variables passed by name
        lines += ["kid=$(printf '%s' \"$AWS_ACCESS_KEY_ID\" | esc)",
                  "key=$(printf '%s' \"$AWS_SECRET_ACCESS_KEY\" | esc)",
                  "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY"]
    del store
    return lines


CLIENT_TIMEOUT_S = 3300
"""How long the client waits for a synchronous BACKUP or RESTORE to answer (its default, 300 s,
fails a large backup the server goes on writing: ClickHouse/ClickHouse#61871); inside the job's hour."""


def _client(host: str, port: int, user: str) -> str:
    return (f"ch() {{ clickhouse-client --host {host} --port {port} --user {shlex.quote(user)} "
            f'--receive_timeout={CLIENT_TIMEOUT_S} --send_timeout={CLIENT_TIMEOUT_S} "$@"; }}')


def _read_plan(service: Service, plan_dir: str) -> list[str]:
    q = shlex.quote
    return [
        f"plan={q(plan_dir + '/plan')}",
        'name=$(sed -n 1p "$plan"); base=$(sed -n 2p "$plan")',
        f"printf '%s\\n' \"$name\" | grep -qE {q(name_pattern(service))} || "
        '{ echo "no backup planned (see the plan step)" >&2; exit 1; }',
        f"[ -z \"$base\" ] || printf '%s\\n' \"$base\" | grep -qE {q(f'^{service.name}-{TS}-full$')} || "
        '{ echo "bad base in the plan: $base" >&2; exit 1; }',
    ]


def backup_script(store: BackupStore, access: objectstore.StoreAccess, service: Service, *, host: str, port: int,
                  user: str, password_file: str | None, plan_dir: str = PLAN_DIR) -> str:
    """clickhouse-client, second: send the BACKUP statement of the plan on stdin."""
    b = backup_of(service)
    q = shlex.quote
    full = _printf_format(backup_statement(store, service, _MARKS[0], _MARKS[1], _MARKS[2]))
    incr = _printf_format(backup_statement(store, service, _MARKS[0], _MARKS[1], _MARKS[2], base=_MARKS[3]))
    lines = ["set -eu", "umask 077"]
    if password_file:
        lines.append(f'{b.password_env}="$(cat {q(password_file)})"; export {b.password_env}')
    lines += [
        *_key_lines(store, access), *_read_plan(service, plan_dir), _client(host, port, user),
        f'if [ -n "$base" ]; then printf {q(incr)} "$name" "$kid" "$key" "$base"; '
        f'else printf {q(full)} "$name" "$kid" "$key"; fi | ch',
        f'echo "backup written: {url(store, service)}$name"',
    ]
    return "\n".join(lines) + "\n"


EXPIRE_AWK = (
    "NF { n[++c] = $0 } END { "
    "for (i = 1; i <= c; i++) { ts = substr(n[i], P, 16); "
    "if (i > c - keep && (ts >= cutoff || i == c)) kept[n[i]] = 1 } "
    "for (i = 1; i <= c; i++) if ((n[i] in kept) && n[i] ~ /-on-/) "
    "kept[pre substr(n[i], length(n[i]) - 15) \"-full\"] = 1; "
    "for (i = 1; i <= c; i++) if (!(n[i] in kept)) print n[i] }")
"""Of the complete backups (sorted, one a line), the ones to delete: all but the newest `keep`
younger than `cutoff` (the newest always), and never the full of a kept incremental."""


def expire_script(store: BackupStore, access: objectstore.StoreAccess, service: Service, retention: int,
                  plan_dir: str = PLAN_DIR) -> str:
    """rclone, last: the run fails unless the store holds the planned backup's `.backup`; then
    expiry (EXPIRE_AWK) and the removal of older incomplete backups (a failed run's parts)."""
    q = shlex.quote
    pre = f"{service.name}-"
    return "\n".join([
        "set -eu", *objectstore.store_preamble(store, access), _dest(store, service),
        f"name=$(sed -n 1p {q(plan_dir + '/plan')})",
        'rclone lsf "$dest/$name/" --include /.backup | grep -qx .backup || '
        '{ echo "backup not in the store: $dest/$name (no .backup)" >&2; exit 1; }',
        'echo "stored: $dest/$name"',
        *_listing_lines(service),
        f'cutoff=$(date -u -d "@$(( $(date +%s) - {store.keep_days} * 86400 ))" +%Y%m%dT%H%M%SZ)',
        f"doomed=$(printf '%s\\n' \"$complete\" | awk -v keep={retention} -v cutoff=\"$cutoff\" -v P={len(pre) + 1} "
        f"-v pre={q(pre)} {q(EXPIRE_AWK)})",
        'for old in $doomed; do rclone purge "$dest/$old"; echo "expired: $dest/$old"; done',
        'for d in $(rclone lsf --dirs-only "$dest/" | sed "s:/$::"); do',
        f"  printf '%s\\n' \"$d\" | grep -qE {q(name_pattern(service))} || continue",
        "  printf '%s\\n' \"$complete\" | grep -qxF -- \"$d\" && continue",
        '  [ "$(printf \'%s\\n%s\\n\' "$d" "$name" | sort | head -n 1)" = "$d" ] && [ "$d" != "$name" ] || continue',
        '  rclone purge "$dest/$d"; echo "removed incomplete: $dest/$d"',
        "done",
    ]) + "\n"


def find_script(store: BackupStore, access: objectstore.StoreAccess, service: Service, name: str | None,
                plan_dir: str = PLAN_DIR) -> str:
    """rclone, before a restore: the named complete backup, or the newest, into the plan."""
    q = shlex.quote
    pick = (f"name=$(printf '%s\\n' \"$complete\" | grep -xF -- {q(name)} || true)" if name
            else "name=$(printf '%s\\n' \"$complete\" | tail -n 1)")
    return "\n".join([
        "set -eu", *objectstore.store_preamble(store, access), _dest(store, service), *_listing_lines(service), pick,
        f'[ -n "$name" ] || {{ echo "no complete backup {name or "of " + service.name} in $dest" >&2; exit 1; }}',
        f"printf '%s\\n\\n' \"$name\" > {q(plan_dir + '/plan')}",
        'echo "restoring: $dest/$name"',
    ]) + "\n"


def restore_script(store: BackupStore, access: objectstore.StoreAccess, service: Service, *, host: str, port: int,
                   user: str, password_file: str | None, plan_dir: str = PLAN_DIR) -> str:
    """clickhouse-client, after `find_script`: drop the database, RESTORE it from the store."""
    b = backup_of(service)
    q = shlex.quote
    fmt = _printf_format(restore_statement(store, service, _MARKS[0], _MARKS[1], _MARKS[2]))
    lines = ["set -eu", "umask 077"]
    if password_file:
        lines.append(f'{b.password_env}="$(cat {q(password_file)})"; export {b.password_env}')
    lines += [
        *_key_lines(store, access), *_read_plan(service, plan_dir), _client(host, port, user),
        f"ch --query {q(drop_statement(service))}",
        f'printf {q(fmt)} "$name" "$kid" "$key" | ch',
        f'echo "restored from {url(store, service)}$name"',
    ]
    return "\n".join(lines) + "\n"
