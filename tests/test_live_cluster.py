"""The prod stack on a live Kubernetes API server, through the real Pulumi engine.

What tests/test_engine_e2e.py cannot see with renderYamlToDirectory: admission (Pod
Security `restricted` as the API server enforces it), server-side validation and
defaulting, the provider's await logic (Deployments and StatefulSets ready, Ingresses
with an address), and drift after `refresh`. The cluster is tests/cluster.py's: real
etcd, kube-apiserver, controller-manager and scheduler (scripts/cluster.sh), kwok's fake
nodes sized from the prod budget, kwok's volume stages for claims, and a thread that
publishes an Ingress address.

The tests run in file order against one deployment (module fixtures): up, empty preview
and refresh, read-back against the offline render, a port change, a credential change,
a PSS violation refused by the API server, an interrupted up (SIGINT, SIGKILL), a node
taken away, then destroy. Timings go to the report printed at the end (and to
$OPTIINFRA_LIVE_REPORT as JSON when set).

Skipped with the reason when the engine or the control plane is not built, unless
OPTIINFRA_REQUIRE_ENGINE=1 (then it fails); OPTIINFRA_SKIP_LIVE=1 skips it on purpose.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import stack as infra_stack
from infra.backends.kubernetes import CREDENTIALS_SECRET
from infra.catalog import CREDENTIALS
from tests import cluster as kc
from tests.test_engine_e2e import _engine_bin
from tests.tools import receiver_urls, store_keys

ROOT = Path(__file__).resolve().parent.parent
STACK = "prod"
VENV = Path(os.environ.get("OPTIINFRA_VENV", ROOT / "venv")).resolve()
PY = str(VENV / "bin" / "python")
# The port change: the data collector's http port (README's worked example).
PORT_FROM, PORT_TO = 8005, 8006
PSS_WARNING = re.compile(r"would violate PodSecurity|violates PodSecurity", re.I)
TIMEOUT_TRANSFORM = """\
import pulumi as _p


def _short_timeouts(args):
    if args.type_ == "kubernetes:apps/v1:Deployment":
        return _p.ResourceTransformResult(args.props, _p.ResourceOptions.merge(
            args.opts, _p.ResourceOptions(custom_timeouts=_p.CustomTimeouts(create="60s", update="60s"))))
    return None


_p.runtime.register_resource_transform(_short_timeouts)
"""


def _require() -> bool:
    return os.environ.get("OPTIINFRA_REQUIRE_ENGINE") == "1"


def _control_plane() -> Path:
    if os.environ.get("OPTIINFRA_SKIP_LIVE") == "1":
        pytest.skip("OPTIINFRA_SKIP_LIVE=1")
    try:
        return kc.build()
    except (kc.ClusterError, subprocess.TimeoutExpired) as e:
        if _require():
            pytest.fail(f"the control plane is required here but unavailable: {e}")
        pytest.skip(f"no control plane (scripts/cluster.sh): {e}")


@dataclass
class Live:
    dir: Path
    env: dict[str, str]
    cluster: kc.Cluster
    secrets: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def pulumi(self, *args: str, label: str | None = None, check: bool = True,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        proc = run_group(["pulumi", *args, "--non-interactive"], cwd=self.dir, env=self.env, timeout=timeout)
        self.timings[label or " ".join(args[:2])] = round(time.monotonic() - start, 1)
        if check and proc.returncode != 0:
            pytest.fail(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n"
                        f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}")
        return proc

    def infra(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([PY, "-m", "infra", *args], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            shown = [a.split("=", 1)[0] + "=[secret]" if i and args[i - 1] == "--secret" else a
                     for i, a in enumerate(args)]
            pytest.fail(f"python -m infra {' '.join(shown)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.pulumi("stack", "export", label="stack export").stdout)
        return data

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.dir / rel
        text = path.read_text()
        if text.count(old) < 1:
            pytest.fail(f"{rel} no longer contains {old!r}; the injected change must follow the refactor")
        path.write_text(text.replace(old, new, 1))


def run_group(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a process group of its own: on a timeout or an interrupt the CLI
    and the plugins it started (language host, provider) are killed together."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
        reap_plugins(Path(env["PULUMI_HOME"]))
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def reap_plugins(pulumi_home: Path) -> list[int]:
    """Kill what a killed CLI left running: the engine starts each plugin (language host,
    provider) in a process group of its own, so they outlive the CLI's group. They are
    found by the PULUMI_HOME of this test in their environment."""
    mark = f"PULUMI_HOME={pulumi_home}".encode()
    killed = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if mark in (d / "environ").read_bytes().split(b"\0"):
                os.kill(int(d.name), signal.SIGKILL)
                killed.append(int(d.name))
        except (OSError, ProcessLookupError):
            continue
    return killed


def _tempdir(name: str) -> Path:
    """Outside pytest's basetemp: a concurrent pytest run on this machine prunes old
    basetemps, which would delete etcd's data dir under a running cluster."""
    return Path(tempfile.mkdtemp(prefix=f"optiinfra-live-{name}-"))


