"""The policy pack's exposure family (unique-host-ports, host-port-bind-address and port-
allocation-bands): each rule passes on the stacks as committed and fails on a bad change, on
Docker (dev), on hand-written Kubernetes manifests and on the prod render (how the cases are
built: tests/test_policies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.catalog import default_catalog
from infra.commands import check as check_cmd
from policies.optiinfra_policies import rules

from .conftest import render
from .policy_tools import (
    CONTAINER,
    DEV_CONFIG,
    PROD_CONFIG,
    changed,
    checked,
    dev_resources,
    found,
    k8s_changed,
    k8s_violations,
    pg,
    policies_hit,
    publish,
    violations,
    with_config,
)

# ---- Docker (dev) ----------------------------------------------------------------------------------------

def test_unique_host_ports_passes_when_redis_publishes_its_own_port() -> None:
    # The override from the task: redis published on 6379, which nothing else uses.
    result = checked("dev", "services.redis.hostPort=6379", "services.redis.publish=true")
    redis = next(r for r in result.resources if r.type == CONTAINER and r.name == "redis")
    assert redis.props["ports"] == [{"external": 6379, "internal": 6379, "ip": "127.0.0.1", "protocol": "tcp"}]
    assert result.findings == []


def test_unique_host_ports_fails_when_two_services_bind_one_port() -> None:
    # Config cannot produce this (infra.graph refuses the clash first, see the CLI test);
    # the rule is the second line for anything that bypasses the settings.
    resources = changed(dev_resources(), CONTAINER, "redis", publish(8080))
    found_ = violations("unique-host-ports", resources)
    assert [name for name, _ in found_] == ["orchestrator", "redis"]
    assert all("host port 8080/tcp is bound by both" in msg for _, msg in found_)


def test_unique_host_ports_considers_the_address() -> None:
    other_loopback = changed(dev_resources(), CONTAINER, "redis", publish(8080, "127.0.0.2"))
    assert violations("unique-host-ports", other_loopback) == []
    every_interface = changed(dev_resources(), CONTAINER, "redis", publish(8080, "0.0.0.0"))
    assert len(violations("unique-host-ports", every_interface)) == 2


def test_bind_address_fails_on_every_interface_for_a_service_not_public() -> None:
    result = checked("dev", "services.grafana.bindAddress=0.0.0.0")
    assert found(result, "host-port-bind-address") == [
        ("grafana", "grafana: host port 3000 binds to 0.0.0.0, but grafana is not public. Fix: bind it to 127.0.0.1 "
                    "(optiinfra:services.grafana.bindAddress), or add grafana to optiinfra:public if it must be "
                    "reachable from other machines.")]
    assert policies_hit(result) == {"host-port-bind-address"}


def test_bind_address_passes_on_every_interface_for_a_public_service() -> None:
    result = checked("dev", "public=[grafana]")
    grafana = next(r for r in result.resources if r.type == CONTAINER and r.name == "grafana")
    assert grafana.props["ports"][0]["ip"] == "0.0.0.0"
    assert result.findings == []


def test_bind_address_without_ip_means_every_interface() -> None:
    resources = changed(dev_resources(), CONTAINER, "grafana", lambda p: p["ports"][0].pop("ip"))
    (name, msg), = violations("host-port-bind-address", resources)
    assert name == "grafana" and "every interface (no ip given)" in msg


def test_bind_address_require_loopback_is_config(tmp_path: Path) -> None:
    sets = ("services.grafana.bindAddress=10.1.2.3",)
    assert checked("dev", *sets).findings == []
    strict = with_config(tmp_path, DEV_CONFIG, **{"host-port-bind-address": {"requireLoopback": True}})
    (name, msg), = found(checked("dev", *sets, config=strict), "host-port-bind-address")
    assert name == "grafana" and "binds to 10.1.2.3, not a loopback address" in msg


def test_bands_fail_for_a_host_port_outside_the_service_band() -> None:
    result = checked("dev", "services.grafana.hostPort=8500")
    (name, msg), = found(result, "port-allocation-bands")
    # The band and its range come from the catalog (infra.catalog.BANDS, Port.band).
    band = default_catalog().band(default_catalog().services["grafana"].port("web").band or "")
    assert name == "grafana"
    assert f"host port 8500 (web) is outside the {band.name} band {band.low}-{band.high}" in msg


def test_bands_pass_for_a_free_port_inside_the_band() -> None:
    assert checked("dev", "services.grafana.hostPort=3100").findings == []


def _without_band_exception(props: dict[str, Any]) -> None:
    """A resource's port stamps as if its catalog Port had no written exception."""
    from types import SimpleNamespace

    from policies.optiinfra_policies import vocabulary as v

    def plain(value: Any) -> Any:
        stamp = v.parse_port_stamp(value)
        if stamp is None or not stamp.outside_band:
            return value
        return v.port_stamp(stamp.name, SimpleNamespace(name=stamp.band, low=stamp.low, high=stamp.high))

    for item in props.get("labels", []):
        item["value"] = plain(item.get("value"))
    annotations = props.get("metadata", {}).get("annotations") or {}
    for key in annotations:
        annotations[key] = plain(annotations[key])


