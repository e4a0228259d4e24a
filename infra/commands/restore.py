"""`restore`: put a backup back into a running service, after saying what it overwrites.

Nothing happens without `--yes-overwrite`: the command first prints what the restore
replaces (from the catalog's Backup) and the docker commands it would run, and stops
there. With the flag, on Docker: a restore that replaces files (Redis, Grafana) stops the
service container, runs the catalog's restore script in a one-shot container with the
service's volume and the backup mounted, and starts the service again (also when the
restore failed, so the service never stays down); a restore over the network (PostgreSQL,
ClickHouse, Qdrant) runs its client on the service's network. Kubernetes stacks restore
with the Job in docs/backups.md.

`--dry-run --json` prints the plan as one object: stack, service, overwrites, from; on
Docker steps[] {argv, envFromService} (the docker commands; a password is passed by name,
never in argv: envFromService maps each such variable to the service container's variable
it is read from); on Kubernetes steps[] (the kubectl commands) and job (the restore Job).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from policies.optiinfra_policies import vocabulary as v

from .. import backup as backups
from .. import objectstore, pitr
from ..backends import kubernetes as k8s
from ..backends.docker import backup_dir, container_name, host_of, volume_name
from ..cli import add_stack_arguments, prog
from ..graph import Effective, Resolved
from ..model import LOG_MIB, SECRET_DIR, backup_job
from ..settings import NAMESPACE, BackupStore, ConfigError, did_you_mean
from ..stack import ROOT, model_of
from . import restore_store
from .backup import (
    STORE_KEY_ENV,
    Step,
    cannot_run,
    docker_required,
    download_step,
    execute,
    one_shot,
    pgbackrest_step,
    selected,
)

HELP = ("restore a backup into a service (says what it overwrites; needs --yes-overwrite); on Kubernetes it "
        "prints the restore Job and its kubectl steps")
SOURCE = "/restore"
"""Where the restore container sees the backup directory (read-only)."""

EXAMPLES = """\
python -m infra restore -s dev --service postgres --from postgres-20250101T021700Z.dump --dry-run
python -m infra restore -s dev --service postgres --from postgres-20250101T021700Z.dump --yes-overwrite
python -m infra restore -s prod --service redis --from redis-20250101T021700Z.rdb --dry-run --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_stack_arguments(p)
    p.add_argument("--service", required=True, help="the service to restore into")
    p.add_argument("--from", dest="source", metavar="BACKUP",
                   help="a backup's name in backups.hostDir/<service>, or its path (required without --to-time)")
    p.add_argument("--to-time", dest="to_time", metavar="TIME",
                   help="PostgreSQL with backups.store: the point in time to recover to, ISO 8601 with a zone")
    p.add_argument("--yes-overwrite", action="store_true",
                   help="confirm: replace the service's current data with the backup's")
    p.add_argument("--dry-run", action="store_true",
                   help="print what the restore would overwrite and run, change nothing (exit 0)")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")


def backup_path(model: Resolved, eff: Effective, source: str, root: Path = ROOT) -> Path:
    """The backup named by --from: a path, or a name in the service's backup directory."""
    given = Path(source)
    named_only = not given.is_absolute() and given.parent == Path(".")
    path = Path(backup_dir(model, eff.name, root)) / given if named_only else given
    if not path.name.startswith(backups.prefix(eff.service)):
        raise ConfigError("--from", f"'{source}' is not a backup of {eff.name}",
                          f"name one of {eff.name}'s backups ({backups.prefix(eff.service)}<timestamp>...)")
    return path


def restore_steps(model: Resolved, eff: Effective, path: Path) -> list[Step]:
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
        # Files are replaced as their owner (the service's user), with nothing running on them;
        # your group reads the backup (written group-readable, umask 027).
        i = job.argv.index("--user")
        job.argv[i + 1] = f"{svc.uid}:{os.getgid()}"
        if b.password_env in job.secret_env:  # it reads files, and needs no password
            j = job.argv.index(b.password_env)
            del job.argv[j - 1:j + 1]
            job.secret_env.clear()
        container = container_name(svc.name)
        return [Step(["docker", "stop", container]), job, Step(["docker", "start", container])]
    return [job]


