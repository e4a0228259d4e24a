"""`restore`: put a backup back into a running service, after saying what it overwrites.

Nothing happens without `--yes-overwrite`: the command first prints what the restore
replaces (from the catalog's Backup) and the docker commands it would run, and stops
there. With the flag, on Docker: a restore that replaces files (Redis, Grafana) stops the
service container, runs the catalog's restore script in a one-shot container with the
service's volume and the backup mounted, and starts the service again (also when the
restore failed, so the service never stays down); a restore over the network (PostgreSQL,
ClickHouse, Qdrant) runs its client on the service's network. Kubernetes stacks restore
with the Job in docs/backups.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .. import backup as backups
from ..backends.docker import backup_dir, container_name, host_of, volume_name
from ..cli import add_stack_arguments
from ..graph import Effective, Model
from ..model import backup_job
from ..settings import ConfigError
from ..stack import ROOT, model_of
from .backup import Step, docker_problem, docker_required, execute, no_docker, one_shot, selected

HELP = "restore a backup into a Docker stack's service (says what it overwrites; needs --yes-overwrite)"
SOURCE = "/restore"
"""Where the restore container sees the backup directory (read-only)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--service", required=True, help="the service to restore into")
    p.add_argument("--from", dest="source", required=True, metavar="BACKUP",
                   help="a backup's name in backups.hostDir/<service>, or its path")
    p.add_argument("--yes-overwrite", action="store_true",
                   help="confirm: replace the service's current data with the backup's")


def backup_path(model: Model, eff: Effective, source: str, root: Path = ROOT) -> Path:
    """The backup named by --from: a path, or a name in the service's backup directory."""
    given = Path(source)
    named_only = not given.is_absolute() and given.parent == Path(".")
    path = Path(backup_dir(model, eff.name, root)) / given if named_only else given
    if not path.name.startswith(backups.prefix(eff.service)):
        raise ConfigError("--from", f"'{source}' is not a backup of {eff.name}",
                          f"name one of {eff.name}'s backups ({backups.prefix(eff.service)}<timestamp>...)")
    return path


def restore_steps(model: Model, eff: Effective, path: Path) -> list[Step]:
    svc = eff.service
    b = backups.backup_of(svc)
    port = svc.port(b.port).container if b.port else None
    mounts = [(str(path.parent), SOURCE, True)]
    data = ""
    if b.offline_restore:
        volume = next(v for v in svc.volumes if v.name == b.volume)
        mounts.append((volume_name(svc.name, volume.name), volume.path, False))
        data = volume.path
    where = backups.Where(host_of(svc.name), port, SOURCE, None, data)
    script = backups.restore_script(svc, where, f"{SOURCE}/{path.name}")
    job = one_shot(model, eff, script, mounts, f"{container_name(backup_job(svc.name))}-restore")
    if b.offline_restore:
        # Files are replaced as their owner (the service's user), with nothing running on them.
        uid = svc.uid
        i = job.argv.index("--user")
        job.argv[i + 1] = f"{uid}:{uid}"
        if b.password_env in job.secret_env:  # it reads files, and needs no password
            j = job.argv.index(b.password_env)
            del job.argv[j - 1:j + 1]
            job.secret_env.clear()
        container = container_name(svc.name)
        return [Step(["docker", "stop", container]), job, Step(["docker", "start", container])]
    return [job]


def run(args: argparse.Namespace) -> int:
    model = model_of(args.stack, args.sets, args.secrets)
    docker_required(model, "restore")
    (eff,) = selected(model, args.service)
    path = backup_path(model, eff, args.source)
    steps = restore_steps(model, eff, path)
    print(f"Restore of stack {args.stack} overwrites {backups.overwrites(eff.service)}.")
    print(f"From: {path}")
    for step in steps:
        print(f"  {step.shown()}")
    if not args.yes_overwrite:
        print("Nothing changed. Run again with --yes-overwrite to replace the current data.", file=sys.stderr)
        return 2
    if not path.exists():
        raise ConfigError("--from", f"{path} does not exist", f"list the backups with: ls {path.parent}")
    problem = docker_problem()
    if problem:
        return no_docker(problem)
    if len(steps) == 3:  # stop, restore, start: the service is started again whatever happened
        stop, job, start = steps
        code = execute([(eff, stop)])
        if code == 0:
            code = execute([(eff, job)])
        started = subprocess.run(start.argv, check=False).returncode
        return code or started
    return execute([(eff, s) for s in steps])
