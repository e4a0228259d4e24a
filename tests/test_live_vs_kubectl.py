"""`pulumi up` of prod against what a user would do instead with the same manifests, on the same cluster.

The alternative: `kubectl apply --server-side` of the offline render (`python -m infra render
--stack prod`), one tier file at a time in the seed's order, each tier's Deployments and
StatefulSets rolled out (`kubectl rollout status`) before the next tier is applied. Then the
same cluster is emptied and the stack is deployed with `pulumi up`: once as
tests/test_live_cluster.py does, once with the engine settings that may shorten it (more
parallel steps; checkpoints journaled only at the end). The ratios are in the report
(`-s`, or OPTIINFRA_LIVE_REPORT). The fixtures (cluster, engine, project copy) are
tests/test_live_cluster.py's; this module starts a cluster of its own with them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from infra.model import Tier

from .test_live_cluster import STACK, Live, _workloads_ready, cluster, live  # noqa: F401  (fixtures)

FIELD_MANAGER = "kubectl-comparison"
WORKLOADS = ("Deployment", "StatefulSet")


def _render_tiers(lv: Live, out: Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    supplied = [a for k, v in lv.secrets.items() for a in ("--secret", f"{k}={v}")]
    lv.infra("render", "--stack", STACK, "--out", str(out), *supplied)
    files = [out / f"{t.value}.yaml" for t in Tier]  # the seed's startup order
    return [(f, [d for d in yaml.safe_load_all(f.read_text()) if d]) for f in files if f.exists()]


def _kubectl_deploy(lv: Live, tiers: list[tuple[Path, list[dict[str, Any]]]]) -> float:
    start = time.monotonic()
    for path, docs in tiers:
        lv.cluster.kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", str(path),
                           timeout=300)
        for d in docs:
            if d["kind"] in WORKLOADS:
                lv.cluster.kubectl("rollout", "status", f"{d['kind'].lower()}/{d['metadata']['name']}",
                                   "-n", d["metadata"]["namespace"], "--timeout=300s", timeout=320)
    return time.monotonic() - start


def _kubectl_remove(lv: Live, tiers: list[tuple[Path, list[dict[str, Any]]]]) -> None:
    for path, _ in reversed(tiers):
        lv.cluster.kubectl("delete", "-f", str(path), "--wait=true", "--ignore-not-found", timeout=600)


def _pulumi_up(lv: Live, label: str, *flags: str, env: dict[str, str] | None = None) -> float:
    saved = dict(lv.env)
    lv.env.update(env or {})
    try:
        lv.pulumi("up", "--yes", "--skip-preview", *flags, label=label, timeout=900)
    finally:
        lv.env.clear()
        lv.env.update(saved)
    assert not _workloads_ready(lv), _workloads_ready(lv)  # every workload ready when up returns
    return lv.timings[label]


def _pulumi_remove(lv: Live) -> None:
    lv.pulumi("state", "unprotect", "--all", "--yes", label="comparison unprotect")
    lv.pulumi("destroy", "--yes", "--skip-preview", label="comparison destroy", timeout=900)


def test_pulumi_up_against_kubectl_apply_of_the_same_tiers(live: Live) -> None:  # noqa: F811
    tiers = _render_tiers(live, live.dir.parent / "render-tiers")
    assert [p.stem for p, _ in tiers] == [t.value for t in Tier]

    kubectl_s = _kubectl_deploy(live, tiers)
    assert not _workloads_ready(live), _workloads_ready(live)
    _kubectl_remove(live, tiers)

    up_s = _pulumi_up(live, "comparison up (as test_live_cluster)")
    _pulumi_remove(live)
    # The engine's own knobs, one at a time: more steps at once than its default (`--parallel`),
    # then also the state saved once at the end instead of after every step (experimental,
    # pulumi/pulumi#10668: an interrupted up loses what it did, so it is measured, never used).
    # Measured here: --parallel changes nothing (2.03 -> 2.11); the per-step checkpoint of the
    # file backend is the gap (1.26 without it). docs/benchmarks.md has the figures.
    parallel_s = _pulumi_up(live, "comparison up (--parallel 64)", "--parallel", "64")
    _pulumi_remove(live)
    tuned_s = _pulumi_up(live, "comparison up (--parallel 64, checkpoints at the end)", "--parallel", "64",
                         env={"PULUMI_EXPERIMENTAL": "true", "PULUMI_SKIP_CHECKPOINTS": "true"})
    _pulumi_remove(live)
    live.notes["up_vs_kubectl"] = {
        "kubectl_apply_and_rollout_s": round(kubectl_s, 1),
        "pulumi_up_s": up_s, "pulumi_up_parallel_s": parallel_s, "pulumi_up_no_checkpoints_s": tuned_s,
        "ratio": round(up_s / kubectl_s, 2), "ratio_parallel": round(parallel_s / kubectl_s, 2),
        "ratio_no_checkpoints": round(tuned_s / kubectl_s, 2),
        "objects": sum(len(docs) for _, docs in tiers),
    }
    print("\nup vs kubectl:", live.notes["up_vs_kubectl"])
