"""Offline: each phase of a rotation touches exactly the rotation Job, the Secrets and the
consumers, never the store's StatefulSet (its pod keeps running)."""

from __future__ import annotations

import pytest

from infra.settings import ConfigError
from infra.stack import model_of

from .test_diff import DEPLOY, STS, changed, diff_of, snap

NEW = "postgresOrchestratorPassword=a-very-long-new-password-1234"
PHASE1 = "rotation.postgresOrchestratorPassword={slot: b, previous: keep}"
PHASE2 = "rotation.postgresOrchestratorPassword={slot: b, previous: retire}"
JOB = "kubernetes:batch/v1:Job"
SECRET = "kubernetes:core/v1:Secret"


def test_phase_one_rolls_the_consumer_after_the_job_and_not_the_store() -> None:
    from infra.diffing import report

    d = report.diff(snap("prod"), snap("prod", (PHASE1,), (NEW,)))
    kube = {n: op for n, op in changed(d).items() if not n.endswith("-credential")}
    assert kube == {"orchestrator": "update", "postgres-credentials": "update",
                    "core-credentials": "update", "databases-credentials": "update"}
    assert changed(d, STS) == {} and changed(d, DEPLOY) == {"orchestrator": "update"}
    assert changed(d, JOB) == {"postgres-credentials": "update"}
    assert set(changed(d, SECRET)) == {"core-credentials", "databases-credentials"}


def test_phase_two_touches_the_job_alone() -> None:
    from infra.diffing import report

    d = report.diff(snap("prod", (PHASE1,), (NEW,)), snap("prod", (PHASE2,), (NEW,)))
    assert changed(d) == {"postgres-credentials": "update"}


def test_a_redis_client_rotation_leaves_redis_running() -> None:
    d = diff_of("prod", ("rotation.redisOrchestratorPassword={previous: keep}",),
                ("redisOrchestratorPassword=a-very-long-new-password-1234",))
    assert changed(d, STS) == {} and changed(d, JOB) == {"redis-credentials": "update"}
    assert changed(d, DEPLOY) == {"orchestrator": "update"}


def test_the_administrators_credential_still_rolls_the_store() -> None:
    d = diff_of("prod", secrets=("postgresPassword=a-very-long-new-password-1234",))
    assert changed(d, STS) == {"postgres": "update"}


def test_slot_b_moves_the_consumer_to_the_twin_role() -> None:
    model = model_of("prod", (PHASE1,))
    urls = [v for _, v in model.catalog.services["orchestrator"].env if getattr(v, "service", "") == "postgres"]
    assert [getattr(u, "user", "") for u in urls] == ["optiinfra_orchestrator_b"]


@pytest.mark.parametrize("setting, key", [
    ("rotation.postgresPassword={previous: keep}", "optiinfra:rotation.postgresPassword"),
    ("rotation.redisFlowerPassword={slot: b}", "optiinfra:rotation.redisFlowerPassword.slot"),
    ("rotation.postgresOrchestratorPassword={previous: later}",
     "optiinfra:rotation.postgresOrchestratorPassword.previous")])
def test_a_wrong_rotation_setting_is_one_line_naming_the_key(setting: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        model_of("prod", (setting,))
    assert key in str(err.value) and "\n" not in str(err.value)
