"""PostgreSQL's point-in-time recovery on Docker (dev) with `backups.store`: `backup` takes
pgBackRest's base backup after the dump and its upload, `backup --drill` restores the archive
into a throwaway cluster, `restore --to-time` stops the server, restores its volume and
starts it again, `restore --from NAME` downloads a backup the host directory lacks.

No Docker engine here: the docker commands are read from `--dry-run --json` (the data
volume read-only for the base backup, read-write for the restore; the key passed by name
only), the start-again and the download guard with subprocess replaced; and the scripts the
containers carry run against real servers (Debian's PostgreSQL and pgBackRest, versitygw
with TLS on 127.0.0.1: tests/test_pitr_stack.py's server, archiving as the stacks run it),
only the paths substituted, the key in the two variables `docker run --env NAME` passes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra import cli, pitr
from infra.commands import backup as backup_cmd
from infra.commands.backup import STORE_KEY_ENV
from infra.stack import model_of

from .test_backup_roundtrip import WAIT_S, _pg_bin, _wait
from .test_backup_roundtrip import workdir as workdir
from .test_backup_store import BUCKET, S3, _sh
from .test_backup_store import s3 as s3
from .test_pitr_stack import Paths, _server_args, _stop
from .test_pitr_stack import stack_server as stack_server

STORE = {"endpoint": "https://s3.eu-west-1.amazonaws.com", "bucket": "optiinfra-backups"}
T = "2026-01-02T03:04:05Z"
DATA = "/var/lib/postgresql/data"


def _json(capsys: pytest.CaptureFixture[str], *argv: str, store: dict[str, Any] | None = None) -> dict[str, Any]:
    assert cli.main([*argv, "--set", "backups.store=" + json.dumps(store or STORE), "--dry-run", "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _keys_by_name_only(argv: list[str]) -> None:
    assert set(STORE_KEY_ENV) <= set(_opt(argv, "--env"))
    assert not any(a.startswith("AWS_") and "=" in a for a in argv)


def _hardened(argv: list[str]) -> None:
    assert {"--rm", "--read-only"} <= set(argv) and _opt(argv, "--cap-drop") == ["ALL"]
    assert _opt(argv, "--security-opt") == ["no-new-privileges:true"] and _opt(argv, "--memory")
    # pgBackRest's configuration and the include file with the key: tmpfs, at the server's paths.
    assert {t.split(":")[0] for t in _opt(argv, "--tmpfs")} >= {pitr.CONF_DIR, pitr.SPOOL}


def test_backup_takes_a_base_backup_after_the_dump_and_its_upload(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [s["argv"] for s in _json(capsys, "backup", "-s", "dev", "--service", "postgres")["backups"]]
    assert len(steps) == 3
    dump, upload, base = steps
    assert "rclone/rclone" in " ".join(upload) and "pg_dump" in dump[-1]
    eff = model_of("dev", ["backups.store=" + json.dumps(STORE)]).services["postgres"]
    assert base[base.index("--entrypoint") + 2] == eff.image and "pgbackrest" in eff.image
    # The data volume read-only at the server's path; the socket on it; Docker's default bridge.
    (volume,) = _opt(base, "--volume")
    assert volume.endswith(f":{DATA}:ro") and not volume.startswith("/")
    assert "--network" not in base and f"PGHOST={DATA}/{pitr.SOCKET}" in base[-1]
    assert "backup --type=full" in base[-1] and base[-1].index("umask 077") < base[-1].index("store-key.conf")
    assert _opt(base, "--user") == [f"{eff.service.uid}:{eff.service.uid}"]
    _keys_by_name_only(base)
    _hardened(base)


def test_without_a_store_nothing_changes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backup", "-s", "dev", "--service", "postgres", "--set", "backups.store=null", "--dry-run"]) == 0
    assert "pgbackrest.conf" not in capsys.readouterr().out


def test_restore_to_time_stops_restores_read_write_and_starts(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _json(capsys, "restore", "-s", "dev", "--service", "postgres", "--to-time", T)
    stop, job, start = (s["argv"] for s in plan["steps"])
    assert stop == ["docker", "stop", "optiinfra-postgres"] and start == ["docker", "start", "optiinfra-postgres"]
    (volume,) = _opt(job, "--volume")
    assert volume.endswith(f":{DATA}:rw")
    assert "--type=time" in job[-1] and "--target=2026-01-02 03:04:05.000+00" in job[-1]
    _keys_by_name_only(job)
    _hardened(job)
    assert T in plan["from"] and plan["service"] == "postgres"


def _no_docker_needed(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """subprocess.run recorded (the restore container fails), docker present, the key set."""
    ran: list[list[str]] = []

    def fake(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        del kw
        ran.append(argv)
        failed = argv[:2] == ["docker", "run"]
        return subprocess.CompletedProcess(argv, 3 if failed else 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(backup_cmd, "docker_problem", lambda: None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-in-argv")
    return ran


def test_a_failed_point_in_time_restore_still_starts_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = _no_docker_needed(monkeypatch)
    store = "backups.store=" + json.dumps(STORE)
    assert cli.main(["restore", "-s", "dev", "--service", "postgres", "--to-time", T, "--set", store]) == 2
    assert ran == [], "without --yes-overwrite nothing runs"
    code = cli.main(["restore", "-s", "dev", "--service", "postgres", "--to-time", T, "--set", store,
                     "--yes-overwrite"])
    assert code == 3
    assert [a[:2] for a in ran] == [["docker", "stop"], ["docker", "run"], ["docker", "start"]]
    assert not any("not-in-argv" in a for argv in ran for a in argv)


def test_restore_from_the_store_downloads_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("infra.commands.restore.ROOT", tmp_path)
    monkeypatch.setattr("infra.commands.backup.ROOT", tmp_path)
    name = "redis-20250101T021700Z.rdb"
    store = "backups.store=" + json.dumps(STORE)
    base = ["restore", "-s", "dev", "--service", "redis", "--from", name, "--set", store]
    # Without a store the name must be in the host directory.
    assert cli.main([*base[:-2], "--dry-run"]) == 2
    assert "no backups of redis yet" in capsys.readouterr().err
    plan = _json(capsys, *base[:-2])
    download, *rest = (s["argv"] for s in plan["steps"])
    assert "rclone/rclone:" in " ".join(download) and f"grep -Fx -e {name}" in download[-1]
    _keys_by_name_only(download)
    (volume,) = _opt(download, "--volume")
    assert volume.endswith(":/backup") and Path(volume.split(":")[0]).name == "redis"
    assert [a[:2] for a in rest] == [["docker", "stop"], ["docker", "run"], ["docker", "start"]]
    ran = _no_docker_needed(monkeypatch)
    assert cli.main(base) == 2 and ran == [], "without --yes-overwrite nothing is downloaded"
    capsys.readouterr()
    # The store has no such backup (the download fails): one error line, the service untouched.
    assert cli.main([*base, "--yes-overwrite"]) != 0
    assert len(ran) == 1 and "download" in ran[0][ran[0].index("--name") + 1]
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: flag '--from'") and "optiinfra-backups/optiinfra/redis" in err


# ---- the containers' scripts against real servers ----------------------------------------


def _store(s3: S3) -> dict[str, Any]:
    # pgBackRest 2.45 checks the certificate's DNS names: the test's CA is for localhost.
    return {"endpoint": f"https://localhost:{s3.endpoint.rsplit(':', 1)[1]}", "bucket": BUCKET, "pathStyle": True,
            "prefix": "optiinfra/test", "encryption": "none", "archiveTimeoutS": 10}


def _psql(user: list[str], sock: Path, port: int, sql: str) -> str:
    done = subprocess.run([*user, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(port),
                           "-U", "optiinfra", "-d", "optiinfra", "-c", sql], capture_output=True, text=True,
                          timeout=WAIT_S, check=True)
    return done.stdout.strip()


def _dirs(p: Paths, user: list[str]) -> None:
    for d in (p.etc, p.spool):
        d.mkdir(exist_ok=True)
        if user:
            shutil.chown(d, "postgres")


def test_the_docker_scripts_back_up_drill_and_restore_to_a_time(
        stack_server: tuple[list[dict[str, Any]], Paths, int, list[str]], workdir: Path, s3: S3,
        capsys: pytest.CaptureFixture[str]) -> None:
    ms, server, port, user = stack_server
    store, ca = _store(s3), workdir / "s3.crt"
    keys = dict(zip(STORE_KEY_ENV, (s3.key_id, s3.secret), strict=True))
    sock = server.volume / pitr.SOCKET
    # 1. The base backup step's script (Docker's dev stack, the same store).
    (_, _, base) = (s["argv"] for s in _json(capsys, "backup", "-s", "dev", "--service", "postgres",
                                               store=store)["backups"])
    assert s3.secret not in json.dumps(base)
    job = Paths(workdir, "docker-backup")
    _dirs(job, user)
    done = _sh(job.sub(base[-1], port, ca), env={"PGPORT": str(port), **keys}, timeout=300, user=user)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backup written: backup-" in done.stdout
    key = job.spool / "conf.d" / "store-key.conf"
    assert key.stat().st_mode & 0o077 == 0 and s3.secret in key.read_text()
    repo = s3.root / BUCKET / "optiinfra/test/pgbackrest"
    assert list((repo / "backup" / "optiinfra").glob("*F")), "no full backup in the store"
    # 2. Rows on either side of a time T, their WAL archived (pgBackRest's check waits for it).
    _psql(user, sock, port, "CREATE TABLE pitr (id int, at timestamptz DEFAULT clock_timestamp())")
    _psql(user, sock, port, "INSERT INTO pitr (id) VALUES (1)")
    time.sleep(1.1)
    to_time = datetime.now(UTC).isoformat()
    time.sleep(1.1)
    _psql(user, sock, port, "INSERT INTO pitr (id) VALUES (2)")
    check = _sh(f"pgbackrest --config={job.etc}/pgbackrest.conf --config-include-path={job.spool}/conf.d "
                "--stanza=optiinfra check", env={"PGPORT": str(port)}, timeout=300, user=user)
    assert check.returncode == 0, check.stdout + check.stderr
    # 3. The drill's two containers (fetch records the start; restore in the archive image).
    fetch, restore = (s["argv"] for s in _json(capsys, "backup", "-s", "dev", "--drill", "--service", "postgres",
                                                store=store)["drills"])
    shared = workdir / "drill"
    shared.mkdir()
    drill = Paths(workdir, "docker-drill")
    _dirs(drill, user)
    if user:
        shutil.chown(shared, "postgres")
    path = {"PATH": f"{_pg_bin()}:{os.environ['PATH']}"}
    for argv, env in ((fetch, path), (restore, {**path, **keys})):
        ran = _sh(drill.sub(argv[-1].replace("/drill", str(shared)), port, ca), env=env, timeout=300, user=user)
        assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "drill passed" in ran.stdout and "pgbackrest" in restore[restore.index("--entrypoint") + 2]
    assert 'optiinfra_backup_drill_success{service="postgres"} 1' in (shared / "metrics.prom").read_text()
    # 4. restore --to-time: the server stopped, the restore container's script, the server started.
    plan = _json(capsys, "restore", "-s", "dev", "--service", "postgres", "--to-time", to_time, store=store)
    script = plan["steps"][1]["argv"][-1]
    bindir = _pg_bin()
    assert bindir is not None
    pgdata = server.volume / "pgdata"
    subprocess.run([*user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                   capture_output=True, timeout=WAIT_S, check=True)
    back = Paths(workdir, "docker-restore")
    _dirs(back, user)
    started = time.monotonic()
    done = _sh(back.sub(script, port, ca), env=keys, timeout=300, user=user)
    assert done.returncode == 0, done.stdout + done.stderr
    # The recovery ran to its target inside the restore container: the server starts promoted.
    assert "recovered and promoted" in done.stdout and not (pgdata / "recovery.signal").exists()
    args = [server.sub(a, port, ca) for a in _server_args(ms)]
    postgres = args[args.index("postgres"):]
    argv = [str(bindir / "postgres"), "-D", str(pgdata), *postgres[1:], "-c", f"port={port}",
            "-c", "listen_addresses=127.0.0.1"]
    log = (workdir / "pg-restored.log").open("ab")
    proc = subprocess.Popen([*user, "sh", "-c", args[2], "sh", *argv], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        def promoted() -> bool:
            try:
                return _psql(user, sock, port, "SELECT pg_is_in_recovery()") == "f"
            except subprocess.CalledProcessError:
                return False

        _wait(promoted, "the restored server, promoted")
        print(f"restore --to-time: {time.monotonic() - started:.1f}s from the restore's start to promoted")
        assert _psql(user, sock, port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM pitr") == "1"
    finally:
        _stop(user, bindir, pgdata, proc)
