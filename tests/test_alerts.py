"""Alert and recording rules from the catalog, checked with Prometheus' own promtool.

`promtool check config` and `check rules` read the files the backends deliver; `promtool
test rules` runs unit tests of the alerts: input series written here by hand (labelled as
the generated scrape config labels them), each alert once with series that fire it and
once with series that do not. The expected summaries are written out here (so a template
that renders wrong fails); the runbook line is the catalog's declaration, passed verbatim.

promtool is built from github.com/prometheus/prometheus/cmd/promtool by scripts/tools.sh
(Go, once, cached outside the repository); where it cannot be had the promtool tests skip
with the reason, unless OPTIINFRA_REQUIRE_TOOLS=1 (CI), where that is a failure.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import offline
from infra.catalog import default_catalog
from infra.settings import ConfigError
from tests.conftest import render

from .tools import go_tool, unavailable

CATALOG_ALERTS = {a.name: a for a in default_catalog().all_alerts()}


def _tool() -> Path:
    tool = go_tool("promtool")
    if isinstance(tool, str):
        unavailable(tool)
    return tool


def generated(r: offline.Render, name: str) -> str:
    """A generated file by its base name, from a Docker upload or a Kubernetes ConfigMap."""
    for res in r.resources:
        for upload in res.inputs.get("uploads") or []:
            if Path(upload["file"]).name == name:
                return str(upload["content"])
        data = res.inputs.get("data") if res.type.endswith("ConfigMap") else None
        if data and name in data:
            return str(data[name])
    raise AssertionError(f"no generated file {name}")


def _rules(r: offline.Render) -> list[dict[str, Any]]:
    return [rule for g in yaml.safe_load(generated(r, "rules.yml"))["groups"] for rule in g["rules"]]


# ---- the rule file --------------------------------------------------------------------------

def test_every_alert_has_a_severity_summary_and_runbook() -> None:
    alerts = [x for x in _rules(render("prod")) if "alert" in x]
    assert {a["alert"] for a in alerts} == {
        "TargetDown", "ServiceDown", "MemoryNearLimit", "Restarting", "PrometheusRuleFailures", "PostgresDown",
        "PostgresConnectionsNearMax", "RedisDown", "RedisMemoryNearMaxmemory", "RedisRejectedConnections",
        "CeleryBacklog", "ClickHouseUnreachable", "ClickHouseFailedQueries", "AlertNotificationsFailing",
        "TargetMissing", "ServiceUnavailable", "ServiceSlow", "ProbeMissing", "Watchdog",
        "PostgresWalArchiveFailing", "PostgresWalArchiveBehind",
        # kube-state-metrics' (Kubernetes stacks only)
        "ReplicasShort", "CrashLooping", "ContainerRestarting", "BackupStale", "BackupFailed",
        # the public hosts' TLS probe (Kubernetes stacks with public hosts)
        "TLSCertificateExpiring", "TLSCertificateExpiryCritical", "TLSHandshakeFailing", "TLSProbeMissing",
        # the stores' size over their claims (Kubernetes stacks)
        "PostgresVolumeFilling", "PrometheusVolumeFilling",
        # the restore drills' (a Kubernetes stack with backups.store, as prod)
        "BackupDrillFailed", "BackupTooOld"}
    for a in alerts:
        assert a["labels"]["severity"] in ("critical", "warning") or a["alert"] == "Watchdog", a
        assert a["annotations"]["summary"] and a["annotations"]["runbook"], a


def test_memory_limits_are_recorded_per_scraped_service_from_the_targets_limits() -> None:
    def limits(stack: str, *sets: str) -> dict[str, str]:
        return {x["labels"]["service"]: x["expr"] for x in _rules(render(stack, *sets))
                if x.get("record") == "service:memory_limit_bytes"}
    dev, prod = limits("dev"), limits("prod")
    # Scraped: every service that declares metrics; on Kubernetes that includes the sign-in proxy
    # and kube-state-metrics (each 64Mi: twice its 32Mi request), which dev does not run.
    # So does the Pushgateway, which runs only with drills: a Kubernetes stack with a store, as prod.
    assert set(prod) == {n for n, s in default_catalog().services.items() if s.metrics}
    assert set(prod) - set(dev) == {"oauth2-proxy", "kube-state-metrics", "pushgateway"}
    assert prod["oauth2-proxy"] == prod["kube-state-metrics"] == "vector(67108864)"
    assert "postgres" not in dev
    # Limits are twice the request: Prometheus 300Mi (dev) and 512Mi (prod); Grafana's is written
    # in the catalog, 256Mi (its documented minimum, above twice its 100Mi request).
    assert dev["prometheus"] == "vector(629145600)" and prod["prometheus"] == "vector(1073741824)"
    assert dev["grafana"] == prod["grafana"] == "vector(268435456)"
    # A memory request set in stack config moves the limit (and so the alert) with it: 256Mi x 2.
    assert limits("dev", "services.grafana.memory=256Mi")["grafana"] == "vector(536870912)"


def test_thresholds_come_from_the_catalog_and_stack_config() -> None:
    def expr(r: offline.Render, name: str) -> str:
        return str(next(x["expr"] for x in _rules(r) if x.get("alert") == name))
    assert expr(render("dev"), "CeleryBacklog") == 'max(redis_key_size{job="redis-exporter", key="celery"}) > 500'
    tuned = render("dev", "alerting.thresholds.CeleryBacklog=1000", "alerting.thresholds.MemoryNearLimit=0.75")
    assert expr(tuned, "CeleryBacklog").endswith("> 1000")
    assert expr(tuned, "MemoryNearLimit") == "service:memory_usage:ratio > 0.75"


@pytest.mark.parametrize(("setting", "problem"), [
    ("alerting.thresholds.CeleryBacklogg=1", "'CeleryBacklogg' is not an alert with a threshold"),
    ("alerting.thresholds.TargetDown=1", "'TargetDown' is not an alert with a threshold"),
    ("alerting.thresholds.MemoryNearLimit=1.5", "1.5 is not a ratio"),
    ("alerting.thresholds.CeleryBacklog=-3", "-3.0 is negative"),
])
def test_a_bad_threshold_is_one_message_naming_the_key(setting: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        render("dev", setting)
    assert err.value.key == "optiinfra:" + setting.split("=")[0]
    assert err.value.problem == problem


def test_the_scrape_config_names_the_rule_file_the_backends_deliver() -> None:
    for stack in ("dev", "prod"):
        config = yaml.safe_load(generated(render(stack), "prometheus.yml"))
        assert config["rule_files"] == ["/etc/prometheus/rules.yml"]


def test_the_scrape_config_sends_alerts_to_the_notifier_by_its_address_on_each_target() -> None:
    """The `alerting` block names the catalog's notifier as every target is named: the
    container's network alias on Docker, the Service's cluster DNS name on Kubernetes."""
    notifier = next(s for s in default_catalog().services.values() if s.notifier)
    port = notifier.port("web").container
    for stack, host in (("dev", notifier.name),
                        ("prod", f"{notifier.name}.optiinfra-{notifier.tier.value}.svc.cluster.local")):
        config = yaml.safe_load(generated(render(stack), "prometheus.yml"))
        assert config["alerting"] == {"alertmanagers": [{"static_configs": [{"targets": [f"{host}:{port}"]}]}]}
    # Without the notifier there is nothing to send to, and the scraper cannot depend on it.
    with pytest.raises(ConfigError) as err:
        render("dev", f"services.{notifier.name}.enabled=false")
    assert err.value.key == f"optiinfra:services.{notifier.name}.enabled"


# ---- promtool -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["dev", "prod", "staging"])
def test_promtool_checks_the_config_and_the_rules(stack: str, tmp_path: Path) -> None:
    tool = _tool()
    r = render(stack)
    (tmp_path / "rules.yml").write_text(generated(r, "rules.yml"))
    config = yaml.safe_load(generated(r, "prometheus.yml"))
    # The one change: the rule file where this test wrote it, not where the container mounts it.
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run([str(tool), "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # dev: 11 limits + 2 ratios + 16 alerts + 11 absent scrape jobs + 18 probe jobs x 3 + the Watchdog
    #      = 11 + 2 + 16 + 11 + 54 + 1 = 95.
    # staging and prod (Kubernetes, with sso) add the sign-in proxy: its limit (+1), the absent()
    # rule of its scrape job (+1) and its probe job, probe-oauth2-proxy; Grafana, behind the proxy,
    # is not probed there (-1 probe job), so still 18 probe jobs x 3 (ServiceUnavailable,
    # ServiceSlow, ProbeMissing): 12 + 2 + 16 + 12 + 54 + 1 = 97.
    # They also run kube-state-metrics (Kubernetes only): its limit (+1), its 5 cluster-state
    # alerts, its scrape job's absent() (+1) and its probe job (+3): 97 + 10 = 107.
    # Their two public hosts (portal, grafana) each get a TLS probe job with 4 rules
    # (TLSCertificateExpiring, TLSCertificateExpiryCritical, TLSHandshakeFailing, TLSProbeMissing):
    # 107 + 8 = 115. And two volume alerts, on claims (Kubernetes only): PostgresVolumeFilling,
    # PrometheusVolumeFilling: 115 + 2 = 117.
    # Their backup store runs the Pushgateway (its limit +1, its scrape job's absent() +1, its probe
    # job +3: 122) and a drill each for PostgreSQL and Redis, each watched by BackupDrillFailed
    # and BackupTooOld: 122 + 4 = 126.
    expected = 95 if stack == "dev" else 126
    assert f"SUCCESS: {expected} rules found" in done.stdout
    done = subprocess.run([str(tool), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _series(metric: str, values: str, job: str, port: int, tier: str = "monitoring", **labels: str) -> dict[str, str]:
    """A series as the dev stack's scrape config labels it (Docker: `<service>:<port>`)."""
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return {"series": f'{metric}{{job="{job}", instance="{job}:{port}", service="{job}", tier="{tier}"{extra}}}',
            "values": values}


