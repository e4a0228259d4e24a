"""The upload step the stacks run after a backup (Kubernetes' `upload` container, Docker's
upload `docker run`): objectstore.upload_newest_script against a real S3 server (versitygw,
the fixtures of test_backup_store.py) after the catalog's backup script wrote into a directory,
as the backup step (init container) does."""

from __future__ import annotations

from pathlib import Path

from infra import backup, objectstore

from .test_backup_roundtrip import REDIS, Server
from .test_backup_roundtrip import redis as redis
from .test_backup_roundtrip import workdir as workdir
from .test_backup_store import S3, _sh
from .test_backup_store import s3 as s3


def _backup_then_upload(server: Server, s3: S3, directory: Path, secret_dir: Path) -> tuple[str, str]:
    where = backup.Where("127.0.0.1", server.port, str(directory), str(server.password_file))
    local = _sh(backup.backup_script(REDIS, where, 2))
    assert local.returncode == 0, local.stderr
    done = _sh(objectstore.upload_newest_script(s3.store(), objectstore.StoreAccess(str(secret_dir)), REDIS,
                                                str(directory), 2))
    return str(done.returncode), done.stdout + done.stderr


def test_the_upload_step_puts_the_newest_backup_in_the_store(redis: Server, s3: S3, workdir: Path) -> None:
    directory = workdir / "backups"
    directory.mkdir()
    code, out = _backup_then_upload(redis, s3, directory, s3.secret_dir)
    assert code == "0", out
    newest = sorted(p.name for p in directory.iterdir() if p.name.startswith("redis-"))[-1]
    assert f"uploaded: store:{objectstore.path_of(s3.store(), REDIS)}/{newest}" in out
    listed = _sh("\n".join([*objectstore.store_preamble(s3.store(), objectstore.StoreAccess(str(s3.secret_dir))),
                            f'rclone lsf "store:{objectstore.path_of(s3.store(), REDIS)}/"']))
    assert newest in listed.stdout.split(), listed.stderr


def test_the_upload_step_fails_with_a_wrong_key_or_nothing_to_upload(redis: Server, s3: S3, workdir: Path) -> None:
    wrong = workdir / "wrong"
    wrong.mkdir()
    (wrong / "access-key-id").write_text(s3.key_id)
    (wrong / "secret-access-key").write_text("not-the-secret-key")
    directory = workdir / "backups"
    directory.mkdir()
    code, out = _backup_then_upload(redis, s3, directory, wrong)
    assert code != "0" and "uploaded:" not in out
    empty = workdir / "empty"
    empty.mkdir()
    done = _sh(objectstore.upload_newest_script(s3.store(), objectstore.StoreAccess(str(s3.secret_dir)), REDIS,
                                                str(empty), 2))
    assert done.returncode != 0 and "no backup of redis" in done.stderr
