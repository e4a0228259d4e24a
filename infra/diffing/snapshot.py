"""A render as a snapshot, and a git revision rendered by its own code.

`take` renders this checkout (secrets recorded as keyed fingerprints by the offline
renderer, see infra/offline.py). `at_revision` extracts another revision into a
temporary directory, copies this module in beside that revision's `infra/offline.py` and
runs it there in a subprocess (`_snapshot_main`), handing over the fingerprint key in
the environment; the snapshot comes back as JSON. So at import time this module needs
only `infra.offline`, `infra.settings.ConfigError` and the vocabulary, which every
revision it can render has (absolute imports: the copy is `infra/_diff_snapshot.py`).
"""

from __future__ import annotations

import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra import offline
from infra.settings import ConfigError
from policies.optiinfra_policies import vocabulary as v

if TYPE_CHECKING:
    from infra.graph import Resolved
    from infra.model import Catalog

KEY_ENV = "OPTIINFRA_DIFF_KEY"
"""Environment variable that hands the fingerprint key to the base revision's renderer."""
RUNS_A_SERVICE = v.SERVICE_WORKLOADS | {v.K8S_SERVICE}
"""The types `State.service` answers for: what runs a service, and its Kubernetes Service."""


@dataclass(frozen=True)
class PortFact:
    """One container port of one service as a stack deploys it."""

    service: str
    tier: str
    port: str
    container: int
    protocol: str
    host: int | None
    """Published host port (None: not published)."""
    bind: str | None
    allocated: int | None
    """The catalog's host port for it (its allocation, published or not)."""
    band: str | None
    band_low: int | None
    band_high: int | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.port)

    def host_text(self) -> str:
        return f"{self.bind}:{self.host}" if self.host is not None else "not published"


@dataclass
class State:
    urn: str
    type: str
    name: str
    parent: str
    inputs: dict[str, Any]
    """Inputs with each secret as `[secret]#<fingerprint>` (use `compare.shown()` to print)."""
    protect: bool
    delete_before_replace: bool
    dependencies: list[str]

    @property
    def service(self) -> str | None:
        """The service this resource runs (its container, workload or Service), else None."""
        return v.service_of(self.type, self.inputs) if self.type in RUNS_A_SERVICE else None


@dataclass
class Snapshot:
    stack: str
    label: str
    target: str
    resources: dict[str, State]
    outputs: dict[str, Any]
    ports: list[PortFact]
    fingerprinted: bool = True
    """False when the renderer could not fingerprint secrets (a revision from before
    `offline.render(fingerprint_key=...)`): then a changed secret value does not show."""
    model: Resolved | None = field(default=None, repr=False)
    """The resolved model, for a render of this checkout (not carried over from a revision)."""

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "label": self.label, "target": self.target,
                "resources": [asdict(s) for s in self.resources.values()], "outputs": self.outputs,
                "ports": [asdict(p) for p in self.ports], "fingerprinted": self.fingerprinted}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Snapshot:
        return Snapshot(stack=data["stack"], label=data["label"], target=data["target"],
                        resources={s["urn"]: State(**s) for s in data["resources"]}, outputs=data["outputs"],
                        ports=[PortFact(**p) for p in data["ports"]], fingerprinted=data["fingerprinted"])

    def of_service(self, service: str) -> list[State]:
        """The resources that run a service: its container (Docker), or its workload and
        Service (Kubernetes)."""
        return [s for s in self.resources.values() if s.service == service]


def port_facts(model: Resolved) -> list[PortFact]:
    """Every container port of every enabled service."""
    facts = []
    kube = model.settings.target == "kubernetes"  # nothing has a host port there
    for eff in model.services.values():
        svc = eff.service
        published = {p.port.name: p for p in eff.published}
        for p in svc.ports:
            band = next((b for b in model.catalog.bands if b.name == p.band), None)
            pub = None if kube else published.get(p.name)
            facts.append(PortFact(service=svc.name, tier=svc.tier.value, port=p.name, container=p.container,
                                  protocol=p.protocol, host=pub.host if pub else None, bind=pub.bind if pub else None,
                                  allocated=p.host, band=p.band, band_low=band.low if band else None,
                                  band_high=band.high if band else None))
    return facts