def _alert(name: str, summary: str, **labels: str) -> dict[str, Any]:
    a = CATALOG_ALERTS[name]
    return {"exp_labels": {"severity": a.severity, **labels},
            "exp_annotations": {"summary": summary, "runbook": a.runbook}}


PG, RD, CH, AM = "postgres-exporter", "redis-exporter", "clickhouse-exporter", "alertmanager"


def _cases() -> list[dict[str, Any]]:
    grafana = {"job": "grafana", "instance": "grafana:3000", "service": "grafana", "tier": "monitoring"}
    pg = {"job": PG, "instance": f"{PG}:9187", "tier": "monitoring"}
    rd = {"job": RD, "instance": f"{RD}:9121", "tier": "monitoring"}
    ch = {"job": CH, "instance": f"{CH}:9116", "tier": "monitoring"}
    return [
        {"interval": "1m", "input_series": [
            _series("up", "0x10", "grafana", 3000), _series("up", "1x10", "prometheus", 9090),
            _series("prometheus_rule_evaluation_failures_total", "3x10", "prometheus", 9090)],
         "alert_rule_test": [
             {"eval_time": "1m", "alertname": "TargetDown", "exp_alerts": []},  # pending: `for: 2m`
             {"eval_time": "10m", "alertname": "PrometheusRuleFailures", "exp_alerts": []},  # no new failures
             {"eval_time": "3m", "alertname": "TargetDown", "exp_alerts": [
                 _alert("TargetDown", "grafana (grafana:3000) does not answer its metrics scrape", **grafana)]},
             # grafana's one instance down: the service is down, which pages; prometheus is up.
             {"eval_time": "3m", "alertname": "ServiceDown", "exp_alerts": [
                 _alert("ServiceDown", "No instance of grafana answers its metrics scrape",
                        **{k: v for k, v in grafana.items() if k != "instance"})]}]},
        # Two instances of a service, one down: that one is a warning, the service is not down.
        {"interval": "1m", "input_series": [
            _series("up", "0x10", "orchestrator", 8080, "core") | {
                "series": 'up{job="orchestrator", instance="10.0.0.1:8080", service="orchestrator", tier="core"}'},
            _series("up", "1x10", "orchestrator", 8080, "core") | {
                "series": 'up{job="orchestrator", instance="10.0.0.2:8080", service="orchestrator", tier="core"}'}],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "ServiceDown", "exp_alerts": []},
             {"eval_time": "5m", "alertname": "TargetDown", "exp_alerts": [
                 _alert("TargetDown", "orchestrator (10.0.0.1:8080) does not answer its metrics scrape",
                        job="orchestrator", instance="10.0.0.1:8080", service="orchestrator", tier="core")]}]},
        # Grafana's limit on dev is 256Mi (268435456 bytes): 95% fires, Prometheus at 16% of 600Mi does not.
        {"interval": "1m", "input_series": [
            _series("process_resident_memory_bytes", "255013684x15", "grafana", 3000),
            _series("process_resident_memory_bytes", "100000000x15", "prometheus", 9090)],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "MemoryNearLimit", "exp_alerts": []},
             {"eval_time": "12m", "alertname": "MemoryNearLimit", "exp_alerts": [
                 _alert("MemoryNearLimit", "grafana (grafana:3000) uses 95% of its memory limit",
                        service="grafana", tier="monitoring", instance="grafana:3000")]}]},
        {"interval": "1m", "input_series": [
            _series("process_start_time_seconds", "100 160 220 280 340 340", "cost-agent", 8001, "agents"),
            _series("process_start_time_seconds", "100x5", "resource-agent", 8003, "agents")],
         "alert_rule_test": [
             {"eval_time": "2m", "alertname": "Restarting", "exp_alerts": []},  # two restarts: not yet
             {"eval_time": "5m", "alertname": "Restarting", "exp_alerts": [
                 _alert("Restarting", "cost-agent (cost-agent:8001) restarted 4 times in 30 minutes",
                        job="cost-agent", instance="cost-agent:8001", service="cost-agent", tier="agents")]}]},
        # 90 of 100 connections fires (above 0.8); 50 of 100 on the second exporter instance does not.
        {"interval": "1m", "input_series": [
            _series("pg_stat_activity_count", "60x10", PG, 9187, state="active"),
            _series("pg_stat_activity_count", "30x10", PG, 9187, state="idle"),
            _series("pg_settings_max_connections", "100x10", PG, 9187),
            _series("pg_up", "1x10", PG, 9187)],
         "alert_rule_test": [
             {"eval_time": "3m", "alertname": "PostgresConnectionsNearMax", "exp_alerts": []},
             {"eval_time": "7m", "alertname": "PostgresConnectionsNearMax", "exp_alerts": [
                 _alert("PostgresConnectionsNearMax", "PostgreSQL uses 90% of max_connections",
                        instance=f"{PG}:9187", service="postgres")]},
             {"eval_time": "7m", "alertname": "PostgresDown", "exp_alerts": []}]},
        {"interval": "1m", "input_series": [
            _series("pg_stat_activity_count", "50x10", PG, 9187, state="active"),
            _series("pg_settings_max_connections", "100x10", PG, 9187),
            _series("pg_up", "0x10", PG, 9187)],
         "alert_rule_test": [
             {"eval_time": "8m", "alertname": "PostgresConnectionsNearMax", "exp_alerts": []},
             {"eval_time": "2m", "alertname": "PostgresDown", "exp_alerts": [
                 _alert("PostgresDown", f"PostgreSQL does not answer its exporter ({PG}:9187)",
                        **pg, service="postgres")]}]},
        # Redis at 90% of maxmemory fires; with no maxmemory (0) the ratio is undefined and nothing fires.
        {"interval": "1m", "input_series": [
            _series("redis_memory_used_bytes", "90x10", RD, 9121),
            _series("redis_memory_max_bytes", "100x10", RD, 9121),
            _series("redis_rejected_connections_total", "0 0 0 3 5 5 5 5 5 5 5", RD, 9121),
            _series("redis_key_size", "600x20", RD, 9121, db="db0", key="celery"),
            _series("redis_up", "1x20", RD, 9121)],
         "alert_rule_test": [
             {"eval_time": "6m", "alertname": "RedisMemoryNearMaxmemory", "exp_alerts": [
                 _alert("RedisMemoryNearMaxmemory", "Redis uses 90% of maxmemory", **rd, service="redis")]},
             {"eval_time": "4m", "alertname": "RedisRejectedConnections", "exp_alerts": [
                 _alert("RedisRejectedConnections", "Redis rejected 5 connections in 5 minutes (maxclients reached)",
                        **rd, service="redis")]},
             {"eval_time": "10m", "alertname": "RedisRejectedConnections", "exp_alerts": []},  # none in 5 minutes
             {"eval_time": "10m", "alertname": "CeleryBacklog", "exp_alerts": []},  # pending: `for: 15m`
             {"eval_time": "16m", "alertname": "CeleryBacklog", "exp_alerts": [
                 _alert("CeleryBacklog", "600 Celery tasks wait in the queue", service="data-collector-worker")]},
             {"eval_time": "16m", "alertname": "RedisDown", "exp_alerts": []}]},
        {"interval": "1m", "input_series": [
            _series("redis_memory_used_bytes", "90x10", RD, 9121),
            _series("redis_memory_max_bytes", "0x10", RD, 9121),
            _series("redis_key_size", "20x20", RD, 9121, db="db0", key="celery"),
            _series("redis_up", "0x20", RD, 9121)],
         "alert_rule_test": [
             {"eval_time": "6m", "alertname": "RedisMemoryNearMaxmemory", "exp_alerts": []},
             {"eval_time": "16m", "alertname": "CeleryBacklog", "exp_alerts": []},
             {"eval_time": "2m", "alertname": "RedisDown", "exp_alerts": [
                 _alert("RedisDown", f"Redis does not answer its exporter ({RD}:9121)", **rd, service="redis")]}]},
        # 12 failed queries a minute (0.2/s) fires above 0.1/s; the exporter's own queries of ClickHouse fail.
        {"interval": "1m", "input_series": [
            _series("clickhouse_failed_query_total", "0+12x10", CH, 9116),
            _series("clickhouse_exporter_scrape_failures_total", "0 0 1 2 3 4 5 6 7 8 9 9 9 9 9 9 9", CH, 9116)],
         "alert_rule_test": [
             {"eval_time": "3m", "alertname": "ClickHouseFailedQueries", "exp_alerts": []},
             {"eval_time": "8m", "alertname": "ClickHouseFailedQueries", "exp_alerts": [
                 _alert("ClickHouseFailedQueries", "ClickHouse fails 0.20 queries a second",
                        **ch, service="clickhouse")]},
             {"eval_time": "7m", "alertname": "ClickHouseUnreachable", "exp_alerts": [
                 _alert("ClickHouseUnreachable", "The exporter failed to query ClickHouse 5 times in 5 minutes",
                        **ch, service="clickhouse")]},
             {"eval_time": "16m", "alertname": "ClickHouseUnreachable", "exp_alerts": []}]},
        {"interval": "1m", "input_series": [
            _series("clickhouse_failed_query_total", "0+3x10", CH, 9116),
            _series("prometheus_rule_evaluation_failures_total", "0+1x10", "prometheus", 9090,
                    rule_group="/etc/prometheus/rules.yml;optiinfra-alerts")],
         "alert_rule_test": [
             {"eval_time": "8m", "alertname": "ClickHouseFailedQueries", "exp_alerts": []},  # 0.05/s
             {"eval_time": "5m", "alertname": "PrometheusRuleFailures", "exp_alerts": [
                 _alert("PrometheusRuleFailures", "Prometheus failed to evaluate rules 5 times in 10 minutes",
                        job="prometheus", instance="prometheus:9090", service="prometheus", tier="monitoring",
                        rule_group="/etc/prometheus/rules.yml;optiinfra-alerts")]}]},
        # Three failed deliveries to the webhook within 15 minutes fire; none in the 15 after do not.
        {"interval": "1m", "input_series": [
            _series("alertmanager_notifications_failed_total", "0x5 3x30", AM, 9093, integration="webhook")],
         "alert_rule_test": [
             {"eval_time": "10m", "alertname": "AlertNotificationsFailing", "exp_alerts": [
                 _alert("AlertNotificationsFailing",
                        "Alertmanager failed to deliver 3 notifications to webhook in 15 minutes",
                        job=AM, instance=f"{AM}:9093", service=AM, tier="monitoring", integration="webhook")]},
             {"eval_time": "30m", "alertname": "AlertNotificationsFailing", "exp_alerts": []}]},
        *_backup_cases(),
    ]


