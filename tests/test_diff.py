"""`python -m infra diff`: offline diffs, what a port change sets off, safe replacement.

The expected sets below are written from a reading of the catalog (who carries whose URL,
who is scraped, who keeps a volume), not computed by the code under test.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from infra import cli, offline
from infra import stack as infra_stack
from infra.catalog import default_catalog
from infra.diffing import compare, impact, report, snapshot
from infra.diffing import replace as replace_table
from infra.model import Catalog
from infra.settings import ConfigError
from infra.stack import ROOT
from policies.optiinfra_policies import vocabulary

KEY = b"test-fingerprint-key-0123456789ab"
CONTAINER = "docker:index/container:Container"
STS = "kubernetes:apps/v1:StatefulSet"
DEPLOY = "kubernetes:apps/v1:Deployment"


def _catalog(moves: tuple[tuple[str, str, int], ...]) -> Catalog | None:
    """The catalog with some container ports moved: ((service, port name, new port), ...)."""
    if not moves:
        return None
    cat = default_catalog()
    for service, port, number in moves:
        s = cat.services[service]
        cat.services[service] = replace(s, ports=tuple(replace(p, container=number) if p.name == port else p
                                                       for p in s.ports))
    return cat


@functools.lru_cache(maxsize=32)
def snap(stack: str, sets: tuple[str, ...] = (), secrets: tuple[str, ...] = (),
         moves: tuple[tuple[str, str, int], ...] = ()) -> snapshot.Snapshot:
    return snapshot.take(stack, sets, secrets, key=KEY, catalog=_catalog(moves))


def diff_of(stack: str, sets: tuple[str, ...] = (), secrets: tuple[str, ...] = (),
            moves: tuple[tuple[str, str, int], ...] = ()) -> report.Diff:
    return report.diff(snap(stack), snap(stack, sets, secrets, moves))


def changed(d: report.Diff, type_: str | None = None) -> dict[str, str]:
    """{resource name: op} of the changed resources (of one type)."""
    return {r.name: r.op for r in d.resources if type_ is None or r.type == type_}


def effects(d: report.Diff, kind: str, follows: bool = True) -> set[str]:
    return {e.subject for i in d.impacts for e in i.effects if e.kind == kind and e.follows is follows}


def alerts(d: report.Diff, kind: str) -> list[str]:
    return [a.message for a in d.warnings if a.kind == kind]


# ---- no change ------------------------------------------------------------------------------------

def test_unchanged_stack_diffs_empty(capsys: pytest.CaptureFixture[str]) -> None:
    d = diff_of("dev")
    assert d.empty and d.resources == [] and d.outputs == [] and d.impacts == []
    assert d.counts()["same"] == len(snap("dev").resources)
    assert cli.main(["diff", "--stack", "dev", "--exit-code"]) == 0
    out = capsys.readouterr().out
    assert "no changes" in out


# ---- a host port: grafana 3000 -> 3100 ----------------------------------------------------------------

def test_grafana_host_port_changes_only_its_container_and_the_outputs() -> None:
    d = diff_of("dev", ("services.grafana.hostPort=3100",))
    assert changed(d) == {"grafana": "replace"}
    (grafana,) = d.resources
    assert [(f.path, f.old, f.new) for f in grafana.changes] == [("ports[0].external", 3000, 3100)]
    assert grafana.changes[0].replaces and "ForceNew" in grafana.changes[0].reason
    assert {p for p, _, _ in d.outputs} == {"ports.grafana.web", "urls.grafana"}
    assert ("urls.grafana", "http://localhost:3000", "http://localhost:3100") in d.outputs
    # What follows: its own container and the outputs; the portal (GRAFANA_URL), the
    # health check and the Prometheus scrape use the container port, which stays 3000.
    assert effects(d, "container") == {"grafana"}
    assert effects(d, "output") == {"stack outputs"}
    assert effects(d, "dependent") == set() and effects(d, "dependent", follows=False) == {"portal"}
    assert effects(d, "health", follows=False) == {"grafana"}
    assert effects(d, "scrape", follows=False) == {"prometheus"}
    assert {e.seen for i in d.impacts for e in i.effects if e.follows} == {"replace", "changed"}


def test_grafana_replacement_is_delete_first_and_keeps_its_volume() -> None:
    d = diff_of("dev", ("services.grafana.hostPort=3100",))
    (grafana,) = d.resources
    assert grafana.delete_before_replace
    assert any(n.startswith("will be deleted before its replacement is created") and "127.0.0.1:3000" in n
               for n in (note.text for note in grafana.notes))
    (msg,) = alerts(d, "stateful-replace")
    assert "grafana" in msg and "optiinfra-grafana-data is protected and not in the replace set" in msg
    volume = snap("dev", ("services.grafana.hostPort=3100",)).resources[
        "urn:pulumi:dev::optiinfra::optiinfra:platform:Tier$docker:index/volume:Volume::grafana-data"]
    assert volume.protect and volume.urn not in {r.urn for r in d.resources}


def test_every_container_is_deleted_before_its_replacement() -> None:
    # Fixed names (the seed's) and fixed host ports: creating first would fail.
    containers = [s for s in snap("dev").resources.values() if s.type == CONTAINER]
    # One per catalog service but the Kubernetes-only ones (the sign-in proxy, kube-state-metrics),
    # and two one-shot containers per store whose clients log in as themselves (credential files, rotation).
    services = [s for s in default_catalog().services.values() if not (s.authenticator or s.kubernetes_only)]
    assert len(containers) == len(services) + 2 * len([s for s in services if s.grants is not None])
    assert all(c.delete_before_replace for c in containers)


def test_data_collector_host_port_changes_only_its_container_and_outputs() -> None:
    d = diff_of("dev", ("services.data-collector.hostPort=8006",))
    assert changed(d) == {"data-collector": "replace"}
    assert {p for p, _, _ in d.outputs} == {"ports.data-collector.http", "urls.data-collector"}
    assert alerts(d, "band") == [] and alerts(d, "host-port-taken") == []


# ---- a container port: data-collector 8005 -> 8006 (a catalog change) ------------------------------------

MOVE_COLLECTOR = (("data-collector", "http", 8006),)
URL_HOLDERS = {"cost-agent", "performance-agent", "resource-agent", "application-agent", "portal"}


def test_collector_port_reaches_exactly_the_services_holding_its_url() -> None:
    d = diff_of("dev", moves=MOVE_COLLECTOR)
    # The collector itself, plus every service with DATA_COLLECTOR_URL: the four agents and
    # the portal. Not the worker or beat (same image, no URL of it), no output (the host port
    # stays 8005). Prometheus too: the collector is not scraped, but its health endpoint is
    # probed (the probe-data-collector job's target moves to :8006 in prometheus.yml).
    assert changed(d) == {"data-collector": "replace", "prometheus": "replace",
                          **dict.fromkeys(URL_HOLDERS, "replace")}
    assert d.outputs == []
    collector = next(r for r in d.resources if r.name == "data-collector")
    # PORT follows the catalog port too, so the process listens where the checks look.
    # The published port's band stamp (for the policy pack) is keyed by the port number and moves with it.
    assert {f.path for f in collector.changes} == {"ports[0].internal", "healthcheck.tests[3]", "envs[PORT]",
                                                   "labels[io.optiinfra.port.8005]", "labels[io.optiinfra.port.8006]"}
    for r in d.resources:
        if r.name in URL_HOLDERS:
            assert [(f.path, f.old, f.new) for f in r.changes] == [
                ("envs[DATA_COLLECTOR_URL]", "http://data-collector:8005", "http://data-collector:8006")]
    prometheus = next(r for r in d.resources if r.name == "prometheus")
    assert [f.path for f in prometheus.changes] == ["uploads[/etc/prometheus/prometheus.yml].content"]
    assert "http://data-collector:8006/health" in str(prometheus.changes[0].new)
    assert effects(d, "dependent") == URL_HOLDERS
    assert effects(d, "health") == {"data-collector"}
    assert effects(d, "scrape") == set() and effects(d, "datasource") == set()
    # Every impact item is confirmed by the render.
    assert all(e.seen == "replace" for i in d.impacts for e in i.effects if e.follows)


def test_dependents_are_updated_in_the_same_run_after_the_collector() -> None:
    d = diff_of("dev", moves=MOVE_COLLECTOR)
    new = snap("dev", moves=MOVE_COLLECTOR)
    collector = next(r.urn for r in d.resources if r.name == "data-collector")
    for r in d.resources:
        if r.name in URL_HOLDERS:
            assert any(n.text.startswith("follows data-collector http: updated in the same `pulumi up`")
                       for n in r.notes)
            # ... and the engine orders them after the collector's new container.
            assert collector in new.resources[r.urn].dependencies


def test_grafana_container_port_reaches_portal_and_prometheus_scrape_config() -> None:
    d = diff_of("dev", moves=(("grafana", "web", 3005),))
    assert changed(d) == {"grafana": "replace", "portal": "replace", "prometheus": "replace"}
    prom = next(r for r in d.resources if r.name == "prometheus")
    assert [f.path for f in prom.changes] == ["uploads[/etc/prometheus/prometheus.yml].content"]
    assert effects(d, "scrape") == {"prometheus"} and effects(d, "dependent") == {"portal"}
    # Prometheus keeps data: flagged, and its volume stays.
    assert {m.split(" ")[0] for m in alerts(d, "stateful-replace")} == {"grafana", "prometheus"}


def test_prometheus_port_reaches_the_grafana_datasource() -> None:
    d = diff_of("dev", moves=(("prometheus", "web", 9091),))
    assert changed(d) == {"prometheus": "replace", "grafana": "replace"}
    assert effects(d, "datasource") == {"grafana"}
    grafana = next(r for r in d.resources if r.name == "grafana")
    assert [f.path for f in grafana.changes] == [
        "uploads[/etc/grafana/provisioning/datasources/prometheus.yaml].content"]


def test_a_port_written_literally_elsewhere_is_flagged() -> None:
    # A catalog where the orchestrator's PORT is the literal "8080" instead of Listen("http"):
    # moving the port leaves it behind, and the diff says so.
    def literal(moves: tuple[tuple[str, str, int], ...]) -> Catalog:
        cat = _catalog(moves) or default_catalog()
        orch = cat.services["orchestrator"]
        cat.services["orchestrator"] = replace(
            orch, env=tuple((k, "8080" if k == "PORT" else v) for k, v in orch.env))
        return cat

    old = snapshot.take("dev", (), (), key=KEY, catalog=literal(()))
    new = snapshot.take("dev", (), (), key=KEY, catalog=literal((("orchestrator", "http", 8081),)))
    assert any("orchestrator sets PORT=8080" in m for m in alerts(report.diff(old, new), "stale-port"))


def test_the_catalog_restates_no_port_of_its_own() -> None:
    """Every port a service's env or arguments need comes from its Port (Listen/Url/Dsn)."""
    for svc in default_catalog().services.values():
        ports = {str(p.container) for p in svc.ports}
        for name, value in [*svc.env, *(("command", v) for v in svc.command)]:
            if isinstance(value, str):
                assert not set(re.findall(r"\d+", value)) & ports, f"{svc.name} {name}={value}"


