"""The GitHub Actions workflows: fork safety, least permissions, the project's pins, the
policy pack on every Pulumi run, one update per stack at a time, and the gates that skip
(or fail) with a clear message, run as the shell scripts they are.

actionlint (scripts/test.sh) checks the syntax and the expressions; these tests check the
properties the project relies on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .tools import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
PR = WORKFLOWS / "pull-request.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
UP = WORKFLOWS / "pulumi-up.yml"
FORK_GUARD = "github.event.pull_request.head.repo.full_name == github.repository"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return dict(data)


def all_workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def steps(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from job.get("steps") or []


def step(job: dict[str, Any], id_: str) -> dict[str, Any]:
    found = [s for s in steps(job) if s.get("id") == id_]
    assert len(found) == 1, f"expected one step with id {id_!r}"
    return found[0]


def pulumi_steps(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(name, s) for name, job in load(path)["jobs"].items() for s in steps(job)
            if str(s.get("uses", "")).startswith("pulumi/actions@")]


def pin() -> str:
    """The pulumi== line of requirements.txt, read here independently of the workflows."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pins = [line.split("==", 1)[1].split("#")[0].strip() for line in lines if re.match(r"^pulumi==", line)]
    assert len(pins) == 1
    return pins[0]


def run_step(script: str, cwd: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """Run a step's `run:` script as Actions does (bash -e), with its output files."""
    assert "${{" not in script, "the script takes its inputs from env:, so it runs here as in Actions"
    out, summary = cwd / "github_output", cwd / "step_summary"
    out.write_text("")
    summary.write_text("")
    full = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GITHUB_OUTPUT": str(out),
            "GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(cwd), **env}
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=60, check=False)
    return proc, out.read_text(), summary.read_text()


# ---- every workflow ----------------------------------------------------------------------

@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_least_permissions(path: Path) -> None:
    wf = load(path)
    assert wf.get("permissions") == {}, "nothing at the workflow level; each job asks for what it needs"
    for name, job in wf["jobs"].items():
        assert "permissions" in job, f"job {name} declares no permissions"
        perms = job["permissions"] or {}
        assert perms.get("contents") in (None, "read"), f"job {name} can write the repository"
        # Writing packages only in an image's build (it pushes to ghcr.io), nothing else.
        writable = {"pull-requests", *({"packages"} if path.name.endswith("-image.yml") else ())}
        assert not {k for k, v in perms.items() if v == "write"} - writable, name


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_never_pull_request_target(path: Path) -> None:
    on = load(path)["on"]
    triggers = set(on) if isinstance(on, dict | list) else {on}
    assert "pull_request_target" not in triggers and "workflow_run" not in triggers


def test_the_cli_version_is_never_restated() -> None:
    version = pin()
    for path in all_workflows():
        assert version not in path.read_text(), f"{path.name} restates the pulumi pin {version}"
    runs = pulumi_steps(PR) + pulumi_steps(UP)
    assert runs
    for job, s in runs:
        assert re.fullmatch(r"\$\{\{ steps\.pin\.outputs\.version \}\}", s["with"]["pulumi-version"]), job


def test_the_policy_pack_runs_on_every_pulumi_command() -> None:
    for path in (PR, UP):
        for job, s in pulumi_steps(path):
            assert s["with"]["policyPacks"] == "policies", job
            config = s["with"]["policyPackConfigs"]
            assert re.fullmatch(r"policies/config/\$\{\{ (matrix|inputs)\.stack \}\}\.json", config), job


@pytest.mark.parametrize("path", [PR, UP], ids=lambda p: p.name)
def test_the_pin_step_reads_requirements(path: Path, tmp_path: Path) -> None:
    jobs = [j for j in load(path)["jobs"].values() if any(s.get("id") == "pin" for s in steps(j))]
    assert jobs
    script = step(jobs[0], "pin")["run"]
    shutil.copy(ROOT / "requirements.txt", tmp_path)
    proc, out, _ = run_step(script, tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    assert out.strip() == f"version={pin()}"
    # Without the pin: one error naming the file and the fix.
    (tmp_path / "requirements.txt").write_text("pulumi-docker==1.0.0\n")
    proc, out, _ = run_step(script, tmp_path, {})
    assert proc.returncode == 1 and out == ""
    assert "::error file=requirements.txt::" in proc.stdout and "pulumi==" in proc.stdout


def test_every_venv_cache_is_keyed_by_every_requirements_file() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("requirements*.txt")
                   if not {"venv", ".venv", "node_modules"} & set(p.relative_to(ROOT).parts))
    assert len(files) >= 3
    caches = [s for path in all_workflows() for job in load(path)["jobs"].values() for s in steps(job)
              if str(s.get("uses", "")).startswith("actions/cache@") and s["with"]["path"] == "venv"]
    assert len(caches) >= 3
    for s in caches:
        keyed = re.findall(r"'([^']+)'", re.search(r"hashFiles\(([^)]*)\)", s["with"]["key"])[1])  # type: ignore[index]
        assert sorted(keyed) == files


