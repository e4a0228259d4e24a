"""`python -m infra capacity`: footprint against the budget, and the synthetic catalogs.

Expected totals are worked out by hand from infra/catalog.py and the stack files (the
arithmetic is in the comments), never taken from the code under test. Amounts are
compared in MiB and millicores, as the JSON reports them (cpu in cores).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from infra import cli
from infra.catalog import BANDS, default_catalog
from infra.commands import plan
from infra.model import Dsn, Secret, Tier, Url
from infra.stack import load_stack
from infra.synthetic import synthetic_catalog

from .conftest import render


def capacity(capsys: pytest.CaptureFixture[str], stack: str, *sets: str) -> tuple[int, dict[str, Any], str]:
    argv = ["capacity", "--stack", stack, "--json"]
    for s in sets:
        argv += ["--set", s]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip().startswith("{") else {}, err


def service(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["services"] if s["name"] == name)


# ---- dev: the seed's catalog on Docker ---------------------------------------------------

def test_dev_totals_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = capacity(capsys, "dev")
    assert code == 0, err
    total = report["total"]
    assert total["instances"] == 20
    # Memory requests (MiB), catalog:
    #   databases  postgres 200 + clickhouse 500 + redis 50 + qdrant 128                  = 878
    #   monitoring prometheus 300 + alertmanager 24 + grafana 100 + flower 48 + 3 x 16     = 520
    #   core       orchestrator 64 + data-collector 100 + worker 88 + beat 48              = 300
    #   agents     4 agents x 50                                                           = 200
    #   frontend   portal 150                                                              = 150
    #   total      878 + 520 + 300 + 200 + 150                                             = 2048
    assert total["memoryMiB"]["request"] == 2048
    # Limits default to twice the request, Alertmanager's is 64: 2 x 2024 + 64 = 4112.
    assert total["memoryMiB"]["limit"] == 4112
    # CPU requests (cores): databases 0.1+0.5+0.1+0.1 = 0.8; monitoring 0.5+0.05+0.1+0.1+3x0.05 = 0.9;
    # core 4x0.1 = 0.4; agents 4x0.1 = 0.4; frontend 0.1; total 2.6. Limits are 4x: 10.4.
    assert total["cpu"]["request"] == pytest.approx(2.6)
    assert total["cpu"]["limit"] == pytest.approx(10.4)
    # Volumes (GiB): postgres 2 + clickhouse 5 + redis 0.5 + qdrant 1 + prometheus 1 + grafana 0.5 = 10
    # = 10240 MiB: exactly the seed's ~10GB disk estimate.
    assert total["storageMiB"] == 10 * 1024
    tiers = report["tiers"]
    assert [tiers[t.value]["memoryMiB"]["request"] for t in Tier] == [878, 520, 300, 200, 150]
    assert [tiers[t.value]["instances"] for t in Tier] == [4, 7, 4, 4, 1]
    # databases: 2 + 5 + 0.5 + 1 GiB = 8.5 GiB = 8704 MiB
    assert tiers["databases"]["storageMiB"] == 8704
    # The budget is the seed's estimate: 2Gi of memory (2048 MiB), 10Gi of disk.
    assert report["budget"]["memoryMiB"] == 2048 and report["budget"]["storageMiB"] == 10240
    assert report["withinBudget"] is True


def test_dev_text_report_lists_every_service_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["capacity", "--stack", "dev", "--set", "budget.cpu=2"]) == 0
    out = capsys.readouterr().out
    for name, svc in default_catalog().services.items():
        assert (f"    {name} " in out) is not svc.authenticator  # the sign-in proxy: Kubernetes only
    assert "Within budget: yes" in out
    # 2.6 cores of requests against budget.cpu 2: a warning on Docker, which reserves no CPU.
    assert "warning: config key 'optiinfra:budget.cpu': stack dev requests 2.6 CPU cores" in out


def test_docker_runs_one_instance_and_refuses_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = capacity(capsys, "dev", "cloudProviders=[aws,gcp]")
    assert code == 0
    assert service(report, "cost-agent")["instances"] == 1
    assert report["total"]["instances"] == 20
    # A replica count cannot apply on Docker (one container per service): refused, not ignored.
    code, _, err = capacity(capsys, "dev", "services.data-collector.replicas=3")
    assert code == 2 and "optiinfra:services.data-collector.replicas': does not apply on Docker" in err


def test_an_override_changes_request_and_limit(capsys: pytest.CaptureFixture[str]) -> None:
    _, report, _ = capacity(capsys, "dev", "services.redis.memory=100Mi", "services.redis.cpu=0.25")
    each = service(report, "redis")["each"]
    # memory 100 Mi, limit twice it; cpu 0.25, limit four times it.
    assert each["memoryMiB"] == {"request": 100, "limit": 200}
    assert each["cpu"] == {"request": pytest.approx(0.25), "limit": pytest.approx(1.0)}
    assert report["total"]["memoryMiB"]["request"] == 2048 - 50 + 100


# ---- Kubernetes: replicas, cost agent per provider, claims ---------------------------------

def test_replicas_and_a_cost_agent_per_provider_count_on_kubernetes(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = capacity(
        capsys, "dev", "target=kubernetes", "cloudProviders=[aws,gcp,azure]", "services.cost-agent.replicas=2",
        "services.data-collector-worker.replicas=3", "budget.memory=4Gi", "budget.cpu=4", "budget.storage=20Gi")
    assert code == 0
    cost = service(report, "cost-agent")
    # 3 providers x 2 replicas = 6 pods of 50 MiB / 0.1 core
    assert cost["instances"] == 6
    assert cost["total"]["memoryMiB"]["request"] == 300
    assert cost["total"]["cpu"]["request"] == pytest.approx(0.6)
    worker = service(report, "data-collector-worker")
    assert worker["instances"] == 3 and worker["total"]["memoryMiB"]["request"] == 3 * 88
    # 20 services, cost agent 1 -> 6 (+5), worker 1 -> 3 (+2): 27 pods.
    assert report["total"]["instances"] == 27
    # 2048 + 5 x 50 + 2 x 88 = 2474 MiB
    assert report["total"]["memoryMiB"]["request"] == 2474


def test_kubernetes_storage_setting_sizes_the_claims(capsys: pytest.CaptureFixture[str]) -> None:
    sets = ("kubernetes.storage.clickhouse=50Gi", "budget.storage=200Gi")
    _, k8s, _ = capacity(capsys, "dev", "target=kubernetes", *sets)
    # clickhouse 5 GiB -> 50 GiB: 10 - 5 + 50 = 55 GiB, and a backup claim the catalog's size of each
    # backed-up service's volumes: postgres 2 + clickhouse 5 + redis 0.5 + qdrant 1 + grafana 0.5 = 9 GiB
    assert k8s["total"]["storageMiB"] == (55 + 9) * 1024
    _, big, _ = capacity(capsys, "dev", "target=kubernetes", *sets, "backups.storage={clickhouse: 50Gi}")
    assert big["total"]["storageMiB"] == (55 + 9 - 5 + 50) * 1024
    _, off, _ = capacity(capsys, "dev", "target=kubernetes", *sets, "backups.enabled=false")
    assert off["total"]["storageMiB"] == 55 * 1024
    _, docker, _ = capacity(capsys, "dev", *sets)
    assert docker["total"]["storageMiB"] == 10 * 1024, "Docker volumes have no size setting"


def test_prod_totals_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    """Pulumi.prod.yaml: replicas, overrides, claim sizes and three cloud providers."""
    code, report, err = capacity(capsys, "prod")
    assert code == 0, err
    total = report["total"]
    # Pods: 21 services (the sign-in proxy too), data-collector 2 (+1), worker 3 (+2), cost-agent
    # 1 x 3 providers (+2), performance/resource/application agents 2 each (+3): 21 + 8 = 29.
    assert total["instances"] == 29
    # Memory (MiB):
    #   databases  postgres 512 + clickhouse 2048 + redis 50 + qdrant 128                   = 2738
    #   monitoring prometheus 512 + alertmanager 24 + grafana 100 + flower 48 + 3 x 16
    #              + oauth2-proxy 32                                                         = 764
    #   core       orchestrator 64 + collector 2 x 100 + worker 3 x 256 + beat 48            = 1080
    #   agents     cost 3 x 50 + 3 agents x 2 x 50                                           = 450
    #   frontend   portal 150                                                                = 150
    #   total                                                                                = 5182
    assert [report["tiers"][t.value]["memoryMiB"]["request"] for t in Tier] == [2738, 764, 1080, 450, 150]
    assert total["memoryMiB"]["request"] == 5182
    # CPU: databases 0.5+1+0.1+0.1 = 1.7; monitoring 0.9 + 0.05 (the proxy); core 0.1+0.2+0.75+0.1 = 1.15;
    # agents 0.3+0.6 = 0.9; frontend 0.1; total 4.8
    assert total["cpu"]["request"] == pytest.approx(4.8)
    # Claims (GiB): postgres 20 + clickhouse 50 + redis 2 + qdrant 10 + prometheus 20 + grafana 2 = 104,
    # and a backup claim of the same size for each but Prometheus: 20 + 50 + 2 + 10 + 2 = 84
    assert total["storageMiB"] == (104 + 84) * 1024
    assert report["withinBudget"] is True


# ---- over budget --------------------------------------------------------------------------

def test_over_the_memory_budget_exits_1_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = capacity(capsys, "dev", "services.clickhouse.memory=4Gi")
    assert code == 1
    assert report["withinBudget"] is False
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    # 2048 - 500 + 4096 = 5644 MiB = 5.51 GiB
    assert lines[0].startswith("error: config key 'optiinfra:budget.memory': stack dev requests 5.51Gi")
    assert "raise optiinfra:budget.memory to at least 5.51Gi" in lines[0]
    assert "clickhouse 4Gi (optiinfra:services.clickhouse.memory)" in lines[0]
    assert "Traceback" not in err


def test_a_smaller_budget_fails_and_plan_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = capacity(capsys, "dev", "budget.memory=1Gi")
    assert code == 1 and "more than its budget of 1Gi" in err
    text = plan.text(render("dev", "budget.memory=1Gi"))
    assert "OVER BUDGET: see `python -m infra capacity --stack dev`" in text


def test_cpu_over_budget_fails_on_kubernetes_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = capacity(capsys, "dev", "budget.cpu=1")
    assert code == 0 and report["warnings"] and not err
    code, _, err = capacity(capsys, "dev", "budget.cpu=1", "target=kubernetes", "budget.memory=4Gi")
    assert code == 1
    assert "config key 'optiinfra:budget.cpu': stack dev requests 2.6 CPU cores" in err


def test_storage_over_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = capacity(capsys, "dev", "budget.storage=5Gi")
    assert code == 1
    assert "config key 'optiinfra:budget.storage': stack dev claims 10Gi" in err


def test_node_pool_total_and_the_largest_pod(capsys: pytest.CaptureFixture[str]) -> None:
    # 4 nodes x 1Gi = 4Gi and 4 x 1 core: the stack's 2048 MiB and 2.6 cores fit in total
    # (no system reserve here: test_room_for_the_system_reserve_and_the_surge has it).
    none = ("budget.reservedMemory=0Mi", "budget.reservedCpu=0", "budget.storage=20Gi")
    code, report, err = capacity(capsys, "dev", "target=kubernetes", "budget.nodes=4", "budget.memory=1Gi",
                                 "budget.cpu=1", *none)
    assert code == 0, err
    assert report["budget"]["memoryMiB"] == 4096 and report["budget"]["cpu"] == 4
    # clickhouse at 1536 MiB fits the pool (4 Gi) but no single 1 Gi node.
    code, _, err = capacity(capsys, "dev", "target=kubernetes", "budget.nodes=4", "budget.memory=1Gi",
                            "budget.cpu=1", "services.clickhouse.memory=1536Mi", *none)
    assert code == 1
    assert "config key 'optiinfra:services.clickhouse.memory': one clickhouse pod requests 1.50Gi" in err


def test_room_for_the_system_reserve_and_the_surge(capsys: pytest.CaptureFixture[str]) -> None:
    """Kubernetes keeps each node's system reserve and the largest rolling-update surge pod free."""
    code, report, err = capacity(capsys, "prod")
    assert code == 0, err
    assert report["budget"]["reservedMemoryPerNodeMiB"] == 512 and report["budget"]["reservedCpuPerNode"] == 0.1
    # The largest pod that rolls with surge (StatefulSets and beat do not): a 256Mi worker.
    assert report["surge"]["service"] == "data-collector-worker"
    assert report["surge"]["memoryMiB"]["request"] == 256
    # 4 nodes x 1.5Gi: 2048 MiB of requests fit the 6Gi pool, and still fit once 4 x 512 MiB
    # are reserved (4096 MiB left) with a 150 MiB portal surge.
    sets = ("target=kubernetes", "budget.storage=20Gi", "budget.nodes=4", "budget.memory=1536Mi", "budget.cpu=1")
    code, report, err = capacity(capsys, "dev", *sets)
    assert code == 0, err
    assert report["surge"]["service"] == "portal"
    # 2 x 1.5Gi = 3Gi holds the requests (2048 MiB) but not with 2 x 512 MiB reserved and the surge.
    code, _, err = capacity(capsys, "dev", *sets[:2], "budget.nodes=2", "budget.memory=1536Mi", "budget.cpu=2")
    assert code == 1
    assert "does not fit 2 nodes x 1.50Gi with room kept for the system reserve 512Mi" in err
    assert "rolling-update surge 150Mi and 0.1 cores (one portal pod)" in err
    assert "raise optiinfra:budget.memory to at least 1.57Gi per node" in err  # (2048+150)/2 + 512
    out = capsys.readouterr().out if cli.main(["capacity", "--stack", "prod"]) == 0 else ""
    assert "room kept" in out and "one data-collector-worker pod" in out
    # Docker keeps no such room: no surge, and the budget is the host's share already.
    _, dev, _ = capacity(capsys, "dev")
    assert dev["surge"] is None and dev["budget"]["reservedMemoryPerNodeMiB"] == 0