# ---- stateful replacement, taken ports, bands -------------------------------------------------------------

def test_publishing_a_database_port_flags_the_stateful_replacement() -> None:
    d = diff_of("dev", ("services.postgres.hostPort=5433",))
    # Docker forwards a published port only through a network with a route out, so the
    # databases network stops being internal (and is replaced) for the port to work.
    assert changed(d) == {"postgres": "replace", "databases-network": "replace"}
    # One alert per volume it mounts: its data, and its clients' credential files (kept too).
    msgs = alerts(d, "stateful-replace")
    assert len(msgs) == 2 and all("is protected and not in the replace set" in m for m in msgs)
    msg = next(m for m in msgs if "optiinfra-postgres-data" in m)
    assert msg.startswith("postgres is stateful and will be replaced (labels, ports)")  # labels: the port stamp
    assert "volume optiinfra-postgres-data is protected and not in the replace set" in msg
    assert "/var/lib/postgresql/data" in msg
    network = next(r for r in d.resources if r.name == "databases-network")
    assert {(f.path, f.old, f.new) for f in network.changes} == {("internal", True, False)}
    assert alerts(d, "unreachable") == []
    assert alerts(d, "band") == []  # 5433 is in the database band 5000-6999


def test_a_port_outside_its_band_is_flagged() -> None:
    d = diff_of("dev", ("services.grafana.hostPort=8100",))
    assert alerts(d, "band") == [
        "host port 8100 of grafana web leaves its allocation band monitoring 3000-5999 (3000 was inside)"]