# ---- pull-request.yml --------------------------------------------------------------------

def test_pull_request_jobs_with_secrets_never_run_for_forks() -> None:
    wf = load(PR)
    assert set(wf["on"]) == {"pull_request"}
    with_secrets = [name for name, job in wf["jobs"].items() if "secrets." in yaml.safe_dump(job)
                    or "secrets[" in yaml.safe_dump(job)]
    assert with_secrets
    for name in with_secrets:
        assert FORK_GUARD in wf["jobs"][name].get("if", ""), f"job {name} uses secrets without the fork guard"
    # A job without the guard gets no secret at all.
    for name, job in wf["jobs"].items():
        if FORK_GUARD not in job.get("if", ""):
            assert "secrets" not in yaml.safe_dump(job), name


# ---- no job reads a stack's secrets without its environment -----------------------------------

# Secrets that open prod (or, read at repository level, every stack): the passphrase that
# decrypts the stacks' `secure:` config, the Pulumi Cloud token, any kubeconfig, anything
# named for prod. A dynamic `secrets[...]` lookup can name any of them.
PROD_SECRET = re.compile(r"^(PULUMI_CONFIG_PASSPHRASE|PULUMI_ACCESS_TOKEN|KUBECONFIG.*|.*PROD.*)$")
SECRET_REF = re.compile(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)|(secrets\[)")


def triggers(wf: dict[str, Any]) -> set[str]:
    on = wf.get("on")  # load() has renamed YAML 1.1's True key
    return {on} if isinstance(on, str) else set(on or ())


def ungated_secret_reads(wf: dict[str, Any]) -> list[str]:
    """Jobs that can read a secret that matters without a GitHub environment gating them.

    A job of a pull_request workflow may read no secret at all without `environment:`; any
    other job may read none of prod's (PROD_SECRET, or a dynamic lookup) without it. A job
    that calls a reusable workflow with `secrets: inherit` hands on every secret: each job
    of the called workflow must then have an environment.
    """
    pr = bool(triggers(wf) & {"pull_request", "pull_request_target"})
    found = []
    for name, job in wf["jobs"].items():
        if job.get("environment"):
            continue
        text = yaml.safe_dump({k: v for k, v in job.items() if k != "secrets"})
        refs = ["secrets[...]" if m[1] else m[0] for m in SECRET_REF.findall(text)]
        if job.get("secrets") is not None:
            called = job.get("uses", "")
            callee = load(ROOT / called[2:]) if called.startswith("./") else {"jobs": {"?": {}}}
            if any(not j.get("environment") for j in callee["jobs"].values()):
                refs.append(f"secrets: {job['secrets']} into {called}")
        bad = refs if pr else [r for r in refs if r == "secrets[...]" or r.startswith("secrets:")
                               or PROD_SECRET.match(r)]
        if bad:
            found.append(f"{name}: {sorted(set(bad))}")
    return found


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_no_job_reads_a_stacks_secrets_without_its_environment(path: Path) -> None:
    assert ungated_secret_reads(load(path)) == []


def test_the_secret_gate_fails_on_the_old_workflows() -> None:
    # The pull-request preview as it was: the branch's program with the repository-level
    # passphrase and a kubeconfig looked up by name, no environment.
    pr = load(PR)
    del pr["jobs"]["preview"]["environment"]
    lookup = "${{ secrets[format('KUBECONFIG_READONLY_{0}', matrix.stack)] }}"
    pr["jobs"]["preview"]["steps"].append({"env": {"K": lookup}})
    (bad,) = ungated_secret_reads(pr)
    assert bad.startswith("preview:") and "PULUMI_CONFIG_PASSPHRASE" in bad and "secrets[...]" in bad
    # Any secret at all in a pull-request job without an environment, prod's or not.
    pr = load(PR)
    pr["jobs"]["checks"]["steps"].append({"env": {"X": "${{ secrets.ANYTHING }}"}})
    assert ungated_secret_reads(pr) == ["checks: ['ANYTHING']"]
    # The deploy gate as it was: it read the repository-level passphrase outside any environment.
    deploy = load(DEPLOY)
    step(deploy["jobs"]["configured"], "gate")["env"]["HAS_SECRET"] = "${{ secrets.PULUMI_CONFIG_PASSPHRASE != '' }}"
    assert ungated_secret_reads(deploy) == ["configured: ['PULUMI_CONFIG_PASSPHRASE']"]
    # A backend URL is not prod's: outside a pull request it needs no environment.
    assert "PULUMI_BACKEND_URL" in yaml.safe_dump(load(DEPLOY)["jobs"]["configured"])


def test_prods_preview_runs_in_an_environment_with_prods_reviewers() -> None:
    env = load(PR)["jobs"]["preview"]["environment"]
    assert env == "${{ matrix.stack == 'prod' && 'production-preview' || format('{0}-preview', matrix.stack) }}"
    doc = (ROOT / "docs" / "delivery.md").read_text()
    entry = doc.split("**`production-preview`**", 1)[1].split("**`", 1)[0]
    assert "required reviewers" in entry and "production" in entry


def test_the_engine_preview_runs_after_the_checks() -> None:
    jobs = load(PR)["jobs"]
    previews = [n for n, j in jobs.items() if any(s.get("with", {}).get("command") == "preview" for s in steps(j))]
    assert previews
    for name in previews:
        needs = jobs[name]["needs"]
        assert "checks" in ([needs] if isinstance(needs, str) else needs)
        assert "stack" in jobs[name]["strategy"]["matrix"]
        assert "needs.checks.outputs.stacks" in jobs[name]["strategy"]["matrix"]["stack"]


def test_pull_request_lists_every_stack_file(tmp_path: Path) -> None:
    script = step(load(PR)["jobs"]["checks"], "stacks")["run"]
    for p in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(p, tmp_path)
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    proc, out, _ = run_step(script, tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    expected = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
    assert f"names={' '.join(expected)}" in out.splitlines()
    assert f"stacks={expected!r}".replace("'", '"') in out.splitlines()


# ---- deploy.yml and pulumi-up.yml ---------------------------------------------------------

def deploy_jobs() -> dict[str, dict[str, Any]]:
    return {n: j for n, j in load(DEPLOY)["jobs"].items() if j.get("uses") == "./.github/workflows/pulumi-up.yml"}


def test_deploy_on_push_to_main_staging_then_approved_prod() -> None:
    wf = load(DEPLOY)
    assert wf["on"]["push"]["branches"] == ["main"]
    jobs = deploy_jobs()
    by_stack = {j["with"]["stack"]: (n, j) for n, j in jobs.items()}
    assert {"staging", "prod"} <= set(by_stack)
    for stack in by_stack:
        assert (ROOT / f"Pulumi.{stack}.yaml").is_file() and (ROOT / "policies" / "config" / f"{stack}.json").is_file()
    prod = by_stack["prod"][1]
    assert prod["with"]["environment"] == "production"
    assert by_stack["staging"][0] in ([prod["needs"]] if isinstance(prod["needs"], str) else prod["needs"])
    assert by_stack["staging"][1]["with"]["environment"] != "production"
    # The environment (its secrets and reviewers) is the called job's.
    up = load(UP)["jobs"]["up"]
    assert up["environment"] == "${{ inputs.environment }}"
    assert any(s.get("with", {}).get("command") == "up" for s in steps(up))


def test_one_update_per_stack_at_a_time() -> None:
    groups = []
    for name, job in deploy_jobs().items():
        c = job["concurrency"]
        assert c["cancel-in-progress"] is False, name
        assert job["with"]["stack"] in c["group"], name
        groups.append(c["group"])
    assert len(groups) == len(set(groups))


# ---- the gates -----------------------------------------------------------------------------

EMPTY = {"PULUMI_BACKEND_URL": "", "PULUMI_CONFIG_PASSPHRASE": "", "PULUMI_ACCESS_TOKEN": "", "KUBECONFIG_CONTENT": ""}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for p in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(p, tmp_path)
    return tmp_path


def test_deploy_is_skipped_with_a_notice_when_nothing_is_configured(project: Path) -> None:
    script = step(load(DEPLOY)["jobs"]["configured"], "gate")["run"]
    proc, out, summary = run_step(script, project, {"PULUMI_BACKEND_URL": ""})
    assert proc.returncode == 0 and "enabled=false" in out
    assert "::notice" in proc.stdout and "docs/delivery.md" in summary and "PULUMI_BACKEND_URL" in summary
    proc, out, _ = run_step(script, project, {"PULUMI_BACKEND_URL": "s3://bucket/optiinfra"})
    assert proc.returncode == 0 and "enabled=true" in out


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_pulumi_up_gate(project: Path, stack: str) -> None:
    script = step(load(UP)["jobs"]["up"], "gate")["run"]
    base = {**EMPTY, "STACK": stack, "ENVIRONMENT": "env-of-" + stack}
    # Nothing configured: skipped, green, with a notice.
    proc, out, summary = run_step(script, project, base)
    assert proc.returncode == 0 and "enabled=false" in out and "::notice" in proc.stdout, proc.stdout
    assert "docs/delivery.md" in summary
    # Half configured: an error naming exactly what is missing.
    half = {**base, "PULUMI_BACKEND_URL": "s3://bucket/optiinfra", "PULUMI_CONFIG_PASSPHRASE": "x" * 20}
    proc, out, _ = run_step(script, project, half)
    assert proc.returncode == 1 and "enabled" not in out
    errors = [line for line in proc.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and "KUBECONFIG" in errors[0] and "env-of-" + stack in errors[0]
    proc, _, _ = run_step(script, project, {**half, "PULUMI_BACKEND_URL": "", "KUBECONFIG_CONTENT": "apiVersion: v1"})
    assert proc.returncode == 1 and "PULUMI_BACKEND_URL" in proc.stdout and "KUBECONFIG" not in proc.stdout
    # Configured: on.
    proc, out, _ = run_step(script, project, {**half, "KUBECONFIG_CONTENT": "apiVersion: v1"})
    assert proc.returncode == 0 and out.strip() == "enabled=true", proc.stdout
    # A stack on a KMS secrets provider needs no passphrase.
    kms = project / f"Pulumi.{stack}.yaml"
    kms.write_text("secretsprovider: awskms://alias/optiinfra\n" + kms.read_text())
    proc, out, _ = run_step(script, project, {**half, "PULUMI_CONFIG_PASSPHRASE": "", "KUBECONFIG_CONTENT": "x"})
    assert proc.returncode == 0 and out.strip() == "enabled=true", proc.stdout


def test_pulumi_up_gate_refuses_an_unknown_stack(project: Path) -> None:
    script = step(load(UP)["jobs"]["up"], "gate")["run"]
    proc, _, _ = run_step(script, project, {**EMPTY, "STACK": "nosuchstack", "ENVIRONMENT": "x"})
    assert proc.returncode == 1 and "Pulumi.nosuchstack.yaml" in proc.stdout


def test_preview_gate(project: Path) -> None:
    script = step(load(PR)["jobs"]["preview"], "gate")["run"]
    proc, out, summary = run_step(script, project, {**EMPTY, "STACK": "prod"})
    assert proc.returncode == 0 and "enabled=false" in out and "docs/delivery.md" in summary
    proc, out, _ = run_step(script, project, {**EMPTY, "STACK": "prod", "PULUMI_BACKEND_URL": "s3://b",
                                              "PULUMI_ACCESS_TOKEN": "pul-token"})
    assert proc.returncode == 0 and out.strip() == "enabled=true"


# ---- docs/delivery.md --------------------------------------------------------------------

def test_delivery_doc_names_every_secret_variable_and_environment() -> None:
    doc = (ROOT / "docs" / "delivery.md").read_text()
    text = "\n".join(p.read_text() for p in all_workflows())
    names = set(re.findall(r"\b(?:secrets|vars)\.([A-Z][A-Z0-9_]+)", text))
    names |= {f"{m}_<STACK>" for m in re.findall(r"format\('([A-Z_]+)_\{0\}'", text)}
    assert names
    missing = sorted(n for n in names if n not in doc)
    assert not missing, f"docs/delivery.md does not explain {missing}"
    for job in deploy_jobs().values():
        assert f"`{job['with']['environment']}`" in doc
