"""The scheduled restore drill's steps (infra/objectstore.drill_steps, the very scripts the
drill CronJob's containers run, in the same exec form) against real servers: versitygw as the
store, Debian's PostgreSQL and Redis as the backed-up services and the drills' throwaway
servers, and a Pushgateway built from its Go module (scripts/tools.sh pushgateway) the results
are pushed to. Every server listens on 127.0.0.1 on a free port and is stopped in a fixture's
teardown, even when a test fails; every wait is bounded.

A good backup pushes success 1 with its RPO and RTO; a backup without the canary or a corrupt
one pushes success 0 and the run exits non-zero; the series are read back from the
Pushgateway's /metrics, as Prometheus scrapes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import backup, objectstore
from infra.settings import BackupStore

from .test_backup_roundtrip import PG, REDIS, WAIT_S, Server, _as_user, _pg_bin, _psql, _redis, _wait
from .test_backup_roundtrip import postgres as postgres
from .test_backup_roundtrip import redis as redis
from .test_backup_roundtrip import workdir as workdir
from .test_backup_store import BUCKET, S3, _sh
from .test_backup_store import s3 as s3
from .tools import free_port, go_tool, unavailable


@dataclass
class Gateway:
    url: str

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def value(self, name: str, service: str) -> float | None:
        """The pushed series `name` of `service` as a scrape reads it (None: not there)."""
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") and f'service="{service}"' in line \
                    and f'job="{objectstore.DRILL_JOB_LABEL}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def gateway(workdir: Path) -> Iterator[Gateway]:
    tool = go_tool("pushgateway")
    if isinstance(tool, str):
        unavailable(tool)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "pushgateway.log").open("ab")
    proc = subprocess.Popen([str(tool), f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    try:
        _wait(lambda: _ready(url), "pushgateway")
        yield Gateway(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass
class Ran:
    code: int
    out: str
    seconds: float


def _drill(steps: objectstore.DrillSteps, shared: Path, as_user: list[str] | None = None) -> Ran:
    """The three steps in order, as the pod runs them: fetch and restore tolerant (they never
    stop the push), then the push, whose status is the run's. `as_user`: the restore step's
    user (PostgreSQL refuses root)."""
    started = time.monotonic()
    out = []
    fetch = _sh(f"exec {' '.join(map(_quote, objectstore.tolerant(steps.fetch)))}", timeout=120)
    out.append(fetch.stdout + fetch.stderr)
    assert fetch.returncode == 0  # tolerant: the push step reports a failure
    if as_user:
        for p in [shared, *shared.rglob("*")]:
            shutil.chown(p, "postgres")
    restore = _sh(f"exec {' '.join(map(_quote, objectstore.tolerant(steps.restore)))}", timeout=180, user=as_user)
    out.append(restore.stdout + restore.stderr)
    assert restore.returncode == 0
    push = _sh(steps.push, timeout=60)
    out.append(push.stdout + push.stderr)
    return Ran(push.returncode, "\n".join(out), time.monotonic() - started)


def _quote(word: str) -> str:
    import shlex
    return shlex.quote(word)


def _shared(workdir: Path) -> Path:
    d = workdir / "drill"
    d.mkdir()
    d.chmod(0o777)
    return d


def _store_object(s3: S3, service_name: str) -> Path:
    (obj,) = list((s3.root / BUCKET / "optiinfra/test" / service_name).iterdir())
    return obj


def _replace(s3: S3, store: BackupStore, service_name: str, local: Path) -> None:
    """Replace the backup object through the S3 API (the store's checksums stay intact)."""
    svc = PG if service_name == PG.name else REDIS
    done = _sh("\n".join([*objectstore.store_preamble(store, objectstore.StoreAccess(str(s3.secret_dir))),
                          f"rclone copyto {local} store:{objectstore.path_of(store, svc)}/{local.name}"]))
    assert done.returncode == 0, done.stderr


# ---- Redis ---------------------------------------------------------------------------------


def _redis_steps(s3: S3, store: BackupStore, shared: Path, gw: Gateway) -> objectstore.DrillSteps:
    return objectstore.drill_steps(store, objectstore.StoreAccess(str(s3.secret_dir)), REDIS, shared=str(shared),
                                   port=free_port(), push_url=gw.url)


def _redis_backup(server: Server, s3: S3, store: BackupStore, directory: Path) -> None:
    where = backup.Where("127.0.0.1", server.port, str(directory), str(server.password_file))
    made = _sh(objectstore.offsite_backup_script(REDIS, where, 2, store, objectstore.StoreAccess(str(s3.secret_dir))))
    assert made.returncode == 0, made.stderr


def test_redis_drill_pushes_success_rpo_and_rto(redis: Server, s3: S3, gateway: Gateway, workdir: Path) -> None:
    store = s3.store()
    for i in range(500):
        _redis(redis, "SET", f"task:{i}", f"payload {i}")
    local = workdir / "local"
    local.mkdir()
    _redis_backup(redis, s3, store, local)
    shared = _shared(workdir)
    ran = _drill(_redis_steps(s3, store, shared, gateway), shared)
    assert ran.code == 0, ran.out
    assert "drill passed" in ran.out and "501 keys" in ran.out, ran.out
    assert gateway.value("optiinfra_backup_drill_success", REDIS.name) == 1
    rpo = gateway.value("optiinfra_backup_drill_rpo_seconds", REDIS.name)
    rto = gateway.value("optiinfra_backup_drill_rto_seconds", REDIS.name)
    stamp = gateway.value("optiinfra_backup_drill_timestamp_seconds", REDIS.name)
    assert rpo is not None and 0 <= rpo < 600 and rto is not None and rto >= 0
    assert stamp is not None and abs(stamp - time.time()) < 600
    # The drill cleaned up after itself: only the pushed result is left in the shared directory.
    assert sorted(p.name for p in shared.iterdir()) == ["fetched", "metrics.prom", "started"]
    print(f"redis drill: 500 keys, RPO {rpo:.0f}s, RTO {rto:.0f}s, whole run {ran.seconds:.1f}s")


def _cut_in_half(s3: S3, store: BackupStore, service: str, workdir: Path) -> None:
    """Corrupt the newest backup of `service` in the store: its first half put back in its place."""
    obj = _store_object(s3, service)
    cut = workdir / "cut" / obj.name
    cut.parent.mkdir()
    blob = obj.read_bytes()
    cut.write_bytes(blob[:len(blob) // 2])
    _replace(s3, store, service, cut)


def test_redis_drill_of_a_corrupt_backup_pushes_failure(redis: Server, s3: S3, gateway: Gateway,
                                                        workdir: Path) -> None:
    store = s3.store()
    _redis(redis, "SET", "k", "v")
    _redis_backup(redis, s3, store, workdir)
    _cut_in_half(s3, store, REDIS.name, workdir)
    shared = _shared(workdir)
    ran = _drill(_redis_steps(s3, store, shared, gateway), shared)
    assert ran.code != 0 and "restore failed" in ran.out, ran.out
    assert gateway.value("optiinfra_backup_drill_success", REDIS.name) == 0
    assert gateway.value("optiinfra_backup_drill_rpo_seconds", REDIS.name) == -1


def test_a_drill_with_nothing_in_the_store_pushes_failure(s3: S3, gateway: Gateway, workdir: Path) -> None:
    shared = _shared(workdir)
    ran = _drill(_redis_steps(s3, s3.store(), shared, gateway), shared)
    assert ran.code != 0 and f"no backup of {REDIS.name}" in ran.out, ran.out
    assert gateway.value("optiinfra_backup_drill_success", REDIS.name) == 0


# ---- PostgreSQL: the stacks' daily dump ------------------------------------------------------


def _pg_steps(s3: S3, store: BackupStore, shared: Path, gw: Gateway) -> objectstore.DrillSteps:
    conn = PG.connection
    assert conn is not None and conn.user
    bindir = _pg_bin()
    assert bindir is not None
    return objectstore.drill_steps(store, objectstore.StoreAccess(str(s3.secret_dir)), PG, shared=str(shared),
                                   port=free_port(), push_url=gw.url, user=conn.user, database="optiinfra",
                                   pg_bin=str(bindir))


def _pg_backup(server: Server, s3: S3, store: BackupStore, directory: Path, *, canary: bool = True) -> None:
    where = backup.Where("127.0.0.1", server.port, str(directory), str(server.password_file))
    script = (objectstore.offsite_backup_script(PG, where, 2, store, objectstore.StoreAccess(str(s3.secret_dir)))
              if canary else
              backup.backup_script(PG, where, 2) + "\n".join([
                  *objectstore.store_preamble(store, objectstore.StoreAccess(str(s3.secret_dir))),
                  *objectstore.upload_lines(store, PG, 2)]) + "\n")
    made = _sh(script)
    assert made.returncode == 0, made.stdout + made.stderr


def _pg_data(server: Server, rows: int) -> None:
    _psql(server, "CREATE SCHEMA collector; CREATE TABLE collector.jobs (id serial PRIMARY KEY, body text); "
                  "CREATE TABLE public.events (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
    _psql(server, f"INSERT INTO collector.jobs (body) SELECT repeat('x', 200) FROM generate_series(1, {rows}); "
                  f"INSERT INTO public.events DEFAULT VALUES")


def test_postgres_drill_restores_the_dump_and_pushes_success(postgres: Server, s3: S3, gateway: Gateway,
                                                             workdir: Path) -> None:
    store = s3.store()
    _pg_data(postgres, 20000)
    size = _psql(postgres, "SELECT pg_size_pretty(pg_database_size('optiinfra'))")
    local = workdir / "local"
    local.mkdir()
    if _as_user():
        shutil.chown(local, "postgres")
        os.chmod(local, 0o777)
    _pg_backup(postgres, s3, store, local)
    dump = _store_object(s3, PG.name).stat().st_size
    shared = _shared(workdir)
    ran = _drill(_pg_steps(s3, store, shared, gateway), shared, _as_user())
    assert ran.code == 0, ran.out
    assert "drill passed" in ran.out and "2 tables" in ran.out, ran.out
    assert gateway.value("optiinfra_backup_drill_success", PG.name) == 1
    rpo = gateway.value("optiinfra_backup_drill_rpo_seconds", PG.name)
    rto = gateway.value("optiinfra_backup_drill_rto_seconds", PG.name)
    assert rpo is not None and 0 <= rpo < 600 and rto is not None and rto >= 0
    print(f"postgres drill: {size} database (20000 rows), dump {dump // 1024} KiB; RPO {rpo:.0f}s, "
          f"RTO {rto:.0f}s, whole run {ran.seconds:.1f}s")


def test_postgres_drill_without_the_canary_pushes_failure(postgres: Server, s3: S3, gateway: Gateway,
                                                          workdir: Path) -> None:
    store = s3.store()
    _pg_data(postgres, 10)
    local = workdir / "local"
    local.mkdir(mode=0o777)
    local.chmod(0o777)
    _pg_backup(postgres, s3, store, local, canary=False)
    shared = _shared(workdir)
    ran = _drill(_pg_steps(s3, store, shared, gateway), shared, _as_user())
    assert ran.code != 0 and "no canary row" in ran.out, ran.out
    assert gateway.value("optiinfra_backup_drill_success", PG.name) == 0


def test_postgres_drill_of_a_corrupt_dump_pushes_failure(postgres: Server, s3: S3, gateway: Gateway,
                                                         workdir: Path) -> None:
    store = s3.store()
    _pg_data(postgres, 1000)
    local = workdir / "local"
    local.mkdir(mode=0o777)
    local.chmod(0o777)
    _pg_backup(postgres, s3, store, local)
    _cut_in_half(s3, store, PG.name, workdir)
    shared = _shared(workdir)
    ran = _drill(_pg_steps(s3, store, shared, gateway), shared, _as_user())
    assert ran.code != 0 and "restore failed" in ran.out, ran.out
    assert gateway.value("optiinfra_backup_drill_success", PG.name) == 0