def _backup_cases() -> list[dict[str, Any]]:
    """WAL archiving (postgres_exporter's pg_stat_archiver)."""
    pg = {"job": PG, "instance": f"{PG}:9187", "tier": "monitoring", "service": "postgres"}
    return [
        # Archiving healthy: a segment a minute, no failures. Then one failing: failures counted.
        {"interval": "1m", "input_series": [
            _series("pg_stat_archiver_failed_count", "0x20", PG, 9187),
            _series("pg_stat_archiver_last_archive_age", "30x20", PG, 9187)],
         "alert_rule_test": [
             {"eval_time": "15m", "alertname": "PostgresWalArchiveFailing", "exp_alerts": []},
             {"eval_time": "15m", "alertname": "PostgresWalArchiveBehind", "exp_alerts": []}]},
        {"interval": "1m", "input_series": [
            _series("pg_stat_archiver_failed_count", "0 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14", PG, 9187),
            # The last archived segment ages a minute a minute: past 10 minutes at 11m, firing 5m later.
            _series("pg_stat_archiver_last_archive_age", "0+60x25", PG, 9187)],
         "alert_rule_test": [
             {"eval_time": "9m", "alertname": "PostgresWalArchiveFailing", "exp_alerts": [
                 _alert("PostgresWalArchiveFailing", "PostgreSQL failed to archive WAL 8 times in 15 minutes",
                        severity="critical", **pg)]},
             {"eval_time": "20m", "alertname": "PostgresWalArchiveBehind", "exp_alerts": [
                 _alert("PostgresWalArchiveBehind", "PostgreSQL's last archived WAL segment is 20m 0s old",
                        **pg)]}]},
    ]


