"""Grafana's provisioned dashboards and its embedding access, as both backends deliver them.

Each dashboard is checked for what file provisioning needs (a UID, a title, panels with a
grid position, a datasource by the provisioned UID), and every query for the metrics it
names: each must be one some scraped service exposes (the catalog's `exposes`, which
includes the client libraries' process metrics), `up`, or a series the rule file records.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import offline
from tests.conftest import render
from tests.test_alerts import generated

TIERS = ("databases", "monitoring", "core", "agents", "frontend")
DASHBOARDS = ("overview.json", *(f"{t}.json" for t in TIERS))
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, strings, ranges, grouping
    clauses, functions and keywords removed)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_metric_names_reads_promql() -> None:
    assert metric_names('sum by (instance) (a{job="x"}) / on (instance) group_left () b:c') == {"a", "b:c"}
    assert metric_names('rate(x_total{job="j"}[5m]) > 0.1') == {"x_total"}


def _known(r: offline.Render) -> set[str]:
    exposed = {m for e in r.model.scrape_targets() for m in e.service.exposes}
    recorded = {x["record"] for g in yaml.safe_load(generated(r, "rules.yml"))["groups"] for x in g["rules"]
                if "record" in x}
    return exposed | recorded | {"up"}


def _boards(r: offline.Render) -> dict[str, dict[str, Any]]:
    return {name: json.loads(generated(r, name)) for name in DASHBOARDS}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dashboards_have_what_provisioning_needs(stack: str) -> None:
    r = render(stack)
    boards = _boards(r)
    assert {b["uid"] for b in boards.values()} == {"optiinfra-overview", *(f"optiinfra-{t}" for t in TIERS)}
    assert boards["overview.json"]["title"] == "OptiInfra · Overview"
    assert boards["databases.json"]["title"] == "OptiInfra · Databases"
    source = yaml.safe_load(generated(r, "prometheus.yaml"))["datasources"][0]
    for name, board in boards.items():
        assert board["editable"] is False and board["schemaVersion"] >= 36, name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in board["panels"]:
            assert {"h", "w", "x", "y"} <= set(p["gridPos"]), (name, p)
            if p["type"] in ("row", "text"):
                continue
            refs = [p["datasource"], *(t["datasource"] for t in p["targets"])]
            assert all(ref == {"type": source["type"], "uid": source["uid"]} for ref in refs), (name, p)
    provider = yaml.safe_load(generated(r, "optiinfra.yaml"))["providers"]
    assert [p["options"]["path"] for p in provider] == ["/etc/grafana/dashboards"]
    assert all(p["type"] == "file" and p["allowUiUpdates"] is False for p in provider)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_queries_name_only_metrics_a_scraped_job_exposes_or_a_rule_records(stack: str) -> None:
    r = render(stack)
    known = _known(r)
    exprs = [t["expr"] for b in _boards(r).values() for p in b["panels"] for t in p.get("targets", [])]
    exprs += [x["expr"] for g in yaml.safe_load(generated(r, "rules.yml"))["groups"] for x in g["rules"]]
    assert len(exprs) > 30
    unknown = {(m, e) for e in exprs for m in metric_names(e) if m not in known}
    assert not unknown


def test_the_check_catches_a_metric_nobody_exposes() -> None:
    known = _known(render("dev"))
    assert metric_names("pg_stat_activity_count / pg_settings_max_connection") - known == {
        "pg_settings_max_connection"}


def test_the_overview_has_each_tier_and_the_exporters_health() -> None:
    board = _boards(render("prod"))["overview.json"]
    assert [p["title"] for p in board["panels"] if p["type"] == "row"] == list(TIERS)
    exprs = {t["expr"] for p in board["panels"] for t in p.get("targets", [])}
    assert 'pg_up{job="postgres-exporter"}' in exprs and 'redis_up{job="redis-exporter"}' in exprs
    assert 'service:memory_usage:ratio{tier="agents"}' in exprs
    notes = " ".join(p["options"]["content"] for p in board["panels"] if p["type"] == "text")
    assert "orchestrator" in notes and "portal" in notes  # no metrics: said, not hidden


def test_the_databases_dashboard_has_the_exporters_key_panels() -> None:
    board = _boards(render("prod"))["databases.json"]
    titles = [p["title"] for p in board["panels"]]
    for title in ("Connections / max_connections", "Memory / maxmemory", "Celery backlog", "Failed queries / s"):
        assert title in titles


def test_grafana_embeds_for_anonymous_viewers_on_dev_and_signed_in_users_on_kubernetes() -> None:
    for stack in ("dev", "prod"):
        env = _env(render(stack))
        assert env["GF_SECURITY_ALLOW_EMBEDDING"] == "true"
        assert env["GF_USERS_VIEWERS_CAN_EDIT"] == "false"
        assert Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).name == "overview.json"
        if stack == "dev":  # 127.0.0.1 only, no proxy: the one place anonymous access stays on
            assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
            assert "GF_AUTH_PROXY_ENABLED" not in env
        else:  # the user is who the sign-in proxy says; its cookies Secure (docs/access.md)
            assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
            assert env["GF_AUTH_PROXY_ENABLED"] == "true" and env["GF_AUTH_PROXY_HEADER_NAME"] == "X-Forwarded-Email"
            assert env["GF_SECURITY_COOKIE_SECURE"] == "true" and env["GF_USERS_AUTO_ASSIGN_ORG_ROLE"] == "Viewer"


def _env(r: offline.Render) -> dict[str, str]:
    """Grafana's plain environment, from its container (Docker) or Deployment (Kubernetes)."""
    for res in r.resources:
        if res.type.endswith("Container") and str(res.inputs.get("name", "")).endswith("grafana"):
            return dict(e.split("=", 1) for e in res.inputs.get("envs") or [] if "=" in e)
        spec = (res.inputs.get("spec") or {}).get("template", {}).get("spec", {})
        for c in spec.get("containers") or []:
            if c.get("name") == "grafana":
                return {e["name"]: e.get("value", "") for e in c.get("env") or []}
    raise AssertionError("no grafana workload")


def test_grafana_mounts_three_directories_from_its_configmap_on_kubernetes() -> None:
    r = render("prod")
    spec = next(res.inputs["spec"]["template"]["spec"] for res in r.resources
                if res.type.endswith("StatefulSet") and res.inputs["metadata"]["name"] == "grafana")
    mounts = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts") or []}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards",
            "/etc/grafana/dashboards"} <= mounts