def test_a_port_allocated_to_an_unpublished_service_is_flagged() -> None:
    d = diff_of("dev", ("services.grafana.hostPort=5432",))
    (msg,) = alerts(d, "host-port-taken")
    assert "postgres" in msg and "not published in this stack" in msg


def test_a_host_port_already_published_is_refused_with_the_taker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as err:
        report.run_diff("dev", ["services.grafana.hostPort=3001"])
    assert err.value.key == "optiinfra:services.grafana.hostPort"
    assert "already taken by portal http" in err.value.problem
    assert "3002" in err.value.fix  # the first free port of the monitoring band
    assert cli.main(["diff", "--stack", "dev", "--set", "services.grafana.hostPort=3001"]) == 2
    assert "already taken by portal" in capsys.readouterr().err


# ---- secrets ---------------------------------------------------------------------------------------------------

def test_a_changed_secret_shows_as_a_change_but_never_in_plaintext(capsys: pytest.CaptureFixture[str]) -> None:
    value = "a-very-long-new-password-1234"
    d = diff_of("dev", secrets=(f"postgresOrchestratorPassword={value}",))
    # Not postgres itself: its one-shot containers write the file and set the role's password in
    # it (docs/credentials.md, without an outage), and the one service logging in with it rolls.
    assert changed(d, CONTAINER) == dict.fromkeys(
        {"postgres-credential-files", "postgres-credentials", "orchestrator"}, "replace")
    assert changed(d, "random:index/randomPassword:RandomPassword") == {
        "postgres-orchestrator-credential": "delete"}
    files = next(r for r in d.resources if r.name == "postgres-credential-files")
    assert [(c.path, c.secret) for c in files.changes] == [("envs[OPTIINFRA_ORCHESTRATOR_PASSWORD]", True)]
    assert cli.main(["diff", "--stack", "dev", "--secret", f"postgresPassword={value}", "--json"]) == 0
    out = capsys.readouterr().out
    assert value not in out and "[secret]" in out
    assert "#" not in json.dumps([c["old"] for r in json.loads(out)["resources"] for c in r["changes"]])