# The dev stack's scrape jobs and probe jobs, written out (the catalog's scraped services, and
# every service with a port, probed by the blackbox exporter).
SCRAPE_JOBS = ("prometheus", "alertmanager", "grafana", PG, RD, CH, "blackbox-exporter", "cost-agent",
               "performance-agent", "resource-agent", "application-agent")
PROBED = {"postgres": "databases", "clickhouse": "databases", "redis": "databases", "qdrant": "databases",
          "prometheus": "monitoring", "alertmanager": "monitoring", "grafana": "monitoring", "flower": "monitoring",
          PG: "monitoring", RD: "monitoring", CH: "monitoring", "orchestrator": "core", "data-collector": "core",
          "cost-agent": "agents", "performance-agent": "agents", "resource-agent": "agents",
          "application-agent": "agents", "portal": "frontend"}


def _probe(metric: str, values: str, service: str) -> dict[str, str]:
    """A probe series as the dev stack's probe job labels it (instance: the probed target)."""
    return {"series": f'{metric}{{job="probe-{service}", instance="{service}-target", service="{service}", '
                      f'tier="{PROBED[service]}"}}', "values": values}


def _job_cases() -> list[dict[str, Any]]:
    """absent() on every scrape and probe job, the probes' failing and slow alerts, the Watchdog."""
    missing, unprobed = "cost-agent", "portal"
    up = [_series("up", "1x20", job, 1) for job in SCRAPE_JOBS if job != missing]
    success = [_probe("probe_success", "0x20" if s == "orchestrator" else "1x20", s) for s in PROBED if s != unprobed]
    duration = [_probe("probe_duration_seconds", "2x20" if s == "data-collector" else "0.2x20", s)
                for s in PROBED if s != unprobed]
    orch = {"job": "probe-orchestrator", "instance": "orchestrator-target", "service": "orchestrator", "tier": "core"}
    coll = {"job": "probe-data-collector", "instance": "data-collector-target", "service": "data-collector",
            "tier": "core"}
    return [
        {"interval": "1m", "input_series": up + success + duration, "alert_rule_test": [
            {"eval_time": "3m", "alertname": "TargetMissing", "exp_alerts": []},  # pending: `for: 5m`
            {"eval_time": "7m", "alertname": "TargetMissing", "exp_alerts": [
                _alert("TargetMissing", f"The scrape job {missing} has no target: no instance of it is running",
                       job=missing, service=missing)]},
            {"eval_time": "5m", "alertname": "ProbeMissing", "exp_alerts": []},  # pending: `for: 10m`
            {"eval_time": "12m", "alertname": "ProbeMissing", "exp_alerts": [
                _alert("ProbeMissing", f"No probe result from probe-{unprobed}: the prober is not scraped or the "
                       "probe job is gone", job=f"probe-{unprobed}", service=unprobed)]},
            {"eval_time": "3m", "alertname": "ServiceUnavailable", "exp_alerts": []},  # pending: `for: 5m`
            {"eval_time": "7m", "alertname": "ServiceUnavailable", "exp_alerts": [
                _alert("ServiceUnavailable", "orchestrator fails its health check from the prober "
                       "(orchestrator-target)", **orch)]},
            {"eval_time": "5m", "alertname": "ServiceSlow", "exp_alerts": []},  # pending: `for: 10m`
            {"eval_time": "12m", "alertname": "ServiceSlow", "exp_alerts": [
                _alert("ServiceSlow", "data-collector takes 2s to answer its health check", **coll)]},
            {"eval_time": "1m", "alertname": "Watchdog", "exp_alerts": [
                _alert("Watchdog",
                       "Always firing: the alerting pipeline (Prometheus, its rules, Alertmanager) works")]},
        ]},
        # Every job present and every probe passing: none of them fires.
        {"interval": "1m", "input_series": [
            *(_series("up", "1x20", job, 1) for job in SCRAPE_JOBS),
            *(_probe("probe_success", "1x20", s) for s in PROBED),
            *(_probe("probe_duration_seconds", "0.2x20", s) for s in PROBED)], "alert_rule_test": [
            {"eval_time": "15m", "alertname": name, "exp_alerts": []}
            for name in ("TargetMissing", "ProbeMissing", "ServiceUnavailable", "ServiceSlow")]},
    ]


