"""Where alerts go: the notifier's config from `alerting.receivers`, checked with amtool, and
its receivers' secrets, which reach Alertmanager as files and nowhere else in plaintext.

amtool is built from github.com/prometheus/alertmanager/cmd/amtool at the catalog image's
version by scripts/tools.sh (Go, once, cached); without it the amtool tests skip with the
reason, unless OPTIINFRA_REQUIRE_TOOLS=1.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import offline
from infra.backends.docker import secret_file_wrapper
from infra.catalog import default_catalog
from infra.model import DOCKER_SECRET_DIR, SECRET_DIR, Service
from infra.settings import ConfigError
from tests.conftest import render

from .test_alerts import generated
from .tools import ROOT, go_tool, unavailable

NOTIFIER: Service = next(s for s in default_catalog().services.values() if s.notifier)
CONFIG = Path(next(f.path for f in NOTIFIER.files)).name

# Stand-ins for what a user sets with `pulumi config set --secret`: each must never show in plaintext.
WEBHOOK = "https://hooks.example.com/services/canary-WEBHOOK-token-7f3a"
SLACK = "https://hooks.slack.com/services/T000/B000/canary-SLACK-token-91c2"
SMTP = "canary-SMTP-password-5d8e"
ALL_SECRETS = (f"alertWebhookUrl={WEBHOOK}", f"alertSlackUrl={SLACK}", f"alertSmtpPassword={SMTP}")
HEARTBEAT = "https://hc-ping.example.com/canary-HEARTBEAT-uuid-0b1e"
EMAIL = {"to": "oncall@example.com", "from": "alertmanager@example.com", "smarthost": "smtp.example.com:587"}

# (receivers setting, secrets): none, each kind alone, email without a login, all three.
RECEIVERS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "none": ({}, ()),
    "webhook": ({"webhook": {}}, (ALL_SECRETS[0],)),
    "slack": ({"slack": {"channel": "#optiinfra-alerts"}}, (ALL_SECRETS[1],)),
    "email": ({"email": {**EMAIL, "username": "alertmanager"}}, (ALL_SECRETS[2],)),
    "email-no-login": ({"email": EMAIL}, ()),
    "all": ({"webhook": {"severities": ["critical"]}, "slack": {"channel": "#optiinfra-alerts"},
             "email": {**EMAIL, "username": "alertmanager"}}, ALL_SECRETS),
    "heartbeat": ({"webhook": {}, "heartbeat": {}}, (ALL_SECRETS[0], f"alertHeartbeatUrl={HEARTBEAT}")),
}


def _render(stack: str, case: str) -> offline.Render:
    receivers, secrets = RECEIVERS[case]
    # Always set: the committed staging and prod name a webhook and a heartbeat of their own.
    return render(stack, f"alerting.receivers={json.dumps(receivers)}", secrets=secrets)


def _config(r: offline.Render) -> dict[str, Any]:
    return dict(yaml.safe_load(generated(r, CONFIG)))


def _amtool() -> Path:
    tool = go_tool("amtool")
    if isinstance(tool, str):
        unavailable(tool)
    return tool


def _check(tool: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), "check-config", str(path)], capture_output=True, text=True, timeout=60)


# ---- amtool --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(RECEIVERS))
@pytest.mark.parametrize("stack", ["dev", "prod", "staging"])
def test_amtool_accepts_the_config_of_every_stack_and_receiver(stack: str, case: str, tmp_path: Path) -> None:
    tool = _amtool()
    (tmp_path / CONFIG).write_text(generated(_render(stack, case), CONFIG))
    done = _check(tool, tmp_path / CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    # The null receiver, plus one per severity some receiver takes (none: only the null one).
    receivers, _ = RECEIVERS[case]
    severities = {s for k, r in receivers.items() if k != "heartbeat"
                  for s in r.get("severities", ["critical", "warning"])}
    # ... and the heartbeat receiver, which gets the Watchdog only.
    assert f" - {1 + len(severities) + ('heartbeat' in receivers)} receivers" in done.stdout


@pytest.mark.parametrize(("mutation", "words"), [
    (lambda c: c["route"].update(receiver="pager"), "undefined receiver"),
    (lambda c: c["receivers"][1]["webhook_configs"][0].update(url="http://x", url_file="/x"), "url"),
    (lambda c: c["receivers"][1]["webhook_configs"][0].update(urlfile="/x"), "urlfile"),
    (lambda c: c.pop("route"), "no route"),
])
def test_amtool_fails_a_broken_config(mutation: Any, words: str, tmp_path: Path) -> None:
    """The check can fail: each of these mutations of a good config is refused."""
    tool = _amtool()
    config = _config(_render("prod", "all"))
    mutation(config)
    (tmp_path / CONFIG).write_text(yaml.safe_dump(config))
    done = _check(tool, tmp_path / CONFIG)
    assert done.returncode != 0 and words in (done.stdout + done.stderr), done.stdout + done.stderr


# ---- routing -------------------------------------------------------------------------------------

def test_with_no_receiver_every_alert_goes_to_the_null_receiver_and_plan_says_so() -> None:
    for stack in ("dev", "prod"):
        r = _render(stack, "none")
        config = _config(r)
        # Everything ends at `null`; the one route is the Watchdog's, to `null` as well.
        assert config["route"]["receiver"] == "null"
        assert [x["receiver"] for x in config["route"]["routes"]] == ["null"]
        assert config["receivers"] == [{"name": "null"}]
    done = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "prod", "--set", "alerting.receivers={}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Alerts: go nowhere until a receiver is set: optiinfra:alerting.receivers" in done.stdout


def test_routes_are_by_severity_and_grouped_by_alert_and_service() -> None:
    config = _config(_render("prod", "all"))
    route = config["route"]
    assert route["group_by"] == ["alertname", "service"]
    assert [(x["matchers"], x["receiver"]) for x in route["routes"]] == [
        (['alertname="Watchdog"'], "null"), (['severity="critical"'], "critical"), (['severity="warning"'], "warning")]
    by_name = {x["name"]: x for x in config["receivers"]}
    # The webhook takes critical alerts only; Slack and mail take both.
    assert set(by_name["critical"]) == {"name", "webhook_configs", "slack_configs", "email_configs"}
    assert set(by_name["warning"]) == {"name", "slack_configs", "email_configs"}
    # A critical alert about a service holds back its warnings.
    assert config["inhibit_rules"] == [{"source_matchers": ['severity="critical"'],
                                        "target_matchers": ['severity="warning"'], "equal": ["service"]}]
    mail = by_name["warning"]["email_configs"][0]
    assert mail["smarthost"] == EMAIL["smarthost"] and mail["require_tls"] is True


# ---- the secrets: files only ---------------------------------------------------------------------

def _integration_files(config: dict[str, Any]) -> set[str]:
    return {v for r in config["receivers"] for key, items in r.items() if key.endswith("_configs")
            for item in items for k, v in item.items() if k.endswith("_file")}


def test_on_kubernetes_each_secret_is_a_mounted_file_the_config_names() -> None:
    r = _render("prod", "all")
    files = _integration_files(_config(r))
    assert len(files) == 3 and all(f.startswith(SECRET_DIR + "/") for f in files)
    deployment = next(x for x in r.resources if x.type.endswith("Deployment") and x.name == NOTIFIER.name)
    spec = deployment.inputs["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if "secret" in v)
    mounted = {f"{SECRET_DIR}/{item['path']}" for item in volume["secret"]["items"]}
    assert files <= mounted
    container = spec["containers"][0]
    assert any(m["mountPath"] == SECRET_DIR and m["readOnly"] for m in container["volumeMounts"])
    # Nothing of them in the environment or the arguments. The one variable is the Go runtime's
    # memory setting (infra/runtime.py): 64 MiB limit x 0.8 = 51.2 -> 51MiB, no secret.
    assert container.get("env") == [{"name": "GOMEMLIMIT", "value": "51MiB"}]
    assert all("_file" not in a and "://" not in a for a in container["args"])


def test_on_docker_the_wrapper_writes_each_secret_where_the_config_reads_it(tmp_path: Path) -> None:
    r = _render("dev", "all")
    files = _integration_files(_config(r))
    assert len(files) == 3 and all(f.startswith(DOCKER_SECRET_DIR + "/") for f in files)
    container = next(x for x in r.resources if x.type.endswith("Container") and x.name == NOTIFIER.name)
    assert DOCKER_SECRET_DIR in container.inputs["tmpfs"]  # memory, never the container's disk
    entrypoint = container.inputs["entrypoints"]
    assert entrypoint[:2] == ["sh", "-c"] and not any(s in " ".join(entrypoint) for s in (WEBHOOK, SLACK, SMTP))
    # Every variable a secret, but the Go runtime's memory setting (64 MiB limit x 0.8 = 51MiB).
    assert all(e.endswith("=[secret]") for e in container.inputs["envs"] if e != "GOMEMLIMIT=51MiB")
    assert "GOMEMLIMIT=51MiB" in container.inputs["envs"]
    # Run the wrapper itself: into a directory of this test, exec'ing `env` for the image's program.
    eff = r.model.services[NOTIFIER.name].service
    script = secret_file_wrapper(eff)[2].replace(DOCKER_SECRET_DIR, str(tmp_path))
    script = script.replace(" ".join(NOTIFIER.entrypoint), "env")
    values = {f.replaces[0]: v for f, v in zip(eff.secret_files, (WEBHOOK, SLACK, SMTP), strict=True)}
    done = subprocess.run(["sh", "-c", script, "sh"], env={"PATH": os.environ["PATH"], **values},
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert not any(v in done.stdout for v in values.values()), "the program must not inherit the variables"
    for f, value in zip(eff.secret_files, values.values(), strict=True):
        path = tmp_path / Path(f.path_on("docker")).name
        assert path.read_text() == value
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_receivers_the_notifier_gets_no_secret_and_no_wrapper() -> None:
    dev = next(x for x in _render("dev", "none").resources if x.type.endswith("Container") and x.name == NOTIFIER.name)
    # No wrapper and no variable but the Go runtime's memory setting (64 MiB limit x 0.8 = 51MiB).
    assert "entrypoints" not in dev.inputs and dev.inputs["envs"] == ["GOMEMLIMIT=51MiB"]
    r = _render("prod", "email-no-login")
    deployment = next(x for x in r.resources if x.type.endswith("Deployment") and x.name == NOTIFIER.name)
    assert not any("secret" in v for v in deployment.inputs["spec"]["template"]["spec"]["volumes"])
    assert not any(x.type.endswith("RandomPassword") and x.name.startswith("alert") for x in r.resources)


def test_a_receiver_secret_is_never_in_plaintext_in_the_plan_or_manifests(tmp_path: Path) -> None:
    receivers, secrets = RECEIVERS["all"]
    flags = ["--set", f"alerting.receivers={json.dumps(receivers)}"]
    for s in secrets:
        flags += ["--secret", s]
    out = {}
    for args in (["plan", "--stack", "prod"], ["plan", "--stack", "prod", "--json"], ["plan", "--stack", "dev"],
                 ["render", "--stack", "prod", "--out", str(tmp_path)]):
        done = subprocess.run([sys.executable, "-m", "infra", *args, *flags], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert not any(v in done.stdout + done.stderr for v in (WEBHOOK, SLACK, SMTP)), args
        out[" ".join(args)] = done.stdout
    assert "Alerts: critical -> webhook, slack, email; warning -> slack, email" in out["plan --stack prod"]
    manifests = [d for f in sorted(tmp_path.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == NOTIFIER.name for d in manifests)
    for d in manifests:
        text = json.dumps(d)
        assert not any(v in text for v in (WEBHOOK, SLACK, SMTP)), (d["kind"], d["metadata"]["name"])
    # The render does hold them, as secrets only (what the test harness keeps apart).
    r = _render("prod", "all")
    assert {WEBHOOK, SLACK, SMTP} <= set(r.secret_values)
    assert not any(v in json.dumps(r.outputs) for v in (WEBHOOK, SLACK, SMTP))


# ---- bad input: one line naming the key ----------------------------------------------------------

@pytest.mark.parametrize(("sets", "secrets", "key", "words"), [
    ([], (ALL_SECRETS[1],), "optiinfra:alertSlackUrl", "the slack receiver that would use it is off"),
    (['alerting.receivers={"webhook": {}}'], ("alertWebhookUrl=http://hooks.example.com/canary-plain-http",),
     "optiinfra:alertWebhookUrl", "is not an https:// URL"),
    ([f'alerting.receivers={json.dumps({"email": {**EMAIL, "smarthost": "smtp.example.com:25"}})}'], (),
     "optiinfra:alerting.receivers.email.smarthost", "port 25 is not one the notifier may reach"),
    (['alerting.receivers={"slack": {}}'], (), "optiinfra:alerting.receivers.slack.channel", "is required"),
    (['alerting.receivers={"webhook": {"severities": []}}'], (), "optiinfra:alerting.receivers.webhook.severities",
     "lists no severity"),
    (['alerting.receivers={"pager": {}}'], (), "optiinfra:alerting.receivers.pager", "not a known setting"),
    ([f"services.{NOTIFIER.name}.enabled=false", 'alerting.receivers={"webhook": {}}'], (ALL_SECRETS[0],),
     "optiinfra:alerting.receivers.webhook", "no notifier is deployed"),
])
def test_a_receiver_that_cannot_apply_is_refused(sets: list[str], secrets: tuple[str, ...], key: str,
                                                  words: str) -> None:
    with pytest.raises(ConfigError) as err:
        render("dev", *sets, secrets=secrets)
    assert err.value.key == key and words in str(err.value)
    assert not any(v in str(err.value) for v in (WEBHOOK, "canary-plain-http"))


def test_a_receiver_url_is_required_by_the_program_but_stood_in_offline() -> None:
    """Offline (plan, render, check: the committed staging and prod name their receivers, not
    their URLs) a missing URL stands in, marked secret; the program under the engine refuses it."""
    from infra import stack as infra_stack
    from infra.credentials import supplied

    offline_cfg = infra_stack.read("prod")
    assert {"optiinfra:alertWebhookUrl", "optiinfra:alertHeartbeatUrl"} <= offline_cfg.secret_keys
    model = infra_stack.load_stack(offline_cfg.values)
    engine_form = {k: v for k, v in offline_cfg.values.items() if k != "optiinfra:alertWebhookUrl"}
    with pytest.raises(ConfigError) as err:
        supplied(model, engine_form)
    assert err.value.key == "optiinfra:alertWebhookUrl" and "is not set, but the webhook receiver" in str(err.value)
    # A receiver the file does not turn on gets no stand-in.
    assert "optiinfra:alertSlackUrl" not in offline_cfg.values


def test_a_plaintext_receiver_secret_is_refused_with_the_command_that_sets_it() -> None:
    done = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "prod", "--set",
                           'alerting.receivers={"webhook": {}}', "--set", f"alertWebhookUrl={WEBHOOK}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("error: config key 'optiinfra:alertWebhookUrl': is set in plaintext")
    assert "pulumi config set --secret alertWebhookUrl" in lines[0] and WEBHOOK not in done.stderr


def test_with_no_receiver_plan_says_so_and_advises_what_the_stack_accepts() -> None:
    """The advice follows the credentials' source: with the External Secrets Operator a stack
    secret would be refused, so the line points at the store instead."""
    from infra import notifications

    plain = notifications.status_line(render("prod", "alerting.receivers={}").model)
    assert "go nowhere" in plain and "pulumi config set --secret alertWebhookUrl" in plain
    eso = notifications.status_line(render("prod", "alerting.receivers={}",
                                           "kubernetes.externalSecrets.store=vault-backend").model)
    assert "go nowhere" in eso and "pulumi config set" not in eso and "ClusterSecretStore" in eso
    # Following that advice is accepted: the receiver on, its secret from the store.
    on = render("prod", "kubernetes.externalSecrets.store=vault-backend", "alerting.receivers.webhook={}")
    assert "go nowhere" not in notifications.status_line(on.model)


def test_a_receiver_address_the_egress_cannot_reach_is_refused_on_kubernetes() -> None:
    """prod's notifier may leave the cluster only to outsideCidrs minus outsideExcept (the private
    ranges by default), so a webhook on a private address would fail at the first alert."""
    private = ("alertWebhookUrl=https://10.1.2.3/canary-private",)
    with pytest.raises(ConfigError) as err:
        render("prod", 'alerting.receivers={"webhook": {}}', secrets=private)
    assert err.value.key == "optiinfra:alertWebhookUrl" and "egress does not reach" in str(err.value)
    assert "canary-private" not in str(err.value)
    # Reachable once that range is not excepted; and on Docker there is no such egress rule.
    assert render("prod", 'alerting.receivers={"webhook": {}}', 'kubernetes.outsideExcept=["192.168.0.0/16"]',
                  secrets=private).resources
    assert render("dev", 'alerting.receivers={"webhook": {}}', secrets=private).resources


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_amtool_routes_the_watchdog_to_the_heartbeat_only_and_nothing_else_there(stack: str, tmp_path: Path) -> None:
    tool = _amtool()
    path = tmp_path / CONFIG
    path.write_text(generated(_render(stack, "heartbeat"), CONFIG))

    def receivers(*labels: str) -> str:
        done = subprocess.run([str(tool), "config", "routes", "test", f"--config.file={path}", *labels],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()
    assert receivers("alertname=Watchdog", "severity=none") == "heartbeat"
    assert receivers("alertname=TargetDown", "severity=critical", "service=grafana") == "critical"
    assert receivers("alertname=ServiceSlow", "severity=warning", "service=portal") == "warning"
    beat = _config(_render(stack, "heartbeat"))["route"]["routes"][0]
    assert beat["receiver"] == "heartbeat" and beat["repeat_interval"] == "1m"
    # Without a heartbeat receiver the Watchdog still reaches nobody else.
    path.write_text(generated(_render(stack, "webhook"), CONFIG))
    assert receivers("alertname=Watchdog", "severity=none") == "null"