def test_the_renderer_fingerprints_secrets_by_key_and_never_shows_them() -> None:
    value = "a-very-long-new-password-1234"

    def render(key: bytes | None) -> offline.Render:
        return offline.render("dev", secrets=[f"postgresPassword={value}"], fingerprint_key=key)

    def password(r: offline.Render) -> str:
        envs = r.by_name(CONTAINER, "postgres").inputs["envs"]
        return str(next(e for e in envs if e.startswith("POSTGRES_PASSWORD=")))

    plain, keyed, again, other = render(None), render(KEY), render(KEY), render(b"another-key-of-32-bytes-01234567")
    assert password(plain) == "POSTGRES_PASSWORD=[secret]"
    assert re.fullmatch(r"POSTGRES_PASSWORD=\[secret\]#[0-9a-f]{16}", password(keyed))
    # Stable under one key (two renders can be compared), meaningless under another.
    assert password(keyed) == password(again) != password(other)
    text = json.dumps(offline.plan_json(keyed))
    assert any(value in s for s in keyed.secret_values) and not any(s in text for s in keyed.secret_values)


def test_warnings_follow_the_kind_of_a_note_not_its_wording() -> None:
    def replaced(*notes: compare.Note) -> compare.ResourceChange:
        return compare.ResourceChange("u", CONTAINER, "db", compare.Op.REPLACE, [], False, True, "db", list(notes))
    empty = snapshot.Snapshot("dev", "new", "docker", {}, {}, [])
    model = snap("dev").model
    assert model is not None
    at_risk = replaced(compare.Note(compare.NoteKind.DATA_AT_RISK, "volume gone"),
                       compare.Note(compare.NoteKind.K8S_ORDER, "DATA AT RISK: RISK: only worded like one"))
    assert [(a.kind, a.message) for a in impact.warnings_for([], model, empty, [at_risk])] == [
        ("data-at-risk", "db: volume gone")]


