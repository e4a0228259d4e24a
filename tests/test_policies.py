"""The policy pack: every rule passes on the stacks as committed and fails on a bad change.

This module holds what concerns the pack as a whole (both stacks clean, the policy config, the
`check` command, the pack as the Pulumi CLI loads it); each family of rules has its own module,
tests/test_policies_<family>.py (exposure, supply_chain, reliability, isolation, credentials,
data), as the rules have (policies/optiinfra_policies/rules/), and the helpers they share are
tests/policy_tools.py.

Failing cases come from real stack config through the same overrides as
`python -m infra check --set ...` wherever config can produce the mistake; where the
settings refuse it first (an image tagged latest, a host port clash, a default
password) or no setting can produce it (a privileged container), the case is the
rendered resource with that one input changed. Kubernetes rules are exercised on
hand-written manifests of the standard shape and on the prod render.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import offline
from infra.backends.kubernetes import namespace_name
from infra.cli import main as cli_main
from infra.stack import model_of
from policies.optiinfra_policies import core, pack, rules
from policies.optiinfra_policies import vocabulary as vocab

from .policy_tools import (
    CONTAINER,
    DEV_CONFIG,
    IMAGE,
    PROD_CONFIG,
    VOLUME,
    changed,
    checked,
    dev_resources,
    k8s_manifests,
    k8s_violations,
    prod_resources,
    publish,
    set_env,
    with_config,
)
from .tools import ROOT

# ---- both stacks as committed ------------------------------------------------------------

def test_dev_passes_every_policy_clean() -> None:
    result = checked("dev")
    assert result.findings == []
    assert not result.failed
    assert {s.level for s in result.settings.values()} == {"advisory"}


def test_the_policies_read_every_kind_of_resource_the_dev_stack_has() -> None:
    kinds = {r.type for r in dev_resources()}
    assert {CONTAINER, VOLUME, IMAGE} <= kinds
    # Every rule applies to something of dev or prod (no rule about a type nobody renders).
    covered = set().union(*(r.types for r in rules.RULES))
    assert {CONTAINER, VOLUME, IMAGE, rules.DEPLOYMENT, rules.STATEFULSET, rules.NAMESPACE_T} <= covered


def test_compliant_kubernetes_manifests_pass_every_policy() -> None:
    assert k8s_violations(k8s_manifests()) == {}


def test_prod_passes_every_policy_clean() -> None:
    result = checked("prod")
    assert result.findings == []
    assert {s.level for s in result.settings.values()} == {"mandatory"}
    kinds = {r.type for r in result.resources}
    assert {rules.DEPLOYMENT, rules.STATEFULSET, rules.NAMESPACE_T, rules.NETWORK_POLICY, rules.K8S_SERVICE,
            rules.K8S_SECRET, rules.INGRESS} <= kinds


def test_the_rules_see_every_prod_workload_as_its_catalog_service() -> None:
    # Not vacuous: every workload maps to a service (cost-agent-aws is the cost agent) in its tier's namespace.
    # A backup CronJob runs beside the service its stamp names (its pods have a name of their own),
    # and so does a restore drill's (prod sets a backup store: issue 25).
    model = model_of("prod")
    workloads = [r for r in prod_resources() if r.type in rules.WORKLOADS]
    drills = {r.name for r in workloads if r.type == rules.CRONJOB and rules.annotation(r, vocab.K8S_DRILL_OF)}
    assert drills == {"postgres-drill", "redis-drill"}  # docs/backups.md: the stores a drill restores

    def service(r: core.Resource) -> str:
        if r.type == rules.CRONJOB:
            return str(rules.annotation(r, vocab.K8S_DRILL_OF if r.name in drills else vocab.K8S_BACKUP_OF) or "")
        return str(rules.annotation(r, vocab.K8S_CREDENTIALS_OF) or "") or rules.k8s_service(r)

    # A store's credential-rotation Job runs beside the store its stamp names.
    rotation = {r.name for r in workloads if rules.annotation(r, vocab.K8S_CREDENTIALS_OF)}
    assert rotation == {"postgres-credentials", "redis-credentials"}
    services = {service(r) for r in workloads if r.type != rules.CRONJOB and r.name not in rotation}
    assert services == set(model.services)
    assert {service(r) for r in workloads if r.type == rules.CRONJOB and r.name not in drills} == {
        e.name for e in model.backed_up()}
    assert {service(r) for r in workloads if r.name in drills} == {e.name for e in model.drilled()}
    for r in workloads:
        eff = model.services[service(r)]
        assert r.props["metadata"]["namespace"] == namespace_name(model, eff.tier)


def test_cli_fails_prod_naming_the_policy_and_the_resource() -> None:
    out = cli("--stack", "prod", "--set", "services.portal.dependsOn=[postgres]")
    assert out.returncode == 1, out.stdout + out.stderr
    assert ("[mandatory]  optiinfra-policies@v0.1.0  tier-isolation "
            "(kubernetes:networking.k8s.io/v1:NetworkPolicy: allow-postgres)") in out.stdout


# ---- policy config: reconciled as the engine does ---------------------------------------------------------------

def test_enforcement_per_stack_comes_from_the_config_files() -> None:
    dev = core.reconcile(rules.RULES, DEV_CONFIG, source="dev.json")
    prod = core.reconcile(rules.RULES, PROD_CONFIG, source="prod.json")
    assert {s.level for s in dev.values()} == {"advisory"}
    assert {s.level for s in prod.values()} == {"mandatory"}
    # Schema defaults fill what a file leaves out; a file's properties override them.
    assert prod["health-checks"].config == {"exemptions": [], "requireStartupProbe": True}
    assert dev["health-checks"].config["exemptions"] == DEV_CONFIG["health-checks"]["exemptions"]


def test_a_policy_entry_overrides_all() -> None:
    settings = core.reconcile(rules.RULES, {"all": "mandatory", "port-allocation-bands": "advisory",
                                            "health-checks": {"enforcementLevel": "disabled"}}, source="x.json")
    assert settings["port-allocation-bands"].level == "advisory"
    assert settings["health-checks"].level == "disabled"
    assert settings["images-pinned"].level == "mandatory"


@pytest.mark.parametrize(("config", "key", "words"), [
    ({"all": "strict"}, "x.json: all", "'strict' is not an enforcement level"),
    ({"no-such-policy": "advisory"}, "x.json: no-such-policy", "is not a policy of this pack"),
    ({"images-pinned": {"requireDigest": "yes"}}, "x.json: images-pinned.requireDigest", "is not of type boolean"),
    ({"health-checks": {"exemptions": [{"service": "redis-exporter"}]}},
     "x.json: health-checks.exemptions[0].reason", "is required"),
    ({"health-checks": {"exemption": []}}, "x.json: health-checks.exemption", "is not a known setting"),
])
def test_bad_policy_config_is_a_user_error(config: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(core.PolicyConfigError) as err:
        core.reconcile(rules.RULES, config, source="x.json")
    assert err.value.key == key and words in err.value.problem


# ---- the offline check command ------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_passes_dev_and_prints_the_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "Policy Violations" not in out
    assert all(f"[advisory]  {name}  " in out for name in rules.names())


def test_cli_exits_1_on_a_mandatory_failure_and_prints_it_like_pulumi(tmp_path: Path) -> None:
    mandatory = with_config(tmp_path, DEV_CONFIG, all="mandatory")
    out = cli("--stack", "dev", "--set", "services.grafana.bindAddress=0.0.0.0", "--policy-config", str(mandatory))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    i = lines.index("    [mandatory]  optiinfra-policies@v0.1.0  host-port-bind-address "
                    "(docker:index/container:Container: grafana)")
    assert lines[i + 1].strip() == rules.by_name("host-port-bind-address").description
    assert lines[i + 2].strip().startswith("grafana: host port 3000 binds to 0.0.0.0")
    assert lines[i + 3].strip() == ("urn: urn:pulumi:dev::optiinfra::optiinfra:platform:Tier"
                                    "$docker:index/container:Container::grafana")
    assert "FAILED: mandatory policies violated: host-port-bind-address" in out.stdout


def test_cli_advisory_violations_exit_0_and_json_names_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--stack", "dev", "--set", "services.grafana.bindAddress=0.0.0.0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (v,) = data["violations"]
    assert v["policyName"] == "host-port-bind-address" and v["enforcementLevel"] == "advisory"
    assert v["resourceType"] == CONTAINER and v["resourceName"] == "grafana" and v["urn"].endswith("::grafana")
    assert v["severity"] == "high" and data["passed"] is True and data["summary"] == {"mandatory": 0, "advisory": 1}


@pytest.mark.parametrize(("args", "words"), [
    # The settings and the graph refuse these before anything renders: exit 2 naming the key.
    (["--set", "services.grafana.image=grafana/grafana:latest"], "optiinfra:services.grafana.image"),
    (["--set", "services.redis.hostPort=8080", "--set", "services.redis.publish=true"],
     "host port 8080 is already taken by orchestrator"),
    (["--secret", "grafanaAdminPassword=admin"], "well-known default credential"),
    (["--policy-config", "no/such/file.json"], "there is no file"),
])
def test_cli_user_errors_exit_2(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--stack", "dev", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


# ---- the pack as the Pulumi CLI loads it ---------------------------------------------------------------------------

FAKE_SECRET = "fake-secret-value-Zq81"


def engine_form(value: Any) -> Any:
    """Offline inputs as the engine sends them: markers back to marked (fake) secrets and
    pulumi-policy's unknown sentinel."""
    from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    if isinstance(value, dict):
        return {k: engine_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [engine_form(v) for v in value]
    if value == offline.SECRET:
        return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": FAKE_SECRET}
    if isinstance(value, str) and value.endswith("=" + offline.SECRET):
        return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": value.split("=", 1)[0] + "=" + FAKE_SECRET}
    if value == offline.UNKNOWN:
        return UNKNOWN_STRING_VALUE
    return value


def unwrapped(value: Any) -> Any:
    """What the rules see of offline inputs under the engine: the (fake) secret values
    themselves, as pulumi-policy's public `args.props` hands them over."""
    if isinstance(value, dict):
        return {k: unwrapped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrapped(v) for v in value]
    if value == offline.SECRET:
        return FAKE_SECRET
    if isinstance(value, str) and value.endswith("=" + offline.SECRET):
        return value.split("=", 1)[0] + "=" + FAKE_SECRET
    return value


def engine_props(props: dict[str, Any]) -> Any:
    """`args.props` as pulumi-policy builds it from an engine request (what Analyze does;
    the test may use the SDK's internals to reproduce it, the pack does not)."""
    from google.protobuf import json_format, struct_pb2
    from pulumi_policy.deserialize import deserialize_properties
    from pulumi_policy.proxy import unknown_checking_proxy

    message = struct_pb2.Struct()
    message.update(engine_form(props))
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(message)))


