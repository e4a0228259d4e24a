"""scripts/deploy.sh with stub tools on PATH: every missing prerequisite stops it with one
line, a non-zero exit and no download or stack creation (the stubs' call log says so);
`--dry-run` runs everything but `pulumi up`.

The script runs from a fresh copy of the repository, with a PATH that holds only the
standard tools it needs and the stubs (`docker`, `kubectl`, `pulumi`, `curl`) a test asks for,
so the machine's own Docker, kubectl or Pulumi never answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .tools import ROOT

PINNED = next(line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.startswith("pulumi=="))
SYSTEM_TOOLS = ("bash", "sh", "sed", "awk", "grep", "head", "tail", "tr", "cut", "sha256sum", "cat", "ls",
                "dirname", "basename", "mkdir", "sleep", "rm", "env", "cp", "chmod", "kill")

# A stub records `name args...` in $STUB_LOG and exits with $STUB_<NAME>_RC (default 0).
STUB = """#!/bin/sh
echo "{name} $*" >> "$STUB_LOG"
{extra}
exit "${{STUB_{var}_RC:-0}}"
"""
EXTRA = {
    "pulumi": f'[ "$1" = version ] && echo "v{PINNED}"',
    # What `curl https://get.pulumi.com` prints: an installer that `sh -s -- --version V
    # --install-root DIR --no-edit-path` runs; this one installs the pulumi stub.
    "curl": 'echo \'mkdir -p "$4/bin" && cp "$STUB_DIR/pulumi" "$4/bin/pulumi"\'',
}


def copy_repo(dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("venv/", "tests/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def user_set_keys() -> list[str]:
    """The config keys of the credentials only their user can set (the catalog says which),
    the URLs of the receivers the committed prod turns on and its backup store's key (the same
    for staging)."""
    from infra.catalog import default_catalog

    from .tools import receiver_urls, store_keys

    return [c.config_key for c in default_catalog().credentials.values() if c.user_set] + sorted(
        receiver_urls("prod", "deploy")) + sorted(store_keys("prod", "deploy"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    # The committed Kubernetes stacks leave the OIDC client secret to their operator: a copy
    # as committed, and the stacks the other tests deploy with it set, as `pulumi config set
    # --secret` writes it (encrypted: offline the value is a stand-in).
    (root / "Pulumi.unset.yaml").write_text((root / "Pulumi.prod.yaml").read_text())
    for name in ("prod", "staging"):
        path = root / f"Pulumi.{name}.yaml"
        path.write_text(path.read_text() + "".join(f"  optiinfra:{key}:\n    secure: v1:c2VjcmV0\n"
                                                   for key in user_set_keys()))
    # A stack that does not fit its budget, and one that fails the policy pack.
    dev = yaml.safe_load((root / "Pulumi.dev.yaml").read_text())
    dev["config"]["optiinfra:budget"]["memory"] = "1Gi"
    (root / "Pulumi.tight.yaml").write_text(yaml.safe_dump(dev))
    ctx = yaml.safe_load((root / "Pulumi.staging.yaml").read_text())
    ctx["config"]["optiinfra:kubernetes"]["context"] = "kind-elsewhere"
    (root / "Pulumi.ctx.yaml").write_text(yaml.safe_dump(ctx))
    return root


Run = Callable[..., tuple[subprocess.CompletedProcess[str], list[str]]]


@pytest.fixture
def deploy(repo: Path, tmp_path: Path) -> Run:
    sysbin = tmp_path / "sysbin"
    sysbin.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        if found:
            (sysbin / tool).symlink_to(found)

    def run(*args: str, stubs: tuple[str, ...] = ("docker", "kubectl", "pulumi", "curl"),
            fail: tuple[str, ...] = (), env: dict[str, str] | None = None,
            ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        stubdir = tmp_path / "stubs"
        shutil.rmtree(stubdir, ignore_errors=True)
        stubdir.mkdir()
        for name in ("docker", "kubectl", "pulumi", "curl"):  # written for curl's installer to copy
            path = stubdir / name
            path.write_text(STUB.format(name=name, var=name.upper(), extra=EXTRA.get(name, "")))
            path.chmod(0o755)
        bindir = tmp_path / "bin"
        shutil.rmtree(bindir, ignore_errors=True)
        bindir.mkdir()
        for name in stubs:
            (bindir / name).symlink_to(stubdir / name)
        log = tmp_path / "calls.log"
        log.write_text("")
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        full = {"PATH": f"{bindir}:{sysbin}", "HOME": str(home), "STUB_LOG": str(log), "STUB_DIR": str(stubdir),
                "OPTIINFRA_VENV": sys.prefix, "PULUMI_CONFIG_PASSPHRASE": "test-passphrase",
                **{f"STUB_{n.upper()}_RC": "1" for n in fail}, **(env or {})}
        full = {k: v for k, v in full.items() if v is not None}
        shutil.rmtree(repo / ".pulumi", ignore_errors=True)
        proc = subprocess.run(["bash", str(repo / "scripts/deploy.sh"), *args], capture_output=True, text=True,
                              env=full, timeout=300)
        return proc, log.read_text().splitlines()

    return run


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def nothing_created(calls: list[str]) -> None:
    assert not [c for c in calls if c.startswith(("curl", "pulumi"))], calls


def test_no_docker_cli(deploy: Run) -> None:
    proc, calls = deploy("dev", stubs=("kubectl", "pulumi", "curl"))
    assert proc.returncode == 1
    assert one_error(proc).startswith("error: the Docker CLI is not installed; install Docker Engine")
    nothing_created(calls)


def test_docker_engine_does_not_answer(deploy: Run) -> None:
    proc, calls = deploy("dev", fail=("docker",))
    assert proc.returncode == 1
    assert one_error(proc).startswith("error: no Docker engine answers at unix:///var/run/docker.sock; start it")
    assert calls == ["docker info"]


def test_no_kubectl(deploy: Run) -> None:
    proc, calls = deploy("prod", stubs=("docker", "pulumi", "curl"))
    assert proc.returncode == 1
    assert one_error(proc).startswith("error: kubectl is not installed, so the current kubeconfig context cannot be "
                                      "checked; install it")
    nothing_created(calls)


def test_cluster_does_not_answer(deploy: Run) -> None:
    proc, calls = deploy("prod", fail=("kubectl",))
    assert proc.returncode == 1
    assert one_error(proc).startswith("error: no Kubernetes API server answers in the current kubeconfig context")
    assert calls == ["kubectl version --request-timeout=5s"]


def test_the_stacks_context_is_the_one_checked(deploy: Run) -> None:
    proc, calls = deploy("ctx", fail=("kubectl",))
    assert proc.returncode == 1
    assert "in the kubeconfig context 'kind-elsewhere'" in one_error(proc)
    assert calls == ["kubectl --context kind-elsewhere version --request-timeout=5s"]


def test_no_backend_for_a_kubernetes_stack(deploy: Run) -> None:
    proc, calls = deploy("prod")
    assert proc.returncode == 1
    assert one_error(proc).startswith("error: stack prod targets Kubernetes and needs a shared backend: run "
                                      "'pulumi login <url>'")
    nothing_created(calls)


def test_pulumi_login_counts_as_a_backend(deploy: Run, tmp_path: Path) -> None:
    (tmp_path / "home/.pulumi").mkdir(parents=True)
    (tmp_path / "home/.pulumi/credentials.json").write_text('{\n    "current": "s3://bucket/state",\n'
                                                            '    "accessTokens": {}\n}\n')
    proc, calls = deploy("prod", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "pulumi preview --stack prod" in calls


def test_no_passphrase(deploy: Run) -> None:
    proc, calls = deploy("dev", env={"PULUMI_CONFIG_PASSPHRASE": None})
    assert proc.returncode == 1
    assert one_error(proc).startswith("error: set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE)")
    nothing_created(calls)


def test_stack_does_not_fit(deploy: Run) -> None:
    """capacity's error line as it is (one problem, one fix), then one line of what deploy.sh did."""
    proc, calls = deploy("tight")
    assert proc.returncode == 1
    line = one_error(proc)
    # dev's requests: 4174 MiB = 4.076Gi (tests/test_capacity.py's test_dev_totals_by_hand works them out).
    assert line.startswith("error: config key 'optiinfra:budget.memory': stack tight requests 4.08Gi of memory, "
                           "more than its budget of 1Gi. Fix: raise optiinfra:budget.memory to at least 4.08Gi")
    assert line.count("Fix:") == 1
    last = proc.stderr.splitlines()[-1]
    assert last == ("deploy.sh: stopped: stack tight does not fit its budget (above; the whole table: "
                    "./optiinfra capacity --stack tight); nothing was downloaded or created")
    assert "Fix:" not in last
    nothing_created(calls)