def restore_job(model: Resolved, eff: Effective, name: str) -> dict[str, Any]:
    """The Kubernetes Job that restores backup `name` from the service's backup claim: the
    backup CronJob's pod (same image, user, restricted security context, credential file and
    pod label, so the backup edge's NetworkPolicy admits it and nothing else), running the
    catalog's restore script. A manifest for `kubectl apply` (run once, by hand), not a
    resource of the stack."""
    svc, tier = eff.service, eff.tier
    b = backups.backup_of(svc)
    ns = k8s.namespace_name(model, tier)
    job = backup_job(svc.name)
    uid = b.uid if b.uid is not None else svc.uid
    secret_file = f"{SECRET_DIR}/{b.credential}" if b.credential else None
    volumes: list[dict[str, Any]] = [
        {"name": "backups", "persistentVolumeClaim": {"claimName": k8s.backup_claim(svc.name), "readOnly": True}},
        {"name": "tmp", "emptyDir": {"sizeLimit": k8s.quantity_mib(k8s.BACKUP_SCRATCH_MIB)}}]
    mounts: list[dict[str, Any]] = [{"name": "backups", "mountPath": backups.BACKUP_DIR, "readOnly": True},
                                    {"name": "tmp", "mountPath": "/tmp"}]
    if b.credential:
        volumes.append({"name": "credentials", "secret": {"secretName": k8s.CREDENTIALS_SECRET, "defaultMode": 0o440,
                                                          "items": [{"key": b.credential, "path": b.credential}]}})
        mounts.append({"name": "credentials", "mountPath": SECRET_DIR, "readOnly": True})
    data = ""
    if b.offline_restore:  # the service is scaled to 0 first: its claim is free to write
        volume = next(v for v in svc.volumes if v.name == b.volume)
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": k8s.own_claim(volume.name, eff.name)}})
        mounts.append({"name": "data", "mountPath": volume.path})
        data = volume.path
    port = svc.port(b.port).container if b.port else None
    where = backups.Where(k8s.host_resolver(model)(svc.name), port, backups.BACKUP_DIR, secret_file, data)
    script = backups.restore_script(svc, where, f"{backups.BACKUP_DIR}/{name}")
    res = k8s.BACKUP_RESOURCES
    ephemeral = k8s.BACKUP_SCRATCH_MIB + LOG_MIB
    seccomp = {"type": "RuntimeDefault"}
    requests = {"cpu": k8s.quantity_cpu(res.cpu), "memory": k8s.quantity_mib(res.memory_mib),
                "ephemeral-storage": k8s.quantity_mib(ephemeral)}
    limits = {"cpu": k8s.quantity_cpu(res.limit_cpu), "memory": k8s.quantity_mib(res.limit_mib),
              "ephemeral-storage": k8s.quantity_mib(2 * ephemeral)}
    labels = {v.K8S_PART_OF: v.PROJECT, v.K8S_COMPONENT: tier.value, v.K8S_NAME: job}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{svc.name}-restore", "namespace": ns, "labels": dict(labels),
                     "annotations": {v.K8S_BACKUP_OF: svc.name}},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": k8s.BACKUP_DEADLINE_S, "ttlSecondsAfterFinished": 86400,
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
                     **({"imagePullSecrets": [{"name": n} for n in eff.pull_secrets]} if eff.pull_secrets else {}),
                     "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
                                         "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": dict(seccomp)},
                     "containers": [{
                         "name": "restore", "image": b.image or eff.image, "imagePullPolicy": "Always",
                         "command": [a.replace("$", "$$") for a in backups.command(script)],
                         "resources": {"requests": requests, "limits": limits},
                         "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                                             "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                             "seccompProfile": dict(seccomp), "capabilities": {"drop": ["ALL"]}},
                         "volumeMounts": mounts}],
                     "volumes": volumes}}}}


def kubernetes_steps(model: Resolved, eff: Effective, stopped: bool = False) -> list[str]:
    """The kubectl commands around the Job (a file restore, or one `stopped` as a point-in-time
    restore is, scales the service to 0 and back)."""
    ns = k8s.namespace_name(model, eff.tier)
    name = f"{eff.name}-restore"
    apply = [f"kubectl apply -f {name}.yaml",
             f"kubectl -n {ns} wait --for=condition=complete --timeout={k8s.BACKUP_DEADLINE_S}s job/{name}",
             f"kubectl -n {ns} logs job/{name}", f"kubectl -n {ns} delete job/{name}"]
    if stopped or backups.backup_of(eff.service).offline_restore:
        scale = f"kubectl -n {ns} scale statefulset/{eff.name} --replicas="
        # No scheduled backup while the service is down: it would fail, or hold the data claim.
        suspend = f"kubectl -n {ns} patch cronjob/{backup_job(eff.name)} -p " + "'{\"spec\":{\"suspend\":%s}}'"
        return [suspend % "true", f"{scale}0", f"kubectl -n {ns} wait --for=delete pod/{eff.name}-0 --timeout=300s",
                *apply, f"{scale}1", suspend % "false"]
    return apply


