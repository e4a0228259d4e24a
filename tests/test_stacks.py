"""Every stack file, through the real offline CLI: each Pulumi.<stack>.yaml renders, passes
its policy config and fits its budget; the Kubernetes stacks keep to their own namespaces
and hosts, are enforced as prod is, and are no larger than prod.

The stacks are discovered (`infra.stack.available_stacks()`, as the offline tools do), so
a new stack file is covered without editing this file. Expected values come from the stack files themselves
and from prod's own results, never from literals of the current figures.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.backends.kubernetes import K8S_VERSION
from infra.stack import available_stacks

from .tools import ROOT

STACKS = available_stacks()
# The production stack: the reference every other Kubernetes stack is measured against.
REFERENCE = "prod"
NAMESPACE_TYPE = "kubernetes:core/v1:Namespace"
INGRESS_TYPE = "kubernetes:networking.k8s.io/v1:Ingress"


# ---- the stack files ---------------------------------------------------------------------

def config(stack: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    return {k.removeprefix("optiinfra:"): v for k, v in (data.get("config") or {}).items()}


def target(stack: str) -> str:
    return str(config(stack).get("target", "docker"))  # the documented default


KUBERNETES = [s for s in STACKS if target(s) == "kubernetes"]
OTHERS = [s for s in KUBERNETES if s != REFERENCE]


def kubernetes_settings(stack: str) -> dict[str, Any]:
    return dict(config(stack).get("kubernetes") or {})


def ingress_hosts(stack: str) -> set[str]:
    return set(((kubernetes_settings(stack).get("ingress") or {}).get("hosts") or {}).values())


def replicas(stack: str) -> dict[str, int]:
    """services.<name>.replicas as the stack file sets it (1 when unset, the default)."""
    return {name: int((spec or {}).get("replicas", 1)) for name, spec in (config(stack).get("services") or {}).items()}


_UNITS = {"": 1 / 2**20, "Ki": 1 / 2**10, "Mi": 1, "Gi": 2**10, "Ti": 2**20}


def mebibytes(quantity: Any) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(Ki|Mi|Gi|Ti)?\s*", str(quantity))
    assert m, f"not a quantity this test reads: {quantity!r}"
    return float(m[1]) * _UNITS[m[2] or ""]


def budget(stack: str) -> dict[str, float]:
    """The whole budget the stack file asks for: nodes x per-node memory and CPU, storage."""
    b = config(stack).get("budget")
    assert b, f"Pulumi.{stack}.yaml sets no optiinfra:budget"
    nodes = int(b.get("nodes", 1))
    return {"memoryMiB": nodes * mebibytes(b["memory"]), "cpu": nodes * float(b["cpu"]),
            "storageMiB": mebibytes(b["storage"])}


# ---- the real CLI ------------------------------------------------------------------------

@functools.cache
def infra(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "infra", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def json_of(*args: str) -> Any:
    proc = infra(*args, "--json")
    assert proc.returncode == 0, f"python -m infra {' '.join(args)} --json exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


def steps(stack: str) -> list[dict[str, Any]]:
    return [s["newState"] for s in json_of("plan", "--stack", stack)["steps"]]


def namespaces(stack: str) -> set[str]:
    return {s["inputs"]["metadata"]["name"] for s in steps(stack) if s["type"] == NAMESPACE_TYPE}


def enforcement(stack: str) -> dict[str, str]:
    return {p["name"]: p["enforcementLevel"] for p in json_of("check", "--stack", stack)["policies"]}


# ---- every stack -------------------------------------------------------------------------

def test_every_stack_file_is_discovered() -> None:
    files = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
    assert files == STACKS
    # The environments the delivery workflow deploys, and the Docker one for laptops.
    assert {"dev", "staging", "prod"} <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_has_its_policy_config(stack: str) -> None:
    path = ROOT / "policies" / "config" / f"{stack}.json"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: `pulumi up --policy-pack-config` needs it"
    assert isinstance(json.loads(path.read_text()), dict)


@pytest.mark.parametrize("stack", STACKS)
def test_plan_renders_and_fits(stack: str) -> None:
    proc = infra("plan", "--stack", stack)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("Capacity") and last.endswith("within budget"), last


@pytest.mark.parametrize("stack", STACKS)
def test_render_matches_the_target(stack: str) -> None:
    providers = {s["type"].split(":")[0] for s in steps(stack)} - {"pulumi", "optiinfra", "random"}
    # pulumi:providers:kubernetes is the explicit provider of a Kubernetes stack.
    providers |= {s["type"].rsplit(":", 1)[-1] for s in steps(stack) if s["type"].startswith("pulumi:providers:")}
    assert providers == {target(stack)}


@pytest.mark.parametrize("stack", STACKS)
def test_check_passes_with_the_stacks_policy_config(stack: str) -> None:
    proc = infra("check", "--stack", stack)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"policies/config/{stack}.json" in proc.stdout
    result = json_of("check", "--stack", stack)
    assert result["passed"] is True and result["policies"]


@pytest.mark.parametrize("stack", STACKS)
def test_capacity_fits_the_budget(stack: str) -> None:
    proc = infra("capacity", "--stack", stack)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json_of("capacity", "--stack", stack)
    assert report["withinBudget"] is True and report["problems"] == []
    # The budget the tool applies is the one the stack file writes.
    for key, value in budget(stack).items():
        assert report["budget"][key] == pytest.approx(value), key


# ---- Kubernetes stacks -------------------------------------------------------------------

def test_there_are_kubernetes_stacks_besides_the_reference() -> None:
    assert REFERENCE in KUBERNETES and OTHERS


@pytest.mark.parametrize("stack", KUBERNETES)
def test_render_writes_valid_manifests_in_the_stacks_namespaces(stack: str, tmp_path: Path) -> None:
    proc = infra("render", "--stack", stack, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    manifests = [m for p in sorted(tmp_path.glob("*.yaml")) for m in yaml.safe_load_all(p.read_text()) if m]
    assert manifests
    for m in manifests:
        kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    assert {m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace"} == namespaces(stack)
    assert {m["metadata"]["namespace"] for m in manifests if m["kind"] != "Namespace"} <= namespaces(stack)


@pytest.mark.parametrize("stack", KUBERNETES)
def test_namespaces_use_the_stacks_own_prefix(stack: str) -> None:
    prefix = kubernetes_settings(stack).get("namespacePrefix")
    assert prefix, f"Pulumi.{stack}.yaml must set optiinfra:kubernetes.namespacePrefix"
    names = namespaces(stack)
    assert names and all(n.startswith(f"{prefix}-") for n in names), names
    # Every namespaced resource lives in one of the stack's own namespaces.
    used = {s["inputs"]["metadata"]["namespace"] for s in steps(stack)
            if isinstance(s["inputs"].get("metadata"), dict) and "namespace" in s["inputs"]["metadata"]}
    assert used and used <= names, used - names
    assert set(json_of("plan", "--stack", stack)["outputs"]["namespaces"].values()) == names


@pytest.mark.parametrize("stack", KUBERNETES)
def test_ingress_hosts_are_the_stacks_own(stack: str) -> None:
    ingresses = [s for s in steps(stack) if s["type"] == INGRESS_TYPE]
    rendered = {rule["host"] for s in ingresses for rule in s["inputs"]["spec"]["rules"]}
    assert rendered and rendered == ingress_hosts(stack)


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(KUBERNETES, 2)))
def test_kubernetes_stacks_can_share_a_cluster(a: str, b: str) -> None:
    assert kubernetes_settings(a)["namespacePrefix"] != kubernetes_settings(b)["namespacePrefix"]
    assert not namespaces(a) & namespaces(b)
    assert not ingress_hosts(a) & ingress_hosts(b), "two stacks would claim the same ingress host"


@pytest.mark.parametrize("stack", OTHERS)
def test_policies_are_enforced_as_in_the_reference(stack: str) -> None:
    reference = enforcement(REFERENCE)
    assert "mandatory" in reference.values()
    assert enforcement(stack) == reference


@pytest.mark.parametrize("stack", KUBERNETES)
def test_a_mandatory_violation_fails_the_check(stack: str) -> None:
    # The README's example: the portal (frontend) talking to PostgreSQL (databases).
    proc = infra("check", "--stack", stack, "--set", "services.portal.dependsOn=[postgres]")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "tier-isolation" in proc.stdout


@pytest.mark.parametrize("stack", OTHERS)
def test_smaller_than_the_reference(stack: str) -> None:
    # From the two stack files: replicas per service and the budget.
    mine, ref = replicas(stack), replicas(REFERENCE)
    for name in mine.keys() | ref.keys():
        assert mine.get(name, 1) <= ref.get(name, 1), f"{name}: {stack} runs more replicas than {REFERENCE}"
    services = mine.keys() | ref.keys()
    assert sum(mine.get(n, 1) for n in services) < sum(ref.get(n, 1) for n in services)
    small, large = budget(stack), budget(REFERENCE)
    for key in small:
        assert small[key] <= large[key], f"budget {key}: {stack} {small[key]} > {REFERENCE} {large[key]}"
    assert small != large
    # And what the tool computes from them (instances include per-provider fan-out).
    a, b = json_of("capacity", "--stack", stack)["total"], json_of("capacity", "--stack", REFERENCE)["total"]
    assert a["instances"] < b["instances"]
    assert a["cpu"]["request"] <= b["cpu"]["request"] and a["memoryMiB"]["request"] <= b["memoryMiB"]["request"]
    assert a["storageMiB"] <= b["storageMiB"]


# ---- docs --------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_generated_docs_cover_the_stack(stack: str) -> None:
    # `python -m infra docs` writes a section per stack file and its topology picture.
    assert (ROOT / "docs" / f"topology-{stack}.svg").is_file(), "run `python -m infra docs` and commit the result"
    assert f"`{stack}`" in (ROOT / "docs" / "PORTS.md").read_text(), "run `python -m infra docs`"