def test_bad_budget_values_are_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["capacity", "--stack", "dev", "--set", "budget.nodes=0"]) == 2
    assert "optiinfra:budget.nodes" in capsys.readouterr().err
    assert cli.main(["capacity", "--stack", "dev", "--set", "budget.memory=lots"]) == 2
    assert "optiinfra:budget.memory" in capsys.readouterr().err


def test_plan_prints_the_totals() -> None:
    def capacity_line(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith("Capacity "))
    last = capacity_line(plan.text(render("dev")))
    assert last.startswith("Capacity (requests of 20 instances): cpu 2.6 of ")
    assert "memory 2Gi of 2Gi, storage 10Gi of 10Gi: within budget" in last
    prod = capacity_line(plan.text(render("prod")))
    assert prod.startswith("Capacity (requests of 29 instances): cpu 4.8 of ")


# ---- synthetic catalogs (benchmark) -------------------------------------------------------

def test_synthetic_20_is_the_real_catalog() -> None:
    # The real catalog as Docker runs it: the sign-in proxy is Kubernetes-only.
    on_docker = {n: s for n, s in default_catalog().services.items() if not s.authenticator}
    assert synthetic_catalog(20).services == on_docker


@pytest.mark.parametrize("n", [100, 500])
def test_synthetic_catalogs_resolve_with_unique_valid_ports(n: int) -> None:
    cat = synthetic_catalog(n)
    assert len(cat.services) == n
    assert {s.tier for s in cat.services.values()} == set(Tier)
    hosts = [p.host for s in cat.services.values() for p in s.ports if p.host is not None]
    assert len(hosts) == len(set(hosts))
    bands = {b.name: b for b in BANDS}
    real = {p.host for s in default_catalog().services.values() for p in s.ports}
    for s in cat.services.values():
        for p in s.ports:
            if p.host is not None and p.host not in real:
                assert p.band is not None and bands[p.band].contains(p.host), (s.name, p)
    # The application band (8000-8099) has 100 ports: at 500 services some copies stay unpublished.
    if n == 500:
        assert any(p.host is None for s in cat.services.values() for p in s.ports)
    # Every dependency stays inside its copy and points to an earlier-or-same tier; env and
    # arguments are the original's, pointing at the copy's services and credentials.
    originals = default_catalog().services
    for s in cat.services.values():
        for d in s.depends_on:
            assert cat.services[d.service].tier.order <= s.tier.order
        if s.name in originals:
            continue
        base, k = s.name.rsplit("-", 1)
        original = originals[base]
        assert {d.service for d in s.depends_on} == {f"{d.service}-{k}" for d in original.depends_on}

        def back(v: Any, k: str = k) -> Any:
            if isinstance(v, (Url, Dsn)):
                return replace(v, service=v.service.removesuffix(f"-{k}"),
                               credential=v.credential.removesuffix(f"-{k}") if v.credential else None)
            if isinstance(v, Secret):
                return replace(v, credential=v.credential.removesuffix(f"-{k}"))
            return v

        assert [(key, back(v)) for key, v in s.env] == list(original.env)
        assert [back(v) for v in s.command] == list(original.command)
        for _, v in s.env:
            if isinstance(v, Secret):
                assert v.credential in cat.credentials and v.credential.endswith(f"-{k}")
    model = load_stack({}, cat)
    assert len(model.services) == n
    # the published ports are the copies' unique ones: no host port twice
    assert len({p.host for e in model.services.values() for p in e.published}) == sum(
        len(e.published) for e in model.services.values())
