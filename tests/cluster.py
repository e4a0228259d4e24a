"""A throwaway Kubernetes cluster on 127.0.0.1 for the live tests (not a test module).

Real components, built by scripts/cluster.sh: etcd, kube-apiserver (RBAC and the
PodSecurity admission plugin on), kube-controller-manager (each controller with its
own service account, so RBAC applies to them too), kube-scheduler, and kwok, which
plays the kubelets of fake nodes sized from the stack's budget: it marks nodes Ready,
gives scheduled pods an IP and makes them Running and Ready, and (its volume stages)
provisions a PersistentVolume for every claim of its default StorageClass, which the
controller-manager then binds. The only stand-in of our own is `IngressAddress`, a
thread that publishes a load-balancer address on Ingresses of the `nginx` class, as an
ingress controller would (there is none, no pod runs).

Everything listens on 127.0.0.1 only, on free ports; keys, certificates, etcd data,
kubeconfig and logs live in one temp dir. Every wait is bounded. `Cluster.stop()` kills
each component's process group (SIGTERM, then SIGKILL) and is registered with atexit,
so nothing is left behind even if the test process dies in a failure path.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .tools import ROOT, free_port

CONTEXT = "optiinfra-live"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
INGRESS_ADDRESS = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"


class ClusterError(RuntimeError):
    pass


def build(require: bool = False) -> Path:
    """The control plane's bin dir from scripts/cluster.sh (cached; a cold build takes long)."""
    proc = subprocess.run([str(ROOT / "scripts" / "cluster.sh")], capture_output=True, text=True, timeout=5400)
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = (proc.stderr.strip().splitlines() or ["scripts/cluster.sh printed nothing"])[-1]
        raise ClusterError(reason)
    return Path(proc.stdout.strip().splitlines()[-1])



def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25,
             alive: Callable[[], None] | None = None) -> float:
    """Poll `check` until true; raise after `timeout` seconds. Returns the seconds taken."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        if alive:
            alive()
        try:
            if check():
                return time.monotonic() - start
        except Exception as e:
            last = e
        time.sleep(interval)
    detail = f" (last error: {last})" if last else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


# ---- budget -> fake nodes ---------------------------------------------------------------

@dataclass(frozen=True)
class NodeSize:
    count: int
    cpu_m: int
    memory_mib: int


def _mib(text: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for u, f in units.items():
        if str(text).endswith(u):
            return int(float(str(text)[:-2]) * f)
    return int(int(text) / (1024 * 1024))


def budget_nodes(stack: str = "prod", root: Path = ROOT) -> NodeSize:
    """The stack's budget (`optiinfra:budget`: nodes x cpu/memory per node), read with the
    project's own loader when it imports (it is being refactored), else from the file."""
    try:
        from infra import capacity
        from infra import stack as stacks

        b = capacity.budget_of(stacks.model_of(stack))
        return NodeSize(b.nodes, b.cpu_per_node_m, b.memory_per_node_mib)
    except Exception:
        raw = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text())["config"].get("optiinfra:budget", {})
        return NodeSize(int(raw.get("nodes", 1)), round(float(raw.get("cpu", 2)) * 1000),
                        _mib(str(raw.get("memory", "2Gi"))))


# ---- keys and certificates ----------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")