def test_promtool_unit_tests_of_the_alerts(tmp_path: Path) -> None:
    tool = _tool()
    # dev's rules for the alerts every stack has; prod's for the Kubernetes-only ones.
    runs = {"dev": _cases() + _job_cases(), "prod": _ksm_cases() + _tls_cases() + _volume_cases()}
    cases = [c for run in runs.values() for c in run]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in cases for t in case["alert_rule_test"] if not t["exp_alerts"]}
    # The drills' alerts exist only on a stack with drills (a store): tests/test_drill_alerts.py.
    drills = {a.name for a in default_catalog().drill_alerts}
    assert fired == set(CATALOG_ALERTS) - drills, "every catalog alert is tested firing"
    # ... and quiet, but the Watchdog, which always fires: its silence is what the heartbeat
    # service outside notices.
    assert quiet == set(CATALOG_ALERTS) - {"Watchdog"} - drills, "every catalog alert is tested quiet"
    for stack, run in runs.items():
        (tmp_path / f"{stack}.rules.yml").write_text(generated(render(stack), "rules.yml"))
        tests = {"rule_files": [f"{stack}.rules.yml"], "evaluation_interval": "1m", "tests": run}
        (tmp_path / f"{stack}.test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
        done = subprocess.run([str(tool), "test", "rules", f"{stack}.test.yml"],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, stack + ": " + done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


KSM = {"job": "kube-state-metrics", "instance": "kube-state-metrics:8080", "service": "kube-state-metrics",
       "tier": "monitoring"}


def _ksm(metric: str, values: str, **labels: str) -> dict[str, str]:
    """A kube-state-metrics series as its scrape job labels it, with the object's own labels."""
    return {"series": metric + "{" + ", ".join(f'{k}="{v}"' for k, v in {**KSM, **labels}.items()) + "}",
            "values": values}


def _ksm_cases() -> list[dict[str, Any]]:
    """The cluster-state alerts (prod's rules: kube-state-metrics runs on Kubernetes only)."""
    front, mon, db = "optiinfra-frontend", "optiinfra-monitoring", "optiinfra-databases"
    portal = {"namespace": front, "deployment": "portal"}
    crash = {"namespace": mon, "pod": "grafana-5d8f-x", "container": "grafana"}
    return [
        # The portal one ready of two for 15 minutes; PostgreSQL's one of one.
        {"interval": "1m", "input_series": [
            _ksm("kube_deployment_spec_replicas", "2x15", **portal),
            _ksm("kube_deployment_status_replicas_ready", "1x15", **portal),
            _ksm("kube_statefulset_replicas", "1x15", namespace=db, statefulset="postgres"),
            _ksm("kube_statefulset_status_replicas_ready", "1x15", namespace=db, statefulset="postgres")],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "ReplicasShort", "exp_alerts": []},  # pending: `for: 10m`
             {"eval_time": "12m", "alertname": "ReplicasShort", "exp_alerts": [
                 _alert("ReplicasShort", f"{front}/portal is 1 ready replicas short of desired", **KSM, **portal)]}]},
        {"interval": "1m", "input_series": [
            _ksm("kube_statefulset_replicas", "1x15", namespace=db, statefulset="postgres"),
            _ksm("kube_statefulset_status_replicas_ready", "1x15", namespace=db, statefulset="postgres")],
         "alert_rule_test": [{"eval_time": "12m", "alertname": "ReplicasShort", "exp_alerts": []}]},
        # Grafana waits in CrashLoopBackOff and restarts 3 times in 30 minutes; Prometheus waits
        # for nothing and restarted twice (not above 2).
        {"interval": "1m", "input_series": [
            _ksm("kube_pod_container_status_waiting_reason", "1x10", reason="CrashLoopBackOff", **crash),
            _ksm("kube_pod_container_status_waiting_reason", "0x10", reason="CrashLoopBackOff",
                 namespace=mon, pod="prometheus-0", container="prometheus"),
            _ksm("kube_pod_container_status_restarts_total", "0 0 1 1 2 2 3 3 3 3 3", **crash),
            _ksm("kube_pod_container_status_restarts_total", "5 5 6 6 7 7 7 7 7 7 7",
                 namespace=mon, pod="prometheus-0", container="prometheus")],
         "alert_rule_test": [
             {"eval_time": "3m", "alertname": "CrashLooping", "exp_alerts": []},  # pending: `for: 5m`
             {"eval_time": "6m", "alertname": "CrashLooping", "exp_alerts": [
                 _alert("CrashLooping", f"{mon}/grafana-5d8f-x (grafana) is in CrashLoopBackOff",
                        service=KSM["service"], **crash)]},
             {"eval_time": "4m", "alertname": "ContainerRestarting", "exp_alerts": []},  # two so far
             {"eval_time": "8m", "alertname": "ContainerRestarting", "exp_alerts": [
                 _alert("ContainerRestarting", f"{mon}/grafana-5d8f-x (grafana) restarted 3 times in 30 minutes",
                        **KSM, **crash)]}]},
        *_ksm_backup_cases(db),
    ]


