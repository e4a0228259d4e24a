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

def declared(name: str) -> tuple[int, int]:
    """(request, Docker limit) MiB of a service as the catalog declares it: the limit is the
    declared one, else twice the request (the rule docs/capacity.md states)."""
    r = default_catalog().services[name].resources
    return r.memory_mib, r.memory_limit_mib or 2 * r.memory_mib


TIERS = {Tier.DATABASES: ("postgres", "clickhouse", "redis", "qdrant"),
         Tier.MONITORING: ("prometheus", "alertmanager", "grafana", "flower", "postgres-exporter",
                           "redis-exporter", "clickhouse-exporter", "blackbox-exporter"),
         Tier.CORE: ("orchestrator", "data-collector", "data-collector-worker", "data-collector-beat"),
         Tier.AGENTS: ("cost-agent", "performance-agent", "resource-agent", "application-agent"),
         Tier.FRONTEND: ("portal",)}


def test_dev_totals_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = capacity(capsys, "dev")
    assert code == 0, err
    total = report["total"]
    # 21 services: all but the sign-in proxy (Kubernetes only), one instance each.
    assert total["instances"] == 21
    # Memory requests (MiB), from the catalog's declarations, tier by tier; with today's catalog:
    #   databases  postgres 512 + clickhouse 1536 + redis 256 + qdrant 512                = 2816
    #   monitoring prometheus 300 + alertmanager 24 + grafana 100 + flower 48 + 3 x 16
    #              + blackbox-exporter 24                                                  = 544
    #   core       orchestrator 64 + data-collector 100 + worker 200 + beat 100            = 464
    #   agents     4 agents x 50                                                           = 200
    #   frontend   portal 150                                                              = 150
    #   total                                                                              = 4174
    by_tier = [sum(declared(n)[0] for n in TIERS[t]) for t in Tier]
    assert by_tier == [2816, 544, 464, 200, 150]
    assert total["memoryMiB"]["request"] == sum(by_tier) == 4174
    # Limits: the stores declare theirs (= request, 2816), Alertmanager 64, Grafana 256, the
    # blackbox exporter 64; the rest twice the request: prometheus 600 + flower 96 + 3 x 32,
    # core 2 x 464 = 928, agents 2 x 200 = 400, portal 2 x 150 = 300:
    # 2816 + (600 + 64 + 256 + 96 + 96 + 64) + 928 + 400 + 300 = 5620
    assert total["memoryMiB"]["limit"] == sum(declared(n)[1] for names in TIERS.values() for n in names) == 5620
    # CPU requests (cores): databases 0.25+0.5+0.1+0.25 = 1.1; monitoring 0.5+0.05+0.1+0.1+3x0.05
    # + blackbox 0.05 = 0.95; core 4x0.1 = 0.4; agents 4x0.1 = 0.4; frontend 0.1; total 2.95.
    # Limits are 4x: 11.8.
    assert total["cpu"]["request"] == pytest.approx(2.95)
    assert total["cpu"]["limit"] == pytest.approx(11.8)
    # Volumes (GiB): postgres 2 + clickhouse 5 + redis 0.5 + qdrant 1 + prometheus 1 + grafana 0.5 = 10
    # = 10240 MiB: exactly the seed's ~10GB disk estimate.
    assert total["storageMiB"] == 10 * 1024
    tiers = report["tiers"]
    assert [tiers[t.value]["memoryMiB"]["request"] for t in Tier] == by_tier
    assert [tiers[t.value]["instances"] for t in Tier] == [4, 8, 4, 4, 1]
    # databases: 2 + 5 + 0.5 + 1 GiB = 8.5 GiB = 8704 MiB
    assert tiers["databases"]["storageMiB"] == 8704
    # Docker is budgeted by its limits (5620 MiB): dev's budget is 6Gi (6144 MiB), 10Gi of disk.
    assert report["budget"]["memoryMiB"] == 6144 and report["budget"]["storageMiB"] == 10240
    assert report["withinBudget"] is True