def test_the_adapter_gives_rules_the_offline_inputs_with_secrets_unwrapped() -> None:
    # Unknowns become the offline marker, numbers ints again; secrets arrive as their values
    # (public API), so the adapter says so: secrets_marked=False.
    unknown = 0
    for res in dev_resources() + prod_resources():
        seen = pack.resource(res.urn, res.type, res.name, engine_props(dict(res.props)), res.protect)
        assert seen.props == unwrapped(dict(res.props)), res.name
        assert seen.protect == res.protect and seen.secrets_marked is False
        unknown += json.dumps(res.props).count(offline.UNKNOWN)
    assert unknown  # the renders do hold values not known before deployment (image IDs)


class Analyzers:
    """policies/__main__.py started as the CLI starts it (`python -m pulumi.policy <engine> .`
    in the pack directory, nothing of the project on PYTHONPATH and no stack config: the
    pack needs neither): the real server, one per stack the tests name, stopped when the
    module's tests are done."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.stubs: dict[tuple[str, tuple[str, ...]], Any] = {}

    def __call__(self, stack: str, *sets: str) -> Any:
        import grpc
        from pulumi.runtime.proto import analyzer_pb2_grpc

        if (stack, sets) not in self.stubs:
            env = {k: v for k, v in os.environ.items() if k not in ("PULUMI_CONFIG", "PULUMI_STACK")}
            env.update({"PULUMI_PROJECT": "optiinfra", "PULUMI_DRY_RUN": "true", "PYTHONPATH": ""})
            proc = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
                                    cwd=core.PACK_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            self.procs.append(proc)
            watchdog = threading.Timer(120, proc.kill)  # never hang the suite on a broken pack
            watchdog.start()
            port = (proc.stdout.readline() if proc.stdout else "").strip()
            watchdog.cancel()
            assert port.isdigit(), proc.stderr.read() if proc.stderr else "no output"
            self.stubs[(stack, sets)] = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        return self.stubs[(stack, sets)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def analyzers() -> Iterator[Analyzers]:
    servers = Analyzers()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def analyzer(analyzers: Analyzers) -> Any:
    return analyzers("dev")


def _policy_config(settings: dict[str, core.Setting]) -> Any:
    from pulumi.runtime.proto import analyzer_pb2

    levels = {"advisory": analyzer_pb2.ADVISORY, "mandatory": analyzer_pb2.MANDATORY,
              "disabled": analyzer_pb2.DISABLED, "remediate": analyzer_pb2.REMEDIATE}
    request = analyzer_pb2.ConfigureAnalyzerRequest()
    for name, s in settings.items():
        request.policyConfig[name].enforcementLevel = levels[s.level]
        request.policyConfig[name].properties.update(s.config)
    return request


def _analyze(stub: Any, res: core.Resource, sent: dict[str, Any] | None = None) -> list[tuple[str, str, int]]:
    """Diagnostics for one resource; `sent` replaces its engine-form properties."""
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    props = struct_pb2.Struct()
    props.update(sent if sent is not None else engine_form(dict(res.props)))
    response = stub.Analyze(analyzer_pb2.AnalyzeRequest(
        urn=res.urn, type=res.type, name=res.name, properties=props,
        options=analyzer_pb2.AnalyzerResourceOptions(protect=res.protect)))
    return [(d.policyName, d.message, d.enforcementLevel) for d in response.diagnostics]


def test_the_pack_publishes_every_rule_with_severity_and_config_schema(analyzer: Any) -> None:
    from google.protobuf import empty_pb2, json_format
    from pulumi.runtime.proto import analyzer_pb2

    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == core.PACK_NAME and info.supportsConfig
    published = {p.name: p for p in info.policies}
    assert list(published) == rules.names()
    for rule in rules.RULES:
        p = published[rule.name]
        assert p.description == rule.description
        assert analyzer_pb2.PolicySeverity.Name(p.severity) == f"POLICY_SEVERITY_{rule.severity.upper()}"
        assert p.enforcementLevel == analyzer_pb2.ADVISORY
        stack = rule.check_stack is not None
        assert p.policy_type == (analyzer_pb2.POLICY_TYPE_STACK if stack else analyzer_pb2.POLICY_TYPE_RESOURCE)
        assert set(json_format.MessageToDict(p.configSchema.properties)) == set(rule.config)


@pytest.mark.parametrize(("stack", "bad", "policy", "count"), [
    ("dev", "services.grafana.bindAddress=0.0.0.0", "host-port-bind-address", 1),
    ("prod", "services.portal.dependsOn=[postgres]", "tier-isolation", 2),  # both NetworkPolicies of the edge
])
def test_the_pack_under_the_cli_finds_what_the_offline_check_finds(analyzers: Analyzers, stack: str, bad: str,
                                                                   policy: str, count: int) -> None:
    server = analyzers(stack, bad)
    result = checked(stack, bad)
    server.Configure(_policy_config(result.settings))
    expected = sorted((f.violation.policy, f.violation.urn, f.violation.message) for f in result.findings)
    assert [p for p, _, _ in expected] == [policy] * count
    got = []
    for res in result.resources:
        for name, message, _ in _analyze(server, res):
            description, _, detail = message.partition("\n")
            assert description == rules.by_name(name).description
            got.append((name, res.urn, detail))
    assert sorted(got) == expected


def _literal_env(name: str, value: str) -> Callable[[dict[str, Any]], object]:
    def edit(props: dict[str, Any]) -> None:
        env = props["spec"]["template"]["spec"]["containers"][0]["env"]
        env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]
    return edit


def test_the_pack_tells_a_secret_from_plaintext_and_never_shows_the_value(analyzer: Any) -> None:
    from pulumi.runtime.proto import analyzer_pb2

    # Under the engine a secret arrives unwrapped, so the pack tells them apart by structure:
    # on Kubernetes a credential comes through secretKeyRef (the Secret's value never enters
    # the pod spec); a literal value is stored in plaintext, whatever the program marked.
    analyzer.Configure(_policy_config(core.reconcile(rules.RULES, PROD_CONFIG, source="prod.json")))
    grafana = next(r for r in prod_resources() if r.type == rules.STATEFULSET and r.name == "grafana")
    assert _analyze(analyzer, grafana) == []  # GF_SECURITY_ADMIN_PASSWORD through secretKeyRef: fine
    plain = changed([grafana], rules.STATEFULSET, "grafana",
                    _literal_env("GF_SECURITY_ADMIN_PASSWORD", FAKE_SECRET))[0]
    diags = _analyze(analyzer, plain)
    assert [(p, level) for p, _, level in diags] == [("no-plaintext-credentials", analyzer_pb2.MANDATORY)]
    assert all(FAKE_SECRET not in m for _, m, _ in diags)


def test_under_the_engine_a_docker_env_value_is_judged_by_its_value_not_its_mark(analyzer: Any) -> None:
    from pulumi.runtime.proto import analyzer_pb2
    from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY

    analyzer.Configure(_policy_config(core.reconcile(rules.RULES, PROD_CONFIG, source="prod.json")))
    grafana = next(r for r in dev_resources() if r.type == CONTAINER and r.name == "grafana")
    # Secret env entries arrive unwrapped: no false alarm on the committed render ...
    assert _analyze(analyzer, grafana) == []
    # ... and, the mark being gone, a plaintext one is not told apart here (the offline check
    # sees the marks: test_plaintext_credentials_fail; the program makes every credential secret).
    plain = changed([grafana], CONTAINER, "grafana", lambda p: set_env(p, "GF_SECURITY_ADMIN_PASSWORD", FAKE_SECRET))[0]
    assert _analyze(analyzer, plain) == []
    # A well-known default is refused whether it travels as a secret or not, and never printed.
    for marked in (True, False):
        sent = engine_form(dict(grafana.props))
        entry = "GF_SECURITY_ADMIN_PASSWORD=changeme"
        sent["envs"] = [e for e in sent["envs"] if "GF_SECURITY_ADMIN_PASSWORD" not in json.dumps(e)] + [
            {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": entry} if marked else entry]
        diags = _analyze(analyzer, grafana, sent)
        assert [(p, level) for p, _, level in diags] == [("no-default-credentials", analyzer_pb2.MANDATORY)]
        assert all("changeme" not in m.partition("\n")[2] for _, m, _ in diags)  # after the description


def test_the_pack_runs_stack_policies(analyzer: Any) -> None:
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    analyzer.Configure(_policy_config(core.reconcile(rules.RULES, DEV_CONFIG, source="dev.json")))
    resources = changed(dev_resources(), CONTAINER, "redis", publish(8080))
    request = analyzer_pb2.AnalyzeStackRequest()
    for res in resources:
        props = struct_pb2.Struct()
        props.update(engine_form(dict(res.props)))
        request.resources.append(analyzer_pb2.AnalyzerResource(
            urn=res.urn, type=res.type, name=res.name, properties=props,
            options=analyzer_pb2.AnalyzerResourceOptions(protect=res.protect)))
    diags = analyzer.AnalyzeStack(request).diagnostics
    assert sorted((d.policyName, d.urn.rsplit("::", 1)[-1]) for d in diags) == [
        ("unique-host-ports", "orchestrator"), ("unique-host-ports", "redis")]
