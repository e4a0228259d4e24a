"""The real Pulumi engine, end to end, on the Kubernetes target rendered to YAML.

Mocks prove what the program asks for; this proves that Pulumi accepts it: the stack
files load, secrets are encrypted in state, the provider's manifests validate strictly
against the schema of the Kubernetes version the manifests target, the engine's inputs
agree with the offline plan, and the policy pack runs (and refuses) under the CLI.

What a live API server proves (every resource created and ready, empty preview and
refresh, updates, destroy) is tests/test_live_cluster.py's; this file keeps only what
that test does not check, and needs no control plane.

The engine comes from `scripts/engine.sh` (an official CLI on PATH, or one built from
the published Go modules and cached outside the repository). Without it the tests are
skipped with the reason; with OPTIINFRA_REQUIRE_ENGINE=1 (set by .ci/run) they fail
instead. OPTIINFRA_SKIP_ENGINE=1 skips them on purpose. E2E_DUMP=DIR writes, for each
resource whose engine inputs differ from the offline plan, both sides to DIR/<name>.json.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra import offline
from infra.backends.kubernetes import K8S_VERSION
from infra.catalog import CREDENTIALS

from .tools import ROOT, receiver_urls, store_keys

STACK = "e2e"
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def _engine_bin() -> Path:
    if os.environ.get("OPTIINFRA_SKIP_ENGINE") == "1":
        pytest.skip("OPTIINFRA_SKIP_ENGINE=1")
    proc = subprocess.run([str(ROOT / "scripts" / "engine.sh")], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = (proc.stderr.strip().splitlines() or ["scripts/engine.sh printed nothing"])[-1]
        if os.environ.get("OPTIINFRA_REQUIRE_ENGINE") == "1":
            pytest.fail(f"the Pulumi engine is required here but unavailable: {reason}")
        pytest.skip(f"no Pulumi engine: {reason}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class Run:
    """A throwaway copy of the project with its own state backend and stack."""

    dir: Path
    env: dict[str, str]
    out: Path
    secrets: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def pulumi(self, *args: str, label: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        proc = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=900)
        self.timings[label or " ".join(args[:2])] = round(time.monotonic() - start, 1)
        if check and proc.returncode != 0:
            pytest.fail(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    bin_dir = _engine_bin()
    base = tmp_path_factory.mktemp("engine")
    project = base / "project"
    project.mkdir()
    venv = Path(os.environ.get("OPTIINFRA_VENV", ROOT / "venv")).resolve()
    (project / "Pulumi.yaml").write_text(yaml.safe_dump({
        "name": "optiinfra",
        "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(venv)}},
    }))
    shutil.copy(ROOT / "__main__.py", project / "__main__.py")
    shutil.copy(ROOT / "requirements.txt", project / "requirements.txt")
    for package in ("infra", "policies"):  # the program imports the resource vocabulary from the pack
        (project / package).symlink_to(ROOT / package)
    # The stack's settings are prod's, as committed.
    shutil.copy(ROOT / "Pulumi.prod.yaml", project / f"Pulumi.{STACK}.yaml")
    out = base / "manifests"
    (base / "state").mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(base / "home"),
        "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
    }
    env.pop("PULUMI_ACCESS_TOKEN", None)
    # Every credential as a stack secret: no random provider is needed (nor available).
    values = {c.config_key: f"E2e-{c.id}-{secrets.token_hex(12)}" for c in CREDENTIALS if c.generated or c.user_set}
    values.update(receiver_urls("prod", "e2e"))  # prod's committed receivers, never called here
    values.update(store_keys("prod", "e2e"))  # prod's committed backup store (never reached here)
    r = Run(project, env, out, values)
    r.pulumi("stack", "init", STACK, "--secrets-provider", "passphrase")
    r.pulumi("config", "set", "--path", "optiinfra:kubernetes.renderYamlToDirectory", str(out))
    for key, value in values.items():
        r.pulumi("config", "set", "--secret", f"optiinfra:{key}", value, label=f"config set --secret {key}")
    yield r
    # Teardown even when a test failed: leave nothing behind.
    r.pulumi("state", "unprotect", "--all", "--yes", check=False)
    r.pulumi("destroy", "--yes", check=False)
    r.pulumi("stack", "rm", "--yes", "--force", STACK, check=False)
    print("\nengine timings (s):", json.dumps(r.timings, indent=1))


@pytest.fixture(scope="module")
def deployed(run: Run) -> dict[str, Any]:
    run.pulumi("preview", "--diff", label="preview")
    run.pulumi("up", "--yes", "--skip-preview", label="up")
    run.pulumi("preview", "--expect-no-changes", label="preview --expect-no-changes")
    export = run.pulumi("stack", "export", "--show-secrets=false", label="stack export").stdout
    state: dict[str, Any] = json.loads(export)
    state["_text"] = export
    return state


def test_state_holds_no_secret_in_plaintext(run: Run, deployed: dict[str, Any]) -> None:
    text = deployed["_text"]
    for key, value in run.secrets.items():
        assert value not in text, f"{key} is in the exported state in plaintext"
    assert SECRET_SIG in text  # secrets are there, encrypted


def test_written_manifests_validate(run: Run, deployed: dict[str, Any]) -> None:
    files = sorted(run.out.rglob("*.yaml"))
    assert len(files) >= 19, f"only {len(files)} manifests in {run.out}"
    kinds = set()
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                kinds.add(doc["kind"])
                for value in run.secrets.values():
                    # A Secret manifest carries base64 data by design; no other kind may.
                    assert doc["kind"] == "Secret" or value not in json.dumps(doc), f"{f.name} leaks a secret"
    assert {"Namespace", "StatefulSet", "Deployment", "Service", "NetworkPolicy", "Ingress"} <= kinds


def _offline(run: Run) -> offline.Render:
    return offline.render(STACK, [f"kubernetes.renderYamlToDirectory={run.out}"],
                          [f"{k}={v}" for k, v in run.secrets.items()], stack_path=run.dir / f"Pulumi.{STACK}.yaml")


def _redact(value: Any) -> Any:
    """State values with every secret as the offline marker."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return offline.SECRET
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _engine_side(type_: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Undo the only rewrites the engine and provider make to inputs, each for a reason
    that is not the program's: the engine records the plugin version and its own
    bookkeeping on a provider resource, and the Kubernetes provider folds a Secret's
    stringData into base64 data during Check."""
    inputs.pop("__defaults", None)
    if type_.startswith("pulumi:providers:"):
        inputs.pop("version", None)
        inputs.pop("__internal", None)
    if type_ == "kubernetes:core/v1:Secret" and "data" in inputs and "stringData" not in inputs:
        inputs["stringData"] = inputs.pop("data")
    return inputs


def test_engine_inputs_agree_with_the_offline_plan(run: Run, deployed: dict[str, Any]) -> None:
    """The offline renderer must not drift from what the engine gives the provider."""
    state = {r["urn"]: r for r in deployed["deployment"]["resources"]}
    mismatches = []
    for res in _offline(run).resources:
        got = state[res.urn]
        if res.custom:
            engine_inputs = _engine_side(res.type, _numbers(_redact(got.get("inputs", {}))))
            offline_inputs = _numbers(res.inputs)
            if engine_inputs != offline_inputs:
                keys = sorted(k for k in set(engine_inputs) | set(offline_inputs)
                              if engine_inputs.get(k) != offline_inputs.get(k))
                mismatches.append(f"{res.urn}: {keys}")
                if os.environ.get("E2E_DUMP"):
                    Path(os.environ["E2E_DUMP"], res.name + ".json").write_text(json.dumps(
                        {"engine": {k: engine_inputs.get(k) for k in keys},
                         "offline": {k: offline_inputs.get(k) for k in keys}}, indent=1, sort_keys=True))
        assert bool(got.get("protect")) == res.protect, res.urn
        assert got.get("parent", "") == res.parent, res.urn
        # Component dependencies expand to children on both sides.
        assert set(res.dependencies) <= set(got.get("dependencies", [])), res.urn
    assert not mismatches, "\n".join(mismatches[:10])


def test_policy_pack_passes_under_the_cli(run: Run, deployed: dict[str, Any]) -> None:
    proc = run.pulumi("preview", "--policy-pack", str(ROOT / "policies"),
                      "--policy-pack-config", str(ROOT / "policies" / "config" / "prod.json"),
                      label="preview --policy-pack")
    assert "optiinfra-policies" in proc.stdout + proc.stderr


def test_policy_pack_fails_a_bad_override_under_the_cli(run: Run, deployed: dict[str, Any]) -> None:
    # The portal (frontend) talking straight to PostgreSQL: the program accepts the
    # dependency, the mandatory tier-isolation policy must stop it.
    run.pulumi("config", "set", "--path", "optiinfra:services.portal.dependsOn[0]", "postgres",
               label="config set bad override")
    try:
        proc = run.pulumi("preview", "--policy-pack", str(ROOT / "policies"),
                          "--policy-pack-config", str(ROOT / "policies" / "config" / "prod.json"),
                          label="preview --policy-pack (bad)", check=False)
    finally:
        run.pulumi("config", "rm", "--path", "optiinfra:services.portal.dependsOn", label="config rm")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "tier-isolation" in output and "mandatory" in output, output[-3000:]


# Bad settings as a user makes them, through the engine: (config args, key, words of the fix).
BAD_SETTINGS = [
    (("--path", "optiinfra:services.grafana.hostport", "3100"), "optiinfra:services.grafana.hostport",
     "did you mean 'hostPort'?"),
    (("--path", "optiinfra:kubernetes.storage.portal", "1Gi"), "optiinfra:kubernetes.storage.portal",
     "portal has no volume to size"),
    (("--path", "optiinfra:images.registry", "GHCR.io/OptiInfra"), "optiinfra:images.registry", "lower-case host"),
    # `--plaintext`: the CLI itself warns about a value that looks like a secret; a user can insist.
    (("--plaintext", "optiinfra:postgresPassword", "typed-in-the-clear-0123456789"), "optiinfra:postgresPassword",
     "pulumi config set --secret"),
]


@pytest.mark.parametrize(("args", "key", "words"), BAD_SETTINGS, ids=[b[1].split(":", 1)[1] for b in BAD_SETTINGS])
def test_a_bad_setting_is_one_message_under_the_engine(run: Run, deployed: dict[str, Any], args: tuple[str, ...],
                                                       key: str, words: str) -> None:
    """What the offline CLI says (tests/test_settings_cli.py), the program says as the engine
    runs it: one error naming the key and the fix, no traceback, nothing changed."""
    def resources() -> Any:
        """The state's resources, secrets by their place only (each checkpoint re-encrypts them)."""
        def plain(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: plain(v) for k, v in x.items() if k != "ciphertext"}
            return [plain(v) for v in x] if isinstance(x, list) else x
        return plain(json.loads(run.pulumi("stack", "export", label="stack export").stdout)["deployment"]["resources"])

    before = resources()
    stack_file = run.dir / f"Pulumi.{STACK}.yaml"
    original = stack_file.read_text()
    run.pulumi("config", "set", *args, label=f"config set {key}")
    try:
        proc = run.pulumi("preview", label=f"preview (bad {key})", check=False)
        up = run.pulumi("up", "--yes", "--skip-preview", label=f"up (bad {key})", check=False)
    finally:
        stack_file.write_text(original)
    for p in (proc, up):
        output = p.stdout + p.stderr
        assert p.returncode != 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        errors = [line for line in output.splitlines() if f"config key '{key}'" in line]
        assert errors and all(words in line for line in errors), output[-3000:]
    if key.endswith("Password"):  # the value typed in the clear is never echoed back
        assert args[-1] not in proc.stdout + proc.stderr + up.stdout + up.stderr
    assert resources() == before
    run.pulumi("preview", "--expect-no-changes", label="preview after bad settings")
