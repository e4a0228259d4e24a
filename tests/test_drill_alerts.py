"""BackupDrillFailed and BackupTooOld: promtool unit tests of the rules prod renders with a
store, each alert once firing and once quiet. The input series are labelled as the
Pushgateway hands them to Prometheus (honor_labels: the pusher's `job` and `service`,
instance ""); the figures the schedules allow are worked out by hand below."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.catalog import DRILL_ALERTS
from infra.settings import ConfigError

from .conftest import render
from .test_alerts import _tool, generated
from .test_backup_store_k8s import BY_HOST, NO_STORE, SECRETS

# Defaults: drills daily at 03:47 (a day between runs) + the drill's one-hour deadline =
# 90000 s without a result; backups daily (86400 s between runs) + BackupTooOld's default
# grace of 3600 s = an RPO above 90000 s.
STALE_AFTER_S = 24 * 3600 + 3600
TOO_OLD_S = 24 * 3600 + 3600


def _drill(metric: str, service: str, values: str) -> dict[str, str]:
    return {"series": f'{metric}{{job="optiinfra-backup-drill", instance="", service="{service}"}}',
            "values": values}


def _expected(alert_index: int, service: str, summary: str) -> dict[str, Any]:
    a = DRILL_ALERTS[alert_index]
    return {"exp_labels": {"severity": a.severity, "service": service},
            "exp_annotations": {"summary": summary, "runbook": a.runbook}}


FAILED, TOO_OLD = 0, 1


def _cases() -> list[dict[str, Any]]:
    failed = "The newest restore drill of {s} failed, or none reported in time"
    return [
        # postgres' newest drill failed, redis' passed (both a minute old): postgres alone fires.
        {"interval": "1m", "input_series": [
            _drill("optiinfra_backup_drill_success", "postgres", "0x5"),
            _drill("optiinfra_backup_drill_success", "redis", "1x5"),
            _drill("optiinfra_backup_drill_timestamp_seconds", "postgres", "0x5"),
            _drill("optiinfra_backup_drill_timestamp_seconds", "redis", "0x5")],
         "alert_rule_test": [
             {"eval_time": "2m", "alertname": "BackupDrillFailed", "exp_alerts": [
                 _expected(FAILED, "postgres", failed.format(s="postgres"))]}]},
        # Both passed at time 0 and nothing since: quiet at 24 h, stale (both) at 26 h.
        {"interval": "1h", "input_series": [
            _drill("optiinfra_backup_drill_success", s, "1x30") for s in ("postgres", "redis")] + [
            _drill("optiinfra_backup_drill_timestamp_seconds", s, "0x30") for s in ("postgres", "redis")],
         "alert_rule_test": [
             {"eval_time": "24h", "alertname": "BackupDrillFailed", "exp_alerts": []},
             {"eval_time": "26h", "alertname": "BackupDrillFailed", "exp_alerts": [
                 _expected(FAILED, s, failed.format(s=s)) for s in ("postgres", "redis")]}]},
        # Redis reported once, at time 0, then its series went (a restarted Pushgateway): quiet at
        # 24 h, firing at 26 h; postgres reports every hour and stays quiet.
        {"interval": "1h", "input_series": [
            _drill("optiinfra_backup_drill_success", "postgres", "1x30"),
            _drill("optiinfra_backup_drill_timestamp_seconds", "postgres", "0+3600x30"),
            _drill("optiinfra_backup_drill_success", "redis", "1 _x30"),
            _drill("optiinfra_backup_drill_timestamp_seconds", "redis", "0 _x30")],
         "alert_rule_test": [
             {"eval_time": "24h", "alertname": "BackupDrillFailed", "exp_alerts": []},
             {"eval_time": "26h", "alertname": "BackupDrillFailed", "exp_alerts": [
                 _expected(FAILED, "redis", failed.format(s="redis"))]}]},
        # RPO: postgres 1.5 h (the usual: backup 02:17, drill 03:47), redis 25.5 h (a backup missed).
        {"interval": "1m", "input_series": [
            _drill("optiinfra_backup_drill_rpo_seconds", "postgres", "5400x5"),
            _drill("optiinfra_backup_drill_rpo_seconds", "redis", "91800x5")],
         "alert_rule_test": [
             {"eval_time": "2m", "alertname": "BackupTooOld", "exp_alerts": [
                 _expected(TOO_OLD, "redis", "The newest restorable backup of redis is 1d 1h 30m 0s old")]}]},
        # Exactly at the bound (90000 s) is still allowed.
        {"interval": "1m", "input_series": [
            _drill("optiinfra_backup_drill_rpo_seconds", "redis", f"{TOO_OLD_S}x5")],
         "alert_rule_test": [{"eval_time": "2m", "alertname": "BackupTooOld", "exp_alerts": []}]},
    ]


def _run(tmp_path: Path, rules: str, cases: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    tool = _tool()
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                                                        "tests": cases}))
    return subprocess.run([str(tool), "test", "rules", str(tmp_path / "tests.yml")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


def test_promtool_unit_tests_of_the_drill_alerts(tmp_path: Path) -> None:
    rules = generated(render("prod", BY_HOST, secrets=SECRETS), "rules.yml")
    done = _run(tmp_path, rules, _cases())
    assert done.returncode == 0, done.stdout + done.stderr
    drill = next(g for g in yaml.safe_load(rules)["groups"] if g["name"] == "optiinfra-backup-drills")
    assert len(drill["rules"]) == 2 * 2  # postgres and redis x (failed, stale or absent; too old)


def test_the_grace_of_backup_too_old_comes_from_stack_config(tmp_path: Path) -> None:
    # Two days of grace: the 25.5 h RPO that fired above is quiet; the unit test expecting it fails.
    rules = generated(render("prod", BY_HOST, "alerting.thresholds.BackupTooOld=172800", secrets=SECRETS),
                      "rules.yml")
    done = _run(tmp_path, rules, _cases()[3:4])
    assert done.returncode != 0 and "BackupTooOld" in done.stdout + done.stderr
    quiet = [{**_cases()[3], "alert_rule_test": [{"eval_time": "2m", "alertname": "BackupTooOld", "exp_alerts": []}]}]
    assert _run(tmp_path, rules, quiet).returncode == 0


def test_no_drill_alerts_without_drills() -> None:
    for stack, sets in [("prod", (NO_STORE,)), ("dev", ())]:
        groups = yaml.safe_load(generated(render(stack, *sets), "rules.yml"))["groups"]
        assert "optiinfra-backup-drills" not in {g["name"] for g in groups}


def test_a_negative_grace_is_refused_in_one_line() -> None:
    from infra import stack as infra_stack
    with pytest.raises(ConfigError) as e:
        infra_stack.model_of("prod", (BY_HOST, "alerting.thresholds.BackupTooOld=-1"))
    assert "BackupTooOld" in str(e.value) and "\n" not in str(e.value)