def _ksm_backup_cases(db: str) -> list[dict[str, Any]]:
    """Backup CronJobs (daily: stale past 26h) and a failed backup Job."""
    return [
        # PostgreSQL's backup last succeeded at 0 and never since; Redis' never succeeded
        # (created at 0); ClickHouse's succeeds all the time. Samples every 5 minutes for 30 hours.
        {"interval": "5m", "input_series": [
            _ksm("kube_cronjob_status_last_successful_time", "0x360", namespace=db, cronjob="postgres-backup"),
            _ksm("kube_cronjob_created", "0x360", namespace=db, cronjob="postgres-backup"),
            _ksm("kube_cronjob_created", "0x360", namespace=db, cronjob="redis-backup"),
            _ksm("kube_cronjob_created", "0x360", namespace=db, cronjob="clickhouse-backup"),
            _ksm("kube_cronjob_status_last_successful_time", "0+300x360", namespace=db,
                 cronjob="clickhouse-backup")],
         "alert_rule_test": [
             {"eval_time": "25h", "alertname": "BackupStale", "exp_alerts": []},  # 25h: within a day and 2h
             {"eval_time": "27h", "alertname": "BackupStale", "exp_alerts": [
                 _alert("BackupStale", f"The backup {db}/postgres-backup has not succeeded for 1d 3h 0m 0s",
                        **KSM, namespace=db, cronjob="postgres-backup"),
                 _alert("BackupStale", f"The backup {db}/redis-backup has not succeeded for 1d 3h 0m 0s",
                        **KSM, namespace=db, cronjob="redis-backup")]}]},
        # A failed Job of the PostgreSQL backup CronJob fires; a failed Job no backup CronJob owns
        # (a credential rotation) and a backup Job that did not fail do not.
        {"interval": "1m", "input_series": [
            _ksm("kube_job_failed", "1x5", namespace=db, job_name="postgres-backup-29440000", condition="true"),
            _ksm("kube_job_owner", "1x5", namespace=db, job_name="postgres-backup-29440000", owner_kind="CronJob",
                 owner_name="postgres-backup", owner_is_controller="true"),
            _ksm("kube_job_failed", "1x5", namespace=db, job_name="postgres-rotate", condition="true"),
            _ksm("kube_job_owner", "1x5", namespace=db, job_name="postgres-rotate", owner_kind="",
                 owner_name="", owner_is_controller=""),
            _ksm("kube_job_failed", "0x5", namespace=db, job_name="redis-backup-29440000", condition="true"),
            _ksm("kube_job_owner", "1x5", namespace=db, job_name="redis-backup-29440000", owner_kind="CronJob",
                 owner_name="redis-backup", owner_is_controller="true")],
         "alert_rule_test": [
             {"eval_time": "2m", "alertname": "BackupFailed", "exp_alerts": [
                 _alert("BackupFailed", f"The backup job {db}/postgres-backup-29440000 (postgres-backup) failed",
                        **KSM, namespace=db, job_name="postgres-backup-29440000", condition="true",
                        owner_name="postgres-backup")]}]},
        {"interval": "1m", "input_series": [
            _ksm("kube_job_failed", "0x5", namespace=db, job_name="redis-backup-29440000", condition="true"),
            _ksm("kube_job_owner", "1x5", namespace=db, job_name="redis-backup-29440000", owner_kind="CronJob",
                 owner_name="redis-backup", owner_is_controller="true")],
         "alert_rule_test": [{"eval_time": "2m", "alertname": "BackupFailed", "exp_alerts": []}]},
    ]


