"""The policy pack's supply chain family (images-pinned): each rule passes on the stacks as
committed and fails on a bad change, on Docker (dev), on hand-written Kubernetes manifests and
on the prod render (how the cases are built: tests/test_policies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policies.optiinfra_policies import rules
from policies.optiinfra_policies import vocabulary as vocab

from .policy_tools import (
    CONTAINER,
    DEV_CONFIG,
    IMAGE,
    changed,
    checked,
    dev_resources,
    found,
    k8s_changed,
    k8s_manifests,
    k8s_violations,
    pg,
    policies_hit,
    violations,
    with_config,
)

# ---- Docker (dev) ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("ref", "problem"), [
    ("grafana/grafana:latest", "uses the tag 'latest'"),
    ("grafana/grafana", "has no tag"),
])
def test_images_fail_when_not_pinned(ref: str, problem: str) -> None:
    # `--set services.grafana.image=<ref>` is refused by the settings (CLI test below).
    def edit(props: dict[str, Any]) -> None:
        for label in props.get("labels", []):
            if label["label"] == "io.optiinfra.image":
                label["value"] = ref
        if "labels" not in props:
            props["name"] = ref

    resources = changed(dev_resources(), CONTAINER, "grafana", edit)
    resources = changed(resources, IMAGE, "grafana-image", edit)
    found_ = violations("images-pinned", resources)
    assert [n for n, _ in found_] == ["grafana", "grafana-image"]
    assert all(f"image '{ref}' {problem}" in msg for _, msg in found_)


def test_images_require_a_digest_when_configured(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    sets = (f"services.grafana.image=grafana/grafana:11.3.1@{digest}",)
    strict = with_config(tmp_path, DEV_CONFIG, **{"images-pinned": {"requireDigest": True}})
    result = checked("dev", *sets, config=strict)
    flagged = {name for name, _ in found(result, "images-pinned")}
    assert "grafana" not in flagged and "grafana-image" not in flagged
    assert {"postgres", "postgres-image", "portal"} <= flagged
    assert checked("dev", *sets).findings == []


# ---- Kubernetes: hand-written manifests ------------------------------------------------------------------

K8S_FAILURES: list[tuple[str, str, str, Callable[[dict[str, Any]], object], str]] = [
    # (case, resource, policy, edit, words in the message)
    ("latest", "postgres", "images-pinned", pg(lambda c: c.update(image="postgres:latest")),
     "uses the tag 'latest'"),
]


@pytest.mark.parametrize(("case", "name", "policy", "edit", "words"), K8S_FAILURES, ids=[c[0] for c in K8S_FAILURES])
def test_kubernetes_workload_rules_fail(case: str, name: str, policy: str, edit: Callable[[dict[str, Any]], object],
                                        words: str) -> None:
    hits = k8s_violations(k8s_changed(name, rules.STATEFULSET, edit))
    assert policy in hits, hits
    assert any(words in m for m in hits[policy]), hits[policy]


def test_the_stack_setting_require_digest_applies_on_kubernetes() -> None:
    # The program stamps the stack's kubernetes.requireDigest on every workload it renders.
    strict = k8s_manifests()
    for type_, name in ((rules.STATEFULSET, "postgres"), (rules.DEPLOYMENT, "orchestrator")):
        strict = changed(strict, type_, name, lambda p: p["metadata"].setdefault("annotations", {}).update(
            {vocab.K8S_REQUIRE_DIGEST: "true"}))
    hits = k8s_violations(strict)
    assert set(hits) == {"images-pinned"} and len(hits["images-pinned"]) == 2
    assert all("has no digest, and this stack requires one" in m for m in hits["images-pinned"])


# ---- Kubernetes: the prod render -------------------------------------------------------------------------

def test_prod_fails_every_image_without_a_digest_when_the_stack_requires_digests() -> None:
    result = checked("prod", "kubernetes.requireDigest=true")
    flagged = {name for name, _ in found(result, "images-pinned")}
    assert flagged == {r.name for r in result.resources if r.type in rules.WORKLOADS}
    assert policies_hit(result) == {"images-pinned"}
