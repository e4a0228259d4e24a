"""Bad stack config and flags: one clear message naming the key and the fix, exit 2,
nothing registered, no traceback. Exercised through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from infra import offline
from infra.catalog import default_catalog
from infra.settings import ConfigError

from .tools import ROOT


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


BAD = [
    # (override flags, key named in the message, words of the problem)
    (["--set", "services.grafanna.memory=1Gi"], "optiinfra:services.grafanna", "not a service"),
    (["--set", "services.grafana.hostPort=70000"], "optiinfra:services.grafana.hostPort", "outside 1-65535"),
    (["--set", "services.grafana.hostPort=0"], "optiinfra:services.grafana.hostPort", "outside 1-65535"),
    (["--set", "services.grafana.hostPort=abc"], "optiinfra:services.grafana.hostPort", "'abc'"),
    (["--set", "services.flower.hostPort=3000"], "optiinfra:services.flower.hostPort",
     "host port 3000 is already taken by grafana web"),
    (["--set", "services.grafana.bindAddress=localhost"], "optiinfra:services.grafana.bindAddress",
     "not an IP address"),
    (["--set", "services.grafana.image=grafana/grafana"], "optiinfra:services.grafana.image", "has no tag"),
    (["--set", "services.grafana.image=grafana/grafana:latest"], "optiinfra:services.grafana.image", "'latest'"),
    (["--set", "services.redis.memory=lots"], "optiinfra:services.redis.memory", "not a memory size"),
    (["--set", "services.postgres.enabled=false"], "optiinfra:services.postgres.enabled", "is disabled but"),
    (["--set", "services.portal.dependsOn=[nosuch]"], "optiinfra:services.portal.dependsOn", "not a service"),
    (["--set", "services.postgres.dependsOn=[redis]", "--set", "services.redis.dependsOn=[postgres]"],
     "dependsOn", "dependency cycle"),
    (["--set", "services.postgres.dependsOn=[portal]"], "optiinfra:services.postgres.dependsOn",
     "tiers start in the order"),
    (["--set", "target=swarm"], "optiinfra:target", "not valid"),
    (["--set", "colour=blue"], "optiinfra:colour", "not a known setting"),
    (["--set", "services.grafana.replicas=3"], "optiinfra:services.grafana.replicas", "exactly one instance"),
    (["--secret", "postgresPassword=changeme"], "optiinfra:postgresPassword", "well-known default"),
    (["--set", "no-equals-sign"], "--set", "not KEY=VALUE"),
    # A typo inside a nested object names the keys allowed there and the closest one.
    (["--set", "services.grafana.hostport=3100"], "optiinfra:services.grafana.hostport", "did you mean 'hostPort'"),
    (["--set", "kubernetes.ingress.classNam=x"], "optiinfra:kubernetes.ingress.classNam", "did you mean 'className'"),
    (["--set", "cloudProviders=aws"], "optiinfra:cloudProviders", "is not a list"),
    (["--set", "services.grafana=3"], "optiinfra:services.grafana", "is not a map of settings"),
    # Values the target would reject later are refused where they are read.
    (["--set", "images.registry=GHCR.io/optiinfra"], "optiinfra:images.registry", "not a registry path"),
    (["--set", "services.grafana.image=Grafana/grafana:11.3.1"], "optiinfra:services.grafana.image", "upper-case"),
    (["--set", "docker.networkPrefix=my net"], "optiinfra:docker.networkPrefix", "cannot start a network name"),
    (["--set", "kubernetes.storageClass=Fast_SSD"], "optiinfra:kubernetes.storageClass", "not a Kubernetes object"),
    (["--set", "kubernetes.ingress.tlsSecretName=My TLS"], "optiinfra:kubernetes.ingress.tlsSecretName",
     "not a Kubernetes object"),
    (["--set", "kubernetes.ingress.className="], "optiinfra:kubernetes.ingress.className", "not a Kubernetes object"),
    # A credential never sits in plaintext config.
    (["--set", "postgresPassword=Abcdefgh12345"], "optiinfra:postgresPassword", "pulumi config set --secret"),
    # Settings that cannot apply are refused, never ignored.
    (["--set", "kubernetes.storage.portal=1Gi"], "optiinfra:kubernetes.storage.portal", "has no volume"),
    (["--set", "services.data-collector.replicas=3"], "optiinfra:services.data-collector.replicas",
     "does not apply on Docker"),
    (["--set", "target=kubernetes", "--set", "services.grafana.hostPort=3100"], "optiinfra:services.grafana.hostPort",
     "does not apply on Kubernetes"),
    # Adopting an existing Docker volume: a volume the service has, a valid name, Docker only, once.
    (["--set", "services.postgres.volumes.dta.existing=optiinfra_postgres_data"],
     "optiinfra:services.postgres.volumes.dta", "postgres has no volume 'dta'"),
    (["--set", "services.portal.volumes.data.existing=optiinfra_portal_data"], "optiinfra:services.portal.volumes.data",
     "portal has no volume 'data'"),
    (["--set", "services.postgres.volumes.data.existing=/var/lib/docker/volumes/x"],
     "optiinfra:services.postgres.volumes.data.existing", "is not a Docker volume name"),
    (["--set", "services.postgres.volumes.data.exists=optiinfra_postgres_data"],
     "optiinfra:services.postgres.volumes.data.exists", "did you mean 'existing'"),
    (["--set", "target=kubernetes", "--set", "services.postgres.volumes.data.existing=optiinfra_postgres_data"],
     "optiinfra:services.postgres.volumes.data.existing", "does not apply on Kubernetes"),
    (["--set", "services.postgres.volumes.data.existing=shared",
      "--set", "services.redis.volumes.data.existing=shared"],
     "optiinfra:services.redis.volumes.data.existing", "already mounted by postgres.volumes.data"),
    (["--set", "services.postgres.volumes.data.existing=optiinfra-redis-data"],
     "optiinfra:services.postgres.volumes.data.existing", "the volume the program creates for redis data"),
    # A misspelt key inside a setting that is off unless set (`Model | None`) is named, with the
    # spelling it missed, not reported as the correct key missing.
    (["--set", "target=kubernetes", "--set", "kubernetes.externalSecrets.stor=vault"],
     "optiinfra:kubernetes.externalSecrets.stor", "did you mean 'store'"),
    (["--set", 'alerting.receivers.slack={chanel: "#alerts"}'],
     "optiinfra:alerting.receivers.slack.chanel", "did you mean 'channel'"),
]


@pytest.mark.parametrize(("flags", "key", "problem"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_value_gives_one_clear_error(flags: list[str], key: str, problem: str) -> None:
    pairs = list(zip(flags[::2], flags[1::2], strict=True))
    with pytest.raises(ConfigError) as err:
        offline.render("dev", [v for f, v in pairs if f == "--set"], [v for f, v in pairs if f == "--secret"])
    message = str(err.value)
    assert key in message and problem in message
    assert "Fix:" in message


@pytest.mark.parametrize("flags", [
    ["--set", "services.grafana.hostPort=abc"],
    ["--set", "services.postgres.dependsOn=[redis]", "--set", "services.redis.dependsOn=[postgres]"],
    ["--secret", "postgresPassword=changeme"],
])
def test_cli_exit_code_and_message(flags: list[str]) -> None:
    proc = cli("plan", "--stack", "dev", *flags)
    assert proc.returncode == 2
    assert proc.stdout == ""  # nothing rendered
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config key '")
    assert "Traceback" not in proc.stderr


def test_unknown_stack_and_unknown_flag() -> None:
    proc = cli("plan", "--stack", "no-such-stack")
    assert proc.returncode == 2 and "Pulumi.no-such-stack.yaml" in proc.stderr and "dev" in proc.stderr
    proc = cli("plan", "--stack", "dev", "--frobnicate")
    assert proc.returncode == 2 and "unrecognized arguments: --frobnicate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_json_lists_a_container_per_docker_service_5_tiers_5_networks() -> None:
    secret = "Cli-canary-Secret-42"
    proc = cli("plan", "--stack", "dev", "--json", "--secret", f"clickhousePassword={secret}")
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout
    plan = json.loads(proc.stdout)
    steps = plan["steps"]
    assert all(s["op"] == "create" for s in steps)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for s in steps:
        by_type.setdefault(s["newState"]["type"], []).append(s)
    tiers = {s["urn"] for s in by_type["optiinfra:platform:Tier"]}
    assert len(tiers) == 5
    assert len(by_type["docker:index/network:Network"]) == 5
    # A container for every service but the Kubernetes-only ones (the sign-in proxy,
    # kube-state-metrics, the Pushgateway), and two one-shot containers per store whose clients
    # rotate (postgres, redis: the credential files, then the rotation applied in the running store) = 4.
    services = sum(not (s.authenticator or s.kubernetes_only or s.push_gateway)
                   for s in default_catalog().services.values())
    assert len(by_type["docker:index/container:Container"]) == services + 4
    assert all(s["newState"]["parent"] in tiers for s in by_type["docker:index/container:Container"])
    ch = next(s for s in by_type["docker:index/container:Container"] if s["urn"].endswith("::clickhouse"))
    assert "CLICKHOUSE_PASSWORD=[secret]" in ch["newState"]["inputs"]["envs"]
    assert ch["newState"]["protect"] is False
    vol = next(s for s in by_type["docker:index/volume:Volume"] if s["urn"].endswith("::clickhouse-data"))
    assert vol["newState"]["protect"] is True


def test_plan_text_groups_by_tier() -> None:
    proc = cli("plan", "--stack", "dev")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    positions = [out.index(f"\n{t} (") for t in ("databases", "monitoring", "core", "agents", "frontend")]
    assert positions == sorted(positions)
    assert "Container optiinfra-portal  image ghcr.io/optiinfra/portal:0.1.0  ports 127.0.0.1:3001->3000" in out