def _tls(metric: str, values: str, service: str, tier: str) -> dict[str, str]:
    """A TLS probe series as prod's `tls-<service>` job labels it (instance: the public host:443)."""
    return {"series": f'{metric}{{job="tls-{service}", instance="{service}.optiinfra.example.com:443", '
                      f'service="{service}", tier="{tier}"}}', "values": values}


def _tls_labels(service: str, tier: str) -> dict[str, str]:
    return {"job": f"tls-{service}", "instance": f"{service}.optiinfra.example.com:443", "service": service,
            "tier": tier}


def _tls_cases() -> list[dict[str, Any]]:
    """The public hosts' certificates (prod's rules). promtool's clock starts at 0, so an expiry
    of N days is the value N * 86400; at 15m (900 s) N days less 900 s are left."""
    portal, grafana = _tls_labels("portal", "frontend"), _tls_labels("grafana", "monitoring")
    return [
        # The portal's certificate expires in 10 days (warning only); Grafana's in 2 (warning and critical:
        # Alertmanager's inhibit rule, not the rules, keeps only the critical one).
        {"interval": "1m", "input_series": [
            _tls("probe_ssl_earliest_cert_expiry", "864000x20", "portal", "frontend"),
            _tls("probe_ssl_earliest_cert_expiry", "172800x20", "grafana", "monitoring"),
            _tls("probe_success", "1x20", "portal", "frontend"),
            _tls("probe_success", "1x20", "grafana", "monitoring")],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "TLSCertificateExpiring", "exp_alerts": []},  # pending: `for: 10m`
             {"eval_time": "15m", "alertname": "TLSCertificateExpiring", "exp_alerts": [
                 # (172800 - 900) / 86400 = 1.99; (864000 - 900) / 86400 = 9.99
                 _alert("TLSCertificateExpiring", "The certificate of grafana.optiinfra.example.com:443 expires "
                        "in 2.0 days", **grafana),
                 _alert("TLSCertificateExpiring", "The certificate of portal.optiinfra.example.com:443 expires "
                        "in 10.0 days", **portal)]},
             {"eval_time": "15m", "alertname": "TLSCertificateExpiryCritical", "exp_alerts": [
                 _alert("TLSCertificateExpiryCritical", "The certificate of grafana.optiinfra.example.com:443 "
                        "expires in 2.0 days", **grafana)]},
             {"eval_time": "15m", "alertname": "TLSHandshakeFailing", "exp_alerts": []},
             {"eval_time": "15m", "alertname": "TLSProbeMissing", "exp_alerts": []}]},
        # 30 days left: quiet. The handshake with Grafana's host fails (no expiry series then).
        {"interval": "1m", "input_series": [
            _tls("probe_ssl_earliest_cert_expiry", "2592000x20", "portal", "frontend"),
            _tls("probe_success", "1x20", "portal", "frontend"),
            _tls("probe_success", "0x20", "grafana", "monitoring")],
         "alert_rule_test": [
             {"eval_time": "15m", "alertname": "TLSCertificateExpiring", "exp_alerts": []},
             {"eval_time": "15m", "alertname": "TLSCertificateExpiryCritical", "exp_alerts": []},
             {"eval_time": "3m", "alertname": "TLSHandshakeFailing", "exp_alerts": []},  # pending: `for: 5m`
             {"eval_time": "7m", "alertname": "TLSHandshakeFailing", "exp_alerts": [
                 _alert("TLSHandshakeFailing", "The TLS handshake with grafana.optiinfra.example.com:443 fails",
                        **grafana)]}]},
        # Grafana's host has no probe result at all (its job lost): only the absent() alert can tell.
        {"interval": "1m", "input_series": [
            _tls("probe_ssl_earliest_cert_expiry", "2592000x20", "portal", "frontend"),
            _tls("probe_success", "1x20", "portal", "frontend")],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "TLSProbeMissing", "exp_alerts": []},  # pending: `for: 10m`
             {"eval_time": "12m", "alertname": "TLSProbeMissing", "exp_alerts": [
                 _alert("TLSProbeMissing", "No TLS probe result from tls-grafana: the prober is not scraped or the "
                        "probe job is gone", job="tls-grafana", service="grafana")]}]},
    ]


GIB = 1024 ** 3


