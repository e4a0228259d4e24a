"""Backups as the stacks render them: the prod CronJobs, the dev backup/restore commands.

What is checked is the rendered manifest and the docker argv the commands would run; the
scripts inside both are compared with infra/backup.py's rendering of the catalog (the same
scripts tests/test_backup_roundtrip.py runs against real servers). Expected values are the
catalog's facts and Pulumi.prod.yaml's settings written out.

The committed prod names an off-site store (`backups.store`): each CronJob's `backup` step runs
the catalog's script into the claim (an init container), then an upload (or pgBackRest's base
backup) runs; ClickHouse writes `BACKUP ... TO S3` itself. The store's own wiring is
tests/test_backup_store_k8s.py's; NO_STORE renders the stack as it is without one.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra import backup, cli
from infra import stack as infra_stack
from infra.backends.kubernetes import K8S_VERSION
from infra.catalog import default_catalog
from infra.commands import backup as backup_cmd
from infra.commands import render as render_cmd
from infra.commands import restore as restore_cmd
from infra.commands import restore_store

from .conftest import render
from .test_backup_store_k8s import NO_STORE
from .test_kubernetes import ALL_SECRETS, restricted_violations
from .tools import of_kind, store_keys

BACKED_UP = {"postgres", "clickhouse", "redis", "qdrant", "grafana"}
STATEFUL = BACKED_UP | {"prometheus"}
DRILLED = {"postgres", "redis"}
"""Written out: the catalog's PostgreSQL and Redis have restore drills (with a store)."""
LOCAL_COPIES = 1
"""Pulumi.prod.yaml names a store and no `localRetention`: its default with a store, the claim
keeps the newest backup only (docs/backups.md)."""


def cronjobs(*sets: str, secrets: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The backup CronJobs (the drills' are tests/test_drill_render.py's)."""
    return {m["metadata"]["name"]: m for m in of_kind(render("prod", *sets, secrets=secrets), "CronJob")
            if "optiinfra.io/backup-of" in m["metadata"].get("annotations", {})}


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def steps_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a pod, init containers first (the order they run in)."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def step(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in steps_of(pod) if c["name"] == name]
    return c


def unescape(arg: str) -> str:
    """Kubernetes turns `$$` into `$` in a container's command."""
    return arg.replace("$$", "$")


# ---- the catalog -------------------------------------------------------------------

def test_every_stateful_service_declares_its_backup_or_why_not() -> None:
    catalog = default_catalog()
    stateful = {n for n, s in catalog.services.items() if s.stateful}
    assert stateful == STATEFUL
    for name in stateful:
        b = catalog.services[name].backup
        assert b is not None, name
        if name == "prometheus":
            assert not b.enabled and "re-scraped" in b.none_reason
            continue
        assert b.enabled and b.reads and (b.argv or b.script) and (b.restore or b.restore_script), name
        # It reads a port (a NetworkPolicy edge) or its own volume, never neither.
        assert bool(b.port) or bool(b.volume), name
        if b.credential:
            assert b.password_env, name  # the credential reaches the client through one variable
    assert {n for n, s in catalog.services.items() if s.backup is not None} == stateful


def test_no_password_placeholder_in_any_command() -> None:
    """The templates have no way to put a password in argv: no such placeholder exists."""
    for s in default_catalog().services.values():
        if s.backup and s.backup.enabled:
            text = " ".join([*s.backup.argv, s.backup.script, *s.backup.restore, s.backup.restore_script])
            assert "{password}" not in text and "--password" not in text, s.name


# ---- Kubernetes ----------------------------------------------------------------------

def test_one_cronjob_per_backed_up_service_with_the_stacks_schedule() -> None:
    jobs = cronjobs()
    assert set(jobs) == {f"{n}-backup" for n in BACKED_UP}
    every = {m["metadata"]["name"] for m in of_kind(render("prod"), "CronJob")}
    assert every == set(jobs) | {f"{n}-drill" for n in DRILLED}  # and nothing else is scheduled
    for name, job in jobs.items():
        spec = job["spec"]
        assert spec["schedule"] == "17 2 * * *" and spec["timeZone"] == "Etc/UTC"
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] > 0
        assert job["metadata"]["annotations"]["optiinfra.io/backup-of"] == name.removesuffix("-backup")
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    other = cronjobs("backups.schedule=0 */6 * * *", "backups.retention=3")
    assert {j["spec"]["schedule"] for j in other.values()} == {"0 */6 * * *"}
    # With the store: the claim keeps the newest (tail -n +2), the store keeps 3 (tail -n +4).
    redis = pod_of(other["redis-backup"])
    assert "tail -n +2" in unescape(step(redis, "backup")["command"][2])
    assert "tail -n +4" in unescape(step(redis, "upload")["command"][2])
    assert "repo1-retention-full=3\n" in unescape(step(pod_of(other["postgres-backup"]), "base-backup")["command"][2])
    # Without a store the claim keeps `retention`.
    bare = cronjobs(NO_STORE, "backups.retention=3")
    script = unescape(step(pod_of(bare["postgres-backup"]), "backup")["command"][2])
    assert "tail -n +4" in script  # keeps 3


