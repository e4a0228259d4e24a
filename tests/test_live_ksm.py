"""kube-state-metrics, the real one, against the prod stack deployed on a live API server.

The cluster and the deployment are tests/test_live_cluster.py's fixtures (`cluster`, `live`:
real etcd, kube-apiserver with RBAC, controller-manager, scheduler, kwok nodes; the prod stack
through the real Pulumi engine), imported here, so this module deploys a stack of its own.

kube-state-metrics v2.20.0 is built from its Go module by scripts/tools.sh and runs on
127.0.0.1 with the arguments the stack renders for it (its namespaces and resources), as the
ServiceAccount the stack renders (a kubeconfig impersonating it: `as:`), so only the Roles the
stack renders let it read. Its /metrics must show every deployed workload's replicas as the
API server reports them and every backup CronJob; then a backup Job fails (made from the
CronJob's template, owned by it, with a one-second deadline on a pod no node takes: the Job
controller fails it with DeadlineExceeded) and the series BackupFailed reads appear, which
promtool then feeds to the generated prod rules: BackupFailed fires.

Skipped, as the live-cluster test, without an engine or control plane; skipped with the
reason when the tool cannot be built (a failure under OPTIINFRA_REQUIRE_TOOLS=1).
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.catalog import default_catalog
from infra.model import backup_job
from tests import cluster as kc
from tests.test_live_cluster import Live, cluster, live  # noqa: F401 (module fixtures: a deployment of its own)

from .test_alerts import generated
from .tools import free_port, go_tool, stop_process, unavailable

READER = "kube-state-metrics"
WAIT_S = 90
"""Bound on every wait for kube-state-metrics (its first list of each kind, the Job failing)."""
_LINE = re.compile(r'^([a-z_]+)\{(.*)\} (\S+)$')
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def _series(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m.group(1), dict(_LABEL.findall(m.group(2))), float(m.group(3))))
    return out


def _value(series: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    for n, ls, v in series:
        if n == name and all(ls.get(k) == x for k, x in labels.items()):
            return v
    return None


@pytest.fixture(scope="module")
def deployed(live: Live) -> dict[str, Any]:  # noqa: F811
    live.pulumi("up", "--yes", "--skip-preview", label="up")
    deploy = live.cluster.kget("deployments", "-A", "-l", f"app.kubernetes.io/name={READER}")["items"]
    assert len(deploy) == 1, "the stack deploys one kube-state-metrics"
    return {"reader": deploy[0]}


class Ksm:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log

    def metrics(self) -> str:
        if self.proc.poll() is not None:
            raise AssertionError(f"kube-state-metrics exited: {self.log.read_text()[-3000:]}")
        with urllib.request.urlopen(self.url, timeout=10) as r:
            return str(r.read().decode())

    def wait(self, what: str, check: Any) -> list[tuple[str, dict[str, str], float]]:
        deadline = time.monotonic() + WAIT_S
        while True:
            s = _series(self.metrics())
            if check(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"after {WAIT_S}s, kube-state-metrics shows no {what}; "
                                     f"log: {self.log.read_text()[-2000:]}")
            time.sleep(1)


@pytest.fixture(scope="module")
def ksm(live: Live, deployed: dict[str, Any]) -> Iterator[Ksm]:  # noqa: F811
    tool = go_tool("kube-state-metrics")
    if isinstance(tool, str):
        unavailable(tool)
    spec = deployed["reader"]["spec"]["template"]["spec"]
    namespace = deployed["reader"]["metadata"]["namespace"]
    account = spec["serviceAccountName"]
    # The stack's kubeconfig (admin), impersonating the reader's ServiceAccount.
    config = yaml.safe_load(live.cluster.kubeconfig.read_text())
    config["users"][0]["user"]["as"] = f"system:serviceaccount:{namespace}:{account}"
    work = live.dir.parent / "ksm"
    work.mkdir(exist_ok=True)
    (work / "kubeconfig").write_text(yaml.safe_dump(config))
    (work / "kubeconfig").chmod(0o600)
    port, telemetry = free_port(), free_port()
    # Its rendered arguments, but where it listens: 127.0.0.1 on free ports.
    args = [a for a in spec["containers"][0]["args"] if not a.startswith(("--port=", "--telemetry-port="))]
    log = work / "ksm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(tool), f"--kubeconfig={work / 'kubeconfig'}", "--host=127.0.0.1",
                                 f"--port={port}", "--telemetry-host=127.0.0.1", f"--telemetry-port={telemetry}",
                                 *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        kc.wait_for("kube-state-metrics to listen", lambda: _answers(f"http://127.0.0.1:{port}/healthz"),
                    timeout=WAIT_S, alive=lambda: _alive(proc, log))
        yield Ksm(f"http://127.0.0.1:{port}/metrics", proc, log)
    finally:
        stop_process(proc)


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as r:
        return bool(r.status == 200)


def _alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is not None:
        raise kc.ClusterError(f"kube-state-metrics exited {proc.returncode}: {log.read_text()[-2000:]}")


def _ours(items: list[dict[str, Any]], namespaces: set[str]) -> list[dict[str, Any]]:
    return [i for i in items if i["metadata"]["namespace"] in namespaces]


def _namespaces(deployed: dict[str, Any]) -> set[str]:
    [flag] = [a for a in deployed["reader"]["spec"]["template"]["spec"]["containers"][0]["args"]
              if a.startswith("--namespaces=")]
    return set(flag.removeprefix("--namespaces=").split(","))


def test_the_reader_may_list_and_watch_its_kinds_and_nothing_else(live: Live,  # noqa: F811
                                                                    deployed: dict[str, Any]) -> None:
    reader = deployed["reader"]
    account = reader["spec"]["template"]["spec"]["serviceAccountName"]
    who = f"system:serviceaccount:{reader['metadata']['namespace']}:{account}"

    def can(*args: str) -> bool:
        p = live.cluster.kubectl("auth", "can-i", *args, f"--as={who}", check=False)
        return p.stdout.strip() == "yes"
    for ns in _namespaces(deployed):
        assert can("list", "deployments.apps", "-n", ns) and can("watch", "cronjobs.batch", "-n", ns), ns
        assert not can("get", "secrets", "-n", ns) and not can("list", "secrets", "-n", ns), ns
        assert not can("delete", "pods", "-n", ns) and not can("list", "persistentvolumeclaims", "-n", ns), ns
    assert not can("list", "pods", "-n", "kube-system") and not can("list", "pods", "--all-namespaces")
    assert not can("list", "nodes")


def test_metrics_show_every_workloads_replicas_and_the_backup_cronjobs(live: Live, deployed: dict[str, Any],  # noqa: F811
                                                                       ksm: Ksm) -> None:
    namespaces = _namespaces(deployed)
    deployments = _ours(live.cluster.get("/apis/apps/v1/deployments")["items"], namespaces)
    statefulsets = _ours(live.cluster.get("/apis/apps/v1/statefulsets")["items"], namespaces)
    cronjobs = _ours(live.cluster.get("/apis/batch/v1/cronjobs")["items"], namespaces)
    assert deployments and statefulsets
    # The backup CronJobs the stack deploys: one per backed-up service (prod backs up its stores).
    backups = {backup_job(e.name) for e in live_model().backed_up()}
    assert {c["metadata"]["name"] for c in cronjobs} >= backups and backups

    def complete(s: list[tuple[str, dict[str, str], float]]) -> bool:
        return (all(_value(s, "kube_deployment_status_replicas_ready", namespace=d["metadata"]["namespace"],
                           deployment=d["metadata"]["name"]) is not None for d in deployments)
                and all(_value(s, "kube_statefulset_status_replicas_ready", namespace=x["metadata"]["namespace"],
                               statefulset=x["metadata"]["name"]) is not None for x in statefulsets)
                and all(_value(s, "kube_cronjob_created", cronjob=c) is not None for c in backups))
    s = ksm.wait("series for every workload and backup CronJob", complete)
    for d in deployments:
        m = d["metadata"]
        assert _value(s, "kube_deployment_spec_replicas", namespace=m["namespace"], deployment=m["name"]) == \
            d["spec"]["replicas"], m["name"]
        assert _value(s, "kube_deployment_status_replicas_ready", namespace=m["namespace"],
                      deployment=m["name"]) == d["status"].get("readyReplicas", 0), m["name"]
    for x in statefulsets:
        m = x["metadata"]
        assert _value(s, "kube_statefulset_replicas", namespace=m["namespace"], statefulset=m["name"]) == \
            x["spec"]["replicas"], m["name"]
        assert _value(s, "kube_statefulset_status_replicas_ready", namespace=m["namespace"],
                      statefulset=m["name"]) == x["status"].get("readyReplicas", 0), m["name"]
    # Only the stack's namespaces: nothing of kube-system or default.
    assert {ls["namespace"] for _, ls, _ in s if "namespace" in ls} <= namespaces
    # Every series the catalog says the alerts read is served (pods' waiting reasons appear
    # only while one waits; the Jobs' only once a Job exists: the next test).
    served = {n for n, _, _ in s}
    expected = set(next(x for x in default_catalog().services.values() if x.name == READER).exposes)
    assert expected - served <= {"kube_pod_container_status_waiting_reason", "kube_job_failed", "kube_job_owner",
                                 "kube_cronjob_status_last_successful_time"}, expected - served


def live_model() -> Any:
    from infra import stack as infra_stack

    return infra_stack.model_of("prod")


def test_a_failed_backup_job_yields_what_backup_failed_reads(live: Live, deployed: dict[str, Any],  # noqa: F811
                                                             ksm: Ksm, tmp_path: Path) -> None:
    service = next(e.name for e in live_model().backed_up())
    name = backup_job(service)
    [cj] = [c for c in live.cluster.get("/apis/batch/v1/cronjobs")["items"] if c["metadata"]["name"] == name]
    ns = cj["metadata"]["namespace"]
    job = f"{name}-failing"
    spec = cj["spec"]["jobTemplate"]["spec"]
    # As `kubectl create job --from=cronjob/...` makes it (owned by the CronJob), but failing:
    # one second to run, on a pod no node takes, no retries.
    spec["activeDeadlineSeconds"], spec["backoffLimit"] = 1, 0
    spec["template"]["spec"]["nodeSelector"] = {"optiinfra.io/no-such-node": "true"}
    live.cluster.apply([{"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": job, "namespace": ns, "labels": cj["spec"]["jobTemplate"].get("metadata", {}).get("labels", {}),
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": name,
                             "uid": cj["metadata"]["uid"], "controller": True}]}, "spec": spec}])
    try:
        s = ksm.wait(f"failed Job {job}", lambda s: _value(
            s, "kube_job_failed", namespace=ns, job_name=job, condition="true") == 1)
        assert _value(s, "kube_job_owner", namespace=ns, job_name=job, owner_kind="CronJob", owner_name=name) == 1
        # The series as Prometheus would store them, fed to the generated prod rules: BackupFailed fires.
        _promtool_fires(tmp_path, s, ns, job, name)
    finally:
        live.cluster.kubectl("delete", "job", job, "-n", ns, "--ignore-not-found", "--wait=false", check=False)


def _promtool_fires(tmp: Path, s: list[tuple[str, dict[str, str], float]], ns: str, job: str, owner: str) -> None:
    from .conftest import render

    tool = go_tool("promtool")
    if isinstance(tool, str):
        unavailable(tool)
    (tmp / "rules.yml").write_text(generated(render("prod"), "rules.yml"))
    target = {"job": READER, "instance": f"{READER}:9180", "service": READER, "tier": "monitoring"}
    inputs = []
    for n, ls, v in s:
        if n in ("kube_job_failed", "kube_job_owner") and ls.get("job_name") == job:
            labels = ", ".join(f'{k}="{x}"' for k, x in {**ls, **target}.items())
            inputs.append({"series": f"{n}{{{labels}}}", "values": f"{v:g}x5"})
    alert = next(a for a in default_catalog().all_alerts() if a.name == "BackupFailed")
    case = {"interval": "1m", "input_series": inputs, "alert_rule_test": [
        {"eval_time": "2m", "alertname": "BackupFailed", "exp_alerts": [{
            "exp_labels": {"severity": alert.severity, **target, "namespace": ns, "job_name": job,
                           "condition": "true", "owner_name": owner},
            "exp_annotations": {"summary": f"The backup job {ns}/{job} ({owner}) failed", "runbook": alert.runbook}}]}]}
    (tmp / "t.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "tests": [case]}, sort_keys=False))
    done = subprocess.run([str(tool), "test", "rules", "t.yml"], capture_output=True, text=True, cwd=tmp, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