def _copy_project(dst: Path) -> None:
    dst.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "infra", dst / "infra", ignore=ignore)
    shutil.copytree(ROOT / "policies", dst / "policies", ignore=ignore)
    for f in ("__main__.py", "requirements.txt", f"Pulumi.{STACK}.yaml"):
        shutil.copy(ROOT / f, dst / f)
    (dst / "Pulumi.yaml").write_text(yaml.safe_dump({
        "name": "optiinfra",
        "runtime": {"name": "python", "options": {"toolchain": "pip", "virtualenv": str(VENV)}},
    }))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dst, check=True)


def _commit_copy(dst: Path, message: str) -> None:
    """The copy is a repository of its own, so `python -m infra diff --base HEAD` compares
    exactly the edits made after this commit (the stack file with its secrets included)."""
    git = ["git", "-c", "user.name=live-test", "-c", "user.email=live-test@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=dst, check=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[kc.Cluster]:
    bin_dir = _control_plane()
    c = kc.Cluster(_tempdir("cluster"), bin_dir, bin_dir.parent / "stages", kc.budget_nodes(STACK))
    try:
        c.start()
        yield c
    finally:
        c.stop()
        left = c.leftover_pids()
        if os.environ.get("OPTIINFRA_LIVE_KEEP") != "1":
            shutil.rmtree(c.dir, ignore_errors=True)
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="module")
def live(cluster: kc.Cluster) -> Iterator[Live]:
    engine = _engine_bin()
    base = _tempdir("project")
    project = base / "project"
    _copy_project(project)
    (base / "state").mkdir()
    env = {
        **os.environ,
        "PATH": f"{engine}{os.pathsep}{cluster.bin}{os.pathsep}{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(base / "home"),
        "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(24),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    env.pop("PULUMI_ACCESS_TOKEN", None)
    # Also the secret only its user can set (the OIDC client secret: prod signs in through the proxy).
    values = {c.config_key: f"Live-{c.id}-{secrets.token_hex(12)}" for c in CREDENTIALS if c.generated or c.user_set}
    values.update(receiver_urls(STACK, "live"))  # prod's committed receivers (no egress leaves kwok)
    values.update(store_keys(STACK, "live"))  # prod's committed backup store (never reached here)
    lv = Live(project, env, cluster, values)
    lv.timings.update({f"cluster {k}": v for k, v in cluster.timings.items()})
    lv.pulumi("stack", "init", STACK, "--secrets-provider", "passphrase")
    # The provider talks to the throwaway cluster: its kubeconfig context, no YAML rendering.
    lv.pulumi("config", "set", "--path", "optiinfra:kubernetes.context", kc.CONTEXT)
    for key, value in values.items():
        lv.pulumi("config", "set", "--secret", f"optiinfra:{key}", value, label=f"config set --secret {key}")
    _commit_copy(project, "the stack as deployed")
    yield lv
    # Teardown even when a test failed.
    if lv.notes.get("destroyed") is not True:
        lv.pulumi("cancel", "--yes", check=False, label="teardown cancel")
        lv.pulumi("state", "unprotect", "--all", "--yes", check=False, label="teardown unprotect")
        lv.pulumi("destroy", "--yes", "--skip-preview", check=False, label="teardown destroy", timeout=600)
    reap_plugins(Path(env["PULUMI_HOME"]))
    if os.environ.get("OPTIINFRA_LIVE_KEEP") != "1":
        shutil.rmtree(base, ignore_errors=True)
    report = {"timings_s": lv.timings, **lv.notes}
    print("\nlive cluster report:", json.dumps(report, indent=1, default=str))
    if os.environ.get("OPTIINFRA_LIVE_REPORT"):
        Path(os.environ["OPTIINFRA_LIVE_REPORT"]).write_text(json.dumps(report, indent=1, default=str))


# ---- helpers ----------------------------------------------------------------------------

def _offline_manifests(lv: Live, out: Path) -> list[dict[str, Any]]:
    if out.exists():
        shutil.rmtree(out)
    # The stack's own credentials, so what derives from them (the pods' credentials hash) agrees.
    supplied = [a for k, v in lv.secrets.items() for a in ("--secret", f"{k}={v}")]
    lv.infra("render", "--stack", STACK, "--out", str(out), *supplied)
    docs = []
    for f in sorted(out.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


_PATHS = {"Namespace": "/api/v1/namespaces/{name}", "Secret": "/api/v1/namespaces/{ns}/secrets/{name}",
          "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
          "Service": "/api/v1/namespaces/{ns}/services/{name}",
          "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
          "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
          "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
          "Ingress": "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}",
          "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}",
          "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}",
          "CronJob": "/apis/batch/v1/namespaces/{ns}/cronjobs/{name}",
          "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
          "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
          "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}",
          "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{name}"}


def _live_object(lv: Live, doc: dict[str, Any]) -> Any:
    m = doc["metadata"]
    return lv.cluster.get(_PATHS[doc["kind"]].format(ns=m.get("namespace", ""), name=m["name"]))


_QTY = re.compile(r"^([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G)?$")
_QF = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _qty(v: Any) -> float | None:
    m = _QTY.match(str(v))
    return float(m.group(1)) * _QF[m.group(2)] if m else None


def _subset(want: Any, got: Any, path: str, out: list[str]) -> None:
    """Every field of the offline manifest is in the live object with the same value
    (the server may add defaults); quantities compare by value, secrets by presence."""
    if want == "[secret]":
        if got in (None, ""):
            out.append(f"{path}: secret missing")
        return
    if isinstance(want, dict):
        if not isinstance(got, dict):
            out.append(f"{path}: {want!r} != {got!r}")
            return
        for k, v in want.items():
            _subset(v, got.get(k), f"{path}.{k}", out)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            out.append(f"{path}: {len(want)} items offline, live {got!r:.200}")
            return
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            _subset(w, g, f"{path}[{i}]", out)
    elif want != got:
        qw, qg = _qty(want), _qty(got)
        if not (qw is not None and qg is not None and abs(qw - qg) < 1e-9):
            out.append(f"{path}: offline {want!r}, live {got!r}")


def _steps(preview_json: str) -> dict[str, str]:
    """urn -> op of a `pulumi preview --json`, without the unchanged ones."""
    data = json.loads(preview_json)
    ops: dict[str, str] = {}
    for s in data.get("steps", []):
        op = {"create-replacement": "replace", "delete-replaced": "replace"}.get(s["op"], s["op"])
        if op not in ("same", "read", "refresh"):
            ops[s["urn"]] = op
    return ops


def _workloads_ready(lv: Live) -> list[str]:
    bad = []
    for kind in ("deployments", "statefulsets"):
        for w in lv.cluster.get(f"/apis/apps/v1/{kind}")["items"]:
            if not w["metadata"]["namespace"].startswith("optiinfra-"):
                continue
            want, st = w["spec"].get("replicas", 1), w.get("status", {})
            if st.get("readyReplicas", 0) != want or st.get("updatedReplicas", 0) != want:
                bad.append(f"{kind}/{w['metadata']['namespace']}/{w['metadata']['name']}: {st}")
    return bad


def _events(text: str) -> list[dict[str, Any]]:
    """The engine events of `pulumi up --json` (one JSON object per line)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _critical_path(events: list[dict[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
    """From the events of `pulumi up --json`: when each resource step started and finished, the
    chain of dependencies that ends last, and the time by resource type."""
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    stamps = [float(e["timestamp"]) for e in events if e.get("timestamp") is not None]
    t0 = min(stamps, default=0.0)
    for e in events:
        ts = e.get("timestamp")
        if ts is None:
            continue
        if "resourcePreEvent" in e:
            md = e["resourcePreEvent"]["metadata"]
            if not e["resourcePreEvent"].get("planning"):
                start.setdefault(md["urn"], ts)
        elif "resOutputsEvent" in e:
            end[e["resOutputsEvent"]["metadata"]["urn"]] = ts
    resources = state["deployment"]["resources"]
    types: dict[str, str] = {r["urn"]: r["type"] for r in resources}
    parent = {r["urn"]: r.get("parent", "") for r in resources}
    children: dict[str, list[str]] = {}
    for r in resources:
        children.setdefault(r.get("parent", ""), []).append(r["urn"])

    def custom(u: str) -> bool:
        return types.get(u, "").startswith("kubernetes:")

    def leaves(u: str) -> list[str]:
        """A component stands for the resources in it."""
        if custom(u):
            return [u]
        return [x for c in children.get(u, []) for x in leaves(c)]

    def deps_of(u: str) -> list[str]:
        """What u waited for: its own dependencies and, through its parent components, theirs."""
        out = [x for r in resources if r["urn"] == u for d in r.get("dependencies", []) for x in leaves(d)]
        p = parent.get(u, "")
        while p and types.get(p) != "pulumi:pulumi:Stack":
            out += [x for r in resources if r["urn"] == p for d in r.get("dependencies", []) for x in leaves(d)]
            p = parent.get(p, "")
        return out

    dur = {x: end[x] - start[x] for x in end if x in start}
    by_type: dict[str, list[float]] = {}
    for urn, d in dur.items():
        by_type.setdefault(types.get(urn, "?"), []).append(d)
    chain = []
    u: str | None = max((x for x in dur if custom(x)), key=lambda x: end[x], default=None)
    while u:
        chain.append({"urn": u.split("::")[-1], "type": types.get(u), "start": round(start[u] - t0, 1),
                      "end": round(end[u] - t0, 1), "took": round(dur[u], 1)})
        # Its predecessor: the dependency that finished last (timestamps are whole seconds).
        prev = [d for d in deps_of(u) if d in dur and d != u and end[d] <= start[u] + 1]
        u = max(prev, key=lambda x: end[x], default=None)
    return {"makespan_s": round(max(end.values()) - t0, 1) if end else None,
            "chain": list(reversed(chain)),
            "by_type": {t: {"n": len(v), "mean_s": round(sum(v) / len(v), 1), "max_s": round(max(v), 1)}
                        for t, v in sorted(by_type.items())}}


# ---- the tests, in order --------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(live: Live) -> dict[str, Any]:
    proc = live.pulumi("up", "--yes", "--skip-preview", "--json", label="up")
    (live.dir.parent / "up-events.jsonl").write_text(proc.stdout)
    state = live.state()
    live.notes["up_critical_path"] = _critical_path(_events(proc.stdout), state)
    return {"proc": proc, "state": state}


def test_up_creates_every_resource_and_workloads_are_ready(live: Live, deployed: dict[str, Any]) -> None:
    proc = deployed["proc"]
    output = proc.stdout + proc.stderr
    assert not PSS_WARNING.search(output), [line for line in output.splitlines() if PSS_WARNING.search(line)]
    docs = _offline_manifests(live, live.dir.parent / "render")
    kinds = [d["kind"] for d in docs]
    in_state = [r for r in deployed["state"]["deployment"]["resources"] if r["type"].startswith("kubernetes:")
                and not r["type"].startswith("pulumi:providers")]
    assert len(in_state) == len(docs), (len(in_state), len(docs))
    missing = [f"{d['kind']}/{d['metadata']['name']}" for d in docs if _live_object(live, d) is None]
    assert not missing, missing
    assert not _workloads_ready(live)
    assert {"Deployment", "StatefulSet", "Ingress", "NetworkPolicy"} <= set(kinds)
    for ns, name in [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Ingress"]:
        ing = _live_object(live, {"kind": "Ingress", "metadata": {"namespace": ns, "name": name}})
        assert ing["status"]["loadBalancer"]["ingress"][0]["ip"] == kc.INGRESS_ADDRESS
    pvcs = [p for p in live.cluster.get("/api/v1/persistentvolumeclaims")["items"]
            if p["metadata"]["namespace"].startswith("optiinfra-")]
    assert pvcs and all(p["status"]["phase"] == "Bound" for p in pvcs), [p["status"] for p in pvcs]
    live.notes["claims_bound"] = len(pvcs)


def test_sign_in_proxy_is_ready_and_grafanas_ingress_routes_to_it(live: Live, deployed: dict[str, Any]) -> None:
    """prod with sso on: the proxy's pods are ready and the Ingress of the UI it fronts points at
    its Service (kwok marks pods ready; no proxy process runs: tests/test_sso_proxy.py runs it)."""
    model = infra_stack.model_of(STACK)
    ui = next(e for e in model.services.values() if e.via)
    ns = f"{model.settings.kubernetes.namespace_prefix}-{ui.tier.value}"
    proxy = live.cluster.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{ui.via}")
    assert proxy["status"].get("readyReplicas") == proxy["spec"]["replicas"] >= 1, proxy["status"]
    ing = live.cluster.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{ui.name}")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == ui.via
    assert ing["spec"]["tls"][0]["hosts"] == [ui.ingress_host]
    secret = live.cluster.get(f"/api/v1/namespaces/{ns}/secrets/{CREDENTIALS_SECRET}")
    assert {"sso-client", "sso-cookie"} <= set(secret["data"])


def test_preview_and_refresh_show_no_changes(live: Live, deployed: dict[str, Any]) -> None:
    live.pulumi("preview", "--expect-no-changes", label="preview --expect-no-changes")
    live.pulumi("refresh", "--yes", "--expect-no-changes", "--skip-preview", label="refresh --expect-no-changes")
    live.pulumi("preview", "--expect-no-changes", label="preview after refresh")


def test_read_back_agrees_with_the_offline_render(live: Live, deployed: dict[str, Any]) -> None:
    docs = _offline_manifests(live, live.dir.parent / "render")
    problems: list[str] = []
    checked = 0
    for d in docs:
        if d["kind"] not in ("Secret", "ConfigMap", "NetworkPolicy", "Deployment", "StatefulSet", "Service",
                             "PodDisruptionBudget", "Ingress", "Namespace", "CronJob"):
            continue
        got = _live_object(live, d)
        want = dict(d)
        if d["kind"] == "Secret" and "stringData" in want:
            # The API server stores stringData as base64 data.
            keys = want.pop("stringData")
            want["data"] = {k: "[secret]" for k in keys}
            data = {k: base64.b64decode(v).decode() for k, v in got.get("data", {}).items()}
            for key, value in data.items():
                assert value, f"{d['metadata']['name']}.{key} is empty"
        _subset(want, got, f"{d['kind']}/{d['metadata'].get('namespace', '')}/{d['metadata']['name']}", problems)
        checked += 1
    live.notes["read_back_objects"] = checked
    assert not problems, "\n".join(problems[:30])
    # Credentials: the stack secret is what the pods read.
    pg = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["namespace"].endswith("databases")]
    assert pg
    got_values = set()
    for d in pg:
        s = _live_object(live, d)
        got_values |= {base64.b64decode(v).decode() for v in s["data"].values()}
    assert live.secrets["postgresPassword"] in got_values


def test_port_change_offline_diff_and_preview_agree_then_up(live: Live, deployed: dict[str, Any]) -> None:
    live.edit("infra/catalog.py", f'Port("http", {PORT_FROM}', f'Port("http", {PORT_TO}')
    offline = json.loads(live.infra("diff", "--stack", STACK, "--base", "HEAD", "--json").stdout)
    offline_ops = {r["urn"]: r["op"] for r in offline["resources"]}
    preview = live.pulumi("preview", "--diff", "--json", label="preview --diff --json (port change)")
    engine_ops = _steps(preview.stdout)
    live.notes["port_change_ops"] = sorted({f"{op} {u.split('::')[-1]}" for u, op in engine_ops.items()})
    assert engine_ops == offline_ops, json.dumps({"engine_only": {u: o for u, o in engine_ops.items()
                                                                  if offline_ops.get(u) != o},
                                                  "offline_only": {u: o for u, o in offline_ops.items()
                                                                   if engine_ops.get(u) != o}}, indent=1)
    live.pulumi("up", "--yes", "--skip-preview", label="up (port change)")
    svc = live.cluster.get("/api/v1/namespaces/optiinfra-core/services/data-collector")
    assert svc["spec"]["ports"][0]["port"] == PORT_TO, svc["spec"]["ports"]
    assert not _workloads_ready(live)
    live.pulumi("preview", "--expect-no-changes", label="preview after port change")


def _pod_hashes(live: Live) -> dict[str, set[str]]:
    """Per service, the credentials hashes of its running pods (optiinfra.io/credentials)."""
    out: dict[str, set[str]] = {}
    for p in live.cluster.get("/api/v1/pods")["items"]:
        meta = p["metadata"]
        if meta["namespace"].startswith("optiinfra-") and p.get("status", {}).get("phase") == "Running" \
                and not meta.get("deletionTimestamp"):
            name = meta["labels"].get("app.kubernetes.io/name", "")
            out.setdefault(name, set()).add((meta.get("annotations") or {}).get("optiinfra.io/credentials", ""))
    return out


def _store_pod_uids(live: Live, store: str) -> set[str]:
    """The UIDs of a store's pods (a restart would give new ones)."""
    return {p["metadata"]["uid"] for p in live.cluster.get("/api/v1/pods")["items"]
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == store}


def test_credential_change_through_a_stack_secret_updates_in_place(live: Live, deployed: dict[str, Any]) -> None:
    """A client's credential rotated in the two phases scripts/rotate.sh runs: phase 1 touches the
    Secrets, the store's rotation Job and the one consumer, phase 2 the Job alone; the store's pod
    keeps its UID throughout (docs/credentials.md, without an outage)."""
    new = f"Live-rotated-{secrets.token_hex(12)}"
    key = "postgresOrchestratorPassword"  # an application role's: the Job sets it live, one service logs in with it
    job = "postgres-credentials"
    store_pods = _store_pod_uids(live, "postgres")
    assert store_pods
    live.pulumi("config", "set", "--secret", f"optiinfra:{key}", new, label="config set --secret (rotate)")
    live.pulumi("config", "set", "--path", f"optiinfra:rotation.{key}.slot", "b", label="rotation slot")
    live.pulumi("config", "set", "--path", f"optiinfra:rotation.{key}.previous", "keep", label="rotation keep")
    ops = _steps(live.pulumi("preview", "--json", label="preview --json (credential, phase 1)").stdout)
    live.notes["credential_change_ops"] = sorted({f"{op} {u.split('::')[-1]}" for u, op in ops.items()})
    secrets_ops = {u: op for u, op in ops.items() if "core/v1:Secret" in u}
    assert secrets_ops and set(secrets_ops.values()) == {"update"}, ops  # Secrets in place (enableSecretMutable)
    touched = {u.split("::")[-1] for u in ops if "core/v1:Secret" not in u}
    assert touched == {job, "orchestrator"}, ops  # not the StatefulSet postgres
    assert ops[next(u for u in ops if u.endswith(f"::{job}"))] == "replace"
    before = _pod_hashes(live)
    live.pulumi("up", "--yes", "--skip-preview", label="up (credential, phase 1)")
    after = _pod_hashes(live)  # the provider awaited every rollout: the running pods are the new ones
    assert {n for n in after if n != job and after[n] != before.get(n)} == {"orchestrator"}, (before, after)
    assert _store_pod_uids(live, "postgres") == store_pods
    live.secrets[key] = new
    found = []
    for s in live.cluster.get("/api/v1/secrets")["items"]:
        if s["metadata"]["namespace"].startswith("optiinfra-"):
            found += [base64.b64decode(v).decode() for v in (s.get("data") or {}).values()]
    assert new in found
    live.pulumi("config", "set", "--path", f"optiinfra:rotation.{key}.previous", "retire", label="rotation retire")
    ops = _steps(live.pulumi("preview", "--json", label="preview --json (credential, phase 2)").stdout)
    assert {u.split("::")[-1] for u in ops} == {job}, ops
    live.pulumi("up", "--yes", "--skip-preview", label="up (credential, phase 2)")
    assert _store_pod_uids(live, "postgres") == store_pods
    live.pulumi("preview", "--expect-no-changes", label="preview after credential")


def test_pss_violation_is_refused_by_the_api_server_and_nothing_else_changes(live: Live,
                                                                            deployed: dict[str, Any]) -> None:
    """The settings and the policy pack refuse such a change first, so it is injected in
    the backend code of the test copy: the portal's container may escalate privileges."""
    backend = "infra/backends/kubernetes/pod.py"
    original = (live.dir / backend).read_text()
    # The workloads' container context (container_security), with escalation for the portal only.
    live.edit(backend, "security_context=container_security(svc.read_only_root, [c for c, _ in svc.cap_add]),",
              'security_context=core.SecurityContextArgs(allow_privilege_escalation=(svc.name == "portal"), '
              "privileged=False, run_as_non_root=True, read_only_root_filesystem=svc.read_only_root, "
              'seccomp_profile=SECCOMP, capabilities=core.CapabilitiesArgs(drop=["ALL"], '
              "add=[c for c, _ in svc.cap_add] or None)),")
    # The provider would wait 10 minutes for the rollout that cannot happen; the API
    # server's refusal is known in seconds, so the test copy gives Deployments 60 s.
    main = (live.dir / "__main__.py").read_text()
    (live.dir / "__main__.py").write_text(TIMEOUT_TRANSFORM + main)
    before = {d["metadata"]["uid"] for d in live.cluster.get("/apis/apps/v1/deployments")["items"]}
    proc = live.pulumi("up", "--yes", "--skip-preview", label="up (PSS violation)", check=False, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    # PodSecurity admits the Deployment (enforcement is on pods) and the API server refuses
    # the ReplicaSet's new pods; its message is on the ReplicaSet's ReplicaFailure condition.
    sets = live.cluster.get("/apis/apps/v1/namespaces/optiinfra-frontend/replicasets")["items"]
    refusals = [c["message"] for rs in sets
                for c in rs.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"]
    live.notes["pss_violation"] = {"api_server": refusals[:1],
                                   "pulumi_output": [line.strip() for line in output.splitlines()
                                                     if "error" in line.lower() or "warning" in line.lower()][:20],
                                   "pulumi_output_names_podsecurity": bool(PSS_WARNING.search(output))}
    assert any('violates PodSecurity "restricted:v' in m and "allowPrivilegeEscalation" in m
               for m in refusals), refusals
    (live.dir / backend).write_text(original)
    (live.dir / "__main__.py").write_text(main)
    after = {d["metadata"]["uid"] for d in live.cluster.get("/apis/apps/v1/deployments")["items"]}
    assert before == after
    ops = _steps(live.pulumi("preview", "--json", label="preview --json (after PSS)").stdout)
    assert all(u.endswith("::portal") for u in ops), ops
    live.pulumi("up", "--yes", "--skip-preview", label="up (PSS reverted)")
    live.pulumi("preview", "--expect-no-changes", label="preview after PSS revert")
    pods = [p for p in live.cluster.get("/api/v1/namespaces/optiinfra-frontend/pods")["items"]]
    assert all(not c.get("securityContext", {}).get("allowPrivilegeEscalation")
               for p in pods for c in p["spec"]["containers"])


def _interrupt(live: Live, sig: int, label: str, tag: str) -> dict[str, Any]:
    live.pulumi("config", "set", "--path", "optiinfra:images.tag", tag, label=f"config set images.tag={tag}")
    events = live.dir.parent / f"events-{label}.jsonl"
    with events.open("wb") as fh:
        p = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--json"],
                             cwd=live.dir, env=live.env, stdout=fh, stderr=subprocess.STDOUT,
                             start_new_session=True)
    # Halfway: once two updates have finished.
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and p.poll() is None:
        done = sum(1 for e in _events(events.read_text(errors="replace"))
                   if e.get("resOutputsEvent", {}).get("metadata", {}).get("op") == "update")
        if done >= 2:
            break
        time.sleep(0.1)
    os.kill(p.pid, sig)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    out = events.read_bytes()
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    orphans = reap_plugins(Path(live.env["PULUMI_HOME"]))  # the plugins a killed CLI leaves running
    state = live.state()
    pending = state["deployment"].get("pending_operations") or []
    ops = [(o["type"], o["resource"]["urn"].split("::")[-1]) for o in pending]
    return {"rc": p.returncode, "updates_done_before_signal": done, "orphaned_plugins_killed": len(orphans),
            "pending_operations": ops,
            "output_tail": out.decode(errors="replace")[-600:]}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_up_converges(live: Live, deployed: dict[str, Any], sig: int) -> None:
    name = signal.Signals(sig).name
    info = _interrupt(live, sig, name, f"0.1.{1 if sig == signal.SIGINT else 2}")
    live.notes[f"interrupt_{name}"] = info
    # A killed CLI leaves its lock: the CLI's own error says to remove it with `pulumi cancel`.
    cancel = live.pulumi("cancel", "--yes", check=False, label=f"cancel ({name})")
    info["cancel"] = (cancel.stdout + cancel.stderr).strip()[-300:]
    if info["pending_operations"]:
        # As Pulumi documents: refresh resolves pending operations against the cluster;
        # non-interactively, pending creates need the flag to be dropped.
        live.pulumi("refresh", "--yes", "--skip-preview", "--clear-pending-creates", label=f"refresh ({name})")
    live.pulumi("up", "--yes", "--skip-preview", label=f"up (after {name})")
    live.pulumi("preview", "--expect-no-changes", label=f"preview (after {name})")
    state = live.state()
    urns = [r["urn"] for r in state["deployment"]["resources"]]
    assert len(urns) == len(set(urns))
    assert not state["deployment"].get("pending_operations")
    # Nothing orphaned: every optiinfra object in the cluster is in the state.
    names = {u.split("::")[-1] for u in urns}
    for path in ("/apis/apps/v1/deployments", "/apis/apps/v1/statefulsets", "/api/v1/services"):
        for o in live.cluster.get(path)["items"]:
            if o["metadata"]["namespace"].startswith("optiinfra-"):
                assert o["metadata"]["name"] in names or any(n.endswith(o["metadata"]["name"]) for n in names), o
    assert not _workloads_ready(live)


def _optiinfra_pods(c: Any) -> list[dict[str, Any]]:
    return [p for p in c.get("/api/v1/pods")["items"] if p["metadata"]["namespace"].startswith("optiinfra-")
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]


def _memory_requested(pod: dict[str, Any]) -> int:
    from infra.model import parse_memory_mib
    return sum(parse_memory_mib(ct.get("resources", {}).get("requests", {}).get("memory", "1Mi"))
               for ct in pod["spec"]["containers"])


def _multi_replica_unavailable(c: Any) -> list[str]:
    """Workloads of more than one replica with none available right now."""
    down = []
    for kind in ("deployments", "statefulsets"):
        for w in c.get(f"/apis/apps/v1/{kind}")["items"]:
            if w["metadata"]["namespace"].startswith("optiinfra-") and w["spec"].get("replicas", 1) > 1 \
                    and not w.get("status", {}).get("availableReplicas", w.get("status", {}).get("readyReplicas", 0)):
                down.append(f"{kind}/{w['metadata']['namespace']}/{w['metadata']['name']}")
    return down


def test_node_taken_away_keeps_replicated_services_available(live: Live, deployed: dict[str, Any]) -> None:
    """The busiest node is drained with no spare added: the budget is sized N+1 (python -m infra
    capacity: spread as the scheduler places them, each node's pods find room on the others
    without moving a running pod), so every evicted pod has room on the rest.
    Every service of more than one replica stays available throughout (its PodDisruptionBudget
    and spread), and every singleton is rescheduled and ready again."""
    import threading

    c = live.cluster
    nodes = sorted(n["metadata"]["name"] for n in c.get("/api/v1/nodes")["items"])
    pdbs = [p for p in c.get("/apis/policy/v1/poddisruptionbudgets")["items"]
            if p["metadata"]["namespace"].startswith("optiinfra-")]
    assert pdbs
    load = {n: 0 for n in nodes}
    for pod in _optiinfra_pods(c):
        node = pod["spec"].get("nodeName")
        if node in load:
            load[node] += _memory_requested(pod)
    victim = max(nodes, key=lambda n: (load[n], n))  # the busiest node, by memory requested
    # Watch the multi-replica services while the drain runs (a bounded thread, stopped below).
    outages: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                outages.extend(_multi_replica_unavailable(c))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    try:
        # Drain respects the PodDisruptionBudgets (evictions), then the node goes away.
        c.kubectl("drain", victim, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s", timeout=240)
        c.kubectl("delete", "node", victim, "--timeout=60s", timeout=90)
        # Every workload ready again on the nodes left: the singletons rescheduled, nothing Pending.
        left: list[str] = []

        def all_ready() -> bool:
            left[:] = _workloads_ready(live)
            return not left

        try:
            kc.wait_for("every workload ready on the nodes left", all_ready, 240)
        except kc.ClusterError as err:
            pending = [f"{p['metadata']['namespace']}/{p['metadata']['name']}: {p['status'].get('conditions')}"
                       for p in _optiinfra_pods(c) if p["status"].get("phase") == "Pending"]
            raise kc.ClusterError(f"{err}; not ready: {left}; pending pods: {pending}") from None
    finally:
        stop.set()
        watcher.join(timeout=10)
    live.notes["node_removed"] = {"node": victim, "memory_requested_mib": load[victim],
                                  "drain_s": round(time.monotonic() - start, 1)}
    assert not outages, f"multi-replica services without an available replica during the drain: {sorted(set(outages))}"
    pending = [p["metadata"]["name"] for p in _optiinfra_pods(c) if p["status"].get("phase") == "Pending"]
    assert not pending, pending
    assert all(p["spec"].get("nodeName") != victim for p in _optiinfra_pods(c))
    for p in c.get("/apis/policy/v1/poddisruptionbudgets")["items"]:
        if p["metadata"]["namespace"].startswith("optiinfra-"):
            st = p["status"]
            assert st.get("currentHealthy", 0) >= st.get("desiredHealthy", 1), (p["metadata"]["name"], st)
    live.pulumi("preview", "--expect-no-changes", label="preview (node removed)")
    # Give the node back for what follows.
    c.apply([c._node(int(victim.rsplit("-", 1)[1]))])
    kc.wait_for("the node back", c._nodes_ready, 60)


def test_destroy_leaves_what_is_stated(live: Live, deployed: dict[str, Any]) -> None:
    c = live.cluster
    claims_before = [(p["metadata"]["namespace"], p["metadata"]["name"])
                     for p in c.get("/api/v1/persistentvolumeclaims")["items"]]
    live.pulumi("state", "unprotect", "--all", "--yes", label="state unprotect")
    live.pulumi("destroy", "--yes", "--skip-preview", label="destroy", timeout=900)
    live.notes["destroyed"] = True
    left = live.state()["deployment"].get("resources") or []
    assert [r["type"] for r in left if r["type"] != "pulumi:pulumi:Stack"] == []
    namespaces = [n["metadata"]["name"] for n in c.get("/api/v1/namespaces")["items"]]
    claims = [p["metadata"]["name"] for p in c.get("/api/v1/persistentvolumeclaims")["items"]]
    volumes = [(v["metadata"]["name"], v["status"].get("phase")) for v in c.get("/api/v1/persistentvolumes")["items"]]
    # What remains: the StatefulSets' claims outlive the StatefulSets (whenDeleted: Retain),
    # but `destroy` also deletes the tier namespaces, and a namespace takes its claims with
    # it. With kwok's default class (reclaimPolicy Delete) their volumes go too.
    live.notes["after_destroy"] = {"claims_before": len(claims_before), "namespaces_left":
                                   [n for n in namespaces if n.startswith("optiinfra-")],
                                   "claims_left": claims, "volumes_left": volumes}
    assert not [n for n in namespaces if n.startswith("optiinfra-")]
    assert claims == []
    kc.wait_for("released volumes deleted", lambda: not c.get("/api/v1/persistentvolumes")["items"], 60)
    live.pulumi("stack", "rm", "--yes", STACK, label="stack rm")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", "-s"]))