def test_the_seed_exception_for_clickhouse_http_is_written_beside_its_port() -> None:
    from infra.catalog import default_catalog

    sets = ("services.clickhouse.publish=true",)
    assert checked("dev", *sets).findings == []
    without = changed(dev_resources(*sets), CONTAINER, "clickhouse", _without_band_exception)
    (name, msg), = violations("port-allocation-bands", without)
    assert name == "clickhouse" and "host port 8123 (http) is outside the metrics band 9000-9999" in msg
    # One written exception, in one place: beside the catalog Port; no policy config repeats it.
    ports = [p for svc in default_catalog().services.values() for p in svc.ports if p.outside_band]
    assert [(p.name, p.container) for p in ports] == [("http", 8123)]
    for cfg in (DEV_CONFIG, PROD_CONFIG):
        assert "port-allocation-bands" not in cfg
    # The exception covers the port's own number, not one the stack config picks.
    (name, msg), = found(checked("dev", "services.clickhouse.hostPorts.http=8124"), "port-allocation-bands")
    assert name == "clickhouse" and "host port 8124" in msg


# ---- Kubernetes: hand-written manifests ------------------------------------------------------------------

K8S_FAILURES: list[tuple[str, str, str, Callable[[dict[str, Any]], object], str]] = [
    # (case, resource, policy, edit, words in the message)
    ("hostPort", "postgres", "host-port-bind-address",
     pg(lambda c: c["ports"][0].update(hostPort=5432)), "publishes hostPort 5432"),
]


@pytest.mark.parametrize(("case", "name", "policy", "edit", "words"), K8S_FAILURES, ids=[c[0] for c in K8S_FAILURES])
def test_kubernetes_workload_rules_fail(case: str, name: str, policy: str, edit: Callable[[dict[str, Any]], object],
                                        words: str) -> None:
    hits = k8s_violations(k8s_changed(name, rules.STATEFULSET, edit))
    assert policy in hits, hits
    assert any(words in m for m in hits[policy]), hits[policy]


def test_only_public_services_are_exposed_on_kubernetes() -> None:
    lb = k8s_changed("postgres", rules.K8S_SERVICE, lambda p: p["spec"].update(type="LoadBalancer"))
    assert "has type LoadBalancer" in k8s_violations(lb)["host-port-bind-address"][0]
    ingress = k8s_changed("portal", rules.INGRESS, lambda p: p["spec"]["rules"][0]["http"]["paths"][0][
        "backend"]["service"].update(name="postgres"))
    assert k8s_violations(ingress) == {"host-port-bind-address": [
        "Ingress routes to postgres, which is not public. Fix: remove the route, or add postgres to optiinfra:public."]}


def test_kubernetes_service_ports_follow_the_bands() -> None:
    moved = k8s_changed("postgres", rules.K8S_SERVICE, lambda p: p["spec"]["ports"][0].update(port=15432))
    (msg,) = k8s_violations(moved)["port-allocation-bands"]
    assert "Service port 15432 (postgres) is outside the database band 5000-6999" in msg


def test_two_workloads_on_one_host_port_clash() -> None:
    both = k8s_changed("postgres", rules.STATEFULSET, pg(lambda c: c["ports"][0].update(hostPort=9000)))
    both = changed(both, rules.DEPLOYMENT, "orchestrator",
                   lambda p: p["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(hostPort=9000))
    msgs = k8s_violations(both)["unique-host-ports"]
    assert len(msgs) == 2 and all("host port 9000/tcp is bound by both" in m for m in msgs)


# ---- Kubernetes: the prod render -------------------------------------------------------------------------

def test_prod_needs_the_clickhouse_exception_for_its_service_port() -> None:
    resources = check_cmd.resources_of(render("prod"))
    without = changed(resources, rules.K8S_SERVICE, "clickhouse", _without_band_exception)
    (name, msg), = violations("port-allocation-bands", without)
    assert name == "clickhouse" and "Service port 8123 (http) is outside the metrics band 9000-9999" in msg