def run_kubernetes(args: argparse.Namespace, model: Resolved) -> int:
    (eff,) = selected(model, args.service)
    name = Path(args.source).name
    if not name.startswith(backups.prefix(eff.service)):
        raise ConfigError("--from", f"'{args.source}' is not a backup of {eff.name}",
                          f"name one of {eff.name}'s backups ({backups.prefix(eff.service)}<timestamp>...)")
    job = restore_job(model, eff, name)
    source = f"{k8s.backup_claim(eff.name)}:{backups.BACKUP_DIR}/{name}"
    if restore_store.from_store(model, eff):  # the claim keeps the newest only: the store keeps them all
        job, source = restore_store.job(model, eff, name, job), restore_store.source(model, eff, name)
    return print_job(args, eff, backups.overwrites(eff.service), source, kubernetes_steps(model, eff), job)


def print_job(args: argparse.Namespace, eff: Effective, overwrites: str, source: str, steps: list[str],
              job: dict[str, Any]) -> int:
    """A Kubernetes restore: what it overwrites, from where, and the kubectl steps (stderr), then
    the Job (stdout) only with --yes-overwrite; --dry-run --json: all of it as one object."""
    if args.json:
        print(json.dumps({"stack": args.stack, "service": eff.name, "overwrites": overwrites, "from": source,
                          "steps": steps, "job": job}, indent=2))
        return 0
    print(f"Restore of stack {args.stack} overwrites {overwrites}.", file=sys.stderr)
    print(f"From: {source}. Save the Job below as {eff.name}-restore.yaml, then:", file=sys.stderr)
    for step in steps:
        print(f"  {step}", file=sys.stderr)
    if args.dry_run:
        return 0
    if not args.yes_overwrite:
        print("Nothing printed. Run again with --yes-overwrite to print the Job.", file=sys.stderr)
        return 2
    print(yaml.safe_dump(job, sort_keys=False), end="")
    return 0


def check_to_time(model: Resolved, args: argparse.Namespace) -> None:
    """`--to-time`: a time with a zone, not in the future, on PostgreSQL with a store (its WAL
    archive); else one line naming the fix. Without it, `--from` is required."""
    to_time = getattr(args, "to_time", None)
    if to_time is None:
        if not args.source:
            raise ConfigError("--from", "is required", "name a backup (ls backups/<service>), or give --to-time")
        return
    if args.source:
        raise ConfigError("--to-time", "and --from are both given", "give one: --from a backup, or --to-time a time")
    try:
        when = datetime.fromisoformat(to_time.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError("--to-time", f"'{to_time}' is not an ISO 8601 time",
                          "write e.g. 2026-12-02T02:17:00Z") from None
    if when.tzinfo is None:
        raise ConfigError("--to-time", f"'{to_time}' has no time zone", "write e.g. 2026-12-02T02:17:00Z")
    if when > datetime.now(UTC):
        raise ConfigError("--to-time", f"'{to_time}' is in the future", "give a time before now")
    if model.settings.backups.store is None:
        raise ConfigError("--to-time", f"needs a WAL archive in backups.store, which stack {args.stack} does not set",
                          "set backups.store (docs/backups.md), or restore a backup with --from")
    svc = model.catalog.services.get(args.service)
    if svc is None or not pitr.archives(svc):
        archived = pitr.archived_service(model.catalog.services)
        raise ConfigError("--to-time", f"{args.service} has no WAL archive on stack {args.stack}",
                          f"use --service {archived.name}, or restore a backup with --from" if archived
                          else "restore a backup with --from (docs/backups.md: the archive needs a store key)")
    if model.settings.target != "kubernetes" and model.settings.backups.store.encryption == "client":
        raise ConfigError(f"{NAMESPACE}:backups.store.encryption", "is client, which a Docker stack does not offer "
                          "yet (its restore step carries no passphrase)", "use sse-s3 or sse-kms on the Docker stack")


def pitr_job(model: Resolved, eff: Effective, to_time: str) -> dict[str, Any]:
    """The Kubernetes Job of a point-in-time restore: the archive image on the server's data
    claim (read-write: the StatefulSet is scaled to 0 first), pgBackRest's restore to
    `to_time` (pitr.restore_script), the key from the namespace's Secret as files, under the
    backup job's pod label (its NetworkPolicy reaches the store and nothing else)."""
    store = model.settings.backups.store
    assert store is not None
    job = restore_job(model, eff, "")
    spec = job["spec"]["template"]["spec"]
    archive = pitr.archive_of(eff.service)
    assert archive is not None
    volume = next(v for v in eff.service.volumes if v.name == archive.volume)
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": k8s.own_claim(volume.name, eff.name)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": k8s.quantity_mib(k8s.BACKUP_SCRATCH_MIB)}}]
    mounts: list[dict[str, Any]] = [{"name": "data", "mountPath": volume.path}, {"name": "tmp", "mountPath": "/tmp"}]
    for i, path in enumerate((pitr.CONF_DIR, pitr.SPOOL)):
        volumes.append({"name": f"pgbackrest-{i}", "emptyDir": {"sizeLimit": k8s.quantity_mib(64)}})
        mounts.append({"name": f"pgbackrest-{i}", "mountPath": path})
    files: dict[str, str] = {}
    keys = pitr.key_files(model.catalog, store)
    if keys:
        volumes.append({"name": "store-credentials", "secret": {
            "secretName": k8s.CREDENTIALS_SECRET, "defaultMode": 0o440,
            "items": [{"key": cred, "path": f} for f, cred in keys.items()]}})
        mounts.append({"name": "store-credentials", "mountPath": objectstore.SECRET_MOUNT, "readOnly": True})
        files = pitr.mounted_keys(model.catalog, store, objectstore.SECRET_MOUNT)
    script = pitr.restore_script(store, eff.service, model.settings.backups.retention, files, to_time)
    (container,) = spec["containers"]
    container.update(image=eff.image, command=[a.replace("$", "$$") for a in backups.command(script)],
                     volumeMounts=mounts)
    spec["volumes"] = volumes
    job["metadata"]["annotations"][v.K8S_BACKUP_STORE] = store.endpoint
    return job