def test_docker_is_budgeted_by_its_limits(capsys: pytest.CaptureFixture[str]) -> None:
    # 5Gi (5120 MiB) holds the requests (4174) but not the limits (5620 MiB = 5.488Gi = 5.49Gi).
    code, _, err = capacity(capsys, "dev", "budget.memory=5Gi")
    assert code == 1
    assert "stack dev's memory limits add up to 5.49Gi, more than its budget of 5Gi" in err
    assert "raise optiinfra:budget.memory to at least 5.49Gi" in err
    assert len(err.strip().splitlines()) == 1


def test_dev_text_report_lists_every_service_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["capacity", "--stack", "dev", "--set", "budget.cpu=2"]) == 0
    out = capsys.readouterr().out
    for name, svc in default_catalog().services.items():
        # the sign-in proxy and kube-state-metrics: Kubernetes only; the Pushgateway: only with
        # drills (Kubernetes, a store)
        assert (f"    {name} " in out) is not (svc.authenticator or bool(svc.kubernetes_only) or svc.push_gateway)
    assert "Within budget: yes" in out
    # 2.95 cores of requests against budget.cpu 2: a warning on Docker, which reserves no CPU.
    assert "warning: config key 'optiinfra:budget.cpu': stack dev requests 2.95 CPU cores" in out


def test_docker_runs_one_instance_and_refuses_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, _ = capacity(capsys, "dev", "cloudProviders=[aws,gcp]")
    assert code == 0
    assert service(report, "cost-agent")["instances"] == 1
    # One of each service Docker runs: all but the sign-in proxy, kube-state-metrics and the
    # Pushgateway (Kubernetes only).
    assert report["total"]["instances"] == sum(not (s.authenticator or s.kubernetes_only or s.push_gateway)
                                               for s in default_catalog().services.values())
    # A replica count cannot apply on Docker (one container per service): refused, not ignored.
    code, _, err = capacity(capsys, "dev", "services.data-collector.replicas=3")
    assert code == 2 and "optiinfra:services.data-collector.replicas': does not apply on Docker" in err


def test_an_override_changes_request_and_limit(capsys: pytest.CaptureFixture[str]) -> None:
    _, report, _ = capacity(capsys, "dev", "services.redis.memory=100Mi", "services.redis.cpu=0.25")
    each = service(report, "redis")["each"]
    # memory 100 Mi, limit twice it; cpu 0.25, limit four times it.
    assert each["memoryMiB"] == {"request": 100, "limit": 200}
    assert each["cpu"] == {"request": pytest.approx(0.25), "limit": pytest.approx(1.0)}
    assert report["total"]["memoryMiB"]["request"] == 4174 - declared("redis")[0] + 100


# ---- Kubernetes: replicas, cost agent per provider, claims ---------------------------------

# dev on Kubernetes claims its volumes, 10 GiB (test_dev_totals_by_hand), and, having no backup
# store, a backup claim for each backed-up service that keeps `backups.retention` copies (default 7)
# and room for the next: (7 + 1) x (postgres 2 + clickhouse 5 + redis 0.5 + qdrant 1 + grafana 0.5)
# = 8 x 9 = 72 GiB; 82 GiB in all. Tests whose subject is not storage give it that budget.
DEV_K8S_STORAGE = "budget.storage=82Gi"


