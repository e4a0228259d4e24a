"""Dev on Docker with `backups.store`: `backup` uploads each backup after writing it into the
host directory, with rclone's image, the key passed by name from the invoking shell."""

from __future__ import annotations

import json

import pytest

from infra import cli
from infra.commands import backup as backup_cmd

STORE = "backups.store=" + json.dumps({"endpoint": "https://s3.eu-west-1.amazonaws.com",
                                       "bucket": "optiinfra-backups"})


def test_without_a_store_no_upload(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backup", "--stack", "dev", "--service", "redis", "--dry-run"]) == 0
    assert "rclone" not in capsys.readouterr().out


def test_with_a_store_each_backup_is_uploaded_after_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backup", "--stack", "dev", "--dry-run", "--set", STORE]) == 0
    out = capsys.readouterr().out
    # The archiving server's base backup (pgBackRest, tests/test_pitr_docker.py) is a third step.
    runs = [line for line in out.splitlines() if line.startswith("docker run") and "-backup-base " not in line]
    backups = [r for r in runs if "rclone/rclone" not in r]
    uploads = [r for r in runs if "rclone/rclone" in r]
    assert len(backups) == len(uploads) >= 4
    for b, u in zip(runs[::2], runs[1::2], strict=True):
        assert "rclone" not in b and "rclone/rclone" in u
        host = b.split("--volume ", 1)[1].split(":", 1)[0]
        assert f"--volume {host}:/backup:ro" in u
        assert "--env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY" in u and "AWS_ACCESS_KEY_ID=" not in u
    assert "store:optiinfra-backups/optiinfra/postgres" in out


def test_a_missing_key_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(backup_cmd, "docker_problem", lambda: None)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert cli.main(["backup", "--stack", "dev", "--service", "redis", "--set", STORE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: optiinfra:backups.store") and "AWS_ACCESS_KEY_ID" in err and "\n" not in err


@pytest.mark.parametrize(("argv", "text"), [
    (["--to-time", "2026-13-01T00:00:00Z"], "is not an ISO 8601 time"),
    (["--to-time", "2026-12-01T00:00:00"], "has no time zone"),
    (["--to-time", "2099-01-01T00:00:00Z"], "is in the future"),
    (["--to-time", "2026-12-01T00:00:00Z", "--from", "postgres-20261201T000000Z.dump"], "both given"),
    (["--to-time", "2026-12-01T00:00:00Z"], "needs a WAL archive in backups.store"),
    (["--to-time", "2026-12-01T00:00:00Z", "--set", STORE[:-1] + ', "encryption": "client"}'],
     "is client, which a Docker stack does not offer"),
    ([], "'--from': is required"),
])
def test_restore_to_time_errors_are_one_line(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["restore", "--stack", "dev", "--service", "postgres", "--yes-overwrite", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and text in err and "\n" not in err