def _volume_cases() -> list[dict[str, Any]]:
    """The stores' size over their claims: prod's rules, where Pulumi.prod.yaml sets
    kubernetes.storage.postgres and .prometheus to 20Gi (21474836480 bytes) each."""
    pg = {"instance": f"{PG}:9187", "service": "postgres"}
    prom = {"job": "prometheus", "instance": "prometheus:9090", "service": "prometheus", "tier": "monitoring"}
    return [
        # PostgreSQL: 10Gi + 7Gi = 17Gi of 20Gi = 85% (over 0.8). Prometheus: 16 + 2 + 1 = 19Gi = 95% (over 0.9).
        {"interval": "1m", "input_series": [
            _series("pg_database_size_bytes", f"{10 * GIB}x20", PG, 9187, datname="optiinfra"),
            _series("pg_database_size_bytes", f"{7 * GIB}x20", PG, 9187, datname="postgres"),
            _series("prometheus_tsdb_storage_blocks_bytes", f"{16 * GIB}x20", "prometheus", 9090),
            _series("prometheus_tsdb_wal_storage_size_bytes", f"{2 * GIB}x20", "prometheus", 9090),
            _series("prometheus_tsdb_head_chunks_storage_size_bytes", f"{1 * GIB}x20", "prometheus", 9090)],
         "alert_rule_test": [
             {"eval_time": "10m", "alertname": "PostgresVolumeFilling", "exp_alerts": []},  # pending: `for: 15m`
             {"eval_time": "16m", "alertname": "PostgresVolumeFilling", "exp_alerts": [
                 _alert("PostgresVolumeFilling", "PostgreSQL's databases fill 85% of its volume", **pg)]},
             {"eval_time": "16m", "alertname": "PrometheusVolumeFilling", "exp_alerts": [
                 _alert("PrometheusVolumeFilling", "Prometheus' data fills 95% of its volume", **prom)]}]},
        # 15Gi of 20Gi (75%); Prometheus at 16Gi (80%, where its size retention holds it): both quiet.
        {"interval": "1m", "input_series": [
            _series("pg_database_size_bytes", f"{10 * GIB}x20", PG, 9187, datname="optiinfra"),
            _series("pg_database_size_bytes", f"{5 * GIB}x20", PG, 9187, datname="postgres"),
            _series("prometheus_tsdb_storage_blocks_bytes", f"{14 * GIB}x20", "prometheus", 9090),
            _series("prometheus_tsdb_wal_storage_size_bytes", f"{1 * GIB}x20", "prometheus", 9090),
            _series("prometheus_tsdb_head_chunks_storage_size_bytes", f"{1 * GIB}x20", "prometheus", 9090)],
         "alert_rule_test": [
             {"eval_time": "16m", "alertname": "PostgresVolumeFilling", "exp_alerts": []},
             {"eval_time": "16m", "alertname": "PrometheusVolumeFilling", "exp_alerts": []}]},
    ]


def test_the_volume_alerts_read_the_claim_size_from_the_stack() -> None:
    def expr(r: offline.Render, name: str) -> str:
        return str(next(x["expr"] for x in _rules(r) if x.get("alert") == name))
    # Pulumi.prod.yaml: postgres 20Gi = 20 * 1024^3 = 21474836480 bytes.
    assert expr(render("prod"), "PostgresVolumeFilling") == (
        'sum by (instance) (pg_database_size_bytes{job="postgres-exporter"}) / 21474836480 > 0.8')
    # 40Gi = 42949672960 bytes: the claim moves the rule; Prometheus' claim (20Gi) stays.
    grown = render("prod", "kubernetes.storage.postgres=40Gi")
    assert expr(grown, "PostgresVolumeFilling").endswith(" / 42949672960 > 0.8")
    assert expr(grown, "PrometheusVolumeFilling").endswith(" / 21474836480 > 0.9")
    assert expr(render("prod", "alerting.thresholds.PostgresVolumeFilling=0.7"),
                "PostgresVolumeFilling").endswith(" / 21474836480 > 0.7")
    # Docker: a volume has no size of its own (it grows into the host's disk): no volume alert.
    assert not [x for x in _rules(render("dev")) if "VolumeFilling" in str(x.get("alert", ""))]


def test_tls_thresholds_are_days_set_per_stack() -> None:
    def expr(r: offline.Render, name: str) -> str:
        return str(next(x["expr"] for x in _rules(r) if x.get("alert") == name))
    assert expr(render("prod"), "TLSCertificateExpiring") == (
        '(probe_ssl_earliest_cert_expiry{job="tls-grafana"} - time()) / 86400 < 14')
    tuned = render("prod", "alerting.thresholds.TLSCertificateExpiring=30",
                   "alerting.thresholds.TLSCertificateExpiryCritical=7")
    assert expr(tuned, "TLSCertificateExpiring").endswith("< 30")
    assert expr(tuned, "TLSCertificateExpiryCritical").endswith("< 7")
    assert not [x for x in _rules(render("dev")) if str(x.get("alert", "")).startswith("TLS")]  # Docker: no host


def test_promtool_unit_tests_fail_when_an_alert_does_not_fire_as_expected(tmp_path: Path) -> None:
    """The harness itself can fail: a series below the threshold, expected to fire, is a failure."""
    tool = _tool()
    (tmp_path / "rules.yml").write_text(generated(render("dev"), "rules.yml"))
    case = {"interval": "1m", "input_series": [_series("up", "1x10", "grafana", 3000)], "alert_rule_test": [
        {"eval_time": "3m", "alertname": "TargetDown", "exp_alerts": [
            _alert("TargetDown", "grafana (grafana:3000) does not answer its metrics scrape",
                   job="grafana", instance="grafana:3000", service="grafana", tier="monitoring")]}]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "tests": [case]}))
    done = subprocess.run([str(tool), "test", "rules", "t.yml"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "TargetDown" in done.stdout + done.stderr