def test_replicas_and_a_cost_agent_per_provider_count_on_kubernetes(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = capacity(
        capsys, "dev", "target=kubernetes", "cloudProviders=[aws,gcp,azure]", "services.cost-agent.replicas=2",
        "services.data-collector-worker.replicas=3", "budget.memory=8Gi", "budget.cpu=4", DEV_K8S_STORAGE)
    assert code == 0, err
    cost = service(report, "cost-agent")
    # 3 providers x 2 replicas = 6 pods of 50 MiB / 0.1 core
    assert cost["instances"] == 6
    assert cost["total"]["memoryMiB"]["request"] == 300
    assert cost["total"]["cpu"]["request"] == pytest.approx(0.6)
    worker = service(report, "data-collector-worker")
    assert worker["instances"] == 3 and worker["total"]["memoryMiB"]["request"] == 3 * declared(worker["name"])[0]
    # 21 services (no sign-in proxy: dev sets no sso), kube-state-metrics (target=kubernetes: +1),
    # cost agent 1 -> 6 (+5), worker 1 -> 3 (+2): 29 pods.
    assert report["total"]["instances"] == 29
    # 4174 + kube-state-metrics 32 + 5 x 50 + 2 x 200 = 4856 MiB
    assert report["total"]["memoryMiB"]["request"] == 4174 + 32 + 5 * 50 + 2 * declared("data-collector-worker")[0] \
        == 4856


def test_kubernetes_storage_setting_sizes_the_claims(capsys: pytest.CaptureFixture[str]) -> None:
    sets = ("kubernetes.storage.clickhouse=50Gi", "budget.storage=500Gi")
    code, k8s, err = capacity(capsys, "dev", "target=kubernetes", *sets)
    assert code == 0, err
    # clickhouse 5 GiB -> 50 GiB: 10 - 5 + 50 = 55 GiB of volumes. Each backed-up service's backup
    # claim is its volumes on this stack (clickhouse's 50 GiB, not the catalog's 5) times one more
    # than the copies it keeps (no store: backups.retention, 7): postgres 2 + clickhouse 50
    # + redis 0.5 + qdrant 1 + grafana 0.5 = 54 GiB, x 8 = 432 GiB.
    assert k8s["total"]["storageMiB"] == (55 + 8 * 54) * 1024
    assert service(k8s, "clickhouse")["total"]["storageMiB"] == (50 + 8 * 50) * 1024
    # Fewer copies kept in the claim, smaller claims: localRetention 2 -> 3 x 54 = 162 GiB.
    _, fewer, _ = capacity(capsys, "dev", "target=kubernetes", *sets, "backups.localRetention=2")
    assert fewer["total"]["storageMiB"] == (55 + 3 * 54) * 1024
    # A stated size replaces the rule for that service: clickhouse's 8 x 50 GiB becomes 50 GiB.
    _, big, _ = capacity(capsys, "dev", "target=kubernetes", *sets, "backups.storage={clickhouse: 50Gi}")
    assert big["total"]["storageMiB"] == (55 + 8 * 54 - 8 * 50 + 50) * 1024
    _, off, _ = capacity(capsys, "dev", "target=kubernetes", *sets, "backups.enabled=false")
    assert off["total"]["storageMiB"] == 55 * 1024
    _, docker, _ = capacity(capsys, "dev", *sets)
    assert docker["total"]["storageMiB"] == 10 * 1024, "Docker volumes have no size setting"


def test_prod_totals_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    """Pulumi.prod.yaml: replicas, overrides, claim sizes and three cloud providers."""
    code, report, err = capacity(capsys, "prod")
    assert code == 0, err
    total = report["total"]
    # Pods: 22 services (the prober and the sign-in proxy too), portal 2 (+1), orchestrator 2 (+1),
    # sign-in proxy 2 (+1), data-collector 2 (+1), worker 3 (+2), cost-agent 1 x 3 providers (+2),
    # performance/resource/application agents 2 each (+3): 22 + 11 = 33; kube-state-metrics
    # (Kubernetes only): 34; the Pushgateway the restore drills push to (Kubernetes with a
    # backups.store, which prod sets): 35.
    assert total["instances"] == 35
    assert service(report, "pushgateway")["instances"] == 1
    # Memory (MiB):
    #   databases  postgres 512 + clickhouse 2048 + redis 256 + qdrant 512                  = 3328
    #   monitoring prometheus 512 + alertmanager 24 + grafana 100 + flower 48 + 3 x 16
    #              + blackbox-exporter 24 + oauth2-proxy 2 x 32 + kube-state-metrics 32
    #              + pushgateway 16                                                          = 868
    #   core       orchestrator 2 x 64 + collector 2 x 100 + worker 3 x 256 + beat 100       = 1196
    #   agents     cost 3 x 50 + 3 agents x 2 x 50                                           = 450
    #   frontend   portal 2 x 150                                                            = 300
    #   total                                                                                = 6142
    assert [report["tiers"][t.value]["memoryMiB"]["request"] for t in Tier] == [3328, 868, 1196, 450, 300]
    assert total["memoryMiB"]["request"] == 6142
    # CPU: databases 0.5+1+0.1+0.25 = 1.85; monitoring 0.9 + prober 0.05 + proxy 2 x 0.05
    # + kube-state-metrics 0.05 + pushgateway 0.02 = 1.12; core 0.2+0.2+0.75+0.1 = 1.25;
    # agents 0.3+0.6 = 0.9; frontend 0.2; total 5.32
    assert total["cpu"]["request"] == pytest.approx(5.32)
    # Claims (GiB): postgres 20 + clickhouse 50 + redis 2 + qdrant 10 + prometheus 20 + grafana 2 = 104.
    # Backup claims: prod's store keeps the copies off-site, so each claim keeps the newest one
    # (localRetention's default with a store, 1) and room for the next: 2 x its volumes, for each
    # backed-up service but ClickHouse, which writes its backups into the store itself (none):
    # 2 x (postgres 20 + redis 2 + qdrant 10 + grafana 2) = 68
    assert total["storageMiB"] == (104 + 68) * 1024
    assert service(report, "clickhouse")["total"]["storageMiB"] == 50 * 1024
    assert service(report, "postgres")["total"]["storageMiB"] == (20 + 2 * 20) * 1024
    assert report["withinBudget"] is True


# ---- over budget --------------------------------------------------------------------------

def test_over_the_memory_budget_exits_1_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = capacity(capsys, "dev", "services.clickhouse.memory=4Gi")
    assert code == 1
    assert report["withinBudget"] is False
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    # 4174 - 1536 + 4096 = 6734 MiB = 6.576 GiB = 6.58Gi, over the 6Gi budget
    assert lines[0].startswith("error: config key 'optiinfra:budget.memory': stack dev requests 6.58Gi")
    assert "raise optiinfra:budget.memory to at least 6.58Gi" in lines[0]
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
    code, _, err = capacity(capsys, "dev", "budget.cpu=1", "target=kubernetes", "budget.memory=8Gi")
    assert code == 1
    # 2.95 cores and kube-state-metrics' 0.05 (target=kubernetes runs it) = 3
    assert "config key 'optiinfra:budget.cpu': stack dev requests 3 CPU cores" in err


def test_storage_over_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = capacity(capsys, "dev", "budget.storage=5Gi")
    assert code == 1
    assert "config key 'optiinfra:budget.storage': stack dev claims 10Gi" in err


def test_node_pool_total_and_the_largest_pod(capsys: pytest.CaptureFixture[str]) -> None:
    # 6 nodes x 2Gi = 12Gi and 6 x 1 core: the stack's 4174 MiB and 2.95 cores fit in total
    # (no system reserve here: test_room_for_the_system_reserve_and_the_surge has it; 6, not 4,
    # so that a drained node's pods find room: test_a_drain_is_not_a_repack_by_hand).
    none = ("budget.reservedMemory=0Mi", "budget.reservedCpu=0", DEV_K8S_STORAGE)
    code, report, err = capacity(capsys, "dev", "target=kubernetes", "budget.nodes=6", "budget.memory=2Gi",
                                 "budget.cpu=1", *none)
    assert code == 0, err
    assert report["budget"]["memoryMiB"] == 12288 and report["budget"]["cpu"] == 6
    # clickhouse at 2560 MiB fits the pool (12 Gi) but no single 2 Gi node.
    code, _, err = capacity(capsys, "dev", "target=kubernetes", "budget.nodes=6", "budget.memory=2Gi",
                            "budget.cpu=1", "services.clickhouse.memory=2560Mi", *none)
    assert code == 1
    assert "config key 'optiinfra:services.clickhouse.memory': one clickhouse pod requests 2.50Gi" in err


def test_room_for_the_system_reserve_and_the_surge(capsys: pytest.CaptureFixture[str]) -> None:
    """Kubernetes keeps each node's system reserve and the largest rolling-update surge pod free."""
    code, report, err = capacity(capsys, "prod")
    assert code == 0, err
    # prod states GKE's reserve for its 8 GiB nodes (Pulumi.prod.yaml)
    assert report["budget"]["reservedMemoryPerNodeMiB"] == 2048 and report["budget"]["reservedCpuPerNode"] == 0.1
    # The largest pod that rolls with surge (StatefulSets and beat do not): a 256Mi worker.
    assert report["surge"]["service"] == "data-collector-worker"
    assert report["surge"]["memoryMiB"]["request"] == 256
    # 7 nodes x 2.5Gi: 4174 MiB of requests fit the 17.5Gi pool, and still fit once 7 x 512 MiB
    # (the default reserve) are reserved with a 200 MiB worker surge (dev's largest pod that
    # surges), and after losing a node (7, not 5: a drained clickhouse needs 0.5 cores free on one).
    sets = ("target=kubernetes", DEV_K8S_STORAGE, "budget.nodes=7", "budget.memory=2560Mi", "budget.cpu=1")
    code, report, err = capacity(capsys, "dev", *sets)
    assert code == 0, err
    assert report["surge"]["service"] == "data-collector-worker"
    # 2 x 2.5Gi = 5Gi holds the requests (4174 MiB) but not with 2 x 512 MiB reserved and the surge.
    code, _, err = capacity(capsys, "dev", *sets[:2], "budget.nodes=2", "budget.memory=2560Mi", "budget.cpu=2")
    assert code == 1
    assert "does not fit 2 nodes x 2.50Gi with room kept for the system reserve 512Mi" in err
    assert "rolling-update surge 200Mi and 0.1 cores (one data-collector-worker pod)" in err
    # target=kubernetes runs kube-state-metrics too (32 MiB):
    # (4174 + 32 + 200) / 2 + 512 = 2715 MiB = 2.651Gi = 2.65Gi
    assert "raise optiinfra:budget.memory to at least 2.65Gi per node" in err
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
    # 21 instances, 2.95 cores, 4174 MiB = 4.076Gi (test_dev_totals_by_hand)
    assert last.startswith("Capacity (requests of 21 instances): cpu 2.95 of ")
    assert "memory 4.08Gi of 6Gi, storage 10Gi of 10Gi: within budget" in last
    prod = capacity_line(plan.text(render("prod")))
    # 35 instances, 5.32 cores, 172Gi of claims (test_prod_totals_by_hand)
    assert prod.startswith("Capacity (requests of 35 instances): cpu 5.32 of ")
    assert "storage 172Gi of 200Gi" in prod


# ---- synthetic catalogs (benchmark) -------------------------------------------------------

def test_synthetic_of_the_real_size_is_the_real_catalog() -> None:
    # The real catalog as Docker runs it: the sign-in proxy and kube-state-metrics are Kubernetes-only.
    on_docker = {n: s for n, s in default_catalog().services.items() if not (s.authenticator or s.kubernetes_only)}
    assert synthetic_catalog(len(on_docker)).services == on_docker


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
    # Every copy runs but the Pushgateway's (only where drills run: Kubernetes with a store).
    assert len(model.services) == n - sum(s.push_gateway for s in cat.services.values())
    # the published ports are the copies' unique ones: no host port twice
    assert len({p.host for e in model.services.values() for p in e.published}) == sum(
        len(e.published) for e in model.services.values())


# ---- packing and losing a node -------------------------------------------------------------

def test_sums_fit_but_the_pods_do_not_pack() -> None:
    from infra.capacity import Pod, nodes_needed, pack
    # 2 nodes of 1 core / 1024 MiB hold 2048 MiB in sum; three 600 MiB pods are 1800 MiB, but
    # each node holds only one of them (2 x 600 = 1200 > 1024): one is left over, 3 nodes needed.
    pods = [Pod(f"p{i}", 100, 600) for i in range(3)]
    packed = pack(pods, 2, 1000, 1024)
    assert [len(n) for n in packed.nodes] == [1, 1] and len(packed.unplaced) == 1
    assert nodes_needed(pods, 1000, 1024) == 3


def test_first_fit_decreasing_by_hand() -> None:
    from infra.capacity import Pod, nodes_needed, pack
    # 2 nodes of 1000 MiB, pods 300, 300, 400, 500, 500 (2000 MiB: exactly the sum). Largest
    # first: 500 and 500 fill node 1, then 400, 300 and 300 fill node 2.
    pods = [Pod("a", 10, 300), Pod("b", 10, 300), Pod("c", 10, 400), Pod("d", 10, 500), Pod("e", 10, 500)]
    packed = pack(pods, 2, 1000, 1000)
    assert packed.fits
    assert [sorted(p.memory_mib for p in n) for n in packed.nodes] == [[500, 500], [300, 300, 400]]
    # CPU counts too: two pods of 0.6 cores do not share a 1-core node, whatever the memory.
    assert nodes_needed([Pod("x", 600, 10), Pod("y", 600, 10)], 1000, 4096) == 2
    # A pod larger than a node never packs.
    assert nodes_needed([Pod("big", 100, 5000)], 1000, 4096) is None


def test_a_drain_is_not_a_repack_by_hand() -> None:
    from infra.capacity import Pod, lose_a_node, nodes_needed, nodes_to_survive, spread
    # 3 nodes of 1000m / 1000 MiB; pods take the same share of CPU and memory, so the
    # scheduler's balance term is equal everywhere and each pod goes to the node with the most
    # free room (the first such on a tie). Created a (600), then s1..s6 (200 each):
    #   a -> n0 (400 left); s1 -> n1, s2 -> n2 (800); s3 -> n1, s4 -> n2 (600); s5 -> n1,
    #   s6 -> n2 (400): every node has 400 free.
    pods = [Pod("a", 600, 600)] + [Pod(f"s{i}", 200, 200) for i in range(1, 7)]
    placed = spread(pods, 3, 1000, 1000)
    assert [[p.name for p in n] for n in placed.nodes] == [["a"], ["s1", "s3", "s5"], ["s2", "s4", "s6"]]
    # Repacked, the 1800 of requests fit 2 nodes (a + s1 + s2, s3..s6): the old check said "survives".
    assert nodes_needed(pods, 1000, 1000) == 2
    # Drained, n0's pod a needs 600 on one node and each survivor has 400: Pending.
    loss = lose_a_node(pods, 3, 1000, 1000)
    assert loss is not None
    assert (loss.order, loss.node) == ("as created", 0)
    assert [p.name for p in loss.stranded] == ["a"] and loss.most_free == (400, 400)
    # 4 nodes: as created a -> n0, s1..s3 -> n1..n3, s4..s6 -> n1..n3, so every other node
    # keeps 600 free for a; smallest first a lands last, on n2 (200 left), and every loss
    # still finds room. So 4 is the answer.
    assert lose_a_node(pods, 4, 1000, 1000) is None
    assert nodes_to_survive(pods, 3, 1000, 1000) == 4
    # A pod larger than a node never survives anything.
    assert nodes_to_survive([Pod("big", 2000, 10)], 2, 1000, 1000) is None


def test_a_zonal_volume_keeps_its_pod_in_its_zone_by_hand() -> None:
    from infra.capacity import Pod, lose_a_node, nodes_to_survive
    # Node i is in zone i mod zones. One store pod of 600 on a zonal claim, 2 nodes in 2 zones:
    # it lands on n0 (zone 0); n0 lost, the only node left is in zone 1, where its volume is not.
    db = Pod("db", 600, 600, zonal=True)
    loss = lose_a_node([db], 2, 1000, 1000, zones=2)
    assert loss is not None and loss.zone_bound and loss.zone_left == 0 and [p.name for p in loss.stranded] == ["db"]
    # The same pod on storage replicated across zones moves to n1.
    assert lose_a_node([Pod("db", 600, 600)], 2, 1000, 1000, zones=2) is None
    # One zone: nothing binds it.
    assert lose_a_node([db], 2, 1000, 1000, zones=1) is None
    # 4 nodes over 2 zones: n2 is db's zone partner with 1000 free.
    assert lose_a_node([db], 4, 1000, 1000, zones=2) is None
    # The fewest that survive, a whole number per zone: from 3, the next multiple of 2 is 4.
    assert nodes_to_survive([db], 3, 1000, 1000, zones=2) == 4


def test_prod_survives_losing_a_node_only_with_the_new_budget(capsys: pytest.CaptureFixture[str]) -> None:
    # The budget before this change (4 nodes of 2 cores / 4Gi, the default reserve): the pods
    # repack onto 3 nodes, but spread as the scheduler places them a drained node's clickhouse
    # pod (1 core) finds no survivor with a free core, which is what the live drain showed.
    old = ("budget.nodes=4", "budget.cpu=2", "budget.memory=4Gi", "budget.reservedMemory=512Mi")
    code, report, err = capacity(capsys, "prod", *old)
    assert code == 1
    assert report["packing"]["survivesANode"] is False and "clickhouse" in report["packing"]["stranded"]
    assert "stack prod does not survive losing a node" in err and "a clickhouse pod (1 cores, 2Gi)" in err
    # The count the error asks for does survive, and one fewer does not.
    need = report["packing"]["nodesToSurvive"]
    assert need and need > 4 and f"budget.nodes to at least {need}" in err
    code, report, err = capacity(capsys, "prod", *old[1:], f"budget.nodes={need}")
    assert code == 0 and report["packing"]["survivesANode"], err
    code, report, _ = capacity(capsys, "prod", *old[1:], f"budget.nodes={need - 1}")
    assert report["packing"]["survivesANode"] is False
    # The committed budget: 3 nodes of 4 cores / 8Gi, one per zone, on regional disks.
    code, report, err = capacity(capsys, "prod")
    assert code == 0, err
    assert (report["budget"]["nodes"], report["budget"]["cpuPerNode"]) == (3, 4)
    assert report["packing"]["fits"] and report["packing"]["survivesANode"]
    # On zonal disks one node per zone strands each store whose node is lost.
    code, report, err = capacity(capsys, "prod", "kubernetes.regionalStorage=false")
    assert code == 1 and "bound to the lost node's zone by its volume, finds no node left in that zone" in err
    assert "kubernetes.regionalStorage" in err
    # Staging keeps the same promise.
    code, report, err = capacity(capsys, "staging")
    assert code == 0, err
    assert report["packing"]["survivesANode"]


def test_check_refuses_a_stack_that_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--stack", "prod", "--set", "services.portal.memory=999999Ti"]) == 1
    out = capsys.readouterr().out
    assert "Capacity (mandatory; python -m infra capacity --stack prod): FAIL" in out
    assert "one portal pod requests" in out and "FAILED: mandatory policies violated: capacity" in out
    # dev: advisory (a developer's machine), so printed but not failing.
    assert cli.main(["check", "--stack", "dev", "--set", "budget.memory=3Gi"]) == 0
    out = capsys.readouterr().out
    assert "Capacity (advisory; python -m infra capacity --stack dev): FAIL" in out


def test_zones_that_cannot_apply_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # More zones than nodes leaves a zone empty; Docker has one host, so no zones at all.
    assert cli.main(["capacity", "--stack", "prod", "--set", "budget.zones=4"]) == 2
    err = capsys.readouterr().err
    assert "'optiinfra:budget.zones': 4 zones for 3 nodes leaves a zone without a node" in err
    assert cli.main(["capacity", "--stack", "dev", "--set", "budget.zones=2"]) == 2
    assert "'optiinfra:budget.zones': 2 zones: a Docker stack runs on one host" in capsys.readouterr().err
