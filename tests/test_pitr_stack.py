"""PostgreSQL's WAL archive as the stacks run it (infra/pitr.py): the server's start prelude and
archive settings and the backup CronJob's base-backup script, taken from the RENDERED
Kubernetes manifests (only the paths substituted for a temporary directory, and the port),
run against Debian's PostgreSQL, pgBackRest and a real S3 server (versitygw with TLS on
127.0.0.1, tests/test_backup_store.py's fixture). Proves: the server creates its second
socket directory on the data volume, writes the key's include file from the secret files,
creates the stanza once it answers, archives; the job connects over that socket, its
pg1-path matches the server's data_directory, and the base backup and `check` pass.
Not proven here: the read-only mount (a bind mount needs privileges the test does not take)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import pitr
from infra.catalog import default_catalog
from infra.commands import render as render_cmd

from .conftest import render
from .test_backup_roundtrip import WAIT_S, _as_user, _pg_bin, _wait
from .test_backup_roundtrip import workdir as workdir
from .test_backup_store import BUCKET, S3, _sh
from .test_backup_store import s3 as s3
from .tools import ROOT, free_port, unavailable


def _manifests(port: int) -> list[dict[str, Any]]:
    store = {"endpoint": f"https://localhost:{port}", "bucket": BUCKET, "pathStyle": True,
             "prefix": "optiinfra/test", "encryption": "none", "archiveTimeoutS": 10}
    r = render("prod", "backups.store=" + json.dumps(store),
               secrets=("backupStoreAccessKeyId=AKIAEXAMPLEKEYID0001",
                        "backupStoreSecretAccessKey=s3cr3t-Access-Key-value-0001"))
    return [m for docs in render_cmd.by_file(r).values() for m in docs]


def _server_args(ms: list[dict[str, Any]]) -> list[str]:
    sts = next(m for m in ms if m["kind"] == "StatefulSet" and m["metadata"]["name"] == "postgres")
    args: list[str] = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    return [a.replace("$$", "$") for a in args]


def _job_script(ms: list[dict[str, Any]]) -> str:
    cj = next(m for m in ms if m["kind"] == "CronJob" and m["metadata"]["name"] == "postgres-backup")
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "base-backup"]
    assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] \
        == "kubernetes.io/hostname"
    data = next(m for m in c["volumeMounts"] if m["name"] == "pgdata")
    assert data["readOnly"] is True and data["mountPath"] == "/var/lib/postgresql/data"
    return str(c["command"][-1]).replace("$$", "$")


def _drill(ms: list[dict[str, Any]]) -> list[str]:
    """The drill's fetch and restore scripts (the tolerant wrapper's script argument)."""
    cj = next(m for m in ms if m["kind"] == "CronJob" and m["metadata"]["name"] == "postgres-drill")
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return [str(c["command"][-1]).replace("$$", "$") for c in pod["initContainers"]]


class Paths:
    def __init__(self, root: Path, role: str) -> None:
        self.volume, self.sock = root / "volume", root / "sock"
        self.etc, self.spool = root / f"{role}-etc", root / f"{role}-spool"
        self.secrets, self.store_secrets = root / "secrets", root / "store-secrets"

    def sub(self, text: str, port: int, ca: Path) -> str:
        for old, new in (("/run/secrets/optiinfra-backup-store", self.store_secrets),
                         ("/run/secrets/optiinfra", self.secrets), ("/var/lib/postgresql/data", self.volume),
                         ("/var/run/postgresql", self.sock), (pitr.CONF_DIR, self.etc), (pitr.SPOOL, self.spool)):
            text = text.replace(old, str(new))
        # pgBackRest 2.45 checks the certificate's DNS names: the test's CA for localhost.
        return text.replace("pg1-port=5432", f"pg1-port={port}").replace(
            "repo1-type=s3\n", f"repo1-type=s3\nrepo1-storage-ca-file={ca}\n", 1)


def _stop(user: list[str], bindir: Path, pgdata: Path, proc: subprocess.Popen[bytes]) -> None:
    """Stop a test's PostgreSQL server (immediately: its data is thrown away) and reap its
    wrapper process, bounded: killed when it does not exit."""
    subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                   capture_output=True, timeout=WAIT_S, check=False)
    try:
        proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def stack_server(workdir: Path, s3: S3) -> Iterator[tuple[list[dict[str, Any]], Paths, int, list[str]]]:
    bindir = _pg_bin()
    if bindir is None or shutil.which("pgbackrest") is None:
        unavailable("PostgreSQL or pgBackRest is not installed (apt-get install postgresql pgbackrest; .ci/run does)")
    user = _as_user()
    ms = _manifests(int(s3.endpoint.rsplit(":", 1)[1]))
    p = Paths(workdir, "server")
    for d in (p.volume, p.sock, p.etc, p.spool, p.secrets, workdir / "job-etc", workdir / "job-spool"):
        d.mkdir()
    port = free_port()
    ca = workdir / "s3.crt"
    cm = next(m for m in ms if m["kind"] == "ConfigMap" and "pgbackrest.conf" in m.get("data", {}))
    (p.etc / "pgbackrest.conf").write_text(p.sub(cm["data"]["pgbackrest.conf"], port, ca))
    # The namespace's Secret as the pod mounts it: one file per credential id.
    (p.secrets / "backup-store-access-key-id").write_text(s3.key_id)
    (p.secrets / "backup-store-secret-access-key").write_text(s3.secret)
    pgdata = p.volume / "pgdata"
    subprocess.run(["chown", "-R", "postgres", str(workdir)] if user else ["true"], check=True, timeout=WAIT_S)
    subprocess.run([*user, str(bindir / "initdb"), "-D", str(pgdata), "-U", "optiinfra", "--auth-local=trust",
                    "--no-sync"], check=True, capture_output=True, timeout=WAIT_S)
    args = [p.sub(a, port, ca) for a in _server_args(ms)]
    prelude = args[2]
    postgres = args[args.index("postgres"):]  # the image's command and the rendered settings
    # Instead of the image's entrypoint (no initdb here): the server itself, in the foreground.
    argv = [str(bindir / "postgres"), "-D", str(pgdata), *postgres[1:], "-c", f"port={port}",
            "-c", "listen_addresses=127.0.0.1"]
    log = (workdir / "pg.log").open("ab")
    proc = subprocess.Popen([*user, "sh", "-c", prelude, "sh", *argv], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        sock = p.volume / pitr.SOCKET
        _wait(lambda: any(sock.glob(".s.PGSQL.*")), "the socket on the data volume")
        subprocess.run([*user, "psql", "-X", "-q", "-h", str(sock), "-p", str(port), "-U", "optiinfra", "-d",
                        "postgres", "-c", "CREATE DATABASE optiinfra"], check=True, capture_output=True,
                       timeout=WAIT_S)
        subprocess.run([*user, "psql", "-X", "-q", "-h", str(sock), "-p", str(port), "-U", "optiinfra", "-d",
                        "optiinfra", "-c", "CREATE TABLE tasks AS SELECT g AS id FROM generate_series(1, 1000) g"],
                       check=True, capture_output=True, timeout=WAIT_S)
        yield ms, p, port, user
    finally:
        _stop(user, bindir, pgdata, proc)


def test_the_rendered_backup_job_takes_a_base_backup_over_the_socket_on_the_data_volume(
        stack_server: tuple[list[dict[str, Any]], Paths, int, list[str]], workdir: Path, s3: S3) -> None:
    ms, server, port, user = stack_server
    key = (server.spool / "conf.d" / "store-key.conf")
    # The prelude wrote the key's include file from the secret files, readable by the server only.
    _wait(key.exists, "the include file")
    assert key.stat().st_mode & 0o077 == 0
    assert s3.secret in key.read_text()
    assert s3.secret not in " ".join(_server_args(ms))
    job = Paths(workdir, "job")
    job.store_secrets = s3.secret_dir
    script = job.sub(_job_script(ms), port, workdir / "s3.crt")
    env = {"PGPORT": str(port)}
    done = _sh(script, env=env, timeout=300, user=user)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backup written: backup-" in done.stdout
    # The base backup and WAL are in the store, under the stanza.
    repo = s3.root / BUCKET / "optiinfra/test/pgbackrest"
    assert list((repo / "backup" / "optiinfra").glob("*F")), "no full backup in the store"
    assert list((repo / "archive" / "optiinfra").rglob("*.zst")), "no archived WAL in the store"
    # The rendered drill's steps restore that archive into a throwaway cluster and pass.
    drill = _drill(ms)
    shared = workdir / "drill"
    shared.mkdir()
    dj = Paths(workdir, "drill")
    dj.store_secrets = s3.secret_dir
    for d in (dj.etc, dj.spool):
        d.mkdir()
    if user:
        for d in (shared, dj.etc, dj.spool):
            shutil.chown(d, "postgres")
    path = {"PATH": f"{_pg_bin()}:{os.environ['PATH']}"}
    for step in drill[:2]:
        ran = _sh(dj.sub(step.replace("/drill", str(shared)), port, workdir / "s3.crt"), env=path, timeout=300,
                  user=user)
        assert ran.returncode == 0, ran.stdout + ran.stderr
    print(ran.stdout.strip())
    assert "drill passed" in ran.stdout, ran.stderr
    assert 'optiinfra_backup_drill_success{service="postgres"} 1' in (shared / "metrics.prom").read_text()
    # A wrong key: the job fails (the series BackupFailed reads), never a silent success.
    wrong = workdir / "wrong-secrets"
    wrong.mkdir()
    (wrong / "access-key-id").write_text(s3.key_id)
    (wrong / "secret-access-key").write_text("not-the-secret")
    if user:
        shutil.chown(wrong, "postgres")
        for f in wrong.iterdir():
            shutil.chown(f, "postgres")
    bad = _sh(script.replace(str(s3.secret_dir), str(wrong)), env=env, timeout=300, user=user)
    assert bad.returncode != 0


STORE = 'backups.store={"endpoint": "https://s3.example.com", "bucket": "optiinfra-backups"}'
KEYS = ["--secret", "backupStoreAccessKeyId=AKIAEXAMPLEKEYID0001",
        "--secret", "backupStoreSecretAccessKey=s3cr3t-Access-Key-value-0001"]


def _restore(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", "restore", "-s", "prod", *extra], capture_output=True,
                          text=True, timeout=300, check=False, cwd=ROOT)


def test_restore_to_time_on_kubernetes_prints_the_steps_and_the_pgbackrest_job() -> None:
    done = _restore("--service", "postgres", "--to-time", "2026-12-01T02:00:00Z", "--set", STORE, *KEYS,
                    "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    steps = plan["steps"]
    assert steps[1].endswith("scale statefulset/postgres --replicas=0") and steps[-2].endswith("--replicas=1")
    assert "cronjob/postgres-backup" in steps[0] and '"suspend":true' in steps[0] and '"suspend":false' in steps[-1]
    assert any(s.startswith("kubectl apply -f postgres-restore.yaml") for s in steps)
    pod = plan["job"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "pgbackrest" in c["image"]
    script = c["command"][-1]
    assert "--type=time" in script and "--target=2026-12-01 02:00:00.000+00" in script
    data = next(m for m in c["volumeMounts"] if m["name"] == "data")
    assert data["mountPath"] == "/var/lib/postgresql/data" and not data.get("readOnly")
    assert "s3cr3t-Access-Key-value-0001" not in done.stdout + done.stderr
    # The guard: without --yes-overwrite nothing is printed but the steps, exit 2.
    guarded = _restore("--service", "postgres", "--to-time", "2026-12-01T02:00:00Z", "--set", STORE, *KEYS)
    assert guarded.returncode == 2 and "--yes-overwrite" in guarded.stderr and guarded.stdout == ""
    # Another service has no archive: one error line, exit 2.
    other = _restore("--service", "redis", "--to-time", "2026-12-01T02:00:00Z", "--set", STORE, *KEYS)
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "redis has no WAL archive" in other.stderr


def test_the_archive_image_is_built_from_the_catalogs_postgres_image() -> None:
    (svc,) = [s for s in default_catalog().services.values() if s.backup and s.backup.archive]
    assert svc.backup is not None and svc.backup.archive is not None
    dockerfile = ROOT / "images" / svc.backup.archive.image / "Dockerfile"
    froms = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
    assert froms == [svc.image], "bump the Dockerfile's FROM with the catalog's image (Renovate does both)"
    assert (ROOT / ".github" / "workflows" / f"{svc.backup.archive.image}-image.yml").exists()
