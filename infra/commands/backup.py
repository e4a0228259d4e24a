"""`backup`: back up a Docker stack's stateful services now, each in a one-shot container.

The container runs the catalog's backup script (infra/backup.py, the one the Kubernetes
CronJobs run) on the service's tier network, as the service's host name, writing into
`backups.hostDir/<service>` on the host. The password reaches it as an environment
variable passed by name (`-e NAME`, the value from this process's environment, read from
the running service container through the engine), never in argv. `--dry-run` prints the
docker commands instead of running them. Kubernetes stacks back up with their CronJobs
(docs/backups.md: run one now with `kubectl create job --from=cronjob/...`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import backup as backups
from .. import objectstore, pitr
from ..backends.docker import backup_dir, container_name, host_of, network_name, volume_name
from ..backends.kubernetes import namespace_name
from ..cli import add_stack_arguments
from ..graph import Effective, Resolved
from ..model import Secret, backup_job
from ..settings import NAMESPACE, ConfigError
from ..stack import ROOT, model_of

HELP = ("back up a Docker stack's stateful services now, each in a one-shot container on its network "
        "(--dry-run prints the docker commands)")

EXAMPLES = """\
python -m infra backup -s dev --dry-run
python -m infra backup -s dev --service postgres
python -m infra backup -s dev --dry-run --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--service", help="back up only this service (default: every backed-up service)")
    p.add_argument("--dry-run", action="store_true", help="print the docker commands, run nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the commands as JSON")
    p.add_argument("--drill", action="store_true",
                   help="with backups.store: restore the newest off-site backup of each store that has a drill "
                        "into a throwaway server and check it, instead of backing up")


@dataclass
class Step:
    """One docker invocation, and the variables it passes by name from the environment."""

    argv: list[str]
    secret_env: dict[str, str] = field(default_factory=dict)
    """Variable -> (service container, variable in it) the value is read from."""

    def shown(self) -> str:
        return shlex.join(self.argv)


def docker_required(model: Resolved, command: str) -> None:
    if model.settings.target != "docker":
        raise ConfigError(f"{NAMESPACE}:target", f"is {model.settings.target}: `{command}` runs Docker containers",
                          "on Kubernetes the CronJobs back up; see docs/backups.md for a run now and the restore Job")


def selected(model: Resolved, service: str | None) -> list[Effective]:
    """The services to back up: every backed-up one, or the one named (which must be)."""
    done = model.backed_up()
    if service is None:
        return done
    if service not in model.catalog.services:
        raise ConfigError("--service", f"'{service}' is not a service",
                          f"use one of: {', '.join(e.name for e in done)}")
    svc = model.catalog.services[service]
    if svc.backup is None or not svc.backup.enabled:
        why = svc.backup.none_reason if svc.backup else "it has no data to back up"
        raise ConfigError("--service", f"{service} is not backed up: {why}",
                          f"use one of: {', '.join(e.name for e in done) or '(none)'}")
    if not done:
        raise ConfigError(f"{NAMESPACE}:backups.enabled", "is false", "set it to true to back up")
    return [e for e in done if e.name == service]


def password_source(eff: Effective) -> str:
    """The variable of the running service container that holds the backup's credential."""
    b = backups.backup_of(eff.service)
    return next((k for k, v in eff.service.env if isinstance(v, Secret) and v.credential == b.credential), "")


def job_user(eff: Effective) -> str:
    """The job's user on Docker: the invoking user for a client that dials the service (the
    backup files are then yours); the service's user for a job that reads its volume."""
    b = backups.backup_of(eff.service)
    uid = b.uid if b.uid is not None else eff.service.uid
    if b.reads_volume:
        return f"{uid}:{os.getgid()}"
    return f"{os.getuid()}:{os.getgid()}"


