"""Off-site backups through a real S3-compatible server: PostgreSQL's WAL archive and
point-in-time restore with pgBackRest, Redis' RDB through rclone, the restore drills, and
the failures (wrong key, unreachable endpoint, missing bucket) that must fail the job.

The S3 server is versitygw (scripts/tools.sh versitygw, its posix backend in a temporary
directory), PostgreSQL and Redis the Debian packages; each listens on 127.0.0.1 on a free
port and is stopped in a fixture's finally, even when a test fails. The scripts are the ones
infra/objectstore.py renders for the jobs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra import backup, objectstore
from infra.objectstore import pgbackrest
from infra.settings import BackupStore

from .test_backup_roundtrip import PG, REDIS, WAIT_S, Server, _as_user, _pg_bin, _redis, _wait
from .test_backup_roundtrip import redis as redis
from .test_backup_roundtrip import workdir as workdir
from .tools import free_port, go_tool, unavailable

BUCKET = "optiinfra-backups"


@dataclass
class S3:
    endpoint: str
    key_id: str
    secret: str
    root: Path
    secret_dir: Path

    def store(self, **kw: object) -> BackupStore:
        return BackupStore.model_validate({"endpoint": self.endpoint, "bucket": BUCKET, "pathStyle": True,
                                           "prefix": "optiinfra/test", "encryption": "none", **kw})


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _sh(script: str, env: dict[str, str] | None = None, timeout: float = 120,
        user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    # None of the machine's AWS_* (a CA bundle, a profile) reaches the clients: only the store's.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # Its own process group, killed whole on a timeout (no client left behind holding a lock).
    with subprocess.Popen([*(user or []), "sh", "-c", script], env={**base, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def s3(workdir: Path) -> Iterator[S3]:
    tool = go_tool("versitygw")
    if isinstance(tool, str):
        unavailable(tool)
    if shutil.which("rclone") is None:
        unavailable("rclone is not installed (apt-get install rclone; .ci/run does)")
    root = workdir / "s3"
    root.mkdir()
    key_id, secret = "optiinfra" + secrets.token_hex(4), secrets.token_urlsafe(24)
    secret_dir = workdir / "store-secrets"
    secret_dir.mkdir()
    (secret_dir / "access-key-id").write_text(key_id)
    (secret_dir / "secret-access-key").write_text(secret)
    (secret_dir / "passphrase").write_text(secrets.token_urlsafe(24))
    port = free_port()
    log = (workdir / "s3.log").open("ab")
    # TLS as a real store (pgBackRest speaks S3 over TLS only): a certificate for 127.0.0.1.
    cert, key = workdir / "s3.crt", workdir / "s3.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=WAIT_S)
    cert.chmod(0o644)
    os.environ["RCLONE_CA_CERT"] = str(cert)
    # The root key by environment, never argv (ps would show it).
    proc = subprocess.Popen([str(tool), "--port", f"127.0.0.1:{port}", "--cert", str(cert), "--key", str(key),
                             "posix", str(root)], stdout=log, stderr=log,
                            env={**os.environ, "ROOT_ACCESS_KEY": key_id, "ROOT_SECRET_KEY": secret})
    try:
        _wait(lambda: _listening(port), "versitygw")
        server = S3(f"https://127.0.0.1:{port}", key_id, secret, root, secret_dir)
        made = _sh("\n".join([*objectstore.store_preamble(server.store(), objectstore.StoreAccess(str(secret_dir))),
                              # The bucket is the operator's to make: the jobs never create one.
                              "export RCLONE_CONFIG_STORE_NO_CHECK_BUCKET=false RCLONE_S3_NO_CHECK_BUCKET=false",
                              f"rclone mkdir store:{BUCKET}"]))
        assert made.returncode == 0, made.stderr
        yield server
    finally:
        os.environ.pop("RCLONE_CA_CERT", None)
        proc.terminate()
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- PostgreSQL: WAL archive and point-in-time restore ---------------------------------


@dataclass
class Archived:
    port: int
    data: Path
    sock: Path
    conf: Path
    include: Path
    start: object
    stop: object
    user: list[str]
    bindir: Path
    password: str


def _pg_setup(workdir: Path, s3: S3, store: BackupStore) -> Archived:
    bindir = _pg_bin()
    if bindir is None or shutil.which("pgbackrest") is None:
        unavailable("PostgreSQL or pgBackRest is not installed (apt-get install postgresql pgbackrest; .ci/run does)")
    user = _as_user()
    conn = PG.connection
    assert conn is not None and conn.user
    data, sock, etc = workdir / "pgdata", workdir / "sock", workdir / "pgbackrest"
    for d in (sock, etc, etc / "conf.d", workdir / "spool", workdir / "pblog"):
        d.mkdir()
    password = secrets.token_urlsafe(18)
    pwfile = workdir / "pw"
    pwfile.write_text(password + "\n")
    port = free_port()
    conf = etc / "pgbackrest.conf"
    conf.write_text(objectstore.pgbackrest_conf(store, pg_path=str(data), socket_dir=str(sock), port=port,
                                                user=conn.user, retention=2, spool=str(workdir / "spool"),
                                                log_dir=str(workdir / "pblog"))
                    # pgBackRest 2.45 matches a certificate's DNS names only, never an IP
                    # address: it dials the name localhost (127.0.0.1 in this machine's hosts).
                    + f"repo1-storage-ca-file={workdir / 's3.crt'}\nrepo1-s3-endpoint=localhost\n")
    (etc / "conf.d" / "store.conf").write_text(objectstore.pgbackrest_secret_conf(store, s3.key_id, s3.secret))
    (etc / "conf.d" / "store.conf").chmod(0o600)
    if user:
        for p in (workdir, sock, etc, etc / "conf.d", etc / "conf.d" / "store.conf", conf, pwfile,
                  workdir / "spool", workdir / "pblog"):
            shutil.chown(p, "postgres")
    # As the official image: trust over the local socket (pgBackRest connects there), a
    # password over TCP.
    subprocess.run([*user, str(bindir / "initdb"), "-D", str(data), "-U", conn.user, "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"], check=True, capture_output=True,
                   timeout=WAIT_S)
    settings = objectstore.archive_settings(store, str(conf), str(etc / "conf.d"))
    opts = " ".join(f"-c {s.split('=', 1)[0]}='{s.split('=', 1)[1]}'" for s in settings)

    def start() -> None:
        subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(workdir / "pg.log"), "-w", "-t",
                        "120", "-o", f"-c listen_addresses=127.0.0.1 -c port={port} "
                        f"-c unix_socket_directories={sock} {opts}", "start"],
                       check=True, capture_output=True, timeout=150)

    def stop(mode: str = "fast") -> None:
        subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=WAIT_S, check=False)

    return Archived(port, data, sock, conf, etc / "conf.d", start, stop, user, bindir, password)


def _q(pg: Archived, sql: str, db: str = "optiinfra") -> str:
    out = subprocess.run([*pg.user, "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(pg.sock), "-p",
                          str(pg.port), "-U", "optiinfra" if PG.connection is None else str(PG.connection.user),
                          "-d", db, "-c", sql], capture_output=True, text=True, timeout=WAIT_S, check=True)
    return out.stdout.strip()


@pytest.fixture
def archived(workdir: Path, s3: S3) -> Iterator[tuple[Archived, BackupStore]]:
    store = s3.store(archiveTimeoutS=10)
    pg = _pg_setup(workdir, s3, store)
    pg.start()  # type: ignore[operator]
    try:
        _q(pg, "CREATE DATABASE optiinfra", db="postgres")
        yield pg, store
    finally:
        pg.stop("immediate")  # type: ignore[operator]


class Writer(threading.Thread):
    """Inserts a row every 100 ms through one psql session (autocommit per statement)."""

    def __init__(self, pg: Archived) -> None:
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.proc = subprocess.Popen([*pg.user, "psql", "-X", "-q", "-h", str(pg.sock), "-p", str(pg.port),
                                      "-U", "optiinfra", "-d", "optiinfra", "-v", "ON_ERROR_STOP=1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)

    def run(self) -> None:
        assert self.proc.stdin is not None
        while not self.halt.is_set():
            self.proc.stdin.write("INSERT INTO writes DEFAULT VALUES;\n")
            self.proc.stdin.flush()
            time.sleep(0.1)

    def finish(self) -> None:
        self.halt.set()
        self.join(timeout=5)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=WAIT_S)


def _restore(pg: Archived, to_time: str | None) -> float:
    started = time.monotonic()
    shutil.rmtree(pg.data)
    pg.data.mkdir(mode=0o700)
    if pg.user:
        shutil.chown(pg.data, "postgres")
    done = _sh(objectstore.pitr_restore_script(str(pg.conf), str(pg.include), to_time=to_time), user=pg.user)
    assert done.returncode == 0, done.stdout + done.stderr
    pg.start()  # type: ignore[operator]
    _wait(lambda: _q(pg, "SELECT pg_is_in_recovery()") == "f", "promotion after recovery")
    return time.monotonic() - started


def test_point_in_time_restore_through_the_store(archived: tuple[Archived, BackupStore]) -> None:
    pg, store = archived
    _q(pg, "CREATE TABLE writes (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    made = _sh(objectstore.pitr_backup_script(store, str(pg.conf), str(pg.include), database="optiinfra")
               .replace("psql -X", f"psql -h {pg.sock} -p {pg.port} -U optiinfra -X"), user=pg.user)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "backup written: backup-" in made.stdout
    # Backup size against data size: what the store holds of the base backup (zstd) and the
    # cluster it copied (pgBackRest's own accounting).
    info = _sh(pgbackrest(str(pg.conf), str(pg.include), "info", "--output=json"), user=pg.user)
    assert info.returncode == 0, info.stdout + info.stderr
    (base,) = json.loads(info.stdout)[0]["backup"]
    stored, copied = base["info"]["repository"]["delta"], base["info"]["size"]
    assert 0 < stored < copied, f"the base backup holds {stored} bytes in the store for {copied} bytes copied"
    print(f"postgres base backup: {stored / 2**20:.1f} MiB in the store for a {copied / 2**20:.1f} MiB cluster "
          f"({stored / copied:.2f})")
    writer = Writer(pg)
    writer.start()
    try:
        time.sleep(2 * store.archive_timeout_s + 3)  # at least two archive_timeout switches
    finally:
        disaster = datetime.now(UTC)
        writer.finish()
    rows = [line.split("|") for line in _q(pg, "SELECT id, extract(epoch FROM at) FROM writes ORDER BY id").split()]
    assert len(rows) > 100, "the writer wrote too little"
    dataset = _q(pg, "SELECT pg_size_pretty(pg_database_size('optiinfra'))")
    # The disaster: the server dies without a final archive; what is in the store is all there is.
    pg.stop("immediate")  # type: ignore[operator]
    rto = _restore(pg, None)
    last = float(_q(pg, "SELECT extract(epoch FROM max(at)) FROM writes"))
    rpo = disaster.timestamp() - last
    print(f"postgres PITR: {len(rows)} rows written, {dataset}; end-of-archive restore: RPO {rpo:.1f}s "
          f"(archive_timeout {store.archive_timeout_s}s), RTO {rto:.1f}s")
    assert rpo <= store.archive_timeout_s + 5
    # A timestamp between two writes, in the first half (long archived): exactly the rows before it.
    k = len(rows) // 3
    t_k, t_next = float(rows[k][1]), float(rows[k + 1][1])
    target = datetime.fromtimestamp((t_k + t_next) / 2, UTC)
    pg.stop()  # type: ignore[operator]
    rto2 = _restore(pg, target.isoformat(timespec="microseconds"))
    got = _q(pg, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM writes")
    assert got == ",".join(r[0] for r in rows[:k + 1]), f"restore to {target} returned other rows"
    print(f"postgres PITR to {target.isoformat()} (between rows {rows[k][0]} and {rows[k + 1][0]}): "
          f"{k + 1} rows, RTO {rto2:.1f}s")


# ---- drills and failures -------------------------------------------------------------


def _redis_offsite_backup(server: Server, s3: S3, store: BackupStore, directory: Path,
                          secret_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    where = backup.Where("127.0.0.1", server.port, str(directory), str(server.password_file))
    script = objectstore.offsite_backup_script(REDIS, where, 2, store,
                                               objectstore.StoreAccess(str(secret_dir or s3.secret_dir)))
    return _sh(script)


def _put(s3: S3, store: BackupStore, local: Path) -> None:
    """Replace a backup object in the store through the S3 API (checksums intact)."""
    done = _sh("\n".join([*objectstore.store_preamble(store, objectstore.StoreAccess(str(s3.secret_dir))),
                          f"rclone copyto {local} store:{objectstore.path_of(store, REDIS)}/{local.name}"]))
    assert done.returncode == 0, done.stderr


def test_redis_rdb_round_trip_and_drill_through_the_store(redis: Server, s3: S3, workdir: Path) -> None:
    store = s3.store()
    for i in range(500):
        _redis(redis, "SET", f"task:{i}", f"payload {i}")
    local = workdir / "local"
    local.mkdir()
    started = time.monotonic()
    made = _redis_offsite_backup(redis, s3, store, local)
    took = time.monotonic() - started
    assert made.returncode == 0, made.stderr
    assert "uploaded: store:" in made.stdout
    uploaded = list((s3.root / BUCKET / "optiinfra/test" / REDIS.name).iterdir())
    assert len(uploaded) == 1 and uploaded[0].read_bytes()[:5] == b"REDIS"
    data_kib = int(_redis(redis, "MEMORY", "STATS").split("\n")[_redis(redis, "MEMORY", "STATS")
                                                                  .split("\n").index("dataset.bytes") + 1]) // 1024
    print(f"redis: backup {took:.1f}s, RDB {uploaded[0].stat().st_size // 1024} KiB for {data_kib} KiB of dataset")
    metrics = workdir / "drill.prom"
    drill = _sh(objectstore.redis_drill_script(store, objectstore.StoreAccess(str(s3.secret_dir)), REDIS,
                                               port=free_port(), metrics_file=str(metrics)))
    assert drill.returncode == 0, drill.stdout + drill.stderr
    print(drill.stdout.strip())
    assert f'optiinfra_backup_drill_success{{service="{REDIS.name}"}} 1' in metrics.read_text()
    # A corrupt backup (uploaded intact, its content truncated): the drill fails and says so.
    blob = uploaded[0].read_bytes()
    truncated = workdir / uploaded[0].name
    truncated.write_bytes(blob[:len(blob) // 2])
    _put(s3, store, truncated)
    bad = _sh(objectstore.redis_drill_script(store, objectstore.StoreAccess(str(s3.secret_dir)), REDIS,
                                             port=free_port(), metrics_file=str(metrics)))
    assert bad.returncode != 0 and "restore failed" in bad.stderr, bad.stderr
    assert f'optiinfra_backup_drill_success{{service="{REDIS.name}"}} 0' in metrics.read_text()


def test_redis_drill_fails_without_the_canary(redis: Server, s3: S3, workdir: Path) -> None:
    store = s3.store()
    _redis(redis, "SET", "k", "v")
    made = _redis_offsite_backup(redis, s3, store, workdir)
    assert made.returncode == 0, made.stderr
    # A backup that does not carry the canary (as one written before the run set it).
    obj = next((s3.root / BUCKET / "optiinfra/test" / REDIS.name).iterdir())
    _redis(redis, "DEL", objectstore.CANARY_KEY)
    rdb = workdir / "nocanary.rdb"
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(redis.port), "--no-auth-warning", "--rdb", str(rdb)],
                   env={**os.environ, "REDISCLI_AUTH": redis.password}, check=True, capture_output=True,
                   timeout=WAIT_S)
    shutil.copy(rdb, workdir / obj.name)
    _put(s3, store, workdir / obj.name)
    metrics = workdir / "drill.prom"
    bad = _sh(objectstore.redis_drill_script(store, objectstore.StoreAccess(str(s3.secret_dir)), REDIS,
                                             port=free_port(), metrics_file=str(metrics)))
    assert bad.returncode != 0 and "canary" in bad.stderr, bad.stderr
    assert "_success" in metrics.read_text() and '"} 0' in metrics.read_text()


@pytest.mark.parametrize("fault", ["wrong key", "unreachable", "missing bucket"])
def test_a_broken_store_fails_the_backup(redis: Server, s3: S3, workdir: Path, fault: str) -> None:
    store, secret_dir = s3.store(), s3.secret_dir
    if fault == "wrong key":
        secret_dir = workdir / "wrong"
        shutil.copytree(s3.secret_dir, secret_dir)
        (secret_dir / "secret-access-key").write_text("not-the-secret")
    elif fault == "unreachable":
        store = s3.store(endpoint=f"https://127.0.0.1:{free_port()}")
    else:
        store = BackupStore.model_validate({**s3.store().model_dump(by_alias=True), "bucket": "no-such-bucket"})
    local = workdir / "local"
    local.mkdir()
    env_timeout = {"RCLONE_CONTIMEOUT": "2s", "RCLONE_TIMEOUT": "5s", "RCLONE_RETRIES": "1",
                   "RCLONE_LOW_LEVEL_RETRIES": "1"}
    where = backup.Where("127.0.0.1", redis.port, str(local), str(redis.password_file))
    done = _sh(objectstore.offsite_backup_script(REDIS, where, 2, store, objectstore.StoreAccess(str(secret_dir))),
               env=env_timeout, timeout=90)
    assert done.returncode != 0, done.stdout
    assert "uploaded:" not in done.stdout
    expected = {"wrong key": "SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|403",
                "unreachable": "connection refused",
                "missing bucket": "NoSuchBucket|404|not found"}[fault]
    import re
    assert re.search(expected, done.stderr, re.I), done.stderr[-2000:]