def test_a_credential_only_you_can_set_is_checked_before_the_stack_is_created(deploy: Run) -> None:
    """The committed prod leaves the OIDC client secret to you: the offline commands stand one in,
    `pulumi up` would refuse; deploy.sh stops before it downloads the CLI or creates the stack,
    naming the key and the command that sets it."""
    keys = user_set_keys()
    proc, calls = deploy("unset", "--dry-run", env={"PULUMI_BACKEND_URL": "s3://bucket/state"})
    assert proc.returncode == 2, proc.stderr
    line = one_error(proc)
    key = next(k for k in keys if line.startswith(f"error: config key 'optiinfra:{k}': is not set"))
    assert f"Fix: pulumi stack select --create unset, then pulumi config set --secret {key} " in line
    assert calls == ["kubectl version --request-timeout=5s"]
    nothing_created(calls)


def test_policy_pack_fails(deploy: Run, repo: Path) -> None:
    # Staging (every policy mandatory) with the portal, a frontend service, reaching PostgreSQL.
    original = (repo / "Pulumi.staging.yaml").read_text()
    staging = yaml.safe_load(original)
    staging["config"]["optiinfra:services"]["portal"] = {"dependsOn": ["postgres"]}
    (repo / "Pulumi.staging.yaml").write_text(yaml.safe_dump(staging))
    try:
        proc, calls = deploy("staging", env={"PULUMI_BACKEND_URL": "s3://bucket/state"})
    finally:
        (repo / "Pulumi.staging.yaml").write_text(original)
    assert proc.returncode == 1
    assert one_error(proc) == ("error: stack staging fails the policy pack (FAILED: mandatory policies violated: "
                               "tier-isolation). Fix each violation './optiinfra check --stack staging' lists, "
                               "then rerun")
    assert calls == ["kubectl version --request-timeout=5s"]


