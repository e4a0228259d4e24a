"""Real reviewers over the rendered Kubernetes manifests: checkov's Kubernetes checks and
kube-score, pinned, both passing.

Every finding either is fixed or is excepted beside its resource with the tool's own skip
annotation and a reason (`checkov.io/skip<N>: CKV_K8S_<id>=<reason>`; `kube-score/ignore:
<checks>` with `optiinfra.io/kube-score.<check>: <reason>`), generated from the catalog
(infra/backends/kubernetes/reviews.py `review_exceptions`; the list is in docs/production.md).

The tools live outside ./venv: kube-score is built by scripts/tools.sh (Go, once); checkov
3.3.30 pins packaging<24 while pulumi needs packaging>=26, so it gets its own virtualenv in
the tools cache, installed once from scripts/checkov-requirements.txt (PyPI). A tool that
cannot be had skips its test with the reason, unless OPTIINFRA_REQUIRE_TOOLS=1 (CI), where
that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import cli
from infra.backends.kubernetes import CHECKOV_SKIP, KUBE_SCORE_IGNORE, KUBE_SCORE_REASON

from .tools import ROOT, go_tool, unavailable

CHECKOV_REQUIREMENTS = ROOT / "scripts" / "checkov-requirements.txt"
STACKS = ("prod", "staging")
CACHE = Path(os.environ.get("OPTIINFRA_TOOLS_CACHE") or Path.home() / ".cache" / "optiinfra" / "tools")


def checkov_version() -> str:
    pins = re.findall(r"^checkov==(\S+)$", CHECKOV_REQUIREMENTS.read_text(), re.M)
    assert len(pins) == 1, "scripts/checkov-requirements.txt pins checkov exactly once"
    return str(pins[0])


@cache
def checkov() -> Path | str:
    """The checkov virtualenv's python, installed into the tools cache on first use; or why not."""
    version = checkov_version()
    home = CACHE / f"checkov-{version}"
    python = home / "bin" / "python"
    if python.exists():
        return python
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".checkov-{version}.", dir=CACHE))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
        done = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "-r", str(CHECKOV_REQUIREMENTS)], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"checkov {version} could not be installed from {CHECKOV_REQUIREMENTS.name}: {done.stderr[-400:]}"
        # Moved in one step (run as `python -m checkov.main`, which survives the move).
        tmp.rename(home)
    except (OSError, subprocess.SubprocessError) as e:
        return f"checkov {version} could not be installed: {e}"
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return python


def kube_score() -> Path | str:
    return go_tool("kube-score")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for stack in STACKS:
        d = tmp_path_factory.mktemp(stack)
        assert cli.main(["render", "--stack", stack, "--out", str(d)]) == 0
        out[stack] = d
    return out


def _objects(directory: Path) -> list[dict[str, Any]]:
    return [d for f in sorted(directory.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_kubernetes_checks_pass(stack: str, rendered: dict[str, Path]) -> None:
    tool = checkov()
    if isinstance(tool, str):
        unavailable(tool)
    assert isinstance(tool, Path)
    done = subprocess.run([str(tool), "-m", "checkov.main", "-d", str(rendered[stack]), "--framework", "kubernetes",
                           "--skip-download", "-o", "json"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    assert all(r["summary"]["parsing_errors"] == 0 and r["summary"]["resource_count"] > 60 for r in reports)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}"
              for r in reports for c in r["results"].get("failed_checks", [])]
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    assert failed == [], "checkov findings neither fixed nor excepted:\n" + "\n".join(failed)
    # Every exception says why, beside its resource.
    assert skipped and all((c["check_result"].get("suppress_comment") or "").strip() for c in skipped)


@pytest.mark.parametrize("stack", STACKS)
def test_kube_score_passes(stack: str, rendered: dict[str, Path]) -> None:
    tool = kube_score()
    if isinstance(tool, str):
        unavailable(tool)
    files = sorted(str(f) for f in rendered[stack].glob("*.yaml"))
    done = subprocess.run([str(tool), "score", "-o", "ci", *files], capture_output=True, text=True, timeout=300)
    findings = [line for line in done.stdout.splitlines() if line.startswith(("[CRITICAL]", "[WARNING]"))]
    assert findings == [], "kube-score findings neither fixed nor excepted:\n" + "\n".join(findings)
    assert "[OK]" in done.stdout


@pytest.mark.parametrize("stack", STACKS)
def test_every_exception_has_its_reason_beside_it(stack: str, rendered: dict[str, Path]) -> None:
    """Needs no tool: the annotations themselves."""
    ignored = 0
    for obj in _objects(rendered[stack]):
        notes = obj["metadata"].get("annotations") or {}
        for key, value in notes.items():
            if key.startswith(CHECKOV_SKIP):
                check, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV_K8S_\d+", check) and reason.strip(), (obj["metadata"]["name"], value)
        for check in filter(None, (notes.get(KUBE_SCORE_IGNORE) or "").split(",")):
            ignored += 1
            assert (notes.get(f"{KUBE_SCORE_REASON}{check}") or "").strip(), (obj["metadata"]["name"], check)
    assert ignored
