"""`restore --from NAME` on a Kubernetes stack with `backups.store`: the Job takes the backup
from the store (the claim keeps only the newest, and goes with the namespace). The rendered
Job's fetch and restore scripts run here, in order, against real servers: versitygw with TLS as
the store and Debian's Redis (paths substituted: the Job's emptyDir, its key and credential
files). The restored server holds the data of the backup, not what came after it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import backup, cli, objectstore
from infra.commands import restore_store
from infra.model import SECRET_DIR, parse_memory_mib
from infra.stack import model_of

from .test_backup_roundtrip import REDIS, Server, _redis
from .test_backup_roundtrip import redis as redis
from .test_backup_roundtrip import workdir as workdir
from .test_backup_store import BUCKET, S3, _sh
from .test_backup_store import s3 as s3
from .test_backup_store_k8s import BY_HOST, NO_STORE


def _plan(capsys: pytest.CaptureFixture[str], service: str, name: str, *sets: str) -> dict[str, Any]:
    assert cli.main(["restore", "-s", "prod", "--service", service, "--from", name, "--dry-run", "--json",
                     *(a for s in sets for a in ("--set", s))]) == 0
    plan: dict[str, Any] = json.loads(capsys.readouterr().out)
    return plan


def _script(container: dict[str, Any]) -> str:
    """The shell script of a Job container as Kubernetes runs it ($$ is a literal $)."""
    sh, dash_c, script = container["command"]
    assert (sh, dash_c) == ("sh", "-c")
    return str(script).replace("$$", "$")


def _store_setting(s3: S3) -> str:
    return "backups.store=" + json.dumps({"endpoint": s3.endpoint, "bucket": BUCKET, "pathStyle": True,
                                          "prefix": "optiinfra/test", "encryption": "none"})


def test_without_a_store_the_job_reads_the_claim(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(capsys, "redis", "redis-20261202T021700Z.rdb", NO_STORE)
    spec = plan["job"]["spec"]["template"]["spec"]
    assert "initContainers" not in spec and "rclone" not in json.dumps(plan)
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "redis-backups" for v in spec["volumes"])


def test_with_a_store_the_job_fetches_from_it_never_from_the_claim(capsys: pytest.CaptureFixture[str]) -> None:
    model = model_of("prod", [BY_HOST])
    for eff in model.backed_up():
        if not restore_store.from_store(model, eff):
            continue
        name = f"{backup.prefix(eff.service)}20261202T021700Z{eff.service.backup.suffix if eff.service.backup else ''}"
        plan = _plan(capsys, eff.name, name, BY_HOST)
        spec = plan["job"]["spec"]["template"]["spec"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert not any(c.endswith("-backups") for c in claims), (eff.name, claims)
        (first,) = spec["initContainers"]
        assert first["image"] == objectstore.RCLONE_IMAGE and first["name"] in ("fetch", "find")
        assert "s3.eu-west-1.amazonaws.com" in plan["from"]
        # The download counts against the pod's ephemeral storage: each container's limit holds it.
        download = [v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if v["name"] == "backups"]
        for c in [*spec["initContainers"], *spec["containers"]]:
            for size in download:
                assert parse_memory_mib(c["resources"]["limits"]["ephemeral-storage"]) > parse_memory_mib(size)
        # The pod is the backup job's (its NetworkPolicy reaches the service and the store only).
        labels = plan["job"]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == f"{eff.name}-backup"
        # The key as files only (read into the variable rclone reads), never its value.
        text = json.dumps(plan)
        assert "offline-stand-in" not in text and f'$$(cat {objectstore.SECRET_MOUNT}/access-key-id)' in text


def test_redis_restore_job_from_the_store(redis: Server, s3: S3, workdir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    store = s3.store()
    for i in range(300):
        _redis(redis, "SET", f"task:{i}", f"payload {i}")
    local = workdir / "local"
    local.mkdir()
    where = backup.Where("127.0.0.1", redis.port, str(local), str(redis.password_file))
    made = _sh(objectstore.offsite_backup_script(REDIS, where, 2, store, objectstore.StoreAccess(str(s3.secret_dir))))
    assert made.returncode == 0, made.stderr
    (rdb,) = list(local.iterdir())
    rdb.unlink()  # the local copy is gone (the namespace was): only the store has it
    _redis(redis, "FLUSHALL")
    _redis(redis, "SET", "after", "backup")
    plan = _plan(capsys, REDIS.name, rdb.name, _store_setting(s3))
    spec = plan["job"]["spec"]["template"]["spec"]
    (fetch,) = spec["initContainers"]
    (restore,) = spec["containers"]
    download = workdir / "download"
    download.mkdir()

    def here(script: str) -> str:
        return (script.replace(objectstore.SECRET_MOUNT, str(s3.secret_dir))
                .replace(f"{SECRET_DIR}/", f"{workdir}/secret-")
                .replace(backup.BACKUP_DIR, str(download)).replace("data=/data", f"data={redis.data}"))

    (workdir / f"secret-{REDIS.backup.credential if REDIS.backup else ''}").write_text(redis.password)
    got = _sh(here(_script(fetch)))
    assert got.returncode == 0, got.stdout + got.stderr
    assert (download / rdb.name).is_file() and f"downloaded: store:{BUCKET}/" in got.stdout
    redis.stop()
    try:
        done = _sh(here(_script(restore)))
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        redis.start()
    # The 300 keys and the canary the off-site backup wrote first; nothing written after it.
    assert _redis(redis, "GET", "task:7") == "payload 7" and _redis(redis, "DBSIZE") == "301"
    assert _redis(redis, "EXISTS", objectstore.CANARY_KEY) == "1"
    assert _redis(redis, "EXISTS", "after") == "0"


def test_a_name_not_in_the_store_fails_the_fetch(s3: S3, capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    plan = _plan(capsys, REDIS.name, "redis-20200101T000000Z.rdb", _store_setting(s3))
    (fetch,) = plan["job"]["spec"]["template"]["spec"]["initContainers"]
    script = _script(fetch).replace(objectstore.SECRET_MOUNT, str(s3.secret_dir)).replace(
        backup.BACKUP_DIR, str(workdir))
    got = _sh(script)
    assert got.returncode != 0 and "no backup redis-20200101T000000Z.rdb in store:" in got.stderr