def run_pitr_kubernetes(args: argparse.Namespace, model: Resolved) -> int:
    """`--to-time` on Kubernetes: the StatefulSet scaled to 0, the restore Job, scaled back."""
    (eff,) = selected(model, args.service)
    job = pitr_job(model, eff, args.to_time)
    return print_job(args, eff, pitr_overwrites(eff, args.to_time), pitr_source(model, args.to_time),
                     kubernetes_steps(model, eff, stopped=True), job)


def pitr_overwrites(eff: Effective, to_time: str) -> str:
    return (f"{eff.name}: its whole data directory -- replaced by the newest base backup before {to_time} and the "
            "WAL replayed up to it, with the server stopped")


def pitr_source(model: Resolved, to_time: str) -> str:
    store = model.settings.backups.store
    return f"{store.endpoint if store else ''} (pgBackRest, to {to_time})"


def pitr_steps(model: Resolved, eff: Effective, to_time: str) -> list[Step]:
    """`--to-time` on Docker: the server's container stopped, pgBackRest's restore in the
    archive image with the data volume read-write at the server's path (pitr.env_restore_script,
    the key by name from the shell), the container started again: the server replays the WAL
    up to the target and promotes."""
    store = model.settings.backups.store
    assert store is not None
    script = pitr.env_restore_script(store, eff.service, model.settings.backups.retention, STORE_KEY_ENV, to_time)
    container = container_name(eff.name)
    job = pgbackrest_step(model, eff, f"{container_name(backup_job(eff.name))}-restore", script, data="rw")
    return [Step(["docker", "stop", container]), job, Step(["docker", "start", container])]


def run_stopped(eff: Effective, steps: list[Step]) -> int:
    """Run the steps; when they stop the service (stop, restore, start) it is started again
    whatever happened, so the service never stays down."""
    if len(steps) == 3 and steps[0].argv[:2] == ["docker", "stop"] and steps[2].argv[:2] == ["docker", "start"]:
        stop, job, start = steps
        code = execute([(eff, stop)])
        if code == 0:
            code = execute([(eff, job)])
        started = subprocess.run(start.argv, check=False).returncode
        return code or started
    return execute([(eff, s) for s in steps])