# ---- the replace table ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("type_", "path", "replaces"), [
    (CONTAINER, "ports[0].external", True),
    (CONTAINER, "envs[X]", True),
    (CONTAINER, "networksAdvanced[optiinfra-core]", True),
    (CONTAINER, "uploads[/etc/x].content", True),
    (CONTAINER, "volumes[/data].volumeName", True),
    (CONTAINER, "labels[io.optiinfra.image].value", True),
    (CONTAINER, "memory", False),
    (CONTAINER, "restart", False),
    (CONTAINER, "healthcheck.tests[1]", False),
    ("docker:index/network:Network", "internal", True),
    ("docker:index/volume:Volume", "labels[0].value", True),
    (STS, "spec.selector.matchLabels.app", True),
    (STS, "spec.volumeClaimTemplates[0].spec.resources.requests.storage", True),
    (STS, "spec.template.spec.containers[x].ports[web].containerPort", False),
    (DEPLOY, "spec.selector.matchLabels.app", True),
    (DEPLOY, "spec.replicas", False),
    ("kubernetes:core/v1:Service", "spec.ports[web].port", False),
    ("kubernetes:core/v1:Service", "spec.clusterIP", True),
    ("kubernetes:core/v1:ConfigMap", "data.prometheus.yml", True),
    # pulumi-kubernetes v4.25.0 (provider/pkg/provider/diff.go) replaces a claim for these
    # fields only: accessModes, selector, storageClassName, volumeName; a request is patched.
    ("kubernetes:core/v1:PersistentVolumeClaim", "spec.resources.requests.storage", False),
    ("kubernetes:core/v1:PersistentVolumeClaim", "spec.storageClassName", True),
    ("kubernetes:core/v1:PersistentVolumeClaim", "spec.accessModes[0]", True),
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "spec.ingress[0].ports[0].port", False),
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "metadata.namespace", True),
])
def test_replace_table(type_: str, path: str, replaces: bool) -> None:
    rule = replace_table.rule_for(type_, path)
    assert rule.replaces is replaces and rule.reason


def test_a_dormant_health_check_update_is_flagged() -> None:
    # ClickHouse publishes nothing: moving its HTTP port only changes the health check,
    # which the docker provider records without touching the running container.
    d = diff_of("dev", moves=(("clickhouse", "http", 8124),))
    # The exporter's scrape URI follows the port (Dsn with port="http"), so it is replaced.
    # Prometheus is replaced: the blackbox probe of ClickHouse's /ping follows the port too.
    assert changed(d) == {"clickhouse": "update", "clickhouse-exporter": "replace", "prometheus": "replace"}
    exporter = next(r for r in d.resources if r.name == "clickhouse-exporter")
    assert [f.path for f in exporter.changes] == ["command[0]"]
    assert alerts(d, "dormant-update") and "healthcheck" in alerts(d, "dormant-update")[0]
    assert not alerts(d, "stale-port")


# ---- JSON ------------------------------------------------------------------------------------------------------

def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["diff", "--stack", "dev", "--set", "services.grafana.hostPort=3100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"version", "stack", "old", "new", "empty", "summary", "resources", "outputs", "ports",
                         "warnings", "notes", "cost"}
    assert data["cost"] == []  # a host port costs nothing
    assert data["version"] == 1 and data["empty"] is False
    assert data["summary"] == {"create": 0, "update": 0, "replace": 1, "delete": 0,
                               "same": len(snap("dev").resources) - 1}
    (res,) = data["resources"]
    assert set(res) == {"urn", "type", "name", "op", "service", "protect", "deleteBeforeReplace", "changes", "notes"}
    assert res["changes"] == [{"path": "ports[0].external", "old": 3000, "new": 3100, "replaces": True,
                               "reason": res["changes"][0]["reason"], "secret": False}]
    (port,) = data["ports"]
    assert (port["service"], port["port"], port["old"], port["new"]) == (
        "grafana", "web", {"container": 3000, "host": 3000, "bind": "127.0.0.1"},
        {"container": 3000, "host": 3100, "bind": "127.0.0.1"})
    assert {e["kind"] for e in port["effects"]} >= {"container", "health", "dependent", "scrape", "output"}


