"""kube-state-metrics' access to the API: exactly list/watch of the kinds the cluster-state
alerts read, in the stack's tier namespaces, through its own ServiceAccount; Kubernetes only."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra import offline
from infra.settings import ConfigError

from .conftest import render

ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
SA = "kubernetes:core/v1:ServiceAccount"
# Written out: the kinds the cluster-state alerts read (replicas, container restarts and
# waiting reasons, backup CronJobs and their Jobs); no claims, secrets or nodes.
KINDS = {("apps", "deployments"), ("apps", "statefulsets"), ("", "pods"), ("batch", "cronjobs"), ("batch", "jobs")}
READER = "kube-state-metrics"


def read_only_violations(roles: list[dict[str, Any]]) -> list[str]:
    """What in these Roles goes beyond list/watch of KINDS (empty: nothing)."""
    bad = []
    for role in roles:
        granted = set()
        for rule in role["rules"]:
            if sorted(rule["verbs"]) != ["list", "watch"]:
                bad.append(f"{role['metadata']['namespace']}: verbs {rule['verbs']}")
            if rule.get("resourceNames") or rule.get("nonResourceURLs"):
                bad.append(f"{role['metadata']['namespace']}: {rule}")
            granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
        if granted != KINDS:
            bad.append(f"{role['metadata']['namespace']}: kinds {sorted(granted ^ KINDS)}")
    return bad


def _roles(r: offline.Render) -> list[dict[str, Any]]:
    return [x.inputs for x in r.of_type(ROLE)]


def _namespaces(r: offline.Render) -> set[str]:
    return {x.inputs["metadata"]["name"] for x in r.of_type("kubernetes:core/v1:Namespace")}


def _workloads(r: offline.Render) -> list[dict[str, Any]]:
    return [x.inputs for t in ("apps/v1:Deployment", "apps/v1:StatefulSet")
            for x in r.of_type(f"kubernetes:{t}")]


def test_prod_reader_is_read_only_in_the_stack_namespaces() -> None:
    r = render("prod")
    namespaces = _namespaces(r)
    roles = _roles(r)
    assert read_only_violations(roles) == []
    assert {x["metadata"]["namespace"] for x in roles} == namespaces and len(roles) == len(namespaces)
    assert not [x for x in r.resources if "ClusterRole" in x.type]
    [sa] = [x.inputs for x in r.of_type(SA)]
    monitoring = sa["metadata"]["namespace"]
    for b in (x.inputs for x in r.of_type(BINDING)):
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": b["metadata"]["name"]}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": monitoring}]
    assert {b.inputs["metadata"]["namespace"] for b in r.of_type(BINDING)} == namespaces
    # Only the reader mounts a token, as its own account; it watches exactly the stack's namespaces.
    for w in _workloads(r):
        spec = w["spec"]["template"]["spec"]
        reader = w["metadata"]["name"] == READER
        assert spec["automountServiceAccountToken"] is reader, w["metadata"]["name"]
        if reader:
            assert spec["serviceAccountName"] == sa["metadata"]["name"]
            args = spec["containers"][0]["args"]
            [flag] = [a for a in args if a.startswith("--namespaces=")]
            assert set(flag.removeprefix("--namespaces=").split(",")) == namespaces
            [kinds] = [a for a in args if a.startswith("--resources=")]
            assert set(kinds.removeprefix("--resources=").split(",")) == {k for _, k in KINDS}


def test_a_verb_or_kind_more_is_caught() -> None:
    roles = _roles(render("prod"))
    wider = copy.deepcopy(roles)
    wider[0]["rules"][0]["verbs"].append("delete")
    assert read_only_violations(wider)
    more = copy.deepcopy(roles)
    more[-1]["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]})
    assert read_only_violations(more)
    get = copy.deepcopy(roles)
    get[0]["rules"][0]["verbs"] = ["get", "list", "watch"]
    assert read_only_violations(get)


def test_docker_has_no_reader() -> None:
    r = render("dev")
    assert READER not in r.model.services
    assert READER in render("staging").model.services


@pytest.mark.parametrize(("setting", "says"), [
    ("kubernetes.apiServer.cidrs=[nope]", "'nope' does not appear to be an ipv4 or ipv6 network"),
    ("kubernetes.apiServer.ports=[0]", "ports must be 1-65535"),
])
def test_a_bad_api_server_setting_is_one_message_naming_the_key(setting: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        render("prod", setting)
    assert err.value.key == "optiinfra:" + setting.split("=")[0]
    assert says in err.value.problem


def test_the_api_server_egress_follows_its_setting() -> None:
    """The reader's one private egress is exactly `kubernetes.apiServer`'s addresses and ports."""
    r = render("prod", "kubernetes.apiServer.cidrs=[192.0.2.10/32]", "kubernetes.apiServer.ports=[6443]")
    rules = [rule for x in r.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
             if x.inputs["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == READER
             for rule in x.inputs["spec"].get("egress") or []
             if any("ipBlock" in peer for peer in rule.get("to") or [])]
    assert rules == [{"to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}], "ports": [{"port": 6443, "protocol": "TCP"}]}]