def one_shot(model: Resolved, eff: Effective, script: str, mounts: list[tuple[str, str, bool]],
             name: str) -> Step:
    """`docker run --rm` of a script beside a service, hardened like the service containers."""
    b = backups.backup_of(eff.service)
    argv = ["docker", "run", "--rm", "--name", name,
            "--network", network_name(model, eff.tier),
            "--user", job_user(eff), "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "--memory", "512m", "--cpus", "0.5"]
    for source, target, read_only in mounts:
        argv += ["--volume", f"{source}:{target}" + (":ro" if read_only else "")]
    secret_env = {}
    if b.password_env and b.credential:
        argv += ["--env", b.password_env]  # by name: the value comes from this process's environment
        secret_env[b.password_env] = password_source(eff)
    argv += ["--entrypoint", "sh", b.image or eff.image, "-c", script]
    return Step(argv, secret_env)


def backup_step(model: Resolved, eff: Effective, root: Path = ROOT) -> Step:
    svc = eff.service
    b = backups.backup_of(svc)
    port = svc.port(b.port).container if b.port else None
    data = ""
    mounts = [(backup_dir(model, svc.name, root), backups.BACKUP_DIR, False)]
    if b.reads_volume:
        volume = next(v for v in svc.volumes if v.name == b.volume)
        mounts.append((volume_name(svc.name, volume.name), volume.path, True))
        data = volume.path
    where = backups.Where(host_of(svc.name), port, backups.BACKUP_DIR, None, data)
    # With the store, the catalog's canary first: the drill (`--drill`) must find it in the copy.
    script = backups.backup_script(svc, where, model.settings.backups.retention,
                                   canary=model.settings.backups.store is not None)
    return one_shot(model, eff, script, mounts, f"{container_name(backup_job(svc.name))}")


STORE_KEY_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
"""Docker with `backups.store` (credentials secret): the variables of the invoking shell the
upload container takes the store's key from, passed by name (never argv)."""


def upload_step(model: Resolved, eff: Effective, root: Path = ROOT) -> Step | None:
    """With `backups.store`: after the backup, rclone's image uploads the newest backup of the
    host directory (mounted read-only) to the store, as Kubernetes' upload step does
    (objectstore.upload_newest_script); on Docker's default network, which reaches out. None
    without a store. Client-side encryption is not offered here (its passphrase)."""
    store = model.settings.backups.store
    if store is None:
        return None
    if store.encryption == "client":
        raise ConfigError(f"{NAMESPACE}:backups.store.encryption", "is client, which `backup` does not offer on "
                          "a Docker stack yet",
                          "use sse-s3 or sse-kms on the Docker stack (docs/backups.md)")
    svc = eff.service
    script = objectstore.upload_newest_script(store, objectstore.StoreAccess(None), svc, backups.BACKUP_DIR,
                                              model.settings.backups.retention)
    argv = ["docker", "run", "--rm", "--name", container_name(f"{backup_job(svc.name)}-upload"),
            "--user", f"{os.getuid()}:{os.getgid()}", "--read-only", "--tmpfs", "/tmp", "--env", "HOME=/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--memory", "512m", "--cpus", "0.5",
            "--volume", f"{backup_dir(model, svc.name, root)}:{backups.BACKUP_DIR}:ro"]
    if store.credentials != "workloadIdentity":
        for var in STORE_KEY_ENV:
            argv += ["--env", var]  # by name: the value comes from the invoking shell
    argv += ["--entrypoint", "sh", objectstore.RCLONE_IMAGE, "-c", script]
    return Step(argv)


def download_step(model: Resolved, eff: Effective, name: str, root: Path = ROOT) -> Step:
    """`restore --from NAME` with `backups.store` when NAME is not in the host directory: rclone's
    image downloads that backup of the service from the store (objectstore.fetch_newest_lines
    with `name`) into the host directory, as upload_step's reverse (the key by name from the
    shell, Docker's default bridge, your user); it fails when the store has no such backup."""
    store = model.settings.backups.store
    assert store is not None
    if store.encryption == "client":
        raise ConfigError(f"{NAMESPACE}:backups.store.encryption", "is client, which `restore` does not offer on "
                          "a Docker stack yet", "use sse-s3 or sse-kms on the Docker stack (docs/backups.md)")
    svc = eff.service
    script = "\n".join(["set -eu", "umask 027", *objectstore.store_preamble(store, objectstore.StoreAccess(None)),
                        *objectstore.fetch_newest_lines(store, svc, backups.BACKUP_DIR, name=name),
                        'echo "downloaded: $dest/$name"']) + "\n"
    argv = ["docker", "run", "--rm", "--name", container_name(f"{backup_job(svc.name)}-download"),
            "--user", f"{os.getuid()}:{os.getgid()}", "--read-only", "--tmpfs", "/tmp", "--env", "HOME=/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--memory", "512m", "--cpus", "0.5",
            "--volume", f"{backup_dir(model, svc.name, root)}:{backups.BACKUP_DIR}",
            *key_env(model), "--entrypoint", "sh", objectstore.RCLONE_IMAGE, "-c", script]
    return Step(argv)


PGBACKREST_TMPFS = "rw,noexec,nosuid,size=64m"
"""pgBackRest's configuration and spool (with the include file holding the key) in a step:
tmpfs, gone with the container."""


def key_env(model: Resolved) -> list[str]:
    """`--env NAME` for each store key variable (the value from the invoking shell), none
    with workload identity."""
    store = model.settings.backups.store
    if store is None or store.credentials == "workloadIdentity":
        return []
    return [a for var in STORE_KEY_ENV for a in ("--env", var)]


def pgbackrest_step(model: Resolved, eff: Effective, name: str, script: str, *, data: str = "",
                    mounts: tuple[str, ...] = (), network: str | None = None) -> Step:
    """`docker run --rm` of a pgBackRest script in the archive image (infra/pitr.py) as the
    server's user: its configuration and spool as tmpfs at the server's paths (the
    restore_command a restore writes names them), the key by name from the invoking shell
    (written into the include file inside the container), hardened like the other one-shot
    containers. `data`: the data volume at the server's path, "ro" (a base backup reads it
    and connects over the socket on it) or "rw" (a restore writes it); `mounts`: more
    `--volume` values; `network`: None is Docker's default bridge, which reaches the store."""
    svc = eff.service
    argv = ["docker", "run", "--rm", "--name", name, "--user", f"{svc.uid}:{svc.uid}",
            "--read-only", "--tmpfs", "/tmp", "--env", "HOME=/tmp",
            "--tmpfs", f"{pitr.CONF_DIR}:{PGBACKREST_TMPFS}", "--tmpfs", f"{pitr.SPOOL}:{PGBACKREST_TMPFS}",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--memory", "512m", "--cpus", "0.5"]
    if network is not None:
        argv += ["--network", network]
    if data:
        archive = pitr.archive_of(svc)
        assert archive is not None
        volume = next(v for v in svc.volumes if v.name == archive.volume)
        argv += ["--volume", f"{volume_name(svc.name, volume.name)}:{volume.path}:{data}"]
    for mount in mounts:
        argv += ["--volume", mount]
    argv += [*key_env(model), "--entrypoint", "sh", eff.image, "-c", script]
    return Step(argv)


def base_backup_step(model: Resolved, eff: Effective) -> Step | None:
    """With `backups.store`, for the archiving server (its catalog made it run the archive
    image, pitr.archived): pgBackRest's base backup after the dump and its upload, beside the
    running server as Kubernetes' base-backup container (pitr.backup_script's steps, the key
    from the shell). None for every other service or without a store."""
    store = model.settings.backups.store
    if store is None or not pitr.archives(eff.service):
        return None
    script = pitr.env_backup_script(store, eff.service, model.settings.backups.retention, STORE_KEY_ENV)
    return pgbackrest_step(model, eff, container_name(f"{backup_job(eff.name)}-base"), script, data="ro")


def store_key_problem(model: Resolved) -> str | None:
    """Why the upload cannot authenticate (a variable unset), None when it can."""
    store = model.settings.backups.store
    if store is None or store.credentials == "workloadIdentity":
        return None
    missing = [v for v in STORE_KEY_ENV if not os.environ.get(v)]
    return ", ".join(missing) + " not set" if missing else None


Inspect = Callable[[str], dict[str, str]]


def container_env(container: str) -> dict[str, str]:
    """A running container's environment, read through the engine (never printed)."""
    out = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", container],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ConfigError("--service", f"cannot read {container}: {out.stderr.strip() or 'docker inspect failed'}",
                          "deploy the stack first (pulumi up), then back it up")
    return dict(item.split("=", 1) for item in json.loads(out.stdout) if "=" in item)


def execute(steps: list[tuple[Effective, Step]], inspect: Inspect = container_env) -> int:
    """Run the steps; the first failure stops and is the exit code."""
    for eff, step in steps:
        env = dict(os.environ)
        for var, source in step.secret_env.items():
            value = inspect(container_name(eff.name)).get(source)
            if value is None:
                raise ConfigError("--service", f"{container_name(eff.name)} has no {source}",
                                  "redeploy the stack (pulumi up): the container predates its credential")
            env[var] = value
        print(f"+ {step.shown()}", flush=True)
        done = subprocess.run(step.argv, env=env, check=False)
        if done.returncode != 0:
            print(f"error: {eff.name}: the backup container failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
    return 0


def docker_problem() -> str | None:
    """Why docker cannot run containers here (None: it can): no client, or no daemon."""
    if shutil.which("docker") is None:
        return "docker is not installed (no `docker` on PATH)"
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker daemon does not answer (docker version timed out)"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"the Docker daemon is not reachable ({lines[-1] if lines else 'docker version failed'})"
    return None


def no_docker(problem: str) -> int:
    """A missing prerequisite, not a user error: exit 1, as adopt (and deploy.sh) say it (cli.EXIT_STATUS)."""
    print(f"error: {problem}: backups and restores of a Docker stack run in one-shot containers. "
          "Fix: install Docker and start its daemon, or use --dry-run to print the commands", file=sys.stderr)
    return 1


def cannot_run(model: Resolved, needs_key: bool, who: str) -> int | None:
    """What stops a Docker stack's one-shot containers before they start: no Docker or no
    daemon (exit 1), or, for a `who` container that reaches the store (`needs_key`), the store's
    key unset in this shell (exit 2); None when nothing does."""
    problem = docker_problem()
    if problem:
        return no_docker(problem)
    missing = store_key_problem(model) if needs_key else None
    if missing:
        print(f"error: {NAMESPACE}:backups.store needs the store's key: {missing}. Fix: export "
              f"{' and '.join(STORE_KEY_ENV)} in this shell (the {who} container takes them by name)", file=sys.stderr)
        return 2
    return None


def dry_run(args: argparse.Namespace, key: str, steps: list[tuple[Effective, Step]],
            what: Callable[[Effective], str], field: str | None = None) -> bool:
    """`--dry-run`: print the docker commands, each under a line saying what it does for its
    service (with `--json`: one object, `key` listing service, `field` = what, argv); True when
    printed (nothing is to run). `--json` without `--dry-run` is refused."""
    if args.json and not args.dry_run:
        raise ConfigError("--json", "reports the commands of a --dry-run only", "add --dry-run")
    if not args.dry_run:
        return False
    if args.json:
        print(json.dumps({"stack": args.stack, key: [
            {"service": eff.name, **({field: what(eff)} if field else {}), "argv": step.argv}
            for eff, step in steps]}, indent=2))
        return True
    for eff, step in steps:
        print(f"# {eff.name}: {what(eff)}")
        print(step.shown())
    return True


def run(args: argparse.Namespace) -> int:
    model = model_of(args.stack, args.sets, args.secrets)
    docker_required(model, "backup")
    chosen = selected(model, args.service)
    if args.drill:
        return run_drill(model, args, chosen)
    steps = [(eff, backup_step(model, eff)) for eff in chosen]
    for i, eff in reversed(list(enumerate(chosen))):  # with a store, each backup's upload after it
        after = [s for s in (upload_step(model, eff), base_backup_step(model, eff)) if s is not None]
        steps[i + 1:i + 1] = [(eff, s) for s in after]
    if dry_run(args, "backups", steps, lambda eff: backups.backup_of(eff.service).reads, "reads"):
        return 0
    stop = cannot_run(model, True, "upload")
    if stop is not None:
        return stop
    for eff in chosen:
        Path(backup_dir(model, eff.name, ROOT)).mkdir(parents=True, exist_ok=True, mode=0o770)
    return execute(steps)


def run_drill(model: Resolved, args: argparse.Namespace, chosen: list[Effective]) -> int:
    """`--drill`: the Kubernetes drill's fetch and restore steps as one-shot containers (drill.py)."""
    from . import drill

    chosen = drill.drilled(model, chosen)
    steps = [(eff, step) for eff in chosen for step in drill.drill_steps(model, eff)]
    if dry_run(args, "drills", steps, lambda eff: "restore drill"):
        return 0
    stop = cannot_run(model, True, "fetch")
    if stop is not None:
        return stop
    return drill.run_drills(model, chosen)


def kubernetes_hint(model: Resolved, service: str) -> str:
    """How to run a Kubernetes stack's backup now (docs/backups.md)."""
    ns = namespace_name(model, model.services[service].tier)
    job = backup_job(service)
    return f"kubectl -n {ns} create job --from=cronjob/{job} {job}-manual"