# ---- --base: a git revision, rendered by its own code ---------------------------------------------------------

@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_base_revision_against_working_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A throwaway repository holding a copy of this program; its working tree then moves
    # grafana's host port. The base side is rendered by the committed copy in a subprocess.
    repo = tmp_path / "repo"
    for package in ("infra", "policies"):
        shutil.copytree(ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(ROOT / name, repo / name)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                       check=True, capture_output=True)
    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "base")
    stack_file = repo / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text() + "  optiinfra:services:\n    grafana:\n      hostPort: 3100\n")
    monkeypatch.setattr(infra_stack, "ROOT", repo)

    d = report.run_diff("dev", base=None)  # the merge base with main: HEAD here
    assert d.old_label.startswith("merge base with main (")
    assert changed(d) == {"grafana": "replace"}
    assert {p for p, _, _ in d.outputs} == {"ports.grafana.web", "urls.grafana"}
    assert d.notes == []  # both sides fingerprinted their secrets
    with pytest.raises(ConfigError, match="not a commit"):
        report.run_diff("dev", base="no-such-revision")


# ---- Kubernetes (prod) ---------------------------------------------------------------------------------------------

def test_prod_grafana_port_reaches_service_probe_ingress_policy_portal_and_scrape() -> None:
    d = diff_of("prod", moves=(("grafana", "web", 3005),))
    # Grafana's Ingress routes to the sign-in proxy, and the portal embeds Grafana through its
    # public URL: the proxy (its upstream) and its egress move instead of the Ingress and the portal.
    assert {(r.type.split(":")[-1], r.name): r.op for r in d.resources} == {
        ("StatefulSet", "grafana"): "update",        # container port and probes: a rolling update
        ("Service", "grafana"): "update",
        ("Service", "grafana-headless"): "update",   # the StatefulSet's governing Service
        ("NetworkPolicy", "allow-grafana"): "update",  # allowed port (ingress)
        ("NetworkPolicy", "allow-oauth2-proxy"): "update",  # the proxy's egress to it
        ("NetworkPolicy", "allow-prometheus"): "update",  # the scraper's egress to it
        ("Deployment", "oauth2-proxy"): "update",    # --upstream
        ("ConfigMap", "prometheus-config"): "replace",  # scrape target; the name is content-hashed
        ("StatefulSet", "prometheus"): "update",     # mounts the new ConfigMap
    }
    assert {p for p, _, _ in d.outputs} == {"endpoints.grafana"}
    assert effects(d, "ingress") == set()
    # Not the prober's: Grafana, behind the sign-in proxy, is not probed on Kubernetes.
    assert effects(d, "network-policy") == {"allow-grafana", "allow-oauth2-proxy", "allow-prometheus"}
    assert effects(d, "dependent") == {"oauth2-proxy"} and effects(d, "scrape") == {"prometheus"}
    restarts = alerts(d, "stateful-restart")
    assert {m.split(" ")[0] for m in restarts} == {"grafana", "prometheus"}
    assert all("whenDeleted=Retain" in m for m in restarts)