def test_bad_value_is_exit_2_with_its_line(deploy: Run, repo: Path) -> None:
    (repo / "Pulumi.typo.yaml").write_text("config:\n  optiinfra:target: docker\n  optiinfra:budget: {memory: lots}\n")
    proc, calls = deploy("typo")
    assert proc.returncode == 2
    assert one_error(proc).startswith("error: config key 'optiinfra:budget.memory'")
    nothing_created(calls)


def test_dry_run_previews_and_never_runs_up(deploy: Run) -> None:
    proc, calls = deploy("dev", "--dry-run", "--diff")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["docker info", "pulumi version", "pulumi stack select --create dev",
                     "pulumi preview --stack dev --diff"]
    assert "no Pulumi backend chosen; keeping stack dev's state in file://" in proc.stderr


def test_deploy_runs_up_with_the_extra_flags(deploy: Run) -> None:
    proc, calls = deploy("dev", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert calls[-2:] == ["pulumi stack select --create dev", "pulumi up --stack dev --yes"]


def test_the_cli_is_downloaded_only_after_every_check(deploy: Run) -> None:
    proc, calls = deploy("dev", "--dry-run", stubs=("docker", "curl"))
    assert proc.returncode == 0, proc.stderr
    assert calls[:2] == ["docker info", "curl -fsSL https://get.pulumi.com"]
    assert calls[-1] == "pulumi preview --stack dev"


def test_usage(deploy: Run) -> None:
    proc, calls = deploy()
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: scripts/deploy.sh STACK [--dry-run] [pulumi up flags...]  (stacks: ")
    proc, calls = deploy("nosuch")
    assert proc.returncode == 1
    assert one_error(proc).startswith("error: there is no Pulumi.nosuch.yaml (stacks: ")
    assert calls == []


GOOD = "config:\n  optiinfra:target: docker\n"
UNCLOSED = "  optiinfra:public: [portal\n"
"""An unclosed bracket on line 3: the Pulumi CLI parses the stack file before the program runs."""


def test_a_damaged_stack_file_under_the_real_engine(repo: Path, tmp_path: Path) -> None:
    """With the real Pulumi CLI on PATH (and a local file backend), deploy.sh stops on a
    damaged stack file with our one line (the file, the line, the fix), exit 2, before the
    CLI runs; the bare `pulumi up` on the same file prints the CLI's own message (no file
    name) and exits 1, as docs/commands.md says. Nothing is deployed either way."""
    from .test_engine_e2e import _engine_bin

    engine = _engine_bin()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    log = tmp_path / "calls.log"
    log.write_text("")
    docker = bindir / "docker"  # the Docker engine answers (a stub): the file is what is wrong
    docker.write_text(STUB.format(name="docker", var="DOCKER", extra=""))
    docker.chmod(0o755)
    (tmp_path / "state").mkdir()
    env = {"PATH": f"{engine}:{bindir}", "HOME": str(tmp_path / "home"), "PULUMI_HOME": str(tmp_path / "pulumi-home"),
           "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}", "PULUMI_CONFIG_PASSPHRASE": "test-passphrase",
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
           "OPTIINFRA_VENV": sys.prefix, "STUB_LOG": str(log)}
    stack_file = repo / "Pulumi.broken.yaml"

    def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pulumi", *args, "--non-interactive"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)

    try:
        stack_file.write_text(GOOD)
        created = pulumi("stack", "init", "broken")
        assert created.returncode == 0, created.stderr
        good = stack_file.read_text()  # with the salt `stack init` added for the passphrase
        assert good.startswith(GOOD)
        stack_file.write_text(good.replace(GOOD, GOOD + UNCLOSED, 1))  # damaged after the stack exists, as an edit

        proc = subprocess.run(["bash", str(repo / "scripts/deploy.sh"), "broken", "--yes"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        line = one_error(proc)
        # Line 4 is the salt `stack init` wrote after the config; the bracket opened on line 3.
        assert line.startswith("error: Pulumi.broken.yaml line 4, column "), line
        assert "is not valid YAML" in line and "flow sequence started on line 3" in line
        assert ". Fix: correct the YAML there: close every bracket" in line
        assert "getting stack configuration" not in proc.stderr  # the CLI never ran
        assert log.read_text().splitlines() == ["docker info"]

        bare = pulumi("up", "--stack", "broken", "--yes")
        assert bare.returncode == 1
        # The CLI's YAML parser counts from 0 here: the bracket opened on line 3.
        assert bare.stderr == ("error: getting stack configuration: invalid YAML file: yaml: line 2: did not find "
                               "expected ',' or ']'\n"), bare.stderr
        assert "Pulumi.broken.yaml" not in bare.stderr  # the CLI does not say which file

        # Nothing deployed: the stack has no update and no resource.
        stack_file.write_text(good)
        history = pulumi("stack", "history", "--stack", "broken", "--json")
        assert history.returncode == 0 and json.loads(history.stdout or "[]") == [], history.stdout
        exported = json.loads(pulumi("stack", "export", "--stack", "broken").stdout)
        assert not exported["deployment"].get("resources"), exported
    finally:
        pulumi("stack", "rm", "--yes", "--force", "broken")
        stack_file.unlink(missing_ok=True)


# ---- scripts/venv.sh: sourced by the scripts, or run on its own -------------------------

@pytest.fixture
def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A virtualenv whose pip is a stub that logs its arguments (and fails with PIP_RC=1)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").symlink_to(sys.executable)
    log = tmp_path / "pip.log"
    (venv / "bin/pip").write_text(f'#!/bin/sh\necho "pip $*" >> {log}\nexit "${{PIP_RC:-0}}"\n')
    (venv / "bin/pip").chmod(0o755)
    return venv, log


def venv_sh(*argv: str, venv: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(venv.parent), "OPTIINFRA_VENV": str(venv),
                               **(env or {})})


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--upgrade"], ["install", "x"]])
def test_venv_sh_run_with_arguments_installs_nothing(fake_venv: tuple[Path, Path], args: list[str]) -> None:
    venv, log = fake_venv
    proc = venv_sh(str(ROOT / "scripts/venv.sh"), *args, venv=venv)
    if args[0] in ("-h", "--help"):
        assert proc.returncode == 0 and proc.stdout.startswith("usage: scripts/venv.sh")
    else:
        assert proc.returncode == 2 and proc.stdout == ""
        (line,) = proc.stderr.splitlines()
        assert line.startswith("error: scripts/venv.sh takes no arguments") and "usage: scripts/venv.sh" in line
    assert not log.exists() and not (venv / ".installed").exists()


def test_venv_sh_run_on_its_own_installs_and_says_where(fake_venv: tuple[Path, Path], tmp_path: Path) -> None:
    venv, log = fake_venv
    proc = venv_sh(str(ROOT / "scripts/venv.sh"), venv=venv)  # from the repository root
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().split() == ["pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                                       "requirements-dev.txt"]
    assert "installing the pinned requirements" in proc.stderr and f"{venv}/bin/python" in proc.stdout
    again = venv_sh(str(ROOT / "scripts/venv.sh"), venv=venv)  # up to date: no second install
    assert again.returncode == 0 and len(log.read_text().splitlines()) == 1
    elsewhere = subprocess.run([str(ROOT / "scripts/venv.sh")], cwd=tmp_path, capture_output=True, text=True,
                               timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "OPTIINFRA_VENV": str(venv)})
    assert elsewhere.returncode == 0, elsewhere.stderr  # it finds the requirements from any directory


def test_venv_sh_sourced_ignores_the_callers_arguments_and_never_ends_its_shell(
        fake_venv: tuple[Path, Path]) -> None:
    venv, log = fake_venv
    script = 'set -- -k docker --upgrade; . scripts/venv.sh; echo "PY=$PY"'
    proc = venv_sh("bash", "-c", script, venv=venv)
    assert proc.returncode == 0 and proc.stdout == f"PY={venv}/bin/python\n", proc.stderr
    assert len(log.read_text().splitlines()) == 1
    (venv / ".installed").unlink()
    failing = venv_sh("bash", "-c", '. scripts/venv.sh || echo "returned $?"; echo "shell still here"', venv=venv,
                      env={"PIP_RC": "1"})
    assert failing.stdout == "returned 1\nshell still here\n", failing.stderr
    assert "error: pip could not install requirements-dev.txt" in failing.stderr