def make_pki(d: Path) -> None:
    """CA, API server serving cert, client certs, service-account key (EC P-256, 2 days)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=optiinfra-live-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=d)
    leaves = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth",
                      "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                      "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"),
        "admin": ("/O=system:masters/CN=optiinfra-live-admin", "clientAuth", None),
        "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", None),
        "scheduler": ("/CN=system:kube-scheduler", "clientAuth", None),
    }
    for name, (subj, usage, san) in leaves.items():
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
        ext = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
               f"extendedKeyUsage={usage}\n")
        if san:
            ext += f"subjectAltName={san}\n"
        (d / f"{name}.ext").write_text(ext)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    for k in d.glob("*.key"):
        k.chmod(0o600)


def kubeconfig(path: Path, server: str, pki: Path, user: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
        "clusters": [{"name": CONTEXT, "cluster": {"server": server,
                                                   "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki / f"{user}.crt"),
                                          "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
    }))
    path.chmod(0o600)
    return path


# ---- the cluster --------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-25:]
            raise ClusterError(f"{self.name} exited with {self.popen.returncode}; last log lines:\n" + "\n".join(tail))


_LIVE: list[Cluster] = []


@dataclass
class Cluster:
    dir: Path
    bin: Path
    stages: Path
    nodes: NodeSize
    procs: list[Proc] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    server: str = ""
    kubeconfig: Path = Path()
    ingress: IngressAddress | None = None
    api_only: bool = False
    """Start etcd and kube-apiserver only: enough to validate objects on the server
    (CRD schemas, dry runs); no controllers, scheduler, nodes or ingress address."""

    # -- lifecycle --

    def start(self) -> Cluster:
        t_all = time.monotonic()
        _LIVE.append(self)
        _exit_on_sigterm()
        pki = self.dir / "pki"
        t = time.monotonic()
        make_pki(pki)
        self.timings["pki"] = round(time.monotonic() - t, 1)
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        kcm_port, sched_port, kwok_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = kubeconfig(self.dir / "kubeconfig", self.server, pki, "admin")
        kcm_kc = kubeconfig(self.dir / "controller-manager.kubeconfig", self.server, pki, "controller-manager")
        sched_kc = kubeconfig(self.dir / "scheduler.kubeconfig", self.server, pki, "scheduler")

        t = time.monotonic()
        etcd = self._spawn("etcd", [
            "--name=live", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}", f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=live=http://127.0.0.1:{etcd_peer}", "--unsafe-no-fsync",
            "--auto-compaction-retention=1", "--quota-backend-bytes=1073741824", "--log-level=warn"])
        wait_for("etcd /health", lambda: b'"true"' in urllib.request.urlopen(
            f"http://127.0.0.1:{etcd_port}/health", timeout=2).read(), 60, alive=etcd.check_alive)
        self.timings["etcd"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        api = self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
            # PodSecurity is on by default in 1.31; named so that turning it off by accident is visible.
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,"
            "DefaultTolerationSeconds,PersistentVolumeClaimResize,PodSecurity,NodeRestriction,ResourceQuota",
            "--allow-privileged=false", "--profiling=false", "--v=1"])
        wait_for("kube-apiserver /readyz", lambda: self.raw("GET", "/readyz") == b"ok", 120, alive=api.check_alive)
        self.timings["kube-apiserver"] = round(time.monotonic() - t, 1)
        if self.api_only:
            self.timings["start"] = round(time.monotonic() - t_all, 1)
            return self

        t = time.monotonic()
        kcm = self._spawn("kube-controller-manager", [
            f"--kubeconfig={kcm_kc}", f"--authentication-kubeconfig={kcm_kc}",
            f"--authorization-kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={kcm_port}", "--leader-elect=false",
            "--use-service-account-credentials=true", f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-statefulset-syncs=10", "--v=1"])
        sched = self._spawn("kube-scheduler", [
            f"--kubeconfig={sched_kc}", f"--authentication-kubeconfig={sched_kc}",
            f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={sched_port}", "--leader-elect=false",
            "--kube-api-qps=200", "--kube-api-burst=400", "--v=1"])

        # kwok: the kubelets of the fake nodes, with the stage files of its module.
        stage_docs: list[dict[str, Any]] = []
        extra_docs: list[dict[str, Any]] = []
        for f in sorted(self.stages.glob("*.yaml")):
            for doc in yaml.safe_load_all(f.read_text()):
                if doc:
                    (stage_docs if doc.get("kind") == "Stage" else extra_docs).append(doc)
        kwok_cfg = self.dir / "kwok.yaml"
        kwok_cfg.write_text(yaml.safe_dump_all(stage_docs))
        kwok = self._spawn("kwok", [
            f"--kubeconfig={self.kubeconfig}", f"--config={kwok_cfg}", "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{kwok_port}", "--node-ip=127.0.0.1", f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40"])

        # What the stack expects of a cluster: a default StorageClass (kwok's volume
        # stage class), the IngressClass, and nodes.
        self.apply(extra_docs)
        self.apply([{"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                     "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}])
        self.apply([self._node(i) for i in range(self.nodes.count)])
        alive = self._all_alive
        wait_for(f"{self.nodes.count} Ready fake nodes", self._nodes_ready, 90, interval=0.5, alive=alive)
        wait_for("the default service account (controller-manager up)",
                 lambda: self.raw("GET", "/api/v1/namespaces/default/serviceaccounts/default") is not None, 90,
                 interval=0.5, alive=alive)
        _ = (kcm, sched, kwok)
        self.timings["controllers+nodes"] = round(time.monotonic() - t, 1)
        self.ingress = IngressAddress(self)
        self.ingress.start()
        self.timings["start"] = round(time.monotonic() - t_all, 1)
        return self

    def stop(self) -> None:
        if self.ingress:
            self.ingress.stop()
        for p in reversed(self.procs):
            _kill_group(p.popen, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            _kill_group(p.popen, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
        self.procs.clear()
        if self in _LIVE:
            _LIVE.remove(self)

    def leftover_pids(self) -> list[int]:
        """Processes still running from this cluster's binaries (should be none after stop)."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    exe = os.readlink(d / "exe")
                except OSError:
                    continue
                if exe.startswith(str(self.bin) + "/"):
                    cmd = (d / "cmdline").read_bytes()
                    if str(self.dir).encode() in cmd:
                        out.append(int(d.name))
        return out

    def _spawn(self, name: str, args: list[str]) -> Proc:
        log = self.dir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("wb") as fh:
            popen = subprocess.Popen([str(self.bin / name), *args], stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _all_alive(self) -> None:
        for p in self.procs:
            p.check_alive()

    def _node(self, i: int) -> dict[str, Any]:
        cap = {"cpu": f"{self.nodes.cpu_m}m", "memory": f"{self.nodes.memory_mib}Mi", "pods": "110",
               "ephemeral-storage": "100Gi"}
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": f"kwok-node-{i}", "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-node-{i}",
                                        "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
                "status": {"capacity": cap, "allocatable": cap}}

    def _nodes_ready(self) -> bool:
        items = self.get("/api/v1/nodes")["items"]
        ready = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in n.get("status", {}).get("conditions", []))]
        return len(ready) >= self.nodes.count

    # -- API access --

    def _ssl(self) -> ssl.SSLContext:
        pki = self.dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def raw(self, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json") -> bytes | None:
        """The response body, or None on 404."""
        req = urllib.request.Request(self.server + path, data=body, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as r:
                return bytes(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise ClusterError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')[:500]}") from e

    def get(self, path: str) -> Any:
        data = self.raw("GET", path)
        return json.loads(data) if data is not None else None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()[-1000:]}")
        return proc

    def kget(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "--server-side", "--field-manager=optiinfra-live-fixture", "-f", "-",
                     input=yaml.safe_dump_all(docs))

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        s = self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return base64.b64decode(s["data"][key]).decode()


def _kill_group(p: subprocess.Popen[bytes], sig: int) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)


def _exit_on_sigterm() -> None:
    """A SIGTERM (CI's timeout, a killed pytest) exits through atexit, which stops the cluster."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@atexit.register
def _stop_all() -> None:
    for c in list(_LIVE):
        c.stop()


class IngressAddress(threading.Thread):
    """Stand-in for the ingress controller's status updater: every Ingress of class
    `nginx` gets `status.loadBalancer.ingress[0].ip` (what ingress-nginx publishes);
    without it the provider waits for an address for ten minutes per Ingress."""

    def __init__(self, cluster: Cluster, interval: float = 0.5) -> None:
        super().__init__(name="ingress-address", daemon=True)
        self.cluster, self.interval = cluster, interval
        self.published: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                for ing in self.cluster.get("/apis/networking.k8s.io/v1/ingresses")["items"]:
                    meta, spec = ing["metadata"], ing.get("spec", {})
                    if spec.get("ingressClassName") != "nginx" or "deletionTimestamp" in meta:
                        continue
                    if ing.get("status", {}).get("loadBalancer", {}).get("ingress"):
                        continue
                    body = {"status": {"loadBalancer": {"ingress": [{"ip": INGRESS_ADDRESS}]}}}
                    self.cluster.raw(
                        "PATCH", f"/apis/networking.k8s.io/v1/namespaces/{meta['namespace']}/ingresses/"
                        f"{meta['name']}/status", json.dumps(body).encode(), "application/merge-patch+json")
                    self.published.add((meta["namespace"], meta["name"]))
            except Exception as e:
                if len(self.errors) < 20:
                    self.errors.append(str(e))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