def print_steps(args: argparse.Namespace, eff: Effective, overwrites: str, source: str, steps: list[Step],
                json_source: str | None = None) -> int | None:
    """A Docker restore's plan: what it overwrites, from where, and the docker commands (--dry-run
    --json: one object, a password by the name of its variable only); then the guard. The exit
    status when it stops here, None to run the steps."""
    if args.json:
        print(json.dumps({"stack": args.stack, "service": eff.name, "overwrites": overwrites,
                          "from": source if json_source is None else json_source,
                          "steps": [{"argv": s.argv, "envFromService": s.secret_env} for s in steps]}, indent=2))
        return 0
    print(f"Restore of stack {args.stack} overwrites {overwrites}.")
    print(f"From: {source}")
    for step in steps:
        print(f"  {step.shown()}")
    if args.dry_run:
        return 0
    if not args.yes_overwrite:
        print("Nothing changed. Run again with --yes-overwrite to replace the current data.", file=sys.stderr)
        return 2
    return None


def run_pitr_docker(args: argparse.Namespace, model: Resolved) -> int:
    """`--to-time` on Docker: the plan (--dry-run, --json as a file restore's), the guard, then
    pitr_steps."""
    (eff,) = selected(model, args.service)
    steps = pitr_steps(model, eff, args.to_time)
    done = print_steps(args, eff, pitr_overwrites(eff, args.to_time), pitr_source(model, args.to_time), steps)
    if done is not None:
        return done
    stop = cannot_run(model, True, "restore")
    if stop is not None:
        return stop
    return run_stopped(eff, steps)


def in_store(store: BackupStore, eff: Effective) -> str:
    """Where the service's backups are in the store (its endpoint, bucket and prefix)."""
    return f"{store.endpoint.rstrip('/')}/{objectstore.path_of(store, eff.service)}"


def run(args: argparse.Namespace) -> int:
    model = model_of(args.stack, args.sets, args.secrets)
    check_to_time(model, args)
    if args.json and not args.dry_run:
        raise ConfigError("--json", "reports the plan of a --dry-run only", "add --dry-run")
    if model.settings.target == "kubernetes":
        if getattr(args, "to_time", None):
            return run_pitr_kubernetes(args, model)
        return run_kubernetes(args, model)
    docker_required(model, "restore")
    if getattr(args, "to_time", None):
        return run_pitr_docker(args, model)
    (eff,) = selected(model, args.service)
    path = backup_path(model, eff, args.source)
    store = model.settings.backups.store
    download: Step | None = None
    if not path.exists() and store is not None and Path(args.source).name == args.source:
        # A name not in the host directory: with a store, it is downloaded from there first.
        download = download_step(model, eff, path.name)
    # The backup must exist before anything suggests running the restore for real.
    elif not path.exists():
        made = sorted(p.name for p in path.parent.glob(f"{backups.prefix(eff.service)}*")) \
            if path.parent.is_dir() else []
        if Path(args.source).name != args.source and not made:  # a path of the user's, not the backup directory
            raise ConfigError("--from", f"{path} does not exist", "give the path of an existing backup, or the name "
                              f"of one in {backup_dir(model, eff.name, ROOT)}")
        if not made:
            raise ConfigError("--from", f"there are no backups of {eff.name} yet (none in {path.parent})",
                              f"make one with {prog()} backup --stack {args.stack} --service {eff.name}")
        raise ConfigError("--from", f"{path} does not exist", f"{did_you_mean(path.name, made)}name one of the "
                          f"{len(made)} backups of {eff.name} (the newest: {made[-1]}; ls {path.parent})")
    steps = restore_steps(model, eff, path)
    shown = [download, *steps] if download else steps
    source = str(path) + (f" (not there: downloaded first from {in_store(store, eff)})" if download and store else "")
    done = print_steps(args, eff, backups.overwrites(eff.service), source, shown, json_source=str(path))
    if done is not None:
        return done
    stop = cannot_run(model, download is not None, "download")
    if stop is not None:
        return stop
    if download is not None:
        Path(backup_dir(model, eff.name, ROOT)).mkdir(parents=True, exist_ok=True, mode=0o770)
        print(f"+ {download.shown()}", flush=True)
        code = subprocess.run(download.argv, check=False).returncode
        if code != 0 or not path.exists():
            print(f"error: flag '--from': {path.name} is not in {path.parent}, and it could not be downloaded from "
                  f"{in_store(store, eff) if store else 'the store'} (exit {code}, see above). "
                  f"Fix: name a backup of {eff.name} that is there (ls {path.parent}; rclone lsf the store)",
                  file=sys.stderr)
            return code or 1
    return run_stopped(eff, steps)
