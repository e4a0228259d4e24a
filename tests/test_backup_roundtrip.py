"""Backup, change, restore, compare: on real PostgreSQL and Redis servers.

Each server is the Debian package (`.ci/run` installs postgresql and redis-server), started
here on 127.0.0.1 on a free port in a temporary directory and stopped in a fixture's
finally, even when a test fails. The backup and restore are the scripts the program
renders for its CronJobs and Docker containers (infra/backup.py from the catalog's Backup),
run with `sh -c` exactly as those run them; only the address, the directories and the
credential file differ. Redis runs with the catalog's own command line (appendonly on), so
the restore is proven against the AOF the platform actually uses.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import backup
from infra.catalog import default_catalog
from infra.model import FromLimit, Secret, Service

from .tools import free_port

WAIT_S = 30.0
CATALOG = default_catalog()


def _service(predicate: Callable[[Service], bool]) -> Service:
    """A catalog service picked by what it is (this module names none)."""
    return next(s for s in CATALOG.services.values() if predicate(s))


PG = _service(lambda s: bool(s.backup and "pg_dump" in s.backup.argv))
REDIS = _service(lambda s: bool(s.backup and "redis-cli" in s.backup.argv))


def _wait(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {WAIT_S:.0f}s")


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=WAIT_S, check=True)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its server tools as `postgres`."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    try:
        _run(["id", "postgres"])
    except subprocess.CalledProcessError:
        pytest.skip("running as root and no postgres user to start PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Server:
    port: int
    password_file: Path
    workdir: Path
    stop: Callable[[], None]
    start: Callable[[], None]
    data: Path

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root that is 0700 root, which the postgres user cannot enter.
    d = Path(tempfile.mkdtemp(prefix="optiinfra-backup-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def postgres(workdir: Path) -> Iterator[Server]:
    bindir = _pg_bin()
    if bindir is None or shutil.which("pg_dump") is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    user = _as_user()
    data, sock = workdir / "pgdata", workdir / "sock"
    sock.mkdir()
    password_file = workdir / "pg-password"
    password_file.write_text(secrets.token_urlsafe(18) + "\n")
    if user:
        shutil.chown(sock, "postgres")
        shutil.chown(workdir, "postgres")
        shutil.chown(password_file, "postgres")
    conn = PG.connection
    assert conn is not None and conn.user
    _run([*user, str(bindir / "initdb"), "-D", str(data), "-U", conn.user, "--auth=scram-sha-256",
          f"--pwfile={password_file}", "--no-sync"])
    port = free_port()
    log = workdir / "pg.log"

    def start() -> None:
        _run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(int(WAIT_S)),
              "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock}", "start"])

    def stop() -> None:
        subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=WAIT_S, check=False)

    start()
    try:
        server = Server(port, password_file, workdir, stop, start, data)
        _psql(server, "CREATE DATABASE optiinfra", db="postgres")
        yield server
    finally:
        stop()


def _psql(server: Server, sql: str, db: str = "optiinfra") -> str:
    conn = PG.connection
    assert conn is not None and conn.user
    out = _run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(server.port),
                "-U", conn.user, "-d", db, "-c", sql], env={"PGPASSWORD": server.password})
    return out.stdout.strip()


def _redis_argv(port: int, data: Path) -> list[str]:
    """The catalog's Redis command line (its sized arguments at a 100 MiB limit), bound to
    127.0.0.1 on `port` with its data in `data`."""
    sized = [a for v in REDIS.sized_command if isinstance(v, FromLimit) for a in v.render(100)]
    cmd = [str(a) for a in REDIS.command]
    return [*cmd, *sized, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
            "--protected-mode", "yes", "--save", ""]


@pytest.fixture
def redis(workdir: Path) -> Iterator[Server]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("Redis is not installed (apt-get install redis-server; .ci/run does)")
    data = workdir / "redis"
    data.mkdir()
    password_file = workdir / "redis-password"
    password_file.write_text(secrets.token_urlsafe(18) + "\n")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    server = Server(port, password_file, workdir, lambda: None, lambda: None, data)

    def start() -> None:
        log = (workdir / "redis.log").open("ab")
        # Every ACL user's credential, as the Docker target passes them (the administrator's is
        # the one the backup logs in with); the ACL file goes to the test's directory.
        users = {k: secrets.token_urlsafe(18) for k, v in REDIS.env if isinstance(v, Secret)}
        procs.append(subprocess.Popen(_redis_argv(port, data), stdout=log, stderr=log,
                                      env={**os.environ, **users, "REDIS_PASSWORD": server.password,
                                           "TMPDIR": str(workdir)}))
        _wait(lambda: _redis_ready(server), "redis-server")

    def stop() -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: Redis fsyncs its AOF and exits
                try:
                    p.wait(timeout=WAIT_S)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        procs.clear()

    server.start, server.stop = start, stop
    start()
    try:
        yield server
    finally:
        stop()


def _redis(server: Server, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(server.port), "--no-auth-warning", *args],
                         env={**os.environ, "REDISCLI_AUTH": server.password}, capture_output=True, text=True,
                         timeout=WAIT_S, check=True)
    return out.stdout.strip()


def _redis_ready(server: Server) -> bool:
    try:
        return _redis(server, "ping") == "PONG"
    except subprocess.CalledProcessError:
        return False


def _backup(service: Service, server: Server, directory: Path) -> tuple[Path, float]:
    """Run the rendered backup script; the one backup it wrote, and how long it took."""
    where = backup.Where("127.0.0.1", server.port, str(directory), str(server.password_file))
    started = time.monotonic()
    out = _run(backup.command(backup.backup_script(service, where, retention=2)))
    elapsed = time.monotonic() - started
    written = [Path(line.split(": ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("backup written")]
    assert len(written) == 1 and written[0].exists(), out.stdout
    return written[0], elapsed


def _restore(service: Service, server: Server, source: Path) -> float:
    where = backup.Where("127.0.0.1", server.port, str(source.parent), str(server.password_file),
                         data=str(server.data))
    started = time.monotonic()
    _run(backup.command(backup.restore_script(service, where, str(source))))
    return time.monotonic() - started


def test_postgres_round_trip(postgres: Server, workdir: Path) -> None:
    _psql(postgres, "CREATE TABLE runs (id int PRIMARY KEY, note text);"
                    "INSERT INTO runs SELECT g, 'run ' || g FROM generate_series(1, 500) g")
    before = _psql(postgres, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM runs")
    target = workdir / "backups"
    target.mkdir()
    dump, took = _backup(PG, postgres, target)
    assert dump.name.startswith("postgres-") and dump.suffix == ".dump"
    assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    # The password never reached an argument list: the script reads it from the file.
    script = backup.backup_script(PG, backup.Where("127.0.0.1", postgres.port, str(target),
                                                   str(postgres.password_file)), 2)
    assert postgres.password not in script
    # A bad migration: rows lost, rows changed, a table dropped and one added.
    _psql(postgres, "DELETE FROM runs WHERE id > 250; UPDATE runs SET note = 'oops';"
                    "CREATE TABLE junk (x int)")
    assert _psql(postgres, "SELECT count(*) FROM runs") == "250"
    restore_s = _restore(PG, postgres, dump)
    assert _psql(postgres, "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM runs") == before
    assert _psql(postgres, "SELECT count(*) FROM pg_tables WHERE tablename = 'junk'") == "1"  # not in the dump
    print(f"postgres round trip: backup {took:.2f}s, restore {restore_s:.2f}s")


def test_postgres_backup_fails_on_a_wrong_password_and_leaves_nothing(postgres: Server, workdir: Path) -> None:
    wrong = workdir / "wrong"
    wrong.write_text("not-the-password\n")
    target = workdir / "backups"
    target.mkdir()
    where = backup.Where("127.0.0.1", postgres.port, str(target), str(wrong))
    result = subprocess.run(backup.command(backup.backup_script(PG, where, 2)), capture_output=True, text=True,
                            timeout=WAIT_S, check=False)
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr
    assert list(target.iterdir()) == []  # the partial file is never renamed into a backup


def test_retention_keeps_the_newest(postgres: Server, workdir: Path) -> None:
    target = workdir / "backups"
    target.mkdir()
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (target / f"postgres-{stamp}.dump").write_bytes(b"old")
    (target / "postgres-exporter-notes.txt").write_text("not a backup")
    newest, _ = _backup(PG, postgres, target)  # retention=2
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [newest.name, "postgres-20200103T000000Z.dump", "postgres-exporter-notes.txt"])


def test_redis_round_trip_with_the_catalogs_aof(redis: Server, workdir: Path) -> None:
    for i in range(200):
        _redis(redis, "SET", f"task:{i}", f"payload {i}")
    _redis(redis, "RPUSH", "queue", "a", "b", "c")
    before = {k: _redis(redis, "GET", k) for k in (f"task:{i}" for i in range(200))}
    target = workdir / "backups"
    target.mkdir()
    rdb, took = _backup(REDIS, redis, target)
    assert rdb.read_bytes()[:5] == b"REDIS"
    assert (redis.data / "appendonlydir").is_dir()  # the catalog's command runs with AOF on
    # Data changes after the backup (written to the AOF, which the restore must not replay).
    _redis(redis, "FLUSHALL")
    _redis(redis, "SET", "after", "backup")
    assert _redis(redis, "DBSIZE") == "1"
    redis.stop()
    restore_s = _restore(REDIS, redis, rdb)
    redis.start()
    assert {k: _redis(redis, "GET", k) for k in before} == before
    assert _redis(redis, "LRANGE", "queue", "0", "-1").split() == ["a", "b", "c"]
    assert _redis(redis, "EXISTS", "after") == "0"
    # The restored data survives a restart: the AOF now starts from the restored base.
    _redis(redis, "SET", "new", "write")
    redis.stop()
    redis.start()
    assert _redis(redis, "GET", "task:7") == "payload 7" and _redis(redis, "GET", "new") == "write"
    print(f"redis round trip: backup {took:.2f}s, restore {restore_s:.2f}s")
