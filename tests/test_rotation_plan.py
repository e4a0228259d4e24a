"""Offline: each phase of a rotation touches exactly the rotation Job, the Secrets and the
consumers, never the store's StatefulSet (its pod keeps running); on Docker, exactly the
store's two one-shot containers and the consumers, never the store's container."""

from __future__ import annotations

import pytest

from infra.settings import ConfigError
from infra.stack import model_of

from .test_diff import CONTAINER, DEPLOY, STS, changed, diff_of, snap

NEW = "postgresOrchestratorPassword=a-very-long-new-password-1234"
PHASE1 = "rotation.postgresOrchestratorPassword={slot: b, previous: keep}"
PHASE2 = "rotation.postgresOrchestratorPassword={slot: b, previous: retire}"
JOB = "kubernetes:batch/v1:Job"
SECRET = "kubernetes:core/v1:Secret"


def test_phase_one_rolls_the_consumer_after_the_job_and_not_the_store() -> None:
    from infra.diffing import report

    d = report.diff(snap("prod"), snap("prod", (PHASE1,), (NEW,)))
    kube = {n: op for n, op in changed(d).items() if not n.endswith("-credential")}
    # The Job is replaced (its template is immutable: the provider deletes it and creates it again, which runs it).
    assert kube == {"orchestrator": "update", "postgres-credentials": "replace",
                    "core-credentials": "update", "databases-credentials": "update"}
    assert changed(d, STS) == {} and changed(d, DEPLOY) == {"orchestrator": "update"}
    assert changed(d, JOB) == {"postgres-credentials": "replace"}
    assert set(changed(d, SECRET)) == {"core-credentials", "databases-credentials"}


def test_phase_two_touches_the_job_alone() -> None:
    from infra.diffing import report

    d = report.diff(snap("prod", (PHASE1,), (NEW,)), snap("prod", (PHASE2,), (NEW,)))
    assert changed(d) == {"postgres-credentials": "replace"}


def test_a_redis_client_rotation_leaves_redis_running() -> None:
    d = diff_of("prod", ("rotation.redisOrchestratorPassword={previous: keep}",),
                ("redisOrchestratorPassword=a-very-long-new-password-1234",))
    assert changed(d, STS) == {} and changed(d, JOB) == {"redis-credentials": "replace"}
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


# ---- Docker (dev) ----------------------------------------------------------------------------

def _containers(d: object) -> dict[str, str]:
    from infra.diffing import report

    assert isinstance(d, report.Diff)
    return {n: op for n, op in changed(d, CONTAINER).items()}


def test_docker_phase_one_leaves_the_store_and_reruns_its_one_shots_before_the_consumer() -> None:
    from infra.diffing import report

    before, after = snap("dev"), snap("dev", (PHASE1,), (NEW,))
    d = report.diff(before, after)
    # The store's inputs do not carry a client's value: same inputs, no replace.
    assert _containers(d) == {"postgres-credential-files": "replace", "postgres-credentials": "replace",
                              "orchestrator": "replace"}
    store = next(s for s in after.resources.values() if s.type == CONTAINER and s.name == "postgres")
    assert store.inputs == next(s for s in before.resources.values()
                                if s.type == CONTAINER and s.name == "postgres").inputs
    # The rotation container runs after the store (it applies the value in it), the consumer after it.
    by_name = {s.name: s for s in after.resources.values() if s.type == CONTAINER}
    rotation, orchestrator = by_name["postgres-credentials"], by_name["orchestrator"]
    assert by_name["postgres"].urn in rotation.dependencies
    assert rotation.urn in orchestrator.dependencies
    assert by_name["postgres-credential-files"].urn in by_name["postgres"].dependencies
    # Phase 1 keeps the old slot: the script sets the twin role and leaves the role it had.
    script = " ".join(rotation.inputs["command"])
    assert "optiinfra_orchestrator_b WITH LOGIN" in script
    assert "ALTER ROLE optiinfra_orchestrator WITH NOLOGIN" not in script
    # The consumer's URL moved to the twin role (a secret: only its place shows).
    assert any(e.startswith("DATABASE_URL=") for e in orchestrator.inputs["envs"])


def test_docker_phase_two_reruns_the_rotation_container_alone() -> None:
    from infra.diffing import report

    after = snap("dev", (PHASE2,), (NEW,))
    d = report.diff(snap("dev", (PHASE1,), (NEW,)), after)
    assert changed(d) == {"postgres-credentials": "replace"}
    rotation = next(s for s in after.resources.values() if s.type == CONTAINER and s.name == "postgres-credentials")
    assert "ALTER ROLE optiinfra_orchestrator WITH NOLOGIN" in " ".join(rotation.inputs["command"])


def test_docker_redis_client_rotation_leaves_redis_running() -> None:
    d = diff_of("dev", ("rotation.redisOrchestratorPassword={previous: keep}",),
                ("redisOrchestratorPassword=a-very-long-new-password-1234",))
    assert _containers(d) == {"redis-credential-files": "replace", "redis-credentials": "replace",
                              "orchestrator": "replace"}


def test_docker_the_administrators_credential_still_replaces_the_store() -> None:
    d = diff_of("dev", secrets=("postgresPassword=a-very-long-new-password-1234",))
    assert _containers(d).get("postgres") == "replace"