def test_prod_statefulset_replacement_is_flagged_with_its_claims() -> None:
    d = diff_of("prod", ("kubernetes.storage.postgres=30Gi",))
    # The claim size is also in PostgresVolumeFilling's expression: Prometheus' rules (a new
    # ConfigMap) and so its pod template (the config's hash) follow. PostgreSQL's backup claim is
    # sized from its volume on the stack: with prod's store it keeps the newest copy and the next,
    # 2 x 20 -> 2 x 30 Gi, a grown request that pulumi-kubernetes patches in place (its forceNew
    # fields of a claim are accessModes, selector, storageClassName and volumeName); the drill's
    # scratch space (an emptyDir the size of the backup claim) follows in its CronJob.
    assert changed(d) == {"postgres": "replace", "prometheus-config": "replace", "prometheus": "update",
                          "postgres-backups": "update", "postgres-drill": "update"}
    claim = next(r for r in d.resources if r.name == "postgres-backups")
    assert [(f.path, f.old, f.new) for f in claim.changes] == [
        ("spec.resources.requests.storage", f"{2 * 20}Gi", f"{2 * 30}Gi")]
    # Only the StatefulSet is replaced and protected (pulumi up refuses); the backups' claim is not.
    assert [m.split(":")[0] for m in alerts(d, "protected-replace")] == ["postgres"]
    (msg,) = alerts(d, "stateful-replace")
    assert "data-postgres-0" in msg and "whenDeleted=Retain" in msg


def test_secret_change_without_pod_restart_is_flagged() -> None:
    # A synthetic pair: a Secret's data changes under the same name; the Deployment that
    # reads it does not change, so its pods would keep the old value.
    def state(urn: str, type_: str, inputs: dict[str, object]) -> snapshot.State:
        return snapshot.State(urn=urn, type=type_, name=urn, parent="", inputs=inputs, protect=False,
                             delete_before_replace=False, dependencies=[])
    meta = {"name": "credentials", "namespace": "ns"}
    deploy = state("d", DEPLOY, {"metadata": {"name": "api", "namespace": "ns"}, "spec": {"template": {"spec": {
        "containers": [{"name": "api", "env": [{"name": "URL", "valueFrom": {
            "secretKeyRef": {"name": "credentials", "key": "url"}}}]}]}}}})
    old = snapshot.Snapshot("s", "old", "kubernetes", {"s": state("s", "kubernetes:core/v1:Secret", {
        "metadata": meta, "stringData": "[secret]#0000000000000000"}), "d": deploy}, {}, [])
    new = snapshot.Snapshot("s", "new", "kubernetes", {"s": state("s", "kubernetes:core/v1:Secret", {
        "metadata": meta, "stringData": "[secret]#1111111111111111"}), "d": deploy}, {}, [])
    changes = compare.compare(old, new)
    # Patched in place: the program's provider sets enableSecretMutable.
    assert [(c.name, c.op) for c in changes] == [("s", "update")]
    (alert,) = impact.not_restarted(new, changes)
    msg = alert.message
    assert "deployment/api" in msg and "rollout restart" in msg
    # A pod template with the credentials hash rolls exactly when a credential it reads
    # changes (the program's own workloads): no warning for it.
    template = deploy.inputs["spec"]["template"]
    template["metadata"] = {"annotations": {vocabulary.K8S_CREDENTIALS_ROLLOUT: "0123456789abcdef"}}
    assert impact.not_restarted(new, changes) == []


@pytest.mark.parametrize(("type_", "path", "replaces"), [
    # pulumi-kubernetes' forceNew table (provider/pkg/provider/diff.go): what the engine replaces
    ("kubernetes:batch/v1:Job", "spec.template.metadata.annotations.optiinfra.io/credentials", True),
    ("kubernetes:batch/v1:Job", "spec.selector.matchLabels.x", True),
    ("kubernetes:batch/v1:Job", "spec.backoffLimit", True),  # the rotation Job's replace_on_changes=["spec"]
    ("kubernetes:batch/v1:Job", "metadata.labels.x", False),
    ("kubernetes:core/v1:Service", "spec.type", True),
    ("kubernetes:core/v1:Service", "spec.ports[http].port", False),
    ("kubernetes:apps/v1:StatefulSet", "spec.volumeClaimTemplates[data].spec", True),
    ("kubernetes:apps/v1:StatefulSet", "spec.selector.matchLabels.x", True),
    ("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "roleRef.name", True),
    ("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "subjects[x].name", False),
])
def test_the_replace_table_matches_what_the_provider_replaces(type_: str, path: str, replaces: bool) -> None:
    from infra.diffing.replace import rule_for

    assert rule_for(type_, path).replaces is replaces
