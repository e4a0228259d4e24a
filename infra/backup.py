"""Backup and restore commands, rendered from the catalog's `Backup` of a service.

One renderer for every place a backup runs: the Kubernetes CronJob, the Docker one-shot
container of `python -m infra backup`, the restore command and Job, and the round-trip
tests (which run the very same script against local servers). No Pulumi import, no
service name: everything comes from the catalog.

A backup script:
- reads the service's credential from a file into the one variable the client reads
  (`password_env`), so the password is never in argv (on Docker the variable is passed
  by name from the command's environment instead);
- writes `<service>-<UTC timestamp><suffix>` into the backup directory through a hidden
  `.partial` name, renamed only once the client succeeded (a failed run leaves no
  half-written backup that looks complete);
- keeps the newest `retention` backups of the service and deletes the rest.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from .model import Backup, Service

BACKUP_DIR = "/backup"
"""Where a backup job mounts its target (a claim on Kubernetes, a host directory on Docker)."""

_PLACEHOLDER = re.compile(r"\{(host|port|out|src|data)\}")
_SAFE_HOST = re.compile(r"[A-Za-z0-9.:_-]+")
SHELL_VARS = {"out": '"$out"', "src": '"$src"', "data": '"$data"'}
"""The placeholders that become shell variables (paths: always quoted)."""


@dataclass(frozen=True)
class Where:
    """Where one run of a backup or restore happens."""

    host: str
    """The service's address as the job reaches it."""
    port: int | None
    """The number of the Backup's `port` there (None: it dials nothing)."""
    directory: str = BACKUP_DIR
    """The backup directory (the mounted target)."""
    secret_file: str | None = None
    """File holding the credential; None: `password_env` is already set in the environment."""
    data: str = ""
    """Where the service's volume is mounted (a Backup that reads or restores files)."""


def backup_of(service: Service) -> Backup:
    b = service.backup
    if b is None or not b.enabled:
        raise ValueError(f"{service.name} has no backup" + (f": {b.none_reason}" if b else ""))
    return b


def _fill(template: str, where: Where, *, quote: bool) -> str:
    """One template with its placeholders filled: host and port as text, paths as shell
    variables. `quote`: the literal parts are shell-quoted (an argv word)."""
    if not _SAFE_HOST.fullmatch(where.host):
        raise ValueError(f"not a host name: {where.host!r}")
    parts: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        literal = template[pos:m.start()]
        if literal:
            parts.append(shlex.quote(literal) if quote else literal)
        key = m.group(1)
        if key == "host":
            parts.append(where.host)
        elif key == "port":
            if where.port is None:
                raise ValueError("the template dials a port but none is given")
            parts.append(str(where.port))
        else:
            parts.append(SHELL_VARS[key])
        pos = m.end()
    tail = template[pos:]
    if tail or not parts:
        parts.append(shlex.quote(tail) if quote else tail)
    return "".join(parts)


def _body(argv: tuple[str, ...], script: str, where: Where) -> str:
    if argv:
        return " ".join(_fill(a, where, quote=True) for a in argv)
    return _fill(script, where, quote=False)


def _preamble(b: Backup, where: Where) -> list[str]:
    # Owner and group only: on Docker the job and the restore may run as the service's user
    # with your group, so each can read what the other wrote; nobody else can.
    lines = ["set -eu", "umask 027"]
    if b.password_env and where.secret_file:
        # `export` and `$(cat ...)` are the shell's: the value reaches the client's
        # environment, never an argument list.
        lines.append(f'{b.password_env}="$(cat {shlex.quote(where.secret_file)})"; export {b.password_env}')
    if where.data:
        lines.append(f"data={shlex.quote(where.data)}")
    return lines


def prefix(service: Service) -> str:
    """The name every backup of the service starts with."""
    return f"{service.name}-"


def backup_script(service: Service, where: Where, retention: int, *, canary: bool = False) -> str:
    """The shell script one backup run executes (sh -c); `canary`: first the catalog's
    `Backup.canary` (a marker the restore drill must find in this backup)."""
    b = backup_of(service)
    ext = b.suffix.rstrip("/")
    lines = _preamble(b, where)
    if canary and b.canary:
        lines.append(_fill(b.canary, where, quote=False))
    lines += [
        f"dir={shlex.quote(where.directory)}",
        f'name="{prefix(service)}$(date -u +%Y%m%dT%H%M%SZ){ext}"',
        'out="$dir/.$name.partial"',
        'rm -rf -- "$out"',
        # Whatever happens, no partial file stays behind (after the rename there is none).
        'trap \'rm -rf -- "$out"\' EXIT',
        _body(b.argv, b.script, where),
        'mv -- "$out" "$dir/$name"',
        'echo "backup written: $dir/$name"',
        # Names sort by their timestamp: keep the newest `retention`.
        f'ls -1d "$dir"/{shlex.quote(prefix(service))}[0-9]*{shlex.quote(ext) if ext else ""} | sort -r '
        f'| tail -n +{retention + 1} | while read -r old; do rm -rf -- "$old"; echo "expired: $old"; done',
    ]
    return "\n".join(lines) + "\n"


def restore_script(service: Service, where: Where, source: str) -> str:
    """The shell script that restores backup `source` (a path as the job sees it)."""
    b = backup_of(service)
    lines = _preamble(b, where)
    lines += [
        f"src={shlex.quote(source)}",
        'test -e "$src" || { echo "no such backup: $src" >&2; exit 1; }',
        _body(b.restore, b.restore_script, where),
        'echo "restored from $src"',
    ]
    return "\n".join(lines) + "\n"


def command(script: str) -> list[str]:
    """The exec form that runs a script (every image the catalog names has a POSIX sh)."""
    return ["sh", "-c", script]


def overwrites(service: Service) -> str:
    """What a restore replaces, in words (the restore command says it before it acts)."""
    b = backup_of(service)
    how = ("the service is stopped, the files in its volume are replaced, then it is started again"
           if b.offline_restore else "it is replaced in the running service")
    return f"{service.name}: {b.reads} -- {how}"
