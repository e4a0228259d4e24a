"""scripts/rotate.sh against the real Pulumi CLI and a real (local file) backend: the new value
stored as the stack's secret, the rotation settings of each phase written where the program
reads them, and exactly two deployments, phase 1 then phase 2.

The deployments themselves are what the live-cluster test runs (each phase's preview and up on a
real API server); here scripts/deploy.sh, in a copy of the repository, is replaced by a recorder
that writes down the stack's rotation settings at the moment each deployment would start."""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from .test_deploy_script import copy_repo
from .test_engine_e2e import _engine_bin
from .tools import ROOT

KEY = "postgresOrchestratorPassword"  # a PostgreSQL client's: two login roles, slot a and b
REDIS_KEY = "redisOrchestratorPassword"  # a Redis client's: one ACL user holds both values

RECORDER = """#!/usr/bin/env bash
# Stands in for scripts/deploy.sh: records its arguments and the rotation settings it would deploy.
set -euo pipefail
key=${ROTATE_KEY:?}
slot=$(pulumi config get --stack "$1" --path "optiinfra:rotation.$key.slot")
previous=$(pulumi config get --stack "$1" --path "optiinfra:rotation.$key.previous")
echo "deploy $* slot=$slot previous=$previous" >> "$DEPLOY_LOG"
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    engine = _engine_bin()
    base = tmp_path_factory.mktemp("rotate")
    repo = copy_repo(base / "repo")
    (repo / "scripts" / "deploy.sh").write_text(RECORDER)
    (base / "state").mkdir()
    env = {**os.environ,
           "PATH": f"{engine}{os.pathsep}{os.environ.get('PATH', '')}",
           "PULUMI_HOME": str(base / "home"), "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
           "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24), "PULUMI_SKIP_UPDATE_CHECK": "true",
           "OPTIINFRA_VENV": str(ROOT / "venv"), "DEPLOY_LOG": str(base / "deploys.log")}
    env.pop("PULUMI_ACCESS_TOKEN", None)
    done = subprocess.run(["pulumi", "stack", "init", "dev", "--secrets-provider", "passphrase", "--non-interactive"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return repo, env


def rotate(project: tuple[Path, dict[str, str]], key: str, value: str) -> tuple[subprocess.CompletedProcess[str],
                                                                                 list[str]]:
    repo, env = project
    log = Path(env["DEPLOY_LOG"])
    log.unlink(missing_ok=True)
    done = subprocess.run(["bash", "scripts/rotate.sh", "dev", key, "--yes"], cwd=repo, input=value,
                          env={**env, "ROTATE_KEY": key}, capture_output=True, text=True, timeout=300)
    return done, (log.read_text().splitlines() if log.exists() else [])


def config(project: tuple[Path, dict[str, str]], *args: str) -> str:
    repo, env = project
    done = subprocess.run(["pulumi", "config", "get", "--stack", "dev", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_two_phases_two_deployments_and_the_value_kept_secret(project: tuple[Path, dict[str, str]]) -> None:
    repo, _ = project
    new = f"Rotated-{secrets.token_hex(16)}"
    done, deploys = rotate(project, KEY, new)
    assert done.returncode == 0, done.stderr
    # Phase 1 deploys the new value on the other login role beside the old one; phase 2 retires it.
    assert deploys == ["deploy dev --yes slot=b previous=keep", "deploy dev --yes slot=b previous=retire"]
    assert "phase 1 of 2" in done.stderr and "phase 2 of 2" in done.stderr
    # The value is the stack's secret: encrypted in the stack file, never in plaintext or output.
    assert config(project, f"optiinfra:{KEY}") == new
    stack_file = (repo / "Pulumi.dev.yaml").read_text()
    assert new not in stack_file and new not in done.stdout + done.stderr
    assert f"optiinfra:{KEY}:\n    secure: " in stack_file
    # The next rotation moves back to the first role.
    again, deploys = rotate(project, KEY, f"Rotated-{secrets.token_hex(16)}")
    assert again.returncode == 0, again.stderr
    assert deploys == ["deploy dev --yes slot=a previous=keep", "deploy dev --yes slot=a previous=retire"]


def test_a_redis_client_keeps_its_one_user(project: tuple[Path, dict[str, str]]) -> None:
    done, deploys = rotate(project, REDIS_KEY, f"Rotated-{secrets.token_hex(16)}")
    assert done.returncode == 0, done.stderr
    assert deploys == ["deploy dev --yes slot=a previous=keep", "deploy dev --yes slot=a previous=retire"]


@pytest.mark.parametrize(("key", "value", "words"), [
    ("grafanaAdminPassword", "Long-enough-value-1234", "is not a client credential of PostgreSQL or Redis"),
    (KEY, "short", "shorter than 12 characters"),
])
def test_a_bad_rotation_changes_nothing(project: tuple[Path, dict[str, str]], key: str, value: str,
                                        words: str) -> None:
    repo, _ = project
    before = (repo / "Pulumi.dev.yaml").read_text()
    done, deploys = rotate(project, key, value)
    assert done.returncode == 2 and words in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert deploys == [] and (repo / "Pulumi.dev.yaml").read_text() == before