def take(stack: str, sets: Sequence[str] = (), secrets: Sequence[str] = (), *, key: bytes | None,
         catalog: Catalog | None = None, label: str = "working tree") -> Snapshot:
    """Render a stack offline (this checkout's code) into a snapshot, secrets fingerprinted
    with `key` (None: only for a renderer that cannot). Raises ConfigError."""
    if key is None:
        r = offline.render(stack, list(sets), list(secrets), catalog=catalog)
    else:
        r = offline.render(stack, list(sets), list(secrets), catalog=catalog, fingerprint_key=key)
    states = {res.urn: State(urn=res.urn, type=res.type, name=res.name, parent=res.parent, inputs=res.inputs,
                             protect=res.protect, delete_before_replace=res.delete_before_replace,
                             dependencies=res.dependencies)
              for res in r.resources}
    return Snapshot(stack=stack, label=label, target=r.model.settings.target, resources=states,
                    outputs=r.outputs, ports=port_facts(r.model), fingerprinted=key is not None, model=r.model)


def _snapshot_main() -> int:
    """Entry point inside a checkout of the base revision: `stack out.json` in argv."""
    stack, out = sys.argv[1], sys.argv[2]
    keyed = "fingerprint_key" in inspect.signature(offline.render).parameters
    try:
        data = take(stack, key=bytes.fromhex(os.environ[KEY_ENV]) if keyed else None).to_json()
    except ConfigError as err:
        data = {"error": {"key": err.key, "problem": err.problem, "fix": err.fix}}
    Path(out).write_text(json.dumps(data))
    return 0


# ---- another revision -------------------------------------------------------------------

def _git(root: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ConfigError("--base", "git is not installed", "install git, or diff against --set overrides") from None
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, args, proc.stdout, proc.stderr)
    return proc.stdout.strip()


def merge_base(root: Path) -> str:
    """`git merge-base HEAD main` (or origin/main, as in a CI checkout)."""
    for branch in ("main", "origin/main"):
        try:
            return _git(root, "merge-base", "HEAD", branch)
        except subprocess.CalledProcessError:
            continue
    raise ConfigError("--base", "found no branch main or origin/main to take the merge base with",
                      "name the revision, e.g. --base HEAD~1 or --base origin/<branch>")


def at_revision(stack: str, rev: str | None, *, key: bytes, root: Path) -> Snapshot:
    """Render `stack` as it was at a git revision of the repository at `root`, with that
    revision's code and stack file, in a subprocess on this interpreter. `rev=None`: the
    merge base with main."""
    shown = rev or "merge base with main"
    sha = merge_base(root) if rev is None else None
    try:
        sha = sha or _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ConfigError("--base", f"'{rev}' is not a commit of this repository",
                          "use a branch, tag or commit, e.g. --base main or --base HEAD~1") from None
    label = f"{shown} ({sha[:12]})" if rev != sha else sha[:12]
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", sha],
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="optiinfra-base-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        tree = Path(tmp)
        if not (tree / "infra" / "offline.py").exists():
            raise ConfigError("--base", f"{label} has no offline renderer (infra/offline.py)",
                              "pick a later revision")
        if not (tree / f"Pulumi.{stack}.yaml").exists():
            return Snapshot(stack=stack, label=f"{label}: no Pulumi.{stack}.yaml", target="", resources={},
                            outputs={}, ports=[])
        shutil.copyfile(Path(__file__), tree / "infra" / "_diff_snapshot.py")
        out = tree / "snapshot.json"
        env = {**os.environ, KEY_ENV: key.hex(), "PYTHONDONTWRITEBYTECODE": "1"}
        boot = "import sys; from infra._diff_snapshot import _snapshot_main; sys.exit(_snapshot_main())"
        proc = subprocess.run([sys.executable, "-c", boot, stack, str(out)], cwd=tree, env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError("--base", f"rendering {stack} at {label} failed: {last}",
                              "fix or skip that revision (see its `python -m infra plan`)")
        data = json.loads(out.read_text())
    if "error" in data:
        e = data["error"]
        raise ConfigError("--base", f"the stack does not render at {label}: {e['key']}: {e['problem']}",
                          "diff against a revision whose config is valid")
    snap = Snapshot.from_json(data)
    snap.label = label
    return snap
