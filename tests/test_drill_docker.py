"""Dev on Docker with `backups.store`: `backup --drill` runs the drill CronJob's fetch and
restore steps (the scripts tests/test_drill.py runs against real servers) as one-shot
containers sharing a scratch directory, prints the result and fails unless it passed. No
Docker engine here: the commands (`--dry-run --json`) and the result handling are tested."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra import cli, objectstore
from infra.commands import backup as backup_cmd
from infra.commands import drill
from infra.stack import model_of

STORE = "backups.store=" + json.dumps({"endpoint": "https://s3.eu-west-1.amazonaws.com",
                                       "bucket": "optiinfra-backups"})


def _plan(capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, object]]:
    assert cli.main(["backup", "--stack", "dev", "--drill", "--dry-run", "--json", "--set", STORE, *extra]) == 0
    drills: list[dict[str, object]] = json.loads(capsys.readouterr().out)["drills"]
    return drills


def test_each_drilled_store_gets_a_fetch_then_a_restore(capsys: pytest.CaptureFixture[str]) -> None:
    model = model_of("dev", [STORE])
    drilled = [e for e in model.backed_up() if e.service.backup and e.service.backup.drill]
    assert {e.name for e in drilled} >= {"postgres", "redis"}
    steps = _plan(capsys)
    assert [s["service"] for s in steps] == [e.name for e in drilled for _ in range(2)]
    for eff, (fetch, restore) in zip(drilled, zip(steps[::2], steps[1::2], strict=True), strict=True):
        f, r = list(map(str, fetch["argv"])), list(map(str, restore["argv"]))  # type: ignore[call-overload]
        assert objectstore.RCLONE_IMAGE in f and eff.image in r
        # The key by name only (from the invoking shell), and only where the store is dialled:
        # rclone's download, or pgBackRest's restore (it reads the archive itself, the fetch
        # step only records the start); that step alone has a network (Docker's default bridge).
        dials, other = (r, f) if eff.service.backup and eff.service.backup.drill == "pgbackrest" else (f, r)
        assert dials.count("--env") >= 2 and "AWS_ACCESS_KEY_ID" in dials and "AWS_SECRET_ACCESS_KEY" in dials
        assert not any(a.startswith("AWS_") and "=" in a for a in f + r)
        assert "AWS_ACCESS_KEY_ID" not in other
        assert other[other.index("--network") + 1] == "none" and "--network" not in dials
        # Both run as the service's user on one scratch dir.
        assert f[f.index("--user") + 1].split(":")[0] == r[r.index("--user") + 1].split(":")[0] \
            == str(eff.service.uid)
        mount = f[f.index("--volume") + 1]
        assert mount == r[r.index("--volume") + 1] and mount.endswith(f":{drill.SHARED}")
        assert Path(mount.split(":")[0]).parent.name == eff.name
        for argv in (f, r):
            assert {"--read-only", "--rm"} <= set(argv) and argv[argv.index("--cap-drop") + 1] == "ALL"
        assert "drill passed" in r[-1]
        assert ("pgbackrest" in r[-1] and "restore" in r[-1]) if dials is r else "rclone copy" in f[-1]


def test_only_with_a_store_and_a_drilled_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backup", "--stack", "dev", "--drill", "--dry-run"]) == 2
    assert "optiinfra:backups.store" in capsys.readouterr().err
    assert cli.main(["backup", "--stack", "dev", "--drill", "--dry-run", "--service", "grafana", "--set", STORE]) == 2
    err = capsys.readouterr().err
    assert "grafana has no restore drill" in err and "postgres" in err and "Traceback" not in err
    assert [s["service"] for s in _plan(capsys, "--service", "redis")] == ["redis", "redis"]


def test_a_missing_key_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(backup_cmd, "docker_problem", lambda: None)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert cli.main(["backup", "--stack", "dev", "--drill", "--set", STORE]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error:") and "AWS_ACCESS_KEY_ID" in line


@pytest.mark.parametrize(("written", "passed"), [("1", True), ("0", False), (None, False)])
def test_the_result_decides_the_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            written: str | None, passed: bool) -> None:
    model = model_of("dev", [STORE])
    eff = model.services["redis"]
    where = drill.prepare(model, eff, tmp_path)
    if written is not None:
        (where / objectstore.DRILL_METRICS_FILE).write_text(
            f'optiinfra_backup_drill_success{{service="redis"}} {written}\n'
            'optiinfra_backup_drill_rpo_seconds{service="redis"} 7\n')
    assert drill.report(model, eff, tmp_path) == (0 if passed else 1)
    out, err = capsys.readouterr()
    assert ("drill passed" in out) is passed and ("the restore drill failed" in err) is not passed
    assert not where.exists(), "the scratch directory is removed whatever the result"


def test_a_failed_step_still_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The restore step fails (non-zero): the result it wrote is still read and printed."""
    model = model_of("dev", [STORE])
    eff = model.services["redis"]
    ran: list[str] = []

    def fake_run(argv: list[str], check: bool) -> object:
        del check
        ran.append(argv[argv.index("--name") + 1])
        scratch = drill.scratch(model, eff, tmp_path)
        (scratch / objectstore.DRILL_METRICS_FILE).write_text('optiinfra_backup_drill_success{service="redis"} 0\n')
        return type("Done", (), {"returncode": 1})()

    monkeypatch.setattr("infra.commands.drill.subprocess.run", fake_run)
    assert drill.run_drills(model, [eff], tmp_path) == 1
    first = drill.drill_steps(model, eff, tmp_path)[0].argv
    assert ran == [first[first.index("--name") + 1]], "the fetch failed: the restore is not run"
    assert 'optiinfra_backup_drill_success{service="redis"} 0' in capsys.readouterr().out
