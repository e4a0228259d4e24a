"""The restore drills as the Kubernetes stacks render them (offline): a drill CronJob per
drilled store with `backups.store`, none without; its restore step is the very script
tests/test_drill.py runs against real servers; its pods reach the store's endpoint and the
Pushgateway and nothing else, and only they (and Prometheus and the prober) reach the Pushgateway. The
NetworkPolicy evaluator is tests/test_reachability.py's."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infra import objectstore
from infra import stack as infra_stack
from infra.settings import ConfigError

from .conftest import render
from .test_alerts import generated
from .test_backup_store_k8s import BY_HOST, BY_IP, NO_STORE, SECRETS, _manifests, _pod, assert_reaches_only_the_store
from .test_reachability import allowed_edges, declared_edges, rendered

DRILLS = {"postgres-drill", "redis-drill"}
"""Written out: the catalog's PostgreSQL (its daily dump) and Redis (its RDB) have drills."""


def _drills(stack: str, *sets: str, secrets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [m for m in _manifests(render(stack, *sets, secrets=secrets)) if m["kind"] == "CronJob"
            and "optiinfra.io/drill-of" in m["metadata"].get("annotations", {})]


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_drill_cronjobs_exist_with_a_store_and_not_without(stack: str) -> None:
    assert _drills(stack, NO_STORE) == []
    # The committed stack names its store (its key stood in offline); another store, its key given.
    committed, other = _drills(stack), _drills(stack, BY_HOST, secrets=SECRETS)
    assert {j["metadata"]["name"] for j in committed} == {j["metadata"]["name"] for j in other} == DRILLS
    for j in [*committed, *other]:
        assert j["metadata"]["namespace"].endswith("-databases")
        assert j["spec"]["schedule"] == "47 3 * * *" and j["spec"]["timeZone"] == "Etc/UTC"
        assert j["spec"]["concurrencyPolicy"] == "Forbid"
        pod = _pod(j)
        steps = [(c["name"], c["image"].split(":")[0]) for c in [*pod["initContainers"], *pod["containers"]]]
        # PostgreSQL's drill restores the WAL archive: in the server's archive image (infra/pitr.py).
        store_image = {"postgres-drill": "ghcr.io/optiinfra/postgres-pgbackrest",
                       "redis-drill": "redis"}[j["metadata"]["name"]]
        assert steps == [("fetch", "rclone/rclone"), ("restore", store_image), ("push", "prom/pushgateway")]
        for c in [*pod["initContainers"], *pod["containers"]]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["limits"]["memory"]
        # The key only as files, and only in the steps that talk to the store (pgBackRest's
        # restore reads the store itself).
        talk = 2 if j["metadata"]["name"] == "postgres-drill" else 1
        for c in pod["initContainers"][:talk]:
            assert any(m["mountPath"] == objectstore.SECRET_MOUNT for m in c["volumeMounts"]), c["name"]
        assert not any(m["mountPath"] == objectstore.SECRET_MOUNT
                       for c in pod["initContainers"][talk:] + pod["containers"] for m in c["volumeMounts"])
        notes = j["metadata"]["annotations"]
        assert any(k.startswith("checkov.io/skip") for k in notes)  # the reviewer exceptions, with reasons


def test_the_drill_schedule_is_a_setting_validated_like_the_backups() -> None:
    jobs = _drills("prod", BY_HOST, "backups.drillSchedule=5 4 * * 1", secrets=SECRETS)
    assert {j["spec"]["schedule"] for j in jobs} == {"5 4 * * 1"}
    for bad, said in [("5 4 * *", "not valid"), ("61 4 * * *", "minute 61 is outside 0-59")]:
        with pytest.raises(ConfigError) as e:
            infra_stack.model_of("prod", (BY_HOST, f"backups.drillSchedule={bad}"))
        assert "backups.drillSchedule" in str(e.value) and said in str(e.value) and "\n" not in str(e.value)


def test_the_restore_step_is_the_script_the_real_server_test_runs() -> None:
    (pg,) = [j for j in _drills("prod", BY_IP, secrets=SECRETS) if j["metadata"]["name"] == "postgres-drill"]
    restore = _pod(pg)["initContainers"][1]["command"]
    assert restore[:3] == objectstore.tolerant("")[:3]
    script = restore[-1]
    # With the store PostgreSQL archives: its drill restores the archive (tests/test_pitr_stack.py runs it).
    assert "pgbackrest " in script and " restore " in script and "optiinfra_backup.canary" in script
    assert "pg_is_in_recovery" in script and "pg_restore" not in script
    push = _pod(pg)["containers"][0]["command"][-1]
    assert "wget -q -O /dev/null --post-file" in push
    assert "/metrics/job/optiinfra-backup-drill/service/postgres" in push


def test_the_backup_writes_the_canary_only_with_a_store() -> None:
    def backup_script(*sets: str, secrets: tuple[str, ...] = ()) -> str:
        r = render("prod", *sets, secrets=secrets)
        (cj,) = [m for m in _manifests(r) if m["kind"] == "CronJob" and m["metadata"]["name"] == "postgres-backup"]
        pod = _pod(cj)
        return str((pod.get("initContainers") or pod["containers"])[0]["command"][-1])
    assert "optiinfra_backup.canary" not in backup_script(NO_STORE)
    assert "optiinfra_backup.canary" in backup_script(BY_HOST, secrets=SECRETS)
    assert "optiinfra_backup.canary" in backup_script()  # the committed prod names a store


@pytest.mark.parametrize("store", [BY_IP, BY_HOST], ids=["ip-endpoint", "host-endpoint"])
def test_drill_pods_reach_the_store_and_the_pushgateway_only(store: str) -> None:
    x = rendered(render("prod", store, secrets=SECRETS))
    model = infra_stack.model_of("prod", (store,))
    assert set(x.pods) >= DRILLS
    # Inside the cluster: exactly the declared edges, the drills' to the Pushgateway among them.
    allowed = allowed_edges(x)
    assert allowed == declared_edges(model)
    gateway = next(e for e in model.services.values() if e.service.push_gateway)
    gport = gateway.service.ports[0].container
    for job in DRILLS:
        assert {(dst, port) for src, dst, port in allowed if src == job} == {(gateway.name, gport)}
    # Written out: the drills, the scraper and the prober (its health check) reach it; nothing else.
    assert {src for src, dst, _ in allowed if dst == gateway.name} == {*DRILLS, "prometheus", "blackbox-exporter"}
    for job in DRILLS:
        assert_reaches_only_the_store(x, job, store)


def test_the_pushgateway_runs_only_with_drills_and_is_scraped_with_its_pushers_labels() -> None:
    for r in (render("dev"), render("prod", NO_STORE)):  # no store: nothing would push, so no Pushgateway
        config = yaml.safe_load(generated(r, "prometheus.yml"))
        assert "pushgateway" not in {j["job_name"] for j in config["scrape_configs"]}
    assert not [m for m in _manifests(render("prod", NO_STORE)) if m["metadata"]["name"].startswith("pushgateway")]
    # With a store (the committed prod's, or another): the Pushgateway runs and is scraped.
    for r in (render("prod"), render("prod", BY_HOST, secrets=SECRETS)):
        assert [m for m in _manifests(r) if m["kind"] == "Deployment" and m["metadata"]["name"] == "pushgateway"]
        config = yaml.safe_load(generated(r, "prometheus.yml"))
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "pushgateway"]
        assert job["honor_labels"] is True
        others = [j for j in config["scrape_configs"] if j["job_name"] != "pushgateway"]
        assert others and not any(j.get("honor_labels") for j in others)