def test_backups_off_removes_every_job_claim_and_edge() -> None:
    r = render("prod", "backups.enabled=false")
    assert not of_kind(r, "CronJob")
    claims = [m["metadata"]["name"] for m in of_kind(r, "PersistentVolumeClaim")]
    assert not [c for c in claims if c.endswith("-backups")]
    assert not [m for m in of_kind(r, "NetworkPolicy") if m["metadata"]["name"].endswith("-backup")]
    assert infra_stack.model_of("prod", ["backups.enabled=false"]).backup_edges() == []


def test_cronjob_pods_meet_restricted_and_the_workloads_context() -> None:
    for name, job in cronjobs().items():
        pod = pod_of(job)
        assert restricted_violations(pod) == [], name
        assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory", "ephemeral-storage"} <= set(c["resources"]["limits"])
        assert c["imagePullPolicy"] == "Always"
    # The checker rejects what restricted forbids, on a job's pod too.
    bad = copy.deepcopy(pod_of(cronjobs()["postgres-backup"]))
    bad["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert restricted_violations(bad)


def test_the_job_runs_the_catalogs_script_against_the_service() -> None:
    jobs, catalog = cronjobs(), default_catalog()
    pg = catalog.services["postgres"]
    where = backup.Where("postgres.optiinfra-databases.svc.cluster.local", 5432, "/backup",
                         "/run/secrets/optiinfra/postgres")
    dump = step(pod_of(jobs["postgres-backup"]), "backup")
    # With the store the backup first writes the drill's canary, and the claim keeps the newest.
    command = [unescape(a) for a in dump["command"]]
    assert command == backup.command(backup.backup_script(pg, where, LOCAL_COPIES, canary=True))
    # The image the server runs ships pg_dump: with the store, the archive image built from the
    # catalog's (Pulumi.prod.yaml's images.registry, the catalog's PostgreSQL tag).
    assert pg.backup is not None and pg.backup.archive is not None
    archive_image = f"ghcr.io/optiinfra/{pg.backup.archive.image}:{pg.image.partition(':')[2]}"
    (server,) = [m for m in of_kind(render("prod"), "StatefulSet") if m["metadata"]["name"] == "postgres"]
    assert dump["image"] == archive_image == server["spec"]["template"]["spec"]["containers"][0]["image"]
    bare = step(pod_of(cronjobs(NO_STORE)["postgres-backup"]), "backup")
    assert [unescape(a) for a in bare["command"]] == backup.command(backup.backup_script(pg, where, 7))
    assert bare["image"] == pg.image  # without a store: the catalog's image as it is
    qdrant = pod_of(jobs["qdrant-backup"])
    assert step(qdrant, "backup")["image"].startswith("curlimages/curl:")  # Qdrant's image has no client
    assert qdrant["securityContext"]["runAsUser"] == 100
    # `command`, not `args`: ClickHouse's entrypoint would otherwise start a server.
    for sets in ((), (NO_STORE,)):
        assert not [c["name"] for c in steps_of(pod_of(cronjobs(*sets)["clickhouse-backup"])) if "args" in c]


def test_credentials_as_mounted_files_never_env_or_values() -> None:
    # The services' credentials and the store's key, each supplied as a stack secret.
    given = (*ALL_SECRETS, *(f"{k}={v}" for k, v in store_keys("prod", "backup").items()))
    jobs = cronjobs(secrets=given)
    supplied = [s.split("=", 1)[1] for s in given]
    text = json.dumps(jobs)
    assert not any(v in text for v in supplied) and "[secret]" not in text
    secrets = {m["metadata"]["namespace"]: set(m["stringData"])
               for m in of_kind(render("prod", secrets=given), "Secret")}
    for name, job in jobs.items():
        pod = pod_of(job)
        for c in steps_of(pod):
            # Nothing by environment (kubelet): the scripts read the files. (rclone's HOME=/tmp is
            # a plain path.)
            assert all(set(e) == {"name", "value"} and e["value"] not in supplied for e in c.get("env") or []), name
        files = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        for vol in files.values():
            assert vol["secretName"] == "credentials" and vol["defaultMode"] == 0o440, name
            assert {i["key"] for i in vol["items"]} <= secrets[job["metadata"]["namespace"]], name
        # The store's key: files only, read by the steps that talk to the store.
        store = files.pop("store-credentials")
        assert {i["path"] for i in store["items"]} == {"access-key-id", "secret-access-key"}
        if name == "grafana-backup":
            assert files == {}  # it reads the volume, needs no credential of the service
            continue
        (item,) = files["credentials"]["items"]
        assert f"$(cat /run/secrets/optiinfra/{item['key']})" in unescape(step(pod, "backup")["command"][2])


def test_backups_go_to_a_claim_that_is_not_the_services_own() -> None:
    r = render("prod")
    claims = {m["metadata"]["name"]: m for m in of_kind(r, "PersistentVolumeClaim")}
    protected = {res.inputs["metadata"]["name"] for res in r.of_type("kubernetes:core/v1:PersistentVolumeClaim")
                 if res.protect}
    sizes = {n: m["spec"]["resources"]["requests"]["storage"] for n, m in claims.items()}
    # (copies the claim keeps + 1) x the service's volume in Pulumi.prod.yaml's kubernetes.storage:
    # with its store the claim keeps the newest (LOCAL_COPIES 1), so twice the volume: postgres
    # 2 x 20Gi, redis 2 x 2Gi, qdrant 2 x 10Gi, grafana 2 x 2Gi. ClickHouse writes its own
    # BACKUP TO S3 into the store (the catalog's server_store): no claim.
    writes_store = {n for n in BACKED_UP if (b := default_catalog().services[n].backup) and b.server_store}
    assert writes_store == {"clickhouse"}
    assert sizes == {"postgres-backups": "40Gi", "redis-backups": "4Gi", "qdrant-backups": "20Gi",
                     "grafana-backups": "4Gi"}
    assert protected == set(claims)
    # Without a store the claim keeps `retention` (7): 8 x the volume.
    bare = {m["metadata"]["name"]: m["spec"]["resources"]["requests"]["storage"]
            for m in of_kind(render("prod", NO_STORE), "PersistentVolumeClaim")}
    assert bare == {"postgres-backups": "160Gi", "clickhouse-backups": "400Gi", "redis-backups": "16Gi",
                    "qdrant-backups": "80Gi", "grafana-backups": "16Gi"}
    for sets in ((), (NO_STORE,)):
        for name, job in cronjobs(*sets).items():
            service = name.removesuffix("-backup")
            pod = pod_of(job)
            # No step ever writes a claim of the service's own: only its backups' claim is writable.
            for v in pod["volumes"]:
                if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] != f"{service}-backups":
                    assert v["persistentVolumeClaim"]["readOnly"] is True, (name, v)
            if service in writes_store and not sets:
                assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v], name
                continue
            mounts = {m["mountPath"]: m for m in step(pod, "backup")["volumeMounts"]}
            target = next(v for v in pod["volumes"] if v["name"] == mounts["/backup"]["name"])
            assert target["persistentVolumeClaim"]["claimName"] == f"{service}-backups"
            assert not target["persistentVolumeClaim"].get("readOnly")
    # Only a backup that dials no port mounts the service's own claim (read-only).
    assert {n for n, j in cronjobs().items() if any(v["name"] == "source" for v in pod_of(j)["volumes"])} == {
        "grafana-backup"}
    grafana = pod_of(cronjobs()["grafana-backup"])
    source = next(v for v in grafana["volumes"] if v["name"] == "source")
    assert source["persistentVolumeClaim"] == {"claimName": "data-grafana-0", "readOnly": True}
    term = grafana["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "grafana"}
    assert term["topologyKey"] == "kubernetes.io/hostname"  # beside the pod that has the volume attached
    resized = {m["metadata"]["name"]: m["spec"]["resources"]["requests"]["storage"]
               for m in of_kind(render("prod", "backups.storage.redis=30Gi"), "PersistentVolumeClaim")}
    assert {n: resized[n] for n in sizes} == {**sizes, "redis-backups": "30Gi"}
    # Growing a service's volume grows its backups' claim by default (2 x 30Gi), and no other.
    grown = {m["metadata"]["name"]: m["spec"]["resources"]["requests"]["storage"]
             for m in of_kind(render("prod", "kubernetes.storage.postgres=30Gi"), "PersistentVolumeClaim")}
    assert {n: grown[n] for n in sizes} == {**sizes, "postgres-backups": "60Gi"}


def test_bad_backup_settings_are_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for sets, key in ((["backups.schedule=every night"], "backups.schedule"),
                      (["backups.retention=0"], "backups.retention"),
                      (["backups.storage={redis: lots}"], "backups.storage.redis"),
                      (["backups.storage={portal: 1Gi}"], "backups.storage.portal"),
                      (["backups.storage={prometheus: 1Gi}"], "backups.storage.prometheus"),
                      (["backups.scheduel=x"], "backups.scheduel")):
        assert cli.main(["plan", "--stack", "prod", *(a for s in sets for a in ("--set", s))]) == 2
        err = capsys.readouterr().err
        assert f"optiinfra:{key}" in err and "Fix:" in err and "Traceback" not in err, err


def test_render_writes_the_cronjobs_with_the_tier(tmp_path: Path) -> None:
    assert cli.main(["render", "--stack", "prod", "--out", str(tmp_path)]) == 0
    r = render("prod")
    by_file = render_cmd.by_file(r)
    names = {m["metadata"]["name"] for docs in by_file.values() for m in docs if m["kind"] == "CronJob"}
    assert names == {f"{n}-backup" for n in BACKED_UP} | {f"{n}-drill" for n in DRILLED}
    assert "CronJob" in (tmp_path / "databases.yaml").read_text()


# ---- Docker: the commands ------------------------------------------------------------------

def _argv(step: backup_cmd.Step) -> list[str]:
    return step.argv


def test_docker_backup_argv_runs_the_script_on_the_services_network() -> None:
    model = infra_stack.model_of("dev")
    eff = model.services["postgres"]
    step = backup_cmd.backup_step(model, eff, root=Path("/srv/optiinfra"))
    argv = _argv(step)
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[argv.index("--network") + 1] == "optiinfra-databases"
    assert argv[argv.index("--volume") + 1] == "/srv/optiinfra/backups/postgres:/backup"
    assert {"--read-only", "--cap-drop"} <= set(argv)
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges:true"
    # The password: passed by name (its value from the environment), read from the container.
    assert argv[argv.index("--env") + 1] == "PGPASSWORD" and step.secret_env == {"PGPASSWORD": "POSTGRES_PASSWORD"}
    entry = argv.index("--entrypoint")
    assert argv[entry + 1:entry + 4] == ["sh", eff.service.image, "-c"]
    where = backup.Where("postgres", 5432, "/backup", None)
    assert argv[-1] == backup.backup_script(eff.service, where, 7)
    assert "PGPASSWORD=" not in " ".join(argv)
    # Grafana: its volume read-only, no credential.
    g = _argv(backup_cmd.backup_step(model, model.services["grafana"], root=Path("/srv/optiinfra")))
    mounts = [g[i + 1] for i, a in enumerate(g) if a == "--volume"]
    assert "optiinfra-grafana-data:/var/lib/grafana:ro" in mounts and "--env" not in g


def test_backup_dry_run_prints_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["backup", "--stack", "dev", "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("docker run")]
    assert len(lines) == len(BACKED_UP)
    assert all("--network optiinfra-" in line for line in lines)
    first = shlex.split(out[out.index("docker run"):].split("\n# ")[0])  # the printed command parses back
    assert first[0] == "docker" and first[-2] == "-c"


def test_backup_without_docker_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert cli.main(["backup", "--stack", "dev", "--service", "redis"]) == 1  # a missing prerequisite: 1
    err = capsys.readouterr().err
    assert "docker is not installed" in err and "--dry-run" in err and "Traceback" not in err


def test_backup_without_a_daemon_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    problem = backup_cmd.docker_problem()
    if problem is None:
        pytest.skip("a Docker daemon answers here")
    assert cli.main(["backup", "--stack", "dev"]) == 1
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "text"), [
    (["backup", "--stack", "dev", "--service", "prometheus"], "prometheus is not backed up: its series"),
    (["backup", "--stack", "dev", "--service", "portal"], "portal is not backed up"),
    (["backup", "--stack", "dev", "--service", "nope"], "'nope' is not a service"),
    (["backup", "--stack", "prod"], "on Kubernetes the CronJobs back up"),
    (["restore", "--stack", "dev", "--service", "redis", "--from", "postgres-20260101T000000Z.dump",
      "--yes-overwrite"], "is not a backup of redis"),
])
def test_backup_and_restore_user_errors(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert text in err and err.startswith("error: ") and "Traceback" not in err


def test_restore_says_what_it_overwrites_and_needs_the_flag(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rdb = tmp_path / "redis" / "redis-20260101T000000Z.rdb"
    argv = ["restore", "--stack", "dev", "--service", "redis", "--from", str(rdb)]
    # A backup that does not exist is refused first: nothing suggests running it for real.
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and "does not exist" in captured.err
    assert "Nothing changed" not in captured.err
    rdb.parent.mkdir()
    rdb.write_bytes(b"REDIS0011")
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "overwrites redis: the whole dataset" in captured.out
    assert "the service is stopped" in captured.out
    assert "--yes-overwrite" in captured.err and "Nothing changed" in captured.err
    # --dry-run prints the same and succeeds, changing nothing (no Docker is called).
    assert cli.main([*argv, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "overwrites redis: the whole dataset" in captured.out and captured.err == ""


def test_restore_steps_stop_restore_start_for_a_file_restore() -> None:
    model = infra_stack.model_of("dev")
    eff = model.services["redis"]
    path = restore_cmd.backup_path(model, eff, "redis-20260101T000000Z.rdb", root=Path("/srv/o"))
    assert path == Path("/srv/o/backups/redis/redis-20260101T000000Z.rdb")
    stop, job, start = restore_cmd.restore_steps(model, eff, path)
    assert stop.argv == ["docker", "stop", "optiinfra-redis"] and start.argv == ["docker", "start", "optiinfra-redis"]
    mounts = [job.argv[i + 1] for i, a in enumerate(job.argv) if a == "--volume"]
    assert mounts == ["/srv/o/backups/redis:/restore:ro", "optiinfra-redis-data:/data"]
    assert job.argv[job.argv.index("--user") + 1] == f"999:{os.getgid()}"  # the volume's owner, your group
    assert "--env" not in job.argv and job.secret_env == {}
    where = backup.Where("redis", 6379, "/restore", None, "/data")
    assert job.argv[-1] == backup.restore_script(eff.service, where, "/restore/redis-20260101T000000Z.rdb")
    # PostgreSQL restores online: one container, over the network, with the password by name.
    pg = model.services["postgres"]
    (only,) = restore_cmd.restore_steps(model, pg, Path("/srv/o/backups/postgres/postgres-1.dump"))
    assert only.argv[only.argv.index("--network") + 1] == "optiinfra-databases"
    assert only.secret_env == {"PGPASSWORD": "POSTGRES_PASSWORD"}
    assert "pg_restore" in only.argv[-1]


def test_docker_containers_carry_the_backup_stamps(dev: Any) -> None:
    labels = {r.inputs["name"]: {x["label"]: x["value"] for x in r.inputs.get("labels") or []}
              for r in dev.of_type("docker:index/container:Container")}
    assert labels["optiinfra-postgres"]["io.optiinfra.backup-target"] == "backups/postgres"
    assert labels["optiinfra-postgres"]["io.optiinfra.backup-schedule"] == "17 2 * * *"
    assert "io.optiinfra.backup-target" not in labels["optiinfra-prometheus"]
    assert "re-scraped" in labels["optiinfra-prometheus"]["io.optiinfra.no-backup"]
    assert not any("io.optiinfra.backup-target" in labels[f"optiinfra-{n}"] for n in ("portal", "orchestrator"))


# ---- Kubernetes: the restore Job -------------------------------------------------------------

@pytest.mark.parametrize("service", sorted(BACKED_UP))
@pytest.mark.parametrize("store", ["committed", "none"])
def test_the_restore_job_validates_and_runs_like_the_backup_job(service: str, store: str) -> None:
    """The Job that restores from the service's backup claim. With the committed store the
    command prints it where the backup is not taken from the store (PostgreSQL's dump: the store
    holds its WAL archive); the store's Job is tests/test_restore_store.py's."""
    sets = () if store == "committed" else (NO_STORE,)
    model = infra_stack.model_of("prod", sets)
    eff = model.services[service]
    name = f"{service}-20260101T000000Z"
    job = restore_cmd.restore_job(model, eff, name)
    fetched = bool(sets == () and restore_store.from_store(model, eff))
    assert fetched != (service == "postgres" or bool(sets))  # PostgreSQL's --from reads its claim, store or not
    if fetched:  # the Job the command prints: the same pod, the backup taken from the store
        job = restore_store.job(model, eff, name, job)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    cron = pod_of(cronjobs(*sets)[f"{service}-backup"])
    # The backup job's pod label: the backup edge's NetworkPolicy admits it, nothing new is opened.
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == f"{service}-backup"
    assert pod["securityContext"] == cron["securityContext"]
    assert pod["containers"][0]["image"] == step(cron, "backup")["image"]
    if fetched:
        return  # what it fetches and runs: tests/test_restore_store.py
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/backup"]["readOnly"] is True  # a restore never writes to the backups
    b = eff.service.backup
    assert b is not None
    data = eff.service.volumes[0].path if b.offline_restore else ""
    secret = f"/run/secrets/optiinfra/{b.credential}" if b.credential else None
    host = f"{service}.optiinfra-{eff.tier.value}.svc.cluster.local"
    port = eff.service.port(b.port).container if b.port else None
    expected = backup.restore_script(eff.service, backup.Where(host, port, "/backup", secret, data),
                                     f"/backup/{name}")
    assert [unescape(a) for a in pod["containers"][0]["command"]] == backup.command(expected)
    steps = restore_cmd.kubernetes_steps(model, eff)
    if b.offline_restore:  # the claim is written only with the service scaled to 0
        assert steps[1].endswith(f"statefulset/{service} --replicas=0") and steps[-2].endswith("--replicas=1")
        # ... and its scheduled backup suspended around it (it would fail, or hold the claim).
        assert f"cronjob/{service}-backup" in steps[0] and '"suspend":true' in steps[0]
        assert f"cronjob/{service}-backup" in steps[-1] and '"suspend":false' in steps[-1]
        assert {"name": "data", "mountPath": data} in pod["containers"][0]["volumeMounts"]
    else:
        assert not any("scale" in s for s in steps)


def test_restore_on_kubernetes_prints_the_job_only_when_confirmed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["restore", "--stack", "prod", "--service", "postgres", "--from", "postgres-20260101T000000Z.dump"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "overwrites postgres: the optiinfra database" in captured.err
    assert cli.main([*argv, "--yes-overwrite"]) == 0
    captured = capsys.readouterr()
    job = yaml.safe_load(captured.out)
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "optiinfra-databases"
    assert "pg_restore" in job["spec"]["template"]["spec"]["containers"][0]["command"][2]
