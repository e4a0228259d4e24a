"""`backup --drill` on a Docker stack: the restore drill the Kubernetes CronJobs run, now.

For each store the catalog gives a drill (`Backup.drill`), two one-shot containers share a
scratch directory below `backups.hostDir` (objectstore.drill_steps, the scripts the drill
CronJob runs): rclone's image downloads the newest backup of the service from
`backups.store` (for PostgreSQL's WAL archive it only records the start: pgBackRest fetches
itself), then the service's own image (the archive image) restores it into a throwaway server
inside its container and checks the canary and the data, and writes the result. Docker has no
Pushgateway: the result is printed (the same series a Kubernetes drill pushes) and the
command fails unless the drill passed. The scratch directory is removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .. import backup as backups
from .. import objectstore, pitr
from ..backends.docker import backup_dir, container_name
from ..graph import Effective, Resolved
from ..model import drill_job
from ..settings import NAMESPACE, ConfigError
from ..stack import ROOT
from .backup import STORE_KEY_ENV, Step, key_env, pgbackrest_step

SHARED = "/drill"
"""Where the drill's containers see the scratch directory."""
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--env", "HOME=/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true", "--memory", "512m", "--cpus", "0.5"]


def drilled(model: Resolved, chosen: list[Effective]) -> list[Effective]:
    """The chosen services that have a drill; refuses a stack without a store, or a named
    service without a drill."""
    if model.settings.backups.store is None:
        raise ConfigError(f"{NAMESPACE}:backups.store", "is not set: a drill restores the newest backup in the "
                          "off-site store", "set backups.store (docs/backups.md), then back up before the drill")
    if model.settings.backups.store.encryption == "client":
        raise ConfigError(f"{NAMESPACE}:backups.store.encryption", "is client, which a Docker stack does not offer "
                          "yet (its backups are never uploaded so)", "use sse-s3 or sse-kms on the Docker stack")
    out = [e for e in chosen if backups.backup_of(e.service).drill]
    if not out:
        names = ", ".join(e.name for e in model.backed_up() if backups.backup_of(e.service).drill)
        raise ConfigError("--service", f"{chosen[0].name} has no restore drill" if len(chosen) == 1 else
                          "no chosen service has a restore drill", f"use one of: {names}")
    return out


def scratch(model: Resolved, eff: Effective, root: Path = ROOT) -> Path:
    """The host directory the drill's containers share (below the service's backup directory)."""
    return Path(backup_dir(model, eff.name, root)) / f".{drill_job(eff.name)}"


def drill_steps(model: Resolved, eff: Effective, root: Path = ROOT) -> list[Step]:
    """fetch (rclone), restore (the service's image): both as the service's user, which the
    restore's tools (initdb) need; the scratch directory is world-writable for them. The
    pgBackRest drill (the archiving server): the fetch only records the start, the restore
    runs in the archive image on Docker's default bridge (pgBackRest fetches from the store),
    its throwaway server on a socket in the scratch directory only."""
    svc = eff.service
    store = model.settings.backups.store
    assert store is not None and svc.connection is not None
    b = backups.backup_of(svc)
    archive = b.drill == "pgbackrest"
    # pgBackRest (the archiving server) reads the store itself: its configuration and the key's
    # include file, written from the shell's variables inside the restore container.
    setup = (pitr.CONF, pitr.INCLUDE, pitr.env_setup_lines(store, svc, model.settings.backups.retention,
                                                           STORE_KEY_ENV)) if archive else None
    steps = objectstore.drill_steps(store, objectstore.StoreAccess(None), svc, shared=SHARED,
                                    port=svc.port(b.port).container, push_url="http://127.0.0.1:9",
                                    user=svc.connection.user or "", database="optiinfra", pgbackrest_setup=setup)
    mount = ["--volume", f"{scratch(model, eff, root)}:{SHARED}"]
    user = ["--user", str(b.uid if b.uid is not None else svc.uid)]
    keys = key_env(model)
    if archive:  # the fetch step only records the start: no key there; the restore dials the store
        fetch = ["docker", "run", "--rm", "--name", container_name(f"{drill_job(svc.name)}-fetch"), *user,
                 *HARDENED, "--network", "none", *mount, "--entrypoint", "sh", objectstore.RCLONE_IMAGE, "-c",
                 steps.fetch]
        return [Step(fetch), pgbackrest_step(model, eff, container_name(f"{drill_job(svc.name)}-restore"),
                                             steps.restore, mounts=(mount[1],))]
    fetch = ["docker", "run", "--rm", "--name", container_name(f"{drill_job(svc.name)}-fetch"), *user, *HARDENED,
             *mount, *keys, "--entrypoint", "sh", objectstore.RCLONE_IMAGE, "-c", steps.fetch]
    # The throwaway server listens on 127.0.0.1 inside its own container: no network at all.
    restore = ["docker", "run", "--rm", "--name", container_name(f"{drill_job(svc.name)}-restore"), *user,
               *HARDENED, "--network", "none", *mount, "--entrypoint", "sh", b.image or eff.image, "-c",
               steps.restore]
    return [Step(fetch), Step(restore)]


def result(model: Resolved, eff: Effective, root: Path = ROOT) -> tuple[bool, str]:
    """The drill's series (what a Kubernetes drill pushes) and whether it passed."""
    path = scratch(model, eff, root) / objectstore.DRILL_METRICS_FILE
    text = path.read_text() if path.exists() else ""
    ok = f'optiinfra_backup_drill_success{{service="{eff.name}"}} 1' in text.splitlines()
    return ok, text


def prepare(model: Resolved, eff: Effective, root: Path = ROOT) -> Path:
    path = scratch(model, eff, root)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    path.chmod(0o777)  # the containers run as the service's user, not yours
    return path


def report(model: Resolved, eff: Effective, root: Path = ROOT) -> int:
    """Print the drill's result, clean the scratch directory; 0 only when it passed."""
    ok, text = result(model, eff, root)
    print(text.strip() or f"{eff.name}: the drill wrote no result", flush=True)
    shutil.rmtree(scratch(model, eff, root), ignore_errors=True)
    if not ok:
        print(f"error: {eff.name}: the restore drill failed (see its output above)", file=sys.stderr)
        return 1
    print(f"{eff.name}: drill passed", flush=True)
    return 0


def run_drills(model: Resolved, chosen: list[Effective], root: Path = ROOT) -> int:
    """Each drill's steps in order (a failed step still lets the result be read and printed),
    then its result; the exit status is the first failing drill's."""
    status = 0
    for eff in chosen:
        prepare(model, eff, root)
        for step in drill_steps(model, eff, root):
            print(f"+ {step.shown()}", flush=True)
            if subprocess.run(step.argv, check=False).returncode != 0:
                break
        status = status or report(model, eff, root)
    return status
